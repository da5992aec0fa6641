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

NOT_AUTHENTICATED = "link not authenticated"


class CpLinks(LinkHandler):
    """
    The links from Monitors.  REG and AUTH need a link (they bind it to a
    CP); every other message must come on its CP's authenticated link and
    goes to the rules' one CP-report dispatch, as Kafka's records do.
    """

    def __init__(self, central: Central) -> None:
        self.central = central

    def messageReceived(self, link: FramedLink, msg: m.Message) -> None:
        if isinstance(msg, m.Reg):
            self.central.register(link, msg)
            return
        if isinstance(msg, m.Auth):
            self.central.authenticate(link, msg)
            return
        cp_id = link.context.get("cp_id")
        # A REQ names the CP it is for; the rules check it, with a clearer answer.
        claimed = cp_id if isinstance(msg, m.Req) else getattr(msg, "cp_id", cp_id)
        if claimed != cp_id or not self.central.is_link_of(cp_id, link):
            link.send(m.Refused(msg.code, str(claimed or ""), NOT_AUTHENTICATED))
            return
        why = self.central.cp_report(cp_id, msg)
        if why is not None:
            link.send(m.Refused(msg.code, cp_id, why))

    def linkLost(self, link: FramedLink, reason: Failure) -> None:
        self.central.cp_link_lost(link, reason.getErrorMessage())


class DriverLinks(LinkHandler):
    """The links from drivers (in-band mode)."""

    def __init__(self, central: Central) -> None:
        self.central = central

    def messageReceived(self, link: FramedLink, msg: m.Message) -> None:
        self.central.driver_message(link, msg)

    def linkLost(self, link: FramedLink, reason: Failure) -> None:
        self.central.driver_gone(link)
