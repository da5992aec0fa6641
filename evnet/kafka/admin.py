"""
The bus's administration of topics: creating the missing ones at start and
reading partition counts, with a ``KafkaAdminClient`` made for each task in
this service's own thread and closed after it.

The topics it creates are replicated as the cluster allows: on each broker
up to 3 (L{replication_for}), with ``min.insync.replicas`` 2 from 3 replicas
on (L{min_insync_for}); the producer's acks=all then means "on two brokers".
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Iterable, TypeVar

from kafka import errors as kafka_errors
from twisted.internet import defer
from twisted.logger import Logger

from evnet.kafka.client import ClientService
from evnet.kafka.errors import BusError

if TYPE_CHECKING:
    from evnet.kafka.bus import KafkaBus

T = TypeVar("T")


#: The replication factor of the topics the bus creates on a cluster of 3 brokers or more.
FULL_REPLICATION = 3


def replication_for(brokers: int) -> int:
    """The replication factor for a cluster of C{brokers}: each, up to L{FULL_REPLICATION}."""
    return max(1, min(FULL_REPLICATION, brokers))


def min_insync_for(replicas: int) -> int:
    """
    ``min.insync.replicas`` for C{replicas}: 2 from 3 replicas on (with
    acks=all a record is on two brokers before it counts, and one broker may
    be down), else 1 (with 2 replicas, 2 would stop every write while one
    broker is down).
    """
    return 2 if replicas >= 3 else 1


class TopicAdmin(ClientService):
    """
    The bus's topics (name -> partitions in C{bus.topics}).  L{topics_ready}
    fires once they exist: at once when the bus does not create topics,
    else after L{ensure_topics} succeeded (the producer calls it before it
    connects, and again on each retry until it works).
    """

    log = Logger()
    what = "admin"

    def __init__(self, bus: "KafkaBus") -> None:
        super().__init__(bus, "admin")
        self.name = "kafka-admin"
        self.ready = not bus.create_topics
        self._waiting: list[defer.Deferred] = []

    def topics_ready(self) -> defer.Deferred:
        """Fires once the topics exist (created when missing)."""
        if self.ready:
            return defer.succeed(None)
        d = defer.Deferred()
        self._waiting.append(d)
        return d

    def ensure_topics(self) -> defer.Deferred:
        """
        Create the missing topics (when not done yet): fires once they exist,
        fails when Kafka could not be reached or refused one.
        """
        if self.ready:
            return defer.succeed(None)
        return self.run(self._with_client, self._create_missing).addCallback(self._created)

    def partition_counts(self, topics: Iterable[str]) -> defer.Deferred:
        """Fires with {topic: partitions} as the cluster reports them (0: missing)."""
        return self.run(self._with_client, self._count_partitions, list(topics))

    def _created(self, result: tuple[list[str], int, int]) -> None:
        if self.ready:
            return
        created, replicas, min_insync = result
        if created:
            self.log.info(
                "created Kafka topics {topics}: replication factor {replicas}, min.insync.replicas {min_insync}",
                topics=", ".join(f"{t} ({self.bus.topics[t]} partitions)" for t in created),
                replicas=replicas,
                min_insync=min_insync,
            )
        self.ready = True
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            if not d.called:  # a consumer stopped meanwhile fires its own
                d.callback(None)

    def stopService(self) -> defer.Deferred:
        super().stopService()
        return self.close(lambda client: None)  # no client between tasks: wait for the one running

    # -- blocking work (in the admin's thread) -----------------------------------

    def _with_client(self, work: Callable[..., T], *args: Any) -> T:
        client = self.bus.admin_factory(**self.bus.client_config())
        try:
            return work(client, *args)
        finally:
            client.close()

    def _create_missing(self, client: Any) -> tuple[list[str], int, int]:
        """The names of the topics created, their replication factor and min.insync.replicas."""
        topics = self.bus.topics
        existing = set(client.list_topics())
        missing = [t for t in topics if t not in existing]
        if not missing:
            return missing, 0, 0
        replicas = self.bus.replication_factor
        if replicas is None:
            replicas = replication_for(len(client.describe_cluster().get("brokers") or ()))
        min_insync = min_insync_for(replicas)
        spec = {"replication_factor": replicas, "configs": {"min.insync.replicas": str(min_insync)}}
        result = client.create_topics({t: {"num_partitions": topics[t], **spec} for t in missing}, raise_errors=False)
        for topic in result.get("topics", []):
            code = topic.get("error_code", 0)
            if code not in (0, kafka_errors.TopicAlreadyExistsError.errno):
                raise BusError(
                    f"Kafka at {self.bus.bootstrap} refused to create topic "
                    f"{topic.get('name')}: {topic.get('error_message') or code}"
                )
        client.wait_for_topics(missing, timeout_ms=int(self.bus.connect_timeout * 1000))
        return missing, replicas, min_insync

    @staticmethod
    def _count_partitions(client: Any, topics: list[str]) -> dict[str, int]:
        found = {
            t["name"]: len(t.get("partitions") or ())
            for t in client.describe_topics(topics)
            if not t.get("error_code")
        }
        return {t: found.get(t, 0) for t in topics}
