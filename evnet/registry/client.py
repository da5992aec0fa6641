"""
A client of EV_Registry's API, on Twisted with treq, for the Monitor and
``evctl registry``: it checks the Registry's certificate against a CA file
(the Registry's own self-signed certificate, or the CA that issued the
operator's), and turns every failure into a one-line L{RegistryError}.

    d = register(reactor, "https://127.0.0.1:7443", "registry-cert.pem",
                 "CP01", "Calle Mayor 1", 0.35, token)   # -> Credentials
"""

from __future__ import annotations

import json
import os
from typing import Any, Optional
from urllib.parse import quote, urlsplit

from twisted.internet import defer, error

from evnet.registry.credentials import Credentials

DEFAULT_URL = "https://127.0.0.1:7443"
DEFAULT_TIMEOUT = 10.0
PREFIX = "/api/v1"


class RegistryError(Exception):
    """The call did not succeed; the text is one line for a person."""


class RegistryRefused(RegistryError):
    """The Registry answered with an error status."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(f"the Registry refused ({status}): {text}")
        self.status = status
        self.reason = text


def check_url(url: str) -> str:
    """The Registry's base URL without a trailing slash; https only (its API carries secrets)."""
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise RegistryError(f"the Registry's URL must be https://HOST:PORT (e.g. {DEFAULT_URL}), not {url!r}")
    return url.rstrip("/")


def http_client(reactor: Any, ca_file: Optional[str], timeout: float = DEFAULT_TIMEOUT) -> Any:
    """
    A treq HTTPClient that trusts only the certificates in C{ca_file} (the
    system's CAs without it), checks the host name, and keeps no idle
    connection (so a one-shot command ends at once).
    """
    from treq.client import HTTPClient
    from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, HTTPConnectionPool

    from evnet.tls import TlsError, trust_root

    try:
        policy = BrowserLikePolicyForHTTPS(trust_root(ca_file) if ca_file else None)
    except TlsError as e:
        raise RegistryError(str(e)) from None
    pool = HTTPConnectionPool(reactor, persistent=False)
    return HTTPClient(Agent(reactor, contextFactory=policy, pool=pool, connectTimeout=timeout))


def explain(failure_value: BaseException, url: str, timeout: float) -> str:
    """A one-line reason for a call that got no answer."""
    from OpenSSL import SSL
    from service_identity import VerificationError

    reasons = [r.value for r in getattr(failure_value, "reasons", [])] or [failure_value]
    for reason in reasons:
        if isinstance(reason, VerificationError):
            return f"the certificate of the Registry at {url} does not name {urlsplit(url).hostname}"
        if isinstance(reason, SSL.Error):
            return (f"the certificate of the Registry at {url} is not trusted ({_ssl_text(reason)}): "
                    "pass the Registry's certificate (or its CA) with --ca-file")
        if isinstance(reason, (defer.CancelledError, defer.TimeoutError, error.TimeoutError)):
            return f"no answer from the Registry at {url} within {timeout:g} s"
        if isinstance(reason, error.DNSLookupError):
            return f"cannot connect to the Registry at {url}: {str(reason).rstrip('.')}"
        if isinstance(reason, error.ConnectError):
            code = getattr(reason, "osError", None)
            why = os.strerror(code).lower() if isinstance(code, int) else str(reason).rstrip(".")
            return f"cannot connect to the Registry at {url}: {why}"
    return f"the call to the Registry at {url} failed: {reasons[0]}"


def _ssl_text(reason: BaseException) -> str:
    args = getattr(reason, "args", ())
    if args and isinstance(args[0], list):
        return "; ".join(str(item[-1]) for item in args[0] if item) or "handshake failed"
    return str(reason) or "handshake failed"


class RegistryClient:
    """The Registry's API calls; each returns a Deferred of plain data (or fails with a RegistryError)."""

    def __init__(self, reactor: Any, url: str = DEFAULT_URL, ca_file: Optional[str] = None,
                 token: Optional[str] = None, *, timeout: float = DEFAULT_TIMEOUT, http: Any = None) -> None:
        self.reactor = reactor
        self.url = check_url(url)
        self.token = token
        self.timeout = timeout
        self.http = http if http is not None else http_client(reactor, ca_file, timeout)

    async def request(self, method: str, path: str, body: Any = None, token: Optional[str] = None) -> tuple[int, Any]:
        """One API call: the status and the Registry's JSON answer (an error status raises RegistryRefused)."""
        headers = {b"Accept": [b"application/json"]}
        token = token if token is not None else self.token
        if token:
            headers[b"Authorization"] = [f"Bearer {token}".encode("utf-8")]
        kwargs: dict[str, Any] = {"headers": headers, "timeout": self.timeout}
        if body is not None:
            kwargs["data"] = json.dumps(body).encode("utf-8")
            headers[b"Content-Type"] = [b"application/json"]
        try:
            response = await self.http.request(method, self.url + path, **kwargs)
            raw = await response.content()
        except RegistryError:
            raise
        except Exception as e:
            raise RegistryError(explain(e, self.url, self.timeout)) from None
        try:
            answer = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise RegistryError(f"{self.url} did not answer JSON ({response.code}): is it EV_Registry?") from None
        if response.code >= 400:
            why = answer.get("error") if isinstance(answer, dict) else None
            raise RegistryRefused(response.code, str(why or "no reason given"))
        return response.code, answer

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        """One API call: the Registry's JSON answer."""
        return (await self.request(method, path, body))[1]

    @staticmethod
    def _cp(cp_id: str) -> str:
        return f"{PREFIX}/cps/{quote(cp_id, safe='')}"

    def put_cp(self, cp_id: str, location: str, price: float, token: Optional[str] = None) -> defer.Deferred:
        """
        Register C{cp_id} (or register it again) with the client's token or
        C{token} (an enrollment token for it): fires with (created, answer),
        the answer holding the secret.
        """

        async def go():
            status, answer = await self.request("PUT", self._cp(cp_id), {"location": location, "price": price},
                                                token)
            return status == 201, answer

        return defer.ensureDeferred(go())

    def register(self, cp_id: str, location: str, price: float, token: Optional[str] = None) -> defer.Deferred:
        """L{put_cp}, firing with the CP's L{Credentials}."""
        d = self.put_cp(cp_id, location, price, token)
        return d.addCallback(lambda done: Credentials(done[1]["cp_id"], done[1]["secret"], self.url))

    def deregister(self, cp_id: str) -> defer.Deferred:
        return defer.ensureDeferred(self.call("DELETE", self._cp(cp_id)))

    def show(self, cp_id: str) -> defer.Deferred:
        return defer.ensureDeferred(self.call("GET", self._cp(cp_id)))

    def list(self) -> defer.Deferred:
        d = defer.ensureDeferred(self.call("GET", f"{PREFIX}/cps"))
        return d.addCallback(lambda answer: answer["cps"])

    def enroll(self, cp_id: str, ttl_seconds: Optional[int] = None) -> defer.Deferred:
        """Issue an enrollment token for C{cp_id}: fires with C{{"cp_id", "token", "expires_at"}}."""
        body: dict[str, Any] = {"cp_id": cp_id}
        if ttl_seconds is not None:
            body["ttl_seconds"] = ttl_seconds
        return defer.ensureDeferred(self.call("POST", f"{PREFIX}/enrollments", body))


def register(reactor: Any, url: str, ca_file: Optional[str], cp_id: str, location: str, price: float,
             token: Optional[str] = None, *, timeout: float = DEFAULT_TIMEOUT) -> defer.Deferred:
    """Register C{cp_id} at the Registry at C{url}: fires with its L{Credentials}."""
    try:
        client = RegistryClient(reactor, url, ca_file, timeout=timeout)
    except RegistryError:
        return defer.fail()
    return client.register(cp_id, location, price, token)
