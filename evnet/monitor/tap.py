"""``twistd evmonitor``: options and service wiring for EV_CP_M, the Monitor."""

from __future__ import annotations

import math
import re

from twisted.application import service
from twisted.python import usage

from evnet.endpoints import client_endpoint
from evnet.monitor.service import DEFAULT_HEALTH_PERIOD, DEFAULT_HEALTH_TIMEOUT, MonitorService
from evnet.protocols import messages as m
from evnet.protocols.framing import DEFAULT_MAX_DATA
from evnet.protocols.vocabulary import ID_RULE, MAX_PRICE, kafka_prefix, valid_id

DEFAULT_ENGINE = "tcp:host=127.0.0.1:port=7100"
DEFAULT_CENTRAL = "tcp:host=127.0.0.1:port=7000"
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
        "--cp-id ID --location TEXT --price EUR_PER_KWH [--engine ENDPOINT] [--central ENDPOINT] "
        "[--kafka BOOTSTRAP] [options]"
    )
    longdesc = (
        "EV_CP_M: a charging point's Monitor. It registers and authenticates the CP with "
        "Central, checks its Engine's health every period (reporting faults as AVR and "
        "recoveries as RCV), sends Central a STATUS every second and relays charges "
        "between them. Addresses are Twisted client endpoint strings, e.g. "
        "tcp:host=127.0.0.1:port=7000."
    )
    optParameters = [
        ["cp-id", "i", None, "The CP's id (1 to 32 of A-Z a-z 0-9 _ . -)."],
        ["location", "L", None, "Where the CP is (free text, no '#')."],
        ["price", "p", None, "Price in EUR per kWh, e.g. 0.35."],
        ["engine", "e", DEFAULT_ENGINE, "Client endpoint of this CP's Engine."],
        ["central", "c", DEFAULT_CENTRAL, "Client endpoint of Central."],
        ["health-period", None, str(DEFAULT_HEALTH_PERIOD), "Seconds between health checks of the Engine."],
        ["health-timeout", None, str(DEFAULT_HEALTH_TIMEOUT), "Seconds the Engine has to answer a health check."],
        ["kafka", "k", None,
         "Kafka bootstrap servers (host:port[,host:port]): AVR and RCV go to cp.events. "
         "Without it they go on the Central link (STATUS always does)."],
        ["kafka-prefix", None, "", "Prefix of this network's Kafka topics and consumer groups (PREFIX.cp.telemetry...), so that several networks share one cluster; none by default.", kafka_prefix],
    ]

    def postOptions(self) -> None:
        cp_id = self["cp-id"]
        if cp_id is None:
            raise usage.UsageError("--cp-id is required, e.g. --cp-id CP1")
        if not valid_id(cp_id):
            raise usage.UsageError(f"--cp-id {cp_id!r}: use {ID_RULE}")
        location = self["location"]
        if location is None or not location.strip():
            raise usage.UsageError("--location is required, e.g. --location 'Calle Mayor 1'")
        if BAD_TEXT.search(location):
            raise usage.UsageError("--location may not contain '#' nor control characters")
        if self["price"] is None:
            raise usage.UsageError("--price is required, in EUR per kWh, e.g. --price 0.35")
        try:
            price = float(self["price"])
        except ValueError:
            price = math.nan
        if not (0 <= price <= MAX_PRICE):
            raise usage.UsageError(
                f"--price must be a number of EUR per kWh from 0 to {MAX_PRICE:g} (Central refuses more), "
                f"not {self['price']!r}"
            )
        self["price"] = price
        size = len(m.Reg(cp_id, location, price).to_data())
        if size > DEFAULT_MAX_DATA:
            raise usage.UsageError(
                f"--location is too long: the registration would take {size} bytes, a frame carries {DEFAULT_MAX_DATA}"
            )
        self["health-period"] = _positive("health-period", self["health-period"])
        self["health-timeout"] = _positive("health-timeout", self["health-timeout"])
        self.engine_endpoint = client_endpoint("engine", self["engine"], DEFAULT_ENGINE)
        self.central_endpoint = client_endpoint("central", self["central"], DEFAULT_CENTRAL)
        if self["kafka"] is not None:
            from evnet.kafka.errors import BusError, parse_bootstrap

            try:
                parse_bootstrap(self["kafka"])
            except BusError as e:
                raise usage.UsageError(f"--kafka: {e}") from None


def makeService(options: Options) -> service.MultiService:
    from twisted.internet import reactor

    bus = None
    if options["kafka"] is not None:
        from evnet.kafka.bus import KafkaBus

        bus = KafkaBus(options["kafka"], f"evmonitor-{options['cp-id']}", reactor=reactor, prefix=options["kafka-prefix"])
    monitor = MonitorService(
        options["cp-id"],
        options["location"],
        options["price"],
        options.engine_endpoint,
        options.central_endpoint,
        reactor,
        engine_name=options["engine"],
        central_name=options["central"],
        health_period=options["health-period"],
        health_timeout=options["health-timeout"],
        bus=bus,
    )
    if bus is not None:
        # A child of the Monitor: started and stopped (flushing what waits) with it.
        bus.setServiceParent(monitor)
    return monitor
