"""
The Kafka bus against the real Apache Kafka broker that scripts/services.sh
starts (EVNET_TEST_KAFKA).  Each test run uses its own topic names and
consumer groups, so reruns on the same broker do not see each other's
records.  Every wait has a timeout.
"""

import os
import secrets

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task
from twisted.logger import capturedLogs, formatEvent

from evnet.kafka.bus import KafkaBus, partition_for_key
from evnet.kafka.errors import BusError
from evnet.protocols import messages as m
from evnet.protocols.vocabulary import TOPICS
from tests.procs import free_port

KAFKA = os.environ.get("EVNET_TEST_KAFKA")
RUN = secrets.token_hex(4)
NAMES = {name: f"{name}.test{RUN}" for name in TOPICS}
MY_TOPICS = {NAMES[name]: partitions for name, partitions in TOPICS.items()}
WAIT = 30

pytestmark = [
    pytest.mark.kafka,
    pytest.mark.skipif(not KAFKA, reason="EVNET_TEST_KAFKA is not set (scripts/services.sh up sets it)"),
]


def make_bus(name, **kw):
    kw.setdefault("topics", MY_TOPICS)
    kw.setdefault("backoff", lambda attempt: 0.2)
    kw.setdefault("poll_interval", 0.05)
    kw.setdefault("poll_timeout", 0.2)
    kw.setdefault("connect_timeout", 5.0)
    bus = KafkaBus(kw.pop("bootstrap", KAFKA), f"test-{name}-{RUN}", **kw)
    bus.startService()
    return bus


def within(d, seconds=WAIT):
    return d.addTimeout(seconds, reactor)


def stop(bus):
    return within(defer.maybeDeferred(bus.stopService))


class Collector:
    """A handler that records (key, msg) and fires a Deferred when it has C{count}."""

    def __init__(self, count, result=None):
        self.seen = []
        self.count = count
        self.done = defer.Deferred()
        self.result = result

    def __call__(self, topic, key, msg):
        self.seen.append((key, msg))
        if len(self.seen) == self.count and not self.done.called:
            self.done.callback(self.seen)
        return self.result() if self.result else None


@defer.inlineCallbacks
def committed(consumer):
    for _ in range(100):
        if consumer.committed:
            return consumer.committed
        yield task.deferLater(reactor, 0.05)
    raise AssertionError(f"{consumer!r} committed nothing within 5 s")


def telem(seq):
    return m.Telem("CP1", "S1", seq, 0.1 * seq, 7.0, 0.05 * seq, seq)


def group(name):
    return f"{name}-{secrets.token_hex(4)}"


@pytest_twisted.inlineCallbacks
def test_topics_are_created_with_the_documented_partitions():
    bus = make_bus("topics")
    try:
        yield within(bus.topics_ready())
        counts = yield within(bus.partition_counts(list(MY_TOPICS)))
        assert counts == MY_TOPICS
        assert [counts[NAMES[n]] for n in ("cp.telemetry", "driver.notifications", "network.status")] == [6, 6, 1]
    finally:
        yield stop(bus)


@pytest_twisted.inlineCallbacks
def test_published_messages_arrive_in_order():
    bus = make_bus("roundtrip")
    topic = NAMES["cp.telemetry"]
    try:
        got = Collector(5)
        bus.subscribe([topic], group("central"), got)
        acks = [bus.publish(topic, "CP1", telem(seq)) for seq in range(1, 6)]
        yield within(defer.gatherResults(acks))
        assert bus.pending == 0
        seen = yield within(got.done)
        assert seen == [("CP1", telem(seq)) for seq in range(1, 6)]
    finally:
        yield stop(bus)


@pytest_twisted.inlineCallbacks
def test_a_record_not_handled_before_a_stop_is_seen_again():
    topic = NAMES["cp.events"]
    central = group("central")
    first = make_bus("alo-1", stop_timeout=0.5)
    try:
        stuck = Collector(1, result=defer.Deferred)  # the handler never finishes
        first.subscribe([topic], central, stuck)
        yield within(first.publish(topic, "CP1", m.Avr("CP1", "engine KO")))
        yield within(stuck.done)
    finally:
        yield stop(first)  # gives up on the handler: no commit

    second = make_bus("alo-2")
    try:
        again = Collector(1)
        consumer = second.subscribe([topic], central, again)
        seen = yield within(again.done)
        assert seen == [("CP1", m.Avr("CP1", "engine KO"))]
        yield committed(consumer)  # handled this time: committed after the batch
    finally:
        yield stop(second)

    third = make_bus("alo-3")
    try:
        later = Collector(1)
        third.subscribe([topic], central, later)
        yield within(third.publish(topic, "CP1", m.Rcv("CP1")))
        seen = yield within(later.done)
        assert seen == [("CP1", m.Rcv("CP1"))]  # the AVR was committed: not seen a third time
    finally:
        yield stop(third)


def other_key_on_partition_of(key, partitions):
    want = partition_for_key(key, partitions)
    return next(
        k for k in (f"D{i}" for i in range(1000)) if k != key and partition_for_key(k, partitions) == want
    )


@pytest_twisted.inlineCallbacks
def test_subscribe_key_gets_only_its_key_and_resumes_after_a_restart():
    topic = NAMES["driver.notifications"]
    neighbour = other_key_on_partition_of("D1", 6)  # same partition, other driver
    driver_group = group("driver-D1")
    bus = make_bus("key-1")
    try:
        got = Collector(2)
        consumer = bus.subscribe_key(topic, "D1", got, driver_group)
        yield within(consumer.ready)
        sends = [
            bus.publish(topic, neighbour, m.Notice("x", "for someone else")),
            bus.publish(topic, "D2", m.Notice("x", "for D2")),
            bus.publish(topic, "D1", m.Notice("one", "for D1")),
            bus.publish(topic, neighbour, m.Notice("x", "for someone else again")),
            bus.publish(topic, "D1", m.Notice("two", "for D1")),
        ]
        yield within(defer.gatherResults(sends))
        seen = yield within(got.done)
        assert seen == [("D1", m.Notice("one", "for D1")), ("D1", m.Notice("two", "for D1"))]
        yield committed(consumer)
    finally:
        yield stop(bus)

    sender = make_bus("key-sender")
    try:  # published while the driver is away
        yield within(sender.publish(topic, "D1", m.Notice("three", "while away")))
    finally:
        yield stop(sender)

    bus = make_bus("key-2")
    try:
        got = Collector(1)
        bus.subscribe_key(topic, "D1", got, driver_group)
        seen = yield within(got.done)
        assert seen == [("D1", m.Notice("three", "while away"))]
    finally:
        yield stop(bus)


@pytest_twisted.inlineCallbacks
def test_a_broker_that_is_not_running_queues_and_says_so():
    port = free_port()
    with capturedLogs() as events:
        tries = []  # one per failed connection attempt
        bus = make_bus(
            "down", bootstrap=f"127.0.0.1:{port}", connect_timeout=0.5,
            backoff=lambda attempt: tries.append(attempt) or 0.2,
        )
        status = []
        bus.add_status_observer(lambda up, reason: status.append((up, reason)))
        sent = bus.publish(NAMES["cp.telemetry"], "CP1", telem(1))
        lines = []
        for _ in range(100):
            lines = [formatEvent(e) for e in events]
            if any("cannot reach Kafka" in line for line in lines):
                break
            yield task.deferLater(reactor, 0.05)
        assert f"cannot reach Kafka at 127.0.0.1:{port}; retrying" in "\n".join(lines)
        assert not sent.called and bus.pending == 1
        for _ in range(200):
            if len(tries) >= 3:
                break
            yield task.deferLater(reactor, 0.05)
        assert len(tries) >= 3  # three failed tries: still the one outage
        assert len(status) == 1 and status[0][0] is False
        assert f"retrying ({status[0][1]})" in "\n".join(lines)
        yield stop(bus)
    with pytest.raises(BusError, match="unreachable"):
        yield sent
