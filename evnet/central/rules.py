"""
EV_Central's rules: the CP registry and its authentication, CP and session
state, the charge lifecycle, stop/resume, persistence and restart recovery.

L{Central} is the one source of truth.  It speaks to Monitors through
L{CpLinks} and to drivers through L{DriverLinks} (both L{LinkHandler}s over
framed links); the Kafka bus and the HTTP panel call the same methods.  All
database work goes through the L{Store}, never on the reactor thread.
"""

from __future__ import annotations

import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from twisted.application import service
from twisted.internet import defer, task
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from evnet.protocols import messages as m
from evnet.protocols.link import FramedLink, LinkHandler
from evnet.central.states import (
    CpInput,
    CpMachine,
    CpState,
    IllegalTransition,
    SessionInput,
    SessionMachine,
    SessionState,
)

ID_PATTERN = re.compile(r"[A-Za-z0-9_.-]{1,32}\Z")
MAX_PRICE = 100.0


def valid_id(text: str) -> bool:
    return bool(ID_PATTERN.match(text))


@dataclass
class Session:
    id: str
    cp_id: str
    driver_id: str
    origin: str  # "driver" (the app) or "cp" (started at the charging point)
    price: float
    target_kwh: float
    started_at: float  # wall-clock seconds
    machine: SessionMachine = field(default_factory=SessionMachine)
    kwh: float = 0.0
    kw: float = 0.0
    euros: float = 0.0
    seconds: int = 0
    last_seq: int = 0
    dirty: bool = False
    reported_at: float = 0.0  # Central's clock: the last TELEM or STOP for this session

    @property
    def open(self) -> bool:
        return self.machine.state is not SessionState.CLOSED

    def ticket(self, reason: str) -> m.Ticket:
        return m.Ticket(self.id, self.kwh, self.euros, self.seconds, self.cp_id, self.driver_id, reason)

    def as_dict(self) -> dict:
        return {
            "id": self.id,
            "cp_id": self.cp_id,
            "driver_id": self.driver_id,
            "origin": self.origin,
            "state": self.machine.state.value,
            "started_at": self.started_at,
            "kwh": self.kwh,
            "kw": self.kw,
            "euros": self.euros,
            "seconds": self.seconds,
        }


@dataclass
class ChargingPoint:
    id: str
    location: str
    price: float
    machine: CpMachine
    link: Optional[FramedLink] = None
    last_seen: float = 0.0  # Central's clock
    session: Optional[Session] = None

    @property
    def state(self) -> CpState:
        return self.machine.state

    def as_dict(self) -> dict:
        s = self.session
        return {
            "id": self.id,
            "location": self.location,
            "price": self.price,
            "state": self.state.value,
            "stopped": self.machine.stopped,
            "engine_ok": self.machine.engine_ok,
            "driver_id": s.driver_id if s else None,
            "session_id": s.id if s else None,
            "kw": s.kw if s else None,
            "kwh": s.kwh if s else None,
            "euros": s.euros if s else None,
            "seconds": s.seconds if s else None,
        }


class Central(service.MultiService):
    """
    The control centre.  Its child services (the listeners) start only after
    the database is open and the state is rebuilt from it.
    """

    log = Logger()

    def __init__(
        self,
        store: Any,
        clock: IReactorTime,
        *,
        liveness_timeout: float = 3.0,
        reconcile_timeout: float = 15.0,
        flush_interval: float = 2.0,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__()
        self.store = store
        self.clock = clock
        self.liveness_timeout = liveness_timeout
        self.reconcile_timeout = reconcile_timeout
        self.flush_interval = flush_interval
        self.now = wall_clock
        self.cps: dict[str, ChargingPoint] = {}
        self.sessions: dict[str, Session] = {}  # open sessions
        self.driver_sessions: dict[str, Session] = {}  # driver id -> open session
        self.driver_links: dict[str, FramedLink] = {}
        # How to reach a driver that has no link now (the Kafka bus sets it:
        # through Kafka every driver is always reachable).
        self.driver_channel: Callable[[str], Optional[Any]] = lambda driver_id: None
        self.tickets_in_flight: set[str] = set()
        self._stale_answered: dict[str, float] = {}
        self.observers: list[Callable[[dict], None]] = []
        self.recent_messages: list[dict] = []
        self.cp_links = CpLinks(self)
        self.driver_links_handler = DriverLinks(self)
        self.ready = defer.Deferred()
        self._liveness = task.LoopingCall(self.check_liveness)
        self._liveness.clock = clock
        self._flusher = task.LoopingCall(self.flush_progress)
        self._flusher.clock = clock

    # -- service lifecycle -------------------------------------------------

    def privilegedStartService(self) -> None:
        # The listeners bind in startService, once the state is rebuilt.
        service.Service.privilegedStartService(self)

    def startService(self) -> None:
        service.Service.startService(self)
        d = self.load()

        def loaded(_):
            for child in self:
                child.startService()
            self._liveness.start(min(0.5, self.liveness_timeout / 6), now=False)
            self._flusher.start(self.flush_interval, now=False)
            self.ready.callback(self)

        def failed(failure):
            self.log.failure("EV_Central could not open its database", failure)
            self.log.error(
                "EV_Central cannot start: database {db}: {why}",
                db=getattr(getattr(self.store, "url", None), "display", lambda: "?")(),
                why=failure.getErrorMessage(),
            )
            self.ready.errback(failure)
            from twisted.internet import reactor

            if reactor.running:
                reactor.stop()

        d.addCallbacks(loaded, failed)

    @defer.inlineCallbacks
    def stopService(self):
        for loop in (self._liveness, self._flusher):
            if loop.running:
                loop.stop()
        yield service.MultiService.stopService(self)
        for link in list(self.driver_links.values()) + [cp.link for cp in self.cps.values() if cp.link]:
            link.close()
        try:
            yield self.flush_progress()
        finally:
            self.store.close()

    @defer.inlineCallbacks
    def load(self):
        """Open the database and rebuild the state from it."""
        yield self.store.start()
        for row in (yield self.store.load_cps()):
            self.cps[row["id"]] = ChargingPoint(
                row["id"], row["location"], float(row["price"]), CpMachine(CpState.DESCONECTADO, bool(row["stopped"]))
            )
        for row in (yield self.store.open_sessions()):
            session = Session(
                row["id"], row["cp_id"], row["driver_id"], row["origin"], float(row["price"]),
                float(row["target_kwh"]), float(row["started_at"]),
                SessionMachine(SessionState.SUPPLYING if row["last_seq"] else SessionState.AUTHORIZED),
                kwh=float(row["kwh"]), euros=float(row["euros"]), seconds=int(row["seconds"]),
                last_seq=int(row["last_seq"]),
            )
            self.sessions[session.id] = session
            self.driver_sessions[session.driver_id] = session
            cp = self.cps.get(session.cp_id)
            if cp is not None:
                cp.session = session
        self.log.info(
            "EV_Central ready: {cps} charging points known (all DESCONECTADO until their Monitor connects), "
            "{open} charges open",
            cps=len(self.cps),
            open=len(self.sessions),
        )

    # -- observers (panel, Kafka status) -------------------------------------

    def notify(self, event: dict) -> None:
        for observer in list(self.observers):
            try:
                observer(event)
            except Exception:
                self.log.failure("observer failed on {type}", type=event.get("type"))

    def message(self, kind: str, subject: str, text: str, *, level: str = "info") -> None:
        """An application message: logged, stored in events, shown on the panel."""
        getattr(self.log, level)("{text}", text=text)
        entry = {"at": self.now(), "kind": kind, "subject": subject, "text": text}
        self.recent_messages.append(entry)
        del self.recent_messages[:-200]
        self.store.add_event(kind, subject, text).addErrback(self._db_error, "recording an event")
        self.notify({"type": "message", **entry})

    def _db_error(self, failure: Failure, doing: str) -> None:
        self.log.error("database error while {doing}: {why}", doing=doing, why=failure.getErrorMessage())

    # -- CP state ----------------------------------------------------------

    def _fire(self, cp: ChargingPoint, event: CpInput) -> bool:
        before = cp.state
        try:
            after = cp.machine.fire(event)
        except IllegalTransition as e:
            self.log.warn("CP {cp}: ignored: {why}", cp=cp.id, why=str(e))
            return False
        if after is not before:
            self.log.info("CP {cp}: {before} -> {after}", cp=cp.id, before=before.value, after=after.value)
        self.store.set_cp_state(cp.id, after.value, cp.machine.stopped).addErrback(self._db_error, "saving a CP state")
        self.notify({"type": "cp", "cp": cp.as_dict()})
        return True

    def check_liveness(self) -> None:
        now = self.clock.seconds()
        for cp in self.cps.values():
            if cp.link is not None and now - cp.last_seen > self.liveness_timeout:
                link = cp.link
                self.cp_offline(cp, f"no liveness from its Monitor for {self.liveness_timeout:g} s")
                link.drop(f"CP {cp.id} silent for {self.liveness_timeout:g} s")

    def cp_offline(self, cp: ChargingPoint, why: str) -> None:
        cp.link = None
        if cp.session is not None:
            self.end_session(cp.session, "disconnected")
        self._fire(cp, CpInput.OFFLINE)
        self.message("disconnect", cp.id, f"CP {cp.id} DESCONECTADO: {why}")

    # -- registration and authentication -------------------------------------

    def register(self, link: FramedLink, msg: m.Reg) -> None:
        why = None
        if not valid_id(msg.cp_id):
            why = "a CP id is 1 to 32 letters, digits, '_', '.' or '-'"
        elif not msg.location.strip():
            why = "the location is empty"
        elif not 0 <= msg.price <= MAX_PRICE:
            why = f"the price must be between 0 and {MAX_PRICE:g} €/kWh"
        else:
            cp = self.cps.get(msg.cp_id)
            if cp is not None and cp.link is not None and cp.link is not link:
                why = f"CP {msg.cp_id} is already connected from {cp.link.peer_name}"
        if why is not None:
            self.message("refused", msg.cp_id, f"registration of CP {msg.cp_id} refused: {why}", level="warn")
            link.send(m.Refused("REG", msg.cp_id, why))
            return
        cp = self.cps.get(msg.cp_id)
        if cp is None:
            cp = self.cps[msg.cp_id] = ChargingPoint(msg.cp_id, msg.location, msg.price, CpMachine())
            verb = "registered"
        else:
            cp.location, cp.price = msg.location, msg.price
            verb = "registration updated"
        self.store.upsert_cp(cp.id, cp.location, cp.price, cp.state.value).addErrback(self._db_error, "saving a CP")
        self.message("register", cp.id, f"CP {cp.id} {verb}: {cp.location}, {cp.price:.3f} €/kWh from {link.peer_name}")
        link.send(m.Accepted("REG", cp.id))
        self.notify({"type": "cp", "cp": cp.as_dict()})

    def authenticate(self, link: FramedLink, msg: m.Auth) -> None:
        cp = self.cps.get(msg.cp_id)
        if cp is None:
            why = f"CP {msg.cp_id} is not registered: send REG first"
        elif cp.link is not None and cp.link is not link:
            why = f"CP {msg.cp_id} is already connected from {cp.link.peer_name}"
        elif link.context.get("cp_id") not in (None, msg.cp_id):
            why = f"this link is already CP {link.context['cp_id']}"
        else:
            why = None
        if why is not None:
            self.message("refused", msg.cp_id, f"authentication of CP {msg.cp_id} refused: {why}", level="warn")
            link.send(m.Refused("AUTH", msg.cp_id, why))
            return
        link.context["cp_id"] = cp.id
        cp.link = link
        cp.last_seen = self.clock.seconds()
        if cp.state is CpState.DESCONECTADO:
            self._fire(cp, CpInput.ONLINE)
            if cp.session is not None and cp.state is CpState.ACTIVADO:
                self._fire(cp, CpInput.CHARGE_START)
                self.clock.callLater(self.reconcile_timeout, self._reconcile, cp, cp.session, cp.last_seen)
        self.message("connect", cp.id, f"CP {cp.id} authenticated from {link.peer_name}: {cp.state.value}")
        link.send(m.Accepted("AUTH", cp.id, cp.state.value))
        if cp.machine.stopped:
            link.send(m.Parar(cp.id))

    # -- what a connected CP reports -----------------------------------------

    def _reconcile(self, cp: ChargingPoint, session: Session, since: float) -> None:
        """
        A charge left open by an earlier run of Central, on a CP that came
        back: if its Engine said nothing about it since (no TELEM, no STOP),
        the Engine has lost it; close it with what was recorded.
        """
        if session.open and cp.session is session and session.reported_at <= since:
            self.message(
                "reconcile", cp.id,
                f"CP {cp.id} reconnected but reported nothing about session {session.id} for "
                f"{self.reconcile_timeout:g} s: closing it with what was recorded",
                level="warn",
            )
            self.end_session(session, "not reported after reconnection")
            if cp.state is CpState.SUMINISTRANDO:
                self._fire(cp, CpInput.CHARGE_END)

    def cp_status(self, cp: ChargingPoint, engine: str) -> None:
        cp.last_seen = self.clock.seconds()
        if engine == m.ENGINE_KO and cp.machine.engine_ok:
            self.cp_fault(cp, "the Engine reports KO")
        elif engine == m.ENGINE_OK and not cp.machine.engine_ok:
            self.cp_recovered(cp)

    def cp_fault(self, cp: ChargingPoint, reason: str) -> None:
        if not cp.machine.engine_ok and cp.state in (CpState.AVERIADO, CpState.PARADO):
            return  # already known
        self.message("fault", cp.id, f"CP {cp.id} AVERIADO: {reason}", level="warn")
        if cp.session is not None:
            session = cp.session
            self.notify_driver(session, m.Notice(cp.id, f"fault at CP {cp.id}: {reason}; your charge ends now"))
            self.end_session(session, f"fault: {reason}")
        self._fire(cp, CpInput.FAULT)

    def cp_recovered(self, cp: ChargingPoint) -> None:
        if cp.machine.engine_ok:
            return
        self._fire(cp, CpInput.RECOVER)
        self.message("recover", cp.id, f"CP {cp.id} recovered: {cp.state.value}")

    def telemetry(self, cp: ChargingPoint, msg: m.Telem) -> None:
        session = self.sessions.get(msg.session_id)
        if session is None or session.cp_id != cp.id:
            self._closed_session_reported(cp, msg.session_id)
            return
        if msg.seq <= session.last_seq:
            return  # a replay: already counted
        try:
            session.machine.fire(SessionInput.TELEMETRY)
        except IllegalTransition as e:  # pragma: no cover - closed sessions are not in self.sessions
            self.log.warn("session {sid}: {why}", sid=session.id, why=str(e))
            return
        first = session.last_seq == 0
        session.kwh, session.kw, session.euros, session.seconds = msg.kwh, msg.kw, msg.euros, msg.seconds
        session.last_seq = msg.seq
        session.reported_at = self.clock.seconds()
        session.dirty = True
        if first:
            self.log.info("CP {cp}: supplying session {sid} for driver {driver}", cp=cp.id, sid=session.id, driver=session.driver_id)
        self.notify_driver(session, msg)
        self.notify({"type": "telemetry", "cp": cp.as_dict()})

    def _closed_session_reported(self, cp: ChargingPoint, session_id: str) -> None:
        """
        A CP still supplies a session Central has closed (it ended it when the
        CP was lost, say): answer with the stored ticket, which tells the
        Engine to stop.  At most once every 5 s per session.
        """
        now = self.clock.seconds()
        if now - self._stale_answered.get(session_id, -10.0) < 5.0:
            return
        self._stale_answered[session_id] = now
        if len(self._stale_answered) > 10000:
            self._stale_answered.clear()

        def answer(row):
            if row is not None and row["status"] == "closed" and row["cp_id"] == cp.id and cp.link is not None:
                self.log.info("CP {cp} still reports session {sid}, closed here: ticket sent again", cp=cp.id, sid=session_id)
                cp.link.send(_ticket_from_row(row))

        self.store.get_session(session_id).addCallbacks(answer, self._db_error, errbackArgs=("looking up a session",))

    def charge_stopped(self, cp: ChargingPoint, msg: m.Stop) -> None:
        session = self.sessions.get(msg.session_id)
        if session is not None and session.cp_id == cp.id:
            if msg.seq >= session.last_seq:
                session.kwh, session.euros, session.seconds = msg.kwh, msg.euros, msg.seconds
                session.last_seq = msg.seq
            self.end_session(session, msg.reason or "stop")
            if cp.state is CpState.SUMINISTRANDO:
                self._fire(cp, CpInput.CHARGE_END)
            return
        # Not open: a repeat of a STOP already handled (or a charge this Central never saw).
        # Answer with the stored ticket so the Engine can forget it; count nothing.
        d = self.store.get_session(msg.session_id)

        def answer(row):
            if row is None:
                self.message(
                    "unknown-session", cp.id,
                    f"CP {cp.id} reported the end of session {msg.session_id}, unknown here: not counted",
                    level="warn",
                )
                ticket = m.Ticket(msg.session_id, msg.kwh, msg.euros, msg.seconds, cp.id, "", "unknown session")
            else:
                if abs(float(row["kwh"]) - msg.kwh) > 0.0005:
                    self.log.info(
                        "CP {cp}: session {sid} was already closed with {kwh:.3f} kWh; the CP reports {rep:.3f} kWh "
                        "(kept as closed)", cp=cp.id, sid=msg.session_id, kwh=float(row["kwh"]), rep=msg.kwh,
                    )
                ticket = _ticket_from_row(row)
            if cp.link is not None:
                cp.link.send(ticket)

        d.addCallbacks(answer, self._db_error, errbackArgs=("looking up a session",))

    # -- requests and sessions -----------------------------------------------

    def request(self, driver_id: str, cp_id: str, target_kwh: float, origin: str) -> defer.Deferred:
        """
        Authorize or deny a charge.  Fires with L{m.Authorized} or L{m.Denied};
        on authorization the CP has been sent START.
        """
        cp = self.cps.get(cp_id)
        if not valid_id(driver_id):
            why = "invalid driver id"
        elif cp is None:
            why = f"unknown CP {cp_id}"
        elif driver_id in self.driver_sessions:
            why = f"driver {driver_id} already has a charge in progress at CP {self.driver_sessions[driver_id].cp_id}"
        elif cp.session is not None:
            why = f"CP {cp_id} is busy with another charge"
        elif cp.link is None or cp.state is not CpState.ACTIVADO:
            why = f"CP {cp_id} is not available ({'Out of Order' if cp.state is CpState.PARADO else cp.state.value})"
        elif target_kwh < 0:
            why = "the target must not be negative"
        else:
            why = None
        if why is not None:
            self.message("denied", cp_id, f"REQ {driver_id} -> {cp_id}: DENIED: {why}")
            return defer.succeed(m.Denied(driver_id, cp_id, why))
        session = Session(
            "S" + secrets.token_hex(5), cp.id, driver_id, origin, cp.price, target_kwh, self.now()
        )
        self.sessions[session.id] = session
        self.driver_sessions[driver_id] = session
        cp.session = session
        self._fire(cp, CpInput.CHARGE_START)
        d = self.store.open_session(
            {"id": session.id, "cp_id": cp.id, "driver_id": driver_id, "origin": origin,
             "price": cp.price, "target_kwh": target_kwh, "started_at": session.started_at}
        )

        def recorded(_):
            if not session.open:
                return m.Denied(driver_id, cp_id, f"CP {cp_id} became unavailable")
            self.message(
                "authorized", cp.id, f"REQ {driver_id} -> {cp.id}: AUTHORIZED, session {session.id}"
                + (f", target {target_kwh:g} kWh" if target_kwh else "")
            )
            if cp.link is not None:
                cp.link.send(m.Start(cp.id, session.id, driver_id, cp.price, target_kwh, 0))
            self.notify({"type": "session", "session": session.as_dict()})
            return m.Authorized(driver_id, cp.id, session.id)

        def not_recorded(failure):
            self._db_error(failure, "opening a session")
            self._forget(session)
            if cp.state is CpState.SUMINISTRANDO:
                self._fire(cp, CpInput.CHARGE_END)
            return m.Denied(driver_id, cp_id, "Central could not record the charge; try again")

        return d.addCallbacks(recorded, not_recorded)

    def _forget(self, session: Session) -> None:
        self.sessions.pop(session.id, None)
        if self.driver_sessions.get(session.driver_id) is session:
            del self.driver_sessions[session.driver_id]
        cp = self.cps.get(session.cp_id)
        if cp is not None and cp.session is session:
            cp.session = None

    def end_session(self, session: Session, reason: str) -> defer.Deferred:
        """
        Close C{session} with its current figures: store it, then send the
        ticket to the driver and to the CP.  The CP's state is the caller's.
        """
        if not session.open:
            return defer.succeed(None)
        session.machine.fire(SessionInput.END)
        self._forget(session)
        ticket = session.ticket(reason)
        self.message(
            "ticket", session.cp_id,
            f"TICKET {session.id}: driver {session.driver_id} at CP {session.cp_id}: {session.kwh:.3f} kWh, "
            f"{session.euros:.2f} €, {session.seconds} s ({reason})",
        )
        d = self.store.close_session(
            session.id, self.now(), session.kwh, session.euros, session.seconds, session.last_seq, reason
        )

        def stored(_):
            if session.origin == "driver":
                self.deliver_ticket(session.driver_id, ticket)
            cp = self.cps.get(session.cp_id)
            if cp is not None and cp.link is not None:
                cp.link.send(ticket)
            self.notify({"type": "session", "session": {**session.as_dict(), "reason": reason}})

        return d.addCallbacks(stored, self._db_error, errbackArgs=("closing a session",))

    def deliver_ticket(self, driver_id: str, ticket: m.Ticket) -> None:
        """Send a stored ticket; it counts as delivered when the driver's link ACKs it."""
        link = self.driver_links.get(driver_id) or self.driver_channel(driver_id)
        if link is None or not link.is_open or ticket.session_id in self.tickets_in_flight:
            return
        self.tickets_in_flight.add(ticket.session_id)

        def acked(_):
            if not getattr(link, "confirms_receipt", True):
                return None  # through Kafka the driver confirms with ACCEPTED#TICKET
            self.log.info("ticket {sid} delivered to driver {driver}", sid=ticket.session_id, driver=driver_id)
            return self.store.mark_ticket_delivered(ticket.session_id).addErrback(self._db_error, "marking a ticket")

        def done(result):
            self.tickets_in_flight.discard(ticket.session_id)
            return result

        d = link.sendMessage(ticket).addCallback(acked)
        d.addErrback(lambda f: self.log.info("ticket {sid} not delivered yet: {why}", sid=ticket.session_id, why=f.getErrorMessage()))
        d.addBoth(done)

    def notify_driver(self, session: Session, msg: m.Message) -> None:
        if session.origin == "driver":
            link = self.driver_links.get(session.driver_id) or self.driver_channel(session.driver_id)
            if link is None or not link.is_open:
                return
            if isinstance(msg, m.Telem) and getattr(link, "pending", 0) > 0:
                # The driver's link is still busy with earlier messages: this
                # reading is superseded by the next one (the ticket has the totals).
                return
            link.send(msg)
        else:
            cp = self.cps.get(session.cp_id)
            if cp is not None and cp.link is not None and not isinstance(msg, m.Telem):
                cp.link.send(msg)

    def flush_progress(self) -> defer.Deferred:
        rows = []
        for session in self.sessions.values():
            if session.dirty:
                session.dirty = False
                rows.append((session.kwh, session.euros, session.seconds, session.last_seq, session.id))
        if not rows:
            return defer.succeed(None)
        return self.store.save_progress(rows).addErrback(self._db_error, "saving charge progress")

    # -- drivers -----------------------------------------------------------

    def driver_hello(self, link: Any, driver_id: str) -> bool:
        if not valid_id(driver_id):
            link.send(m.Refused("DRIVER", driver_id, "a driver id is 1 to 32 letters, digits, '_', '.' or '-'"))
            return False
        old = self.driver_links.get(driver_id)
        if old is not None and old is not link:
            old.close()
        self.driver_links[driver_id] = link
        link.context["driver_id"] = driver_id
        self.store.touch_driver(driver_id).addErrback(self._db_error, "saving a driver")
        self.log.info("driver {driver} connected from {peer}", driver=driver_id, peer=link.peer_name)
        link.send(m.Accepted("DRIVER", driver_id))
        ongoing = self.driver_sessions.get(driver_id)
        if ongoing is not None:
            link.send(m.Authorized(driver_id, ongoing.cp_id, ongoing.id))

        def resend(rows):
            for row in rows:
                if self.driver_links.get(driver_id) is link:
                    self.log.info("re-sending ticket {sid} to driver {driver}", sid=row["id"], driver=driver_id)
                    self.deliver_ticket(driver_id, _ticket_from_row(row))

        self.store.undelivered_tickets(driver_id).addCallbacks(resend, self._db_error, errbackArgs=("finding missed tickets",))
        return True

    def driver_message(self, channel: Any, msg: m.Message) -> None:
        """
        A message from a driver, on its framed link or through Kafka
        (C{channel} is a L{FramedLink} or a channel with the same send API).
        """
        if isinstance(msg, m.Driver):
            self.driver_hello(channel, msg.driver_id)
            return
        if isinstance(msg, m.Accepted) and msg.what == "TICKET":
            self.ticket_received(channel.context.get("driver_id"), msg.subject)
            return
        driver_id = getattr(msg, "driver_id", None)
        if driver_id is None:
            channel.send(m.Refused(msg.code, "", f"{msg.code} is not expected from a driver"))
            return
        if channel.context.get("driver_id") != driver_id:
            # A client may skip DRIVER: its first request identifies it.
            if not self.driver_hello(channel, driver_id):
                return
        if isinstance(msg, m.Req):
            self.request(driver_id, msg.cp_id, msg.target_kwh, "driver").addCallback(channel.send)
        elif isinstance(msg, m.ListCps):
            channel.send(self.available())
        else:
            channel.send(m.Refused(msg.code, driver_id, f"{msg.code} is not expected from a driver"))

    def ticket_received(self, driver_id: Optional[str], session_id: str) -> None:
        """The driver confirms it has the ticket (Kafka mode: ACCEPTED#TICKET#sessionId)."""
        self.log.info("ticket {sid} delivered to driver {driver}", sid=session_id, driver=driver_id)
        self.store.mark_ticket_delivered(session_id).addErrback(self._db_error, "marking a ticket")

    def available(self) -> m.Available:
        return m.Available(
            [m.CpInfo(cp.id, cp.location, cp.price) for cp in sorted(self.cps.values(), key=lambda c: c.id)
             if cp.state is CpState.ACTIVADO and cp.link is not None]
        )

    # -- the operator's commands ---------------------------------------------

    def stop_cp(self, cp_id: str) -> tuple[bool, str]:
        """PARAR: end any charge, leave the CP PARADO ("Out of Order")."""
        cp = self.cps.get(cp_id)
        if cp is None:
            return False, f"unknown CP {cp_id}"
        if cp.machine.stopped:
            return True, f"CP {cp_id} is already stopped"
        if cp.session is not None:
            self.notify_driver(cp.session, m.Notice(cp.id, f"CP {cp.id} was stopped by the operator; your charge ends now"))
            self.end_session(cp.session, "parar")
        self._fire(cp, CpInput.STOP)
        if cp.link is not None:
            cp.link.send(m.Parar(cp.id))
        self.message("stop", cp.id, f"CP {cp.id} stopped by the operator: PARADO (Out of Order)")
        return True, f"CP {cp_id} stopped"

    def resume_cp(self, cp_id: str) -> tuple[bool, str]:
        """REANUDAR: a stopped CP goes back to service."""
        cp = self.cps.get(cp_id)
        if cp is None:
            return False, f"unknown CP {cp_id}"
        if not cp.machine.stopped:
            return False, f"CP {cp_id} is not stopped ({cp.state.value})"
        self._fire(cp, CpInput.RESUME)
        if cp.link is not None:
            cp.link.send(m.Reanudar(cp.id))
        self.message("resume", cp.id, f"CP {cp.id} resumed by the operator: {cp.state.value}")
        return True, f"CP {cp_id} resumed"

    def stop_all(self) -> list[tuple[bool, str]]:
        return [self.stop_cp(cp_id) for cp_id in sorted(self.cps)]

    def resume_all(self) -> list[tuple[bool, str]]:
        return [self.resume_cp(cp_id) for cp_id in sorted(self.cps) if self.cps[cp_id].machine.stopped]


def _ticket_from_row(row: dict) -> m.Ticket:
    return m.Ticket(
        row["id"], float(row["kwh"]), float(row["euros"]), int(row["seconds"]), row["cp_id"], row["driver_id"],
        row["end_reason"] or "",
    )


class CpLinks(LinkHandler):
    """Central's side of the links from Monitors."""

    log = Logger()

    def __init__(self, central: Central) -> None:
        self.central = central

    def messageReceived(self, link: FramedLink, msg: m.Message) -> None:
        central = self.central
        if isinstance(msg, m.Reg):
            central.register(link, msg)
            return
        if isinstance(msg, m.Auth):
            central.authenticate(link, msg)
            return
        cp_id = link.context.get("cp_id")
        # A REQ names the CP it is for; it is checked below, with a clearer answer.
        claimed = cp_id if isinstance(msg, m.Req) else getattr(msg, "cp_id", cp_id)
        if cp_id is None or claimed != cp_id or central.cps[cp_id].link is not link:
            link.send(m.Refused(msg.code, str(claimed or ""), "link not authenticated"))
            return
        cp = central.cps[cp_id]
        if isinstance(msg, m.Status):
            central.cp_status(cp, msg.engine)
        elif isinstance(msg, m.Avr):
            cp.last_seen = central.clock.seconds()
            central.cp_fault(cp, msg.reason)
        elif isinstance(msg, m.Rcv):
            cp.last_seen = central.clock.seconds()
            central.cp_recovered(cp)
        elif isinstance(msg, m.Telem):
            central.telemetry(cp, msg)
        elif isinstance(msg, m.Stop):
            central.charge_stopped(cp, msg)
        elif isinstance(msg, m.Req):
            if msg.cp_id != cp.id:
                link.send(m.Denied(msg.driver_id, msg.cp_id, "a CP may only request charges for itself"))
                return
            central.request(msg.driver_id, cp.id, msg.target_kwh, "cp").addCallback(link.send)
        else:
            link.send(m.Refused(msg.code, cp_id, f"{msg.code} is not expected from a CP"))

    def linkLost(self, link: FramedLink, reason: Failure) -> None:
        cp_id = link.context.get("cp_id")
        cp = self.central.cps.get(cp_id) if cp_id else None
        if cp is not None and cp.link is link:
            self.central.cp_offline(cp, f"link to its Monitor lost ({reason.getErrorMessage()})")


class DriverLinks(LinkHandler):
    """Central's side of the links from drivers (in-band mode)."""

    def __init__(self, central: Central) -> None:
        self.central = central

    def messageReceived(self, link: FramedLink, msg: m.Message) -> None:
        self.central.driver_message(link, msg)

    def linkLost(self, link: FramedLink, reason: Failure) -> None:
        driver_id = link.context.get("driver_id")
        if driver_id and self.central.driver_links.get(driver_id) is link:
            del self.central.driver_links[driver_id]
            self.central.log.info("driver {driver} disconnected", driver=driver_id)
