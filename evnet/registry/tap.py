"""``twistd evregistry``: options and service wiring for EV_Registry."""

from __future__ import annotations

from twisted.application import service
from twisted.python import usage

from evnet.central.store import Store, StoreError, parse_db_url
from evnet.central.tap import read_token_file
from evnet.endpoints import Listener, check_server_endpoint, stop_process
from evnet.registry.tls import TlsError, interface_of, names_for, operator_identity, self_signed_identity

DEFAULT_LISTEN = "tcp:7443:interface=127.0.0.1"
DEFAULT_STATE_DIR = "evregistry-state"


class Options(usage.Options):
    synopsis = "[--listen ENDPOINT] [--db URL] [--admin-token-file FILE] [--tls-cert FILE --tls-key FILE] [options]"
    longdesc = (
        "EV_Registry: charging points are registered (alta) with their location and price, get the "
        "secret they authenticate with at EV_Central, and are deregistered (baja), through a REST API "
        "over HTTPS. It keeps them in the database it shares with EV_Central (--db). Without "
        "--tls-cert/--tls-key it makes a self-signed certificate at its first start, in --state-dir; "
        "clients pass that certificate as their CA file. --listen is a Twisted TCP endpoint string, "
        "e.g. tcp:7443:interface=127.0.0.1 (loopback only) or tcp:7443 (every interface)."
    )
    optParameters = [
        ["listen", "l", DEFAULT_LISTEN, "TCP endpoint of the HTTPS API."],
        ["db", None, "sqlite:evcentral.db",
         "Database shared with EV_Central: sqlite:PATH or mysql://user:password@host:port/dbname."],
        ["admin-token-file", None, None,
         "File holding the admin token that admin calls must present as 'Authorization: Bearer TOKEN'. "
         "Without it, admin calls are accepted only from loopback."],
        ["tls-cert", None, None, "PEM certificate (then its chain) to serve; with --tls-key."],
        ["tls-key", None, None, "PEM private key of --tls-cert."],
        ["state-dir", "d", DEFAULT_STATE_DIR, "Directory of the self-signed certificate and its key."],
        ["audit-key-file", None, None,
         "The audit trail's key file, the same as EV_Central's --audit-key-file (made 0600 if missing; default: "
         "next to a SQLite database, PATH.audit-key, else evnet-audit.key in the working directory)."],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["tls-names"] = []

    def opt_tls_name(self, name: str) -> None:
        """Another name (DNS name or IP address) for the self-signed certificate; repeatable."""
        self["tls-names"].extend(n.strip() for n in name.split(",") if n.strip())

    def postOptions(self) -> None:
        try:
            self["db_url"] = parse_db_url(self["db"])
        except ValueError as e:
            raise usage.UsageError(f"--db: {e}") from None
        listen = self["listen"]
        if not listen.startswith(("tcp:", "tcp6:")):
            raise usage.UsageError(f"--listen {listen!r}: give a tcp: endpoint (e.g. {DEFAULT_LISTEN}); "
                                   "the Registry adds TLS itself")
        check_server_endpoint("listen", listen, DEFAULT_LISTEN)
        self["admin_token"] = None
        if self["admin-token-file"] is not None:
            self["admin_token"] = read_token_file(self["admin-token-file"])
        if (self["tls-cert"] is None) != (self["tls-key"] is None):
            raise usage.UsageError("--tls-cert and --tls-key go together")
        try:
            if self["tls-cert"] is not None:
                self.identity = operator_identity(self["tls-cert"], self["tls-key"])
            else:
                names = names_for(interface_of(listen), self["tls-names"])
                self.identity = self_signed_identity(self["state-dir"], names)
        except TlsError as e:
            raise usage.UsageError(str(e)) from None
        missing = [n for n in self["tls-names"] if n not in self.identity.names]
        if missing:
            raise usage.UsageError(
                f"the certificate {self.identity.cert_path} does not name {', '.join(missing)}: "
                + ("remove it and its key to make a new one (clients must then trust the new one)"
                   if self["tls-cert"] is None else "use a certificate that does")
            )


def makeService(options: Options) -> service.MultiService:
    from twisted.internet import reactor
    from twisted.protocols.tls import TLSMemoryBIOFactory

    from evnet.registry.api import RegistryApi, make_site
    from evnet.registry.service import RegistryService
    from evnet.registry.store import RegistryStore

    try:
        db = Store(options["db_url"])
    except StoreError as e:
        raise SystemExit(f"evregistry: {e}")
    from evnet.central.tap import audit_key_of

    store = RegistryStore(db, audit_key_of(options, "evregistry"))
    fail = stop_process(reactor, "evregistry")
    top = RegistryService(store, options.identity, options["listen"], options["admin_token"] is not None, fail)
    site = make_site(RegistryApi(store, reactor, options["admin_token"]), reactor)
    tls = TLSMemoryBIOFactory(options.identity.server_options(), False, site)
    Listener("listen", options["listen"], tls, reactor, fail).setServiceParent(top)
    return top
