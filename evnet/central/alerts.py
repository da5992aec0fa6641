"""
Alerts from every part of the network, as Central learns them
(C{GET /api/v1/alerts}, the stream's C{alerts} event; docs/panel.md).

Two sources, one list:

- **held** signals, raised by the part of Central that learns them and
  cleared when it learns they are over: the database failing (the
  journal's store errors, cleared by its next write that succeeds or by
  L{AlertBoard.probe}; the audit trail's, cleared by its next batch written), Kafka unreachable (the bus's status observer), a
  CP that failed to log in (the trust's refusals; each expires
  C{CP_AUTH_WINDOW} seconds after its last failure);
- **read** from Central's state whenever the list is asked for: each
  weather alert EV_W holds, EV_W unhealthy (its heartbeats stopped), and
  each CP AVERIADO because its Monitor lost its Engine.

Held alerts run on Central's clock (expiry) and show wall-clock times.
No I/O here but the probe's one read through the store.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from evnet.central.audit import utc_text
from evnet.central.states import CpState
from evnet.protocols.vocabulary import engine_lost

KIND_WEATHER = "weather"  # an EV_W alert on a location
KIND_WEATHER_STALE = "weather-stale"  # EV_W's heartbeats stopped
KIND_ENGINE_LOST = "engine-lost"  # a CP AVERIADO: its Monitor lost its Engine
KIND_KAFKA = "kafka"  # Kafka unreachable (Central runs --kafka)
KIND_DATABASE = "database"  # the store failing
KIND_CP_AUTH = "cp-auth"  # a CP that failed to log in, recently
KINDS = (KIND_WEATHER, KIND_WEATHER_STALE, KIND_ENGINE_LOST, KIND_KAFKA, KIND_DATABASE, KIND_CP_AUTH)

CRITICAL = "critical"
WARNING = "warning"
SEVERITIES = (CRITICAL, WARNING)

CP_AUTH_WINDOW = 300.0  # seconds a failed CP login stays an alert after the last one
MAX_CP_AUTH = 100  # failed-login alerts held at most (the oldest goes): a flood of ids is bounded
SUBJECT_DATABASE = "database"
SUBJECT_EVW = "EV_W"


@dataclass
class Alert:
    kind: str
    subject: str
    since: float  # wall clock: when it was raised first
    message: str
    severity: str

    def as_dict(self) -> dict:
        return {"id": f"{self.kind}:{self.subject}", "kind": self.kind, "subject": self.subject,
                "since": utc_text(self.since), "message": self.message, "severity": self.severity}


class AlertBoard:
    """The alerts of one L{evnet.central.rules.Central} (its C{alerts})."""

    def __init__(self, central: Any) -> None:
        self.central = central
        self.clock = central.clock
        self.held: dict[tuple[str, str], Alert] = {}
        self._expires: dict[tuple[str, str], float] = {}  # Central's clock
        self._failures: dict[str, int] = {}  # CP id -> failed logins while its alert holds
        self._probing = False
        self._db_failing: set[str] = set()  # whose store calls fail now: "journal", "audit"

    # -- held signals -----------------------------------------------------------

    def raise_alert(self, kind: str, subject: str, message: str, severity: str,
                    expires_in: Optional[float] = None) -> None:
        """Raise (or refresh: same C{since}, the new message) the alert C{kind} about C{subject}."""
        key = (kind, subject)
        alert = self.held.get(key)
        if alert is None:
            self.held[key] = Alert(kind, subject, self.central.now(), message, severity)
        else:
            alert.message, alert.severity = message, severity
        if expires_in is not None:
            self._expires[key] = self.clock.seconds() + expires_in

    def clear(self, kind: str, subject: Optional[str] = None) -> None:
        """Clear the alert C{kind} about C{subject} (every one of that kind without a subject)."""
        for key in [k for k in self.held if k[0] == kind and subject in (None, k[1])]:
            del self.held[key]
            self._expires.pop(key, None)

    def database_failed(self, doing: str, why: str, source: str = "journal") -> None:
        """A store call of C{source} (the journal's writes and reads, or the audit trail's) failed."""
        self._db_failing.add(source)
        self.raise_alert(KIND_DATABASE, SUBJECT_DATABASE, f"the database failed while {doing}: {why}", CRITICAL)

    def database_ok(self, result: Any = None, source: str = "journal") -> Any:
        """A call of C{source} went through (a callback: passes its result on); the alert holds while another fails."""
        self._db_failing.discard(source)
        if not self._db_failing:
            self.clear(KIND_DATABASE)
        return result

    def probe(self) -> None:
        """While the journal's store calls fail, one read through the store: it clears them if it answers."""
        if "journal" not in self._db_failing or self._probing:
            return
        self._probing = True

        def done(result: Any) -> None:
            self._probing = False

        self.central.store.recent_events(1).addCallbacks(self.database_ok, lambda f: None).addBoth(done)

    def kafka(self, up: bool, reason: str, bootstrap: str) -> None:
        """The bus's status: C{up}, or unreachable for C{reason}."""
        if up:
            self.clear(KIND_KAFKA)
        else:
            self.raise_alert(KIND_KAFKA, bootstrap, f"Kafka unreachable at {bootstrap}: {reason}", CRITICAL)

    def cp_login_failed(self, cp_id: str, why: str) -> None:
        """A refused login of C{cp_id} (already a shown id): an alert for the next L{CP_AUTH_WINDOW} seconds."""
        key = (KIND_CP_AUTH, cp_id)
        if key not in self.held:
            self._failures.pop(cp_id, None)
            ours = sorted((k for k in self.held if k[0] == KIND_CP_AUTH), key=lambda k: self.held[k].since)
            for old in ours[: max(0, len(ours) - MAX_CP_AUTH + 1)]:
                del self.held[old]
                self._expires.pop(old, None)
                self._failures.pop(old[1], None)
        count = self._failures[cp_id] = self._failures.get(cp_id, 0) + 1
        self.raise_alert(KIND_CP_AUTH, cp_id, f"{count} failed login{'s' if count > 1 else ''} of CP {cp_id}; "
                         f"the last: {why}", WARNING, expires_in=CP_AUTH_WINDOW)

    def _expire(self) -> None:
        now = self.clock.seconds()
        for key, until in list(self._expires.items()):
            if until <= now:
                del self._expires[key]
                self.held.pop(key, None)
                if key[0] == KIND_CP_AUTH:
                    self._failures.pop(key[1], None)

    # -- the list -----------------------------------------------------------------

    def _read(self) -> list[Alert]:
        """The alerts read from Central's state now."""
        central, found = self.central, []
        weather = central.weather
        for location in sorted(weather.alerts):
            alert = weather.alerts[location]
            cps = [cp.id for cp in weather.cps_at(location)]
            found.append(Alert(KIND_WEATHER, location, alert.raised_at,
                               f"weather alert at {location} ({alert.city}, {alert.temperature:g} °C): "
                               + (f"{', '.join(cps)} out of service" if cps else "no CP there"), WARNING))
        if weather.health == "unhealthy" and weather.heard_wall is not None:
            limit = weather.unhealthy_after() or 0.0
            found.append(Alert(KIND_WEATHER_STALE, SUBJECT_EVW, weather.heard_wall + limit,
                               f"EV_W unhealthy: no heartbeat for {limit:g} s", WARNING))
        for cp_id in sorted(central.cps):
            cp = central.cps[cp_id]
            if cp.state is CpState.AVERIADO and cp.fault_at is not None and engine_lost(cp.fault or ""):
                found.append(Alert(KIND_ENGINE_LOST, cp.id, cp.fault_at,
                                   f"CP {cp.id} AVERIADO, its Monitor lost its Engine: {cp.fault}", CRITICAL))
        return found

    def view(self) -> list[dict]:
        """Every alert now, the critical ones first, then by time and id."""
        self._expire()
        alerts = [*self.held.values(), *self._read()]
        alerts.sort(key=lambda a: (SEVERITIES.index(a.severity), a.since, a.kind, a.subject))
        return [a.as_dict() for a in alerts]
