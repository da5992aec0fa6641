"""``twistd evcentral``: options and service wiring for EV_Central."""

import gc
import math
import os
import stat
from typing import Any

from twisted.application import service
from twisted.logger import Logger
from twisted.python import usage

from evnet.endpoints import Listener, check_server_endpoint, stop_process
from evnet.protocols.link import LinkFactory
from evnet.central.kafka import KAFKA_RECONCILE_TIMEOUT, CentralBus
from evnet.central.links import CpLinks, DriverLinks
from evnet.central.drivers import AUTH_MODES
from evnet.central.rules import PLUG_TIMEOUT, RECONCILE_TIMEOUT, Central
from evnet.central.service import CentralService
from evnet.central.trust import KEY_ROTATION, LOGIN_FAILURES, LOGIN_WINDOW
from evnet.central.store import Store, StoreError, parse_db_url
from evnet.central.weather import DEFAULT_STALE
from evnet.central.web import WebPanel
from evnet.protocols.vocabulary import kafka_prefix


class Options(usage.Options):
    synopsis = "[--listen ENDPOINT] [--drivers ENDPOINT] [--ocpp ENDPOINT] [--db URL] [options]"
    longdesc = (
        "EV_Central: authenticates the charging points registered at EV_Registry (their Monitors "
        "connect to --listen and log in with their credentials), authorizes drivers' charges (drivers connect to --drivers), follows every "
        "charge and issues its ticket, and keeps everything in its database so a restart "
        "rebuilds the state. Addresses are Twisted endpoint strings, e.g. "
        "tcp:7000:interface=127.0.0.1 (loopback only) or tcp:7000 (every interface)."
    )
    optParameters = [
        ["listen", "l", "tcp:7000:interface=127.0.0.1", "Endpoint where Monitors connect."],
        ["drivers", "d", "tcp:7001:interface=127.0.0.1", "Endpoint where drivers connect (in-band mode)."],
        ["db", None, "sqlite:evcentral.db",
         "Database: sqlite:PATH (embedded) or mysql://user:password@host:port/dbname."],
        ["liveness-interval", None, "1", "Seconds between two STATUS of a Monitor (told to it at its login)."],
        ["liveness-timeout", None, None,
         "Seconds without a Monitor's STATUS before its CP is DESCONECTADO (default: 3 x --liveness-interval)."],
        ["key-rotation", None, str(int(KEY_ROTATION)),
         "Seconds between two keys of a CP: Central sends REAUTH and the Monitor logs in again (0: never)."],
        ["login-failures", None, str(LOGIN_FAILURES),
         "Failed logins from one address within --login-window that lock it out for as long (0: no lockout)."],
        ["login-window", None, str(int(LOGIN_WINDOW)), "Seconds of --login-failures' window and of a lockout."],
        ["plug-timeout", None, str(int(PLUG_TIMEOUT)),
         "Seconds an authorized charge may wait for its vehicle: with no TELEM by then the CP is released "
         "with a 0 kWh ticket (0: never)."],
        ["driver-auth", None, "optional",
         "Drivers' credentials: 'required' (a driver must log in: AUTH/CHALLENGE/PROOF/KEY, then sealed) or "
         "'optional' (also plain hellos and requests, but only for a driver id that has no account)."],
        ["max-frame", None, "4096", "Largest frame DATA accepted, in bytes."],
        ["kafka", "k", None,
         "Kafka bootstrap servers (host:port[,host:port]): telemetry, CP events and drivers go "
         "through Kafka. Without it they travel in-band over the TCP links."],
        ["kafka-group", None, "evcentral", "Kafka consumer group of this Central."],
        ["kafka-prefix", None, "", "Prefix of this network's Kafka topics and consumer groups (PREFIX.cp.telemetry...), so that several networks share one cluster; none by default.", kafka_prefix],
        ["http", None, "tcp:8080:interface=127.0.0.1",
         "Endpoint of the web panel and its API (none: no HTTP)."],
        ["ocpp", None, None,
         "Endpoint of the OCPP 1.6J WebSocket server for charge points registered at EV_Registry "
         "(HTTP Basic auth, security profile 1), e.g. tcp:9000:interface=127.0.0.1; an ssl: endpoint "
         "(ssl:9443:privateKey=KEY:certKey=CERT) is security profile 2. Default: none."],
        ["ocpp-heartbeat", None, "60", "Heartbeat interval, in seconds, told to OCPP charge points at boot."],
        ["admin-token-file", None, None,
         "File holding the admin token that the API's write calls (stop, resume, revoke) must present as "
         "'Authorization: Bearer TOKEN'. Without it, write calls are accepted only from loopback."],
        ["weather-token-file", None, None,
         "File holding EV_W's token (one line, mode 600): EV_W's weather calls (/api/v1/weather/...) must present "
         "it as 'Authorization: Bearer TOKEN'. Without it, every weather call is refused (401)."],
        ["weather-stale", None, f"{DEFAULT_STALE:g}",
         "Seconds without a word from EV_W after which Central clears every weather alert itself."],
        ["audit-key-file", None, None,
         "File holding the audit trail's key (created 0600 at first start; docs/audit.md). Default: next to a "
         "SQLite database (PATH.audit-key), else evnet-audit.key in the working directory. EV_Registry and "
         "'evctl audit verify' must use the same file."],
    ]

    def postOptions(self) -> None:
        try:
            self["db_url"] = parse_db_url(self["db"])
        except ValueError as e:
            raise usage.UsageError(f"--db: {e}")
        for name in ("listen", "drivers"):
            # Checked here: the listeners start only once the database is loaded.
            check_server_endpoint(name, self[name], "tcp:7000:interface=127.0.0.1")
        if self["ocpp"]:
            check_server_endpoint("ocpp", self["ocpp"], "tcp:9000:interface=127.0.0.1")
        for name, minimum in (("liveness-interval", 0.1), ("liveness-timeout", 0.1), ("max-frame", 64),
                              ("key-rotation", 0), ("plug-timeout", 0), ("login-failures", 0), ("login-window", 1), ("ocpp-heartbeat", 1)):
            if self[name] is None:
                continue
            try:
                value = float(self[name])
            except ValueError:
                raise usage.UsageError(f"--{name} must be a number, not {self[name]!r}")
            if value < minimum:
                raise usage.UsageError(f"--{name} must be at least {minimum:g}")
            self[name] = value
        if self["driver-auth"] not in AUTH_MODES:
            raise usage.UsageError(f"--driver-auth must be one of {', '.join(AUTH_MODES)}, not {self['driver-auth']!r}")
        if 0 < self["key-rotation"] < 10:
            raise usage.UsageError("--key-rotation must be 0 (never) or at least 10 seconds")
        if self["kafka"]:
            from evnet.kafka.errors import BusError, parse_bootstrap

            try:
                parse_bootstrap(self["kafka"])
            except BusError as e:
                raise usage.UsageError(f"--kafka: {e}")
        try:
            stale = float(self["weather-stale"])
        except ValueError:
            stale = math.nan
        if not (math.isfinite(stale) and stale >= 1):
            raise usage.UsageError(f"--weather-stale must be a number of seconds, at least 1, not {self['weather-stale']!r}")
        self["weather-stale"] = stale
        for option, key, what in (("admin-token-file", "admin_token", "the admin token"),
                                  ("weather-token-file", "weather_token", "EV_W's token")):
            self[key] = None if self[option] is None else read_token_file(self[option], option, what)
        if self["admin_token"] is not None and self["admin_token"] == self["weather_token"]:
            raise usage.UsageError("--weather-token-file: EV_W's token must not be the admin token")


def audit_key_of(options: Any, program: str) -> bytes:
    """
    The audit key of C{--audit-key-file} (or its default place), made at
    first start (read in makeService, not in postOptions: parsing options
    writes no file); one line and exit status 1 if unusable.
    """
    from evnet.central.audittrail import KeyError_, default_key_path, load_key

    path = options["audit-key-file"] or default_key_path(options["db_url"])
    try:
        return load_key(path, create=True)
    except KeyError_ as e:
        raise SystemExit(f"{program}: --audit-key-file: {e}") from None


log = Logger(namespace="evnet.central.tap")


def read_token_file(path: str, option: str = "admin-token-file", what: str = "the admin token") -> str:
    """
    A token: the file's content without surrounding whitespace (read once,
    at start).  One warning line if others may read the file; the token is
    never shown.
    """
    try:
        with open(path, encoding="utf-8") as f:
            mode = os.fstat(f.fileno()).st_mode
            token = f.read().strip()
    except (OSError, UnicodeDecodeError) as e:
        raise usage.UsageError(f"--{option} {path}: cannot read it: {getattr(e, 'strerror', None) or e}")
    if not token:
        raise usage.UsageError(f"--{option} {path}: the file is empty; put {what} in it")
    if any(c.isspace() for c in token) or not token.isprintable():
        raise usage.UsageError(f"--{option} {path}: the token must be one line without spaces")
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warn("--{option} {path}: others may read this file (mode {mode:04o}); chmod 600 it",
                 option=option, path=path, mode=stat.S_IMODE(mode))
    return token


LISTEN_BACKLOG = 1024


def with_backlog(endpoint: str, backlog: int = LISTEN_BACKLOG) -> str:
    """
    A TCP server endpoint with a listen backlog fit for thousands of CPs
    connecting at once (Twisted's default, 50, drops their handshakes in a
    reconnect storm), unless the endpoint string sets its own.
    """
    if endpoint.startswith(("tcp:", "tcp6:")) and "backlog=" not in endpoint:
        return f"{endpoint}:backlog={backlog}"
    return endpoint


#: Central's garbage-collector thresholds (Python's are 700, 10, 10).  At
#: N = 10,000 CPs Central holds ≈ 400,000 objects the cyclic collector tracks
#: (per CP: its link, transport, decoder, machines, trust session, key,
#: sealer, opener...).  With Python's thresholds a full collection ran about
#: every 10 s under 2,000 charges and held the reactor 90-220 ms each time,
#: which made the tails of REQ, telemetry and fault detection; with these,
#: none ran in a whole load run, young collections took 5-72 ms (one of
#: 140-270 ms, in a reconnect storm of 10,000 or after the run), and p99
#: REQ -> AUTHORIZED fell from 71-94 to 47-59 ms, telemetry from 114-119 to
#: 71-81 ms, fault detection from 260 to 98-132 ms (four runs against two;
#: docs/performance.md, issue 18 §8).  The cost: cyclic
#: garbage (links closed in a reconnect storm) waits longer for its full
#: collection, ≈ 40 MB more after a storm of 10,000.
GC_THRESHOLDS = (50_000, 20, 100)


def tune_gc(collector: Any = gc) -> None:
    """Set Central's process's L{GC_THRESHOLDS} (a twistd process's only, never the tests')."""
    collector.set_threshold(*GC_THRESHOLDS)


def makeService(options: Options) -> service.MultiService:
    from twisted.internet import reactor

    tune_gc()
    try:
        store = Store(options["db_url"])
    except StoreError as e:
        raise SystemExit(f"evcentral: {e}")
    options["audit_key"] = audit_key_of(options, "evcentral")
    return wire(options, store, reactor)


def wire(options: Options, store: Any, reactor: Any) -> CentralService:
    """
    EV_Central's parts and how they connect: the rules, their lifecycle
    service and its children (the listeners, Kafka, the web panel), which
    start once the database is loaded.  A part that cannot start stops the
    process with one line and exit status 1.
    """
    fail = stop_process(reactor, "evcentral")
    kafka = bool(options["kafka"])
    central = Central(
        store, reactor, liveness_interval=options["liveness-interval"], liveness_timeout=options["liveness-timeout"],
        reconcile_timeout=KAFKA_RECONCILE_TIMEOUT if kafka else RECONCILE_TIMEOUT,
        key_rotation=options["key-rotation"], login_failures=int(options["login-failures"]),
        login_window=options["login-window"], weather_stale=options["weather-stale"],
        audit_key=options.get("audit_key"), plug_timeout=options["plug-timeout"],
        driver_auth=options["driver-auth"],
    )
    top = CentralService(central, on_failure=fail)
    link_options = {"max_data": int(options["max-frame"])}
    for option, handler in (("listen", CpLinks(central)), ("drivers", DriverLinks(central))):
        factory = LinkFactory(handler, initiator=False, clock=reactor, **link_options)
        Listener(option, with_backlog(options[option]), factory, reactor, fail, shown=options[option]).setServiceParent(top)
    if kafka:
        from evnet.kafka.bus import KafkaBus

        bus = KafkaBus(options["kafka"], "evcentral", reactor=reactor, prefix=options["kafka-prefix"])
        bus.setServiceParent(top)
        adapter = CentralBus(central, bus, options["kafka-group"])
        adapter.setServiceParent(top)
        central.reach_drivers_by(adapter.channel)
    if options["ocpp"]:
        from evnet.central.ocpp.server import OcppService

        OcppService(central, store, options["ocpp"], reactor, fail, heartbeat=int(options["ocpp-heartbeat"])).setServiceParent(top)
    if options["http"].lower() != "none":
        WebPanel(central, options["http"], reactor, options["admin_token"], on_failure=fail,
                 weather_token=options["weather_token"]).setServiceParent(top)
    return top
