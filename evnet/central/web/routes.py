"""
API_Central v1's route table (everything under C{/api/v1}, as the OpenAPI
document says it) and how a request finds its route: a literal path is
that resource only, a wrong method is 405 with C{Allow}, an old C{/api/...}
path of a v1 route is a 308 Permanent Redirect to it (its query kept; 308
keeps the method and the body).  Pure: no Twisted resource here.
"""

from __future__ import annotations

import re
from typing import NamedTuple, Optional
from urllib.parse import unquote

from evnet.httpapi import ApiError

PREFIX = "/api/v1"
LEGACY = "/api"  # the paths before v1: each answers 308 to PREFIX + the rest


class Route(NamedTuple):
    method: str
    template: str  # e.g. "/api/v1/cps/{id}/stop", as in the OpenAPI document
    handler: str  # the name of an L{evnet.central.web.api.Api} method
    write: bool = False  # needs the admin token (or loopback)
    weather: bool = False  # needs EV_W's token
    private: bool = False  # a read that needs what a write needs (the admin token, or loopback)

    @property
    def guarded(self) -> bool:
        return self.write or self.private

    @property
    def regex(self) -> re.Pattern:
        return re.compile(re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(self.template)) + r"\Z")


def _v1(method: str, path: str, handler: str, **kw: bool) -> Route:
    return Route(method, PREFIX + path, handler, **kw)


ROUTES: list[Route] = [
    _v1("GET", "/cps", "list_cps"),
    _v1("GET", "/cps/{id}", "get_cp"),
    _v1("POST", "/cps/stop", "stop_all", write=True),
    _v1("POST", "/cps/resume", "resume_all", write=True),
    _v1("POST", "/cps/{id}/stop", "stop_cp", write=True),
    _v1("POST", "/cps/{id}/resume", "resume_cp", write=True),
    _v1("POST", "/cps/{id}/revoke", "revoke_cp", write=True),
    _v1("GET", "/drivers", "list_drivers"),
    _v1("POST", "/drivers/{id}/cancel", "cancel_charge", write=True),
    _v1("GET", "/sessions", "sessions"),
    _v1("GET", "/events", "events"),
    _v1("GET", "/alerts", "alerts"),
    _v1("GET", "/summary", "summary"),
    _v1("GET", "/stream", "stream"),
    _v1("GET", "/openapi.json", "openapi"),
    _v1("GET", "/weather", "weather"),
    _v1("POST", "/weather/alerts", "weather_raise", weather=True),
    _v1("DELETE", "/weather/alerts/{location}", "weather_clear", weather=True),
    _v1("PUT", "/weather/health", "weather_health", weather=True),
    _v1("GET", "/audit", "audit_trail", private=True),
]
_COMPILED = [(route, route.regex) for route in ROUTES]


class Redirect(Exception):
    """An old path: answer 308 with C{location}."""

    def __init__(self, location: str) -> None:
        super().__init__(location)
        self.location = location


def _matching(path: str) -> list:
    matching = [(route, match) for route, regex in _COMPILED if (match := regex.match(path)) is not None]
    if any(route.template == path for route, _ in matching):
        # A literal path (/api/v1/cps/stop) is that resource only, not also /api/v1/cps/{id}.
        matching = [(route, match) for route, match in matching if route.template == path]
    return matching


def find(method: str, path: str, uri: str) -> tuple[Route, dict]:
    """
    The route of C{method} on C{path} and its path parameters.  Raises
    L{Redirect} for an old path (C{uri}: the request's raw path and query),
    L{ApiError} 405 (with C{Allow}) or 404.
    """
    if len(path) > 1:
        path = path.rstrip("/")
    matching = _matching(path)
    allowed = []
    for route, match in matching:
        if route.method == method or (method == "HEAD" and route.method == "GET"):
            return route, {k: unquote(v) for k, v in match.groupdict().items()}
        allowed.append(route.method)
    if allowed:
        raise ApiError(405, f"{method} is not allowed on {path} (allowed: {', '.join(sorted(set(allowed)))})",
                       {"Allow": ", ".join(sorted(set(allowed)))})
    location = legacy_location(path, uri)
    if location is not None:
        raise Redirect(location)
    raise ApiError(404, f"no such API path: {path} (see {PREFIX}/openapi.json)")


def legacy_location(path: str, uri: str) -> Optional[str]:
    """Where an old C{/api/...} path of a v1 route moved (C{uri} with C{/api} made C{/api/v1}), or None."""
    if not path.startswith(LEGACY + "/") or path.startswith(PREFIX + "/") or path == PREFIX:
        return None
    if not _matching(PREFIX + path[len(LEGACY):]):
        return None
    return PREFIX + uri[len(LEGACY):] if uri.startswith(LEGACY + "/") else None
