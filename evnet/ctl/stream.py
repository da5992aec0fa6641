"""
Central's event stream (``GET /api/v1/stream``) read with twisted.web's Agent,
for ``evctl panel``.

- L{EventStream}: one connection.  The response body streams into it (it is
  the body's Protocol), L{evnet.ctl.panel.SseParser} cuts it into events;
  a silence longer than C{idle_timeout} (Central sends a keep-alive every
  15 s) ends it.  L{EventStream.done} says how it ended.
- L{Follower}: a service that keeps one L{EventStream} open, and opens a
  new one after a backoff (L{RETRY}, on the clock it is given) whenever
  one ends.

Nothing here blocks or sleeps: the agent and the clock are injected (the
reactor in ``evctl``, fakes and L{twisted.internet.task.Clock} in tests).
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from twisted.application import service
from twisted.application.internet import backoffPolicy
from twisted.internet import defer, error
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.web.client import (
    PotentialDataLoss,
    RequestTransmissionFailed,
    ResponseDone,
    ResponseFailed,
    ResponseNeverReceived,
)
from twisted.web._newclient import ParseError  # what Agent fails with when the answer is not HTTP
from twisted.web.http_headers import Headers

from evnet.ctl.panel import LineTooLong, SseParser

IDLE_TIMEOUT = 40.0
# 2 s after the first failure, then 3, 4.5 ... up to 10 s between attempts (plus up to 1 s of jitter).
RETRY = backoffPolicy(initialDelay=2.0, maxDelay=10.0, factor=1.5)

OnEvent = Callable[[str, str], None]


class StreamFailed(Exception):
    """How a connection to the stream failed (C{reason}); L{status} is the panel's status line for it."""

    STATUS = "{reason}; retrying…"

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

    def status(self, url: str) -> str:
        return self.STATUS.format(url=url, reason=self.reason)


class Refused(StreamFailed):
    """Central answered the request with an HTTP error ("503 Service Unavailable")."""

    STATUS = "Central answered {reason}; retrying…"


class Unreachable(StreamFailed):
    """No connection, a connection lost, or a silent one."""

    STATUS = "cannot reach Central at {url} ({reason}); retrying…"


class Unreadable(StreamFailed):
    """Central's answer is not an event stream the panel can read."""

    STATUS = "cannot read Central's stream ({reason}); reconnecting…"


CLOSED = "Central closed the stream; reconnecting…"


def describe(failure: Failure) -> str:
    """A short reason for a failed connection, worded like an OSError where there is an errno."""
    exc = failure.value
    while isinstance(exc, (ResponseFailed, ResponseNeverReceived, RequestTransmissionFailed)) and exc.reasons:
        exc = exc.reasons[0].value
    if isinstance(exc, error.ConnectError) and isinstance(exc.osError, int) and exc.args and exc.args[0]:
        return f"[Errno {exc.osError}] {exc.args[0]}"
    if isinstance(exc, error.ConnectionLost):
        return "the connection was lost"
    if isinstance(exc, NotImplementedError) and "SSL" in str(exc):
        return "https needs TLS support: pip install 'twisted[tls]'"
    return str(exc).rstrip(".") or type(exc).__name__


def _ended_cleanly(reason: Failure) -> bool:
    """The body ended because Central ended it, not because the connection broke."""
    if reason.check(ResponseDone, PotentialDataLoss):
        return True
    if reason.check(ResponseFailed):
        return not any(r.check(error.ConnectionLost) for r in reason.value.reasons)
    return False


class EventStream(Protocol):
    """
    One ``GET URL/api/v1/stream``: C{on_event(event, data)} for each event,
    until the stream ends.  L{done} fires with None when Central ends the
    stream or L{stop} is called, or fails with a L{StreamFailed}.

    States: C{new} -> C{requesting} (until the response head) -> C{reading}
    (the body, this Protocol) -> C{done}; from C{done} on, nothing more
    happens.
    """

    def __init__(self, agent: Any, url: str, on_event: OnEvent, clock: Any, idle_timeout: float = IDLE_TIMEOUT) -> None:
        self.agent = agent
        self.url = url
        self.on_event = on_event
        self.clock = clock
        self.idle_timeout = idle_timeout
        self.done: defer.Deferred = defer.Deferred()
        self.state = "new"
        self._parser = SseParser()
        self._request: Optional[defer.Deferred] = None
        self._timer: Any = None

    def start(self) -> defer.Deferred:
        """Send the request; L{done}."""
        assert self.state == "new", self.state
        self.state = "requesting"
        self._timer = self.clock.callLater(self.idle_timeout, self._close, Unreachable("timed out"))
        self._request = defer.maybeDeferred(
            self.agent.request, b"GET", (self.url.rstrip("/") + "/api/v1/stream").encode("utf-8"),
            Headers({b"Accept": [b"text/event-stream"]}),
        )
        self._request.addCallbacks(self._response, self._not_connected)
        return self.done

    def stop(self) -> None:
        """Close the connection now; L{done} fires with None."""
        self._close(None)

    # -- the request and its answer ------------------------------------------------

    def _response(self, response: Any) -> None:
        if self.state != "requesting":
            return
        if response.code != 200:
            response.deliverBody(Protocol())  # read and forget the error page
            self._finish(Refused(f"{response.code} {response.phrase.decode('utf-8', 'replace')}"))
            return
        self.state = "reading"
        self._timer.reset(self.idle_timeout)
        response.deliverBody(self)

    def _not_connected(self, failure: Failure) -> None:
        if self.state != "requesting":
            return
        if failure.check(ResponseFailed) and any(r.check(ParseError) for r in failure.value.reasons):
            self._finish(Unreadable("not an HTTP answer"))
        else:
            self._finish(Unreachable(describe(failure)))

    # -- the body ---------------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        if self.state != "reading":
            return
        self._timer.reset(self.idle_timeout)
        try:
            events = self._parser.feed(data)
        except LineTooLong as e:
            self._close(Unreadable(str(e)))
            return
        for event, payload in events:
            if self.state != "reading":
                return
            try:
                self.on_event(event, payload)
            except (ValueError, KeyError, TypeError) as e:
                self._close(Unreadable(f"a {event} event it cannot apply: {e!r}"))

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        if self.state == "reading":
            self._finish(None if _ended_cleanly(reason) else Unreachable(describe(reason)))

    # -- ending -------------------------------------------------------------------------

    def _close(self, result: Optional[StreamFailed]) -> None:
        """End now with C{result}, and drop whatever is in progress."""
        state = self.state
        self._finish(result)
        if state == "requesting" and self._request is not None:
            self._request.cancel()
        elif state == "reading" and self.transport is not None:
            self.transport.stopProducing()

    def _finish(self, result: Optional[StreamFailed]) -> None:
        if self.state == "done":
            return
        self.state = "done"
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        if result is None:
            self.done.callback(None)
        else:
            self.done.errback(Failure(result))


class Follower(service.Service):
    """
    While running, follows Central's stream: C{on_event(event, data)} for
    each event, C{on_lost(status)} when a connection fails or ends (the
    status line to show), then a new connection after C{retry(n)} seconds,
    C{n} counting the connections in a row that brought no event.
    """

    def __init__(
        self,
        agent: Any,
        url: str,
        on_event: OnEvent,
        on_lost: Callable[[str], None],
        clock: Any,
        *,
        idle_timeout: float = IDLE_TIMEOUT,
        retry: Callable[[int], float] = RETRY,
    ) -> None:
        self.agent = agent
        self.url = url
        self.on_event = on_event
        self.on_lost = on_lost
        self.clock = clock
        self.idle_timeout = idle_timeout
        self.retry = retry
        self.stream: Optional[EventStream] = None
        self.failures = 0
        self._next: Any = None

    def startService(self) -> None:
        super().startService()
        self._connect()

    def stopService(self) -> None:
        super().stopService()
        if self._next is not None and self._next.active():
            self._next.cancel()
        self._next = None
        if self.stream is not None:
            self.stream.stop()

    def _connect(self) -> None:
        self._next = None
        self.stream = EventStream(self.agent, self.url, self._event, self.clock, self.idle_timeout)
        self.stream.start().addBoth(self._ended)

    def _event(self, event: str, data: str) -> None:
        self.failures = 0
        self.on_event(event, data)

    def _ended(self, result: Any) -> None:
        self.stream = None
        if not self.running:
            return
        self.on_lost(CLOSED if result is None else result.value.status(self.url))
        delay = self.retry(self.failures)
        self.failures += 1
        self._next = self.clock.callLater(delay, self._connect)
