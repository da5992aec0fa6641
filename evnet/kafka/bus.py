"""
The Kafka bus: kafka-python wrapped for Twisted.

kafka-python blocks, and its clients are not thread-safe.  So every client
lives in a one-thread ``ThreadPool`` owned by a service, is created inside
that thread and is only ever touched there; results come back to the
reactor through ``deferToThreadPool`` (never the reactor's shared
``deferToThread`` pool) and ``reactor.callFromThread``.

:class:`KafkaBus` (a ``MultiService``, this module) is what the components
use.  Its child services, one module each:

- :mod:`evnet.kafka.admin`: creates the missing topics at start, reads
  partition counts;
- :mod:`evnet.kafka.producer`: keeps every accepted message until the broker
  acknowledged it, in a bounded buffer while Kafka is unreachable
  (:class:`BusFull` beyond it);
- :mod:`evnet.kafka.consumer`: one per :meth:`KafkaBus.subscribe` or
  :meth:`KafkaBus.subscribe_key`, at-least-once;
- :mod:`evnet.kafka.client`: what those three share (thread, backoff, close).

The bus says once per outage that Kafka cannot be reached, and when it can
again: in the log, and to the functions given to
:meth:`KafkaBus.add_status_observer`.

Record values are the frame DATA of :mod:`evnet.protocols.messages`
(``CODE#field…``), keys are the ids in UTF-8.  ``docs/kafka.md`` describes
the topics, keys and guarantees.
"""

from __future__ import annotations

import itertools
from typing import Any, Callable, Iterable, Optional

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from twisted.application import service
from twisted.application.internet import backoffPolicy
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from evnet.kafka.admin import TopicAdmin
from evnet.kafka.client import reason_text
from evnet.kafka.consumer import Consumer, Handler, partition_for_key
from evnet.kafka.errors import BusError, BusFull, parse_bootstrap
from evnet.kafka.producer import Producer
from evnet.protocols import messages as m
from evnet.protocols.vocabulary import TOPICS, Topics

# Still imported from here by modules outside evnet.kafka (BusError, BusFull:
# evnet.driver.core, tests); new code takes them from evnet.kafka.errors.
__all__ = ["KafkaBus", "Consumer", "partition_for_key", "BusError", "BusFull"]

#: C{observer(up, reason)}: see L{KafkaBus.add_status_observer}.
StatusObserver = Callable[[bool, str], Any]


class KafkaBus(service.MultiService):
    """
    One process's link to Kafka: a producer and any number of consumers.

    C{bootstrap} is ``host:port[,host:port…]``.  C{topics} (name ->
    partitions, default L{TOPICS}) are created at start when missing, with
    C{replication_factor} replicas (default: one on each broker, up to 3,
    with min.insync.replicas 2 from 3 on: L{evnet.kafka.admin};
    C{create_topics=False} leaves that to the cluster's administrators).  C{prefix} puts this network's topics and
    consumer groups under a prefix (L{Topics}) so that several networks share
    one cluster: callers keep naming topics and groups as without one, and
    handlers are given those names.  The factories (default: kafka-python's
    classes, called with keyword configuration) and C{pool_factory} (name ->
    a ``ThreadPool``-like object) are for tests.
    """

    log = Logger()

    def __init__(
        self,
        bootstrap: str,
        client_id: str,
        *,
        reactor=None,
        clock=None,
        max_pending: int = 10000,
        producer_factory: Optional[Callable[..., Any]] = None,
        consumer_factory: Optional[Callable[..., Any]] = None,
        admin_factory: Optional[Callable[..., Any]] = None,
        pool_factory: Optional[Callable[[str], Any]] = None,
        topics: Optional[dict[str, int]] = None,
        prefix: str = "",
        replication_factor: Optional[int] = None,
        create_topics: bool = True,
        backoff: Optional[Callable[[int], float]] = None,
        connect_timeout: float = 10.0,
        flush_timeout: float = 10.0,
        stop_timeout: float = 10.0,
        poll_timeout: float = 0.5,
        poll_interval: float = 0.1,
        max_poll_records: int = 500,
        session_timeout: float = 10.0,
    ) -> None:
        super().__init__()
        if reactor is None:
            from twisted.internet import reactor as _reactor

            reactor = _reactor
        self.servers = parse_bootstrap(bootstrap)
        self.bootstrap = ",".join(self.servers)
        self.client_id = client_id
        self.reactor = reactor
        self.clock = clock if clock is not None else reactor
        self.max_pending = max_pending
        self.producer_factory = producer_factory or KafkaProducer
        self.consumer_factory = consumer_factory or KafkaConsumer
        self.admin_factory = admin_factory or KafkaAdminClient
        self.pool_factory = pool_factory or (lambda name: ThreadPool(1, 1, name=name))
        try:
            self.names = Topics(prefix)
        except ValueError as e:
            raise BusError(str(e)) from None
        #: Kafka's names of the topics (under the prefix) -> partitions.
        self.topics = {self.names.topic(t): n for t, n in (TOPICS if topics is None else topics).items()}
        self.replication_factor = replication_factor
        self.create_topics = create_topics
        self.backoff = backoff or backoffPolicy(initialDelay=0.5, maxDelay=10.0, factor=2.0)
        self.connect_timeout = connect_timeout
        self.flush_timeout = flush_timeout
        self.stop_timeout = stop_timeout
        self.poll_timeout = poll_timeout
        self.poll_interval = poll_interval
        self.max_poll_records = max_poll_records
        self.session_timeout = session_timeout
        self._outage = False
        self._ever_connected = False
        self._status_observers: list[StatusObserver] = []
        self._consumer_ids = itertools.count(1)
        self.admin = TopicAdmin(self)
        self.admin.setServiceParent(self)
        self.producer = Producer(self)
        self.producer.setServiceParent(self)

    # -- the API ---------------------------------------------------------------

    def publish(self, topic: str, key: str, msg: m.Message) -> defer.Deferred:
        """
        Send C{msg} (value: its frame DATA) with C{key} to C{topic}.  Fires
        with None once Kafka acknowledged it (acks=all); fails with
        L{BusError} when Kafka refused it, and at once with L{BusFull} when
        C{max_pending} messages are already waiting.  While Kafka is
        unreachable the message waits and goes out when it is back.
        """
        return self.producer.publish(self.names.topic(topic), key.encode("utf-8"), msg.to_data())

    @property
    def pending(self) -> int:
        """Messages accepted and not yet acknowledged by Kafka."""
        return self.producer.pending

    def subscribe(
        self, topics: list[str], group_id: str, handler: Handler, *, offset_reset: str = "earliest"
    ) -> Consumer:
        """
        Consume C{topics} in consumer group C{group_id}: C{handler(topic, key,
        msg)} is called on the reactor thread for each record, in partition
        order, and may return a Deferred; offsets are committed once every
        record of a batch was handled.  A new group starts at
        C{offset_reset} (``earliest``: nothing published before the first
        start is missed).
        """
        return self._consumer(list(topics), group_id, handler, offset_reset=offset_reset)

    def subscribe_key(self, topic: str, key: str, handler: Handler, group_id: str) -> Consumer:
        """
        Consume only the records of C{topic} with C{key}: the consumer is
        assigned the one partition the key hashes to (as the producer's
        partitioner does) and skips other keys.  Offsets are committed in
        C{group_id}, so a restart resumes where it left off; the first start
        begins at the end of the partition.
        """
        return self._consumer([topic], group_id, handler, key=key, offset_reset="latest")

    def _consumer(self, topics: list[str], group_id: str, handler: Handler, **kw: Any) -> Consumer:
        names = self.names

        def handle(topic: str, key: str, msg: m.Message) -> Any:
            return handler(names.name(topic), key, msg)

        consumer = Consumer(
            self, next(self._consumer_ids), [names.topic(t) for t in topics], names.group(group_id), handle, **kw
        )
        consumer.setServiceParent(self)
        return consumer

    def topics_ready(self) -> defer.Deferred:
        """Fires once the topics exist (created when missing)."""
        return self.admin.topics_ready()

    def partition_counts(self, topics: Iterable[str]) -> defer.Deferred:
        """Fires with {topic: partitions} as the cluster reports them (0: missing)."""
        names = self.names
        d = self.admin.partition_counts([names.topic(t) for t in topics])
        return d.addCallback(lambda counts: {names.name(t): n for t, n in counts.items()})

    def add_status_observer(self, observer: StatusObserver) -> None:
        """
        Call C{observer(False, reason)} when Kafka becomes unreachable (once
        per outage, not once per retry; C{reason} says why, as in the log
        line) and C{observer(True, "")} when it is reachable again (not on a
        first connection that just worked); on the reactor thread, for the
        changes after it was added.  An observer that raises is logged; the
        others are still told.
        """
        self._status_observers.append(observer)

    # -- shared with the clients -------------------------------------------------

    def client_config(self) -> dict[str, Any]:
        timeout_ms = int(self.connect_timeout * 1000)
        return {
            "bootstrap_servers": list(self.servers),
            "client_id": self.client_id,
            "bootstrap_timeout_ms": timeout_ms,
        }

    def make_pool(self, role: str) -> Any:
        return self.pool_factory(f"evnet-kafka-{self.client_id}-{role}")

    # What the clients report; to hear of it, use add_status_observer (not a subclass).

    def unreachable(self, reason: Any) -> None:
        """A client could not reach Kafka: said once per outage."""
        if not self._outage:
            self._outage = True
            text = reason_text(reason)
            self.log.warn("cannot reach Kafka at {where}; retrying ({reason})", where=self.bootstrap, reason=text)
            self._tell(False, text)

    def reachable(self) -> None:
        """A client talked to Kafka."""
        if self._outage or not self._ever_connected:
            was_out = self._outage
            self._outage = False
            self._ever_connected = True
            self.log.info("connected to Kafka at {where}", where=self.bootstrap)
            if was_out:
                self._tell(True, "")

    def _tell(self, up: bool, reason: str) -> None:
        for observer in list(self._status_observers):
            try:
                observer(up, reason)
            except Exception:
                self.log.failure("Kafka status observer {observer!r} failed", observer=observer)
