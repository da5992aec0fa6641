"""
The bus's producer: one ``KafkaProducer`` in its own thread, made there at
start (once the topics exist), retried with backoff while Kafka is
unreachable.  Every accepted message is kept until the broker acknowledged
it: while Kafka is away messages wait in a bounded buffer and go out in
order when it is back; a full buffer refuses new ones at once (L{BusFull}).
"""

from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from evnet.kafka.client import ClientService, reason_text, retriable
from evnet.kafka.errors import BusError, BusFull

if TYPE_CHECKING:
    from evnet.kafka.bus import KafkaBus


@dataclass
class _Pending:
    """A message accepted by publish() and not yet acknowledged by Kafka."""

    seq: int
    topic: str
    key: bytes
    value: bytes
    deferred: defer.Deferred


class Producer(ClientService):
    """
    Connect (topics first, then the client), then send what waits; one
    connect or one send in flight at a time.
    """

    log = Logger()
    what = "producer"

    def __init__(self, bus: "KafkaBus") -> None:
        super().__init__(bus, "producer")
        self.name = "kafka-producer"
        self.queue: deque[_Pending] = deque()  # accepted, not yet handed to the client
        self.inflight = 0  # handed to the client, not yet acknowledged
        self.connected = False
        self._seq = itertools.count()
        self._retry = None
        self._connecting = False
        self._sending = False

    @property
    def pending(self) -> int:
        return len(self.queue) + self.inflight

    def startService(self) -> None:
        super().startService()
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
        d = self.bus.admin.ensure_topics()
        d.addCallback(lambda _: self.run(self._open_blocking) if self.running else None)
        d.addCallbacks(self._opened, self._open_failed)
        d.addErrback(lambda f: self.log.failure("Kafka producer: unexpected error", f))

    def _open_blocking(self) -> None:
        if self.client is None:
            self.client = self.bus.producer_factory(**self._config())

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
        if not self.running:
            return  # stopped meanwhile: stopService dealt with what waited
        self.connected = True
        self.reached()
        self._pump()

    def _open_failed(self, failure: Failure) -> None:
        self._connecting = False
        self._unreachable(failure)

    def _unreachable(self, reason: Any) -> None:
        self.bus.unreachable(reason)
        if self.running and self._retry is None:
            self._retry = self.bus.clock.callLater(self.backoff(), self._retry_now)

    def _retry_now(self) -> None:
        self._retry = None
        self._pump()

    # -- sending -------------------------------------------------------------

    def _send_blocking(self, batch: list[_Pending]) -> tuple[int, Optional[BaseException]]:
        """In the thread: hand the batch to the client; (how many were handed, error)."""
        call = self.bus.reactor.callFromThread
        for i, item in enumerate(batch):
            try:
                future = self.client.send(item.topic, value=item.value, key=item.key)
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
            if retriable(error):
                self._requeue(rest)
                self._unreachable(error)
            else:
                first, rest = rest[0], rest[1:]
                self._requeue(rest)
                first.deferred.errback(self._refused(first, error))
        self._pump()

    def _refused(self, item: _Pending, error: Any) -> BusError:
        return BusError(
            f"Kafka at {self.bus.bootstrap} did not take the {item.topic} message: {reason_text(error)}"
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
        self.reached()
        item.deferred.callback(None)

    def _failed(self, item: _Pending, error: BaseException) -> None:
        self.inflight -= 1
        if retriable(error):
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
        return self.close(self._flush_and_close)

    def _flush_and_close(self, client: Any) -> None:
        try:
            client.flush(timeout=self.bus.flush_timeout)
        finally:
            client.close(timeout=self.bus.flush_timeout)
