"""
The Kafka bus: kafka-python wrapped for Twisted.

kafka-python blocks, and its clients are not thread-safe.  So every client
lives in a one-thread ``ThreadPool`` owned by a service, is created inside
that thread and is only ever touched there; results come back to the
reactor through ``deferToThreadPool`` (never the reactor's shared
``deferToThread`` pool) and ``reactor.callFromThread``.

- :class:`KafkaBus` (a ``MultiService``) owns one producer (a child
  service) and the consumers made by :meth:`KafkaBus.subscribe` and
  :meth:`KafkaBus.subscribe_key` (child services too).
- The producer side keeps every accepted message until the broker
  acknowledged it: while Kafka is unreachable, messages wait in a bounded
  buffer and go out when it is back; when the buffer is full,
  :meth:`KafkaBus.publish` fails at once with :class:`BusFull`.
- A consumer polls on the injected clock, one poll in flight at a time,
  hands each record to its handler on the reactor thread, and commits the
  offsets only after every record of the batch was handled (at-least-once).

Record values are the frame DATA of :mod:`evnet.protocols.messages`
(``CODE#field…``), keys are the ids in UTF-8.  ``docs/kafka.md`` describes
the topics, keys and guarantees.
"""

from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Optional

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka import errors as kafka_errors
from kafka.partitioner.default import murmur2
from kafka.structs import OffsetAndMetadata, TopicPartition
from twisted.application import service
from twisted.application.internet import backoffPolicy
from twisted.internet import defer
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from evnet.kafka.errors import BusError, BusFull, parse_bootstrap  # noqa: F401 (re-exported)
from evnet.protocols import messages as m
from evnet.protocols.vocabulary import TOPICS

Handler = Callable[[str, str, m.Message], Any]


def partition_for_key(key: str, partitions: int) -> int:
    """
    The index (among the topic's sorted partitions) that kafka-python's
    default partitioner picks for C{key}: murmur2, as the Java client.
    """
    return (murmur2(key.encode("utf-8")) & 0x7FFFFFFF) % partitions


def _retriable(exc: BaseException) -> bool:
    """Kafka unreachable or busy: worth trying again later."""
    return isinstance(exc, kafka_errors.KafkaError) and bool(getattr(exc, "retriable", False))


def _reason(exc: Any) -> str:
    if isinstance(exc, Failure):
        exc = exc.value
    text = str(exc) or type(exc).__name__
    return text


@dataclass
class _Pending:
    """A message accepted by publish() and not yet acknowledged by Kafka."""

    seq: int
    topic: str
    key: bytes
    value: bytes
    deferred: defer.Deferred


def _bounded(clock, d: defer.Deferred, seconds: float) -> defer.Deferred:
    """Fires when C{d} fires or after C{seconds}, whichever first; C{d} is left alone."""
    done = defer.Deferred()
    call = clock.callLater(seconds, lambda: done.called or done.callback(None))

    def fired(result):
        if call.active():
            call.cancel()
        if not done.called:
            done.callback(None)
        return result

    d.addBoth(fired)
    return done


class KafkaBus(service.MultiService):
    """
    One process's link to Kafka: a producer and any number of consumers.

    C{bootstrap} is ``host:port[,host:port…]``.  C{topics} (name ->
    partitions, default L{TOPICS}) are created at start when missing, with
    C{replication_factor} replicas (C{create_topics=False} leaves that to the
    cluster's administrators).  The factories (default: kafka-python's
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
        replication_factor: int = 1,
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
        self.topics = dict(TOPICS if topics is None else topics)
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
        self._topics_ok = not create_topics
        self._topics_waiting: list[defer.Deferred] = []
        self._consumer_ids = itertools.count(1)
        self.producer = _ProducerService(self)
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
        return self.producer.publish(topic, key.encode("utf-8"), msg.to_data())

    @property
    def pending(self) -> int:
        """Messages accepted and not yet acknowledged by Kafka."""
        return self.producer.pending

    def subscribe(
        self, topics: list[str], group_id: str, handler: Handler, *, offset_reset: str = "earliest"
    ) -> "Consumer":
        """
        Consume C{topics} in consumer group C{group_id}: C{handler(topic, key,
        msg)} is called on the reactor thread for each record, in partition
        order, and may return a Deferred; offsets are committed once every
        record of a batch was handled.  A new group starts at
        C{offset_reset} (``earliest``: nothing published before the first
        start is missed).
        """
        consumer = Consumer(self, list(topics), group_id, handler, offset_reset=offset_reset)
        consumer.setServiceParent(self)
        return consumer

    def subscribe_key(self, topic: str, key: str, handler: Handler, group_id: str) -> "Consumer":
        """
        Consume only the records of C{topic} with C{key}: the consumer is
        assigned the one partition the key hashes to (as the producer's
        partitioner does) and skips other keys.  Offsets are committed in
        C{group_id}, so a restart resumes where it left off; the first start
        begins at the end of the partition.
        """
        consumer = Consumer(self, [topic], group_id, handler, key=key, offset_reset="latest")
        consumer.setServiceParent(self)
        return consumer

    def topics_ready(self) -> defer.Deferred:
        """Fires once the topics exist (created when missing)."""
        if self._topics_ok:
            return defer.succeed(None)
        d = defer.Deferred()
        self._topics_waiting.append(d)
        return d

    def partition_counts(self, topics: Iterable[str]) -> defer.Deferred:
        """Fires with {topic: partitions} as the cluster reports them (0: missing)."""
        return self.producer.run(self._partition_counts_blocking, list(topics))

    # -- shared by the producer and the consumers --------------------------------

    def client_config(self) -> dict[str, Any]:
        timeout_ms = int(self.connect_timeout * 1000)
        return {
            "bootstrap_servers": list(self.servers),
            "client_id": self.client_id,
            "bootstrap_timeout_ms": timeout_ms,
        }

    def make_pool(self, role: str) -> Any:
        return self.pool_factory(f"evnet-kafka-{self.client_id}-{role}")

    def unreachable(self, reason: Any) -> None:
        """A client could not reach Kafka: said once per outage."""
        if not self._outage:
            self._outage = True
            self.log.warn(
                "cannot reach Kafka at {where}; retrying ({reason})",
                where=self.bootstrap,
                reason=_reason(reason),
            )

    def reachable(self) -> None:
        """A client talked to Kafka."""
        if self._outage or not self._ever_connected:
            self._outage = False
            self._ever_connected = True
            self.log.info("connected to Kafka at {where}", where=self.bootstrap)

    def topics_created(self, created: list[str]) -> None:
        if self._topics_ok:
            return
        if created:
            self.log.info(
                "created Kafka topics {topics}",
                topics=", ".join(f"{t} ({self.topics[t]} partitions)" for t in created),
            )
        self._topics_ok = True
        waiting, self._topics_waiting = self._topics_waiting, []
        for d in waiting:
            if not d.called:  # a consumer stopped meanwhile fires its own
                d.callback(None)

    # -- blocking work (in the producer's thread) --------------------------------

    def ensure_topics_blocking(self) -> list[str]:
        """Create the missing topics; the names created (an admin client, closed after)."""
        admin = self.admin_factory(**self.client_config())
        try:
            existing = set(admin.list_topics())
            missing = [t for t in self.topics if t not in existing]
            if missing:
                result = admin.create_topics(
                    {
                        t: {
                            "num_partitions": self.topics[t],
                            "replication_factor": self.replication_factor,
                        }
                        for t in missing
                    },
                    raise_errors=False,
                )
                for topic in result.get("topics", []):
                    code = topic.get("error_code", 0)
                    if code not in (0, kafka_errors.TopicAlreadyExistsError.errno):
                        raise BusError(
                            f"Kafka at {self.bootstrap} refused to create topic "
                            f"{topic.get('name')}: {topic.get('error_message') or code}"
                        )
                admin.wait_for_topics(missing, timeout_ms=int(self.connect_timeout * 1000))
            return missing
        finally:
            admin.close()

    def _partition_counts_blocking(self, topics: list[str]) -> dict[str, int]:
        admin = self.admin_factory(**self.client_config())
        try:
            found = {t["name"]: len(t.get("partitions") or ()) for t in admin.describe_topics(topics)
                     if not t.get("error_code")}
            return {t: found.get(t, 0) for t in topics}
        finally:
            admin.close()


class _ProducerService(service.Service):
    """
    The bus's producer: one KafkaProducer in a one-thread pool, created there
    (and the topics ensured first) at start, retried with backoff while
    Kafka is unreachable.  Keeps each message until Kafka acknowledged it.
    """

    log = Logger()

    def __init__(self, bus: KafkaBus) -> None:
        self.bus = bus
        self.name = "kafka-producer"
        self.pool = bus.make_pool("producer")
        self.queue: deque[_Pending] = deque()  # accepted, not yet handed to the client
        self.inflight = 0  # handed to the client, not yet acknowledged
        self.connected = False
        self._client: Any = None  # touched only in the pool's thread
        self._seq = itertools.count()
        self._attempt = 0
        self._retry = None
        self._connecting = False
        self._sending = False

    @property
    def pending(self) -> int:
        return len(self.queue) + self.inflight

    def run(self, fn: Callable[..., Any], *args: Any) -> defer.Deferred:
        """C{fn(*args)} in this producer's thread."""
        return deferToThreadPool(self.bus.reactor, self.pool, fn, *args)

    def startService(self) -> None:
        super().startService()
        self.pool.start()
        self._pump()

    def publish(self, topic: str, key: bytes, value: bytes) -> defer.Deferred:
        if not self.running:
            return defer.fail(BusError("the Kafka bus is not running"))
        if topic not in self.bus.topics:
            return defer.fail(
                BusError(f"unknown Kafka topic {topic!r}; known: {', '.join(self.bus.topics)}")
            )
        if self.pending >= self.bus.max_pending:
            return defer.fail(
                BusFull(
                    f"{self.pending} messages are already waiting for Kafka at "
                    f"{self.bus.bootstrap}; refusing a new {topic} message"
                )
            )
        d = defer.Deferred()
        self.queue.append(_Pending(next(self._seq), topic, key, value, d))
        self._pump()
        return d

    # -- the state machine: connect, then send what waits -------------------------

    def _pump(self) -> None:
        if not self.running or self._retry is not None or self._connecting or self._sending:
            return
        if not self.connected:
            self._connect()
        elif self.queue:
            batch = list(self.queue)
            self.queue.clear()
            self.inflight += len(batch)
            self._sending = True
            d = self.run(self._send_blocking, batch)
            d.addBoth(self._sent, batch)

    def _connect(self) -> None:
        self._connecting = True

        def open_blocking():
            if not self.bus._topics_ok:
                created = self.bus.ensure_topics_blocking()
                self.bus.reactor.callFromThread(self.bus.topics_created, created)
            if self._client is None:
                self._client = self.bus.producer_factory(**self._config())

        d = self.run(open_blocking)
        d.addCallbacks(self._opened, self._open_failed)
        d.addErrback(self.log.failure, "Kafka producer: unexpected error")

    def _config(self) -> dict[str, Any]:
        config = self.bus.client_config()
        config.update(
            acks="all",
            retries=2147483647,
            enable_idempotence=True,  # retries keep the order of each partition
            max_block_ms=int(self.bus.connect_timeout * 1000),
            linger_ms=5,
            request_timeout_ms=10000,
            delivery_timeout_ms=30000,
            allow_auto_create_topics=False,
        )
        return config

    def _opened(self, _: None) -> None:
        self._connecting = False
        self.connected = True
        self._attempt = 0
        self.bus.reachable()
        self._pump()

    def _open_failed(self, failure: Failure) -> None:
        self._connecting = False
        self._unreachable(failure)

    def _unreachable(self, reason: Any) -> None:
        self.bus.unreachable(reason)
        if self.running and self._retry is None:
            delay = self.bus.backoff(self._attempt)
            self._attempt += 1
            self._retry = self.bus.clock.callLater(delay, self._retry_now)

    def _retry_now(self) -> None:
        self._retry = None
        self._pump()

    # -- sending -------------------------------------------------------------

    def _send_blocking(self, batch: list[_Pending]) -> tuple[int, Optional[BaseException]]:
        """In the thread: hand the batch to the client; (how many were handed, error)."""
        call = self.bus.reactor.callFromThread
        for i, item in enumerate(batch):
            try:
                future = self._client.send(item.topic, value=item.value, key=item.key)
            except Exception as e:
                return i, e
            future.add_callback(lambda _md, item=item: call(self._acked, item))
            future.add_errback(lambda exc, item=item: call(self._failed, item, exc))
        return len(batch), None

    def _sent(self, result: Any, batch: list[_Pending]) -> None:
        self._sending = False
        if isinstance(result, Failure):
            handed, error = 0, result.value
        else:
            handed, error = result
        rest = batch[handed:]
        self.inflight -= len(rest)
        if error is not None:
            if _retriable(error):
                self._requeue(rest)
                self._unreachable(error)
            else:
                first, rest = rest[0], rest[1:]
                self._requeue(rest)
                first.deferred.errback(self._refused(first, error))
        self._pump()

    def _refused(self, item: _Pending, error: Any) -> BusError:
        return BusError(
            f"Kafka at {self.bus.bootstrap} did not take the {item.topic} message: {_reason(error)}"
        )

    def _requeue(self, items: list[_Pending]) -> None:
        if not self.running:
            for item in items:
                item.deferred.errback(
                    BusError(f"not sent: the bus stopped while Kafka at {self.bus.bootstrap} was unreachable")
                )
        elif items:
            self.queue = deque(sorted([*items, *self.queue], key=lambda p: p.seq))

    def _acked(self, item: _Pending) -> None:
        self.inflight -= 1
        self._attempt = 0
        self.bus.reachable()
        item.deferred.callback(None)

    def _failed(self, item: _Pending, error: BaseException) -> None:
        self.inflight -= 1
        if _retriable(error):
            # Kafka went away after the message was handed over: keep it and
            # send it again (a consumer may see it twice: at-least-once).
            self._requeue([item])
            self._unreachable(error)
        else:
            item.deferred.errback(self._refused(item, error))

    # -- stopping --------------------------------------------------------------

    def stopService(self) -> defer.Deferred:
        super().stopService()
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        batch = list(self.queue) if self.connected else []
        unsent = [] if self.connected else list(self.queue)
        self.queue.clear()
        if unsent:
            self.log.warn(
                "{count} messages were not sent: Kafka at {where} was unreachable until the end",
                count=len(unsent),
                where=self.bus.bootstrap,
            )
            for item in unsent:
                item.deferred.errback(
                    BusError(f"not sent: Kafka at {self.bus.bootstrap} was unreachable until the bus stopped")
                )
        if batch:
            self.inflight += len(batch)
            self.run(self._send_blocking, batch).addBoth(self._sent, batch)
        d = self.run(self._close_blocking)
        d.addErrback(self.log.failure, "Kafka producer: error while closing")
        d.addBoth(lambda _: self.pool.stop())
        return d

    def _close_blocking(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                client.flush(timeout=self.bus.flush_timeout)
            finally:
                client.close(timeout=self.bus.flush_timeout)


class Consumer(service.Service):
    """
    One KafkaConsumer in a one-thread pool (it is not thread-safe), created
    there; a poll loop on the bus's clock, one poll in flight at a time.
    L{ready} fires once the consumer exists (and, for one key, is positioned).
    """

    log = Logger()

    def __init__(
        self,
        bus: KafkaBus,
        topics: list[str],
        group_id: str,
        handler: Handler,
        *,
        key: Optional[str] = None,
        offset_reset: str = "earliest",
    ) -> None:
        self.bus = bus
        self.topics = topics
        self.group_id = group_id
        self.handler = handler
        self.key = key
        self.key_bytes = None if key is None else key.encode("utf-8")
        self.offset_reset = offset_reset
        number = next(bus._consumer_ids)
        self.name = f"kafka-consumer-{number}"
        self.pool = bus.make_pool(f"consumer-{number}")
        self.ready = defer.Deferred()
        self.opened = False
        self.handled = 0
        self._client: Any = None  # touched only in the pool's thread
        self.committed: dict[tuple[str, int], int] = {}  # (topic, partition) -> next offset
        self._uncommitted: dict[tuple[str, int], int] = {}
        self._call = None
        self._busy: Optional[defer.Deferred] = None
        self._waiting: Optional[defer.Deferred] = None
        self._attempt = 0

    def __repr__(self) -> str:
        what = ",".join(self.topics) + ("" if self.key is None else f" key {self.key}")
        return f"<Consumer {what} group {self.group_id}>"

    def run(self, fn: Callable[..., Any], *args: Any) -> defer.Deferred:
        return deferToThreadPool(self.bus.reactor, self.pool, fn, *args)

    def startService(self) -> None:
        super().startService()
        self.pool.start()
        self._schedule(0)

    def _schedule(self, delay: float) -> None:
        if self.running and self._call is None:
            self._call = self.bus.clock.callLater(delay, self._cycle)

    def _cycle(self) -> None:
        self._call = None
        self._busy = d = self._step()
        d.addErrback(self._crashed)
        d.addCallback(self._schedule)

    def _crashed(self, failure: Failure) -> float:
        self.log.failure("Kafka consumer {consumer}: unexpected error", failure, consumer=self)
        return self._backoff()

    @defer.inlineCallbacks
    def _step(self):
        """One turn of the loop; the delay before the next one."""
        if not self.opened:
            self._waiting = self.bus.topics_ready()
            yield self._waiting
            if not self.running:
                return 0
            try:
                yield self.run(self._open_blocking)
            except Exception as e:
                return self._unreachable(e)
            self.opened = True
            self._attempt = 0
            self.bus.reachable()
            self.ready.callback(self)
        if self._uncommitted:
            ok = yield self._commit()
            if not ok:
                return self._backoff()
        try:
            records = yield self.run(self._poll_blocking)
        except Exception as e:
            return self._unreachable(e)
        if not records:
            return self.bus.poll_interval
        for record in records:
            yield self._handle(*record)
        ok = yield self._commit()  # also when stopping: these records were handled
        return 0 if ok else self._backoff()

    def _unreachable(self, error: Any) -> float:
        self.bus.unreachable(error)
        return self._backoff()

    def _backoff(self) -> float:
        delay = self.bus.backoff(self._attempt)
        self._attempt += 1
        return delay

    def _handle(self, topic: str, partition: int, offset: int, key: Optional[bytes], value: Any):
        self._uncommitted[(topic, partition)] = offset + 1
        self.handled += 1
        if self.key_bytes is not None and key != self.key_bytes:
            return None
        try:
            text_key = "" if key is None else key.decode("utf-8")
            msg = m.decode(value)
        except Exception as e:
            self.log.warn(
                "skipped a record that is not an evnet message: {topic} partition {partition} "
                "offset {offset}: {reason}",
                topic=topic,
                partition=partition,
                offset=offset,
                reason=_reason(e),
            )
            return None
        d = defer.maybeDeferred(self.handler, topic, text_key, msg)
        d.addErrback(
            lambda f: self.log.failure(
                "handler failed on {topic} partition {partition} offset {offset}; record skipped",
                f,
                topic=topic,
                partition=partition,
                offset=offset,
            )
        )
        return d

    @defer.inlineCallbacks
    def _commit(self):
        offsets, self._uncommitted = self._uncommitted, {}
        try:
            yield self.run(self._commit_blocking, offsets)
        except Exception as e:
            # The records will be seen again after a restart (at-least-once).
            for where, offset in offsets.items():
                self._uncommitted[where] = max(offset, self._uncommitted.get(where, 0))
            self.log.warn(
                "Kafka consumer {consumer}: could not commit offsets ({reason}); retrying",
                consumer=self,
                reason=_reason(e),
            )
            return False
        self.committed.update(offsets)
        self._attempt = 0
        return True

    # -- blocking work (in the consumer's thread) --------------------------------

    def _open_blocking(self) -> None:
        config = self.bus.client_config()
        config.update(
            group_id=self.group_id,
            enable_auto_commit=False,
            auto_offset_reset=self.offset_reset,
            allow_auto_create_topics=False,
            max_poll_records=self.bus.max_poll_records,
            # A member that died without leaving (SIGKILL) holds its partitions
            # until this expires: keep it short so a restarted process gets them back.
            session_timeout_ms=int(self.bus.session_timeout * 1000),
            heartbeat_interval_ms=int(self.bus.session_timeout * 1000 / 3),
        )
        client = self.bus.consumer_factory(**config)
        try:
            # Know every topic's partitions before joining the group: a
            # member without them is assigned nothing until the next
            # metadata refresh (minutes), even once the topic exists.
            partitions = {}
            for topic in self.topics:
                partitions[topic] = sorted(client.partitions_for_topic(topic) or ())
                if not partitions[topic]:
                    raise BusError(f"topic {topic} does not exist (yet) on Kafka at {self.bus.bootstrap}")
            if self.key is None:
                client.subscribe(topics=self.topics)
            else:
                topic = self.topics[0]
                mine = partitions[topic][partition_for_key(self.key, len(partitions[topic]))]
                tp = TopicPartition(topic, mine)
                client.assign([tp])
                client.position(tp)  # the committed offset, or the end on a first start
        except BaseException:
            client.close(autocommit=False)
            raise
        self._client = client

    def _poll_blocking(self) -> list[tuple[str, int, int, Optional[bytes], Any]]:
        if self._client is None:
            return []
        batches = self._client.poll(
            timeout_ms=int(self.bus.poll_timeout * 1000), max_records=self.bus.max_poll_records
        )
        return [
            (r.topic, r.partition, r.offset, r.key, r.value)
            for records in batches.values()
            for r in records
        ]

    def _commit_blocking(self, offsets: dict[tuple[str, int], int]) -> None:
        if self._client is None:
            return  # closed after a stop timed out: the records will be seen again
        self._client.commit(
            {TopicPartition(t, p): OffsetAndMetadata(o, "", -1) for (t, p), o in offsets.items()},
            timeout_ms=int(self.bus.connect_timeout * 1000),
        )

    def _close_blocking(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close(autocommit=False)

    # -- stopping --------------------------------------------------------------

    def stopService(self) -> defer.Deferred:
        super().stopService()
        if self._call is not None:
            self._call.cancel()
            self._call = None
        if self._waiting is not None and not self._waiting.called:
            self._waiting.callback(None)  # still waiting for the topics: give up now
        busy = self._busy if self._busy is not None and not self._busy.called else defer.succeed(None)
        d = _bounded(self.bus.clock, busy, self.bus.stop_timeout)
        d.addCallback(lambda _: self.run(self._close_blocking))
        d.addErrback(self.log.failure, "Kafka consumer {consumer}: error while closing", consumer=self)
        d.addBoth(lambda _: self.pool.stop())
        return d
