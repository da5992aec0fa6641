"""
Fakes for EV_W's tests: a weather source and a Central client for the
office on a task.Clock (L{FakeSource}, L{FakeCentral}), and a fake Central
HTTP server in a thread of the test process for tests on real processes
and real sockets (L{FakeCentralServer}).
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Optional
from urllib.parse import unquote

from twisted.internet import defer

from evnet.weather.central import CentralError
from evnet.weather.sources import WeatherError


class FakeSource:
    """C{temperatures[city]}: a number, a WeatherError to fail with, or None to hold the answer in C{held}."""

    name = "the fake source"

    def __init__(self, **temperatures: Any) -> None:
        self.temperatures: dict[str, Any] = dict(temperatures)
        self.asked: list[str] = []
        self.held: list[tuple[str, defer.Deferred]] = []

    def temperature(self, city: str) -> defer.Deferred:
        self.asked.append(city)
        value = self.temperatures.get(city, WeatherError(f"no weather for {city}"))
        if value is None:
            d: defer.Deferred = defer.Deferred()
            self.held.append((city, d))
            return d
        if isinstance(value, Exception):
            return defer.fail(value)
        return defer.succeed(float(value))

    def close(self) -> defer.Deferred:
        return defer.succeed(None)


class FakeCentral:
    """
    Central's API as EV_W's client sees it: C{cps_locations} answered to
    L{locations}; each call recorded in C{calls} as (method, what); a call
    whose method is in C{refuse} fails with that CentralError; with
    C{hold}, alert calls wait in C{held} (Deferreds to fire).
    """

    name = "the fake Central"

    def __init__(self, *locations: str) -> None:
        self.cps_locations = list(locations)
        self.calls: list[tuple[str, Any]] = []
        self.refuse: dict[str, CentralError] = {}
        self.hold = False
        self.held: list[defer.Deferred] = []

    def _answer(self, method: str, what: Any, value: Any) -> defer.Deferred:
        self.calls.append((method, what))
        if method in self.refuse:
            return defer.fail(self.refuse[method])
        if self.hold and method in ("POST", "DELETE"):
            d: defer.Deferred = defer.Deferred()
            self.held.append(d)
            return d
        return defer.succeed(value)

    def locations(self) -> defer.Deferred:
        return self._answer("GET", "/api/v1/cps", sorted(set(self.cps_locations)))

    def raise_alert(self, alert) -> defer.Deferred:
        return self._answer("POST", alert, {"ok": True})

    def clear_alert(self, location: str) -> defer.Deferred:
        return self._answer("DELETE", location, {"ok": True})

    def health(self, body: dict) -> defer.Deferred:
        return self._answer("PUT", body, {"ok": True})

    def sent(self, *methods: str) -> list[tuple[str, Any]]:
        """The calls with these methods (alerts: POST, DELETE by default), in order."""
        methods = methods or ("POST", "DELETE")
        return [(m, what.location if m == "POST" else what) for m, what in self.calls if m in methods]

    def forget(self) -> None:
        self.calls.clear()

    def close(self) -> defer.Deferred:
        return defer.succeed(None)


class FakeCentralServer:
    """
    A fake of Central's HTTP API on 127.0.0.1 (a thread of the test
    process): C{GET /api/v1/cps} answers C{locations}; POST/DELETE
    C{/api/v1/weather/alerts} and PUT C{/api/v1/weather/health} are recorded
    in C{requests} as dicts (method, path, the decoded location, auth, body);
    with C{token} set, a call without that bearer token gets 401.
    """

    def __init__(self, locations: list[str], token: Optional[str] = None) -> None:
        self.locations = locations
        self.token = token
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _answer(self, status: int, value: Any) -> None:
                body = json.dumps(value).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                auth = self.headers.get("Authorization")
                record = {"method": self.command, "path": self.path, "auth": auth,
                          "body": json.loads(raw) if raw else None}
                if self.path.startswith("/api/v1/weather/alerts/"):
                    record["location"] = unquote(self.path.rsplit("/", 1)[1])
                with fake.lock:
                    fake.requests.append(record)
                if self.command == "GET" and self.path == "/api/v1/cps":
                    return self._answer(200, {"cps": [{"id": f"CP{i}", "location": loc}
                                                      for i, loc in enumerate(fake.locations)]})
                if fake.token is not None and auth != f"Bearer {fake.token}":
                    return self._answer(401, {"error": "this needs EV_W's token"})
                return self._answer(200, {"ok": True})

            do_GET = do_POST = do_PUT = do_DELETE = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self.thread.start()

    def seen(self, method: str) -> list[dict]:
        with self.lock:
            return [r for r in self.requests if r["method"] == method]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)
