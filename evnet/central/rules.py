"""
EV_Central's rules: the CPs and their states, who may charge where, the
one dispatch of what CPs and drivers say, and the operator's commands.
Who a CP is (its login, its key, what is refused) is L{evnet.central.trust};
a CP that logged in comes here (L{Central.cp_logged_in}).

L{Central} is the one source of truth.  It never asks which transport a
message came by: the Monitors' links (L{evnet.central.links}), the Kafka
bus (L{evnet.central.kafka}) and the web panel call the same methods, and
every peer is an L{evnet.protocols.channel.IChannel}.  What happens to a
charge once authorized is L{evnet.central.charges}; the records are
L{evnet.central.model}; the lifecycle (database, timers, listeners) is
L{evnet.central.service}.  All database work goes through the store,
never on the reactor thread.
"""

from __future__ import annotations

import functools
import os
import time
from typing import Any, Callable, Optional

from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from evnet.protocols import messages as m
from evnet.protocols.channel import IChannel
from evnet.protocols.vocabulary import (
    ID_RULE,
    REASON_DISCONNECTED,
    REASON_CANCELLED,
    REASON_FAULT,
    REASON_NOT_PLUGGED,
    REASON_NOT_REPORTED,
    REASON_PARAR,
    REASON_WEATHER,
    WHAT_CANCEL,
    WHAT_DRIVER,
    WHAT_TICKET,
    valid_id,
)
from evnet.central.alerts import AlertBoard
from evnet.central.audittrail import AuditTrail
from evnet.central.charges import Charges
from evnet.central.journal import Journal
from evnet.central.model import ORIGIN_CP, ORIGIN_DRIVER, ChargingPoint, Session, cp_from_row, ticket_from_row
from evnet.central.states import CpInput, CpMachine, CpState
from evnet.protocols.machine import IllegalTransition
from evnet.central.trust import Trust
from evnet.central.weather import DEFAULT_STALE, WeatherDesk
from evnet.central.drivers import AUTH_OPTIONAL, DriverTrust

# How long a CP that comes back with a charge left open by an earlier run
# of Central has to report it (TELEM or STOP) before it is closed as lost.
RECONCILE_TIMEOUT = 15.0
# How long an authorized charge may wait for its vehicle (no TELEM yet)
# before Central releases the CP with a 0 kWh ticket (0: never).
PLUG_TIMEOUT = 120.0


def no_channel(driver_id: str) -> Optional[IChannel]:
    """The driver-channel provider without Kafka: a driver is reached only on its own link."""
    return None


class Central:
    """The control centre's rules (the object the web panel is given as C{central})."""

    log = Logger()

    def __init__(
        self,
        store: Any,
        clock: IReactorTime,
        *,
        liveness_interval: float = 1.0,
        liveness_timeout: Optional[float] = None,
        reconcile_timeout: float = RECONCILE_TIMEOUT,
        plug_timeout: float = PLUG_TIMEOUT,
        driver_auth: str = AUTH_OPTIONAL,
        wall_clock: Callable[[], float] = time.time,
        weather_stale: float = DEFAULT_STALE,
        audit_key: Optional[bytes] = None,
        **trust: Any,
    ) -> None:
        """
        C{weather_stale}: seconds of EV_W's silence before Central clears its
        alerts itself; C{trust}: the options of L{Trust} (key rotation, login lockout).
        C{audit_key}: the audit trail's key (the tap reads it from its file; a
        random one if not given, for tests).
        """
        self.store = store
        self.clock = clock
        self.liveness_interval = liveness_interval  # how often a Monitor sends STATUS (it is told in KEY)
        self.liveness_timeout = 3 * liveness_interval if liveness_timeout is None else liveness_timeout
        self.reconcile_timeout = reconcile_timeout
        self.plug_timeout = plug_timeout
        self.now = wall_clock
        self.cps: dict[str, ChargingPoint] = {}
        self.driver_links: dict[str, IChannel] = {}  # drivers that said hello, by id
        self._driver_channel: Callable[[str], Optional[IChannel]] = no_channel
        self._reconciles: dict[str, IDelayedCall] = {}  # CP id -> its pending _reconcile
        self._plug_waits: dict[str, IDelayedCall] = {}  # session id -> its pending _not_plugged
        self.journal = Journal(store, wall_clock)
        # The audit trail (docs/audit.md): every part records through self.audit.record(...).
        self.audit = AuditTrail(store, clock, wall_clock, audit_key if audit_key is not None else os.urandom(32))
        self.observers = self.journal.observers  # callables taking an event dict (panel, Kafka)
        self.recent_messages = self.journal.recent_messages
        self.charges = Charges(store, clock, self.journal, self.cps, self.driver_channel, wall_clock)
        self.sessions = self.charges.sessions  # open sessions by id
        self.driver_sessions = self.charges.driver_sessions
        self.trust = Trust(self, **trust)  # logins, keys, refusals (the CP links and records go through it)
        self.weather = WeatherDesk(self, weather_stale)  # EV_W's alerts and health
        self.drivers = DriverTrust(self, driver_auth)  # drivers' logins and keys (their links and records go through it)
        self.alerts = AlertBoard(self)  # alerts from every part (docs/panel.md)
        self.journal.on_db_error, self.journal.on_db_ok = self.alerts.database_failed, self.alerts.database_ok
        self.audit.on_db_error = functools.partial(self.alerts.database_failed, source="audit")
        self.audit.on_db_ok = functools.partial(self.alerts.database_ok, source="audit")

    # -- wiring and lifecycle (called by the service) -------------------------

    def reach_drivers_by(self, provider: Callable[[str], Optional[IChannel]]) -> None:
        """
        How to reach a driver that has no link of its own now: the Kafka
        adapter gives one (through Kafka every driver is always reachable).
        """
        self._driver_channel = provider

    def driver_channel(self, driver_id: str) -> Optional[IChannel]:
        return self.driver_links.get(driver_id) or self.drivers.kafka_channel(driver_id, self._driver_channel(driver_id))

    def restore(self, cp_rows: list[dict], session_rows: list[dict]) -> None:
        """Rebuild the state from the store's rows (at start, before any peer is heard)."""
        for row in cp_rows:
            self.cps[row["id"]] = cp_from_row(row)
        self.charges.restore(session_rows)
        self.drivers.load_accounts()
        for session in self.sessions.values():  # authorized before a restart and never plugged in: wait again
            cp = self.cps.get(session.cp_id)
            if self.plug_timeout > 0 and cp is not None and session.last_seq == 0:
                self._plug_waits[session.id] = self.clock.callLater(self.plug_timeout, self._not_plugged, cp, session)
        self.log.info(
            "EV_Central ready: {cps} charging points known (all DESCONECTADO until their Monitor connects), "
            "{open} charges open",
            cps=len(self.cps),
            open=len(self.sessions),
        )

    def cancel_pending(self) -> None:
        """Cancel every call scheduled on the clock (Central is stopping)."""
        calls, self._reconciles = self._reconciles, {}
        waits, self._plug_waits = self._plug_waits, {}
        for call in [*calls.values(), *waits.values()]:
            if call.active():
                call.cancel()
        self.trust.cancel_pending()

    def close_links(self) -> None:
        """Close every CP's and driver's channel (Central is stopping)."""
        for channel in list(self.driver_links.values()) + [cp.link for cp in self.cps.values() if cp.link]:
            channel.close()

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
        self.store.set_cp_state(cp.id, after.value, cp.machine.stopped).addErrback(self.journal.db_error, "saving a CP state")
        self.journal.notify({"type": "cp", "cp": cp.as_dict()})
        return True

    def check_liveness(self) -> None:
        now = self.clock.seconds()
        for cp in self.cps.values():
            if cp.link is not None and now - cp.last_seen > self.liveness_timeout:
                link = cp.link
                self.cp_offline(cp, f"CP {cp.id} DESCONECTADO: no liveness from its Monitor for {self.liveness_timeout:g} s")
                link.close()

    def cp_offline(self, cp: ChargingPoint, text: str, *, reason: str = REASON_DISCONNECTED,
                   kind: str = "disconnect") -> None:
        """C{cp} has no link now: DESCONECTADO, its charge ended with C{reason}; C{text} is the message."""
        cp.link = None
        if cp.session is not None:
            self.charges.end(cp.session, reason)
        self._fire(cp, CpInput.OFFLINE)
        self.journal.message(kind, cp.id, text, level="info" if kind == "disconnect" else "warn")

    # -- a CP that logged in (L{evnet.central.trust} checked its credentials) ----

    def cp_registered(self, row: dict) -> ChargingPoint:
        """
        The CP of a successful login, with the location and price of its
        registration at EV_Registry (C{row}): a link cannot change them.
        """
        location, price = row["location"], float(row["price"])
        cp = self.cps.get(row["cp_id"])
        if cp is None:
            cp = self.cps[row["cp_id"]] = ChargingPoint(row["cp_id"], location, price, CpMachine())
            verb = "registered"
        elif (cp.location, cp.price) != (location, price):
            cp.location, cp.price = location, price
            verb = "registration updated"
        else:
            verb = None
        cp.registration = row["status"]
        if self.weather.covers(cp.location):
            self.weather_out(cp)
        else:
            self.weather_back(cp)
        self.store.upsert_cp(cp.id, cp.location, cp.price, cp.state.value).addErrback(self.journal.db_error, "saving a CP")
        if verb is not None:
            self.journal.message("register", cp.id, f"CP {cp.id} {verb}: {cp.location}, {cp.price:.3f} €/kWh (EV_Registry)")
            self.journal.notify({"type": "cp", "cp": cp.as_dict()})
        return cp

    def cp_logged_in(self, cp: ChargingPoint, channel: IChannel, greet: Callable[[CpState], None]) -> None:
        """
        C{cp} logged in on C{channel} (sealed): it is online.  C{greet(state)}
        sends KEY with the CP's state, before anything sealed under the new key.
        """
        cp.link = channel
        cp.last_seen = self.clock.seconds()
        if cp.state is CpState.DESCONECTADO:
            self._fire(cp, CpInput.ONLINE)
            if cp.session is not None and cp.state is CpState.ACTIVADO:
                self._fire(cp, CpInput.CHARGE_START)
                self._schedule_reconcile(cp, cp.session)
        else:  # a new link replaced the old one: same state, a new key
            self.journal.notify({"type": "cp", "cp": cp.as_dict()})
        key = cp.key.key_id if cp.key else "-"
        self.journal.message("connect", cp.id, f"CP {cp.id} authenticated from {channel.peer_name}: {cp.state.value} (key {key})")
        greet(cp.state)
        if cp.machine.out_of_service:
            channel.send(m.Parar(cp.id))

    def _schedule_reconcile(self, cp: ChargingPoint, session: Session) -> None:
        old = self._reconciles.pop(cp.id, None)
        if old is not None and old.active():
            old.cancel()
        self._reconciles[cp.id] = self.clock.callLater(self.reconcile_timeout, self._reconcile, cp, session, cp.last_seen)

    def _reconcile(self, cp: ChargingPoint, session: Session, since: float) -> None:
        """
        A charge left open by an earlier run of Central, on a CP that came
        back: if its Engine said nothing about it since (no TELEM, no STOP),
        the Engine has lost it; close it with what was recorded.
        """
        self._reconciles.pop(cp.id, None)
        if session.open and cp.session is session and session.reported_at <= since:
            self.journal.message(
                "reconcile", cp.id,
                f"CP {cp.id} reconnected but reported nothing about session {session.id} for "
                f"{self.reconcile_timeout:g} s: closing it with what was recorded",
                level="warn",
            )
            self._end_charge(cp, session, REASON_NOT_REPORTED)

    def _end_charge(self, cp: ChargingPoint, session: Session, reason: str) -> None:
        """End C{cp}'s charge C{session} here (its ticket follows, to the driver and the CP) and free the CP."""
        self.charges.end(session, reason)
        if cp.state is CpState.SUMINISTRANDO:
            self._fire(cp, CpInput.CHARGE_END)

    def _not_plugged(self, cp: ChargingPoint, session: Session) -> None:
        """
        An authorized charge whose CP reported nothing (no TELEM) within
        C{plug_timeout}: no vehicle was plugged in; release the CP with a
        0 kWh ticket, so that it does not stay reserved forever.
        """
        self._plug_waits.pop(session.id, None)
        if not session.open or cp.session is not session or session.last_seq > 0:
            return
        why = f"{REASON_NOT_PLUGGED} within {self.plug_timeout:g} s"
        self.journal.message("not-plugged", cp.id, f"CP {cp.id}: session {session.id} of driver {session.driver_id} "
                             f"released: {why}", level="warn")
        self.charges.notify_driver(session, m.Notice(cp.id, f"no vehicle was plugged in at CP {cp.id} within "
                                                            f"{self.plug_timeout:g} s; the charge is released"))
        self._end_charge(cp, session, why)

    def cancel(self, driver_id: str, by: str = "the driver") -> tuple[bool, str]:
        """
        End C{driver_id}'s charge in progress now, at its driver's request:
        it ends with a ticket (what was supplied so far), like an unplug.
        """
        session = self.driver_sessions.get(driver_id)
        if session is None:
            return False, f"driver {driver_id} has no charge in progress"
        cp = self.cps.get(session.cp_id)
        self.journal.message("cancel", session.cp_id, f"driver {driver_id} cancelled session {session.id} at CP "
                             f"{session.cp_id} ({by}): its ticket follows")
        if cp is None:  # pragma: no cover - a session's CP is always known
            self.charges.end(session, REASON_CANCELLED)
        else:
            self._end_charge(cp, session, REASON_CANCELLED)
        return True, session.id

    # -- what a CP reports: the one dispatch ---------------------------------

    def cp_report(self, cp_id: str, msg: m.Message) -> Optional[str]:
        """
        A report of CP C{cp_id}, whichever transport carried it (its
        Monitor's link, or Kafka's ``cp.telemetry``/``cp.events``): the
        transport vouches for C{cp_id} (the link's authenticated CP, the
        record's key).  Returns None once handled, or why it was not (the
        adapter tells the sender, or logs it).

        - STATUS, AVR and RCV are signs of life (they refresh C{last_seen})
          and say how the Engine is; they apply to a connected CP only (one
          that is not stays DESCONECTADO until its Monitor authenticates,
          and its next STATUS tells how the Engine is).
        - TELEM and STOP apply to a known CP, connected or not: a charge's
          figures are never dropped.
        - REQ asks for a charge at that CP; the answer goes to its Monitor.
        """
        cp = self.cps.get(cp_id)
        if cp is None:
            return f"CP {cp_id} is unknown"
        named = getattr(msg, "cp_id", cp_id)
        if isinstance(msg, m.Req):
            if named != cp.id:
                self._answer_cp(m.Denied(msg.driver_id, named, "a CP may only request charges for itself"), cp)
            else:
                self.request(msg.driver_id, cp.id, msg.target_kwh, ORIGIN_CP).addCallback(self._answer_cp, cp)
            return None
        if named != cp.id:
            return f"{msg.code} is about CP {named}, not CP {cp.id}"
        if isinstance(msg, (m.Status, m.Avr, m.Rcv)):
            if cp.link is None:
                return f"CP {cp.id} is not connected"
            cp.last_seen = self.clock.seconds()
            if isinstance(msg, m.Status):
                self.cp_status(cp, msg.engine)
            elif isinstance(msg, m.Avr):
                self.cp_fault(cp, msg.reason)
            else:
                self.cp_recovered(cp)
        elif isinstance(msg, m.Telem):
            self.charges.telemetry(cp, msg)
        elif isinstance(msg, m.Stop):
            if self.charges.stopped(cp, msg) and cp.state is CpState.SUMINISTRANDO:
                self._fire(cp, CpInput.CHARGE_END)
        else:
            return f"{msg.code} is not expected from a CP"
        return None

    def _answer_cp(self, answer: m.Message, cp: ChargingPoint) -> None:
        if cp.link is not None:
            cp.link.send(answer)

    def cp_status(self, cp: ChargingPoint, engine: str) -> None:
        if engine == m.ENGINE_KO and cp.machine.engine_ok:
            self.cp_fault(cp, "the Engine reports KO")
        elif engine == m.ENGINE_OK and not cp.machine.engine_ok:
            self.cp_recovered(cp)

    def cp_fault(self, cp: ChargingPoint, reason: str) -> None:
        if not cp.machine.engine_ok and cp.state in (CpState.AVERIADO, CpState.PARADO):
            return  # already known
        self.journal.message("fault", cp.id, f"CP {cp.id} AVERIADO: {reason}", level="warn")
        cp.fault, cp.fault_at = reason, self.now()
        if cp.session is not None:
            session = cp.session
            self.charges.notify_driver(session, m.Notice(cp.id, f"fault at CP {cp.id}: {reason}; your charge ends now"))
            self.charges.end(session, f"{REASON_FAULT}: {reason}")
        self._fire(cp, CpInput.FAULT)

    def cp_recovered(self, cp: ChargingPoint) -> None:
        if cp.machine.engine_ok:
            return
        cp.fault = cp.fault_at = None
        self._fire(cp, CpInput.RECOVER)
        self.journal.message("recover", cp.id, f"CP {cp.id} recovered: {cp.state.value}")

    # -- requests ------------------------------------------------------------

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
        elif cp.machine.weather_alert:
            why = f"CP {cp_id} is out of service: {REASON_WEATHER}"
        elif not cp.available:
            why = f"CP {cp_id} is not available ({'Out of Order' if cp.state is CpState.PARADO else cp.state.value})"
        elif target_kwh < 0:
            why = "the target must not be negative"
        else:
            why = None
        if why is not None:
            self.journal.message("denied", cp_id, f"REQ {driver_id} -> {cp_id}: DENIED: {why}")
            return defer.succeed(m.Denied(driver_id, cp_id, why))
        session = self.charges.begin(cp, driver_id, target_kwh, origin)
        self._fire(cp, CpInput.CHARGE_START)

        def recorded(_):
            if not session.open:
                return m.Denied(driver_id, cp_id, f"CP {cp_id} became unavailable")
            self.journal.message(
                "authorized", cp.id, f"REQ {driver_id} -> {cp.id}: AUTHORIZED, session {session.id}"
                + (f", target {target_kwh:g} kWh" if target_kwh else "")
            )
            if cp.link is not None:
                cp.link.send(m.Start(cp.id, session.id, driver_id, cp.price, target_kwh, 0))
            if self.plug_timeout > 0:
                self._plug_waits[session.id] = self.clock.callLater(self.plug_timeout, self._not_plugged, cp, session)
            self.journal.notify({"type": "session", "session": session.as_dict()})
            return m.Authorized(driver_id, cp.id, session.id)

        def not_recorded(failure):
            self.journal.db_error(failure, "opening a session")
            if cp.state is CpState.SUMINISTRANDO:
                self._fire(cp, CpInput.CHARGE_END)
            return m.Denied(driver_id, cp_id, "Central could not record the charge; try again")

        return self.charges.record(session).addCallbacks(recorded, not_recorded)

    # -- what a driver says: the one dispatch --------------------------------

    def driver_hello(self, channel: IChannel, driver_id: str) -> bool:
        if not valid_id(driver_id):
            channel.send(m.Refused(WHAT_DRIVER, driver_id, f"a driver id is {ID_RULE}"))
            return False
        old = self.driver_links.get(driver_id)
        if old is not None and old is not channel:
            old.close()
        self.driver_links[driver_id] = channel
        channel.context["driver_id"] = driver_id
        self.store.touch_driver(driver_id).addErrback(self.journal.db_error, "saving a driver")
        self.log.info("driver {driver} connected from {peer}", driver=driver_id, peer=channel.peer_name)
        channel.send(m.Accepted(WHAT_DRIVER, driver_id))
        ongoing = self.driver_sessions.get(driver_id)
        if ongoing is not None:
            channel.send(m.Authorized(driver_id, ongoing.cp_id, ongoing.id))

        def resend(rows):
            for row in rows:
                if self.driver_links.get(driver_id) is channel:
                    self.log.info("re-sending ticket {sid} to driver {driver}", sid=row["id"], driver=driver_id)
                    self.charges.deliver_ticket(driver_id, ticket_from_row(row))

        self.store.undelivered_tickets(driver_id).addCallbacks(
            resend, self.journal.db_error, errbackArgs=("finding missed tickets",)
        )
        return True

    def driver_gone(self, channel: IChannel) -> None:
        """A driver's own link is gone."""
        driver_id = channel.context.get("driver_id")
        known = self.driver_links.get(driver_id) if driver_id else None
        if known is not None and getattr(known, "inner", known) is channel:  # (a sealed channel over the link)
            del self.driver_links[driver_id]
            self.log.info("driver {driver} disconnected", driver=driver_id)

    def driver_message(self, channel: IChannel, msg: m.Message) -> None:
        """A message from a driver, on its own link or through Kafka."""
        if isinstance(msg, m.Driver):
            self.driver_hello(channel, msg.driver_id)
            return
        if isinstance(msg, m.Accepted) and msg.what == WHAT_TICKET:
            self.charges.ticket_received(channel.context.get("driver_id"), msg.subject)
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
            self.request(driver_id, msg.cp_id, msg.target_kwh, ORIGIN_DRIVER).addCallback(channel.send)
        elif isinstance(msg, m.Cancel):
            ok, said = self.cancel(driver_id)
            channel.send(m.Accepted(WHAT_CANCEL, driver_id, said) if ok else m.Refused(WHAT_CANCEL, driver_id, said))
        elif isinstance(msg, m.ListCps):
            for part in self.available_parts(channel.max_data):
                channel.send(part)
        else:
            channel.send(m.Refused(msg.code, driver_id, f"{msg.code} is not expected from a driver"))

    def available_cps(self) -> list[m.CpInfo]:
        """The CPs a driver may charge at now, by id."""
        return [cp.info() for cp in sorted(self.cps.values(), key=lambda c: c.id) if cp.available]

    def available(self) -> m.Available:
        """The available CPs as one message (the panel's view; a frame may not hold it: see available_parts)."""
        return m.Available(self.available_cps())

    def available_parts(self, max_data: int) -> list[m.Available]:
        """The available CPs as AVAILABLE messages of at most C{max_data} bytes each, in order."""
        return m.split_available(self.available_cps(), max_data)

    # -- the operator's commands ---------------------------------------------

    def stop_cp(self, cp_id: str) -> tuple[bool, str]:
        """PARAR: end any charge, leave the CP PARADO ("Out of Order")."""
        cp = self.cps.get(cp_id)
        if cp is None:
            return False, f"unknown CP {cp_id}"
        if cp.machine.stopped:
            return True, f"CP {cp_id} is already stopped"
        if cp.session is not None:
            self.charges.notify_driver(cp.session, m.Notice(cp.id, f"CP {cp.id} was stopped by the operator; your charge ends now"))
            self.charges.end(cp.session, REASON_PARAR)
        held = cp.machine.out_of_service  # a weather alert: the CP has been told PARAR already
        self._fire(cp, CpInput.STOP)
        if cp.link is not None and not held:
            cp.link.send(m.Parar(cp.id))
        self.journal.message("stop", cp.id, f"CP {cp.id} stopped by the operator: PARADO (Out of Order)")
        return True, f"CP {cp_id} stopped"

    def resume_cp(self, cp_id: str) -> tuple[bool, str]:
        """REANUDAR: a stopped CP goes back to service."""
        cp = self.cps.get(cp_id)
        if cp is None:
            return False, f"unknown CP {cp_id}"
        if not cp.machine.stopped:
            return False, f"CP {cp_id} is not stopped ({cp.state.value})"
        self._fire(cp, CpInput.RESUME)
        if cp.machine.weather_alert:
            text = f"CP {cp.id} resumed by the operator, still out of service: {REASON_WEATHER} at {cp.location}"
            self.journal.message("resume", cp.id, text)
            return True, f"CP {cp_id} resumed; it stays out of service while the {REASON_WEATHER} lasts"
        if cp.link is not None:
            cp.link.send(m.Reanudar(cp.id))
        self.journal.message("resume", cp.id, f"CP {cp.id} resumed by the operator: {cp.state.value}")
        return True, f"CP {cp_id} resumed"

    # -- weather alerts (L{evnet.central.weather} decides which CPs) ----------

    def weather_out(self, cp: ChargingPoint) -> None:
        """
        A weather alert holds C{cp}'s location: it goes out of service
        (PARADO, C{weather_alert}), its charge ends with its ticket and the
        driver is told, and its CP is sent PARAR (unless the operator's stop
        already did).
        """
        if cp.machine.weather_alert:
            return
        if cp.session is not None:
            self.charges.notify_driver(
                cp.session, m.Notice(cp.id, f"CP {cp.id} is out of service: {REASON_WEATHER}; your charge ends now"))
            self.charges.end(cp.session, REASON_WEATHER)
        held = cp.machine.out_of_service
        self._fire(cp, CpInput.WEATHER_ALERT)
        if cp.link is not None and not held:
            cp.link.send(m.Parar(cp.id))

    def weather_back(self, cp: ChargingPoint) -> None:
        """The alert on C{cp}'s location is over: it is back in service unless the operator stopped it."""
        if not cp.machine.weather_alert:
            return
        self._fire(cp, CpInput.WEATHER_CLEAR)
        if cp.link is not None and not cp.machine.out_of_service:
            cp.link.send(m.Reanudar(cp.id))

    def revoke_key(self, cp_id: str, requester: str) -> tuple[bool, str]:
        """Revoke the CP's key at once: it is out of service until it logs in again (L{Trust.revoke})."""
        return self.trust.revoke(cp_id, requester)

    def stop_all(self) -> list[tuple[bool, str]]:
        return [self.stop_cp(cp_id) for cp_id in sorted(self.cps)]

    def resume_all(self) -> list[tuple[bool, str]]:
        return [self.resume_cp(cp_id) for cp_id in sorted(self.cps) if self.cps[cp_id].machine.stopped]
