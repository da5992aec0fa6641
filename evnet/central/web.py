"""
Central's panel over HTTP (twisted.web): the JSON API under C{/api}, the
Server-Sent Events stream of every change, the OpenAPI document, and the
dashboard's static files at C{/}.

Everything here reads Central's public attributes and calls its operator
commands (C{stop_cp}, C{resume_cp}, ...); Central stays the one source of
truth.  Write calls (POST) need C{Authorization: Bearer TOKEN} when Central
was started with an admin token file; without one they are accepted only
from loopback (and never from another web origin).
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import re
from collections import deque
from pathlib import Path
from typing import Any, Callable, NamedTuple, Optional
from urllib.parse import unquote, urlsplit

from twisted.application import service, strports
from twisted.internet import defer, task
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.interfaces import IPushProducer, IReactorTime
from twisted.logger import Logger
from twisted.web import pages, resource, server
from zope.interface import implementer

STATIC_DIR = Path(__file__).resolve().parent.parent / "web" / "static"
KEEPALIVE_SECONDS = 15.0
MAX_PENDING_BYTES = 256 * 1024  # what a paused SSE client may fall behind before it is dropped
RETRY_MS = 2000  # the EventSource reconnection delay we ask for
DEFAULT_LIMIT = 50
MAX_LIMIT = 500


class ApiError(Exception):
    """An error answered as C{{"error": text}} with an HTTP status."""

    def __init__(self, status: int, text: str, headers: Optional[dict[str, str]] = None) -> None:
        super().__init__(text)
        self.status = status
        self.text = text
        self.headers = headers or {}


class Route(NamedTuple):
    method: str
    template: str  # e.g. "/api/cps/{id}/stop", as in the OpenAPI document
    handler: str  # the name of an L{Api} method
    write: bool = False

    @property
    def regex(self) -> re.Pattern:
        return re.compile(re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(self.template)) + r"\Z")


ROUTES: list[Route] = [
    Route("GET", "/api/cps", "list_cps"),
    Route("GET", "/api/cps/{id}", "get_cp"),
    Route("POST", "/api/cps/stop", "stop_all", write=True),
    Route("POST", "/api/cps/resume", "resume_all", write=True),
    Route("POST", "/api/cps/{id}/stop", "stop_cp", write=True),
    Route("POST", "/api/cps/{id}/resume", "resume_cp", write=True),
    Route("GET", "/api/sessions", "sessions"),
    Route("GET", "/api/events", "events"),
    Route("GET", "/api/stream", "stream"),
    Route("GET", "/api/openapi.json", "openapi"),
]
_COMPILED = [(route, route.regex) for route in ROUTES]


def is_loopback(address: Any) -> bool:
    """True for 127.0.0.0/8, ::1 (also IPv4-mapped) and local UNIX sockets."""
    if isinstance(address, UNIXAddress):
        return True
    if isinstance(address, (IPv4Address, IPv6Address)):
        try:
            ip = ipaddress.ip_address(address.host.split("%")[0])
        except ValueError:
            return False
        mapped = getattr(ip, "ipv4_mapped", None)
        return ip.is_loopback or bool(mapped and mapped.is_loopback)
    return False


def json_bytes(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def sse_frame(event_id: int, event: str, data: Any) -> bytes:
    """One Server-Sent Event (the JSON has no raw newline, so one data line)."""
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (event_id, event.encode("ascii"), json_bytes(data))


def all_cps(central: Any) -> list[dict]:
    return [central.cps[k].as_dict() for k in sorted(central.cps)]


def session_row(row: dict) -> dict:
    """A stored session (and, once closed, its ticket) as plain JSON."""
    out = {
        "id": row["id"],
        "cp_id": row["cp_id"],
        "driver_id": row["driver_id"],
        "origin": row["origin"],
        "status": row["status"],
        "price": float(row["price"]),
        "target_kwh": float(row["target_kwh"] or 0),
        "started_at": float(row["started_at"]),
        "ended_at": None if row.get("ended_at") is None else float(row["ended_at"]),
        "kwh": float(row["kwh"] or 0),
        "euros": float(row["euros"] or 0),
        "seconds": int(row["seconds"] or 0),
        "end_reason": row.get("end_reason"),
        "ticket_delivered": row.get("ticket_delivered_at") is not None,
    }
    return out


# -- the Server-Sent Events hub ----------------------------------------------------


@implementer(IPushProducer)
class SseClient:
    """
    One C{/api/stream} request.  Writes go straight to the connection while
    it can take them; while the connection is paused (the client reads
    slowly) they wait here, up to C{max_pending} bytes, beyond which the
    client is dropped so it cannot hold memory or slow the others.
    """

    def __init__(self, hub: "EventHub", request: server.Request, max_pending: int) -> None:
        self.hub = hub
        self.request = request
        self.max_pending = max_pending
        self.peer = _peer(request)
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

    def startService(self) -> None:
        super().startService()
        self.central.observers.append(self.publish)
        self._ping.start(self.keepalive, now=False)

    def stopService(self):
        if self.publish in self.central.observers:
            self.central.observers.remove(self.publish)
        if self._ping.running:
            self._ping.stop()
        for client in list(self.clients):
            self.remove(client)
            client.close()
        return super().stopService()

    def snapshot(self) -> dict:
        central = self.central
        return {
            "type": "snapshot",
            "cps": all_cps(central),
            "sessions": [s.as_dict() for s in sorted(central.sessions.values(), key=lambda s: s.started_at)],
            "messages": list(central.recent_messages[-DEFAULT_LIMIT:]),
        }

    def subscribe(self, request: server.Request) -> object:
        request.setHeader(b"content-type", b"text/event-stream; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        request.setHeader(b"x-accel-buffering", b"no")
        client = SseClient(self, request, self.max_pending)
        self.clients.append(client)
        self.last_id += 1
        client.send(b"retry: %d\n\n" % RETRY_MS + sse_frame(self.last_id, "snapshot", self.snapshot()))
        request.notifyFinish().addBoth(lambda _: self.remove(client))
        self.log.info("panel client {peer} follows the stream ({n} now)", peer=client.peer, n=len(self.clients))
        return server.NOT_DONE_YET

    def publish(self, event: dict) -> None:
        self.last_id += 1
        data = sse_frame(self.last_id, str(event.get("type", "message")), event)
        for client in list(self.clients):
            client.send(data)

    def ping(self) -> None:
        for client in list(self.clients):
            client.send(b": keep-alive\n\n")

    def remove(self, client: SseClient) -> None:
        if client in self.clients:
            self.clients.remove(client)
            self.log.info("panel client {peer} left the stream ({n} now)", peer=client.peer, n=len(self.clients))

    def drop(self, client: SseClient, why: str) -> None:
        self.log.warn("panel client {peer} dropped: {why}", peer=client.peer, why=why)
        self.remove(client)
        client.close(abort=True)


def _peer(request: server.Request) -> str:
    address = request.getClientAddress()
    host = getattr(address, "host", None)
    return f"{host}:{address.port}" if host is not None else str(address)


# -- the API -------------------------------------------------------------------------


class Api(resource.Resource):
    """Everything under C{/api}: routed by L{ROUTES}, answered in JSON."""

    isLeaf = True
    log = Logger()

    def __init__(self, central: Any, hub: EventHub, token: Optional[str] = None) -> None:
        super().__init__()
        self.central = central
        self.hub = hub
        self._token = token.encode("utf-8") if token else None

    # -- dispatch ----------------------------------------------------------------

    def render(self, request: server.Request):
        try:
            route, params = self._route(request)
            if route.write:
                self.authorize(request)
            result = getattr(self, route.handler)(request, **params)
        except ApiError as e:
            return self._error(request, e)
        if result is server.NOT_DONE_YET:
            return result
        if isinstance(result, defer.Deferred):
            finished = []
            request.notifyFinish().addBoth(finished.append)

            def answer(value):
                if not finished:
                    request.write(self._json(request, value))
                    request.finish()

            def failed(failure):
                if failure.check(ApiError):
                    error = failure.value
                else:
                    self.log.error("API {path}: {why}", path=request.path, why=failure.getErrorMessage())
                    error = ApiError(503, f"Central's database did not answer: {failure.getErrorMessage()}")
                if not finished:
                    request.write(self._error(request, error))
                    request.finish()

            result.addCallbacks(answer, failed)
            return server.NOT_DONE_YET
        return self._json(request, result)

    def _route(self, request: server.Request) -> tuple[Route, dict]:
        path = request.path.decode("utf-8", "replace")
        if len(path) > 1:
            path = path.rstrip("/")
        method = request.method.decode("ascii", "replace")
        allowed = []
        for route, regex in _COMPILED:
            match = regex.match(path)
            if match is None:
                continue
            if route.method == method or (method == "HEAD" and route.method == "GET"):
                return route, {k: unquote(v) for k, v in match.groupdict().items()}
            allowed.append(route.method)
        if allowed:
            raise ApiError(405, f"{method} is not allowed on {path} (allowed: {', '.join(sorted(set(allowed)))})",
                           {"Allow": ", ".join(sorted(set(allowed)))})
        raise ApiError(404, f"no such API path: {path} (see /api/openapi.json)")

    def authorize(self, request: server.Request) -> None:
        if self._token is not None:
            scheme, _, given = (request.getHeader("authorization") or "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode("utf-8"), self._token):
                raise ApiError(401, "this needs a valid admin token (Authorization: Bearer TOKEN)",
                               {"WWW-Authenticate": 'Bearer realm="evnet"'})
            return
        if not is_loopback(request.getClientAddress()):
            raise ApiError(403, "write calls are accepted only from this host when Central has no --admin-token-file")
        origin = request.getHeader("origin")
        if origin is not None and urlsplit(origin).netloc != (request.getHeader("host") or ""):
            # A page from another site must not drive the panel through a browser on this host.
            raise ApiError(403, f"write calls from another web origin ({origin}) are refused")

    def _json(self, request: server.Request, value: Any, status: int = 200) -> bytes:
        request.setResponseCode(status)
        request.setHeader(b"content-type", b"application/json; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        request.setHeader(b"x-content-type-options", b"nosniff")
        return json_bytes(value)

    def _error(self, request: server.Request, error: ApiError) -> bytes:
        for name, value in error.headers.items():
            request.setHeader(name.encode("ascii"), value.encode("utf-8"))
        return self._json(request, {"error": error.text}, error.status)

    def _cp(self, cp_id: str):
        cp = self.central.cps.get(cp_id)
        if cp is None:
            raise ApiError(404, f"unknown CP {cp_id}")
        return cp

    @staticmethod
    def _limit(request: server.Request) -> int:
        raw = request.args.get(b"limit", [str(DEFAULT_LIMIT).encode()])[0]
        try:
            limit = int(raw)
        except ValueError:
            raise ApiError(400, f"limit must be a whole number, not {raw.decode('utf-8', 'replace')!r}") from None
        if not 1 <= limit <= MAX_LIMIT:
            raise ApiError(400, f"limit must be between 1 and {MAX_LIMIT}")
        return limit

    # -- handlers (one per route) ------------------------------------------------

    def list_cps(self, request):
        return {"cps": all_cps(self.central)}

    def get_cp(self, request, id):
        return self._cp(id).as_dict()

    def _one(self, request, cp_id: str, command: Callable[[str], tuple[bool, str]]):
        self._cp(cp_id)
        ok, text = command(cp_id)
        if not ok:
            raise ApiError(409, text)
        self.log.info("panel: {text} (from {peer})", text=text, peer=_peer(request))
        return {"ok": True, "message": text, "cp": self.central.cps[cp_id].as_dict()}

    def stop_cp(self, request, id):
        return self._one(request, id, self.central.stop_cp)

    def resume_cp(self, request, id):
        return self._one(request, id, self.central.resume_cp)

    def _all(self, request, command: Callable[[], list], verb: str):
        results = [{"ok": ok, "message": text} for ok, text in command()]
        self.log.info("panel: {verb} all CPs: {n} changed (from {peer})", verb=verb, n=len(results), peer=_peer(request))
        return {"results": results, "cps": all_cps(self.central)}

    def stop_all(self, request):
        return self._all(request, self.central.stop_all, "stop")

    def resume_all(self, request):
        return self._all(request, self.central.resume_all, "resume")

    def sessions(self, request):
        limit = self._limit(request)
        ongoing = [s.as_dict() for s in sorted(self.central.sessions.values(), key=lambda s: s.started_at)]
        d = self.central.store.recent_sessions(limit)
        return d.addCallback(lambda rows: {"ongoing": ongoing, "recent": [session_row(r) for r in rows]})

    def events(self, request):
        limit = self._limit(request)
        d = self.central.store.recent_events(limit)
        return d.addCallback(lambda rows: {"events": [
            {"id": r["id"], "at": float(r["at"] or 0), "kind": r["kind"], "subject": r["subject"], "text": r["detail"]}
            for r in rows
        ]})

    def stream(self, request):
        return self.hub.subscribe(request)

    def openapi(self, request):
        return OPENAPI


# -- the site -----------------------------------------------------------------------


CONTENT_TYPES = {
    ".html": b"text/html; charset=utf-8",
    ".js": b"text/javascript; charset=utf-8",
    ".css": b"text/css; charset=utf-8",
    ".svg": b"image/svg+xml",
    ".png": b"image/png",
    ".ico": b"image/x-icon",
}


class StaticFile(resource.Resource):
    """One small file, held in memory (read once at start, so never a disk read on the reactor)."""

    isLeaf = True

    def __init__(self, content: bytes, content_type: bytes) -> None:
        super().__init__()
        self.content = content
        self.content_type = content_type

    def render_GET(self, request):
        request.setHeader(b"content-type", self.content_type)
        request.setHeader(b"cache-control", b"no-cache")
        request.setHeader(b"x-content-type-options", b"nosniff")
        return self.content


class Root(resource.Resource):
    """C{/}: the dashboard's files (C{/} is index.html) and the API under C{/api}."""

    def __init__(self, api: resource.Resource, static_dir: Path = STATIC_DIR) -> None:
        super().__init__()
        self.putChild(b"api", api)
        for path in sorted(static_dir.iterdir()):
            if path.is_file() and path.suffix in CONTENT_TYPES:
                self.putChild(path.name.encode("utf-8"), StaticFile(path.read_bytes(), CONTENT_TYPES[path.suffix]))
        self.putChild(b"", self.children[b"index.html"])

    def getChild(self, path, request):
        return pages.notFound()


class _QuietSite(server.Site):
    """A Site that keeps HTTP access lines out of Central's event log."""

    noisy = False

    def log(self, request: Any) -> None:
        pass


def make_site(central: Any, hub: EventHub, reactor: IReactorTime, token: Optional[str] = None) -> server.Site:
    site = _QuietSite(Root(Api(central, hub, token)), reactor=reactor)
    site.displayTracebacks = False
    return site


class WebPanel(service.MultiService):
    """The HTTP face of Central: a child of the Central service (so it starts once the state is loaded)."""

    log = Logger()

    def __init__(self, central: Any, endpoint: str, reactor: IReactorTime, token: Optional[str] = None, on_failure: Any = None) -> None:
        super().__init__()
        self.endpoint = endpoint
        self.hub = EventHub(central, reactor)
        self.hub.setServiceParent(self)
        self.site = make_site(central, self.hub, reactor, token)
        self.token = token
        strports.service(endpoint, self.site).setServiceParent(self)

    def startService(self) -> None:
        super().startService()
        self.log.info(
            "web panel and API on {endpoint} (write calls: {auth})",
            endpoint=self.endpoint,
            auth="admin token required" if self.token else "loopback only",
        )


# -- the OpenAPI document (hand-written; tests/test_web.py keeps it true to ROUTES) ---------

_ERR = {"$ref": "#/components/responses/Error"}
_ID = [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}, "description": "CP id"}]
_LIMIT = [{"name": "limit", "in": "query", "required": False,
           "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT}}]
_WRITE = {"security": [{"bearer": []}, {}]}


def _ok(schema: str, text: str) -> dict:
    return {"200": {"description": text,
                    "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}}}}


OPENAPI: dict = {
    "openapi": "3.0.3",
    "info": {
        "title": "EV_Central panel API",
        "version": "1",
        "description": (
            "Charging points, charges and application messages of EV_Central, and the operator's "
            "stop/resume commands. Write calls (POST) need 'Authorization: Bearer TOKEN' when Central "
            "runs with --admin-token-file; otherwise they are accepted only from loopback. "
            "Errors are {\"error\": \"...\"}."
        ),
    },
    "paths": {
        "/api/cps": {"get": {"summary": "Every charging point", "responses": _ok("CpList", "the CPs, by id")}},
        "/api/cps/{id}": {"get": {"summary": "One charging point", "parameters": _ID,
                                  "responses": {**_ok("Cp", "the CP"), "404": _ERR}}},
        "/api/cps/{id}/stop": {"post": {
            "summary": "Stop a CP (PARAR): ends its charge, leaves it PARADO (Out of Order)",
            "parameters": _ID, **_WRITE,
            "responses": {**_ok("CommandResult", "stopped (or already stopped)"),
                          "401": _ERR, "403": _ERR, "404": _ERR}}},
        "/api/cps/{id}/resume": {"post": {
            "summary": "Resume a stopped CP (REANUDAR)", "parameters": _ID, **_WRITE,
            "responses": {**_ok("CommandResult", "resumed"), "401": _ERR, "403": _ERR, "404": _ERR,
                          "409": _ERR}}},
        "/api/cps/stop": {"post": {"summary": "Stop every CP", **_WRITE,
                                   "responses": {**_ok("AllResult", "one result per CP"), "401": _ERR, "403": _ERR}}},
        "/api/cps/resume": {"post": {"summary": "Resume every stopped CP", **_WRITE,
                                     "responses": {**_ok("AllResult", "one result per stopped CP"),
                                                   "401": _ERR, "403": _ERR}}},
        "/api/sessions": {"get": {"summary": "Charges in progress and recent charges with their tickets",
                                  "parameters": _LIMIT,
                                  "responses": {**_ok("Sessions", "ongoing and recent"), "400": _ERR}}},
        "/api/events": {"get": {"summary": "Recent application messages, newest first", "parameters": _LIMIT,
                                "responses": {**_ok("Events", "the messages"), "400": _ERR}}},
        "/api/stream": {"get": {
            "summary": "Server-Sent Events: 'snapshot' first (cps, sessions, messages), then one event per "
                       "change: 'cp', 'telemetry' (data.cp), 'session' (data.session), 'message' (at, kind, "
                       "subject, text); a ': keep-alive' comment every 15 s",
            "responses": {"200": {"description": "the event stream",
                                  "content": {"text/event-stream": {"schema": {"type": "string"}}}}}}},
        "/api/openapi.json": {"get": {"summary": "This document",
                                      "responses": {"200": {"description": "OpenAPI 3",
                                                            "content": {"application/json": {}}}}}},
    },
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "responses": {"Error": {"description": "refused", "content": {"application/json": {"schema": {
            "type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}}}}}},
        "schemas": {
            "Cp": {"type": "object", "properties": {
                "id": {"type": "string"}, "location": {"type": "string"}, "price": {"type": "number"},
                "state": {"type": "string",
                          "enum": ["ACTIVADO", "PARADO", "SUMINISTRANDO", "AVERIADO", "DESCONECTADO"]},
                "stopped": {"type": "boolean"}, "engine_ok": {"type": "boolean"},
                "driver_id": {"type": "string", "nullable": True},
                "session_id": {"type": "string", "nullable": True},
                "kw": {"type": "number", "nullable": True}, "kwh": {"type": "number", "nullable": True},
                "euros": {"type": "number", "nullable": True}, "seconds": {"type": "integer", "nullable": True}}},
            "CpList": {"type": "object", "properties": {"cps": {"type": "array",
                                                                "items": {"$ref": "#/components/schemas/Cp"}}}},
            "CommandResult": {"type": "object", "properties": {
                "ok": {"type": "boolean"}, "message": {"type": "string"}, "cp": {"$ref": "#/components/schemas/Cp"}}},
            "AllResult": {"type": "object", "properties": {
                "results": {"type": "array", "items": {"type": "object", "properties": {
                    "ok": {"type": "boolean"}, "message": {"type": "string"}}}},
                "cps": {"type": "array", "items": {"$ref": "#/components/schemas/Cp"}}}},
            "Session": {"type": "object", "properties": {
                "id": {"type": "string"}, "cp_id": {"type": "string"}, "driver_id": {"type": "string"},
                "origin": {"type": "string"}, "state": {"type": "string"}, "started_at": {"type": "number"},
                "kwh": {"type": "number"}, "kw": {"type": "number"}, "euros": {"type": "number"},
                "seconds": {"type": "integer"}}},
            "StoredSession": {"type": "object", "properties": {
                "id": {"type": "string"}, "cp_id": {"type": "string"}, "driver_id": {"type": "string"},
                "origin": {"type": "string"}, "status": {"type": "string", "enum": ["open", "closed"]},
                "price": {"type": "number"}, "target_kwh": {"type": "number"}, "started_at": {"type": "number"},
                "ended_at": {"type": "number", "nullable": True}, "kwh": {"type": "number"},
                "euros": {"type": "number"}, "seconds": {"type": "integer"},
                "end_reason": {"type": "string", "nullable": True}, "ticket_delivered": {"type": "boolean"}}},
            "Sessions": {"type": "object", "properties": {
                "ongoing": {"type": "array", "items": {"$ref": "#/components/schemas/Session"}},
                "recent": {"type": "array", "items": {"$ref": "#/components/schemas/StoredSession"}}}},
            "Events": {"type": "object", "properties": {"events": {"type": "array", "items": {
                "type": "object", "properties": {
                    "id": {"type": "integer"}, "at": {"type": "number"}, "kind": {"type": "string"},
                    "subject": {"type": "string"}, "text": {"type": "string"}}}}}},
        },
    },
}
