"""
What the bus's producer, consumers and admin share: each is a service that
owns a one-thread ``ThreadPool`` in which its kafka-python client is created
and only ever touched (the clients block and are not thread-safe), a
backoff counter for retrying while Kafka is unreachable, and one way to
close its client in its thread and then stop the pool.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Optional

from kafka import errors as kafka_errors
from twisted.application import service
from twisted.internet import defer
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure

if TYPE_CHECKING:
    from evnet.kafka.bus import KafkaBus


def retriable(exc: BaseException) -> bool:
    """Kafka unreachable or busy: worth trying again later."""
    return isinstance(exc, kafka_errors.KafkaError) and bool(getattr(exc, "retriable", False))


def reason_text(exc: Any) -> str:
    """What went wrong, for a log line or an error message (an exception or a Failure)."""
    if isinstance(exc, Failure):
        exc = exc.value
    return str(exc) or type(exc).__name__


class ClientService(service.Service):
    """
    A service owning one Kafka client's thread (named after C{role}).
    C{client} belongs to that thread: only code run with L{run} touches it.
    C{what} names the client in log lines ("producer", "consumer <…>").
    """

    log = Logger()
    what = "client"

    def __init__(self, bus: "KafkaBus", role: str) -> None:
        self.bus = bus
        self.pool = bus.make_pool(role)
        self.client: Any = None  # touched only in the pool's thread
        self._attempt = 0

    def run(self, fn: Callable[..., Any], *args: Any) -> defer.Deferred:
        """C{fn(*args)} in this service's thread; a Deferred on the reactor."""
        return deferToThreadPool(self.bus.reactor, self.pool, fn, *args)

    def startService(self) -> None:
        super().startService()
        self.pool.start()

    # -- retrying --------------------------------------------------------------

    def backoff(self) -> float:
        """The delay before the next try (growing with each one since the last success)."""
        delay = self.bus.backoff(self._attempt)
        self._attempt += 1
        return delay

    def succeeded(self) -> None:
        """A try worked: the next failure waits the shortest delay again."""
        self._attempt = 0

    def reached(self) -> None:
        """This client talked to Kafka."""
        self.succeeded()
        self.bus.reachable()

    # -- stopping --------------------------------------------------------------

    def close(self, close_client: Callable[[Any], None], after: Optional[defer.Deferred] = None) -> defer.Deferred:
        """
        Once C{after} fired (default: now): C{close_client(client)} in the
        thread if there is a client, then stop the pool.  A failure to close
        is logged; the Deferred fires when the pool is stopped.
        """

        def blocking() -> None:
            client, self.client = self.client, None
            if client is not None:
                close_client(client)

        d = defer.succeed(None) if after is None else after
        d.addCallback(lambda _: self.run(blocking))
        d.addErrback(lambda f: self.log.failure("Kafka {what}: error while closing", f, what=self.what))
        d.addBoth(lambda _: self.pool.stop())
        return d
