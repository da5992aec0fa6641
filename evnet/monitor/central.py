"""
The Monitor's Central link: the connection (kept up by a L{ClientService}
with backoff), the login on it (AUTH, CHALLENGE, PROOF, KEY; a
L{CentralSession} per link, ``session.py``), what Central sends once keyed
(only SEC sealed by Central is opened; anything else is logged and
dropped), REAUTH and REVOKED.

L{CentralSide} is the link's handler; the rules of the Monitor (what to
relay, STATUS, AVR/RCV, CPKEY to the Engine) stay in
L{evnet.monitor.service.MonitorService}, which it calls back.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Optional

from twisted.application.internet import ClientService
from twisted.internet.interfaces import IReactorTime, IStreamClientEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from evnet.monitor.session import CentralSession
from evnet.monitor.states import LinkInput, LinkPhase
from evnet.protocols import messages as m
from evnet.protocols import security
from evnet.protocols.link import FramedLink, LinkFactory, LinkHandler
from evnet.protocols.vocabulary import WHAT_AUTH

if TYPE_CHECKING:
    from evnet.monitor.service import MonitorService

@implementer(IStreamClientEndpoint)
class WatchedEndpoint:
    """
    A client endpoint that tells C{on_failure} when a connection attempt
    fails, so the Monitor can say "cannot reach …" once per outage.
    """

    def __init__(self, endpoint: IStreamClientEndpoint, name: str, on_failure: Callable[[Failure], None]) -> None:
        self.endpoint = endpoint
        self.name = name
        self.on_failure = on_failure

    def connect(self, factory):
        d = self.endpoint.connect(factory)
        d.addErrback(self._failed)
        return d

    def _failed(self, failure: Failure) -> Failure:
        self.on_failure(failure)
        return failure

    def __repr__(self) -> str:
        return self.name


#: What Central sends that the Monitor relays to its Engine (once keyed).
TO_ENGINE = (m.Start, m.Parar, m.Reanudar, m.Ticket, m.Authorized, m.Denied, m.Notice)


class CentralSide(LinkHandler):
    """
    The Central link of C{monitor}, to C{endpoint} (C{name}: the endpoint
    string).  C{service} connects; it starts once the Monitor has
    credentials and stops when Central revokes the key, until L{restart}.
    """

    log = Logger()

    def __init__(
        self,
        monitor: "MonitorService",
        endpoint: IStreamClientEndpoint,
        clock: IReactorTime,
        backoff: Callable[[int], float],
        answer_timeout: float,
    ) -> None:
        self.monitor = monitor
        self.cp_id = monitor.cp_id
        self.clock = clock
        self.answer_timeout = answer_timeout
        self.link: Optional[FramedLink] = None
        self.state = ""  # the CP's state at Central, from the last KEY
        self.revoked: Optional[str] = None  # why Central revoked the key, until the operator's reauth
        self._answer_timer = None
        self.service = ClientService(
            WatchedEndpoint(endpoint, monitor.central_name, lambda f: monitor._down("central", f.getErrorMessage())),
            LinkFactory(self, initiator=True, clock=clock),
            retryPolicy=lambda attempt: backoff(attempt + monitor.refusals["central"]),
            clock=clock,
        )

    @property
    def session(self) -> Optional[CentralSession]:
        """The login and key of the current link."""
        return None if self.link is None else self.link.context.get("session")

    def restart(self) -> None:
        """A new link and login now (the operator's reauth), whatever the current one is doing."""
        self.revoked = None
        if self.service.running:
            self.service.stopService()  # closes the link; starting again opens a new one
        self.service.startService()

    def stop(self):
        self._cancel_answer_timer()
        if self.service.running:
            return self.service.stopService()
        return None

    def _cancel_answer_timer(self) -> None:
        if self._answer_timer is not None and self._answer_timer.active():
            self._answer_timer.cancel()
        self._answer_timer = None

    # -- the link ---------------------------------------------------------------

    def linkOpened(self, link: FramedLink) -> None:
        self.link = link
        session = link.context["session"] = CentralSession(link, self.cp_id)
        if not session.phase.attempt(LinkInput.OPENED, self.log):
            return
        self.monitor._connected("central")
        self._log_in(session)

    def linkRefused(self, link: FramedLink) -> None:
        link.context.setdefault("session", CentralSession(link, self.cp_id)).phase.attempt(LinkInput.NACKED, self.log)
        self.monitor.refusals["central"] += 1
        self.log.warn("Central at {where} refused the link (NACK); retrying later", where=self.monitor.central_name)

    def linkLost(self, link: FramedLink, reason: Failure) -> None:
        if link is not self.link and self.link is not None:
            return
        self.link = None
        self._cancel_answer_timer()
        session = link.context.get("session")
        if session is not None and session.phase.state in (LinkPhase.REFUSED, LinkPhase.REVOKED):
            return
        self.monitor._down("central", f"the link was lost ({reason.getErrorMessage()})")

    def _log_in(self, session: CentralSession) -> None:
        """AUTH (sealed under the current key on a keyed link), with a deadline for the answer."""
        credentials = self.monitor.credentials
        if credentials is None:  # the service starts only once there are some
            return
        auth = session.start_login(credentials.secret)
        self.log.info("Logging in to Central as CP {cp_id}", cp_id=self.cp_id)
        session.out.sendMessage(auth).addErrback(self.monitor._not_delivered, auth, "central")
        self._cancel_answer_timer()
        self._answer_timer = self.clock.callLater(
            self.answer_timeout, session.link.drop, f"Central did not answer the login within {self.answer_timeout:g} s"
        )

    # -- what Central sends -------------------------------------------------------

    def messageReceived(self, link: FramedLink, msg: m.Message) -> None:
        session = link.context.get("session")
        if session is None or link is not self.link:
            return
        if session.keyed:
            if not isinstance(msg, m.Sec):
                self.log.warn("Central sent {code} in the clear after the key: dropped", code=msg.code)
                return
            try:
                msg = session.open(msg)
            except (security.SecurityError, m.MessageError) as e:
                self.log.warn("Refused a sealed message on the Central link: {why}; dropped", why=str(e))
                return
        elif isinstance(msg, m.Sec):
            self.log.warn("A sealed message on the Central link before any key: dropped")
            return
        self._dispatch(session, msg)

    def _dispatch(self, session: CentralSession, msg: m.Message) -> None:
        if isinstance(msg, m.Challenge):
            self._challenged(session, msg)
        elif isinstance(msg, m.Key):
            self._keyed(session, msg)
        elif isinstance(msg, m.Refused) and msg.what == WHAT_AUTH:
            self._login_refused(session, msg)
        elif isinstance(msg, m.Reauth):
            if session.phase.attempt(LinkInput.REAUTH, self.log):
                self.log.info("Central asks for a new login (a new key)")
                self._log_in(session)
        elif isinstance(msg, m.Revoked):
            self._revoked(session, msg)
        elif isinstance(msg, m.Refused):
            self.log.warn("Central refused {what}: {reason}", what=msg.what, reason=msg.reason)
        elif isinstance(msg, TO_ENGINE) and session.keyed:
            self.monitor._relay_to_engine(msg)
        else:
            self.log.info("Ignored {code} from Central", code=msg.code)

    def _not_central(self, session: CentralSession, why: str) -> None:
        session.phase.fire(LinkInput.NOT_CENTRAL)
        self.monitor.refusals["central"] += 1
        self._cancel_answer_timer()
        self.log.error(
            "Refused the peer at {where}: it is not the real Central ({why}); closing the link, retrying later",
            where=self.monitor.central_name,
            why=why,
        )
        session.link.close()

    def _challenged(self, session: CentralSession, challenge: m.Challenge) -> None:
        if not session.phase.can(LinkInput.CHALLENGE):
            session.phase.attempt(LinkInput.CHALLENGE, self.log)
            return
        try:
            proof = session.answer(challenge)
        except security.SecurityError as e:
            self._not_central(session, str(e))
            return
        session.phase.fire(LinkInput.CHALLENGE)
        session.out.sendMessage(proof).addErrback(self.monitor._not_delivered, proof, "central")

    def _keyed(self, session: CentralSession, key: m.Key) -> None:
        if not session.phase.can(LinkInput.KEY):
            session.phase.attempt(LinkInput.KEY, self.log)
            return
        try:
            key_id, secret_key = session.check_key(key)
        except security.SecurityError as e:
            self._not_central(session, str(e))
            return
        rotated = session.keyed
        session.phase.fire(LinkInput.KEY)
        session.use_key(key, key_id, secret_key)
        self._cancel_answer_timer()
        self.monitor.refusals["central"] = 0
        self.state = key.state
        self.log.info(
            "Central authenticated CP {cp_id}: its state there is {state}; {new}key {key_id}",
            cp_id=self.cp_id,
            state=key.state or "?",
            new="new " if rotated else "",
            key_id=key_id,
        )
        self.monitor._keyed(session, rotated)

    def _login_refused(self, session: CentralSession, msg: m.Refused) -> None:
        if not session.phase.attempt(LinkInput.AUTH_REFUSED, self.log):
            return
        self.monitor.refusals["central"] += 1
        self._cancel_answer_timer()
        self.log.warn(
            "Central refused the login of CP {cp_id}: {reason}; retrying later", cp_id=self.cp_id, reason=msg.reason
        )
        session.link.close()

    def _revoked(self, session: CentralSession, msg: m.Revoked) -> None:
        if not session.phase.attempt(LinkInput.REVOKED, self.log):
            return
        self.revoked = msg.reason or "no reason given"
        self._cancel_answer_timer()
        self.log.error(
            "Central revoked the key of CP {cp_id}: {reason}. The Monitor does not log in again by itself: "
            "type 'reauth' in its terminal, or run 'evctl monitor CONTROL-ENDPOINT reauth'",
            cp_id=self.cp_id,
            reason=self.revoked,
        )
        session.link.close()
        self.service.stopService()
