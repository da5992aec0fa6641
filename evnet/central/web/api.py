"""
Everything under C{/api}: the route table, who may write, and one handler
per route, answered in JSON.

The handlers read Central's public attributes and call its operator
commands (C{stop_cp}, C{resume_cp}, C{revoke_key}, ...); Central stays the
one source of truth.  Write calls (POST) need C{Authorization: Bearer TOKEN} when Central
was started with an admin token file; without one they are accepted only
from loopback (and never from another web origin).
"""

from __future__ import annotations

import hmac
import re
from typing import Any, Callable, NamedTuple, Optional
from urllib.parse import unquote, urlsplit

from twisted.internet import defer
from twisted.logger import Logger
from twisted.web import resource, server

from evnet.central.web.openapi import OPENAPI
from evnet.central.web.sse import EventHub
from evnet.httpapi import ApiError, is_loopback, json_bytes
from evnet.central.web.views import (DEFAULT_LIMIT, MAX_LIMIT, all_cps, event_row, ongoing_sessions,
                                     peer, session_row)


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
    Route("POST", "/api/cps/{id}/revoke", "revoke_cp", write=True),
    Route("GET", "/api/drivers", "list_drivers"),
    Route("POST", "/api/drivers/{id}/cancel", "cancel_charge", write=True),
    Route("GET", "/api/sessions", "sessions"),
    Route("GET", "/api/events", "events"),
    Route("GET", "/api/stream", "stream"),
    Route("GET", "/api/openapi.json", "openapi"),
]
_COMPILED = [(route, route.regex) for route in ROUTES]


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
            self._answer_later(request, result)
            return server.NOT_DONE_YET
        return self._json(request, result)

    def _answer_later(self, request: server.Request, result: defer.Deferred) -> None:
        """Answer with what C{result} fires with (a store query), unless the client has gone."""
        finished: list = []
        request.notifyFinish().addBoth(finished.append)

        def failed(failure):
            if failure.check(ApiError):
                return self._error(request, failure.value)
            self.log.error("API {path}: {why}", path=request.path, why=failure.getErrorMessage())
            return self._error(request, ApiError(503, f"Central's database did not answer: {failure.getErrorMessage()}"))

        def send(body: bytes) -> None:
            if not finished:
                request.write(body)
                request.finish()

        result.addCallbacks(lambda value: self._json(request, value), failed).addCallback(send)

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
        self.log.info("panel: {text} (from {peer})", text=text, peer=peer(request))
        return {"ok": True, "message": text, "cp": self.central.cps[cp_id].as_dict()}

    def stop_cp(self, request, id):
        return self._one(request, id, self.central.stop_cp)

    def resume_cp(self, request, id):
        return self._one(request, id, self.central.resume_cp)

    def revoke_cp(self, request, id):
        requester = f"the operator at {peer(request)}"
        return self._one(request, id, lambda cp_id: self.central.revoke_key(cp_id, requester))

    def _all(self, request, command: Callable[[], list], verb: str):
        results = [{"ok": ok, "message": text} for ok, text in command()]
        self.log.info("panel: {verb} all CPs: {n} changed (from {peer})", verb=verb, n=len(results), peer=peer(request))
        return {"results": results, "cps": all_cps(self.central)}

    def stop_all(self, request):
        return self._all(request, self.central.stop_all, "stop")

    def resume_all(self, request):
        return self._all(request, self.central.resume_all, "resume")

    def list_drivers(self, request):
        """The drivers' accounts at EV_Registry (never a verifier), with whether each is connected and charging."""
        central = self.central

        def shown(rows):
            drivers = []
            for row in rows:
                session = central.driver_sessions.get(row["driver_id"])
                drivers.append({**row, "connected": row["driver_id"] in central.driver_links,
                                "session_id": session.id if session else None})
            return {"drivers": drivers, "driver_auth": central.drivers.mode}

        return central.store.driver_accounts().addCallback(shown)

    def cancel_charge(self, request, id):
        ok, said = self.central.cancel(id, f"through the API from {peer(request)}")
        if not ok:
            raise ApiError(409, said)
        self.log.info("panel: driver {driver}'s charge {sid} cancelled (from {peer})", driver=id, sid=said, peer=peer(request))
        return {"ok": True, "message": f"session {said} of driver {id} cancelled: its ticket follows", "session_id": said}

    def sessions(self, request):
        limit = self._limit(request)
        ongoing = ongoing_sessions(self.central)
        d = self.central.store.recent_sessions(limit)
        return d.addCallback(lambda rows: {"ongoing": ongoing, "recent": [session_row(r) for r in rows]})

    def events(self, request):
        limit = self._limit(request)
        d = self.central.store.recent_events(limit)
        return d.addCallback(lambda rows: {"events": [event_row(r) for r in rows]})

    def stream(self, request):
        return self.hub.subscribe(request)

    def openapi(self, request):
        return OPENAPI
