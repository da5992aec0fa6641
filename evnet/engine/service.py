"""
EV_CP_E, the Engine of a charging point: the charger itself.

Three layers, each testable alone:

- L{Charger}: the charge rules as an explicit, clock-driven machine with no
  I/O.  It emits wire messages (TELEM, STOP, REQ) to a sink and keeps the
  finished charges whose TICKET has not come back yet.
- L{StateFile}: the Charger's snapshot on disk, replaced atomically (temp
  file in the same directory, fsync, rename) so a kill at any moment leaves
  either the previous or the new complete file.
- L{EngineService}: wires the Charger to its one Monitor link, to the
  control command (L{ControlFactory}, used by ``evctl engine``) and to the
  terminal (L{ConsoleProtocol}); ticks every second; saves, then sends.
  With a Kafka bus (``--kafka``), TELEM goes to ``cp.telemetry`` and
  STOP/REQ to ``cp.events`` (key: the CP id) instead of the Monitor link;
  START/PARAR/REANUDAR/TICKET still come from the Monitor.

``docs/chargingpoint.md`` describes the commands and the state file.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Callable, Optional

from twisted.application import service
from twisted.internet import task
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.protocols.basic import LineOnlyReceiver, LineReceiver
from twisted.python.failure import Failure

from evnet.protocols import messages as m
from evnet.protocols.link import FramedLink, LinkHandler
from evnet.kafka.errors import BusError

#: Where each message for Central goes with a Kafka bus (key: the CP id).
KAFKA_TOPICS = {m.Telem: "cp.telemetry", m.Stop: "cp.events", m.Req: "cp.events"}

TICK_SECONDS = 1.0
STOP_RESEND_SECONDS = 5.0
STATE_FILE_NAME = "engine-state.json"
STATE_VERSION = 1

# How a charge ends (the STOP's reason; docs/protocol.md).
REASON_TARGET = "target"
REASON_UNPLUG = "unplug"
REASON_FAULT = "fault"
REASON_PARAR = "parar"
REASON_RESTART = "engine-restart"
REASON_MONITOR_LOST = "monitor-lost"
REASON_CLOSED = "closed-by-central"
REASON_BUSY = "busy"

DRIVER_ID = re.compile(r"[A-Za-z0-9_.-]{1,32}\Z")


class CommandError(Exception):
    """A command that cannot be done now; the text says why, for a person."""


class Phase(str, Enum):
    AUTHORIZED = "authorized"  # START accepted, waiting for the vehicle
    SUPPLYING = "supplying"  # energy flows, TELEM every second


@dataclass
class Session:
    """The charge in progress (at most one)."""

    session_id: str
    driver_id: str
    price: float
    target_kwh: float = 0.0
    target_seconds: int = 0
    phase: Phase = Phase.AUTHORIZED
    seq: int = 0  # the seq of the last TELEM sent
    kwh: float = 0.0
    seconds: float = 0.0  # time spent supplying

    @property
    def euros(self) -> float:
        return self.price * self.kwh

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["phase"] = self.phase.value
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Session":
        data = dict(data)
        data["phase"] = Phase(data["phase"])
        return cls(**data)


def _stop_to_json(stop: m.Stop) -> dict[str, Any]:
    return {f: getattr(stop, f) for f in ("cp_id", "session_id", "seq", "kwh", "euros", "seconds", "reason")}


class Charger:
    """
    The charge rules of one CP, with no I/O.

    State: at most one L{Session} (authorized, then supplying), whether a
    vehicle is plugged in, whether a fault is simulated, whether Central
    stopped the CP (PARAR), and the finished charges (their STOP) kept until
    Central's TICKET confirms them.  Every input is a method; a command that
    is not possible now raises L{CommandError} and changes nothing.  Messages
    for Central go to C{emit}.  L{dirty} tells whether the snapshot changed
    since L{snapshot} was last taken.

    Energy: C{power_kw} for the time supplied (kWh = kW x hours); euros =
    price x kWh.  A START's target (kWh or seconds; 0: none) ends the charge
    exactly when it is reached.
    """

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        power_kw: float,
        emit: Callable[[m.Message], None],
        *,
        auto_plug: bool = False,
    ) -> None:
        self.clock = clock
        self.power_kw = power_kw
        self.emit = emit
        self.auto_plug = auto_plug
        self.cp_id: Optional[str] = None
        self.price: Optional[float] = None
        self.session: Optional[Session] = None
        self.plugged = False
        self.fault = False
        self.parado = False
        self.pending: dict[str, m.Stop] = {}
        self.dirty = False
        self._since = 0.0  # when energy was last accounted

    # -- persistence -------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """What L{StateFile} keeps: everything needed to report after a crash."""
        self.dirty = False
        return {
            "version": STATE_VERSION,
            "saved_at": self.clock.seconds(),
            "cp_id": self.cp_id,
            "price": self.price,
            "session": self.session.to_json() if self.session else None,
            "pending_stops": [_stop_to_json(stop) for stop in self.pending.values()],
        }

    def restore(self, data: dict[str, Any]) -> None:
        """
        Take over a snapshot saved by a previous run.  A charge that was in
        progress ends with reason engine-restart and the totals last saved
        (no later than what the last TELEM said, so nothing is counted
        twice); its STOP is kept until the TICKET comes back.
        """
        self.cp_id = data.get("cp_id")
        self.price = data.get("price")
        for stop in data.get("pending_stops", []):
            self.pending[stop["session_id"]] = m.Stop(**stop)
        if data.get("session"):
            session = Session.from_json(data["session"])
            self.session = session
            self.log.warn(
                "Charge {session} for {driver} was in progress when the Engine stopped: "
                "it ends now with what was delivered ({kwh:.3f} kWh, {euros:.2f} EUR)",
                session=session.session_id,
                driver=session.driver_id,
                kwh=session.kwh,
                euros=session.euros,
            )
            self._finish(REASON_RESTART, account=False)
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
        if self.cp_id is None:
            self.cp_id = msg.cp_id
        self.session = Session(msg.session_id, msg.driver_id, msg.price, msg.target_kwh, msg.target_seconds)
        self.dirty = True
        target = _describe_target(msg.target_kwh, msg.target_seconds)
        self.log.info(
            "Charge authorized: session {session} for driver {driver} at {price:.3f} EUR/kWh{target}",
            session=msg.session_id,
            driver=msg.driver_id,
            price=msg.price,
            target=target,
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
        if self.session is not None and self.session.phase is Phase.SUPPLYING:
            stop = self._finish(REASON_UNPLUG)
            return f"unplugged: {_describe_stop(stop)}"
        return "unplugged"

    def set_fault(self) -> str:
        if self.fault:
            raise CommandError("a fault is already simulated")
        self.fault = True
        self.log.warn("Fault simulated: the Engine answers KO to health checks")
        if self.session is not None:
            stop = self._finish(REASON_FAULT)
            return f"fault simulated: the Engine answers KO; {_describe_stop(stop)}"
        return "fault simulated: the Engine answers KO"

    def recover(self) -> str:
        if not self.fault:
            raise CommandError("there is no fault to recover from")
        self.fault = False
        self.log.info("Fault cleared: the Engine answers OK to health checks")
        return "recovered: the Engine answers OK"

    def request(self, driver_id: str, target_kwh: float) -> m.Req:
        """A charge asked for at the CP itself: REQ to Central, which answers with START."""
        if not DRIVER_ID.match(driver_id):
            raise CommandError(f"bad driver id {driver_id!r} (1 to 32 of A-Z a-z 0-9 _ . -)")
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
        if self.session is None:
            parts.append("state=idle")
        else:
            s = self.session
            parts += [
                f"state={s.phase.value}",
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
        if session is None or session.phase is not Phase.SUPPLYING:
            return
        reached = self._account()
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

    # -- internals ---------------------------------------------------------

    def _cp(self) -> str:
        return self.cp_id or "?"

    def _begin_supply(self) -> None:
        assert self.session is not None
        self.session.phase = Phase.SUPPLYING
        self._since = self.clock.seconds()
        self.dirty = True
        self.log.info(
            "Supplying session {session} for {driver} at {kw:g} kW",
            session=self.session.session_id,
            driver=self.session.driver_id,
            kw=self.power_kw,
        )

    def _account(self) -> bool:
        """
        Add the energy supplied since the last accounting, never past the
        target; return whether the target is reached.
        """
        session = self.session
        assert session is not None
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

    def _finish(self, reason: str, *, account: bool = True) -> m.Stop:
        """End the session: its STOP is emitted and kept until the TICKET."""
        session = self.session
        assert session is not None
        if account and session.phase is Phase.SUPPLYING:
            self._account()
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


def _describe_stop(stop: m.Stop) -> str:
    return (
        f"session {stop.session_id} ended ({stop.reason}): "
        f"{stop.kwh:.3f} kWh, {stop.euros:.2f} EUR, {stop.seconds} s"
    )


class StateError(Exception):
    """The state file cannot be read; the text says which and why."""


class StateFile:
    """
    The Engine's snapshot as JSON in C{directory}/engine-state.json.

    L{save} writes a temp file in the same directory, flushes and fsyncs it,
    then renames it over the state file (C{replace}, os.replace by default;
    atomic on POSIX), so a reader only ever sees a complete file.  A temp
    file left by a kill before the rename is ignored by L{load}.
    """

    def __init__(self, directory: str | os.PathLike, replace: Callable[[str, str], None] = os.replace) -> None:
        self.directory = Path(directory)
        self.path = self.directory / STATE_FILE_NAME
        self.temp = self.directory / (STATE_FILE_NAME + ".tmp")
        self._replace = replace

    def load(self) -> Optional[dict[str, Any]]:
        """The last complete snapshot, or None when there is none."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as e:
            raise StateError(f"cannot read the state file {self.path}: {e.strerror}") from None
        try:
            data = json.loads(text)
        except ValueError as e:
            raise StateError(f"the state file {self.path} is not valid JSON ({e})") from None
        if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
            raise StateError(f"the state file {self.path} is not an evengine state file (version {STATE_VERSION})")
        return data

    def save(self, data: dict[str, Any]) -> None:
        text = json.dumps(data, indent=1, sort_keys=True)
        with open(self.temp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        self._replace(str(self.temp), str(self.path))


HELP = """\
commands (or their first letter):
  plug                      plug the vehicle in (needs an authorized charge)
  unplug                    unplug it; a charge in progress ends
  fault                     simulate a fault: health checks answer KO, a charge ends
  recover                   clear the simulated fault
  status                    show the CP, its charge and its state
  request DRIVER [KWH]      ask Central for a charge at this CP (optional kWh target)
  help                      this list"""

_SHORT = {"p": "plug", "u": "unplug", "f": "fault", "r": "recover", "s": "status", "h": "help", "?": "help"}


class EngineService(service.Service, LinkHandler):
    """
    The Engine: serves one Monitor link at a time (a second one is
    refused), answers HCK, applies CFG/START/PARAR/REANUDAR/TICKET, runs
    the commands, ticks every second.  Each change is saved to the state
    file before any message about it is sent.

    With C{bus} (a L{evnet.kafka.bus.KafkaBus}, or anything with its
    C{publish(topic, key, msg)}), TELEM, STOP and REQ are published to
    Kafka (L{KAFKA_TOPICS}) instead of going through the Monitor link.  A
    STOP is still re-sent every 5 s until its TICKET comes back on the
    Monitor link, which makes a Kafka outage lossless for it; a TELEM that
    Kafka refuses is logged (the state file and the STOP keep the totals).
    """

    log = Logger()

    def __init__(
        self,
        store: StateFile,
        clock: IReactorTime,
        *,
        power_kw: float = 11.0,
        auto_plug: bool = False,
        restored: Optional[dict[str, Any]] = None,
        bus: Any = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.bus = bus
        self.monitor: Optional[FramedLink] = None
        self._stops_in_flight: set[str] = set()  # STOPs published, not yet acknowledged by Kafka
        self._telem_failures = 0  # TELEMs Kafka refused since the last one it took
        self._outbox: list[m.Message] = []
        self.charger = Charger(clock, power_kw, self._outbox.append, auto_plug=auto_plug)
        if restored is not None:
            self.charger.restore(restored)
        self._ticker = task.LoopingCall(self.tick)
        self._ticker.clock = clock
        self._resender = task.LoopingCall(self.resend_stops)
        self._resender.clock = clock

    # -- service -----------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self._commit()
        self._ticker.start(TICK_SECONDS, now=False)
        self._resender.start(STOP_RESEND_SECONDS, now=False)

    def stopService(self) -> None:
        for loop in (self._ticker, self._resender):
            if loop.running:
                loop.stop()
        self._commit()
        return super().stopService()

    def tick(self) -> None:
        self.charger.tick()
        self._commit()

    def resend_stops(self) -> None:
        """Send the STOPs whose TICKET has not come back (the TICKET comes on the Monitor link)."""
        if self.monitor is not None and self.charger.pending:
            for stop in list(self.charger.pending.values()):
                self._send(stop)

    def _commit(self) -> None:
        """Save the snapshot if it changed, then send what the Charger emitted."""
        if self.charger.dirty:
            try:
                self.store.save(self.charger.snapshot())
            except OSError as e:
                self.charger.dirty = True
                self.log.error("Cannot save the state file {path}: {why}", path=self.store.path, why=e)
        outbox, self._outbox[:] = list(self._outbox), []
        for msg in outbox:
            if self.bus is not None or self.monitor is not None:
                self._send(msg)
            elif isinstance(msg, m.Stop):
                self.log.info("No Monitor connected: STOP for {session} kept until one is", session=msg.session_id)
            else:
                self.log.info("No Monitor connected: {code} not sent", code=msg.code)

    def _send(self, msg: m.Message) -> None:
        """One message for Central: through Kafka with a bus, else on the Monitor link."""
        if self.bus is None:
            self.monitor.send(msg)
        elif isinstance(msg, m.Stop):
            self._publish_stop(msg)
        else:
            d = self.bus.publish(KAFKA_TOPICS[type(msg)], msg.cp_id, msg)
            if isinstance(msg, m.Telem):
                d.addCallbacks(self._telem_published, self._telem_not_published, errbackArgs=(msg,))
            else:
                d.addErrback(self._not_published, msg)

    def _publish_stop(self, stop: m.Stop) -> None:
        if stop.session_id in self._stops_in_flight:
            return  # the last copy still waits for Kafka: one is enough
        self._stops_in_flight.add(stop.session_id)
        d = self.bus.publish("cp.events", stop.cp_id, stop)
        d.addErrback(self._not_published, stop)
        d.addBoth(lambda _: self._stops_in_flight.discard(stop.session_id))

    def _telem_published(self, _: Any) -> None:
        if self._telem_failures:
            self.log.info(
                "Kafka takes telemetry again; {count} TELEM records could not be sent meanwhile "
                "(the state file and the STOP keep the totals)",
                count=self._telem_failures,
            )
            self._telem_failures = 0

    def _telem_not_published(self, failure: Failure, msg: m.Telem) -> None:
        failure.trap(BusError)
        self._telem_failures += 1
        if self._telem_failures == 1:
            self.log.warn(
                "TELEM {seq} of session {session} not sent to Kafka: {why}. Central misses this update; "
                "the state file and the STOP keep the totals. Further failures are counted until Kafka takes one",
                seq=msg.seq,
                session=msg.session_id,
                why=failure.getErrorMessage(),
            )

    def _not_published(self, failure: Failure, msg: m.Message) -> None:
        failure.trap(BusError)
        if isinstance(msg, m.Stop):
            self.log.warn(
                "STOP for session {session} not sent to Kafka: {why}; it is sent again in {every:g} s",
                session=msg.session_id,
                why=failure.getErrorMessage(),
                every=STOP_RESEND_SECONDS,
            )
        else:
            self.log.warn("{code} not sent to Kafka: {why}", code=msg.code, why=failure.getErrorMessage())

    # -- the Monitor link --------------------------------------------------

    def linkRequested(self, link: FramedLink) -> Optional[str]:
        if self.monitor is not None:
            reason = f"already serving a Monitor from {self.monitor.peer_name}"
            self.log.warn("Refused a second Monitor from {peer}: {reason}", peer=link.peer_name, reason=reason)
            return reason
        return None

    def linkOpened(self, link: FramedLink) -> None:
        self.monitor = link
        self.log.info("Monitor connected from {peer}", peer=link.peer_name)
        self.resend_stops()

    def linkLost(self, link: FramedLink, reason: Failure) -> None:
        if link is self.monitor:
            self.monitor = None
            self.log.warn("Monitor link from {peer} lost: {why}", peer=link.peer_name, why=reason.getErrorMessage())
            self.charger.monitor_lost()
            self._commit()

    def messageReceived(self, link: FramedLink, msg: m.Message) -> None:
        if link is not self.monitor:
            return
        charger = self.charger
        if isinstance(msg, m.Hck):
            link.send(m.HckResp(charger.health))
        elif isinstance(msg, m.Cfg):
            charger.configure(msg.cp_id, msg.price)
        elif isinstance(msg, m.Start):
            charger.start(msg)
        elif isinstance(msg, m.Parar):
            charger.parar()
        elif isinstance(msg, m.Reanudar):
            charger.reanudar()
        elif isinstance(msg, m.Ticket):
            charger.ticket(msg)
        elif isinstance(msg, m.Authorized):
            self.log.info(
                "Central authorized the charge for {driver}: session {session}",
                driver=msg.driver_id,
                session=msg.session_id,
            )
        elif isinstance(msg, m.Denied):
            self.log.warn("Central denied the charge for {driver}: {reason}", driver=msg.driver_id, reason=msg.reason)
        elif isinstance(msg, m.Notice):
            self.log.info("Notice about {subject}: {text}", subject=msg.subject, text=msg.text)
        else:
            self.log.info("Ignored {code} from the Monitor", code=msg.code)
        self._commit()

    # -- commands ----------------------------------------------------------

    def command(self, line: str) -> str:
        """Run one command line; the answer is one line, OK … or ERROR …."""
        words = line.split()
        if not words:
            return "ERROR empty command (try: help)"
        name = _SHORT.get(words[0].lower(), words[0].lower())
        args = words[1:]
        try:
            if name == "help":
                return "OK " + HELP
            if name == "request":
                return "OK " + self._request(args)
            actions = {
                "plug": self.charger.plug,
                "unplug": self.charger.unplug,
                "fault": self.charger.set_fault,
                "recover": self.charger.recover,
                "status": self._status,
            }
            if name not in actions:
                return f"ERROR unknown command {words[0]!r} (try: help)"
            if args:
                return f"ERROR {name} takes no arguments"
            return "OK " + actions[name]()
        except CommandError as e:
            return f"ERROR {e}"
        finally:
            self._commit()

    def _status(self) -> str:
        monitor = f"monitor={self.monitor.peer_name}" if self.monitor else "monitor=none"
        kafka = f" kafka={self.bus.bootstrap}" if self.bus is not None else ""
        return f"{self.charger.status()} {monitor}{kafka}"

    def _request(self, args: list[str]) -> str:
        if not 1 <= len(args) <= 2:
            raise CommandError("usage: request DRIVER [KWH]")
        try:
            kwh = float(args[1]) if len(args) == 2 else 0.0
        except ValueError:
            raise CommandError(f"bad target {args[1]!r}: kWh must be a number >= 0") from None
        if self.monitor is None:
            raise CommandError("no Monitor connected: Central cannot be asked")
        req = self.charger.request(args[0], kwh)
        target = f" up to {req.target_kwh:.3f} kWh" if req.target_kwh else ""
        return f"asked Central for a charge for {req.driver_id}{target}; its answer shows in the log"


class ControlProtocol(LineOnlyReceiver):
    """The control endpoint: one command a line, one answer line."""

    delimiter = b"\n"
    MAX_LENGTH = 1024

    def lineReceived(self, line: bytes) -> None:
        text = line.decode("utf-8", "replace").strip()
        if not text:
            return
        self.sendLine(self.factory.engine.command(text).replace("\n", " | ").encode("utf-8"))

    def lineLengthExceeded(self, line: bytes) -> None:
        self.sendLine(b"ERROR line too long")
        self.transport.loseConnection()


class ControlFactory(Factory):
    protocol = ControlProtocol
    noisy = False

    def __init__(self, engine: EngineService) -> None:
        self.engine = engine


class ConsoleProtocol(LineReceiver):
    """The same commands typed in the Engine's terminal (keys: p u f r s h)."""

    delimiter = b"\n"

    def __init__(self, engine: EngineService) -> None:
        self.engine = engine

    def connectionMade(self) -> None:
        self.transport.write(b"EV_CP_E: type a command (help lists them)\n")

    def lineReceived(self, line: bytes) -> None:
        text = line.decode("utf-8", "replace").strip()
        if text:
            self.transport.write(self.engine.command(text).encode("utf-8") + b"\n")
