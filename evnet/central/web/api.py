"""
Everything under C{/api}: the route table, who may write, and one handler
per route, answered in JSON.

The handlers read Central's public attributes and call its operator
commands (C{stop_cp}, C{resume_cp}, C{revoke_key}, ...); Central stays the
one source of truth.  Write calls (POST) need C{Authorization: Bearer TOKEN} when Central
was started with an admin token file; without one they are accepted only
from loopback (and never from another web origin).

EV_W's calls (C{/api/v1/weather/...}, docs/weather.md) need EV_W's own
token (C{--weather-token-file}): a missing or wrong one is 401, the admin
token is 403, a body not of the contract's shape is 400, and each refusal
is recorded with the peer's address (summarized when they come in a flood).
EV_W's token opens nothing else.
"""

from __future__ import annotations

import hmac
import json
from typing import Any, Callable, Optional
from urllib.parse import urlsplit

from twisted.internet import defer
from twisted.logger import Logger
from twisted.web import resource, server

from evnet.central import audit
from evnet.central.weather import BadBody, parse_alert, parse_health
from evnet.central.web.reads import Reads
from evnet.central.web.routes import ROUTES, Redirect, Route, find
from evnet.central.web.sse import EventHub
from evnet.httpapi import ApiError, is_loopback, json_bytes
from evnet.central.web.views import all_cps, peer

__all__ = ["ROUTES", "Api", "Route"]


MAX_BODY = 16 * 1024  # bytes of a JSON body EV_W may send
KIND_WEATHER_REFUSED = "weather-refused"  # the journal's kind of a refused weather call

# Audit actions of the operator's commands (docs/audit.md).
OPERATOR_ACTIONS = {"stop_cp": "cp.stop", "resume_cp": "cp.resume", "revoke_cp": "key.revoke",
                    "stop_all": "cps.stop-all", "resume_all": "cps.resume-all"}


class Api(Reads, resource.Resource):
    """Everything under C{/api}: routed by L{ROUTES} (the reads in L{Reads}), answered in JSON."""

    isLeaf = True
    log = Logger()

    def __init__(self, central: Any, hub: EventHub, token: Optional[str] = None,
                 weather_token: Optional[str] = None) -> None:
        super().__init__()
        self.central = central
        self.hub = hub
        self._token = token.encode("utf-8") if token else None
        self._weather_token = weather_token.encode("utf-8") if weather_token else None
        # Refused calls: one journal message and audit row per address and status a minute (swept with the CPs').
        trust = getattr(central, "trust", None)
        self.refusals = trust.refusals if trust is not None else None

    # -- dispatch ----------------------------------------------------------------

    def render(self, request: server.Request):
        route = None
        try:
            route, params = find(request.method.decode("ascii", "replace"),
                                 request.path.decode("utf-8", "replace"), request.uri.decode("utf-8", "replace"))
            if route.guarded:
                try:
                    self.authorize(request)
                except ApiError as e:
                    self._refused(request, e)
                    raise
            if route.weather:
                self.authorize_weather(request)
            result = getattr(self, route.handler)(request, **params)
        except Redirect as moved:
            request.setHeader(b"location", moved.location.encode("utf-8"))
            return self._json(request, {"moved_to": moved.location}, 308)
        except ApiError as e:
            if route is not None and route.weather:
                self._weather_refused(request, e)
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

    @staticmethod
    def _bearer(request: server.Request) -> Optional[bytes]:
        """The bearer token the request presents, or None."""
        scheme, _, given = (request.getHeader("authorization") or "").partition(" ")
        return given.strip().encode("utf-8") if scheme.lower() == "bearer" and given.strip() else None

    @staticmethod
    def _matches(given: Optional[bytes], token: Optional[bytes]) -> bool:
        return given is not None and token is not None and hmac.compare_digest(given, token)

    def authorize_weather(self, request: server.Request) -> None:
        """EV_W's calls: its token only (401 without it or with a wrong one, 403 with the admin token)."""
        given = self._bearer(request)
        if self._matches(given, self._weather_token):
            return
        if self._matches(given, self._token):
            raise ApiError(403, "the admin token does not give access to the weather calls: use EV_W's token")
        why = ("Central has no --weather-token-file: weather calls are refused" if self._weather_token is None
               else "this needs EV_W's token (Authorization: Bearer TOKEN)")
        raise ApiError(401, why, {"WWW-Authenticate": 'Bearer realm="evnet-weather"'})

    def _weather_refused(self, request: server.Request, error: ApiError) -> None:
        """Record a refused weather call (a flood of them from one address is one row and a count)."""
        address = request.getClientAddress()
        host = getattr(address, "host", None) or str(address)
        method = request.method.decode("ascii", "replace")
        path = request.path.decode("utf-8", "replace")[:120]
        where = peer(request)
        self.central.trust.refusals.record(
            KIND_WEATHER_REFUSED, host, f"weather call {method} {path} from {where} refused "
            f"({error.status}: {error.text})", like=(host, error.status, error.text),
            note=audit.Note("weather", "unauthenticated" if error.status == 401 else "unauthorized", where,
                            "weather.refused", audit.REFUSED,
                            {"method": method, "path": path, "status": error.status, "reason": error.text}))

    def authorize(self, request: server.Request) -> None:
        if self._matches(self._bearer(request), self._weather_token):
            raise ApiError(403, "EV_W's token gives access to the weather calls only")
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

    def identity(self) -> str:
        """Who an authorized call is (for the audit row): the admin token, or a loopback caller."""
        return "admin-token" if self._token is not None else "loopback"

    def _refused(self, request: server.Request, error: ApiError) -> None:
        if self.refusals is None:
            return
        where = peer(request)
        host = audit.split_address(where)[0]
        method = request.method.decode("ascii", "replace")
        path = request.path.decode("utf-8", "replace")[:128]
        self.refusals.record(
            "api-refused", host, f"{method} {path} from {where} refused ({error.status}): {error.text}",
            # One row per address, status and kind of call a minute: a refused command
            # (a write) is never folded into the row of a refused read.
            (host, error.status, method in ("GET", "HEAD")),
            audit.Note("operator", "unauthenticated" if error.status == 401 else "unauthorized", where, "api.refused",
                       audit.REFUSED, {"method": method, "path": path, "status": error.status, "reason": error.text}),
        )

    def _operator(self, request: server.Request, handler: str, outcome: str, **detail: Any) -> None:
        """The audit row of an operator's command: its token identity and address."""
        trail = getattr(self.central, "audit", None)
        if trail is not None:
            trail.record("operator", self.identity(), peer(request), OPERATOR_ACTIONS[handler], outcome, **detail)

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

    # -- handlers (one per route) ------------------------------------------------

    def list_cps(self, request):
        return {"cps": all_cps(self.central)}

    def get_cp(self, request, id):
        return self._cp(id).as_dict()

    def _one(self, request, cp_id: str, command: Callable[[str], tuple[bool, str]], handler: str):
        if cp_id not in self.central.cps:
            self._operator(request, handler, audit.FAILED, cp=cp_id, message=f"unknown CP {cp_id}")
        self._cp(cp_id)
        ok, text = command(cp_id)
        self._operator(request, handler, audit.OK if ok else audit.FAILED, cp=cp_id, message=text)
        if not ok:
            raise ApiError(409, text)
        self.log.info("panel: {text} (from {peer})", text=text, peer=peer(request))
        return {"ok": True, "message": text, "cp": self.central.cps[cp_id].as_dict()}

    def stop_cp(self, request, id):
        return self._one(request, id, self.central.stop_cp, "stop_cp")

    def resume_cp(self, request, id):
        return self._one(request, id, self.central.resume_cp, "resume_cp")

    def revoke_cp(self, request, id):
        requester = f"the operator at {peer(request)}"
        return self._one(request, id, lambda cp_id: self.central.revoke_key(cp_id, requester), "revoke_cp")

    def _all(self, request, command: Callable[[], list], verb: str):
        results = [{"ok": ok, "message": text} for ok, text in command()]
        self._operator(request, f"{verb}_all", audit.OK, changed=len(results),
                       messages=[r["message"] for r in results])
        self.log.info("panel: {verb} all CPs: {n} changed (from {peer})", verb=verb, n=len(results), peer=peer(request))
        return {"results": results, "cps": all_cps(self.central)}

    def stop_all(self, request):
        return self._all(request, self.central.stop_all, "stop")

    def resume_all(self, request):
        return self._all(request, self.central.resume_all, "resume")

    def cancel_charge(self, request, id):
        ok, said = self.central.cancel(id, f"through the API from {peer(request)}")
        if not ok:
            raise ApiError(409, said)
        self.log.info("panel: driver {driver}'s charge {sid} cancelled (from {peer})", driver=id, sid=said, peer=peer(request))
        return {"ok": True, "message": f"session {said} of driver {id} cancelled: its ticket follows", "session_id": said}

    def stream(self, request):
        return self.hub.subscribe(request)

    # -- EV_W's calls (docs/weather.md, "The contract with Central") ---------------

    @staticmethod
    def _body(request: server.Request) -> Any:
        raw = request.content.read(MAX_BODY + 1) if request.content is not None else b""
        if len(raw) > MAX_BODY:
            raise ApiError(400, f"the body is larger than {MAX_BODY} bytes")
        try:
            return json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise ApiError(400, "the body must be JSON") from None

    def weather_raise(self, request):
        try:
            location, city, temperature, observed_at = parse_alert(self._body(request))
        except BadBody as e:
            raise ApiError(400, str(e)) from None
        cps = self.central.weather.raise_alert(location, city, temperature, observed_at, source=peer(request))
        return {"ok": True, "location": location, "cps": cps}

    def weather_clear(self, request, location):
        return {"ok": True, "cleared": self.central.weather.clear_alert(location, source=peer(request))}

    def weather_health(self, request):
        try:
            heartbeat = parse_health(self._body(request))
        except BadBody as e:
            raise ApiError(400, str(e)) from None
        self.central.weather.took_heartbeat(heartbeat)
        return {"ok": True}
