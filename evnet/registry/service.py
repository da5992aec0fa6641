"""
The EV_Registry service: opens the database (creating the tables where
missing), then serves the API over TLS.  Its children (the listener) start
only once the store is ready, so no call can reach a database without its
tables; a database that cannot be opened stops the process through
C{on_failure}, like a port that is taken.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from twisted.application import service
from twisted.internet import defer
from twisted.logger import Logger

from evnet.registry.store import RegistryStore
from evnet.registry.tls import Identity


class RegistryService(service.MultiService):
    log = Logger()

    def __init__(self, store: RegistryStore, identity: Identity, listen: str, admin_token: bool,
                 on_failure: Optional[Callable[[str], None]] = None) -> None:
        super().__init__()
        self.store = store
        self.identity = identity
        self.listen = listen
        self.admin_token = admin_token
        self.on_failure = on_failure
        self.ready: defer.Deferred = defer.Deferred()

    def privilegedStartService(self) -> None:
        # The listener binds in startService, once the store is ready.
        service.Service.privilegedStartService(self)

    def startService(self) -> None:
        service.Service.startService(self)
        self._log_identity()
        self.store.start().addCallbacks(self._store_ready, self._store_failed)

    def _log_identity(self) -> None:
        identity = self.identity
        if identity.created:
            self.log.info("created a self-signed certificate {path} for {names}",
                          path=identity.cert_path, names=", ".join(identity.names))
        self.log.info(
            "TLS certificate {path}, SHA-256 fingerprint {fingerprint}; {trust}",
            path=identity.cert_path, fingerprint=identity.fingerprint,
            trust=f"clients pass --ca-file {identity.cert_path}" if identity.self_signed
            else "clients trust the CA that issued it (their --ca-file)",
        )

    def _store_ready(self, _: Any) -> None:
        for child in self:
            child.startService()
        self.log.info(
            "EV_Registry ready: HTTPS API on {listen} (admin calls: {auth})",
            listen=self.listen, auth="admin token required" if self.admin_token else "loopback only",
        )
        self.ready.callback(self)

    def _store_failed(self, failure: Any) -> None:
        text = f"EV_Registry cannot start: database {self.store.store.url.display()}: {failure.getErrorMessage()}"
        self.log.error("{text}", text=text)
        self.ready.errback(failure)
        if self.on_failure is not None:
            self.on_failure(text)

    @defer.inlineCallbacks
    def stopService(self):
        yield service.MultiService.stopService(self)
        self.store.close()
