"""
Where EV_W reads the weather: the L{IWeatherSource} interface, the error
every source fails with (L{WeatherError}), and the local source for demos
and tests (L{LocalSource}).  OpenWeather is in L{evnet.weather.openweather}.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import Interface, implementer

from evnet.weather.cities import parse_temperatures


class WeatherError(Exception):
    """
    The source cannot tell a city's temperature now; the text is one line
    for a person (never a secret), C{retry_after} the seconds the source asked
    EV_W to wait (HTTP 429's Retry-After), if it did.
    """

    def __init__(self, text: str, retry_after: Optional[float] = None) -> None:
        super().__init__(text)
        self.text = text
        self.retry_after = retry_after


class IWeatherSource(Interface):
    """A source of current temperatures."""

    name: str  # how a log line names it, e.g. "OpenWeather at https://api.openweathermap.org"

    def temperature(city: str) -> defer.Deferred:
        """Fires with C{city}'s temperature in °C (a float), or fails with L{WeatherError}."""

    def close() -> defer.Deferred:
        """Release what the source holds (connections); fires when done."""


@implementer(IWeatherSource)
class LocalSource:
    """
    The temperatures in a local file of C{City = temperature} lines, read
    again at each call so a script can change the weather.  A bad line is
    told once (with its number) and skipped.  The file is small and local:
    reading it on the reactor does not block it noticeably.
    """

    log = Logger()

    def __init__(self, path: str, read: Optional[Callable[[str], str]] = None) -> None:
        self.path = path
        self.name = f"the local weather file {path}"
        self._read = read or _read_text
        self._told: frozenset[str] = frozenset()

    def temperature(self, city: str) -> defer.Deferred:
        try:
            text = self._read(self.path)
        except (OSError, UnicodeDecodeError) as e:
            why = getattr(e, "strerror", None) or str(e)
            return defer.fail(WeatherError(f"cannot read {self.name}: {why}"))
        temperatures, problems = parse_temperatures(text)
        self._tell(problems)
        if city not in temperatures:
            return defer.fail(WeatherError(f"{self.name} has no line for {city}"))
        return defer.succeed(temperatures[city])

    def _tell(self, problems: list) -> None:
        told = frozenset(p.told(self.path) for p in problems)
        for text in sorted(told - self._told):
            self.log.warn("{text} (line skipped)", text=text)
        self._told = told

    def close(self) -> defer.Deferred:
        return defer.succeed(None)


def _read_text(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


def retry_after(value: Any, now: float) -> Optional[float]:
    """
    The seconds an HTTP Retry-After header (C{value}: seconds or an HTTP
    date) asks to wait from C{now}, at most an hour; None when it says nothing usable.
    """
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    if text.isdigit():
        seconds = float(text)
    else:
        from email.utils import parsedate_to_datetime

        try:
            seconds = parsedate_to_datetime(text).timestamp() - now
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
    return min(max(seconds, 0.0), 3600.0)
