"""
How the driver reaches Central, two thin adapters over L{DriverService}:

- L{LinkTransport}: a framed link to Central's drivers endpoint, kept up by
  ``ClientService`` with backoff;
- L{KafkaTransport}: the ``driver.requests`` / ``driver.notifications``
  topics of a L{evnet.kafka.bus.KafkaBus}.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from twisted.application import service
from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime, IStreamClientEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure

from evnet.driver.core import DriverService, _cancel_timer
from evnet.kafka.bus import KafkaBus
from evnet.kafka.errors import BusError
from evnet.protocols import messages as m
from evnet.protocols.link import FramedLink, LinkFactory, LinkHandler

# Kafka: how long to wait for the answer to a hello before saying Central
# does not answer (then the hello is sent again, with a growing delay), and
# how long Central may stay silent while we wait for news of a charge before
# we say hello again (Central answers with the charge in progress and any
# ticket not yet confirmed).
DEFAULT_HELLO_TIMEOUT = 5.0
DEFAULT_PROBE_AFTER = 10.0



class _ReportingEndpoint:
    """An endpoint that tells the transport when a connection attempt fails."""

    def __init__(self, endpoint: IStreamClientEndpoint, failed: Callable[[Failure], None]) -> None:
        self._endpoint = endpoint
        self._failed = failed

    def connect(self, factory: Any) -> defer.Deferred:
        d = self._endpoint.connect(factory)

        def report(failure: Failure) -> Failure:
            self._failed(failure)
            return failure

        return d.addErrback(report)


class LinkTransport(service.MultiService, LinkHandler):
    """
    Central's drivers endpoint over a framed link, kept up by
    ``ClientService`` with backoff: each new link is a new channel (the
    hello goes on it); a lost link and an unreachable Central are reported
    once per outage.  Central counts a ticket as delivered when the link
    ACKs its frame.
    """

    def __init__(
        self,
        endpoint: IStreamClientEndpoint,
        central: str,
        clock: IReactorTime,
        *,
        retry_policy: Optional[Callable[[int], float]] = None,
    ) -> None:
        super().__init__()
        self.central = central
        self.core: Optional[DriverService] = None
        self.link: Optional[FramedLink] = None
        self._outage_reported = False
        self._client = ClientService(
            _ReportingEndpoint(endpoint, self._connect_failed),
            LinkFactory(self, initiator=True, clock=clock),
            retryPolicy=retry_policy or backoffPolicy(initialDelay=0.5, maxDelay=5.0),
            clock=clock,
            prepareConnection=self._prepare,
        )
        self._client.setServiceParent(self)

    def attach(self, core: DriverService) -> None:
        self.core = core

    def describe(self) -> dict[str, Any]:
        return {"central": self.central}

    def hello_accepted(self) -> None:
        self._outage_reported = False

    def close(self) -> None:
        if self.link is not None:
            self.link.close()

    def _prepare(self, link: FramedLink) -> defer.Deferred:
        # Wait for the link to open; a refused or silent peer counts as a failed attempt.
        return link.opened.addErrback(lambda f: (self._connect_failed(f), f)[1])

    def _connect_failed(self, failure: Failure) -> None:
        if self.core.finished or self._outage_reported:
            return
        self._outage_reported = True
        self.core.emit("unreachable", central=self.central, reason=failure.getErrorMessage())

    # -- LinkHandler ---------------------------------------------------------

    def linkOpened(self, link: FramedLink) -> None:
        self.link = link
        self.core.channel_opened(link)

    def linkLost(self, link: FramedLink, reason: Failure) -> None:
        if link is not self.link:
            return
        self.link = None
        was_ready = self.core.ready
        self.core.channel_lost(link)
        if was_ready and not self.core.finished and not self._outage_reported:
            self.core.emit("link_lost", central=self.central)

    def messageReceived(self, link: FramedLink, msg: m.Message) -> None:
        self.core.message_received(link, msg)


class WatchedBus(KafkaBus):
    """
    A L{KafkaBus} that also tells its C{watchers} when Kafka cannot be
    reached (C{watcher.kafka_unreachable(reason)}) and when it can
    (C{watcher.kafka_reachable()}), so a command can show it to its user;
    the bus itself only logs it.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.watchers: list[Any] = []

    def unreachable(self, reason: Any) -> None:
        super().unreachable(reason)
        for watcher in self.watchers:
            watcher.kafka_unreachable(reason)

    def reachable(self) -> None:
        super().reachable()
        for watcher in self.watchers:
            watcher.kafka_reachable()


class KafkaTransport(service.MultiService):
    """
    Central through Kafka: requests (DRIVER, REQ, LIST, and
    ``ACCEPTED#TICKET#sessionId`` for every TICKET received, which is how
    Central learns a ticket was delivered) go to ``driver.requests`` keyed
    by the driver id; Central's messages come from ``driver.notifications``,
    this driver's key only, in consumer group ``evdriver-ID`` (a restart
    resumes where the last run stopped).

    The transport itself is the one channel.  The hello goes out once the
    consumer is positioned (on a first start the partition is read from its
    end: an answer published before that would be missed).  A hello with no
    answer within C{hello_timeout} is reported once ("Central does not
    answer") and sent again with a growing delay.  While the driver waits
    for news and Central has been silent for C{probe_after} seconds, it says
    hello again: Central answers with the charge in progress and any ticket
    not yet confirmed (this also covers a Central that restarted).
    """

    log = Logger()

    def __init__(
        self,
        bus: Any,
        driver_id: str,
        clock: IReactorTime,
        *,
        hello_timeout: float = DEFAULT_HELLO_TIMEOUT,
        probe_after: float = DEFAULT_PROBE_AFTER,
        hello_backoff: Optional[Callable[[int], float]] = None,
    ) -> None:
        super().__init__()
        self.bus = bus
        self.driver_id = driver_id
        self.clock = clock
        self.probe_after = probe_after
        self.hello_backoff = hello_backoff or backoffPolicy(
            initialDelay=hello_timeout, maxDelay=max(30.0, hello_timeout), factor=2.0
        )
        self.core: Optional[DriverService] = None
        self.hello_pending = False  # a hello went out and Central has not answered it
        self._hellos_unanswered = 0
        self._silence_reported = False
        self._kafka_down = False
        self._hello_timer: Any = None
        self._probe_timer: Any = None
        bus.setServiceParent(self)
        if hasattr(bus, "watchers"):
            bus.watchers.append(self)
        self.consumer = bus.subscribe_key(
            "driver.notifications", driver_id, self._record, group_id=f"evdriver-{driver_id}"
        )

    def attach(self, core: DriverService) -> None:
        self.core = core

    def describe(self) -> dict[str, Any]:
        return {"central": self.bus.bootstrap, "via": "kafka"}

    def startService(self) -> None:
        super().startService()
        self.consumer.ready.addCallback(self._positioned)

    def _positioned(self, _: Any) -> None:
        if self.running and not self.core.finished:
            self.core.channel_opened(self)

    def stopService(self) -> defer.Deferred:
        self.close()
        return super().stopService()

    def close(self) -> None:
        self._cancel("_hello_timer")
        self._cancel("_probe_timer")

    # -- the channel: what the driver sends ------------------------------------

    def send(self, msg: m.Message) -> None:
        if isinstance(msg, m.Driver):
            self._hello_sent()
        d = self.bus.publish("driver.requests", self.driver_id, msg)
        d.addErrback(self._not_sent, msg)

    def _not_sent(self, failure: Failure, msg: m.Message) -> None:
        failure.trap(BusError)
        self.log.warn(
            "{code} not sent to Kafka at {where}: {why}",
            code=msg.code, where=self.bus.bootstrap, why=failure.getErrorMessage(),
        )
        if self.core.finished:
            return
        self.core.emit("not_sent", code=msg.code, kafka=self.bus.bootstrap, reason=failure.getErrorMessage())
        if isinstance(msg, m.Req):
            self.core.request_not_sent()
            self._hello()  # its answer (after the settle pause) sends the REQ again

    # -- hellos ----------------------------------------------------------------

    def _hello(self) -> None:
        if not self.core.finished:
            self.send(m.Driver(self.driver_id))

    def _hello_sent(self) -> None:
        self.hello_pending = True
        self._cancel("_probe_timer")
        if self._hello_timer is None:
            delay = self.hello_backoff(self._hellos_unanswered)
            self._hello_timer = self.clock.callLater(delay, self._hello_unanswered)

    def _hello_unanswered(self) -> None:
        self._hello_timer = None
        self._hellos_unanswered += 1
        if self.core.finished:
            return
        if not self._silence_reported and not self._kafka_down:
            self._silence_reported = True
            self.core.central_silent()
            self.core.emit("no_answer", central=self.bus.bootstrap)
        self._hello()

    def hello_accepted(self) -> None:
        self.hello_pending = False
        self._hellos_unanswered = 0
        self._silence_reported = False
        self._cancel("_hello_timer")

    def _cancel(self, name: str) -> None:
        _cancel_timer(self, name)

    def _heard(self) -> None:
        """Central said something: wait C{probe_after} more seconds before checking on it."""
        self._cancel("_probe_timer")
        if self.running and not self.hello_pending and not self.core.finished:
            self._probe_timer = self.clock.callLater(self.probe_after, self._probe)

    def _probe(self) -> None:
        self._probe_timer = None
        if self.core.awaiting_central:
            self._hello()
        else:
            self._heard()

    # -- what Central sends ------------------------------------------------------

    def _record(self, topic: str, key: str, msg: m.Message) -> None:
        if isinstance(msg, m.Accepted) and msg.what == "DRIVER" and not self.hello_pending:
            return  # the answer to an earlier hello (or an earlier run's, replayed)
        if isinstance(msg, m.Ticket) and self.running:
            # Kafka's acknowledgement says nothing about the driver: confirm it
            # ourselves, every copy (Central re-sends it until it hears of it);
            # before the driver sees it, since the last ticket ends the run.
            self.send(m.Accepted("TICKET", msg.session_id))
        self.core.message_received(self, msg)
        self._heard()

    # -- Kafka's reachability (from WatchedBus) ---------------------------------

    def kafka_unreachable(self, reason: Any) -> None:
        if self._kafka_down or self.core is None or self.core.finished:
            return
        self._kafka_down = True
        why = reason.getErrorMessage() if isinstance(reason, Failure) else (str(reason) or type(reason).__name__)
        self.core.emit("kafka_unreachable", kafka=self.bus.bootstrap, reason=why)

    def kafka_reachable(self) -> None:
        if not self._kafka_down or self.core.finished:
            return
        self._kafka_down = False
        self.core.emit("kafka_back", kafka=self.bus.bootstrap)
