"""
What Central knows about the network: a charging point and a charge
session, the records the rules change.  Their states are the explicit
machines of L{evnet.central.states}; how they change is
L{evnet.central.rules} and L{evnet.central.charges}.  Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from evnet.protocols import messages as m
from evnet.protocols import security
from evnet.protocols.channel import IChannel
from evnet.central.states import CpMachine, CpState, SessionMachine, SessionState

# Who asked for a charge (the sessions table's "origin").
ORIGIN_DRIVER = "driver"  # the driver's app
ORIGIN_CP = "cp"  # at the charging point itself

# A CP's key, as the panel shows it.
KEY_NONE = "none"  # never logged in to this Central, or its key expired
KEY_ACTIVE = "active"
KEY_REVOKED = "revoked"  # by the operator; a new login brings the CP back

# A CP's registration at EV_Registry, as Central last read it.
REGISTRATION_UNKNOWN = "unknown"  # no row at EV_Registry (or not read yet)

# The roles whose sealed messages Central accepts from a CP.
ROLES_FROM_CP = (security.ROLE_MONITOR, security.ROLE_ENGINE)


class CpKey:
    """
    A session key Central issued to one CP at a login.  The key bytes stay
    here: no repr, log line, row or answer shows them.  Each channel a CP
    seals on (its link, each Kafka topic) has its own L{security.Opener}, so
    that the order of one never makes another look replayed.
    """

    def __init__(self, cp_id: str, key_id: str, key: bytes, issued_at: float) -> None:
        self.cp_id = cp_id
        self.key_id = key_id
        self.issued_at = issued_at  # wall clock
        self._key = key
        self._openers: dict[str, security.Opener] = {}

    def sealer(self) -> security.Sealer:
        """Central's sealer (role C) under this key."""
        return security.Sealer(self.cp_id, self.key_id, self._key, security.ROLE_CENTRAL)

    def opener(self, channel: str) -> security.Opener:
        """The opener of what the CP seals on C{channel} ("link", or a topic), accepting roles M and E."""
        opener = self._openers.get(channel)
        if opener is None:
            opener = self._openers[channel] = security.Opener(self.cp_id, self.key_id, self._key, ROLES_FROM_CP)
        return opener

    def __repr__(self) -> str:
        return f"<CpKey {self.key_id} of CP {self.cp_id}>"


@dataclass
class Session:
    id: str
    cp_id: str
    driver_id: str
    origin: str  # ORIGIN_DRIVER or ORIGIN_CP
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
    # Once closed: why and when (wall clock), kept until the close is stored.
    end_reason: Optional[str] = None
    ended_at: Optional[float] = None

    @property
    def open(self) -> bool:
        return self.machine.state is not SessionState.CLOSED

    def ticket(self) -> m.Ticket:
        """The ticket of a closed session."""
        return m.Ticket(self.id, self.kwh, self.euros, self.seconds, self.cp_id, self.driver_id, self.end_reason or "")

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
    link: Optional[IChannel] = None  # its Monitor's channel (sealed) while connected
    last_seen: float = 0.0  # Central's clock
    session: Optional[Session] = None
    registration: str = REGISTRATION_UNKNOWN  # registered / deregistered / unknown, as last read
    key: Optional[CpKey] = None  # the current key (never shown)
    key_state: str = KEY_NONE
    key_revoked_by: Optional[str] = None
    # The key a rotation replaced: still good for Kafka records until old_key_until (Central's clock).
    old_key: Optional[CpKey] = None
    old_key_until: float = 0.0
    # The last fault reported (an AVR's reason) and when (wall clock), until the CP recovers.
    fault: Optional[str] = None
    fault_at: Optional[float] = None

    @property
    def state(self) -> CpState:
        return self.machine.state

    @property
    def available(self) -> bool:
        """Connected, idle and in service: a driver may charge here."""
        return self.state is CpState.ACTIVADO and self.link is not None

    def info(self) -> m.CpInfo:
        return m.CpInfo(self.id, self.location, self.price)

    def as_dict(self) -> dict:
        s = self.session
        return {
            "id": self.id,
            "location": self.location,
            "price": self.price,
            "state": self.state.value,
            "stopped": self.machine.stopped,
            "engine_ok": self.machine.engine_ok,
            "weather_alert": self.machine.weather_alert,
            "available": self.available,
            "driver_id": s.driver_id if s else None,
            "session_id": s.id if s else None,
            "kw": s.kw if s else None,
            "kwh": s.kwh if s else None,
            "euros": s.euros if s else None,
            "seconds": s.seconds if s else None,
            "registration": self.registration,
            "key": self.key_state,
            "key_id": self.key.key_id if self.key else None,
            "key_issued_at": self.key.issued_at if self.key else None,
            "key_revoked_by": self.key_revoked_by,
        }


@dataclass
class WeatherAlert:
    """
    A weather alert EV_W raised on a location (docs/weather.md): the CPs
    there are out of service while it lasts.  Times are wall clock.
    """

    location: str
    city: str
    temperature: float  # °C, the latest EV_W sent
    observed_at: float  # when EV_W read it (EV_W's clock)
    raised_at: float  # when Central took the alert
    updated_at: float  # when Central took its latest temperature

    def as_dict(self) -> dict:
        return {"location": self.location, "city": self.city, "temperature": self.temperature,
                "observed_at": self.observed_at, "raised_at": self.raised_at, "updated_at": self.updated_at}

    def as_row(self) -> tuple:
        return (self.location, self.city, self.temperature, self.observed_at, self.raised_at, self.updated_at)


def weather_alert_from_row(row: dict) -> WeatherAlert:
    return WeatherAlert(row["location"], row["city"], float(row["temperature"]), float(row["observed_at"]),
                        float(row["raised_at"]), float(row["updated_at"]))


def ticket_from_row(row: dict) -> m.Ticket:
    """The ticket of a session as the store has it."""
    return m.Ticket(
        row["id"], float(row["kwh"]), float(row["euros"]), int(row["seconds"]), row["cp_id"], row["driver_id"],
        row["end_reason"] or "",
    )


def cp_from_row(row: dict) -> ChargingPoint:
    """
    A CP as the store has it: DESCONECTADO until its Monitor logs in (with
    no key: keys live in memory only); PARADO is remembered.
    """
    return ChargingPoint(
        row["id"], row["location"], float(row["price"]), CpMachine(CpState.DESCONECTADO, bool(row["stopped"])),
        registration=row.get("registration") or REGISTRATION_UNKNOWN,
    )


def session_from_row(row: dict) -> Session:
    """An open session as the store has it (supplying if it had telemetry)."""
    return Session(
        row["id"], row["cp_id"], row["driver_id"], row["origin"], float(row["price"]),
        float(row["target_kwh"]), float(row["started_at"]),
        SessionMachine(SessionState.SUPPLYING if row["last_seq"] else SessionState.AUTHORIZED),
        kwh=float(row["kwh"]), euros=float(row["euros"]), seconds=int(row["seconds"]),
        last_seq=int(row["last_seq"]),
    )
