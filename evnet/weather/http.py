"""
EV_W's HTTP clients (OpenWeather, Central): a treq client on a persistent
connection pool, and the one line that says why a request got no answer.
Neither ever names a request's URL, since OpenWeather's carries the API key.
"""

from __future__ import annotations

import os
from typing import Any, Optional

from twisted.internet import defer, error


def _quiet_factory() -> type:
    from twisted.web.client import _HTTP11ClientFactory

    class QuietFactory(_HTTP11ClientFactory):
        noisy = False

    return QuietFactory


class WebClient:
    """
    A treq HTTPClient (C{http}) and its pool: trusting the certificates in
    C{ca_file} for https (the system's CAs without it), connecting within
    C{timeout} seconds, keeping connections open between requests when
    C{persistent} (a GET on a connection the server closed meanwhile is
    sent again at once; a POST would not be: Central's client uses a
    connection per call).  L{close} drops the idle connections.
    """

    def __init__(self, reactor: Any, ca_file: Optional[str] = None, timeout: float = 10.0,
                 persistent: bool = True) -> None:
        from treq.client import HTTPClient
        from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, HTTPConnectionPool

        from evnet.tls import trust_root

        policy = BrowserLikePolicyForHTTPS(trust_root(ca_file) if ca_file else None)
        self.pool = HTTPConnectionPool(reactor, persistent=persistent)
        self.pool._factory = _quiet_factory()  # no "Starting factory" lines at every poll
        self.pool.maxPersistentPerHost = 4
        self.http = HTTPClient(Agent(reactor, contextFactory=policy, pool=self.pool, connectTimeout=timeout))

    def close(self) -> defer.Deferred:
        return self.pool.closeCachedConnections()


def why_no_answer(exc: BaseException, who: str, timeout: float) -> str:
    """Why C{who} (e.g. "OpenWeather at https://…", never a full URL) gave no answer: one line."""
    reasons = [r.value for r in getattr(exc, "reasons", [])] or [exc]
    for reason in reasons:
        if isinstance(reason, (defer.CancelledError, defer.TimeoutError, error.TimeoutError)):
            return f"no answer from {who} within {timeout:g} s"
        if isinstance(reason, error.DNSLookupError):
            return f"cannot find the host of {who}"
        if isinstance(reason, error.ConnectError):
            code = getattr(reason, "osError", None)
            detail = os.strerror(code).lower() if isinstance(code, int) else str(reason).rstrip(".").lower()
            return f"cannot connect to {who}: {detail}"
        if isinstance(reason, (error.ConnectionDone, error.ConnectionLost)):
            return f"{who} closed the connection before answering"
        if type(reason).__module__.startswith("OpenSSL") or "SSL" in type(reason).__name__:
            return f"the TLS handshake with {who} failed (is its certificate trusted? --ca-file)"
    return f"the request to {who} failed: {type(reasons[0]).__name__}"
