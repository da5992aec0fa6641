"""
How the driver reaches Central, two thin adapters over L{DriverService}:

- L{LinkTransport}: a framed link to Central's drivers endpoint, kept up by
  ``ClientService`` with backoff;
- L{KafkaTransport}: the ``driver.requests`` / ``driver.notifications``
  topics of a L{evnet.kafka.bus.KafkaBus}.

Both offer the driver the same calls (C{attach}, C{describe},
C{hello_accepted}, C{not_sent}, C{close}) and hand it the channel its
messages go on (a C{sendMessage(msg)} that returns a Deferred).  Their
own states (an outage told to the user, hellos waiting for an answer) are
machines of L{evnet.driver.states}.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from twisted.application import service
from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime, IStreamClientEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure

from evnet.driver.core import DriverService, Timer
from evnet.driver.states import HELLOS, OUTAGES, Hello, HelloInput, Outage, OutageInput
from evnet.kafka.errors import BusError
from evnet.protocols.machine import Machine
from evnet.protocols import messages as m
from evnet.protocols import security
from evnet.protocols.sealed import SealedChannel
from evnet.protocols.link import FramedLink, LinkClosed, LinkFactory, LinkHandler
from evnet.protocols.vocabulary import (
    STATUS_KEY,
    TOPIC_DRIVER_NOTIFICATIONS,
    TOPIC_DRIVER_REQUESTS,
    TOPIC_NETWORK_STATUS,
    WHAT_AUTH,
    WHAT_DRIVER,
    WHAT_TICKET,
)

# Kafka: how long to wait for the answer to a hello before saying Central
# does not answer (then the hello is sent again, with a growing delay), and
# how long Central may stay silent while we wait for news of a charge before
# we say hello again (Central answers with the charge in progress and any
# ticket not yet confirmed).
DEFAULT_HELLO_TIMEOUT = 5.0
DEFAULT_PROBE_AFTER = 10.0


class _Transport(service.MultiService):
    """
    What both transports share: the driver they serve, logged rejections of
    their machines, and, with credentials (C{credentials}: an object with
    C{driver_id} and C{secret}), the driver's login (docs/protocol.md §7,
    "Drivers"): AUTH, PROOF to the CHALLENGE, the key from KEY; then every
    message is sealed (role D) and only what Central sealed (role C) opens.
    """

    log = Logger()

    def __init__(self, credentials: Any = None) -> None:
        super().__init__()
        self.core: Optional[DriverService] = None
        self.credentials = credentials
        self._login: Optional[security.ClientLogin] = None
        self.sealer: Optional[security.Sealer] = None
        self.opener: Optional[security.Opener] = None

    def _start_login(self) -> m.Auth:
        self._login = security.ClientLogin(self.credentials.driver_id, self.credentials.secret)
        return self._login.start()

    def _login_step(self, msg: m.Message) -> Optional[Any]:
        """
        A plain message while logging in: the PROOF to send for a CHALLENGE,
        True once KEY gave the key, False when Central refused the login
        (told to the driver as a refused hello), None for anything else.
        """
        login = self._login
        if login is None:
            return None
        if isinstance(msg, m.Challenge) and msg.cp_id == login.cp_id:
            try:
                return login.answer(msg)
            except security.SecurityError as e:
                self.log.warn("driver login: a CHALLENGE refused: {why}", why=str(e))
                return None
        if isinstance(msg, m.Key) and msg.cp_id == login.cp_id:
            try:
                key_id, key = login.accept(msg)
            except security.SecurityError as e:
                self.log.warn("driver login: a KEY refused: {why}", why=str(e))  # not Central, or an old one
                return None
            self._login = None
            self.sealer = security.Sealer(login.cp_id, key_id, key, security.ROLE_DRIVER)
            self.opener = security.Opener(login.cp_id, key_id, key, (security.ROLE_CENTRAL,))
            return True
        if isinstance(msg, m.Refused) and msg.what == WHAT_AUTH:
            if not login.refuses(msg):  # another login of this id (through Kafka all are answered on one topic)
                self.log.info("driver login: a refusal of another login ignored ({reason})", reason=msg.reason)
                return None
            self._login = None
            self.core.message_received(self, m.Refused(WHAT_DRIVER, login.cp_id, f"login refused: {msg.reason}"))
            return False
        return None

    def _open(self, msg: m.Message) -> Optional[m.Message]:
        """What Central sealed for this driver; None (logged) for anything else once logged in."""
        if not isinstance(msg, m.Sec):
            self.log.info("driver: a plain {code} ignored: this driver's messages are sealed", code=msg.code)
            return None
        try:
            return security.open_message(self.opener, msg)
        except (security.SecurityError, m.MessageError) as e:
            self.log.warn("driver: a sealed message refused: {why}", why=str(e))
            return None

    def attach(self, core: DriverService) -> None:
        self.core = core

    def _machine(self, name: str, table: Any, state: Any) -> Machine:
        return Machine(name, table, state, self._rejected)

    def _rejected(self, why: str) -> None:
        self.log.info("driver transport {name}: {why}; ignored", name=type(self).__name__, why=why)


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


class LinkTransport(_Transport, LinkHandler):
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
        credentials: Any = None,
    ) -> None:
        super().__init__(credentials)
        self.central = central
        self.link: Optional[FramedLink] = None  # the open link
        self.channel: Any = None  # what the driver speaks through: the link, or sealed over it once logged in
        self.outage = self._machine("outage", OUTAGES, Outage.CLEAR)
        self._client = ClientService(
            _ReportingEndpoint(endpoint, self._connect_failed),
            LinkFactory(self, initiator=True, clock=clock),
            retryPolicy=retry_policy or backoffPolicy(initialDelay=0.5, maxDelay=5.0),
            clock=clock,
            prepareConnection=self._prepare,
        )
        self._client.setServiceParent(self)

    def describe(self) -> dict[str, Any]:
        return {"central": self.central}

    def hello_accepted(self) -> None:
        self.outage.attempt(OutageInput.RECOVERED)

    def not_sent(self, msg: m.Message, failure: Failure) -> None:
        """Nothing to add: a link that loses a message is lost, and said so by L{linkLost}."""

    def close(self) -> None:
        if self.link is not None:
            self.link.close()

    def _prepare(self, link: FramedLink) -> None:
        """
        A new connection: a link that does not open (a silent or refusing
        peer) is reported.  ``ClientService`` is not made to wait for the
        opening: such a link is lost, and ClientService, which sees it go,
        tries again.  (Failing the connection here as well would tell
        ClientService of one failure twice, and stopping it while it waited
        would leave the connection behind.)
        """

        def not_opened(failure: Failure) -> None:
            failure.trap(LinkClosed)
            self._connect_failed(failure)

        link.opened.addErrback(not_opened)

    def _connect_failed(self, failure: Failure) -> None:
        if self.core.finished:
            return
        if self.outage.attempt(OutageInput.FAILED) and self.outage.changed:
            self.core.emit("unreachable", central=self.central, reason=failure.getErrorMessage())

    # -- LinkHandler ---------------------------------------------------------

    def linkOpened(self, link: FramedLink) -> None:
        self.link = link
        self.sealer = self.opener = None
        if self.credentials is None:
            self.channel = link
            self.core.channel_opened(link)
        else:
            link.send(self._start_login())

    def linkLost(self, link: FramedLink, reason: Failure) -> None:
        if link is not self.link:
            return
        self.link = None
        self._login = None
        was_ready = self.core.ready
        channel, self.channel = self.channel, None
        if channel is not None:
            self.core.channel_lost(channel)
        if was_ready and not self.core.finished and self.outage.state is Outage.CLEAR:
            self.core.emit("link_lost", central=self.central)

    def messageReceived(self, link: FramedLink, msg: m.Message) -> None:
        if link is not self.link:
            return
        if self.credentials is None:
            self.core.message_received(link, msg)
        elif self.sealer is None:
            step = self._login_step(msg)
            if isinstance(step, m.Proof):
                link.send(step)
            elif step is True:
                self.channel = SealedChannel(link, self.sealer)
                self.core.channel_opened(self.channel)
        else:
            inner = self._open(msg)
            if inner is not None:
                self.core.message_received(self.channel, inner)


def _why(reason: Any) -> str:
    if isinstance(reason, Failure):
        return reason.getErrorMessage()
    return str(reason) or type(reason).__name__


class KafkaTransport(_Transport):
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
    not yet confirmed (this also covers a Central that restarted).  Kafka
    coming and going is learnt from the bus's status observers
    (C{bus.add_status_observer}) and told to the user once per outage.
    """

    def __init__(
        self,
        bus: Any,
        driver_id: str,
        clock: IReactorTime,
        *,
        hello_timeout: float = DEFAULT_HELLO_TIMEOUT,
        probe_after: float = DEFAULT_PROBE_AFTER,
        hello_backoff: Optional[Callable[[int], float]] = None,
        credentials: Any = None,
    ) -> None:
        super().__init__(credentials)
        self.bus = bus
        self.driver_id = driver_id
        self.clock = clock
        self.probe_after = probe_after
        self.hello_backoff = hello_backoff or backoffPolicy(
            initialDelay=hello_timeout, maxDelay=max(30.0, hello_timeout), factor=2.0
        )
        self.hellos = self._machine("hellos", HELLOS, Hello.QUIET)
        self.kafka = self._machine("kafka", OUTAGES, Outage.CLEAR)
        self._hellos_unanswered = 0
        self._hello_timer = Timer(clock)
        self._probe_timer = Timer(clock)
        bus.setServiceParent(self)
        bus.add_status_observer(self._kafka_status)
        self.consumer = bus.subscribe_key(
            TOPIC_DRIVER_NOTIFICATIONS, driver_id, self._record, group_id=f"evdriver-{driver_id}"
        )
        # Point 11: which CPs are available, as Central publishes it whenever a CP changes.
        bus.subscribe_key(TOPIC_NETWORK_STATUS, STATUS_KEY, self._status, group_id=f"evdriver-{driver_id}-status")

    def describe(self) -> dict[str, Any]:
        return {"central": self.bus.bootstrap, "via": "kafka"}

    def startService(self) -> None:
        super().startService()
        self.consumer.ready.addCallback(self._positioned)

    def _positioned(self, _: Any) -> None:
        if self.running and not self.core.finished:
            if self.credentials is None:
                self.core.channel_opened(self)
            else:
                self._log_in()

    def _log_in(self) -> None:
        """Log in through Kafka (again: a Central that restarted has forgotten the key); the hello follows KEY."""
        self.sealer = self.opener = None
        self.bus.publish(TOPIC_DRIVER_REQUESTS, self.driver_id, self._start_login()).addErrback(self._failed, m.Auth(self.driver_id, ""))
        if not self._hello_timer.pending:
            self._hello_timer.start(self.hello_backoff(self._hellos_unanswered), self._hello_unanswered)

    def stopService(self) -> defer.Deferred:
        self.close()
        return super().stopService()

    def close(self) -> None:
        self._hello_timer.cancel()
        self._probe_timer.cancel()

    # -- the channel: what the driver sends ------------------------------------

    def sendMessage(self, msg: m.Message) -> defer.Deferred:
        """Publish C{msg}; the Deferred fails (with a BusError) if Kafka does not take it."""
        if isinstance(msg, m.Driver):
            self._hello_sent()
        if self.sealer is not None:
            msg = security.seal_message(self.sealer, msg)
        elif self.credentials is not None:  # (a login under way: what it sends waits for the key)
            return defer.fail(BusError("not logged in yet"))
        return self.bus.publish(TOPIC_DRIVER_REQUESTS, self.driver_id, msg)

    def _send(self, msg: m.Message) -> None:
        """What the transport sends by itself: hellos, ticket receipts, the PROOF of a login."""
        if isinstance(msg, m.Proof):
            self.bus.publish(TOPIC_DRIVER_REQUESTS, self.driver_id, msg).addErrback(self._failed, msg)
            return
        self.sendMessage(msg).addErrback(self._failed, msg)

    def _failed(self, failure: Failure, msg: m.Message) -> None:
        self.log.warn(
            "{code} not sent to Kafka at {where}: {why}",
            code=msg.code, where=self.bus.bootstrap, why=failure.getErrorMessage(),
        )
        self.not_sent(msg, failure)

    def not_sent(self, msg: m.Message, failure: Failure) -> None:
        """Kafka did not take C{msg}: say so; a REQ or LIST goes again after the next hello."""
        if self.core.finished:
            return
        self.core.emit("not_sent", code=msg.code, kafka=self.bus.bootstrap, reason=failure.getErrorMessage())
        if isinstance(msg, (m.Req, m.ListCps)):
            self._hello()  # its answer (after the settle pause) sends it again

    # -- hellos ----------------------------------------------------------------

    def _hello(self) -> None:
        if not self.core.finished:
            self._send(m.Driver(self.driver_id))

    def _hello_sent(self) -> None:
        self.hellos.attempt(HelloInput.SENT)
        self._probe_timer.cancel()
        if not self._hello_timer.pending:
            self._hello_timer.start(self.hello_backoff(self._hellos_unanswered), self._hello_unanswered)

    def _hello_unanswered(self) -> None:
        self._hellos_unanswered += 1
        if self.core.finished:
            return
        # While Kafka is away its outage says it all; Central's silence is told after.
        if self.kafka.state is Outage.CLEAR and self.hellos.attempt(HelloInput.UNANSWERED) and self.hellos.changed:
            self.core.central_silent()
            self.core.emit("no_answer", central=self.bus.bootstrap)
        if self.credentials is not None:
            self._log_in()
        else:
            self._hello()

    def hello_accepted(self) -> None:
        self.hellos.attempt(HelloInput.ANSWERED)
        self._hellos_unanswered = 0
        self._hello_timer.cancel()

    def _heard(self) -> None:
        """Central said something: wait C{probe_after} more seconds before checking on it."""
        self._probe_timer.cancel()
        if self.running and self.hellos.state is Hello.QUIET and not self.core.finished:
            self._probe_timer.start(self.probe_after, self._probe)

    def _probe(self) -> None:
        if self.core.awaiting_central:
            self._hello()
        else:
            self._heard()

    # -- what Central sends ------------------------------------------------------

    def _record(self, topic: str, key: str, msg: m.Message) -> None:
        if self.credentials is not None:
            if self.sealer is None:
                step = self._login_step(msg)
                if isinstance(step, m.Proof):
                    self._send(step)
                elif step is True:
                    self._hello_timer.cancel()
                    if self.core.channel is None:
                        self.core.channel_opened(self)
                    else:
                        self._hello()
                return
            inner = self._open(msg)
            if inner is None:
                return
            msg = inner
        if isinstance(msg, m.Accepted) and msg.what == WHAT_DRIVER and self.hellos.state is Hello.QUIET:
            return  # the answer to an earlier hello (or an earlier run's, replayed)
        if isinstance(msg, m.Ticket) and self.running:
            # Kafka's acknowledgement says nothing about the driver: confirm it
            # ourselves, every copy (Central re-sends it until it hears of it);
            # before the driver sees it, since the last ticket ends the run.
            self._send(m.Accepted(WHAT_TICKET, msg.session_id))
        self.core.message_received(self, msg)
        self._heard()

    def _status(self, topic: str, key: str, msg: m.Message) -> None:
        if isinstance(msg, m.Available) and self.core is not None and not self.core.list_only:
            self.core.message_received(self, msg)

    # -- Kafka's reachability (the bus's status observer) -------------------------

    def _kafka_status(self, reachable: bool, reason: Any) -> None:
        if self.core is None or self.core.finished:
            return
        if reachable:
            if self.kafka.attempt(OutageInput.RECOVERED) and self.kafka.changed:
                self.core.emit("kafka_back", kafka=self.bus.bootstrap)
        elif self.kafka.attempt(OutageInput.FAILED) and self.kafka.changed:
            self.core.emit("kafka_unreachable", kafka=self.bus.bootstrap, reason=_why(reason))
