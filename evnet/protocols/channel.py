"""
The channel: what the components' rules speak to, whatever carries the
messages.  A framed link (L{evnet.protocols.link.FramedLink}) is one; a
driver or CP reached through Kafka is another.  Rules ask a channel, never
which transport it is.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from zope.interface import Attribute, Interface


class IChannel(Interface):
    """One peer's conversation, as the rules see it."""

    peer_name = Attribute("Where the peer is, for logs and messages (e.g. '10.0.0.5:41234', 'Kafka (host:port)').")
    context = Attribute("A dict the rules keep about this peer (its CP or driver id...).")
    is_open = Attribute("True while messages can be sent.")
    pending = Attribute("Messages accepted by send/sendMessage and not yet delivered (0 if unknown).")
    max_data = Attribute("The largest message DATA this channel can carry, in bytes.")
    confirms_receipt = Attribute(
        "True when sendMessage's Deferred means the peer has the message (a link ACK); "
        "False when it only means the transport took it (Kafka): the peer confirms what matters itself."
    )

    def sendMessage(msg: Any) -> defer.Deferred:
        """
        Send C{msg}.  The Deferred fires when it is delivered (see
        C{confirms_receipt}) and fails, never raises, if it cannot be.
        """

    def send(msg: Any) -> None:
        """Send C{msg}; a failure is logged by the channel, not raised."""

    def close() -> None:
        """End the conversation cleanly."""
