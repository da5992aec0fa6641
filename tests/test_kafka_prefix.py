"""
``--kafka-prefix``: every command with ``--kafka`` puts its topics and
consumer groups under the prefix, so that several networks share one Kafka
cluster.  The option parsing on each tap and CLI (no broker), then two real
networks with the same CP and driver ids on one real broker.
"""

from __future__ import annotations

import os
import re

import pytest
from twisted.application.service import MultiService
from twisted.internet.testing import MemoryReactorClock
from twisted.python import usage

from evnet.central.tap import Options as CentralOptions, wire
from evnet.driver import cli as driver_cli
from evnet.engine import tap as engine_tap
from evnet.kafka.bus import KafkaBus
from evnet.monitor import tap as monitor_tap
from evnet.protocols import messages as m
from evnet.protocols.vocabulary import TOPIC_CP_TELEMETRY, TOPIC_DRIVER_NOTIFICATIONS
from tests.kafkanet import KafkaNetwork
from tests.network import eventually, events
from tests.procs import ProcGroup

KAFKA = os.environ.get("EVNET_TEST_KAFKA")
KAFKA_ARGS = ["--kafka", "127.0.0.1:9092", "--kafka-prefix", "siteA"]


def buses(service):
    """Every KafkaBus in a service tree."""
    if isinstance(service, KafkaBus):
        return [service]
    return [bus for child in service for bus in buses(child)] if isinstance(service, MultiService) else []


def test_central_engine_and_monitor_pass_the_prefix_to_their_bus(tmp_path):
    from tests.fakes import MemoryStore

    central = CentralOptions()
    central.parseOptions(["--http", "none", "--db", "sqlite:unused.db", *KAFKA_ARGS])
    engine = engine_tap.Options()
    engine.parseOptions(["--state-dir", str(tmp_path), "--control", "none", *KAFKA_ARGS])
    monitor = monitor_tap.Options()
    monitor.parseOptions(["--cp-id", "CP1", "--location", "Centro", "--price", "0.3", *KAFKA_ARGS])
    services = [wire(central, MemoryStore(), MemoryReactorClock()), engine_tap.makeService(engine),
                monitor_tap.makeService(monitor)]
    for service in services:
        [bus] = buses(service)
        assert bus.names.prefix == "siteA" and "siteA.cp.events" in bus.topics


def test_without_the_option_the_names_are_todays(tmp_path):
    engine = engine_tap.Options()
    engine.parseOptions(["--state-dir", str(tmp_path), "--control", "none", "--kafka", "127.0.0.1:9092"])
    [bus] = buses(engine_tap.makeService(engine))
    assert bus.names.prefix == "" and "cp.events" in bus.topics


@pytest.mark.parametrize("tap", [CentralOptions, engine_tap.Options])
def test_a_bad_prefix_is_a_usage_error(tap, tmp_path):
    with pytest.raises(usage.UsageError, match="Kafka prefix 'site A'"):
        tap().parseOptions(["--state-dir", str(tmp_path), "--kafka-prefix", "site A"] if tap is engine_tap.Options
                           else ["--kafka-prefix", "site A"])


def test_the_driver_passes_the_prefix_to_its_bus(capsys):
    args = driver_cli.build_parser().parse_args(["--driver-id", "D1", "--list", *KAFKA_ARGS])
    transport = driver_cli.make_transport(MemoryReactorClock(), args, None)
    assert transport.bus.names.prefix == "siteA"
    with pytest.raises(SystemExit):
        driver_cli.build_parser().parse_args(["--driver-id", "D1", "--list", "--kafka", "h:1", "--kafka-prefix", "a b"])
    assert "--kafka-prefix" in capsys.readouterr().err


# -- two networks on one real broker ------------------------------------------------


@pytest.mark.kafka
@pytest.mark.slow
@pytest.mark.skipif(not KAFKA, reason="EVNET_TEST_KAFKA is not set (scripts/services.sh up sets it)")
def test_two_networks_with_different_prefixes_on_one_broker_do_not_see_each_other(procs, tmp_path):
    other = ProcGroup(str(tmp_path / "B"))
    try:
        # The same CP id and the same driver id in both networks: with shared topics, each
        # Central would take the other's telemetry and each driver the other's notifications.
        nets = {"A": KafkaNetwork(procs, KAFKA, http=False), "B": KafkaNetwork(other, KAFKA, http=False)}
        for net in nets.values():
            net.start_central()
            net.add_cp("CP1")
        for net in nets.values():
            net.wait_available(["CP1"])
        targets = {"A": 0.05, "B": 0.08}
        drivers = {name: net.driver("D1", f"CP1 {targets[name]}\n") for name, net in nets.items()}
        for name, net in nets.items():
            assert net.finished(drivers[name], 120) == 0, net.dump()
        sessions = {}
        for name, net in nets.items():
            [ticket] = events(drivers[name], "ticket")
            assert ticket["kwh"] == pytest.approx(targets[name], abs=1e-6), net.dump()
            [row] = eventually(lambda: [r for r in net.sessions() if r["ticket_delivered_at"]], 20,
                               f"network {name}'s ticket marked delivered", net.dump)
            assert row["id"] == ticket["session"] and row["kwh"] == pytest.approx(targets[name], abs=1e-9)
            sessions[name] = row["id"]
            assert "unknown" not in net.central.output(), net.central.output()
        for name, net in nets.items():
            # Sealed under this network's CP1 key (the other network's CP1 has another key).
            telemetry = net.records(TOPIC_CP_TELEMETRY)
            keys = set(re.findall(r"CP CP1 authenticated from \S+: \w+ \(key ([0-9a-f]{8})\)", net.central.output()))
            assert keys and telemetry and {msg.key_id for _, msg in telemetry} <= keys, (telemetry[:3], keys)
            notifications = net.records(TOPIC_DRIVER_NOTIFICATIONS)
            tickets = [msg.session_id for _, msg in notifications if isinstance(msg, m.Ticket)]
            assert tickets == [sessions[name]]
    finally:
        other.stop_all()
