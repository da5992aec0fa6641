"""
tests.network's L{Network} in Kafka mode: Central, every Engine and Monitor
and every driver with ``--kafka BOOTSTRAP --kafka-prefix PREFIX``.  The
prefix is new for each network (unless given), so records and consumer
groups left on a shared broker by other tests or earlier runs never reach
it; several networks can run side by side on one broker or cluster.

Also what the tests read back from Kafka itself: every record of one of the
network's topics (L{KafkaNetwork.records}).
"""

from __future__ import annotations

import json
import secrets
import subprocess

from evnet.protocols import messages as m
from evnet.protocols.vocabulary import Topics
from tests.network import Network, eventually
from tests.procs import BIN, ProcGroup


def available_through_kafka(driver_id: str, kafka_args: list[str], timeout: float = 20) -> list[str]:
    """
    The CPs a Central says are available, asked through Kafka by ``evdriver
    --list`` as C{driver_id} with C{kafka_args} (``--kafka …``); [] if no
    answer within C{timeout} (Central's consumer is not assigned its
    partitions yet).
    """
    try:
        out = subprocess.run(
            [str(BIN / "evdriver"), "--driver-id", driver_id, "--list", "--json", *kafka_args],
            capture_output=True, text=True, timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return []
    assert out.returncode == 0, out.stdout + out.stderr
    return [cp["cp"] for e in map(json.loads, out.stdout.splitlines()) if e["type"] == "available" for cp in e["cps"]]


class KafkaNetwork(Network):
    """A L{Network} whose streams go through the Kafka at C{bootstrap}, under C{prefix}."""

    def __init__(self, procs: ProcGroup, bootstrap: str, prefix: str | None = None, db: str | None = None,
                 http: bool = True):
        super().__init__(procs, db=db, http=http)
        self.bootstrap = bootstrap
        self.prefix = prefix if prefix is not None else f"t{secrets.token_hex(4)}"
        self.names = Topics(self.prefix)
        self.kafka_args = ["--kafka", bootstrap, "--kafka-prefix", self.prefix]
        self.central_args += self.kafka_args
        self.probes = 0

    def start_engine(self, cp_id: str):
        self._with_kafka(self.cps[cp_id].engine_args)
        return super().start_engine(cp_id)

    def start_monitor(self, cp_id: str):
        self._with_kafka(self.cps[cp_id].monitor_args)
        return super().start_monitor(cp_id)

    def _with_kafka(self, args: list[str]) -> None:
        if "--kafka" not in args:
            args += self.kafka_args

    def driver_way(self) -> list[str]:
        return self.kafka_args

    # -- through Kafka -------------------------------------------------------------

    def available(self) -> list[str]:
        """The CPs Central says are available, asked through Kafka ([] if no answer)."""
        self.probes += 1
        return available_through_kafka(f"probe{self.probes}", self.kafka_args)

    def wait_available(self, cps: list[str], timeout: float = 90.0) -> None:
        """Until drivers reach Central through Kafka and it lists C{cps} as available."""
        eventually(lambda: set(cps) <= set(self.available()), timeout, f"CPs {cps} available through Kafka",
                   self.dump, interval=0.5)  # each probe is an evdriver process

    def records(self, topic: str, timeout: float = 20.0) -> list[tuple[str, m.Message]]:
        """
        Every record (key, message) of this network's C{topic} (e.g.
        ``cp.telemetry``), read from the beginning of each partition, in
        partition order.
        """
        from kafka import KafkaConsumer, TopicPartition

        name = self.names.topic(topic)
        consumer = KafkaConsumer(bootstrap_servers=self.bootstrap.split(","), enable_auto_commit=False,
                                 request_timeout_ms=int(timeout * 1000))
        try:
            partitions = [TopicPartition(name, p) for p in sorted(consumer.partitions_for_topic(name) or ())]
            consumer.assign(partitions)
            consumer.seek_to_beginning(*partitions)
            ends = consumer.end_offsets(partitions)
            out: dict[int, list] = {tp.partition: [] for tp in partitions}

            def done() -> bool:
                return all(consumer.position(tp) >= ends[tp] for tp in partitions)

            def poll() -> bool:
                for tp, batch in consumer.poll(timeout_ms=500).items():
                    out[tp.partition] += [(r.key.decode(), m.decode(r.value)) for r in batch]
                return done()

            eventually(poll, timeout, f"every record of {name}")
            return [record for p in sorted(out) for record in out[p]]
        finally:
            consumer.close(autocommit=False)
