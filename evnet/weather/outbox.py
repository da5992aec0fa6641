"""
The alerts on their way to Central: L{AlertOutbox} keeps what Central
should hold (L{AlertOutbox.want}) and what it has taken (C{taken}), and
sends only the difference: a POST for an alert Central has not taken (or
one to refresh), a DELETE for one it holds that is over.  One request at a
time per location; a failed one is tried again after a backoff, until
Central takes it.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Optional

from twisted.internet import defer
from twisted.logger import Logger

from evnet.weather.alerts import Alert
from evnet.weather.central import CentralError


class AlertOutbox:
    """
    C{central}: L{evnet.weather.central.CentralClient} (or a fake),
    C{clock}: where retries are scheduled, C{backoff(failures)}: the seconds
    before the next try after C{failures} + 1 failures in a row (0, 1, ...), C{taken}: what Central held
    at start (from the state file).  C{saved(taken)} is called each time
    what Central holds changes; C{answered(call, trouble)} after every
    answer (C{call}: "alert LOCATION"), C{trouble} None when Central took
    the call, else the one-line reason.
    """

    log = Logger()

    def __init__(self, central: Any, clock: Any, backoff: Callable[[int], float],
                 taken: Optional[Mapping[str, Alert]] = None,
                 saved: Callable[[dict[str, Alert]], None] = lambda taken: None,
                 answered: Callable[[str, Optional[str]], None] = lambda call, trouble: None) -> None:
        self.central = central
        self.clock = clock
        self.backoff = backoff
        self.taken: dict[str, Alert] = dict(taken or {})
        self.wanted: dict[str, Alert] = {}
        self.saved = saved
        self.answered = answered
        self._stale: set[str] = set()  # taken alerts to send again (a refresh)
        self._busy: set[str] = set()
        self._retry: dict[str, Any] = {}
        self._attempts: dict[str, int] = {}
        self._stopped = False

    def want(self, wanted: Mapping[str, Alert]) -> None:
        """What Central should hold from now on; what differs is sent."""
        self.wanted = dict(wanted)
        for location in sorted(set(self.wanted) | set(self.taken)):
            self._kick(location)

    def refresh(self) -> None:
        """Send every active alert again (Central's view may have been lost)."""
        self._stale = set(self.wanted) & set(self.taken)
        for location in sorted(self._stale):
            self._kick(location)

    @property
    def pending(self) -> set[str]:
        """The locations where Central does not hold what it should yet."""
        return {loc for loc in set(self.wanted) | set(self.taken) if self._next(loc) is not None}

    def _next(self, location: str) -> Optional[str]:
        wanted, taken = self.wanted.get(location), self.taken.get(location)
        if wanted is not None and (taken is None or location in self._stale):
            return "POST"
        if wanted is None and taken is not None:
            return "DELETE"
        return None

    def _kick(self, location: str) -> None:
        if self._stopped or location in self._busy or location in self._retry:
            return
        method = self._next(location)
        if method is None:
            if self._attempts.pop(location, None) is not None:
                self.answered(f"alert {location}", None)  # no longer to send: not a trouble any more
            return
        self._busy.add(location)
        if method == "POST":
            alert = self.wanted[location]
            d = defer.maybeDeferred(self.central.raise_alert, alert)
            d.addCallback(lambda _: self._raised(alert))
        else:
            d = defer.maybeDeferred(self.central.clear_alert, location)
            d.addCallback(lambda _: self._cleared(location))
        d.addErrback(self._failed, location)
        d.addBoth(self._done, location)

    def _raised(self, alert: Alert) -> None:
        first = alert.location not in self.taken
        self.taken[alert.location] = alert
        self._stale.discard(alert.location)
        if first:
            self.log.info("Central took the frost alert for {location} ({temperature:.1f} °C in {city})",
                          location=alert.location, temperature=alert.temperature, city=alert.city)
            self.saved(dict(self.taken))
        self.answered(f"alert {alert.location}", None)

    def _cleared(self, location: str) -> None:
        self.taken.pop(location, None)
        self.log.info("Central cleared the frost alert for {location}", location=location)
        self.saved(dict(self.taken))
        self.answered(f"alert {location}", None)

    def _failed(self, failure: Any, location: str) -> None:
        if failure.check(CentralError):
            text = failure.value.text
        else:
            self.log.failure("sending the alert for {location}", failure, location=location)
            text = f"unexpected error: {failure.getErrorMessage()}"
        attempt = self._attempts[location] = self._attempts.get(location, 0) + 1
        if not self._stopped:
            self._retry[location] = self.clock.callLater(self.backoff(attempt - 1), self._retried, location)
        self.answered(f"alert {location}", text)

    def _retried(self, location: str) -> None:
        del self._retry[location]
        self._kick(location)

    def _done(self, _: Any, location: str) -> None:
        self._busy.discard(location)
        if location not in self._retry:
            self._attempts.pop(location, None)
            self._kick(location)

    def stop(self) -> None:
        """Cancel the retries waiting and send nothing more (a request on its way goes on)."""
        self._stopped = True
        for call in self._retry.values():
            if call.active():
                call.cancel()
        self._retry.clear()
