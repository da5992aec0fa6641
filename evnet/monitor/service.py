"""
EV_CP_M, the Monitor of a charging point: it watches its Engine and speaks
for the CP to Central.

Two links, each kept up by a L{ClientService} with backoff:

- to Central: REG then AUTH (a refusal is shown and retried with a growing
  delay), then STATUS every second; AVR when the Engine goes KO, RCV when
  it is OK again; Central's START/PARAR/REANUDAR/TICKET (and the answers
  to a REQ) are relayed to the Engine.
- to the Engine: CFG (the CP id and price from the Monitor's command line)
  when the link opens, then HCK every health period; the Engine's
  TELEM/STOP/REQ are relayed to Central.

Each link's phase (connecting, registering, authenticating, ready,
refused) and the Engine's health (UNKNOWN until its first answer, OK, or
KO: it answered KO, did not answer within the timeout, or its link is down)
are table machines (``states.py``); an input a table does not allow, such
as an ACCEPTED#AUTH before ACCEPTED#REG, is logged and ignored.

The Monitor stays thin: while Central is not reachable it drops what the
Engine sends, with a log line (the Engine keeps its STOPs until their
TICKET comes back); a relayed message a link does not take is said too.

With a Kafka bus (``--kafka``), AVR and RCV go to ``cp.events`` (key: the
CP id) instead of the Central link; STATUS stays on the link (liveness,
and Central also derives a fault from STATUS KO, so a Kafka outage does
not hide one).
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from twisted.application import service
from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet import task
from twisted.internet.interfaces import IReactorTime, IStreamClientEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from evnet.kafka.errors import BusError
from evnet.monitor.states import CENTRAL_LINK, ENGINE_LINK, HEALTH, Health, HealthInput, LinkInput, LinkPhase
from evnet.protocols import messages as m
from evnet.protocols.link import FramedLink, LinkError, LinkFactory, LinkHandler
from evnet.protocols.machine import Machine
from evnet.protocols.vocabulary import TOPIC_CP_EVENTS, WHAT_AUTH, WHAT_REG

STATUS_SECONDS = 1.0
DEFAULT_HEALTH_PERIOD = 1.0
DEFAULT_HEALTH_TIMEOUT = 2.0
DEFAULT_ANSWER_TIMEOUT = 10.0

# Central -> Engine and Engine -> Central messages the Monitor relays.
TO_ENGINE = (m.Start, m.Parar, m.Reanudar, m.Ticket, m.Authorized, m.Denied, m.Notice)
TO_CENTRAL = (m.Telem, m.Stop, m.Req)


def default_backoff() -> Callable[[int], float]:
    return backoffPolicy(initialDelay=1.0, maxDelay=30.0, factor=1.5)


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


class MonitorService(service.MultiService):
    """
    The Monitor of CP C{cp_id}.  C{engine} and C{central} are client
    endpoints; C{engine_name} and C{central_name} are how a person knows
    them (the endpoint strings).  C{backoff} is the retry policy base: the
    delay grows with failed connections and with refusals alike.  With
    C{bus} (a L{evnet.kafka.bus.KafkaBus}), AVR and RCV are published to
    ``cp.events`` instead of the Central link.
    """

    TABLES = {"central": CENTRAL_LINK, "engine": ENGINE_LINK}

    log = Logger()

    def __init__(
        self,
        cp_id: str,
        location: str,
        price: float,
        engine: IStreamClientEndpoint,
        central: IStreamClientEndpoint,
        clock: IReactorTime,
        *,
        engine_name: str = "the Engine",
        central_name: str = "Central",
        health_period: float = DEFAULT_HEALTH_PERIOD,
        health_timeout: float = DEFAULT_HEALTH_TIMEOUT,
        answer_timeout: float = DEFAULT_ANSWER_TIMEOUT,
        backoff: Optional[Callable[[int], float]] = None,
        bus: Any = None,
    ) -> None:
        super().__init__()
        self.bus = bus
        self.reg = m.Reg(cp_id, location, price)
        self.cp_id = cp_id
        self.price = self.reg.price
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
        self.central: Optional[FramedLink] = None
        self.central_state = ""  # the CP's state at Central, from ACCEPTED#AUTH
        # Consecutive refusals (REG/AUTH refused, ENQ NACKed): they lengthen
        # the retry delay the way failed connections do.
        self.refusals = {"central": 0, "engine": 0}
        self._down_reported = {"central": False, "engine": False}
        self._hck_timer = None
        self._answer_timer = None

        self.central_service = ClientService(
            WatchedEndpoint(central, central_name, lambda f: self._down("central", f.getErrorMessage())),
            LinkFactory(_Side(self, "central"), initiator=True, clock=clock),
            retryPolicy=lambda attempt: backoff(attempt + self.refusals["central"]),
            clock=clock,
        )
        self.central_service.setServiceParent(self)
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
    def central_ready(self) -> bool:
        """Central accepted AUTH on the current link."""
        return self.central is not None and self._phase(self.central, "central").state is LinkPhase.READY

    def _phase(self, link: FramedLink, side: str) -> Machine[LinkPhase, LinkInput]:
        """The phase of C{link} (to C{side}: central or engine), kept in its context."""
        if "phase" not in link.context:
            name = "the Central link" if side == "central" else "the Engine link"
            link.context["phase"] = Machine(name, self.TABLES[side], LinkPhase.CONNECTING)
        return link.context["phase"]

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
            "Monitor of CP {cp_id} ({location}, {price:.3f} EUR/kWh): Engine at {engine}, Central at {central}",
            cp_id=self.cp_id,
            location=self.reg.location,
            price=self.price,
            engine=self.engine_name,
            central=self.central_name,
        )
        super().startService()
        self._health_loop.start(self.health_period, now=False)
        self._status_loop.start(STATUS_SECONDS, now=False)

    def stopService(self):
        for loop in (self._health_loop, self._status_loop):
            if loop.running:
                loop.stop()
        self._cancel("_hck_timer")
        self._cancel("_answer_timer")
        return super().stopService()

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

    # -- Central -----------------------------------------------------------

    def _central_opened(self, link: FramedLink) -> None:
        self.central = link
        if not self._phase(link, "central").attempt(LinkInput.OPENED, self.log):
            return
        self._connected("central")
        self.log.info("Registering CP {cp_id} with Central", cp_id=self.cp_id)
        link.sendMessage(self.reg).addErrback(self._not_delivered, self.reg, "central")
        self._cancel("_answer_timer")
        self._answer_timer = self.clock.callLater(
            self.answer_timeout, link.drop, f"Central did not answer REG/AUTH within {self.answer_timeout:g} s"
        )

    def _central_refused(self, link: FramedLink) -> None:
        self._phase(link, "central").attempt(LinkInput.NACKED, self.log)
        self.refusals["central"] += 1
        self.log.warn("Central at {where} refused the link (NACK); retrying later", where=self.central_name)

    def _central_lost(self, link: FramedLink, reason: Failure) -> None:
        if link is not self.central and self.central is not None:
            return
        self.central = None
        self._cancel("_answer_timer")
        if self._phase(link, "central").state is LinkPhase.REFUSED:
            return
        self._down("central", f"the link was lost ({reason.getErrorMessage()})")

    def _from_central(self, link: FramedLink, msg: m.Message) -> None:
        if isinstance(msg, (m.Accepted, m.Refused)) and msg.what in (WHAT_REG, WHAT_AUTH):
            self._answer_from_central(link, msg)
        elif isinstance(msg, m.Refused):
            self.log.warn("Central refused {what}: {reason}", what=msg.what, reason=msg.reason)
        elif isinstance(msg, TO_ENGINE):
            self._relay_to_engine(msg)
        else:
            self.log.info("Ignored {code} from Central", code=msg.code)

    def _answer_from_central(self, link: FramedLink, msg: m.Accepted | m.Refused) -> None:
        """Central's answer to REG or AUTH: a move of the link's phase."""
        event = LinkInput(f"{msg.code}#{msg.what}")
        if not self._phase(link, "central").attempt(event, self.log):
            return
        if event is LinkInput.REG_ACCEPTED:
            self.log.info("Central accepted the registration of CP {cp_id}", cp_id=self.cp_id)
            auth = m.Auth(self.cp_id)
            link.sendMessage(auth).addErrback(self._not_delivered, auth, "central")
        elif event is LinkInput.AUTH_ACCEPTED:
            self._cancel("_answer_timer")
            self.central_state = msg.detail
            self.refusals["central"] = 0
            self.log.info(
                "Central authenticated CP {cp_id}: its state there is {state}",
                cp_id=self.cp_id,
                state=msg.detail or "?",
            )
            if self.health is Health.KO:
                self.send_to_central(m.Avr(self.cp_id, self.health_reason))
            self.send_status()
        else:
            self.refusals["central"] += 1
            self.log.warn(
                "Central refused {what} for CP {cp_id}: {reason}; retrying later",
                what=msg.what,
                cp_id=self.cp_id,
                reason=msg.reason,
            )
            link.close()

    def _relay_to_engine(self, msg: m.Message) -> None:
        if self.engine is None:
            self.log.warn("The Engine is not connected: {code} from Central dropped", code=msg.code)
            return
        self.engine.sendMessage(msg).addErrback(self._not_delivered, msg, "engine")

    def send_to_central(self, msg: m.Message) -> None:
        """
        Send to Central once AUTH is accepted; otherwise drop, with a log
        line.  With a bus, AVR and RCV go to Kafka's ``cp.events``.
        """
        if self.central is None or not self.central_ready:
            self.log.info("Central is not reachable: {code} dropped", code=msg.code)
            return
        if self.bus is not None and isinstance(msg, (m.Avr, m.Rcv)):
            d = self.bus.publish(TOPIC_CP_EVENTS, self.cp_id, msg)
            d.addErrback(self._not_published, msg)
            return
        self.central.sendMessage(msg).addErrback(self._not_delivered, msg, "central")

    def _not_published(self, failure: Failure, msg: m.Message) -> None:
        failure.trap(BusError)
        self.log.warn(
            "{code} not sent to Kafka: {why} (Central still sees the Engine's state in STATUS)",
            code=msg.code,
            why=failure.getErrorMessage(),
        )

    def send_status(self) -> None:
        """STATUS every second: liveness, and KO while the Engine is KO."""
        if self.central is not None and self.central_ready:
            engine = m.ENGINE_KO if self.health is Health.KO else m.ENGINE_OK
            self.central.send(m.Status(self.cp_id, engine))

    # -- Engine ------------------------------------------------------------

    def _engine_opened(self, link: FramedLink) -> None:
        self.engine = link
        self._phase(link, "engine").attempt(LinkInput.OPENED, self.log)
        self.refusals["engine"] = 0
        self._connected("engine")
        link.send(m.Cfg(self.cp_id, self.price))
        self.check_health()

    def _engine_refused(self, link: FramedLink) -> None:
        self._phase(link, "engine").attempt(LinkInput.NACKED, self.log)
        self.refusals["engine"] += 1
        self._judge(HealthInput.FAILED, "the Engine refused this Monitor (it already serves another one)")

    def _engine_lost(self, link: FramedLink, reason: Failure) -> None:
        if self.engine is not None and link is not self.engine:
            return
        self.engine = None
        self._cancel("_hck_timer")
        if self._phase(link, "engine").state is LinkPhase.REFUSED:
            return
        why = reason.getErrorMessage()
        self._down("engine", f"the link was lost ({why})")
        self._judge(HealthInput.FAILED, f"lost the link to the Engine ({why})")

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
            self._judge(HealthInput.FAILED, f"no link to the Engine at {self.engine_name}")
            return
        if self._hck_timer is not None:
            return
        self.engine.send(m.Hck())
        self._hck_timer = self.clock.callLater(self.health_timeout, self._hck_timed_out)

    def _hck_timed_out(self) -> None:
        self._hck_timer = None
        self._judge(HealthInput.FAILED, f"the Engine did not answer a health check within {self.health_timeout:g} s")

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
