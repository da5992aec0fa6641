"""
Central's side of EV_W's contract (docs/weather.md, "The contract with
Central"): the weather alerts EV_W raises and clears by CP location, EV_W's
health from its heartbeats, and the rule for "EV_W died".  Runs on
Central's clock; no I/O but through the store.

L{WeatherDesk} keeps the alerts and tells Central which CPs they hold
(C{Central.weather_out}, C{Central.weather_back}: what a CP does is
L{evnet.central.rules}).  What it writes down goes through one method,
L{WeatherDesk.record}, so that it can be routed elsewhere (an audit
trail) in one place.

The bodies EV_W sends are checked by the pure L{parse_alert} and
L{parse_health}: a body that is not the contract's shape is a
L{BadBody} with one line saying why.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional

from twisted.logger import Logger

from evnet.central.model import WeatherAlert, weather_alert_from_row

DEFAULT_STALE = 600.0  # seconds of EV_W's silence after which Central clears every alert itself
MISSED_HEARTBEATS = 3  # heartbeats missed before EV_W is shown unhealthy

HEALTH_NOT_HEARD = "not heard from"  # no heartbeat since Central started
HEALTH_OK = "healthy"
HEALTH_UNHEALTHY = "unhealthy"

MAX_LOCATION = 255  # the cps table's location column
MAX_CITY = 80  # EV_W's rule for a city name
MAX_FAILING = 1000  # cities a heartbeat may list as failing
KIND_WEATHER = "weather"  # the journal's kind of every weather message


class BadBody(ValueError):
    """A body EV_W sent that is not the contract's shape: the text is one line for the 400 answer."""


def _text(body: dict, name: str, limit: int) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value.strip():
        raise BadBody(f"'{name}' must be a non-empty string")
    if len(value) > limit:
        raise BadBody(f"'{name}' is longer than {limit} characters")
    if not value.isprintable() or value != value.strip():
        raise BadBody(f"'{name}' must be printable text without surrounding spaces")
    return value


def _number(body: dict, name: str) -> float:
    value = body.get(name)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise BadBody(f"'{name}' must be a number")
    return float(value)


def _object(body: Any) -> dict:
    if not isinstance(body, dict):
        raise BadBody("the body must be a JSON object")
    return body


def parse_alert(body: Any) -> tuple[str, str, float, float]:
    """C{(location, city, temperature, observed_at)} of a POST /api/v1/weather/alerts body."""
    body = _object(body)
    return (_text(body, "location", MAX_LOCATION), _text(body, "city", MAX_CITY),
            _number(body, "temperature"), _number(body, "observed_at"))


@dataclass(frozen=True)
class Heartbeat:
    at: float  # EV_W's clock
    interval: float  # its --interval
    cities: int
    failing: list[str] = field(default_factory=list)


def parse_health(body: Any) -> Heartbeat:
    """The heartbeat of a PUT /api/v1/weather/health body."""
    body = _object(body)
    at, interval = _number(body, "at"), _number(body, "interval")
    if interval <= 0:
        raise BadBody("'interval' must be more than 0 seconds")
    cities = body.get("cities")
    if isinstance(cities, bool) or not isinstance(cities, int) or cities < 0:
        raise BadBody("'cities' must be a whole number, 0 or more")
    failing = body.get("failing", [])
    if not isinstance(failing, list) or len(failing) > MAX_FAILING:
        raise BadBody(f"'failing' must be a list of at most {MAX_FAILING} city names")
    for city in failing:
        if not isinstance(city, str) or not city.strip() or len(city) > MAX_CITY or not city.isprintable():
            raise BadBody(f"'failing' must hold city names (printable, at most {MAX_CITY} characters)")
    return Heartbeat(at, interval, cities, list(failing))


def duration(seconds: float) -> str:
    """C{600} -> "10 min", C{90} -> "90 s"."""
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"


class WeatherDesk:
    """
    The weather alerts Central holds (by location, in the store) and EV_W's
    health.  C{check} runs on Central's clock: it tells when EV_W missed
    L{MISSED_HEARTBEATS} heartbeats, and once EV_W has been silent for
    C{stale} seconds (since its last call, or since Central started) it
    clears every alert, so that a dead EV_W never leaves CPs out of service.
    """

    log = Logger()

    def __init__(self, central: Any, stale: float = DEFAULT_STALE) -> None:
        self.central = central
        self.clock = central.clock
        self.now = central.now  # wall clock, for what people read
        self.store = central.store
        self.stale = stale
        self.alerts: dict[str, WeatherAlert] = {}
        self.heartbeat: Optional[Heartbeat] = None
        self.heard_at: Optional[float] = None  # Central's clock: the last heartbeat
        self.heard_wall: Optional[float] = None  # the same, wall clock
        self.last_word = self.clock.seconds()  # Central's clock: EV_W's last call (or Central's start)
        self.health = HEALTH_NOT_HEARD

    # -- what is written down (one place) -----------------------------------------

    def record(self, subject: str, text: str, *, level: str = "info", action: Optional[str] = None,
               source: Optional[str] = None, **detail: Any) -> None:
        """
        A weather message: raised, cleared, cleared as stale, EV_W's health;
        with C{action}, also an audit row (actor weather EV_W, from C{source}).
        """
        self.central.journal.message(KIND_WEATHER, subject, text, level=level)
        trail = getattr(self.central, "audit", None)
        if action is not None and trail is not None:
            trail.record("weather", "EV_W", source, action, "ok", location=subject, **detail)

    def _changed(self) -> None:
        self.central.journal.notify({"type": "weather", "weather": self.view()})

    def _saved(self, d: Any, doing: str) -> None:
        d.addErrback(self.central.journal.db_error, doing)

    # -- start ----------------------------------------------------------------------

    def restore(self, rows: list[dict]) -> None:
        """The alerts the store holds (at start, after the CPs): their CPs are out of service again."""
        self.last_word = self.clock.seconds()  # the stale clock starts at Central's start
        for row in rows:
            alert = weather_alert_from_row(row)
            self.alerts[alert.location] = alert
            for cp in self.cps_at(alert.location):
                self.central.weather_out(cp)
        if self.alerts:
            self.log.info("weather alerts still held: {locations}", locations=", ".join(sorted(self.alerts)))

    # -- EV_W's calls -----------------------------------------------------------------

    def cps_at(self, location: str) -> list:
        return [self.central.cps[k] for k in sorted(self.central.cps) if self.central.cps[k].location == location]

    def covers(self, location: str) -> bool:
        return location in self.alerts

    def raise_alert(self, location: str, city: str, temperature: float, observed_at: float,
                    source: Optional[str] = None) -> list[str]:
        """Raise (or update) the alert on C{location}; the ids of its CPs, now out of service."""
        self.last_word = self.clock.seconds()
        now = self.now()
        alert = self.alerts.get(location)
        raised = alert is None
        if raised:
            alert = self.alerts[location] = WeatherAlert(location, city, temperature, observed_at, now, now)
        else:  # idempotent: the same alert, its latest reading
            alert.city, alert.temperature, alert.observed_at, alert.updated_at = city, temperature, observed_at, now
        self._saved(self.store.save_weather_alert(*alert.as_row()), "saving a weather alert")
        cps = self.cps_at(location)
        for cp in cps:
            self.central.weather_out(cp)
        if raised:
            self.record(location, f"weather alert at {location} ({city}, {temperature:g} °C): "
                        + (f"{', '.join(cp.id for cp in cps)} out of service" if cps else "no CP there"), level="warn",
                        action="weather.alert", source=source, city=city, temperature=temperature,
                        cps=[cp.id for cp in cps])
        else:
            self.log.debug("weather alert at {location} updated: {t} °C", location=location, t=temperature)
        self._changed()
        return [cp.id for cp in cps]

    def clear_alert(self, location: str, source: Optional[str] = None) -> bool:
        """Clear the alert on C{location}: its CPs come back unless the operator stopped them."""
        self.last_word = self.clock.seconds()
        if self._clear(location, source=source):
            self._changed()
            return True
        return False

    def _clear(self, location: str, suffix: str = "", source: Optional[str] = None,
               action: str = "weather.clear") -> bool:
        alert = self.alerts.pop(location, None)
        if alert is None:
            return False
        self._saved(self.store.delete_weather_alerts([location]), "clearing a weather alert")
        back, held = [], []
        for cp in self.cps_at(location):
            self.central.weather_back(cp)
            (held if cp.machine.out_of_service else back).append(cp.id)
        told = [f"{', '.join(back)} back in service"] if back else []
        told += [f"{', '.join(held)} still stopped by the operator"] if held else []
        self.record(location, f"weather alert at {location} ({alert.city}) over{suffix}: "
                    + ("; ".join(told) if told else "no CP there"), action=action, source=source,
                    city=alert.city, back=back, still_stopped=held)
        return True

    def took_heartbeat(self, heartbeat: Heartbeat) -> None:
        was = self.health
        self.heartbeat = heartbeat
        self.heard_at = self.last_word = self.clock.seconds()
        self.heard_wall = self.now()
        self.health = HEALTH_OK
        if was == HEALTH_UNHEALTHY:
            self.record("EV_W", "EV_W is heard again: healthy")
        elif was == HEALTH_NOT_HEARD:
            self.log.info("EV_W heard: {cities} cities watched, every {interval:g} s",
                          cities=heartbeat.cities, interval=heartbeat.interval)
        self._changed()

    # -- on Central's clock ----------------------------------------------------------------

    def unhealthy_after(self) -> Optional[float]:
        """Seconds without a heartbeat after which EV_W is unhealthy (None before the first)."""
        return None if self.heartbeat is None else MISSED_HEARTBEATS * self.heartbeat.interval

    def check(self) -> None:
        """EV_W's health and the stale rule (Central runs this every second)."""
        now = self.clock.seconds()
        limit = self.unhealthy_after()
        if self.health == HEALTH_OK and limit is not None and now - self.heard_at > limit:
            self.health = HEALTH_UNHEALTHY
            self.record("EV_W", f"EV_W unhealthy: no heartbeat for {duration(limit)} ({MISSED_HEARTBEATS} missed)",
                        level="warn", action="weather.unhealthy")
            self._changed()
        if self.alerts and now - self.last_word >= self.stale:
            self.record("EV_W", f"EV_W silent for {duration(self.stale)}: weather alerts cleared", level="warn")
            for location in sorted(self.alerts):
                self._clear(location, f" (EV_W silent for {duration(self.stale)})", action="weather.stale-clear")
            self._changed()

    # -- what the panel and the API show ------------------------------------------------------

    def view(self) -> dict:
        """The alerts and EV_W's health, as GET /api/v1/weather answers it."""
        hb = self.heartbeat
        silent = None if self.heard_at is None else max(0.0, self.clock.seconds() - self.heard_at)
        alerts = []
        for location in sorted(self.alerts):
            alert = self.alerts[location]
            alerts.append({**alert.as_dict(), "cps": [cp.id for cp in self.cps_at(location)]})
        return {
            "alerts": alerts,
            "health": {
                "state": self.health,
                "last_heartbeat": self.heard_wall,
                "silent_for": silent,
                "interval": hb.interval if hb else None,
                "unhealthy_after": self.unhealthy_after(),
                "cities": hb.cities if hb else None,
                "failing": list(hb.failing) if hb else [],
                "at": hb.at if hb else None,
            },
            "stale_after": self.stale,
        }
