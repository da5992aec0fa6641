"""
A charge at Central once it is authorized: the open sessions and their
figures (TELEM, STOP), the close (stored *before* any TICKET goes out, and
retried while the store fails), and the ticket's delivery to the driver
and its copy to the CP.

L{Charges} never moves a CP's state machine: L{evnet.central.rules.Central}
decides who may charge and moves the CP around these calls.  It speaks to
peers only through L{evnet.protocols.channel.IChannel}s.
"""

from __future__ import annotations

import secrets
from typing import Any, Callable, Optional

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from evnet.protocols import messages as m
from evnet.protocols.channel import IChannel
from evnet.central.journal import Journal
from evnet.central.model import ORIGIN_DRIVER, ChargingPoint, Session, session_from_row, ticket_from_row
from evnet.central.states import SessionInput
from evnet.protocols.machine import IllegalTransition

STALE_ANSWER_INTERVAL = 5.0  # seconds between two tickets sent for one stale session
STOP_REASON = "stop"  # the reason of a STOP that gives none


class Charges:
    log = Logger()

    def __init__(
        self,
        store: Any,
        clock: IReactorTime,
        journal: Journal,
        cps: dict[str, ChargingPoint],
        reach_driver: Callable[[str], Optional[IChannel]],
        wall_clock: Callable[[], float],
    ) -> None:
        self.store = store
        self.clock = clock
        self.journal = journal
        self.cps = cps
        self.reach_driver = reach_driver
        self.now = wall_clock
        self.sessions: dict[str, Session] = {}  # open sessions
        self.driver_sessions: dict[str, Session] = {}  # driver id -> open session
        # Closed sessions whose close is not stored yet: their ticket waits.
        self.closing: dict[str, Session] = {}
        self._writing: set[str] = set()  # closes being written now
        self.tickets_in_flight: set[str] = set()
        self._stale_answered: dict[str, float] = {}

    def restore(self, rows: list[dict]) -> None:
        """The open sessions as the store has them (at start)."""
        for row in rows:
            self._track(session_from_row(row))

    def _track(self, session: Session) -> None:
        self.sessions[session.id] = session
        self.driver_sessions[session.driver_id] = session
        cp = self.cps.get(session.cp_id)
        if cp is not None:
            cp.session = session

    def _forget(self, session: Session) -> None:
        self.sessions.pop(session.id, None)
        if self.driver_sessions.get(session.driver_id) is session:
            del self.driver_sessions[session.driver_id]
        cp = self.cps.get(session.cp_id)
        if cp is not None and cp.session is session:
            cp.session = None

    # -- opening -------------------------------------------------------------

    def begin(self, cp: ChargingPoint, driver_id: str, target_kwh: float, origin: str) -> Session:
        """A new session at C{cp}, in memory (the caller has checked that it may start)."""
        session = Session("S" + secrets.token_hex(5), cp.id, driver_id, origin, cp.price, target_kwh, self.now())
        self._track(session)
        return session

    def record(self, session: Session) -> defer.Deferred:
        """Store the new C{session}; if the store fails, it is forgotten and the Deferred fails."""

        def failed(failure: Failure) -> Failure:
            self._forget(session)
            return failure

        d = self.store.open_session(
            {"id": session.id, "cp_id": session.cp_id, "driver_id": session.driver_id, "origin": session.origin,
             "price": session.price, "target_kwh": session.target_kwh, "started_at": session.started_at}
        )
        return d.addErrback(failed)

    # -- what the CP reports -------------------------------------------------

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
        self.journal.notify({"type": "telemetry", "cp": cp.as_dict()})

    def _closed_session_reported(self, cp: ChargingPoint, session_id: str) -> None:
        """
        A CP still supplies a session Central has closed (it ended it when the
        CP was lost, say): answer with the stored ticket, which tells the
        Engine to stop.  At most once every 5 s per session.
        """
        if session_id in self.closing:
            return  # its ticket goes to the CP once the close is stored
        now = self.clock.seconds()
        if now - self._stale_answered.get(session_id, -10.0) < STALE_ANSWER_INTERVAL:
            return
        self._stale_answered[session_id] = now
        if len(self._stale_answered) > 10000:
            self._stale_answered.clear()

        def answer(row):
            if row is not None and row["status"] == "closed" and row["cp_id"] == cp.id and cp.link is not None:
                self.log.info("CP {cp} still reports session {sid}, closed here: ticket sent again", cp=cp.id, sid=session_id)
                cp.link.send(ticket_from_row(row))

        self.store.get_session(session_id).addCallbacks(answer, self.journal.db_error, errbackArgs=("looking up a session",))

    def stopped(self, cp: ChargingPoint, msg: m.Stop) -> bool:
        """
        The Engine's STOP: close the session with its final figures and
        return True (the caller moves the CP on).  A STOP for a session not
        open here (a repeat, or one this Central never saw) counts nothing:
        the CP gets the stored ticket again, so its Engine may forget it.
        """
        session = self.sessions.get(msg.session_id)
        if session is not None and session.cp_id == cp.id:
            if msg.seq >= session.last_seq:
                session.kwh, session.euros, session.seconds = msg.kwh, msg.euros, msg.seconds
                session.last_seq = msg.seq
            self.end(session, msg.reason or STOP_REASON)
            return True
        if msg.session_id in self.closing:
            return False  # its ticket goes to the CP once the close is stored

        def answer(row):
            if row is None:
                self.journal.message(
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
                ticket = ticket_from_row(row)
            if cp.link is not None:
                cp.link.send(ticket)

        self.store.get_session(msg.session_id).addCallbacks(answer, self.journal.db_error, errbackArgs=("looking up a session",))
        return False

    # -- closing -------------------------------------------------------------

    def end(self, session: Session, reason: str) -> defer.Deferred:
        """
        Close C{session} with its current figures: store it, then send the
        ticket to the driver and to the CP.  Until the close is stored the
        session waits in L{closing} (a failed write is retried by L{flush});
        the CP and the driver are free at once.
        """
        if not session.open:
            return defer.succeed(None)
        session.machine.fire(SessionInput.END)
        session.end_reason, session.ended_at = reason, self.now()
        self._forget(session)
        self.closing[session.id] = session
        self.journal.message(
            "ticket", session.cp_id,
            f"TICKET {session.id}: driver {session.driver_id} at CP {session.cp_id}: {session.kwh:.3f} kWh, "
            f"{session.euros:.2f} €, {session.seconds} s ({reason})",
        )
        return self._write_close(session)

    def _write_close(self, session: Session) -> defer.Deferred:
        self._writing.add(session.id)
        d = self.store.close_session(
            session.id, session.ended_at, session.kwh, session.euros, session.seconds, session.last_seq,
            session.end_reason,
        )

        def stored(_):
            self._writing.discard(session.id)
            del self.closing[session.id]
            ticket = session.ticket()
            if session.origin == ORIGIN_DRIVER:
                self.deliver_ticket(session.driver_id, ticket)
            cp = self.cps.get(session.cp_id)
            if cp is not None and cp.link is not None:
                cp.link.send(ticket)
            self.journal.notify({"type": "session", "session": {**session.as_dict(), "reason": session.end_reason}})

        def not_stored(failure):
            self._writing.discard(session.id)
            self.journal.db_error(failure, f"closing session {session.id} (kept; the close is tried again)")

        return d.addCallbacks(stored, not_stored)

    def flush(self) -> defer.Deferred:
        """Store the progress of open charges (in one batch) and try again the closes that failed."""
        writes = [self._write_close(s) for sid, s in list(self.closing.items()) if sid not in self._writing]
        rows = []
        for session in self.sessions.values():
            if session.dirty:
                session.dirty = False
                rows.append((session.kwh, session.euros, session.seconds, session.last_seq, session.id))
        if rows:
            writes.append(self.store.save_progress(rows).addErrback(self.journal.db_error, "saving charge progress"))
        return defer.gatherResults(writes) if writes else defer.succeed(None)

    # -- telling the driver --------------------------------------------------

    def deliver_ticket(self, driver_id: str, ticket: m.Ticket) -> None:
        """Send a stored ticket; it counts as delivered when the driver's channel confirms it."""
        channel = self.reach_driver(driver_id)
        if channel is None or not channel.is_open or ticket.session_id in self.tickets_in_flight:
            return
        self.tickets_in_flight.add(ticket.session_id)

        def sent(_):
            if not channel.confirms_receipt:
                return None  # the driver confirms with ACCEPTED#TICKET itself (ticket_received)
            self.log.info("ticket {sid} delivered to driver {driver}", sid=ticket.session_id, driver=driver_id)
            return self.store.mark_ticket_delivered(ticket.session_id).addErrback(self.journal.db_error, "marking a ticket")

        def not_sent(failure):
            self.log.info("ticket {sid} not delivered yet: {why}", sid=ticket.session_id, why=failure.getErrorMessage())

        def done(result):
            self.tickets_in_flight.discard(ticket.session_id)
            return result

        channel.sendMessage(ticket).addCallback(sent).addErrback(not_sent).addBoth(done)

    def ticket_received(self, driver_id: Optional[str], session_id: str) -> None:
        """The driver confirms it has the ticket (Kafka mode: ACCEPTED#TICKET#sessionId)."""
        self.log.info("ticket {sid} delivered to driver {driver}", sid=session_id, driver=driver_id)
        self.store.mark_ticket_delivered(session_id).addErrback(self.journal.db_error, "marking a ticket")

    def notify_driver(self, session: Session, msg: m.Message) -> None:
        """Tell whoever asked for C{session} (the driver, or the CP for a charge asked for there)."""
        if session.origin == ORIGIN_DRIVER:
            channel = self.reach_driver(session.driver_id)
            if channel is None or not channel.is_open:
                return
            if isinstance(msg, m.Telem) and channel.pending > 0:
                # The driver's channel is still busy with earlier messages: this
                # reading is superseded by the next one (the ticket has the totals).
                return
            channel.send(msg)
        else:
            cp = self.cps.get(session.cp_id)
            if cp is not None and cp.link is not None and not isinstance(msg, m.Telem):
                cp.link.send(msg)
