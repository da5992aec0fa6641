"""
EV_CP_M, the Monitor of a charging point: it watches its Engine and speaks
for the CP to Central.

First its credentials (``enrollment.py``: the credentials file, or a
registration at EV_Registry kept in that file).  Then two links, each kept
up by a L{ClientService} with backoff:

- to Central: a login without sending the secret (AUTH, CHALLENGE, PROOF,
  KEY: ``session.py``, docs/protocol.md §7); a Central whose KEY does not
  prove it holds the CP's registration is refused, and a refused login is
  shown; both are retried with a growing delay.  From KEY on everything on
  the link is sealed, and what Central sends is accepted only sealed by
  Central (role C).  STATUS at the interval KEY gives; AVR when the Engine
  goes KO, RCV when it is OK again; Central's START/PARAR/REANUDAR/TICKET
  (and the answers to a REQ) are relayed to the Engine.  REAUTH: log in
  again on the same link (sealed) and switch to the new key.  REVOKED: the
  link closes and the Monitor waits for its operator (``reauth``, in its
  terminal or through its control endpoint: ``control.py``).
- to the Engine: CFG (the CP id and price from the Monitor's command line)
  when the link opens, CPKEY (the key its Kafka records are sealed with)
  after each KEY and whenever the link opens while there is one, then HCK
  every health period; the Engine's TELEM/STOP/REQ are relayed to Central.

Each link's phase and the Engine's health (UNKNOWN until its first
answer, OK, or KO: it answered KO, did not answer within the timeout, or
its link is down) are table machines (``states.py``); an input a table does
not allow, such as a KEY before any CHALLENGE, is logged and ignored.

The Monitor stays thin: while Central is not reachable it drops what the
Engine sends, with a log line (the Engine keeps its STOPs until their
TICKET comes back); a relayed message a link does not take is said too.

With a Kafka bus (``--kafka``), AVR and RCV go to ``cp.events`` (key: the
CP id), sealed by role M, instead of the Central link; STATUS stays on the
link (liveness, and Central also derives a fault from STATUS KO, so a Kafka
outage does not hide one).

The scrypt of a login (~50 ms) runs on the reactor: once per login of one
CP, it is cheaper than a thread hand-off would be worth.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from twisted.application import service
from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet import defer, task
from twisted.internet.interfaces import IReactorTime, IStreamClientEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure

from evnet.kafka.errors import BusError
from evnet.monitor import control
from evnet.monitor.central import CentralSide, WatchedEndpoint
from evnet.monitor.session import CentralSession
from evnet.monitor.states import ENGINE_LINK, HEALTH, Health, HealthInput, LinkInput, LinkPhase
from evnet.protocols import messages as m
from evnet.protocols import security
from evnet.protocols.link import FramedLink, LinkError, LinkFactory, LinkHandler
from evnet.protocols.machine import Machine
from evnet.protocols.vocabulary import AVR_ENGINE_LINK_LOST, AVR_ENGINE_SILENT, AVR_NO_ENGINE_LINK, TOPIC_CP_EVENTS
from evnet.registry.credentials import Credentials, CredentialsError

STATUS_SECONDS = 1.0
DEFAULT_HEALTH_PERIOD = 1.0
DEFAULT_HEALTH_TIMEOUT = 2.0
DEFAULT_ANSWER_TIMEOUT = 10.0

# Engine -> Central messages the Monitor relays (the other way: central.TO_ENGINE).
TO_CENTRAL = (m.Telem, m.Stop, m.Req)


def default_backoff() -> Callable[[int], float]:
    return backoffPolicy(initialDelay=1.0, maxDelay=30.0, factor=1.5)


class _Side(LinkHandler):
    """Routes one link's events to the Monitor methods for that side."""

    def __init__(self, monitor: "MonitorService", side: str) -> None:
        self.monitor = monitor
        self.side = side

    def linkOpened(self, link: FramedLink) -> None:
        getattr(self.monitor, f"_{self.side}_opened")(link)

    def linkRefused(self, link: FramedLink) -> None:
        getattr(self.monitor, f"_{self.side}_refused")(link)

    def messageReceived(self, link: FramedLink, msg: m.Message) -> None:
        getattr(self.monitor, f"_from_{self.side}")(link, msg)

    def linkLost(self, link: FramedLink, reason: Failure) -> None:
        getattr(self.monitor, f"_{self.side}_lost")(link, reason)


class _Given:
    """Credentials the caller already has (tests, embedding)."""

    def __init__(self, credentials: Credentials) -> None:
        self.credentials = credentials

    def obtain(self) -> defer.Deferred:
        return defer.succeed(self.credentials)

    def load(self) -> Credentials:
        return self.credentials

    def stop(self) -> None:
        pass


class MonitorService(service.MultiService):
    """
    The Monitor of CP C{cp_id}.  C{engine} and C{central} are client
    endpoints; C{engine_name} and C{central_name} are how a person knows
    them (the endpoint strings).  C{credentials} is the CP's
    L{Credentials}, or where they come from (an
    L{evnet.monitor.enrollment.CredentialSource}); the Central link starts
    once they are there, and C{on_failure(text)} is told when they cannot
    be had (the reason is logged).  C{location} and C{price} are the CP's
    (the price goes to the Engine in CFG).  C{backoff} is the retry policy
    base: the delay grows with failed connections and with refusals alike.
    With C{bus} (a L{evnet.kafka.bus.KafkaBus}), AVR and RCV are published
    to ``cp.events`` instead of the Central link.
    """

    log = Logger()

    def __init__(
        self,
        cp_id: str,
        location: Optional[str],
        price: Optional[float],
        engine: IStreamClientEndpoint,
        central: IStreamClientEndpoint,
        clock: IReactorTime,
        *,
        credentials: Any,
        engine_name: str = "the Engine",
        central_name: str = "Central",
        health_period: float = DEFAULT_HEALTH_PERIOD,
        health_timeout: float = DEFAULT_HEALTH_TIMEOUT,
        answer_timeout: float = DEFAULT_ANSWER_TIMEOUT,
        backoff: Optional[Callable[[int], float]] = None,
        bus: Any = None,
        on_failure: Optional[Callable[[str], None]] = None,
    ) -> None:
        super().__init__()
        self.bus = bus
        self.cp_id = cp_id
        self.location = location
        self.price = m.Cfg(cp_id, price or 0.0).price
        self.source = _Given(credentials) if isinstance(credentials, Credentials) else credentials
        self.credentials: Optional[Credentials] = None
        self.on_failure = on_failure or (lambda text: None)
        self.clock = clock
        self.engine_name = engine_name
        self.central_name = central_name
        self.health_period = health_period
        self.health_timeout = health_timeout
        self.answer_timeout = answer_timeout
        backoff = backoff or default_backoff()

        self._health: Machine[Health, HealthInput] = Machine("the Engine's health", HEALTH, Health.UNKNOWN)
        self.health_reason = ""
        self.engine: Optional[FramedLink] = None
        self._kafka_sealer: Optional[security.Sealer] = None  # AVR/RCV records, under the current key
        # Consecutive refusals (a login refused, ENQ NACKed, not the real
        # Central): they lengthen the retry delay the way failed connections do.
        self.refusals = {"central": 0, "engine": 0}
        self._down_reported = {"central": False, "engine": False}
        self._hck_timer = None

        # Its service starts once there are credentials and stops on REVOKED: not a child.
        self.central_side = CentralSide(self, central, clock, backoff, answer_timeout)
        self.central_service = self.central_side.service
        self.engine_service = ClientService(
            WatchedEndpoint(engine, engine_name, lambda f: self._down("engine", f.getErrorMessage())),
            LinkFactory(_Side(self, "engine"), initiator=True, clock=clock),
            retryPolicy=lambda attempt: backoff(attempt + self.refusals["engine"]),
            clock=clock,
        )
        self.engine_service.setServiceParent(self)
        self._health_loop = task.LoopingCall(self.check_health)
        self._health_loop.clock = clock
        self._status_loop = task.LoopingCall(self.send_status)
        self._status_loop.clock = clock

    @property
    def health(self) -> Health:
        return self._health.state

    @property
    def central(self) -> Optional[FramedLink]:
        """The current Central link."""
        return self.central_side.link

    @property
    def session(self) -> Optional[CentralSession]:
        """The login and key of the current Central link."""
        return self.central_side.session

    @property
    def central_state(self) -> str:
        """The CP's state at Central, from the last KEY."""
        return self.central_side.state

    @property
    def revoked(self) -> Optional[str]:
        """Why Central revoked the key, until the operator asks for a new login."""
        return self.central_side.revoked

    @property
    def central_ready(self) -> bool:
        """Central gave this link a key: messages flow, sealed."""
        session = self.session
        return session is not None and session.keyed

    def _where(self, side: str) -> str:
        return self.central_name if side == "central" else self.engine_name

    def _label(self, side: str) -> str:
        return "Central" if side == "central" else "the Engine"

    def _not_delivered(self, failure: Failure, msg: m.Message, side: str) -> None:
        """A message a link did not take (send failures are failed Deferreds, never raised)."""
        failure.trap(LinkError, m.MessageError)
        lost = " (the Engine sends it again until its TICKET)" if isinstance(msg, m.Stop) else ""
        self.log.warn(
            "{code} not delivered to {who}: {why}{lost}",
            code=msg.code,
            who=self._label(side),
            why=failure.getErrorMessage(),
            lost=lost,
        )

    # -- service -----------------------------------------------------------

    def startService(self) -> None:
        self.log.info(
            "Monitor of CP {cp_id}: Engine at {engine}, Central at {central}",
            cp_id=self.cp_id,
            engine=self.engine_name,
            central=self.central_name,
        )
        super().startService()
        self._health_loop.start(self.health_period, now=False)
        self._status_loop.start(STATUS_SECONDS, now=False)
        self.source.obtain().addCallbacks(self._have_credentials, self._no_credentials)

    def _have_credentials(self, credentials: Credentials) -> None:
        if not self.running:
            return
        self.credentials = credentials
        self.central_service.startService()

    def _no_credentials(self, failure: Failure) -> None:
        if failure.check(CredentialsError):
            text = failure.getErrorMessage()
            self.log.error("{text}", text=text)
            self.on_failure(text)
        else:
            self.log.failure("cannot get the CP's credentials", failure)
            self.on_failure("cannot get the CP's credentials")

    def stopService(self):
        for loop in (self._health_loop, self._status_loop):
            if loop.running:
                loop.stop()
        self._cancel("_hck_timer")
        self.source.stop()
        return defer.gatherResults([defer.maybeDeferred(super().stopService), defer.maybeDeferred(self.central_side.stop)])

    def _cancel(self, name: str) -> None:
        timer = getattr(self, name)
        if timer is not None and timer.active():
            timer.cancel()
        setattr(self, name, None)

    def _connected(self, side: str) -> None:
        self._down_reported[side] = False
        self.log.info("connected to {who} at {where}", who=self._label(side), where=self._where(side))

    def _down(self, side: str, reason: str) -> None:
        """Say once per outage that C{side} cannot be reached."""
        if not self._down_reported[side]:
            self._down_reported[side] = True
            self.log.warn(
                "cannot reach {who} at {where}: {why}; retrying",
                who=self._label(side),
                where=self._where(side),
                why=reason,
            )

    # -- commands (control.py) ---------------------------------------------

    def command(self, line: str) -> str:
        """Run one command line (L{evnet.monitor.control.command})."""
        return control.command(self, line)

    def status(self) -> str:
        session = self.session
        if self.revoked is not None:
            central = "revoked"
        elif self.credentials is None:
            central = "no-credentials-yet"
        elif session is None:
            central = "unreachable"
        else:
            central = session.phase.state.value
        parts = [f"cp={self.cp_id}", f"central={central}"]
        if session is not None and session.keyed:
            parts += [f"key={session.key_id}", f"state={self.central_state or '?'}"]
        parts.append(f"engine={self.health.value}")
        text = " ".join(parts)
        if self.revoked is not None:
            text += f" (Central revoked the key: {self.revoked}; type reauth to log in again)"
        return text

    def reauth(self) -> str:
        """The operator asks for a new login: the credentials file again, a new link, a new key."""
        if self.credentials is None:
            raise control.CommandError("the Monitor has no credentials yet (see its log)")
        try:
            self.credentials = self.source.load()
        except CredentialsError as e:
            raise control.CommandError(str(e)) from None
        was_revoked = self.revoked is not None
        self.refusals["central"] = 0
        self.log.info("The operator asked for a new login to Central")
        self.central_side.restart()
        again = " (the key had been revoked)" if was_revoked else ""
        return f"logging in to Central at {self.central_name} again{again}; the outcome shows in the status and the log"

    # -- Central: what goes there (the link itself: central.py) -----------------

    def _keyed(self, session: CentralSession, rotated: bool) -> None:
        """Central gave a key (C{rotated}: a new one on a keyed link): STATUS at its interval, CPKEY, AVR."""
        self._kafka_sealer = security.Sealer(self.cp_id, session.key_id, session.key, security.ROLE_MONITOR)
        if self._status_loop.running:
            self._status_loop.stop()
        self._status_loop.start(session.liveness, now=False)
        self._send_key_to_engine()
        if self.health is Health.KO and not rotated:
            self.send_to_central(m.Avr(self.cp_id, self.health_reason))
        self.send_status()

    def _relay_to_engine(self, msg: m.Message) -> None:
        if self.engine is None:
            self.log.warn("The Engine is not connected: {code} from Central dropped", code=msg.code)
            return
        self.engine.sendMessage(msg).addErrback(self._not_delivered, msg, "engine")

    def send_to_central(self, msg: m.Message) -> None:
        """
        Send to Central, sealed, once it gave a key; otherwise drop, with a
        log line.  With a bus, AVR and RCV go to Kafka's ``cp.events``.
        """
        session = self.session
        if session is None or not session.keyed:
            if isinstance(msg, m.Req):
                self._deny_at_cp(msg, f"cannot reach EV_Central (the Monitor has no link to it now); try again later")
                return
            self.log.info("Central is not reachable: {code} dropped", code=msg.code)
            return
        if self.bus is not None and isinstance(msg, (m.Avr, m.Rcv)):
            d = self.bus.publish(TOPIC_CP_EVENTS, self.cp_id, security.seal_message(self._kafka_sealer, msg))
            d.addErrback(self._not_published, msg)
            return
        d = session.out.sendMessage(msg)
        if isinstance(msg, m.Req):
            d.addErrback(self._req_not_delivered, msg)
        d.addErrback(self._not_delivered, msg, "central")

    def _req_not_delivered(self, failure: Failure, req: m.Req) -> Failure:
        """A charge asked for at the CP that Central did not get: the Engine's screen says so."""
        failure.trap(LinkError)
        self._deny_at_cp(req, f"cannot reach EV_Central ({failure.getErrorMessage()}); try again later")
        return failure

    def _deny_at_cp(self, req: m.Req, why: str) -> None:
        """Answer the Engine's REQ here, as Central would have: DENIED with C{why}."""
        self.log.warn("Charge for {driver} asked at the CP not sent: {why}", driver=req.driver_id, why=why)
        self._relay_to_engine(m.Denied(req.driver_id, req.cp_id, why))

    def _not_published(self, failure: Failure, msg: m.Message) -> None:
        failure.trap(BusError)
        self.log.warn(
            "{code} not sent to Kafka: {why} (Central still sees the Engine's state in STATUS)",
            code=msg.code,
            why=failure.getErrorMessage(),
        )

    def send_status(self) -> None:
        """STATUS at Central's interval: liveness, and KO while the Engine is KO."""
        session = self.session
        if session is not None and session.keyed:
            engine = m.ENGINE_KO if self.health is Health.KO else m.ENGINE_OK
            session.out.send(m.Status(self.cp_id, engine))

    # -- Engine ------------------------------------------------------------

    def _engine_phase(self, link: FramedLink) -> Machine[LinkPhase, LinkInput]:
        if "phase" not in link.context:
            link.context["phase"] = Machine("the Engine link", ENGINE_LINK, LinkPhase.CONNECTING)
        return link.context["phase"]

    def _send_key_to_engine(self) -> None:
        """CPKEY: the Engine seals its Kafka records with the current key."""
        session = self.session
        if self.engine is not None and session is not None and session.keyed:
            cpkey = m.CpKey(self.cp_id, session.key_id, security.b64(session.key))
            self.engine.sendMessage(cpkey).addErrback(self._not_delivered, cpkey, "engine")

    def _engine_opened(self, link: FramedLink) -> None:
        self.engine = link
        self._engine_phase(link).attempt(LinkInput.OPENED, self.log)
        self.refusals["engine"] = 0
        self._connected("engine")
        link.send(m.Cfg(self.cp_id, self.price))
        self._send_key_to_engine()
        self.check_health()

    def _engine_refused(self, link: FramedLink) -> None:
        self._engine_phase(link).attempt(LinkInput.NACKED, self.log)
        self.refusals["engine"] += 1
        self._judge(HealthInput.FAILED, "the Engine refused this Monitor (it already serves another one)")

    def _engine_lost(self, link: FramedLink, reason: Failure) -> None:
        if self.engine is not None and link is not self.engine:
            return
        self.engine = None
        self._cancel("_hck_timer")
        if self._engine_phase(link).state is LinkPhase.REFUSED:
            return
        why = reason.getErrorMessage()
        self._down("engine", f"the link was lost ({why})")
        self._judge(HealthInput.FAILED, f"{AVR_ENGINE_LINK_LOST} ({why})")

    def _from_engine(self, link: FramedLink, msg: m.Message) -> None:
        if isinstance(msg, m.HckResp):
            self._cancel("_hck_timer")
            if msg.result == m.ENGINE_OK:
                self._judge(HealthInput.ANSWERED_OK)
            else:
                self._judge(HealthInput.FAILED, "the Engine reports a fault (KO)")
        elif isinstance(msg, TO_CENTRAL):
            self.send_to_central(msg)
        else:
            self.log.info("Ignored {code} from the Engine", code=msg.code)

    def check_health(self) -> None:
        """Every health period: send HCK, unless one is still unanswered."""
        if self.engine is None:
            self._judge(HealthInput.FAILED, f"{AVR_NO_ENGINE_LINK} at {self.engine_name}")
            return
        if self._hck_timer is not None:
            return
        self.engine.send(m.Hck())
        self._hck_timer = self.clock.callLater(self.health_timeout, self._hck_timed_out)

    def _hck_timed_out(self) -> None:
        self._hck_timer = None
        self._judge(HealthInput.FAILED, f"{AVR_ENGINE_SILENT} a health check within {self.health_timeout:g} s")

    def _judge(self, event: HealthInput, reason: str = "") -> None:
        """A move of the Engine's health (L{HEALTH}); entering KO sends AVR, leaving it RCV."""
        old = self.health
        if not self._health.attempt(event, self.log):
            return
        new = self.health
        if new is old:
            return
        self.health_reason = reason
        if new is Health.KO:
            self.log.warn("Engine KO: {reason}; reporting the fault to Central", reason=reason)
            self.send_to_central(m.Avr(self.cp_id, reason))
        elif old is Health.KO:
            self.log.info("Engine OK again; reporting the recovery to Central")
            self.send_to_central(m.Rcv(self.cp_id))
        else:
            self.log.info("Engine OK")
