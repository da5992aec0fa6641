"""
A bus consumer: one ``KafkaConsumer`` in its own thread (it is not
thread-safe), made there once the topics exist; a poll loop on the bus's
clock, one poll in flight at a time; each record handed to the handler on
the reactor thread, in partition order; offsets committed only after every
record of the batch was handled (at-least-once).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Optional

from kafka.partitioner.default import murmur2
from kafka.structs import OffsetAndMetadata, TopicPartition
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from evnet.kafka.client import ClientService, reason_text
from evnet.kafka.errors import BusError
from evnet.protocols import messages as m

if TYPE_CHECKING:
    from evnet.kafka.bus import KafkaBus

Handler = Callable[[str, str, m.Message], Any]


def partition_for_key(key: str, partitions: int) -> int:
    """
    The index (among the topic's sorted partitions) that kafka-python's
    default partitioner picks for C{key}: murmur2, as the Java client.
    """
    return (murmur2(key.encode("utf-8")) & 0x7FFFFFFF) % partitions


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


class Consumer(ClientService):
    """
    C{topics} in consumer group C{group_id}, or with C{key} only the records
    of that key on the one partition it hashes to.  L{ready} fires once the
    client exists (and, for one key, is positioned); L{committed} holds the
    next offset committed per (topic, partition).
    """

    log = Logger()

    def __init__(
        self,
        bus: "KafkaBus",
        number: int,
        topics: list[str],
        group_id: str,
        handler: Handler,
        *,
        key: Optional[str] = None,
        offset_reset: str = "earliest",
    ) -> None:
        super().__init__(bus, f"consumer-{number}")
        self.name = f"kafka-consumer-{number}"
        self.topics = topics
        self.group_id = group_id
        self.handler = handler
        self.key = key
        self.key_bytes = None if key is None else key.encode("utf-8")
        self.offset_reset = offset_reset
        self.what = f"consumer {self!r}"
        self.ready = defer.Deferred()
        self.opened = False
        self.committed: dict[tuple[str, int], int] = {}  # (topic, partition) -> next offset
        self._uncommitted: dict[tuple[str, int], int] = {}
        self._call = None
        self._busy: Optional[defer.Deferred] = None
        self._waiting: Optional[defer.Deferred] = None

    def __repr__(self) -> str:
        what = ",".join(self.topics) + ("" if self.key is None else f" key {self.key}")
        return f"<Consumer {what} group {self.group_id}>"

    def startService(self) -> None:
        super().startService()
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
        return self.backoff()

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
            self.reached()
            self.ready.callback(self)
        if self._uncommitted:
            # Poll even when this commit fails: a rebalance (after a member
            # joined or left, or the broker restarted) completes only in
            # poll(), and until it does no commit can succeed.
            yield self._commit()
        try:
            records = yield self.run(self._poll_blocking)
        except Exception as e:
            return self._unreachable(e)
        if not records:
            return self.bus.poll_interval
        for record in records:
            yield self._handle(*record)
        ok = yield self._commit()  # also when stopping: these records were handled
        return 0 if ok else self.backoff()

    def _unreachable(self, error: Any) -> float:
        self.bus.unreachable(error)
        return self.backoff()

    def _handle(self, topic: str, partition: int, offset: int, key: Optional[bytes], value: Any):
        self._uncommitted[(topic, partition)] = offset + 1
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
                reason=reason_text(e),
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
            offsets = yield self.run(self._commit_blocking, offsets)
        except Exception as e:
            # The records will be seen again after a restart (at-least-once).
            for where, offset in offsets.items():
                self._uncommitted[where] = max(offset, self._uncommitted.get(where, 0))
            self.log.warn(
                "Kafka consumer {consumer}: could not commit offsets ({reason}); retrying",
                consumer=self,
                reason=reason_text(e),
            )
            return False
        self.committed.update(offsets)
        self.succeeded()
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
        self.client = client

    def _poll_blocking(self) -> list[tuple[str, int, int, Optional[bytes], Any]]:
        if self.client is None:
            return []
        batches = self.client.poll(
            timeout_ms=int(self.bus.poll_timeout * 1000), max_records=self.bus.max_poll_records
        )
        return [
            (r.topic, r.partition, r.offset, r.key, r.value)
            for records in batches.values()
            for r in records
        ]

    def _commit_blocking(self, offsets: dict[tuple[str, int], int]) -> dict[tuple[str, int], int]:
        """
        Commit C{offsets} of the partitions this member still holds and
        return those: a partition a rebalance gave to another member is
        that member's to commit (it reads on from the last commit).
        """
        if self.client is None:
            return {}  # closed after a stop timed out: the records will be seen again
        owned = self.client.assignment()
        mine = {tp: OffsetAndMetadata(o, "", -1) for (t, p), o in offsets.items()
                if (tp := TopicPartition(t, p)) in owned}
        if mine:
            self.client.commit(mine, timeout_ms=int(self.bus.connect_timeout * 1000))
        return {(tp.topic, tp.partition): om.offset for tp, om in mine.items()}

    # -- stopping --------------------------------------------------------------

    def stopService(self) -> defer.Deferred:
        super().stopService()
        if self._call is not None:
            self._call.cancel()
            self._call = None
        if self._waiting is not None and not self._waiting.called:
            self._waiting.callback(None)  # still waiting for the topics: give up now
        busy = self._busy if self._busy is not None and not self._busy.called else defer.succeed(None)
        # Give the turn in progress (a handler, a commit) stop_timeout to finish.
        return self.close(lambda client: client.close(autocommit=False),
                          after=_bounded(self.bus.clock, busy, self.bus.stop_timeout))
