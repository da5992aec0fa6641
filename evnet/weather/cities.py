"""
EV_W's text formats, pure (no I/O, no Twisted): city names, the
``--locations-file`` (``location = City name`` lines) and the local weather
file (``City = temperature`` lines).  Both files allow blank lines and
``#`` comments; a problem is told with its line number.

``docs/weather.md`` describes both files.
"""

from __future__ import annotations

import math
from typing import NamedTuple

MAX_NAME = 80


class BadName(ValueError):
    """A city or location name that EV_W does not take; the text says why."""


def clean_name(text: str, what: str = "a city name") -> str:
    """C{text} with its spaces collapsed, or L{BadName} when it cannot be C{what}."""
    name = " ".join(text.split())
    if not name:
        raise BadName(f"{what} cannot be empty")
    if len(name) > MAX_NAME:
        raise BadName(f"{what} has at most {MAX_NAME} characters")
    if "=" in name or "|" in name or not name.isprintable():
        raise BadName(f"{what} cannot hold '=', '|' or control characters: {name!r}")
    return name


class Problem(NamedTuple):
    """A line of a file that was skipped: its number (from 1) and why."""

    line: int
    why: str

    def told(self, path: str) -> str:
        return f"{path} line {self.line}: {self.why}"


def _pairs(text: str, example: str) -> tuple[list[tuple[int, str, str]], list[Problem]]:
    """The C{left = right} lines of C{text}, and the lines that are not."""
    pairs, problems = [], []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        left, sep, right = line.rpartition("=")
        if not sep or not left.strip() or not right.strip():
            problems.append(Problem(number, f"expected '{example}', not {line[:60]!r}"))
            continue
        pairs.append((number, left, right))
    return pairs, problems


def parse_locations(text: str) -> tuple[dict[str, str], list[Problem]]:
    """The C{location = City name} lines of a locations file: {location: city}, and the bad lines."""
    mapping: dict[str, str] = {}
    pairs, problems = _pairs(text, "location = City name")
    for number, left, right in pairs:
        try:
            mapping[clean_name(left, "a location")] = clean_name(right)
        except BadName as e:
            problems.append(Problem(number, str(e)))
    return mapping, sorted(problems)


def parse_temperatures(text: str) -> tuple[dict[str, float], list[Problem]]:
    """The C{City = temperature} lines of a local weather file: {city: °C}, and the bad lines."""
    temperatures: dict[str, float] = {}
    pairs, problems = _pairs(text, "City = temperature (e.g. Alicante = -1.5)")
    for number, left, right in pairs:
        try:
            city = clean_name(left)
        except BadName as e:
            problems.append(Problem(number, str(e)))
            continue
        try:
            value = float(right.strip())
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            problems.append(Problem(number, f"{right.strip()[:30]!r} is not a temperature in °C"))
            continue
        temperatures[city] = value
    return temperatures, sorted(problems)
