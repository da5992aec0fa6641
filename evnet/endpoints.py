"""
Endpoints as the user gives them: checking an option's endpoint string, and
a listening service that tells a user in one line why it cannot listen
(the port is taken, the address is not on this host...), not in a
traceback.

A service never stops the process itself: it reports the failure to the
C{on_failure} callable its tap gives it, and the tap (the process's wiring)
decides; L{stop_process} is what the taps use.
"""

from __future__ import annotations

import atexit
import os
import sys
from typing import Any, Callable, Optional

from twisted.application import service
from twisted.internet import defer, error
from twisted.logger import Logger
from twisted.python import usage
from twisted.python.failure import Failure


def check_server_endpoint(option: str, description: str, example: str) -> None:
    """Raise a clear UsageError when C{description} is not a server endpoint string."""
    from twisted.internet import endpoints, reactor

    try:
        endpoints.serverFromString(reactor, description)
    except (ValueError, TypeError, KeyError, OSError, NotImplementedError) as e:
        raise usage.UsageError(
            f"--{option} {description!r} is not a server endpoint string (e.g. {example}): {e}"
        ) from None


def client_endpoint(option: str, description: str, example: str, *, ca_file: Optional[str] = None) -> Any:
    """
    The client endpoint for C{description}, or a clear UsageError.

    A ``tls:`` description (``tls:host=H:port=P`` or ``tls:H:P``) verifies
    the server's certificate and name: against the certificates in
    C{ca_file} (the ``--ca-file`` option) when given, else against the
    system's trusted CAs.
    """
    from twisted.internet import endpoints, reactor

    if description.startswith("tls:") and ca_file is not None:
        return _tls_client(reactor, option, description, example, ca_file)
    try:
        return endpoints.clientFromString(reactor, description)
    except (ValueError, TypeError, KeyError, OSError, NotImplementedError) as e:
        raise usage.UsageError(
            f"--{option} {description!r} is not a client endpoint string (e.g. {example}): {e}"
        ) from None


def _tls_client(reactor: Any, option: str, description: str, example: str, ca_file: str) -> Any:
    from twisted.internet import endpoints, ssl

    from evnet.tls import TlsError, trust_root

    positional: list[str] = []
    keywords: dict[str, str] = {}
    for part in description[len("tls:"):].split(":"):
        name, sep, value = part.partition("=")
        if sep:
            keywords[name] = value
        else:
            positional.append(part)
    host = keywords.pop("host", positional[0] if positional else "")
    port = keywords.pop("port", positional[1] if len(positional) > 1 else "")
    timeout = keywords.pop("timeout", "30")
    if not host or not port.isdigit() or not 0 < int(port) < 65536 or not timeout.isdigit() or keywords:
        extra = f" (unknown: {', '.join(sorted(keywords))})" if keywords else ""
        raise usage.UsageError(
            f"--{option} {description!r}: expected tls:host=HOST:port=PORT (e.g. {example}){extra}"
        )
    try:
        trust = trust_root(ca_file)
    except TlsError as e:
        raise usage.UsageError(str(e)) from None
    return endpoints.wrapClientTLS(
        ssl.optionsForClientTLS(host, trustRoot=trust),
        endpoints.HostnameEndpoint(reactor, host.encode("idna"), int(port), int(timeout)),
    )


def why_not_listening(failure: Failure) -> str:
    """A short, user-facing reason for a failed listen."""
    exc = failure.value
    if isinstance(exc, error.CannotListenError):
        socket_error = exc.socketError
        text = getattr(socket_error, "strerror", None) or str(socket_error)
        return text[0].lower() + text[1:] if text else "cannot listen"
    return failure.getErrorMessage() or type(exc).__name__


class Listener(service.Service):
    """
    Listens on the endpoint string C{description} of option C{--option}
    with C{factory} while running (C{shown}: the string as the user gave it,
    if C{description} added to it).  A failure to listen is logged in one line naming the
    option and the address, and passed to C{on_failure(text)}.
    """

    log = Logger()

    def __init__(
        self,
        option: str,
        description: str,
        factory: Any,
        reactor: Any,
        on_failure: Optional[Callable[[str], None]] = None,
        *,
        shown: Optional[str] = None,
    ) -> None:
        self.option = option
        self.description = description
        self.shown = description if shown is None else shown  # as the user wrote it
        self.factory = factory
        self.reactor = reactor
        self.on_failure = on_failure
        self.port: Any = None
        self._listening: Optional[defer.Deferred] = None

    def startService(self) -> None:
        super().startService()
        from twisted.internet import endpoints

        endpoint = endpoints.serverFromString(self.reactor, self.description)
        self._listening = d = endpoint.listen(self.factory)
        d.addCallbacks(self._listened, self._failed)

    @property
    def listening(self) -> defer.Deferred:
        """Fires with the port once listening (None if it failed or never started)."""
        if self._listening is None:
            return defer.succeed(None)
        d: defer.Deferred = defer.Deferred()

        def fired(result):
            d.callback(self.port)
            return result

        self._listening.addBoth(fired)
        return d

    def _listened(self, port: Any) -> Any:
        self.port = port
        return port

    def _failed(self, failure: Failure) -> None:
        text = f"cannot listen on --{self.option} {self.shown}: {why_not_listening(failure)}"
        self.log.error("{text}", text=text)
        if self.on_failure is not None:
            self.on_failure(text)

    def stopService(self) -> defer.Deferred:
        super().stopService()
        port, self.port = self.port, None
        if port is None:
            return defer.succeed(None)
        return defer.maybeDeferred(port.stopListening)


def stop_process(reactor: Any, program: str) -> Callable[[str], None]:
    """
    For taps: a C{on_failure} that stops C{program} (a twistd command) with
    exit status 1 after a fatal start-up failure, the reason already logged.
    twistd itself always exits 0 after the reactor stops, so the status is
    set at interpreter exit, after twistd has cleaned up (pid file, logs).
    """

    failed: list[str] = []

    def fail(text: str) -> None:
        if not failed:
            failed.append(text)
            atexit.register(_exit_with_failure)
            reactor.callWhenRunning(reactor.stop)

    return fail


def _exit_with_failure() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError, AttributeError):
            pass
    os._exit(1)
