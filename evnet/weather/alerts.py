"""
EV_W's rules, pure: each city's weather as a table machine
(L{WEATHER_TABLE}), the frost alert Central is told about (L{Alert}), and
which alerts should be active at Central (L{wanted_alerts}).

A reading is COLD below the threshold, WARM at or above it, UNREADABLE when
the weather source failed; an unreadable city keeps the state it had, so a
failing source never raises or clears an alert by itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Iterable, Mapping

from evnet.protocols.machine import Machine


class Weather(Enum):
    UNKNOWN = "UNKNOWN"  # no reading yet
    MILD = "MILD"  # at or above the threshold: no alert
    FROST = "FROST"  # below the threshold: an alert for its locations


class Reading(Enum):
    COLD = "cold"
    WARM = "warm"
    UNREADABLE = "unreadable"


WEATHER_TABLE: Mapping[tuple[Weather, Reading], Weather] = {
    (Weather.UNKNOWN, Reading.COLD): Weather.FROST,
    (Weather.UNKNOWN, Reading.WARM): Weather.MILD,
    (Weather.UNKNOWN, Reading.UNREADABLE): Weather.UNKNOWN,
    (Weather.MILD, Reading.COLD): Weather.FROST,
    (Weather.MILD, Reading.WARM): Weather.MILD,
    (Weather.MILD, Reading.UNREADABLE): Weather.MILD,
    (Weather.FROST, Reading.WARM): Weather.MILD,
    (Weather.FROST, Reading.COLD): Weather.FROST,
    (Weather.FROST, Reading.UNREADABLE): Weather.FROST,
}


def weather_machine(city: str, state: Weather = Weather.UNKNOWN) -> Machine[Weather, Reading]:
    return Machine(f"weather of {city}", WEATHER_TABLE, state)


def reading_of(temperature: float, threshold: float) -> Reading:
    """COLD strictly below C{threshold}, WARM at or above it."""
    return Reading.COLD if temperature < threshold else Reading.WARM


@dataclass(frozen=True)
class Alert:
    """A frost alert for one CP location, as EV_W sends it to Central."""

    location: str
    city: str
    temperature: float
    observed_at: float

    def body(self) -> dict:
        return {"location": self.location, "city": self.city, "temperature": self.temperature,
                "observed_at": self.observed_at}

    @classmethod
    def from_body(cls, body: Mapping) -> "Alert":
        """The alert in C{body} (as L{body} wrote it); ValueError when it is not one."""
        try:
            location, city = body["location"], body["city"]
            temperature, observed_at = body["temperature"], body["observed_at"]
        except (KeyError, TypeError):
            raise ValueError(f"not an alert: {body!r}") from None
        if not (isinstance(location, str) and isinstance(city, str) and location and city):
            raise ValueError(f"an alert needs a location and a city: {body!r}")
        for value in (temperature, observed_at):
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise ValueError(f"an alert's temperature and time are numbers: {body!r}")
        return cls(location, city, float(temperature), float(observed_at))


def locations_of(city: str, locations: Mapping[str, str], added: Iterable[str]) -> list[str]:
    """
    The locations an alert for C{city} covers: each CP location that maps to
    it (C{locations}: {location: city}), and the city itself when its
    operator added it.
    """
    covered = sorted(location for location, mapped in locations.items() if mapped == city)
    if city in added and city not in covered:
        covered.append(city)
    return covered


def wanted_alerts(frost: Mapping[str, tuple[float, float]], locations: Mapping[str, str],
                  added: Iterable[str]) -> dict[str, Alert]:
    """
    The alerts that should be active at Central: one per location covered
    by a city in C{frost} ({city: (temperature, observed_at)} of the cities
    whose machine is in FROST).
    """
    added = set(added)
    wanted = {}
    for city, (temperature, observed_at) in frost.items():
        for location in locations_of(city, locations, added):
            wanted[location] = Alert(location, city, temperature, observed_at)
    return wanted
