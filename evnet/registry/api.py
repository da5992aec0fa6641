"""
EV_Registry's REST API (twisted.web, JSON): charging points are registered
(alta) with their location and price and given a secret, registered again
(their credentials reset), deregistered (baja), listed; the operator issues
one-time enrollment tokens that let a CP register itself.

Authority: the operator's admin token (C{Authorization: Bearer TOKEN}, when
the Registry has an admin token file; without one, admin calls are accepted
only from loopback), or, for C{PUT /api/v1/cps/{id}} only, an enrollment
token issued for that id.  Reading needs the admin token or loopback.
Every refusal answers C{{"error": text}} and leaves an ``events`` row
(kind ``registry-refused``) saying why, and from which address and port.
No secret or token is ever logged or recorded.

The resource is a leaf at the site's root: the routes are L{ROUTES}, and
L{evnet.registry.openapi.OPENAPI} describes exactly them (tests/test_registry_api.py keeps it so).
"""

from __future__ import annotations

import hmac
import json
import re
import secrets
from typing import Any, NamedTuple, Optional
from urllib.parse import unquote, urlsplit

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web import resource, server

from evnet.httpapi import ApiError, is_loopback, json_bytes
from evnet.protocols import security
from evnet.protocols.vocabulary import ID_RULE, valid_id
from evnet.registry.checks import (DEFAULT_TTL, MAX_BODY, PREFIX, TOKEN_BYTES, Refused, check_cp_id, check_fields,
                                   check_location, check_price, check_ttl)
from evnet.registry.openapi import OPENAPI
from evnet.registry.store import RegistryStore, token_hash, when

# Who may call a route.
ADMIN = "admin"  # the admin token, or loopback when there is no admin token file
ENROLLING = "admin-or-enrollment"  # ADMIN, or an enrollment token issued for the path's id
READ = "read"  # the admin token, or loopback
OPEN = "open"  # anyone


class Route(NamedTuple):
    method: str
    template: str  # as in the OpenAPI document
    handler: str  # the name of a L{RegistryApi} method
    access: str

    def match(self, path: str) -> Optional[dict]:
        pattern = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(self.template)) + r"\Z"
        found = re.match(pattern, path)
        return None if found is None else {k: unquote(v) for k, v in found.groupdict().items()}


ROUTES: list[Route] = [
    Route("POST", f"{PREFIX}/enrollments", "enroll", ADMIN),
    Route("GET", f"{PREFIX}/cps", "list_cps", READ),
    Route("GET", f"{PREFIX}/cps/{{id}}", "get_cp", READ),
    Route("PUT", f"{PREFIX}/cps/{{id}}", "put_cp", ENROLLING),
    Route("DELETE", f"{PREFIX}/cps/{{id}}", "delete_cp", ADMIN),
    Route("GET", f"{PREFIX}/drivers", "list_drivers", READ),
    Route("PUT", f"{PREFIX}/drivers/{{id}}", "put_driver", ADMIN),
    Route("DELETE", f"{PREFIX}/drivers/{{id}}", "delete_driver", ADMIN),
    Route("GET", f"{PREFIX}/openapi.json", "openapi", OPEN),
]


class Authority(NamedTuple):
    kind: str  # "admin", "loopback", "enrollment" or "anyone"
    by: str  # for the audit row: which authority, from which address and port
    token_hash: Optional[str] = None  # an enrollment token's SHA-256 (hex)
    host: str = ""
    port: Optional[int] = None

    def actor(self, cp_id: str = "") -> tuple:
        """Who, for the audit row: (kind, id, host, port): the operator by token or loopback, or the enrolling CP."""
        if self.kind == "enrollment":
            return ("cp", cp_id, self.host, self.port)
        return ("operator", "admin-token" if self.kind == "admin" else self.kind, self.host, self.port)


def host_port(request: server.Request) -> tuple[str, Optional[int]]:
    address = request.getClientAddress()
    host = getattr(address, "host", None)
    return (host, address.port) if host is not None else (str(address), None)


def peer_of(request: server.Request) -> str:
    address = request.getClientAddress()
    host = getattr(address, "host", None)
    return f"{host}:{address.port}" if host is not None else str(address)


def _unauthorized(text: str, audit: Optional[str] = None) -> Refused:
    return Refused(401, text, audit, {"WWW-Authenticate": 'Bearer realm="evregistry"'})


# -- the resource ----------------------------------------------------------------------


class RegistryApi(resource.Resource):
    """Every path of the Registry's site: routed by L{ROUTES}, answered in JSON."""

    isLeaf = True
    log = Logger()

    def __init__(self, store: RegistryStore, clock: IReactorTime, admin_token: Optional[str] = None) -> None:
        super().__init__()
        self.store = store
        self.clock = clock
        self._token = admin_token.encode("utf-8") if admin_token else None

    def render(self, request: server.Request):
        finished: list = []
        request.notifyFinish().addBoth(finished.append)

        def answer(result: tuple[int, Any, dict]) -> None:
            status, value, headers = result
            if finished:
                return
            for name, text in headers.items():
                request.setHeader(name.encode("ascii"), text.encode("utf-8"))
            request.setResponseCode(status)
            request.setHeader(b"content-type", b"application/json; charset=utf-8")
            request.setHeader(b"cache-control", b"no-store")
            request.setHeader(b"x-content-type-options", b"nosniff")
            request.write(json_bytes(value))
            request.finish()

        defer.ensureDeferred(self._answer(request)).addCallback(answer)
        return server.NOT_DONE_YET

    async def _answer(self, request: server.Request) -> tuple[int, Any, dict]:
        peer = peer_of(request)
        raw = request.content.read() if request.content is not None else b""
        subject = _subject_hint(request, raw[:MAX_BODY + 1])
        try:
            route, params = self._route(request)
            authority = self._authorize(request, route, peer)._replace(**dict(zip(("host", "port"), host_port(request))))
            body = self._body(request, raw) if route.method in ("POST", "PUT") else None
            status, value = await getattr(self, route.handler)(authority, body, **params)
        except ApiError as e:
            await self._refused(request, e, subject, peer)
            return e.status, {"error": e.text}, e.headers
        except Exception:
            self.log.failure("registry API {method} {path}", method=request.method.decode("ascii", "replace"),
                             path=request.path.decode("utf-8", "replace"))
            return 503, {"error": "the Registry could not answer: its database failed (see its log)"}, {}
        return status, value, {}

    # -- routing and authority -----------------------------------------------------

    @staticmethod
    def _route(request: server.Request) -> tuple[Route, dict]:
        path = request.path.decode("utf-8", "replace")
        if len(path) > 1:
            path = path.rstrip("/")
        method = request.method.decode("ascii", "replace")
        allowed: set[str] = set()
        for route in ROUTES:
            params = route.match(path)
            if params is None:
                continue
            if route.method == method or (method == "HEAD" and route.method == "GET"):
                return route, params
            allowed.add(route.method)
        if allowed:
            methods = ", ".join(sorted(allowed))
            raise Refused(405, f"{method} is not allowed on {path} (allowed: {methods})", headers={"Allow": methods})
        raise Refused(404, f"no such API path: {path} (see {PREFIX}/openapi.json)")

    def _authorize(self, request: server.Request, route: Route, peer: str) -> Authority:
        if route.access == OPEN:
            return Authority("anyone", peer)
        header = request.getHeader("authorization")
        if header is not None:
            scheme, _, given = header.partition(" ")
            given = given.strip()
            if scheme.lower() != "bearer" or not given:
                raise _unauthorized("the Authorization header must be 'Bearer TOKEN'")
            if self._token is not None and hmac.compare_digest(given.encode("utf-8"), self._token):
                return Authority("admin", f"the admin token from {peer}")
            if route.access == ENROLLING:
                return Authority("enrollment", f"an enrollment token from {peer}", token_hash(given))
            if self._token is None:
                raise _unauthorized("this Registry has no admin token: admin calls come from its host, "
                                    "without a token", "a token, but there is no admin token")
            raise _unauthorized("this needs the admin token", "wrong admin token")
        if is_loopback(request.getClientAddress()) and (self._token is None or route.access == READ):
            if route.access != READ:
                _same_origin(request)
            return Authority("loopback", f"loopback {peer} (no admin token file)" if self._token is None
                             else f"loopback {peer}")
        if self._token is None:
            raise Refused(403, "admin calls are accepted only from this host when the Registry has no "
                               "--admin-token-file")
        raise _unauthorized("this needs a token (Authorization: Bearer TOKEN)", "no token")

    @staticmethod
    def _body(request: server.Request, raw: bytes) -> Any:
        content_type = (request.getHeader("content-type") or "").split(";")[0].strip().lower()
        if content_type != "application/json":
            raise Refused(415, "the body must be JSON (Content-Type: application/json)")
        if len(raw) > MAX_BODY:
            raise Refused(413, f"the body is larger than {MAX_BODY} bytes")
        try:
            return json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise Refused(400, "the body is not valid JSON") from None

    async def _refused(self, request: server.Request, error: ApiError, subject: str, peer: str) -> None:
        method = request.method.decode("ascii", "replace")
        path = request.path.decode("utf-8", "replace")
        why = getattr(error, "audit", error.text)
        self.log.warn("refused {method} {path} ({status}) from {peer}: {why}",
                      method=method, path=path, status=error.status, peer=peer, why=why)
        detail = f"{method} {path} refused ({error.status}): {why}; from {peer}"
        host, port = host_port(request)
        try:
            await self.store.refused(subject, detail, self.clock.seconds(), ("operator", "unauthenticated" if
                                     error.status == 401 else "caller", host, port), method=method, path=path[:128],
                                     status=error.status, reason=why)
        except Exception:
            self.log.failure("could not record a refusal in the events table")

    # -- handlers (one per route): (status, JSON value) ----------------------------

    async def enroll(self, authority: Authority, body: Any):
        fields = check_fields(body, ("cp_id",), ("ttl_seconds",))
        cp_id = check_cp_id(fields["cp_id"])
        ttl = check_ttl(fields.get("ttl_seconds", DEFAULT_TTL))
        token = secrets.token_urlsafe(TOKEN_BYTES)
        now = self.clock.seconds()
        await self.store.issue_enrollment(cp_id, token_hash(token), now, now + ttl, authority.by, authority.actor())
        self.log.info("enrollment token issued for {cp_id}, valid until {until}; by {by}",
                      cp_id=cp_id, until=when(now + ttl), by=authority.by)
        return 201, {"cp_id": cp_id, "token": token, "expires_at": now + ttl}

    async def put_cp(self, authority: Authority, body: Any, id: str):
        cp_id = check_cp_id(id)
        fields = check_fields(body, ("location", "price"))
        location, price = check_location(fields["location"]), check_price(fields["price"])
        secret = security.new_secret()
        done = await self.store.register(
            cp_id, location, price, lambda: security.make_verifier(secret).to_text(),
            self.clock.seconds(), authority.by, authority.token_hash, authority.actor(cp_id),
        )
        if done.refused is not None:
            raise _unauthorized(f"the enrollment token is not valid for {cp_id} "
                                "(unknown, expired, already used or issued for another CP)", done.refused)
        row = done.row
        what = "registered (alta)" if done.created else "registered again, credentials reset" if done.reset \
            else "registered again after its baja"
        self.log.info("{cp_id} {what}: {location!r}, {price:.3f} EUR/kWh; by {by}",
                      cp_id=cp_id, what=what, location=location, price=price, by=authority.by)
        return (201 if done.created else 200), {
            "cp_id": cp_id, "location": row["location"], "price": row["price"], "secret": secret,
            "registered_at": row["registered_at"], "updated_at": row["updated_at"], "status": row["status"],
        }

    async def delete_cp(self, authority: Authority, body: Any, id: str):
        cp_id = check_cp_id(id)
        row = await self.store.deregister(cp_id, self.clock.seconds(), authority.by, authority.actor())
        if row is None:
            raise Refused(404, f"{cp_id} is not registered")
        self.log.info("{cp_id} deregistered (baja); by {by}", cp_id=cp_id, by=authority.by)
        return 200, {"cp_id": cp_id, "status": row["status"]}

    async def get_cp(self, authority: Authority, body: Any, id: str):
        cp_id = check_cp_id(id)
        row = await self.store.shown(cp_id)
        if row is None:
            raise Refused(404, f"{cp_id} is not registered")
        return 200, row

    async def list_cps(self, authority: Authority, body: Any):
        return 200, {"cps": await self.store.registrations()}

    # -- drivers' accounts (issue 14): signed up by the operator, the secret shown once --

    async def put_driver(self, authority: Authority, body: Any, id: str):
        if not valid_id(id):
            raise Refused(400, f"driver id: {ID_RULE}")
        if body not in (None, {}):
            check_fields(body, ())
        secret = security.new_secret()
        created, row = await self.store.add_driver(
            id, lambda: security.make_verifier(secret).to_text(), self.clock.seconds(), authority.by)
        self.log.info("driver {id} {what}; by {by}", id=id, what="signed up" if created else "signed up again, "
                      "credentials reset", by=authority.by)
        return (201 if created else 200), {**row, "secret": secret}

    async def delete_driver(self, authority: Authority, body: Any, id: str):
        if not valid_id(id):
            raise Refused(400, f"driver id: {ID_RULE}")
        row = await self.store.remove_driver(id, self.clock.seconds(), authority.by)
        if row is None:
            raise Refused(404, f"driver {id} is not signed up")
        self.log.info("driver {id} removed; by {by}", id=id, by=authority.by)
        return 200, row

    async def list_drivers(self, authority: Authority, body: Any):
        return 200, {"drivers": await self.store.drivers()}

    async def openapi(self, authority: Authority, body: Any):
        return 200, OPENAPI


def _same_origin(request: server.Request) -> None:
    origin = request.getHeader("origin")
    if origin is not None and urlsplit(origin).netloc != (request.getHeader("host") or ""):
        # A page from another site must not drive the Registry through a browser on this host.
        raise Refused(403, f"admin calls from another web origin ({origin}) are refused")


def _subject_hint(request: server.Request, raw: bytes) -> str:
    """The CP id a call is about, for its audit row (the path's id, or the body's cp_id)."""
    path = request.path.decode("utf-8", "replace").rstrip("/")
    for prefix in (f"{PREFIX}/cps/", f"{PREFIX}/drivers/"):
        if path.startswith(prefix) and "/" not in path[len(prefix):]:
            return unquote(path[len(prefix):])[:64] or "-"
    try:
        cp_id = json.loads(raw.decode("utf-8")).get("cp_id") if raw and len(raw) <= MAX_BODY else None
    except (UnicodeDecodeError, ValueError, AttributeError):
        cp_id = None
    return cp_id[:64] if isinstance(cp_id, str) and cp_id else "-"


def make_site(api: RegistryApi, clock: IReactorTime) -> server.Site:
    site = server.Site(api, reactor=clock)
    site.displayTracebacks = False
    site.noisy = False
    return site
