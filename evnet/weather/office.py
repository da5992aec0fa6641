"""
EV_W itself: L{WeatherOffice} polls each watched city on the clock
through an L{IWeatherSource}, runs each city's weather machine
(L{evnet.weather.alerts}), and keeps Central told through an
L{AlertOutbox} and a heartbeat.  It also learns the CP locations from
Central and takes its operator's commands (add, remove, list).

The cities watched: the city of each of Central's CP locations (through the
C{--locations-file} mapping; a location not in it is its own city name),
then the ones the operator added.  A failing source is retried with a
backoff per city, told once per change, and never moves an alert.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Optional

from twisted.application import service
from twisted.application.internet import backoffPolicy
from twisted.internet import defer, task
from twisted.logger import Logger

from evnet.protocols.machine import Machine
from evnet.weather.alerts import Reading, Weather, locations_of, reading_of, wanted_alerts, weather_machine
from evnet.weather.central import CentralError
from evnet.weather.cities import BadName, clean_name
from evnet.weather.outbox import AlertOutbox
from evnet.weather.sources import WeatherError
from evnet.weather.state import Saved

MAX_READ_BACKOFF = 300.0


class CommandError(Exception):
    """An operator's command that cannot be done; the text says why."""


def _reason(failure: Any, kind: type) -> str:
    return failure.value.text if failure.check(kind) else f"unexpected error: {failure.getErrorMessage()}"


class WeatherOffice(service.Service):
    """
    C{source}: an L{IWeatherSource}; C{central}: a CentralClient (or a fake);
    C{clock}: the reactor or a task.Clock; C{store}: a L{StateFile} (or
    anything with C{save(cities, alerts)}); C{saved}: what it held at start.
    """

    log = Logger()

    def __init__(self, source: Any, central: Any, clock: Any, store: Any, *, interval: float = 4.0,
                 threshold: float = 0.0, refresh_every: int = 15, mapping: Optional[Mapping[str, str]] = None,
                 saved: Optional[Saved] = None, read_backoff: Optional[Callable[[int], float]] = None,
                 send_backoff: Optional[Callable[[int], float]] = None) -> None:
        self.source, self.central, self.clock, self.store = source, central, clock, store
        self.interval, self.threshold, self.refresh_every = interval, threshold, refresh_every
        self.mapping = dict(mapping or {})
        saved = saved or Saved()
        self.added: list[str] = list(saved.cities)
        # {CP location: city}: from the alerts Central holds until Central tells its CPs.
        self.locations: dict[str, str] = {a.location: a.city for a in saved.alerts.values()}
        self.machines: dict[str, Machine[Weather, Reading]] = {}
        self.last: dict[str, tuple[float, float]] = {}  # city -> (°C, when read)
        for alert in saved.alerts.values():
            self.machines[alert.city] = weather_machine(alert.city, Weather.FROST)
            self.last[alert.city] = (alert.temperature, alert.observed_at)
        self.failing: dict[str, str] = {}  # city -> why its weather cannot be read
        self.read_backoff = read_backoff or backoffPolicy(interval, max(MAX_READ_BACKOFF, interval), 2.0)
        self._attempts: dict[str, int] = {}
        self._next_read: dict[str, float] = {}
        self._reading: set[str] = set()
        self._asking: set[str] = set()
        self._trouble: dict[str, str] = {}  # what Central did not take, by call
        self._watch_told: Optional[tuple[str, ...]] = None
        self.polls = 0
        self.outbox = AlertOutbox(central, clock, send_backoff or backoffPolicy(1.0, 30.0, 2.0), saved.alerts,
                                  saved=lambda taken: self._save(), answered=self._answered)
        self._loop: Optional[task.LoopingCall] = None

    # -- running -------------------------------------------------------------------

    def startService(self) -> None:
        self.log.info("EV_W reads the weather from {source} every {interval:g} s; frost below {threshold:g} °C; "
                      "tells {central}", source=self.source.name, interval=self.interval,
                      threshold=self.threshold, central=getattr(self.central, "name", "Central"))
        self._sync()  # not running yet: the first poll reads every city
        super().startService()
        self._loop = task.LoopingCall(self.poll)
        self._loop.clock = self.clock
        self._loop.start(self.interval, now=True).addErrback(
            lambda f: self.log.failure("EV_W's poll loop stopped", f))

    def stopService(self) -> defer.Deferred:
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self.outbox.stop()
        closing = [defer.maybeDeferred(getattr(x, "close", lambda: None)) for x in (self.source, self.central)]
        return defer.gatherResults(closing, consumeErrors=True).addErrback(lambda f: None)

    def poll(self) -> None:
        """
        One cycle: send the heartbeat, read the cities due, ask Central for
        its CP locations (a city new there is read as soon as they come).
        """
        self.polls += 1
        self._ask("health", lambda: self.central.health(self.health()))
        now = self.clock.seconds()
        for city in self.watched():
            if city not in self._reading and self._next_read.get(city, now) <= now:
                self._read(city)
        self._ask("locations", self.central.locations, self._got_locations)
        if self.polls % self.refresh_every == 0:
            self.outbox.refresh()

    def health(self) -> dict:
        """The heartbeat's body."""
        return {"at": self.clock.seconds(), "interval": self.interval, "cities": len(self.watched()),
                "failing": sorted(self.failing)}

    def watched(self) -> list[str]:
        """The cities watched: those of Central's CP locations (sorted), then the ones added."""
        cities = dict.fromkeys(sorted(set(self.locations.values())))
        cities.update(dict.fromkeys(self.added))
        return list(cities)

    # -- the weather ---------------------------------------------------------------

    def _read(self, city: str) -> None:
        self._reading.add(city)
        started = self.clock.seconds()
        d = defer.maybeDeferred(self.source.temperature, city)
        d.addCallbacks(self._got, self._unreadable, callbackArgs=(city,), errbackArgs=(city, started))
        d.addErrback(lambda f: self.log.failure("reading the weather for {city}", f, city=city))
        d.addBoth(lambda _: self._reading.discard(city))

    def _got(self, temperature: float, city: str) -> None:
        machine = self.machines.get(city)
        if machine is None:  # no longer watched
            return
        self._attempts.pop(city, None)
        self._next_read.pop(city, None)
        if self.failing.pop(city, None) is not None:
            self.log.info("EV_W reads the weather for {city} again: {temperature:.1f} °C",
                          city=city, temperature=temperature)
        before = machine.state
        machine.attempt(reading_of(temperature, self.threshold), self.log)
        self.last[city] = (temperature, self.clock.seconds())
        if machine.changed:
            self._tell_change(city, before, machine.state, temperature)
        self._update_wanted()

    def _tell_change(self, city: str, before: Weather, now: Weather, temperature: float) -> None:
        covered = ", ".join(locations_of(city, self.locations, self.added)) or "no CP location"
        if now is Weather.FROST:
            self.log.warn("frost in {city}: {temperature:.1f} °C, below {threshold:g} °C: alert for {covered}",
                          city=city, temperature=temperature, threshold=self.threshold, covered=covered)
        elif before is Weather.FROST:
            self.log.info("{city} thawed: {temperature:.1f} °C: the alert for {covered} is over",
                          city=city, temperature=temperature, covered=covered)
        else:
            self.log.info("{city}: {temperature:.1f} °C, no frost", city=city, temperature=temperature)

    def _unreadable(self, failure: Any, city: str, started: float) -> None:
        machine = self.machines.get(city)
        if machine is None:
            return
        why = _reason(failure, WeatherError)
        attempt = self._attempts[city] = self._attempts.get(city, 0) + 1
        delay = self.read_backoff(attempt - 1)
        asked = getattr(failure.value, "retry_after", None)
        if asked is not None:
            delay = max(delay, asked)
        self._next_read[city] = started + delay
        machine.attempt(Reading.UNREADABLE, self.log)
        if self.failing.get(city) != why:
            self.failing[city] = why
            self.log.warn("EV_W cannot read the weather for {city}: {why} (retrying; {city} stays {state})",
                          city=city, why=why, state=machine.state.value)

    # -- the cities ----------------------------------------------------------------

    def _got_locations(self, found: list[str]) -> None:
        locations = {}
        for location in found:
            try:
                locations[location] = self.mapping.get(" ".join(location.split())) or clean_name(location)
            except BadName:
                continue  # not a name any weather source knows
        if locations != self.locations:
            self.locations = locations
            self._sync()

    def _sync(self) -> None:
        """Machines for the cities now watched (new ones read at once), and the alerts they want."""
        watched = self.watched()
        new = [city for city in watched if city not in self.machines]
        for city in new:
            self.machines[city] = weather_machine(city)
        for city in [c for c in self.machines if c not in watched]:
            del self.machines[city]
            for table in (self.last, self.failing, self._attempts, self._next_read):
                table.pop(city, None)
        if tuple(watched) != self._watch_told:
            self._watch_told = tuple(watched)
            self.log.info("EV_W watches {cities}", cities=", ".join(watched) or "no city yet")
        self._update_wanted()
        if self.running:
            for city in new:
                if city not in self._reading:
                    self._read(city)

    def _update_wanted(self) -> None:
        frost = {city: self.last[city] for city, machine in self.machines.items()
                 if machine.state is Weather.FROST and city in self.last}
        self.outbox.want(wanted_alerts(frost, self.locations, self.added))

    def _save(self) -> None:
        try:
            self.store.save(self.added, self.outbox.taken.values())
        except OSError as e:
            self.log.error("EV_W cannot write its state file: {why}", why=e.strerror or str(e))

    # -- Central -------------------------------------------------------------------

    def _ask(self, call: str, ask: Callable[[], defer.Deferred], then: Callable[[Any], None] = lambda _: None) -> None:
        if call in self._asking:
            return
        self._asking.add(call)

        def answered(result: Any) -> None:
            self._answered(call, None)
            then(result)

        d = defer.maybeDeferred(ask)
        d.addCallbacks(answered, lambda f: self._answered(call, _reason(f, CentralError)))
        d.addErrback(lambda f: self.log.failure("EV_W's call {call} to Central", f, call=call))
        d.addBoth(lambda _: self._asking.discard(call))

    def _answered(self, call: str, trouble: Optional[str]) -> None:
        """Tell each new reason Central did not take a call once, and when every call goes through again."""
        before = set(self._trouble.values())
        if trouble is None:
            self._trouble.pop(call, None)
        else:
            self._trouble[call] = trouble
        now = set(self._trouble.values())
        for text in sorted(now - before):
            self.log.warn("EV_W cannot tell Central: {why} (retrying)", why=text)
        if before and not now:
            self.log.info("Central takes EV_W's calls again")

    # -- the operator's commands ----------------------------------------------------

    def add(self, text: str) -> str:
        city = self._name(text)
        if city in self.added:
            raise CommandError(f"{city} is already on the list")
        also = city in self.watched()
        self.added.append(city)
        self._save()
        self._sync()
        return f"EV_W watches {city}" + (" (it was already watched for Central's CPs)" if also else "")

    def remove(self, text: str) -> str:
        city = self._name(text)
        if city not in self.added:
            covered = [loc for loc, mapped in self.locations.items() if mapped == city]
            if covered:
                raise CommandError(f"{city} is watched for Central's CPs at {', '.join(covered)}: "
                                   "it stays while they are there")
            raise CommandError(f"{city} is not on the list")
        self.added.remove(city)
        self._save()
        self._sync()
        still = city in self.watched()
        return f"EV_W no longer watches {city}" if not still else f"{city} leaves the list (still watched for Central's CPs)"

    @staticmethod
    def _name(text: str) -> str:
        try:
            return clean_name(text)
        except BadName as e:
            raise CommandError(str(e)) from None

    def rows(self) -> list[dict]:
        """What the operator's C{list} shows, a row per watched city."""
        rows = []
        for city in self.watched():
            machine = self.machines.get(city)
            temperature, at = self.last.get(city, (None, None))
            rows.append({
                "city": city,
                "state": machine.state.value if machine else Weather.UNKNOWN.value,
                "temperature": temperature, "at": at,
                "locations": sorted(loc for loc, mapped in self.locations.items() if mapped == city),
                "added": city in self.added,
                "alerts": sorted(loc for loc, alert in self.outbox.taken.items() if alert.city == city),
                "failing": self.failing.get(city),
            })
        return rows
