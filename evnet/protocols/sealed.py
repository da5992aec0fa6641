"""
A channel whose messages are sealed: the L{IChannel} that Central and a
Monitor speak through once a login gave them a session key.  It seals what
it sends (L{evnet.protocols.security.seal_message}) and sends it on the
channel underneath, and says how much a sealed frame can carry, so the
rules above need not know there is a key at all.  Opening what arrives is
the receiver's business (it must refuse and record what does not open).
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from evnet.protocols import messages as m
from evnet.protocols import security
from evnet.protocols.channel import IChannel


@implementer(IChannel)
class SealedChannel:
    """C{inner} (a framed link, say) with every message sealed by C{sealer}."""

    log = Logger()

    def __init__(self, inner: Any, sealer: security.Sealer) -> None:
        self.inner = inner
        self.sealer = sealer

    @property
    def key_id(self) -> str:
        return self.sealer.key_id

    @property
    def peer_name(self) -> str:
        return self.inner.peer_name

    @property
    def context(self) -> dict:
        return self.inner.context

    @property
    def is_open(self) -> bool:
        return self.inner.is_open

    @property
    def pending(self) -> int:
        return self.inner.pending

    @property
    def confirms_receipt(self) -> bool:
        return self.inner.confirms_receipt

    @property
    def max_data(self) -> int:
        return security.inner_capacity(self.inner.max_data)

    def sendMessage(self, msg: m.Message) -> defer.Deferred:
        try:
            data = msg.to_data()
        except m.MessageError as e:
            return defer.fail(e)
        if len(data) > self.max_data:
            return defer.fail(m.MessageError(
                f"{msg.code}: DATA of {len(data)} bytes is longer than the {self.max_data} a sealed frame may carry"
            ))
        return self.inner.sendMessage(security.seal_message(self.sealer, msg))

    def send(self, msg: m.Message) -> None:
        self.sendMessage(msg).addErrback(self._not_sent, msg)

    def _not_sent(self, failure: Any, msg: m.Message) -> None:
        # What the channel underneath could not deliver it has logged; this
        # is what never reached it (too long once sealed).
        failure.trap(m.MessageError)
        self.log.info("{peer}: {code} not sent: {why}", peer=self.peer_name, code=msg.code, why=failure.getErrorMessage())

    def close(self) -> None:
        self.inner.close()

    def __repr__(self) -> str:
        return f"<SealedChannel key {self.key_id} over {self.inner!r}>"
