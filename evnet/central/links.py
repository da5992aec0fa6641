"""
Central's side of the framed links: thin L{LinkHandler}s that hand each
message to L{evnet.central.rules.Central}.  A link is an
L{evnet.protocols.channel.IChannel}, which is all the rules see of it.
"""

from __future__ import annotations

from twisted.python.failure import Failure

from evnet.protocols import messages as m
from evnet.protocols.link import FramedLink, LinkHandler
from evnet.central.rules import Central


class CpLinks(LinkHandler):
    """
    The links from Monitors: everything goes to the rules' trust
    (L{evnet.central.trust.Trust}), which logs the link in, opens what is
    sealed and hands a logged-in CP's reports to the one CP-report dispatch,
    as Kafka's records are.
    """

    def __init__(self, central: Central) -> None:
        self.trust = central.trust

    def messageReceived(self, link: FramedLink, msg: m.Message) -> None:
        self.trust.received(link, msg)

    def frameRejected(self, link: FramedLink, why: str) -> None:
        self.trust.malformed(link, "cp", why)

    def linkLost(self, link: FramedLink, reason: Failure) -> None:
        self.trust.link_lost(link, reason.getErrorMessage())


class DriverLinks(LinkHandler):
    """The links from drivers (in-band mode): through the drivers' trust (L{evnet.central.drivers}), which logs them in."""

    def __init__(self, central: Central) -> None:
        self.central = central

    def messageReceived(self, link: FramedLink, msg: m.Message) -> None:
        self.central.drivers.received(link, msg)

    def frameRejected(self, link: FramedLink, why: str) -> None:
        self.central.trust.malformed(link, "driver", why)

    def linkLost(self, link: FramedLink, reason: Failure) -> None:
        self.central.driver_gone(link)
