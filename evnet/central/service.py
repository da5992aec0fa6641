"""
EV_Central's lifecycle as a Twisted service.

Start: open the database and rebuild the rules' state from it; only then
start the children (the listeners, the Kafka bus and its adapter, the web
panel) and the timers (liveness, progress flush).  A failed load is one
log line and a call to C{on_failure} (the tap's: stop the process with
status 1); a service never stops the reactor itself.

Stop, at any point (while loading, after a failed load, running): cancel
what is scheduled, stop the children that were started, close the links,
write what is still unwritten (progress, closes, refusal summaries), close
the store.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from twisted.application import service
from twisted.internet import defer, task
from twisted.logger import Logger
from twisted.python.failure import Failure

from evnet.central.rules import Central

SWEEP_INTERVAL = 5.0  # seconds between two sweeps of the refusal summaries and login failures
WEATHER_CHECK_INTERVAL = 1.0  # seconds between two checks of EV_W's health and of the stale rule


def _store_name(store: Any) -> str:
    url = getattr(store, "url", None)  # the real Store's DbUrl; fakes have none
    return url.display() if url is not None else type(store).__name__


class CentralService(service.MultiService):
    log = Logger()

    def __init__(
        self,
        central: Central,
        *,
        flush_interval: float = 2.0,
        on_failure: Optional[Callable[[str], None]] = None,
    ) -> None:
        super().__init__()
        self.central = central
        self.store = central.store
        self.flush_interval = flush_interval
        self.on_failure = on_failure
        self._liveness = task.LoopingCall(central.check_liveness)
        self._liveness.clock = central.clock
        self._flusher = task.LoopingCall(central.charges.flush)
        self._flusher.clock = central.clock
        self._sweeper = task.LoopingCall(self._sweep)  # refusal summaries, old login failures, the database probe
        self._sweeper.clock = central.clock
        self._weather = task.LoopingCall(central.weather.check)  # EV_W's health, the stale rule
        self._weather.clock = central.clock
        self._loading: Optional[defer.Deferred] = None
        self._outcome: Any = None  # None while loading, then the rules or the load's Failure
        self._waiters: list[defer.Deferred] = []

    @property
    def ready(self) -> defer.Deferred:
        """
        A new Deferred that fires with the rules once the state is loaded and
        the children started; it fails if the load failed or Central was
        stopped before it ended.
        """
        if self._outcome is None:
            d: defer.Deferred = defer.Deferred()
            self._waiters.append(d)
            return d
        if isinstance(self._outcome, Failure):
            return defer.fail(self._outcome)
        return defer.succeed(self._outcome)

    def _settle(self, outcome: Any) -> None:
        self._outcome = outcome
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            if isinstance(outcome, Failure):
                d.errback(outcome)
            else:
                d.callback(outcome)

    def _sweep(self) -> None:
        self.central.trust.sweep()
        self.central.alerts.probe()

    # -- start -------------------------------------------------------------

    def privilegedStartService(self) -> None:
        # The children bind in startService, once the state is rebuilt.
        service.Service.privilegedStartService(self)

    def startService(self) -> None:
        service.Service.startService(self)
        self._loading = self._load()
        self._loading.addCallbacks(self._loaded, self._not_loaded)

    @defer.inlineCallbacks
    def _load(self):
        yield self.store.start()
        cps = yield self.store.load_cps()
        sessions = yield self.store.open_sessions()
        self.central.restore(cps, sessions)
        alerts = yield self.store.load_weather_alerts()
        self.central.weather.restore(alerts)

    def _loaded(self, _: Any) -> None:
        self._loading = None
        for child in self:
            try:
                child.startService()
            except Exception:
                failure = Failure()
                self.log.failure("EV_Central: {child!r} could not start", failure, child=child)
                self._settle(failure)
                if self.on_failure is not None:
                    self.on_failure(f"EV_Central cannot start {child!r}: {failure.getErrorMessage()}")
                return
        self._liveness.start(min(0.5, self.central.liveness_timeout / 6), now=False)
        self._flusher.start(self.flush_interval, now=False)
        self._sweeper.start(SWEEP_INTERVAL, now=False)
        self._weather.start(WEATHER_CHECK_INTERVAL, now=False)
        self.central.audit.record("system", "central", None, "system.start", "ok", port=None,
                                  cps=len(self.central.cps), open_sessions=len(self.central.sessions))
        self._settle(self.central)

    def _not_loaded(self, failure: Failure) -> None:
        self._loading = None
        if not self.running and failure.check(defer.CancelledError):
            self._settle(failure)  # stopped while loading: nothing to report
            return
        text = f"EV_Central cannot start: database {_store_name(self.store)}: {failure.getErrorMessage()}"
        self.log.error("{text}", text=text)  # one line, no traceback: the reason is the user's to fix
        self._settle(failure)
        if self.on_failure is not None:
            self.on_failure(text)

    # -- stop --------------------------------------------------------------

    @defer.inlineCallbacks
    def stopService(self):
        service.Service.stopService(self)
        if self._loading is not None:
            self._loading.cancel()
        for loop in (self._liveness, self._flusher, self._sweeper, self._weather):
            if loop.running:
                loop.stop()
        self.central.cancel_pending()
        stopping = [defer.maybeDeferred(child.stopService) for child in reversed(list(self)) if child.running]
        for ok, result in (yield defer.DeferredList(stopping, consumeErrors=True)):
            if not ok:
                self.log.failure("a part of EV_Central did not stop cleanly", result)
        self.central.close_links()
        if self._outcome is self.central:
            self.central.trust.sweep(everything=True)  # the refusal summaries still counting
            self.central.audit.record("system", "central", None, "system.stop", "ok", port=None)
        try:
            yield self.central.charges.flush()
            yield self.central.audit.flush()
        finally:
            self.store.close()
