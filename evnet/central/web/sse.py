"""
The Server-Sent Events of C{/api/v1/stream}: L{EventHub} follows Central's
observers and fans every change out to its L{SseClient}s, in order, with a
keep-alive comment while idle; a client that reads too slowly waits in its
own queue, up to a bound beyond which it is dropped.  Once a second, while
clients follow, it also sends the network's totals (C{summary}) if anything
changed, and the alerts (C{alerts}) if their list changed.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Optional

from twisted.application import service
from twisted.internet import task
from twisted.internet.interfaces import IPushProducer, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import server
from zope.interface import implementer

from evnet.httpapi import json_bytes
from evnet.central.web.summary import network_summary
from evnet.central.web.views import DEFAULT_LIMIT, all_cps, ongoing_sessions, peer

KEEPALIVE_SECONDS = 15.0
MAX_PENDING_BYTES = 256 * 1024  # what a paused SSE client may fall behind before it is dropped
RETRY_MS = 2000  # the EventSource reconnection delay we ask for
TICK_SECONDS = 1.0  # at most one summary event (and one alerts check) a second


def sse_frame(event_id: int, event: str, data: Any) -> bytes:
    """One Server-Sent Event (the JSON has no raw newline, so one data line)."""
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (event_id, event.encode("ascii"), json_bytes(data))


@implementer(IPushProducer)
class SseClient:
    """
    One C{/api/v1/stream} request.  Writes go straight to the connection while
    it can take them; while the connection is paused (the client reads
    slowly) they wait here, up to C{max_pending} bytes, beyond which the
    client is dropped so it cannot hold memory or slow the others.
    """

    def __init__(self, hub: "EventHub", request: server.Request, max_pending: int) -> None:
        self.hub = hub
        self.request = request
        self.max_pending = max_pending
        self.peer = peer(request)
        self.paused = False
        self.closed = False
        self.pending: deque[bytes] = deque()
        self.pending_bytes = 0
        request.registerProducer(self, True)

    def send(self, data: bytes) -> None:
        if self.closed:
            return
        if self.paused or self.pending:
            self.pending.append(data)
            self.pending_bytes += len(data)
            if self.pending_bytes > self.max_pending:
                self.hub.drop(self, f"more than {self.max_pending} bytes behind")
            return
        self.request.write(data)

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        while self.pending and not self.paused and not self.closed:
            data = self.pending.popleft()
            self.pending_bytes -= len(data)
            self.request.write(data)

    def stopProducing(self) -> None:
        self.closed = True
        self.hub.remove(self)

    def close(self, abort: bool = False) -> None:
        """End the response (or, for a client too far behind, cut the connection)."""
        if self.closed:
            return
        self.closed = True
        self.pending.clear()
        if self.request.channel is not None:
            self.request.unregisterProducer()
        if abort:
            transport = self.request.channel.transport if self.request.channel else None
            if transport is not None:
                getattr(transport, "abortConnection", transport.loseConnection)()
        elif not self.request.finished and self.request.channel is not None:
            self.request.finish()


class EventHub(service.Service):
    """
    Follows Central's observers and fans every change out to the SSE
    clients, in order; a comment line every C{keepalive} seconds keeps idle
    connections (and proxies) alive.
    """

    log = Logger()

    def __init__(self, central: Any, clock: IReactorTime, *, keepalive: float = KEEPALIVE_SECONDS,
                 max_pending: int = MAX_PENDING_BYTES) -> None:
        self.central = central
        self.clock = clock
        self.keepalive = keepalive
        self.max_pending = max_pending
        self.clients: list[SseClient] = []
        self.last_id = 0
        self._ping = task.LoopingCall(self.ping)
        self._ping.clock = clock
        self._tick = task.LoopingCall(self.tick)
        self._tick.clock = clock
        self.changed = True  # an event since the last summary
        self.summary: Optional[dict] = None  # the last one sent (what a new client gets first)
        self.alerts: Optional[dict] = None  # the same
        self._summing = False
        self._failing = False  # the last summary's query failed (logged once)

    def startService(self) -> None:
        super().startService()
        self.central.observers.append(self.publish)
        self._ping.start(self.keepalive, now=False)
        self._tick.start(TICK_SECONDS, now=False)

    def stopService(self):
        if self.publish in self.central.observers:
            self.central.observers.remove(self.publish)
        for loop in (self._ping, self._tick):
            if loop.running:
                loop.stop()
        for client in list(self.clients):
            self.remove(client)
            client.close()
        return super().stopService()

    def snapshot(self) -> dict:
        central = self.central
        return {
            "type": "snapshot",
            "cps": all_cps(central),
            "sessions": ongoing_sessions(central),
            "messages": list(central.recent_messages[-DEFAULT_LIMIT:]),
            "weather": central.weather.view(),
        }

    def subscribe(self, request: server.Request) -> object:
        request.setHeader(b"content-type", b"text/event-stream; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        request.setHeader(b"x-accel-buffering", b"no")
        client = SseClient(self, request, self.max_pending)
        self.clients.append(client)
        self.last_id += 1
        client.send(b"retry: %d\n\n" % RETRY_MS + sse_frame(self.last_id, "snapshot", self.snapshot()))
        if self.alerts is not None:  # (once the stream has sent one) fresh, it is cheap; the summary is the last one sent
            self.alerts = {"alerts": self.central.alerts.view()}
        for name, body in (("alerts", self.alerts), ("summary", self.summary)):
            if body is not None:
                self.last_id += 1
                client.send(sse_frame(self.last_id, name, body))
        request.notifyFinish().addBoth(lambda _: self.remove(client))
        self.log.info("panel client {peer} follows the stream ({n} now)", peer=client.peer, n=len(self.clients))
        return server.NOT_DONE_YET

    def publish(self, event: dict) -> None:
        self.changed = True
        self._send(str(event.get("type", "message")), event)

    def _send(self, name: str, data: dict) -> None:
        self.last_id += 1
        self._broadcast(sse_frame(self.last_id, name, data))

    def tick(self) -> None:
        """Every second: the alerts if their list changed; the summary if anything changed (one store query)."""
        if not self.clients:
            self.changed = True  # a client that comes gets fresh figures
            return
        alerts = {"alerts": self.central.alerts.view()}
        if alerts != self.alerts:
            self.alerts, self.changed = alerts, True
            self._send("alerts", alerts)
        if not self.changed or self._summing:
            return
        self.changed, self._summing = False, True

        def sent(summary: dict) -> None:
            self._failing = False
            unchanged = self.summary is not None and {**summary, "at": None} == {**self.summary, "at": None}
            if not unchanged and self.running:
                self.summary = summary
                self._send("summary", summary)

        def failed(failure: Failure) -> None:
            self.changed = True  # tried again next second; said once until one goes through
            if not self._failing:
                self.log.warn("the stream's summary cannot be computed: {why}", why=failure.getErrorMessage())
            self._failing = True

        def done(_: Any) -> None:
            self._summing = False

        network_summary(self.central).addCallbacks(sent, failed).addBoth(done)

    def ping(self) -> None:
        self._broadcast(b": keep-alive\n\n")

    def _broadcast(self, data: bytes) -> None:
        for client in list(self.clients):
            client.send(data)

    def remove(self, client: SseClient) -> None:
        if client in self.clients:
            self.clients.remove(client)
            self.log.info("panel client {peer} left the stream ({n} now)", peer=client.peer, n=len(self.clients))

    def drop(self, client: SseClient, why: str) -> None:
        self.log.warn("panel client {peer} dropped: {why}", peer=client.peer, why=why)
        self.remove(client)
        client.close(abort=True)
