"""
Where the Monitor's credentials come from (``docs/chargingpoint.md``,
"Credentials"): its credentials file, or, while there is none, a
registration of the CP at EV_Registry with a one-time enrollment token,
whose answer is then kept in that file (mode 0600, written atomically).

A problem that waiting does not solve (a file others may read, a token the
Registry refuses, no way to get credentials at all) fails L{obtain} with a
L{CredentialsError} of one line; a Registry that cannot be reached is tried
again with a growing delay.  No secret or token is ever logged.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Optional

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from evnet.registry.client import RegistryError, RegistryRefused
from evnet.registry.credentials import Credentials, CredentialsError, load_credentials, save_credentials

DEFAULT_CREDENTIALS_FILE = "evmonitor-{cp_id}-credentials.json"


def default_credentials_file(cp_id: str) -> str:
    """The credentials file of CP C{cp_id} when --credentials-file is not given (working directory)."""
    return DEFAULT_CREDENTIALS_FILE.format(cp_id=cp_id)


def how_to_get_credentials(cp_id: str, path: str) -> str:
    return (
        f"no credentials for CP {cp_id}: {path} does not exist. Register the CP at EV_Registry with "
        f"--registry URL --enrollment-token-file F (a token from 'evctl registry enroll {cp_id}'), "
        f"or give --credentials-file a file made by 'evctl registry add {cp_id} --credentials-file F'"
    )


class CredentialSource:
    """
    The credentials of CP C{cp_id}: the file at C{path}, or a registration
    at C{registry} (its URL, shown in logs) through C{register(cp_id,
    location, price, token)} (a Deferred of L{Credentials}, failing with a
    L{RegistryError}) with the token in C{token_file}.  C{backoff(attempt)}
    is the delay before trying an unreachable Registry again.
    """

    log = Logger()

    def __init__(
        self,
        path: str,
        cp_id: str,
        clock: IReactorTime,
        *,
        registry: Optional[str] = None,
        token_file: Optional[str] = None,
        location: Optional[str] = None,
        price: Optional[float] = None,
        register: Optional[Callable[[str, str, float, str], defer.Deferred]] = None,
        backoff: Optional[Callable[[int], float]] = None,
    ) -> None:
        self.path = path
        self.cp_id = cp_id
        self.clock = clock
        self.registry = registry
        self.token_file = token_file
        self.location = location
        self.price = price
        self.register = register
        self.backoff = backoff or (lambda attempt: min(30.0, 1.5**attempt))
        self._timer: Any = None
        self._said = ""

    def load(self) -> Credentials:
        """The credentials file, checked: L{CredentialsError} if it cannot be used."""
        credentials = load_credentials(self.path)
        if credentials.cp_id != self.cp_id:
            raise CredentialsError(
                f"the credentials file {self.path} is for CP {credentials.cp_id}, not --cp-id {self.cp_id}"
            )
        return credentials

    def obtain(self) -> defer.Deferred:
        """The credentials: at once from the file, or once the Registry registered the CP."""
        try:
            if os.path.exists(self.path):
                return defer.succeed(self.load())
            token = self._ready_to_register()
        except CredentialsError:
            return defer.fail()
        result: defer.Deferred = defer.Deferred()
        self._attempt(token, result, 0)
        return result

    def stop(self) -> None:
        """Give up waiting for the Registry (the Monitor is stopping)."""
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    # -- registering ---------------------------------------------------------

    def _ready_to_register(self) -> str:
        """The enrollment token, once everything a registration needs is there."""
        if self.registry is None or self.token_file is None or self.register is None:
            raise CredentialsError(how_to_get_credentials(self.cp_id, self.path))
        if self.location is None or self.price is None:
            raise CredentialsError(
                f"to register CP {self.cp_id} at the Registry the Monitor needs --location and --price"
            )
        directory = os.path.dirname(os.path.abspath(self.path))
        if not os.access(directory, os.W_OK | os.X_OK):
            raise CredentialsError(f"cannot write the credentials file {self.path}: its directory is not writable")
        try:
            with open(self.token_file, encoding="utf-8") as f:
                token = f.read().strip()
        except (OSError, UnicodeDecodeError) as e:
            why = getattr(e, "strerror", None) or e
            raise CredentialsError(f"cannot read --enrollment-token-file {self.token_file}: {why}") from None
        if not token:
            raise CredentialsError(f"--enrollment-token-file {self.token_file} is empty")
        return token

    def _attempt(self, token: str, result: defer.Deferred, attempt: int) -> None:
        self._timer = None
        if attempt == 0:
            self.log.info("Registering CP {cp_id} at the Registry at {url}", cp_id=self.cp_id, url=self.registry)
        d = defer.maybeDeferred(self.register, self.cp_id, self.location, self.price, token)
        d.addCallbacks(self._registered, self._not_registered, callbackArgs=(result,),
                       errbackArgs=(token, result, attempt))

    def _registered(self, credentials: Credentials, result: defer.Deferred) -> None:
        try:
            if credentials.cp_id != self.cp_id:
                raise CredentialsError(f"the Registry registered CP {credentials.cp_id}, not {self.cp_id}")
            save_credentials(self.path, credentials)
        except CredentialsError:
            result.errback()
            return
        self.log.info(
            "The Registry registered CP {cp_id}: its credentials are in {path} (mode 0600)",
            cp_id=self.cp_id,
            path=self.path,
        )
        result.callback(credentials)

    def _not_registered(self, failure: Failure, token: str, result: defer.Deferred, attempt: int) -> None:
        if failure.check(RegistryRefused):
            result.errback(CredentialsError(
                f"the Registry at {self.registry} refused to register CP {self.cp_id}: {failure.value.reason} "
                f"(an enrollment token works once, for one CP, until it expires: "
                f"ask for a new one, 'evctl registry enroll {self.cp_id}')"
            ))
        elif failure.check(RegistryError):
            why = failure.getErrorMessage()
            if why != self._said:
                self._said = why
                self.log.warn("Cannot register CP {cp_id}: {why}; retrying", cp_id=self.cp_id, why=why)
            self._timer = self.clock.callLater(self.backoff(attempt), self._attempt, token, result, attempt + 1)
        else:
            result.errback(failure)
