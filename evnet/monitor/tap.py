"""``twistd evmonitor``: options and service wiring for EV_CP_M, the Monitor."""

from __future__ import annotations

import functools
import math
import re
import sys

from twisted.application import service
from twisted.python import usage

from evnet.endpoints import Listener, check_server_endpoint, client_endpoint, stop_process
from evnet.monitor.enrollment import DEFAULT_CREDENTIALS_FILE, CredentialSource, default_credentials_file
from evnet.monitor.service import DEFAULT_HEALTH_PERIOD, DEFAULT_HEALTH_TIMEOUT, MonitorService
from evnet.protocols.vocabulary import ID_RULE, MAX_PRICE, kafka_prefix, valid_id
from evnet.registry.checks import MAX_LOCATION

DEFAULT_ENGINE = "tcp:host=127.0.0.1:port=7100"
DEFAULT_CENTRAL = "tcp:host=127.0.0.1:port=7000"
DEFAULT_CONTROL = "none"
BAD_TEXT = re.compile("[#\x00-\x1f]")


def _positive(option: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (value > 0 and math.isfinite(value)):
        raise usage.UsageError(f"--{option} must be a number of seconds above 0, not {text!r}")
    return value


class Options(usage.Options):
    synopsis = (
        "--cp-id ID [--credentials-file F | --registry URL --ca-file F --enrollment-token-file F "
        "--location TEXT --price EUR_PER_KWH] [--engine ENDPOINT] [--central ENDPOINT] [--control ENDPOINT] "
        "[--kafka BOOTSTRAP] [options]"
    )
    longdesc = (
        "EV_CP_M: a charging point's Monitor. It logs the CP in to Central with its credentials "
        "(registering it at EV_Registry first when it has none), seals everything it exchanges "
        "with Central, checks its Engine's health every period (reporting faults as AVR and "
        "recoveries as RCV), sends Central a STATUS at the interval Central gives and relays charges "
        "between them. Addresses are Twisted endpoint strings, e.g. tcp:host=127.0.0.1:port=7000."
    )
    optParameters = [
        ["cp-id", "i", None, "The CP's id (1 to 32 of A-Z a-z 0-9 _ . -)."],
        ["credentials-file", "C", None,
         f"The CP's credentials (JSON, mode 0600). Default: {DEFAULT_CREDENTIALS_FILE} in the working directory."],
        ["registry", "r", None,
         "EV_Registry's URL (https://HOST:PORT): with no credentials file yet, the Monitor registers "
         "the CP there with --enrollment-token-file and keeps the answer in --credentials-file."],
        ["ca-file", None, None,
         "The CA (PEM) that issued the Registry's certificate (or that certificate itself), also used to "
         "verify Central and the Engine when --central/--engine are tls:host=H:port=P endpoints."],
        ["enrollment-token-file", None, None,
         "A file holding the CP's one-time enrollment token (from 'evctl registry enroll CP')."],
        ["location", "L", None, "Where the CP is (free text, no '#'): to register it."],
        ["price", "p", None, "Price in EUR per kWh, e.g. 0.35: to register it (and shown by its Engine)."],
        ["engine", "e", DEFAULT_ENGINE, "Client endpoint of this CP's Engine."],
        ["central", "c", DEFAULT_CENTRAL, "Client endpoint of Central."],
        ["control", None, DEFAULT_CONTROL,
         "Endpoint of the local control command (evctl monitor), e.g. tcp:7102:interface=127.0.0.1; "
         "'none' (the default) for none."],
        ["health-period", None, str(DEFAULT_HEALTH_PERIOD), "Seconds between health checks of the Engine."],
        ["health-timeout", None, str(DEFAULT_HEALTH_TIMEOUT), "Seconds the Engine has to answer a health check."],
        ["kafka", "k", None,
         "Kafka bootstrap servers (host:port[,host:port]): AVR and RCV go to cp.events. "
         "Without it they go on the Central link (STATUS always does)."],
        ["kafka-prefix", None, "", "Prefix of this network's Kafka topics and consumer groups (PREFIX.cp.telemetry...), so that several networks share one cluster; none by default.", kafka_prefix],
    ]
    optFlags = [
        ["stdin", None, "Read commands from stdin even when it is not a terminal."],
    ]

    def postOptions(self) -> None:
        cp_id = self["cp-id"]
        if cp_id is None:
            raise usage.UsageError("--cp-id is required, e.g. --cp-id CP1")
        if not valid_id(cp_id):
            raise usage.UsageError(f"--cp-id {cp_id!r}: use {ID_RULE}")
        location = self["location"]
        if location is not None:
            if not location.strip():
                raise usage.UsageError("--location may not be empty, e.g. --location 'Calle Mayor 1'")
            if BAD_TEXT.search(location):
                raise usage.UsageError("--location may not contain '#' nor control characters")
            if len(location) > MAX_LOCATION:
                raise usage.UsageError(f"--location is too long: the Registry takes at most {MAX_LOCATION} characters")
        if self["price"] is not None:
            try:
                price = float(self["price"])
            except ValueError:
                price = math.nan
            if not (0 <= price <= MAX_PRICE):
                raise usage.UsageError(
                    f"--price must be a number of EUR per kWh from 0 to {MAX_PRICE:g} (the Registry refuses more), "
                    f"not {self['price']!r}"
                )
            self["price"] = price
        if self["credentials-file"] is None:
            self["credentials-file"] = default_credentials_file(cp_id)
        self._check_registry()
        self["health-period"] = _positive("health-period", self["health-period"])
        self["health-timeout"] = _positive("health-timeout", self["health-timeout"])
        self.engine_endpoint = client_endpoint("engine", self["engine"], DEFAULT_ENGINE, ca_file=self["ca-file"])
        self.central_endpoint = client_endpoint("central", self["central"], DEFAULT_CENTRAL, ca_file=self["ca-file"])
        if self["control"].lower() != "none":
            check_server_endpoint("control", self["control"], "tcp:7102:interface=127.0.0.1")
        if self["kafka"] is not None:
            from evnet.kafka.errors import BusError, parse_bootstrap

            try:
                parse_bootstrap(self["kafka"])
            except BusError as e:
                raise usage.UsageError(f"--kafka: {e}") from None

    def _check_registry(self) -> None:
        registry, token = self["registry"], self["enrollment-token-file"]
        if (registry is None) != (token is None):
            raise usage.UsageError(
                "--registry and --enrollment-token-file go together: the Monitor registers the CP at the "
                "Registry with the token"
            )
        if registry is None:
            return
        from evnet.registry.client import RegistryError, check_url

        try:
            self["registry"] = check_url(registry)
        except RegistryError as e:
            raise usage.UsageError(f"--registry: {e}") from None
        if self["ca-file"] is not None:
            from evnet.tls import TlsError, trust_root

            try:
                trust_root(self["ca-file"])
            except TlsError as e:
                raise usage.UsageError(str(e)) from None


def makeService(options: Options) -> service.MultiService:
    from twisted.internet import reactor

    from evnet.linecontrol import ConsoleService, ControlFactory
    from evnet.monitor.control import BANNER

    bus = None
    if options["kafka"] is not None:
        from evnet.kafka.bus import KafkaBus

        bus = KafkaBus(options["kafka"], f"evmonitor-{options['cp-id']}", reactor=reactor, prefix=options["kafka-prefix"])
    register = None
    if options["registry"] is not None:
        from evnet.registry import client

        register = functools.partial(client.register, reactor, options["registry"], options["ca-file"])
    fail = stop_process(reactor, "evmonitor")
    credentials = CredentialSource(
        options["credentials-file"],
        options["cp-id"],
        reactor,
        registry=options["registry"],
        token_file=options["enrollment-token-file"],
        location=options["location"],
        price=options["price"],
        register=register,
    )
    monitor = MonitorService(
        options["cp-id"],
        options["location"],
        options["price"],
        options.engine_endpoint,
        options.central_endpoint,
        reactor,
        credentials=credentials,
        engine_name=options["engine"],
        central_name=options["central"],
        health_period=options["health-period"],
        health_timeout=options["health-timeout"],
        bus=bus,
        on_failure=fail,
    )
    if bus is not None:
        # A child of the Monitor: started and stopped (flushing what waits) with it.
        bus.setServiceParent(monitor)
    if options["control"].lower() != "none":
        Listener("control", options["control"], ControlFactory(monitor.command), reactor, fail).setServiceParent(monitor)
    if options["stdin"] or (sys.stdin is not None and sys.stdin.isatty()):
        ConsoleService(monitor.command, fail, BANNER).setServiceParent(monitor)
    return monitor
