"""
Unit tests of the Kafka bus on fakes: a thread pool that runs work inline
(and says whether code runs "in the thread"), a reactor stub whose
callFromThread calls at once, fake kafka-python clients, and task.Clock for
the poll loop and the backoff.  Synchronous, no broker, no sleeps.
"""

import os
import subprocess
import sys
from collections import namedtuple

import pytest
from kafka import errors as kafka_errors
from kafka.cluster import ClusterMetadata
from kafka.partitioner.default import DefaultPartitioner
from kafka.structs import TopicPartition
from twisted.internet import defer, task
from twisted.logger import capturedLogs, formatEvent
from twisted.python.failure import Failure

from evnet.kafka.bus import KafkaBus, partition_for_key
from evnet.kafka.errors import BusError, BusFull, parse_bootstrap
from evnet.protocols import messages as m
from evnet.protocols.vocabulary import TOPICS

Record = namedtuple("Record", "topic partition offset key value")


class InlinePool:
    """
    A ThreadPool whose one "thread" runs each call at once, or, while
    C{held}, when L{release} is called (a thread still busy).
    """

    def __init__(self, name):
        self.name = name
        self.started = self.stopped = False
        self.inside = False
        self.held = False
        self.queued = []

    def start(self):
        self.started = True

    def stop(self):
        assert not self.queued, f"{self.name}: stopped with work waiting (ThreadPool.stop would block)"
        self.stopped = True

    def release(self):
        self.held = False
        while self.queued:
            self.callInThreadWithCallback(*self.queued.pop(0))

    def callInThreadWithCallback(self, onResult, f, *args, **kwargs):
        assert self.started and not self.stopped, f"{self.name}: work after stop"
        if self.held:
            self.queued.append((onResult, f, *args))
            return
        self.inside = True
        try:
            result = f(*args, **kwargs)
        except BaseException:
            self.inside = False
            onResult(False, Failure())
        else:
            self.inside = False
            onResult(True, result)


class DirectReactor:
    def callFromThread(self, f, *args, **kwargs):
        f(*args, **kwargs)


class FakeFuture:
    def __init__(self):
        self.callbacks, self.errbacks = [], []

    def add_callback(self, f):
        self.callbacks.append(f)

    def add_errback(self, f):
        self.errbacks.append(f)

    def succeed(self):
        for f in self.callbacks:
            f("metadata")

    def fail(self, exc):
        for f in self.errbacks:
            f(exc)


class FakeKafka:
    """One fake cluster: its topics, its records, and whether it is reachable."""

    def __init__(self, topics=None, brokers=1):
        self.up = True
        self.brokers = brokers
        self.topics = dict(topics or {})
        self.specs = {}  # topic -> how it was created
        self.pools = {}
        self.producers, self.consumers, self.admins = [], [], []
        self.created = []
        self.made_in = []  # (client kind, the pool whose thread made it)

    def pool(self, name):
        self.pools[name] = InlinePool(name)
        return self.pools[name]

    def in_thread(self):
        return any(p.inside for p in self.pools.values())

    def _check(self, kind):
        assert self.in_thread(), "a Kafka client must be created in its own thread"
        self.made_in.append((kind, next(name for name, p in self.pools.items() if p.inside)))
        if not self.up:
            raise kafka_errors.KafkaTimeoutError("Unable to bootstrap from 127.0.0.1:1")

    def producer(self, **config):
        self._check("producer")
        p = FakeProducer(self, config)
        self.producers.append(p)
        return p

    def admin(self, **config):
        self._check("admin")
        a = FakeAdmin(self)
        self.admins.append(a)
        return a

    def consumer(self, **config):
        self._check("consumer")
        c = FakeConsumer(self, config)
        self.consumers.append(c)
        return c

    def bus(self, **kw):
        kw.setdefault("clock", task.Clock())
        kw.setdefault("backoff", lambda attempt: 1.0)
        return KafkaBus(
            "127.0.0.1:9092",
            "test",
            reactor=DirectReactor(),
            producer_factory=self.producer,
            consumer_factory=self.consumer,
            admin_factory=self.admin,
            pool_factory=self.pool,
            **kw,
        )


class FakeProducer:
    def __init__(self, kafka, config):
        self.kafka = kafka
        self.config = config
        self.sent = []  # (topic, key, value, future)
        self.flushed = self.closed = False

    def send(self, topic, value=None, key=None):
        assert self.kafka.in_thread()
        if not self.kafka.up:
            raise kafka_errors.KafkaTimeoutError("Failed to update metadata after 10.0 secs.")
        if len(value) > 1000:
            raise kafka_errors.MessageSizeTooLargeError(f"the message is {len(value)} bytes")
        f = FakeFuture()
        self.sent.append((topic, key, value, f))
        return f

    def ack_all(self):
        for *_, f in self.sent:
            f.succeed()

    def flush(self, timeout=None):
        assert self.kafka.in_thread()
        self.flushed = True

    def close(self, timeout=None):
        assert self.kafka.in_thread()
        self.closed = True


class FakeAdmin:
    def __init__(self, kafka):
        self.kafka = kafka
        self.closed = False

    def list_topics(self):
        return list(self.kafka.topics)

    def create_topics(self, new_topics, raise_errors=True):
        result = []
        for name, spec in new_topics.items():
            self.kafka.specs[name] = spec
            self.kafka.topics[name] = spec["num_partitions"]
            self.kafka.created.append(name)
            result.append({"name": name, "error_code": 0})
        return {"topics": result}

    def describe_cluster(self):
        return {"brokers": [{"broker_id": n} for n in range(1, self.kafka.brokers + 1)]}

    def wait_for_topics(self, names, timeout_ms=None):
        pass

    def describe_topics(self, names):
        return [
            {"name": n, "error_code": 0, "partitions": [{}] * self.kafka.topics[n]}
            for n in names
            if n in self.kafka.topics
        ]

    def close(self):
        self.closed = True


class FakeConsumer:
    def __init__(self, kafka, config):
        self.kafka = kafka
        self.config = config
        self.batches = []  # what the next polls return
        self.commits = []
        self.subscribed = self.assigned = None
        self.positioned = []
        self.owned = None  # what assignment() says, when a test sets it
        self.closed = False

    def subscribe(self, topics):
        self.subscribed = topics

    def partitions_for_topic(self, topic):
        return set(range(self.kafka.topics.get(topic, 0)))

    def assign(self, partitions):
        self.assigned = partitions

    def position(self, tp):
        self.positioned.append(tp)
        return 0

    def poll(self, timeout_ms=0, max_records=None):
        assert self.kafka.in_thread()
        if not self.batches:
            return {}
        records = self.batches.pop(0)
        batch = {}
        for r in records:
            batch.setdefault((r.topic, r.partition), []).append(r)
        return batch

    def assignment(self):
        if self.owned is not None:
            return set(self.owned)
        if self.assigned is not None:
            return set(self.assigned)
        return {TopicPartition(t, p) for t in self.subscribed or () for p in self.partitions_for_topic(t)}

    def commit(self, offsets, timeout_ms=None):
        assert self.kafka.in_thread()
        self.commits.append({(tp.topic, tp.partition): om.offset for tp, om in offsets.items()})

    def close(self, autocommit=True):
        assert self.kafka.in_thread() and autocommit is False
        self.closed = True


def telem(seq):
    return m.Telem("CP1", "S1", seq, 0.1 * seq, 7.0, 0.05 * seq, seq)


def messages(events):
    return [formatEvent(e) for e in events]


def started(kafka, **kw):
    bus = kafka.bus(**kw)
    bus.startService()
    return bus


# -- producer ------------------------------------------------------------------


def test_topics_are_created_at_start_with_the_documented_partitions():
    kafka = FakeKafka(topics={"cp.events": 3})
    with capturedLogs() as events:
        bus = started(kafka)
    assert kafka.topics == TOPICS
    assert "cp.events" not in kafka.created  # already there: left alone
    assert all(a.closed for a in kafka.admins)
    assert bus.topics_ready().called
    assert any("created Kafka topics cp.telemetry (6 partitions)" in line for line in messages(events))
    counts = []
    bus.partition_counts(["cp.telemetry", "network.status", "nope"]).addCallback(counts.append)
    assert counts == [{"cp.telemetry": 6, "network.status": 1, "nope": 0}]


@pytest.mark.parametrize("brokers, replicas, min_insync", [(1, 1, 1), (2, 2, 1), (3, 3, 2), (5, 3, 2)])
def test_topics_are_replicated_as_the_cluster_allows(brokers, replicas, min_insync):
    kafka = FakeKafka(brokers=brokers)
    with capturedLogs() as events:
        started(kafka)
    assert set(kafka.specs) == set(TOPICS)
    for spec in kafka.specs.values():
        assert spec["replication_factor"] == replicas
        assert spec["configs"] == {"min.insync.replicas": str(min_insync)}
    assert any(f"replication factor {replicas}, min.insync.replicas {min_insync}" in line
               for line in messages(events))


def test_an_explicit_replication_factor_wins_over_the_cluster_size():
    kafka = FakeKafka(brokers=5)
    started(kafka, replication_factor=2)
    assert {spec["replication_factor"] for spec in kafka.specs.values()} == {2}
    assert {spec["configs"]["min.insync.replicas"] for spec in kafka.specs.values()} == {"1"}


def test_producer_is_made_in_its_thread_with_acks_all_and_bounded_blocking():
    kafka = FakeKafka()
    bus = started(kafka)
    (producer,) = kafka.producers
    assert producer.config["acks"] == "all" and producer.config["enable_idempotence"] is True
    assert producer.config["max_block_ms"] == 10000
    assert producer.config["bootstrap_servers"] == ["127.0.0.1:9092"]
    assert producer.config["retries"] > 0
    assert bus.producer.pool.started


def test_publish_sends_the_frame_data_with_the_key_and_fires_on_ack():
    kafka = FakeKafka()
    bus = started(kafka)
    results = []
    bus.publish("cp.telemetry", "CP1", telem(1)).addCallback(results.append)
    (producer,) = kafka.producers
    ((topic, key, value, future),) = producer.sent
    assert (topic, key, value) == ("cp.telemetry", b"CP1", telem(1).to_data())
    assert results == [] and bus.pending == 1
    future.succeed()
    assert results == [None] and bus.pending == 0


def test_messages_are_sent_in_the_order_they_were_published():
    kafka = FakeKafka()
    bus = started(kafka)
    for seq in range(1, 6):
        bus.publish("cp.telemetry", "CP1", telem(seq))
    assert [v for _, _, v, _ in kafka.producers[0].sent] == [telem(s).to_data() for s in range(1, 6)]


def test_a_full_buffer_refuses_new_messages_with_a_clear_error():
    kafka = FakeKafka()
    bus = started(kafka, max_pending=2)
    bus.publish("cp.telemetry", "CP1", telem(1))
    bus.publish("cp.telemetry", "CP1", telem(2))
    refused = []
    bus.publish("cp.telemetry", "CP1", telem(3)).addErrback(refused.append)
    assert refused[0].check(BusFull)
    assert "2 messages are already waiting for Kafka at 127.0.0.1:9092" in str(refused[0].value)
    assert len(kafka.producers[0].sent) == 2  # the refused one was not sent
    kafka.producers[0].sent[0][3].succeed()
    accepted = []
    bus.publish("cp.telemetry", "CP1", telem(4)).addBoth(accepted.append)
    assert accepted == [] and len(kafka.producers[0].sent) == 3


def test_unreachable_broker_is_retried_and_queued_messages_go_out_later():
    kafka = FakeKafka()
    kafka.up = False
    clock = task.Clock()
    with capturedLogs() as events:
        bus = started(kafka, clock=clock)
        results = []
        for seq in (1, 2, 3):
            bus.publish("cp.telemetry", "CP1", telem(seq)).addBoth(results.append)
        clock.advance(1)
        clock.advance(1)
        assert results == [] and bus.pending == 3 and kafka.producers == []
        kafka.up = True
        clock.advance(1)
    lines = messages(events)
    assert sum("cannot reach Kafka at 127.0.0.1:9092; retrying" in line for line in lines) == 1
    assert lines[-1] == "connected to Kafka at 127.0.0.1:9092"
    (producer,) = kafka.producers
    assert [v for _, _, v, _ in producer.sent] == [telem(s).to_data() for s in (1, 2, 3)]
    producer.ack_all()
    assert results == [None, None, None]


def test_backoff_grows_while_kafka_stays_away():
    kafka = FakeKafka()
    kafka.up = False
    clock = task.Clock()
    started(kafka, clock=clock, backoff=lambda attempt: 2.0**attempt)
    assert [c.getTime() for c in clock.getDelayedCalls()] == [1.0]
    clock.advance(1)
    assert [c.getTime() for c in clock.getDelayedCalls()] == [3.0]


def test_a_send_that_cannot_get_metadata_is_kept_and_retried():
    kafka = FakeKafka()
    clock = task.Clock()
    bus = started(kafka, clock=clock)
    kafka.up = False
    results = []
    with capturedLogs() as events:
        bus.publish("cp.telemetry", "CP1", telem(1)).addBoth(results.append)
        bus.publish("cp.telemetry", "CP1", telem(2)).addBoth(results.append)
    assert any("cannot reach Kafka" in line for line in messages(events))
    assert bus.pending == 2 and results == []
    kafka.up = True
    clock.advance(1)
    producer = kafka.producers[0]
    assert [v for _, _, v, _ in producer.sent] == [telem(1).to_data(), telem(2).to_data()]
    producer.ack_all()
    assert results == [None, None]


def test_a_delivery_lost_with_the_broker_is_sent_again():
    kafka = FakeKafka()
    clock = task.Clock()
    bus = started(kafka, clock=clock)
    results = []
    bus.publish("cp.telemetry", "CP1", telem(1)).addBoth(results.append)
    producer = kafka.producers[0]
    producer.sent[0][3].fail(kafka_errors.KafkaTimeoutError("Expiring 1 record(s)"))
    assert results == [] and bus.pending == 1
    clock.advance(1)
    assert len(producer.sent) == 2
    producer.sent[1][3].succeed()
    assert results == [None] and bus.pending == 0


def test_a_message_kafka_refuses_fails_with_the_reason():
    kafka = FakeKafka()
    bus = started(kafka)
    failures = []
    bus.publish("cp.telemetry", "CP1", telem(1)).addErrback(failures.append)
    kafka.producers[0].sent[0][3].fail(kafka_errors.MessageSizeTooLargeError("too big"))
    assert failures[0].check(BusError) and "too big" in str(failures[0].value)
    bus.publish("no.such.topic", "CP1", telem(2)).addErrback(failures.append)
    assert failures[1].check(BusError) and "unknown Kafka topic 'no.such.topic'" in str(failures[1].value)
    bus.publish("cp.telemetry", "CP1", m.Notice("big", "x" * 2000)).addErrback(failures.append)
    assert failures[2].check(BusError) and "the message is 2011 bytes" in str(failures[2].value)
    ok = []
    bus.publish("cp.telemetry", "CP1", telem(3)).addCallback(ok.append)
    kafka.producers[0].sent[-1][3].succeed()
    assert ok == [None]


def test_stop_flushes_and_closes_the_producer_in_its_thread():
    kafka = FakeKafka()
    bus = started(kafka)
    done = []
    bus.stopService().addCallback(done.append)
    (producer,) = kafka.producers
    assert producer.flushed and producer.closed
    assert bus.producer.pool.stopped and done


def test_stop_while_unreachable_fails_what_waits_loudly():
    kafka = FakeKafka()
    kafka.up = False
    clock = task.Clock()
    bus = started(kafka, clock=clock)
    failures = []
    bus.publish("cp.telemetry", "CP1", telem(1)).addErrback(failures.append)
    with capturedLogs() as events:
        bus.stopService()
    assert failures[0].check(BusError) and "unreachable" in str(failures[0].value)
    assert any("1 messages were not sent" in line for line in messages(events))
    assert clock.getDelayedCalls() == []
    later = []
    bus.publish("cp.telemetry", "CP1", telem(2)).addErrback(later.append)
    assert "not running" in str(later[0].value)


def test_stop_while_the_topics_are_being_created_makes_no_producer():
    kafka = FakeKafka()
    bus = kafka.bus()
    admin_pool = kafka.pools["evnet-kafka-test-admin"]
    admin_pool.held = True  # its thread is busy creating the topics
    bus.startService()
    stopped = []
    with capturedLogs() as events:
        bus.stopService().addCallback(stopped.append)
        assert stopped == [] and not admin_pool.stopped  # waits for the admin's thread
        admin_pool.release()
    assert stopped and admin_pool.stopped and bus.producer.pool.stopped
    assert kafka.producers == [] and kafka.created  # the topics were made, no producer after the stop
    assert not any("connected to Kafka" in line for line in messages(events))


def test_an_error_while_closing_the_producer_is_logged_and_the_pool_still_stops():
    kafka = FakeKafka()
    bus = started(kafka)

    def close(timeout=None):
        raise kafka_errors.KafkaTimeoutError("close timed out")

    kafka.producers[0].close = close
    with capturedLogs() as events:
        bus.stopService()
    lines = messages(events)
    assert any(line.startswith("Kafka producer: error while closing") for line in lines), lines
    assert any("close timed out" in e["log_failure"].getErrorMessage() for e in events if "log_failure" in e)
    assert bus.producer.pool.stopped


# -- each client in its own thread ----------------------------------------------


def test_each_client_is_made_in_the_thread_of_the_service_that_owns_it():
    kafka = FakeKafka()
    bus = started(kafka)
    consumer_with(kafka, bus, lambda *a: None)
    bus.partition_counts(["cp.events"])
    assert kafka.made_in == [
        ("admin", "evnet-kafka-test-admin"),
        ("producer", "evnet-kafka-test-producer"),
        ("consumer", "evnet-kafka-test-consumer-1"),
        ("admin", "evnet-kafka-test-admin"),
    ]
    bus.stopService()
    assert all(pool.stopped for pool in kafka.pools.values())


def test_the_errors_module_does_not_load_kafka_python():
    code = "import sys, evnet.kafka.errors; print('kafka' in sys.modules)"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


# -- Kafka's status, for whoever shows it ------------------------------------------


def observed(bus):
    seen = []
    bus.add_status_observer(lambda up, reason: seen.append((up, reason)))
    return seen


def test_observers_hear_once_per_outage_and_when_kafka_is_back():
    kafka = FakeKafka()
    kafka.up = False
    clock = task.Clock()
    bus = kafka.bus(clock=clock)
    seen = observed(bus)
    bus.startService()
    clock.advance(1)
    clock.advance(1)  # two more failed tries: still one outage
    assert seen == [(False, "KafkaTimeoutError: Unable to bootstrap from 127.0.0.1:1")]
    kafka.up = True
    clock.advance(1)
    assert seen[1:] == [(True, "")]
    bus.publish("cp.telemetry", "CP1", telem(1))
    kafka.producers[0].sent[0][3].fail(kafka_errors.KafkaTimeoutError("Expiring 1 record(s)"))
    assert seen[2:] == [(False, "KafkaTimeoutError: Expiring 1 record(s)")]
    clock.advance(1)
    kafka.producers[0].sent[1][3].succeed()
    assert seen[3:] == [(True, "")]


def test_observers_are_not_told_of_a_first_connection_that_just_works():
    kafka = FakeKafka()
    bus = kafka.bus()
    seen = observed(bus)
    bus.startService()
    bus.publish("cp.telemetry", "CP1", telem(1))
    kafka.producers[0].ack_all()
    assert seen == []


def test_a_consumer_that_cannot_reach_kafka_is_an_outage_too():
    kafka = FakeKafka(topics={"cp.events": 3})
    bus = started(kafka, create_topics=False)
    seen = observed(bus)
    consumer = bus.subscribe(["cp.telemetry"], "central", lambda *a: None)
    consumer.startService()
    bus.clock.advance(0)
    assert seen == [(False, "topic cp.telemetry does not exist (yet) on Kafka at 127.0.0.1:9092")]


def test_an_observer_that_raises_is_logged_and_the_others_are_still_told():
    kafka = FakeKafka()
    kafka.up = False
    bus = kafka.bus()

    def broken(up, reason):
        raise RuntimeError("observer bug")

    bus.add_status_observer(broken)
    seen = observed(bus)
    with capturedLogs() as events:
        bus.startService()
    assert [up for up, _ in seen] == [False]
    failures = [e for e in events if "log_failure" in e]
    assert failures and failures[0]["log_failure"].check(RuntimeError)
    assert "Kafka status observer" in formatEvent(failures[0])
    assert any("cannot reach Kafka" in line for line in messages(events))


# -- consumers -----------------------------------------------------------------


def consumer_with(kafka, bus, handler, **kw):
    consumer = bus.subscribe(["cp.telemetry", "cp.events"], "central", handler, **kw)
    consumer.startService()
    bus.clock.advance(0)
    assert consumer.ready.called
    return consumer, kafka.consumers[-1]


def test_records_are_handled_in_order_then_committed():
    kafka = FakeKafka()
    bus = started(kafka)
    seen = []

    def handler(topic, key, msg):
        assert commits_at_call == fake.commits
        seen.append((topic, key, msg))

    consumer, fake = consumer_with(kafka, bus, handler)
    commits_at_call = []
    assert fake.subscribed == ["cp.telemetry", "cp.events"]
    assert fake.config["enable_auto_commit"] is False and fake.config["group_id"] == "central"
    fake.batches.append([Record("cp.telemetry", 2, 10 + s, b"CP1", telem(s).to_data()) for s in (1, 2, 3)])
    bus.clock.advance(bus.poll_interval)
    assert seen == [("cp.telemetry", "CP1", telem(s)) for s in (1, 2, 3)]
    assert fake.commits == [{("cp.telemetry", 2): 14}]


def test_commit_waits_for_the_handlers_deferred():
    kafka = FakeKafka()
    bus = started(kafka)
    held = []

    def handler(topic, key, msg):
        held.append(defer.Deferred())
        return held[-1]

    consumer, fake = consumer_with(kafka, bus, handler)
    fake.batches.append([Record("cp.telemetry", 0, s, b"CP1", telem(s).to_data()) for s in (1, 2)])
    bus.clock.advance(bus.poll_interval)
    assert len(held) == 1 and fake.commits == []  # the second waits for the first
    held[0].callback(None)
    assert len(held) == 2 and fake.commits == []
    held[1].callback(None)
    assert fake.commits == [{("cp.telemetry", 0): 3}]


def test_a_record_that_does_not_decode_is_logged_skipped_and_committed():
    kafka = FakeKafka()
    bus = started(kafka)
    seen = []
    consumer, fake = consumer_with(kafka, bus, lambda t, k, msg: seen.append(msg))
    fake.batches.append(
        [
            Record("cp.events", 1, 7, b"CP1", b"BOGUS#1"),
            Record("cp.events", 1, 8, b"CP1", None),
            Record("cp.events", 1, 9, b"CP1", m.Rcv("CP1").to_data()),
        ]
    )
    with capturedLogs() as events:
        bus.clock.advance(bus.poll_interval)
    lines = messages(events)
    assert any("cp.events partition 1 offset 7" in line and "BOGUS" in line for line in lines)
    assert any("cp.events partition 1 offset 8" in line for line in lines)
    assert seen == [m.Rcv("CP1")]
    assert fake.commits == [{("cp.events", 1): 10}]


def test_a_failing_handler_is_logged_and_does_not_stall_the_stream():
    kafka = FakeKafka()
    bus = started(kafka)
    seen = []

    def handler(topic, key, msg):
        seen.append(msg.seq)
        if msg.seq == 1:
            raise RuntimeError("boom")

    consumer, fake = consumer_with(kafka, bus, handler)
    fake.batches.append([Record("cp.telemetry", 0, s, b"CP1", telem(s).to_data()) for s in (1, 2)])
    with capturedLogs() as events:
        bus.clock.advance(bus.poll_interval)
    assert seen == [1, 2]
    assert any("handler failed on cp.telemetry partition 0 offset 1" in line for line in messages(events))
    assert fake.commits == [{("cp.telemetry", 0): 3}]
    fake.batches.append([Record("cp.telemetry", 0, 3, b"CP1", telem(3).to_data())])
    bus.clock.advance(bus.poll_interval)
    assert seen == [1, 2, 3]


def test_one_poll_at_a_time_on_the_clock():
    kafka = FakeKafka()
    bus = started(kafka)
    consumer, fake = consumer_with(kafka, bus, lambda *a: None)
    polls = []
    real_poll = fake.poll
    fake.poll = lambda **kw: polls.append(1) or real_poll(**kw)
    bus.clock.advance(bus.poll_interval / 2)
    assert polls == []
    bus.clock.advance(bus.poll_interval / 2)
    assert polls == [1]
    assert len(bus.clock.getDelayedCalls()) == 1


def refuse_commits(fake, error):
    """Make C{fake}'s commits raise C{error}; its real commit, to put back."""
    real_commit = fake.commit

    def commit(offsets, timeout_ms=None):
        raise error

    fake.commit = commit
    return real_commit


def test_failed_commit_is_retried_with_the_same_offsets():
    kafka = FakeKafka()
    bus = started(kafka)
    consumer, fake = consumer_with(kafka, bus, lambda *a: None)
    real_commit = refuse_commits(fake, kafka_errors.CommitFailedError("rebalance"))
    fake.batches.append([Record("cp.telemetry", 0, 4, b"CP1", telem(1).to_data())])
    with capturedLogs() as events:
        bus.clock.advance(bus.poll_interval)
    assert any("could not commit offsets" in line for line in messages(events))
    fake.commit = real_commit
    bus.clock.advance(1)
    assert fake.commits == [{("cp.telemetry", 0): 5}]


def test_a_commit_refused_during_a_rebalance_does_not_stop_the_polls_that_complete_it():
    # kafka-python completes a rebalance only inside poll(): a loop that
    # retried the commit without polling waited forever (seen after a
    # broker restart and when a second member joined).
    kafka = FakeKafka()
    bus = started(kafka)
    seen = []
    consumer, fake = consumer_with(kafka, bus, lambda t, k, msg: seen.append(msg.seq))
    real_commit, real_poll = fake.commit, fake.poll
    rejoined = []

    def commit(offsets, timeout_ms=None):
        if not rejoined:
            raise kafka_errors.RebalanceInProgressError("call poll() to complete the rebalance")
        real_commit(offsets, timeout_ms)

    def poll(**kw):
        rejoined.append(1)
        return real_poll(**kw)

    fake.commit = commit
    fake.batches.append([Record("cp.telemetry", 0, 4, b"CP1", telem(1).to_data())])
    fake.poll = lambda **kw: real_poll(**kw)  # the poll that fetches the batch: no rejoin yet
    with capturedLogs() as events:
        bus.clock.advance(bus.poll_interval)
    assert seen == [1] and fake.commits == []
    assert any("could not commit offsets" in line for line in messages(events))
    fake.poll = poll
    with capturedLogs():
        for _ in range(5):
            bus.clock.advance(1)
    assert rejoined, "the consumer stopped polling while its commit was refused"
    assert fake.commits == [{("cp.telemetry", 0): 5}]
    assert consumer.committed == {("cp.telemetry", 0): 5}


def test_offsets_of_partitions_a_rebalance_took_away_are_left_to_their_new_owner():
    kafka = FakeKafka()
    bus = started(kafka)
    consumer, fake = consumer_with(kafka, bus, lambda *a: None)
    real_commit = refuse_commits(fake, kafka_errors.RebalanceInProgressError("rebalancing"))
    fake.batches.append([Record("cp.telemetry", 0, 4, b"CP1", telem(1).to_data()),
                         Record("cp.telemetry", 1, 9, b"CP2", telem(1).to_data())])
    with capturedLogs():
        bus.clock.advance(bus.poll_interval)
    fake.commit = real_commit
    fake.owned = {TopicPartition("cp.telemetry", 1)}  # partition 0 went to another member
    bus.clock.advance(1)
    assert fake.commits == [{("cp.telemetry", 1): 10}]
    assert consumer.committed == {("cp.telemetry", 1): 10}


def test_consumers_wait_for_the_topics_and_kafka():
    kafka = FakeKafka()
    kafka.up = False
    bus = started(kafka)
    consumer = bus.subscribe(["cp.telemetry"], "central", lambda *a: None)
    consumer.startService()
    bus.clock.advance(0)
    assert kafka.consumers == [] and not consumer.ready.called
    kafka.up = True
    bus.clock.advance(1)  # the producer's retry creates the topics
    bus.clock.advance(0)
    assert consumer.ready.called and kafka.consumers[0].subscribed == ["cp.telemetry"]


def test_stopping_before_the_handler_finished_does_not_commit():
    kafka = FakeKafka()
    bus = started(kafka, stop_timeout=5)
    consumer, fake = consumer_with(kafka, bus, lambda *a: defer.Deferred())
    fake.batches.append([Record("cp.telemetry", 0, 0, b"CP1", telem(1).to_data())])
    bus.clock.advance(bus.poll_interval)
    stopped = []
    bus.stopService().addCallback(stopped.append)
    assert stopped == [] and not fake.closed
    bus.clock.advance(5)
    assert stopped and fake.closed and fake.commits == []
    assert consumer.pool.stopped and bus.producer.pool.stopped


def test_an_error_while_closing_a_consumer_is_logged_and_its_pool_still_stops():
    kafka = FakeKafka()
    bus = started(kafka)
    consumer, fake = consumer_with(kafka, bus, lambda *a: None)

    def close(autocommit=True):
        raise kafka_errors.KafkaConnectionError("gone")

    fake.close = close
    with capturedLogs() as events:
        bus.stopService()
    assert any(
        line.startswith("Kafka consumer <Consumer cp.telemetry,cp.events group central>: error while closing")
        for line in messages(events)
    )
    assert consumer.pool.stopped


def test_subscribe_key_reads_only_its_partition_and_its_key():
    kafka = FakeKafka()
    bus = started(kafka)
    seen = []
    consumer = bus.subscribe_key("driver.notifications", "D7", lambda t, k, msg: seen.append((k, msg)), "driver-D7")
    consumer.startService()
    bus.clock.advance(0)
    fake = kafka.consumers[0]
    assert fake.config["auto_offset_reset"] == "latest" and fake.config["group_id"] == "driver-D7"
    (tp,) = fake.assigned
    assert fake.positioned == [tp]  # positioned at once: nothing published after ready is missed
    # The producer's own partitioner puts D7 on that partition.
    cluster = ClusterMetadata()
    cluster.partitions_for_topic = lambda topic: set(range(6))
    cluster.available_partitions_for_topic = lambda topic: set(range(6))
    cluster.topics = lambda: {"driver.notifications"}
    assert tp.partition == DefaultPartitioner().partition("driver.notifications", "D7", b"D7", None, None, cluster)
    mine = m.Notice("fault", "CP1 broke")
    fake.batches.append(
        [
            Record(tp.topic, tp.partition, 0, b"D8", m.Notice("x", "not yours").to_data()),
            Record(tp.topic, tp.partition, 1, b"D7", mine.to_data()),
        ]
    )
    bus.clock.advance(bus.poll_interval)
    assert seen == [("D7", mine)]
    assert fake.commits == [{(tp.topic, tp.partition): 2}]


def test_partition_for_key_matches_kafkas_reference_values():
    # Values from the Java client's murmur2 (as in kafka-python's own tests).
    assert partition_for_key("21", 1 << 31) == 0x7FFFFFFF & -973932308
    assert partition_for_key("foobar", 1 << 31) == 0x7FFFFFFF & -790332482


def test_bootstrap_addresses():
    assert parse_bootstrap("10.0.0.5:9092, 10.0.0.6:9092") == ["10.0.0.5:9092", "10.0.0.6:9092"]
    assert parse_bootstrap("tcp:host=127.0.0.1:port=19092") == ["127.0.0.1:19092"]
    for bad in ("", "kafka", "host:port", "h:99999", "tcp:host=x"):
        with pytest.raises(BusError) as e:
            parse_bootstrap(bad)
        assert "Kafka address" in str(e.value) or "no Kafka address" in str(e.value)


def test_a_consumer_waits_for_a_missing_topic_when_it_does_not_create_them():
    kafka = FakeKafka(topics={"cp.events": 3})
    bus = started(kafka, create_topics=False)
    consumer = bus.subscribe(["cp.telemetry"], "central", lambda *a: None)
    consumer.startService()
    with capturedLogs() as events:
        bus.clock.advance(0)
    assert not consumer.ready.called and kafka.consumers[0].subscribed is None
    assert any("topic cp.telemetry does not exist (yet)" in line for line in messages(events))
    kafka.topics["cp.telemetry"] = 6
    bus.clock.advance(1)
    assert consumer.ready.called and kafka.consumers[1].subscribed == ["cp.telemetry"]
    assert kafka.created == []


# -- a network's prefix (--kafka-prefix) -------------------------------------------


def test_a_prefix_puts_the_networks_topics_and_groups_under_it():
    kafka = FakeKafka(topics={"cp.telemetry": 6})  # another network's, unprefixed: left alone
    bus = started(kafka, prefix="siteA")
    assert kafka.topics == {"cp.telemetry": 6, **{f"siteA.{t}": n for t, n in TOPICS.items()}}
    counts = []
    bus.partition_counts(["cp.telemetry", "nope"]).addCallback(counts.append)
    assert counts == [{"cp.telemetry": 6, "nope": 0}]  # the names the caller knows

    bus.publish("cp.telemetry", "CP1", telem(1))
    ((topic, key, _, _),) = kafka.producers[0].sent
    assert (topic, key) == ("siteA.cp.telemetry", b"CP1")

    seen = []
    consumer, fake = consumer_with(kafka, bus, lambda topic, key, msg: seen.append((topic, key, msg)))
    assert fake.subscribed == ["siteA.cp.telemetry", "siteA.cp.events"]
    assert fake.config["group_id"] == "siteA.central"
    fake.batches.append([Record("siteA.cp.telemetry", 1, 0, b"CP1", telem(1).to_data())])
    bus.clock.advance(bus.poll_interval)
    assert seen == [("cp.telemetry", "CP1", telem(1))]  # handlers see the topic without the prefix
    assert fake.commits == [{("siteA.cp.telemetry", 1): 1}]

    keyed = bus.subscribe_key("driver.notifications", "D7", lambda *a: None, "evdriver-D7")
    keyed.startService()
    bus.clock.advance(0)
    assert kafka.consumers[-1].config["group_id"] == "siteA.evdriver-D7"
    assert kafka.consumers[-1].assigned[0].topic == "siteA.driver.notifications"


def test_no_prefix_keeps_todays_names_and_a_bad_prefix_is_refused():
    kafka = FakeKafka()
    started(kafka, prefix="")
    assert kafka.topics == TOPICS
    for bad in ("site A", ".site", "a#b", "x" * 101):
        with pytest.raises(BusError, match="Kafka prefix"):
            kafka.bus(prefix=bad)
