"""
Kafka replicated: the whole network in Kafka mode on the three-broker KRaft
cluster of scripts/services.sh (``up kafka-cluster``, started here for the
session unless EVNET_TEST_KAFKA_CLUSTER names it already), one broker killed
(SIGKILL, by its PID) in the middle of charges.

The topics are created with replication factor 3 and min.insync.replicas 2,
producers use acks=all: nothing acknowledged is lost with one broker gone,
and Central, the CPs and the drivers carry on without a restart.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from evnet.kafka.consumer import partition_for_key
from evnet.protocols import messages as m
from evnet.protocols.vocabulary import TOPIC_CP_EVENTS, TOPIC_CP_TELEMETRY, TOPICS
from tests.kafkanet import KafkaNetwork
from tests.network import eventually, events

SERVICES = Path(__file__).resolve().parent.parent / "scripts" / "services.sh"

pytestmark = [pytest.mark.kafka, pytest.mark.cluster, pytest.mark.slow]


def services(*args: str, timeout: float) -> str:
    """``bash scripts/services.sh ARGS`` (same EVNET_SERVICES_DIR as the environment); its stdout."""
    out = subprocess.run(["bash", str(SERVICES), *args], capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"services.sh {' '.join(args)} failed:\n{out.stderr[-4000:]}"
    return out.stdout


@pytest.fixture(scope="session")
def kafka_cluster():
    """The cluster's bootstrap servers: started (and stopped at the end) unless already given."""
    given = os.environ.get("EVNET_TEST_KAFKA_CLUSTER")
    if given:
        yield given
        return
    exports = services("up", "kafka-cluster", timeout=600)
    match = re.search(r"EVNET_TEST_KAFKA_CLUSTER=(\S+)", exports)
    assert match, f"services.sh up kafka-cluster printed no EVNET_TEST_KAFKA_CLUSTER:\n{exports}"
    try:
        yield match.group(1)
    finally:
        services("down", "kafka-cluster", timeout=120)


def admin(bootstrap: str):
    from kafka import KafkaAdminClient

    return KafkaAdminClient(bootstrap_servers=bootstrap.split(","), request_timeout_ms=10000)


def describe(bootstrap: str, topic: str) -> dict:
    client = admin(bootstrap)
    try:
        [found] = client.describe_topics([topic])
        return found
    finally:
        client.close()


def topic_configs(bootstrap: str, topic: str) -> dict[str, str]:
    from kafka.admin import ConfigResource, ConfigResourceType

    client = admin(bootstrap)
    try:
        found = client.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
        return {name: entry["value"] for name, entry in found["topic"][topic].items()}
    finally:
        client.close()


def test_one_broker_killed_mid_charge_loses_and_doubles_nothing(procs, kafka_cluster):
    net = KafkaNetwork(procs, kafka_cluster)
    net.start_central()
    for cp in ("CP1", "CP2"):
        net.add_cp(cp)
    net.wait_available(["CP1", "CP2"])

    # Replicated as the cluster allows.
    for topic in TOPICS:
        name = net.names.topic(topic)
        assert {len(p["replica_nodes"]) for p in describe(kafka_cluster, name)["partitions"]} == {3}, name
        assert topic_configs(kafka_cluster, name)["min.insync.replicas"] == "2", name

    # Two charges of 20 s at 36 kW, then one more each once the broker is gone.
    drivers = {d: net.driver(d, f"{cp} 0.2\n{cp} 0.05\n") for d, cp in (("D1", "CP1"), ("D2", "CP2"))}
    for driver in drivers.values():
        driver.wait_for(r'"type": "charging"', timeout=60)

    # Kill the leader of CP1's telemetry partition: its producer, Central's consumer and
    # (maybe) the group coordinator must all move to the other two brokers.
    telemetry = describe(kafka_cluster, net.names.topic(TOPIC_CP_TELEMETRY))
    partitions = sorted(telemetry["partitions"], key=lambda p: p["partition_index"])
    leader = partitions[partition_for_key("CP1", len(partitions))]["leader_id"]
    services("down", f"kafka-broker-{leader}", "--kill", timeout=60)
    try:
        index = partitions[partition_for_key("CP1", len(partitions))]["partition_index"]

        def new_leader():
            from kafka.errors import KafkaError

            try:
                found = describe(kafka_cluster, net.names.topic(TOPIC_CP_TELEMETRY))["partitions"]
            except KafkaError:  # this admin client asked the dead broker: ask again
                return False
            [now] = [p for p in found if p["partition_index"] == index]
            return now["leader_id"] not in (leader, -1) and leader not in now["isr_nodes"]

        eventually(new_leader, 30, f"CP1's telemetry partition led by another broker than {leader}", net.dump,
                   interval=0.5)
        assert not any(events(d, "ticket") for d in drivers.values()), "the broker died after the first charges"
        for d, driver in drivers.items():
            assert net.finished(driver, 180) == 0, net.dump()
            tickets = events(driver, "ticket")
            assert [(t["kwh"], t["reason"]) for t in tickets] == [(pytest.approx(0.2, abs=1e-6), "target"),
                                                                    (pytest.approx(0.05, abs=1e-6), "target")], \
                net.dump()

        # Sessions and tickets: each once in the database, closed, delivered, as the drivers saw them.
        eventually(lambda: all(r["ticket_delivered_at"] for r in net.sessions()), 30,
                   "every ticket marked delivered", net.dump)
        rows = net.check_ledger(charges=4)

        # Telemetry: sealed by the Engines under their CP's key (only Central and the CP hold it, so
        # this test cannot read it), each record in Kafka once (a sealed record's nonce is its own),
        # and Central counted every charge to its end (the ledger above: kWh as in the tickets).
        telemetry = net.records(TOPIC_CP_TELEMETRY)
        assert telemetry and all(isinstance(msg, m.Sec) and msg.role == "E" for _, msg in telemetry), telemetry[:3]
        nonces = [(msg.key_id, msg.nonce) for _, msg in telemetry]
        assert len(nonces) == len(set(nonces)), "a telemetry record is in Kafka twice"
        stops = [msg for _, msg in net.records(TOPIC_CP_EVENTS) if isinstance(msg, m.Sec)]
        assert stops, "no sealed STOP in cp.events"
        for row in rows:
            assert row["last_seq"] > 0, row

        # Nobody was restarted: the first (and only) Central, Engines and Monitors still run.
        assert len(net.centrals) == 1 and net.central.running
        for cp in net.cps.values():
            assert len(cp.engines) == 1 and cp.engine.running and cp.monitor.running
        eventually(lambda: {c["id"]: c["state"] for c in net.evctl("cps")} == {"CP1": "ACTIVADO", "CP2": "ACTIVADO"},
                   20, "both CPs ACTIVADO again", net.dump)
        for proc in procs.procs:
            assert "Traceback" not in proc.output(), proc.output()[-4000:]
            assert "not sent to Kafka" not in proc.output() and "were not sent" not in proc.output()
    finally:
        services("up", f"kafka-broker-{leader}", timeout=180)  # the cluster whole again for what follows
