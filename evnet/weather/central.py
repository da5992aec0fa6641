"""
EV_W's client of Central's HTTP API (``docs/weather.md``, "The contract with
Central"): the CP locations (``GET /api/v1/cps``), the alerts (``POST`` and
``DELETE /api/v1/weather/alerts``) and the heartbeat (``PUT
/api/v1/weather/health``), each with EV_W's token as ``Authorization:
Bearer``.  Every failure is a L{CentralError} whose text is one line.
"""

from __future__ import annotations

import json
from typing import Any, Optional
from urllib.parse import quote, urlsplit

from twisted.internet import defer

from evnet.weather.alerts import Alert
from evnet.weather.http import WebClient, why_no_answer

DEFAULT_URL = "http://127.0.0.1:8080"
DEFAULT_TIMEOUT = 10.0
ALERTS = "/api/v1/weather/alerts"
HEALTH = "/api/v1/weather/health"


class CentralError(Exception):
    """A call Central did not take; C{status} is its HTTP status, None when it did not answer."""

    def __init__(self, text: str, status: Optional[int] = None) -> None:
        super().__init__(text)
        self.text = text
        self.status = status


def check_url(url: str) -> str:
    """Central's base URL without a trailing slash; ValueError unless it is http(s)://HOST[:PORT]."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path.strip("/") or parts.query:
        raise ValueError(f"expected Central's web panel URL like {DEFAULT_URL}, not {url!r}")
    parts.port  # noqa: B018 -- raises ValueError for a bad port
    return url.rstrip("/")


class CentralClient:
    """Central's API at C{url} for EV_W; calls fire with Central's JSON answer or fail with L{CentralError}."""

    def __init__(self, reactor: Any, url: str = DEFAULT_URL, token: Optional[str] = None, *,
                 timeout: float = DEFAULT_TIMEOUT, ca_file: Optional[str] = None,
                 web: Optional[WebClient] = None) -> None:
        self.reactor = reactor
        self.url = check_url(url)
        self.name = f"Central at {self.url}"
        self._token = token
        self.timeout = timeout
        self.web = web if web is not None else WebClient(reactor, ca_file, timeout, persistent=False)

    def __repr__(self) -> str:
        return f"<CentralClient {self.url} token=...>"

    def call(self, method: str, path: str, body: Any = None) -> defer.Deferred:
        d = defer.ensureDeferred(self._call(method, path, body))
        d.addTimeout(self.timeout, self.reactor)
        return d.addErrback(self._explain)

    async def _call(self, method: str, path: str, body: Any) -> Any:
        headers = {b"Accept": [b"application/json"]}
        if self._token:
            headers[b"Authorization"] = [f"Bearer {self._token}".encode("utf-8")]
        kwargs: dict[str, Any] = {"headers": headers, "allow_redirects": False}
        if body is not None:
            kwargs["data"] = json.dumps(body).encode("utf-8")
            headers[b"Content-Type"] = [b"application/json"]
        response = await self.web.http.request(method, self.url + path, **kwargs)
        raw = await response.content()
        try:
            answer = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            answer = None
        if response.code >= 400:
            why = answer.get("error") if isinstance(answer, dict) else None
            why = " ".join(str(why or "no reason given").split())[:200]
            if response.code in (401, 403):
                raise CentralError(f"Central refuses EV_W's token ({response.code}: {why})", response.code)
            raise CentralError(f"Central answered {response.code} to {method} {path} ({why})", response.code)
        if answer is None:
            raise CentralError(f"{self.name} did not answer JSON ({response.code}): is --central Central's web panel?",
                               response.code)
        return answer

    def _explain(self, failure: Any) -> Any:
        if failure.check(CentralError):
            return failure
        raise CentralError(why_no_answer(failure.value, self.name, self.timeout))

    def locations(self) -> defer.Deferred:
        """The distinct locations of Central's CPs, sorted."""

        def read(answer: Any) -> list[str]:
            cps = answer.get("cps") if isinstance(answer, dict) else None
            if not isinstance(cps, list):
                raise CentralError(f"{self.name} answered GET /api/v1/cps without a list of CPs")
            found = {cp.get("location") for cp in cps if isinstance(cp, dict)}
            return sorted(loc for loc in found if isinstance(loc, str) and loc.strip())

        return self.call("GET", "/api/v1/cps").addCallback(read)

    def raise_alert(self, alert: Alert) -> defer.Deferred:
        """Raise (or refresh) the frost alert for C{alert.location}."""
        return self.call("POST", ALERTS, alert.body())

    def clear_alert(self, location: str) -> defer.Deferred:
        """Clear the alert for C{location}; one Central does not have (404) counts as cleared."""

        def gone(failure: Any) -> Any:
            failure.trap(CentralError)
            if failure.value.status == 404:
                return {"ok": True, "cleared": False}
            return failure

        return self.call("DELETE", f"{ALERTS}/{quote(location, safe='')}").addErrback(gone)

    def health(self, body: dict) -> defer.Deferred:
        return self.call("PUT", HEALTH, body)

    def close(self) -> defer.Deferred:
        return self.web.close()
