"""
The Engine's core: the charge rules of one charging point as an explicit,
clock-driven machine.  Pure: no Twisted, no I/O.  It emits wire messages
(TELEM, STOP, REQ) to a sink, keeps the finished charges whose TICKET has
not come back yet, and gives L{evnet.engine.statefile.StateFile} a snapshot
to save.

The charge's phase is the table machine L{PHASES} (idle, authorized,
supplying).  Three facts sit beside it, independent of the phase and of each
other (a CP may be stopped and faulty with a vehicle plugged in): whether a
vehicle is plugged in, whether a fault is simulated, whether Central stopped
the CP (PARAR).  The rules below consult them to decide which input to fire.

``docs/chargingpoint.md`` describes the charge, its reasons and the snapshot.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any, Callable, Optional, Protocol

from evnet.protocols import messages as m
from evnet.protocols.machine import Machine
from evnet.protocols.vocabulary import (
    ID_RULE,
    REASON_BUSY,
    REASON_CLOSED,
    REASON_ENGINE_RESTART,
    REASON_FAULT,
    REASON_MONITOR_LOST,
    REASON_PARAR,
    REASON_TARGET,
    REASON_UNPLUG,
    valid_id,
)

if TYPE_CHECKING:
    from evnet.engine.statefile import Restored

STATE_VERSION = 1


class Clock(Protocol):
    def seconds(self) -> float: ...


class CommandError(Exception):
    """A command that cannot be done now; the text says why, for a person."""


class Phase(str, Enum):
    IDLE = "idle"  # no charge
    AUTHORIZED = "authorized"  # START accepted, waiting for the vehicle
    SUPPLYING = "supplying"  # energy flows, TELEM every second


class PhaseInput(str, Enum):
    AUTHORIZE = "authorize"  # a START is accepted
    SUPPLY = "supply"  # the vehicle is plugged in: energy flows
    END = "end"  # the charge ends (its STOP says why)


#: The charge's moves; anything else is logged and ignored.
PHASES: dict[tuple[Phase, PhaseInput], Phase] = {
    (Phase.IDLE, PhaseInput.AUTHORIZE): Phase.AUTHORIZED,
    (Phase.AUTHORIZED, PhaseInput.SUPPLY): Phase.SUPPLYING,
    (Phase.AUTHORIZED, PhaseInput.END): Phase.IDLE,
    (Phase.SUPPLYING, PhaseInput.END): Phase.IDLE,
}


@dataclass
class Session:
    """The charge in progress (at most one); its phase is the Charger's."""

    session_id: str
    driver_id: str
    price: float
    target_kwh: float = 0.0
    target_seconds: int = 0
    seq: int = 0  # the seq of the last TELEM sent
    kwh: float = 0.0
    seconds: float = 0.0  # time spent supplying

    @property
    def euros(self) -> float:
        return self.price * self.kwh


class _Quiet:
    """The log of a Charger given none: it says nothing."""

    def _drop(self, format: str, **fields: Any) -> None:
        pass

    debug = info = warn = error = _drop


#: With auto-plug, the simulated vehicle of a charge with no target (kWh or
#: seconds) is full, and unplugged, after this many seconds of supply: an
#: unattended scenario always ends.
AUTO_UNPLUG_SECONDS = 10

#: The fields of a STOP kept in the snapshot.
STOP_FIELDS = ("cp_id", "session_id", "seq", "kwh", "euros", "seconds", "reason")


class Charger:
    """
    The charge rules of one CP, with no I/O.

    State: the charge's phase (L{PHASES}) and its L{Session}, the facts
    C{plugged}, C{fault} and C{parado}, and the finished charges (their STOP)
    kept until Central's TICKET confirms them.  Every input is a method; a
    command that is not possible now raises L{CommandError} and changes
    nothing.  Messages for Central go to C{emit}; what happens is said on
    C{log} (a L{twisted.logger.Logger} or anything with its methods).
    L{dirty} tells whether the snapshot changed since L{snapshot} was last
    taken.

    Energy: C{power_kw} for the time supplied (kWh = kW x hours); euros =
    price x kWh.  A START's target (kWh or seconds; 0: none) ends the charge
    exactly when it is reached.
    """

    def __init__(
        self,
        clock: Clock,
        power_kw: float,
        emit: Callable[[m.Message], None],
        *,
        auto_plug: bool = False,
        log: Any = None,
    ) -> None:
        self.clock = clock
        self.power_kw = power_kw
        self.emit = emit
        self.auto_plug = auto_plug
        self.log = log if log is not None else _Quiet()
        self.cp_id: Optional[str] = None
        self.price: Optional[float] = None
        self.phase: Machine[Phase, PhaseInput] = Machine("the charge", PHASES, Phase.IDLE)
        self.session: Optional[Session] = None  # None exactly when the phase is idle
        self.plugged = False
        self.fault = False
        self.parado = False
        self.pending: dict[str, m.Stop] = {}
        self.dirty = False
        self._since = 0.0  # when energy was last accounted

    # -- persistence -------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """What the state file keeps: everything needed to report after a crash."""
        self.dirty = False
        session = None
        if self.session is not None:
            session = {**asdict(self.session), "phase": self.phase.state.value}
        return {
            "version": STATE_VERSION,
            "saved_at": self.clock.seconds(),
            "cp_id": self.cp_id,
            "price": self.price,
            "session": session,
            "pending_stops": [{f: getattr(stop, f) for f in STOP_FIELDS} for stop in self.pending.values()],
        }

    def restore(self, restored: "Restored") -> None:
        """
        Take over a snapshot saved by a previous run (read and checked by
        L{evnet.engine.statefile.read_snapshot}).  A charge that was in progress ends with reason
        engine-restart and the totals last saved (no later than what the last
        TELEM said, so nothing is counted twice); its STOP is kept until the
        TICKET comes back.
        """
        self.cp_id, self.price = restored.cp_id, restored.price
        self.pending.update(restored.pending)
        session = restored.session
        if session is not None:
            self.session = session
            self.phase.state = restored.phase  # where the previous run was; the table goes on from there
            self.log.warn(
                "Charge {session} for {driver} was in progress when the Engine stopped: "
                "it ends now with what was delivered ({kwh:.3f} kWh, {euros:.2f} EUR)",
                session=session.session_id,
                driver=session.driver_id,
                kwh=session.kwh,
                euros=session.euros,
            )
            self._finish(REASON_ENGINE_RESTART, account=False)
        self.dirty = True

    # -- from the Monitor --------------------------------------------------

    def configure(self, cp_id: str, price: float) -> None:
        """CFG: the CP id and price this Engine serves."""
        if (cp_id, price) != (self.cp_id, self.price):
            self.log.info("Serving CP {cp_id} at {price:.3f} EUR/kWh", cp_id=cp_id, price=price)
            self.cp_id, self.price = cp_id, price
            self.dirty = True

    def start(self, msg: m.Start) -> None:
        """START: a charge authorized by Central."""
        if self.cp_id is not None and msg.cp_id != self.cp_id:
            self.log.warn("Ignored START for CP {other}: this Engine serves {cp_id}", other=msg.cp_id, cp_id=self.cp_id)
            return
        if msg.session_id in self.pending:
            self.log.info("START for session {session} again: it already ended; STOP sent again", session=msg.session_id)
            self.emit(self.pending[msg.session_id])
            return
        if self.session is not None:
            if self.session.session_id != msg.session_id:
                # Refuse it in a way Central understands, so that session does not stay open.
                self.log.warn(
                    "Refused START for session {new}: session {current} is in progress",
                    new=msg.session_id,
                    current=self.session.session_id,
                )
                stop = m.Stop(msg.cp_id, msg.session_id, 1, 0.0, 0.0, 0, REASON_BUSY)
                self.pending[stop.session_id] = stop
                self.dirty = True
                self.emit(stop)
            return
        if not self.phase.attempt(PhaseInput.AUTHORIZE, self.log):
            return
        if self.cp_id is None:
            self.cp_id = msg.cp_id
        self.session = Session(msg.session_id, msg.driver_id, msg.price, msg.target_kwh, msg.target_seconds)
        self.dirty = True
        self.log.info(
            "Charge authorized: session {session} for driver {driver} at {price:.3f} EUR/kWh{target}",
            session=msg.session_id,
            driver=msg.driver_id,
            price=msg.price,
            target=_describe_target(msg.target_kwh, msg.target_seconds),
        )
        if self.fault or self.parado:
            why = "the CP has a fault" if self.fault else "the CP is stopped (PARAR)"
            self.log.warn("Cannot supply session {session}: {why}", session=msg.session_id, why=why)
            self._finish(REASON_FAULT if self.fault else REASON_PARAR, account=False)
            return
        if self.auto_plug and not self.plugged:
            self.log.info("Vehicle plugged in (auto-plug)")
            self.plugged = True
        if self.plugged:
            self._begin_supply()
        else:
            self.log.info("Waiting for the vehicle to be plugged in (command: plug)")

    def parar(self) -> None:
        """PARAR: Central stops the CP; a charge in progress ends."""
        self.parado = True
        self.log.warn("Central stopped this CP (PARAR): out of order until REANUDAR")
        if self.session is not None:
            self._finish(REASON_PARAR)

    def reanudar(self) -> None:
        """REANUDAR: Central resumes the CP."""
        if self.parado:
            self.parado = False
            self.log.info("Central resumed this CP (REANUDAR)")

    def monitor_lost(self) -> None:
        """
        The Monitor link is gone: Central ends the charge at once (the CP is
        DESCONECTADO for it), so the Engine stops supplying too; nothing is
        delivered that nobody will bill.
        """
        if self.session is not None:
            self.log.warn("Lost the Monitor: ending session {session}", session=self.session.session_id)
            self._finish(REASON_MONITOR_LOST)

    def ticket(self, msg: m.Ticket) -> None:
        """
        TICKET: Central confirms a finished charge; forget it.  A ticket for
        the charge in progress means Central has closed it (a fault it saw, a
        lost link): stop supplying.
        """
        if self.session is not None and self.session.session_id == msg.session_id:
            self.log.warn(
                "Central closed session {session} ({reason}): ending the charge",
                session=msg.session_id, reason=msg.reason or "no reason given",
            )
            self._finish(REASON_CLOSED)
        stop = self.pending.pop(msg.session_id, None)
        if stop is None:
            self.log.debug("Ticket for session {session}: nothing pending", session=msg.session_id)
            return
        self.dirty = True
        self.log.info(
            "Ticket for session {session}: {kwh:.3f} kWh, {euros:.2f} EUR, {seconds} s ({reason}); charge closed",
            session=msg.session_id,
            kwh=msg.kwh,
            euros=msg.euros,
            seconds=msg.duration_seconds,
            reason=msg.reason or stop.reason,
        )

    # -- commands (a person at the CP, or evctl) ---------------------------

    def plug(self) -> str:
        if self.plugged:
            raise CommandError("a vehicle is already plugged in")
        if self.fault:
            raise CommandError("the CP has a fault (recover first)")
        if self.session is None:
            raise CommandError("no charge authorized (use a driver's app, or: request DRIVER [KWH])")
        self.plugged = True
        self._begin_supply()
        return f"plugged in: supplying session {self.session.session_id} for {self.session.driver_id}"

    def unplug(self) -> str:
        if not self.plugged:
            raise CommandError("no vehicle is plugged in")
        self.plugged = False
        if self.phase.state is Phase.SUPPLYING:
            return f"unplugged: {_describe_stop(self._finish(REASON_UNPLUG))}"
        return "unplugged"

    def set_fault(self) -> str:
        if self.fault:
            raise CommandError("a fault is already simulated")
        self.fault = True
        self.log.warn("Fault simulated: the Engine answers KO to health checks")
        if self.session is not None:
            return f"fault simulated: the Engine answers KO; {_describe_stop(self._finish(REASON_FAULT))}"
        return "fault simulated: the Engine answers KO"

    def recover(self) -> str:
        if not self.fault:
            raise CommandError("there is no fault to recover from")
        self.fault = False
        self.log.info("Fault cleared: the Engine answers OK to health checks")
        return "recovered: the Engine answers OK"

    def request(self, driver_id: str, target_kwh: float) -> m.Req:
        """A charge asked for at the CP itself: REQ to Central, which answers with START."""
        if not valid_id(driver_id):
            raise CommandError(f"bad driver id {driver_id!r} ({ID_RULE})")
        if not (target_kwh >= 0 and target_kwh != float("inf")):
            raise CommandError(f"bad target {target_kwh!r}: kWh must be a number >= 0")
        if self.cp_id is None:
            raise CommandError("this Engine has no CP id yet: no Monitor has configured it")
        if self.session is not None:
            raise CommandError(f"session {self.session.session_id} is in progress")
        if self.fault:
            raise CommandError("the CP has a fault (recover first)")
        if self.parado:
            raise CommandError("Central stopped this CP (PARAR)")
        req = m.Req(driver_id, self.cp_id, target_kwh)
        self.emit(req)
        return req

    def status(self) -> str:
        parts = [f"cp={self.cp_id or '?'}"]
        if self.price is not None:
            parts.append(f"price={self.price:.3f}")
        parts.append(f"state={self.phase.state.value}")
        if self.session is not None:
            s = self.session
            parts += [
                f"session={s.session_id}",
                f"driver={s.driver_id}",
                f"kwh={s.kwh:.3f}",
                f"euros={s.euros:.2f}",
                f"seconds={_whole(s.seconds)}",
            ]
        parts += [
            f"plugged={'yes' if self.plugged else 'no'}",
            f"fault={'yes' if self.fault else 'no'}",
            f"parado={'yes' if self.parado else 'no'}",
            f"awaiting-tickets={len(self.pending)}",
        ]
        return " ".join(parts)

    @property
    def health(self) -> str:
        return m.ENGINE_KO if self.fault else m.ENGINE_OK

    # -- time --------------------------------------------------------------

    def tick(self) -> None:
        """Every second: account energy, send TELEM, end the charge at its target."""
        session = self.session
        if session is None or self.phase.state is not Phase.SUPPLYING:
            return
        reached = self._account(session)
        session.seq += 1
        self.emit(
            m.Telem(
                self._cp(),
                session.session_id,
                session.seq,
                session.kwh,
                self.power_kw,
                session.euros,
                _whole(session.seconds),
            )
        )
        if reached:
            self._finish(REASON_TARGET, account=False)
        elif self.auto_plug and not (session.target_kwh or session.target_seconds) \
                and session.seconds >= AUTO_UNPLUG_SECONDS - 1e-6:
            self.log.info("The vehicle is full after {s} s: unplugged (auto-plug)", s=AUTO_UNPLUG_SECONDS)
            self._finish(REASON_UNPLUG, account=False)

    # -- internals ---------------------------------------------------------

    def _cp(self) -> str:
        return self.cp_id or "?"

    def _begin_supply(self) -> None:
        if self.session is None or not self.phase.attempt(PhaseInput.SUPPLY, self.log):
            return
        self._since = self.clock.seconds()
        self.dirty = True
        self.log.info(
            "Supplying session {session} for {driver} at {kw:g} kW",
            session=self.session.session_id,
            driver=self.session.driver_id,
            kw=self.power_kw,
        )

    def _account(self, session: Session) -> bool:
        """
        Add the energy supplied since the last accounting, never past the
        target; return whether the target is reached.
        """
        now = self.clock.seconds()
        dt = max(0.0, now - self._since)
        self._since = now
        limits = []
        if session.target_seconds > 0:
            limits.append(session.target_seconds - session.seconds)
        if session.target_kwh > 0:
            limits.append((session.target_kwh - session.kwh) * 3600.0 / self.power_kw)
        reached = False
        if limits and dt >= min(limits):
            dt = max(0.0, min(limits))
            reached = True
        session.seconds += dt
        session.kwh += self.power_kw * dt / 3600.0
        if reached and session.target_kwh > 0 and session.kwh > session.target_kwh:
            session.kwh = session.target_kwh
        self.dirty = True
        return reached

    def _finish(self, reason: str, *, account: bool = True) -> Optional[m.Stop]:
        """End the session: its STOP is emitted and kept until the TICKET."""
        session = self.session
        supplying = self.phase.state is Phase.SUPPLYING
        if session is None or not self.phase.attempt(PhaseInput.END, self.log):
            return None
        if account and supplying:
            self._account(session)
        stop = m.Stop(
            self._cp(),
            session.session_id,
            session.seq + 1,
            session.kwh,
            session.euros,
            _whole(session.seconds),
            reason,
        )
        self.session = None
        self.pending[stop.session_id] = stop
        self.dirty = True
        if self.auto_plug and self.plugged:
            self.plugged = False
        self.log.info("Charge ended: {what}", what=_describe_stop(stop))
        self.emit(stop)
        return stop


def _whole(seconds: float) -> int:
    """Whole seconds elapsed (a hair of float error does not lose a second)."""
    return int(seconds + 1e-6)


def _describe_target(kwh: float, seconds: int) -> str:
    targets = []
    if kwh > 0:
        targets.append(f"{kwh:.3f} kWh")
    if seconds > 0:
        targets.append(f"{seconds} s")
    return f", up to {' or '.join(targets)}" if targets else ""


def _describe_stop(stop: Optional[m.Stop]) -> str:
    if stop is None:
        return "no charge to end"
    return (
        f"session {stop.session_id} ended ({stop.reason}): "
        f"{stop.kwh:.3f} kWh, {stop.euros:.2f} EUR, {stop.seconds} s"
    )
