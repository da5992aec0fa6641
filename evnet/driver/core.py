"""
The driver's core: L{DriverService} says hello to Central, works through the
requests, follows each charge to its ticket, and reports everything it sees
as *events*: plain dicts with a ``type`` and named fields (the same dicts
are printed by ``evdriver --json``).  Its state is the explicit machines of
L{evnet.driver.states}.  It does not know how Central is reached: a
transport (L{evnet.driver.transports}) calls it and carries its messages.

The wire contract is Central's (``docs/protocol.md``); ``docs/driver.md``
describes the command.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from twisted.application import service
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from evnet.driver.requests import Progress, Request
from evnet.driver.states import (
    AWAITING_CENTRAL,
    PHASES,
    REACH,
    UNANSWERED,
    ListParts,
    Phase,
    PhaseInput,
    Reach,
    ReachInput,
)
from evnet.protocols import messages as m
from evnet.protocols.machine import Machine
from evnet.protocols.vocabulary import WHAT_DRIVER

DEFAULT_WAIT = 4.0
DEFAULT_CHARGE_TIMEOUT = 600.0
# After hello, how long to let Central re-send missed tickets and the
# AUTHORIZED of a charge in progress before sending a request.
DEFAULT_SETTLE = 1.0

# What C{DriverService.done} fires with: the exit codes of evdriver.
EXIT_OK = 0  # the file was worked through (or --list answered)
EXIT_REFUSED = 1  # Central refused the driver id
EXIT_NO_LIST = 3  # --list: no (whole) list from Central within --charge-timeout
EXIT_INTERRUPTED = 130

Event = dict[str, Any]


class Timer:
    """At most one pending call on C{clock}: L{start} replaces it, L{cancel} drops it."""

    def __init__(self, clock: IReactorTime) -> None:
        self.clock = clock
        self._call: Any = None

    @property
    def pending(self) -> bool:
        return self._call is not None

    def start(self, delay: float, fn: Callable[..., None], *args: Any) -> None:
        self.cancel()
        self._call = self.clock.callLater(delay, self._fire, fn, args)

    def _fire(self, fn: Callable[..., None], args: tuple) -> None:
        self._call = None
        fn(*args)

    def cancel(self) -> None:
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None


@dataclass
class Charge:
    """A charge the driver follows: one of its requests, or one recovered from an earlier run."""

    cp_id: str
    request: Optional[Request] = None
    n: int = 0  # 1-based position in the file; 0 for a recovered charge
    session: Optional[str] = None
    timer: Optional[Timer] = None  # the give-up timer, while armed
    req_channel: Any = None  # the channel its REQ last went on


@dataclass
class Summary:
    tickets: list[Event] = field(default_factory=list)
    refused: list[Event] = field(default_factory=list)
    unfinished: list[Event] = field(default_factory=list)


class DriverService(service.MultiService):
    """
    The driver, whatever the transport: works through C{requests} against
    Central, reached through C{transport} (an L{evnet.driver.transports}
    transport), reporting events to C{emit}.  C{done} fires with the exit
    code: L{EXIT_OK} when it has finished, L{EXIT_REFUSED} when Central
    refused the driver id, L{EXIT_INTERRUPTED} after L{interrupt}.  With
    C{list_only}, it asks which CPs are available instead and finishes once
    the whole list is in (L{EXIT_OK}), or after C{charge_timeout} seconds
    with no part of it (L{EXIT_NO_LIST}).

    The transport calls L{channel_opened} when Central can be spoken to
    (the hello goes out then), L{message_received} for each message from
    Central, L{channel_lost} when a link is lost and L{central_silent} when
    Central stopped answering.  The driver calls the transport's
    C{hello_accepted()}, C{not_sent(msg, failure)}, C{describe()} and
    C{close()}, and a channel's C{sendMessage(msg)}: a Deferred that fails
    (never raises) when the message cannot be sent.
    """

    log = Logger()

    def __init__(
        self,
        driver_id: str,
        requests: list[Request],
        transport: Any,
        emit: Callable[[Event], None],
        clock: IReactorTime,
        *,
        wait: float = DEFAULT_WAIT,
        charge_timeout: float = DEFAULT_CHARGE_TIMEOUT,
        settle: float = DEFAULT_SETTLE,
        list_only: bool = False,
        progress: Optional[Progress] = None,
    ) -> None:
        super().__init__()
        self.driver_id = driver_id
        self.requests = list(requests)
        self._emit = emit
        self.clock = clock
        self.wait = wait
        self.charge_timeout = charge_timeout
        self.settle = settle
        self.list_only = list_only
        self._phase = Machine("phase", PHASES, Phase.STARTING, self._rejected)
        self._reach = Machine("reach", REACH, Reach.AWAY, self._rejected)
        self.progress = progress
        # The next request to send; a restarted driver goes on where it was.
        self.index, self.resume_session = progress.load() if progress is not None else (0, None)
        if self.index > len(requests):
            self.index, self.resume_session = 0, None
        self.current: Optional[Charge] = None
        self.recovered: dict[str, Charge] = {}
        self.seen_tickets: set[str] = set()
        self.summary = Summary()
        self.list_parts = ListParts()
        self.status_parts = ListParts()  # the lists that come while working through the file
        self.channel: Any = None  # where the hello went: a FramedLink, or the Kafka transport
        self.done: defer.Deferred = defer.Deferred()
        self._hellos = 0
        self._settle_timer = Timer(clock)
        self._wait_timer = Timer(clock)
        self._list_timer = Timer(clock)
        self.transport = transport
        transport.attach(self)
        transport.setServiceParent(self)

    def startService(self) -> None:
        if self.list_only:
            self._list_timer.start(self.charge_timeout, self._list_gave_up)
        elif self.index or self.resume_session:
            self.emit("resumed", n=self.index + 1, total=len(self.requests), session=self.resume_session)
        super().startService()

    # -- the machines --------------------------------------------------------

    @property
    def phase(self) -> Phase:
        return self._phase.state

    @property
    def ready(self) -> bool:
        """Central accepted the hello on the current channel."""
        return self._reach.state is Reach.READY

    @property
    def finished(self) -> bool:
        return self.phase is Phase.DONE

    @property
    def awaiting_central(self) -> bool:
        """Something is expected from Central: an answer, news of a charge, the list."""
        return self.phase in AWAITING_CENTRAL or (bool(self.recovered) and not self.finished)

    def _rejected(self, why: str) -> None:
        self.log.info("driver {driver}: {why}; ignored", driver=self.driver_id, why=why)

    # -- events ------------------------------------------------------------

    def emit(self, type: str, **fields: Any) -> None:
        event: Event = {"type": type, "driver": self.driver_id}
        event.update(fields)
        self._emit(event)

    def _where(self, charge: Charge) -> dict[str, Any]:
        if charge.request is None:
            return {"cp": charge.cp_id, "recovered": True}
        return {"cp": charge.cp_id, "n": charge.n, "total": len(self.requests)}

    def _save_progress(self, session: Optional[str] = None) -> None:
        if self.progress is not None:
            self.progress.save(self.index, session)

    # -- sending -------------------------------------------------------------

    def _send(self, msg: m.Message) -> None:
        channel = self.channel
        channel.sendMessage(msg).addErrback(self._not_sent, channel, msg)

    def _not_sent(self, failure: Failure, channel: Any, msg: m.Message) -> None:
        self.log.warn(
            "driver {driver}: {code} not sent to Central: {why}",
            driver=self.driver_id, code=msg.code, why=failure.getErrorMessage(),
        )
        if self.finished:
            return
        charge = self.current
        if isinstance(msg, m.Req) and charge is not None and charge.req_channel is channel:
            self._phase.attempt(PhaseInput.LOST)  # sent again after the next hello
        self.transport.not_sent(msg, failure)

    # -- the transport's calls ----------------------------------------------

    def channel_opened(self, channel: Any) -> None:
        """Central can be spoken to through C{channel}: say hello."""
        self.channel = channel
        self._reach.attempt(ReachInput.OPENED)
        self._send(m.Driver(self.driver_id))

    def channel_lost(self, channel: Any) -> None:
        """The link C{channel} is gone; a hello on the next one resumes."""
        if channel is not self.channel:
            return
        self.channel = None
        self._reach.attempt(ReachInput.LOST)
        self._settle_timer.cancel()
        self._phase.attempt(PhaseInput.LOST)

    def central_silent(self) -> None:
        """Central does not answer our hello: no new request until it does."""
        self._reach.attempt(ReachInput.SILENT)

    def _hello_accepted(self) -> None:
        self.transport.hello_accepted()
        if not self._reach.attempt(ReachInput.ACCEPTED):
            return
        if self._reach.changed:
            self.emit("connected", again=self._hellos > 0, **self.transport.describe())
            self._hellos += 1
            # Central has a fresh chance to answer: restart the give-up timers.
            for charge in [self.current, *self.recovered.values()]:
                if charge is not None and charge.timer is not None and charge.timer.pending:
                    self._arm(charge)
        # (Otherwise it answers a hello that checked Central is still there.)
        if self.list_only:
            if self._phase.attempt(PhaseInput.LIST):
                self._send(m.ListCps(self.driver_id))
            return
        self._settle_timer.start(self.settle, self._settled)

    def _settled(self) -> None:
        if not self._phase.attempt(PhaseInput.SETTLED):
            return
        if self.phase is Phase.IDLE:
            self._next()
        elif self.phase is Phase.REQUEST_LOST:
            # The answer to our REQ was lost with the old link (or the REQ
            # never went) and Central re-sent nothing about it: ask again.
            self._send_request(self.current)

    # -- the requests ------------------------------------------------------

    def _next(self) -> None:
        if self.phase is not Phase.IDLE or not self.ready or self.recovered:
            return  # called again when Central is reached / the recovered charge ends
        if self.index >= len(self.requests):
            self._finish(EXIT_OK)
            return
        request = self.requests[self.index]
        self.current = Charge(request.cp_id, request, self.index + 1)
        # Point 11: which CPs are available, shown as it goes on (best effort:
        # what a lost LIST means is told by the REQ behind it).
        self.channel.sendMessage(m.ListCps(self.driver_id)).addErrback(lambda _: None)
        self._send_request(self.current)

    def _send_request(self, charge: Charge) -> None:
        if not self._phase.attempt(PhaseInput.SEND):
            return
        request = charge.request
        charge.req_channel = self.channel
        self.emit("request", target_kwh=request.target_kwh, **self._where(charge))
        self._send(m.Req(self.driver_id, request.cp_id, request.target_kwh))
        self._arm(charge)

    def _outcome(self, event: PhaseInput) -> None:
        """The current request has its result (C{event}): pause, then the next one."""
        self._phase.attempt(event)
        charge, self.current = self.current, None
        self._disarm(charge)
        self.index += 1
        self._save_progress()
        if self.index >= len(self.requests):
            self._waited()  # no pause after the last one
            return
        self.emit("wait", seconds=self.wait)
        self._wait_timer.start(self.wait, self._waited)

    def _waited(self) -> None:
        if self._phase.attempt(PhaseInput.WAITED):
            self._next()

    # -- give-up timers ----------------------------------------------------

    def _arm(self, charge: Charge) -> None:
        if charge.timer is None:
            charge.timer = Timer(self.clock)
        charge.timer.start(self.charge_timeout, self._gave_up, charge)

    def _disarm(self, charge: Optional[Charge]) -> None:
        if charge is not None and charge.timer is not None:
            charge.timer.cancel()

    def _gave_up(self, charge: Charge) -> None:
        self.emit("timeout", session=charge.session, seconds=self.charge_timeout, **self._where(charge))
        what = "no answer" if charge.session is None else "no news of the charge"
        self.summary.unfinished.append(
            {"cp": charge.cp_id, "session": charge.session, "reason": f"{what} for {self.charge_timeout:g} s"}
        )
        if charge is self.current:
            self._outcome(PhaseInput.GIVE_UP)
        else:
            self.recovered.pop(charge.session, None)
            self._next()

    def _list_gave_up(self) -> None:
        self.emit(
            "list_timeout",
            seconds=self.charge_timeout,
            part=self.list_parts.part,
            parts=self.list_parts.parts,
            **self.transport.describe(),
        )
        self._finish(EXIT_NO_LIST)

    # -- messages from Central ---------------------------------------------

    def message_received(self, link: Any, msg: m.Message) -> None:
        """A message from Central, through C{link} (the channel it came by)."""
        if self.finished:
            return
        handler = getattr(self, "_on_" + type(msg).__name__, None)
        if handler is None:
            self.log.info("driver {driver}: unexpected {code} from Central ignored", driver=self.driver_id, code=msg.code)
            return
        handler(link, msg)

    def _on_Accepted(self, link: Any, msg: m.Accepted) -> None:
        if msg.what == WHAT_DRIVER and link is self.channel:
            self._hello_accepted()

    def _on_Refused(self, link: Any, msg: m.Refused) -> None:
        if msg.what == WHAT_DRIVER:
            self.emit("refused", reason=msg.reason)
            self._finish(EXIT_REFUSED)
        else:
            self.log.info("driver {driver}: Central refused {what}: {reason}", driver=self.driver_id, what=msg.what, reason=msg.reason)

    def _on_Authorized(self, link: Any, msg: m.Authorized) -> None:
        charge = self.current
        if charge is not None and msg.session_id == charge.session:
            return  # re-sent after a reconnect: we are following it already
        if msg.session_id in self.recovered or msg.session_id in self.seen_tickets:
            return
        if charge is not None and msg.cp_id == charge.cp_id and self._phase.can(PhaseInput.AUTHORIZE):
            self._phase.attempt(PhaseInput.AUTHORIZE)
            charge.session = msg.session_id
            self._save_progress(msg.session_id)
            self.emit("authorized", session=msg.session_id, **self._where(charge))
            self._arm(charge)
            return
        # A charge this driver started in an earlier run: follow it to its ticket.
        recovered = Charge(msg.cp_id, session=msg.session_id)
        self.recovered[msg.session_id] = recovered
        self.emit("recovered_charge", cp=msg.cp_id, session=msg.session_id)
        self._arm(recovered)

    def _on_Denied(self, link: Any, msg: m.Denied) -> None:
        charge = self.current
        if charge is None or msg.cp_id != charge.cp_id or not self._phase.can(PhaseInput.DENY):
            self.log.info("driver {driver}: DENIED for {cp} not expected, ignored", driver=self.driver_id, cp=msg.cp_id)
            return
        self.emit("denied", reason=msg.reason, **self._where(charge))
        self.summary.refused.append({"cp": charge.cp_id, "reason": msg.reason})
        self._outcome(PhaseInput.DENY)

    def _on_Telem(self, link: Any, msg: m.Telem) -> None:
        charge = self.current
        if charge is not None and msg.session_id == charge.session:
            if not self._phase.attempt(PhaseInput.TELEMETRY):
                return
        else:
            charge = self.recovered.get(msg.session_id)
            if charge is None:
                return
        self._arm(charge)
        self.emit(
            "charging",
            session=msg.session_id,
            kwh=msg.kwh,
            kw=msg.kw,
            euros=msg.euros,
            seconds=msg.seconds,
            **self._where(charge),
        )

    def _on_Ticket(self, link: Any, msg: m.Ticket) -> None:
        if msg.session_id in self.seen_tickets:
            return  # a duplicate: our ACK of the first one was lost
        self.seen_tickets.add(msg.session_id)
        charge = self.current
        mine = charge is not None and (
            msg.session_id == charge.session
            # The charge ended while we were away, before we heard AUTHORIZED.
            or (self.phase in UNANSWERED and charge.req_channel is not link and msg.cp_id == charge.cp_id)
        )
        if mine:
            charge.session = msg.session_id
        else:
            charge = self.recovered.pop(msg.session_id, None) or Charge(msg.cp_id or "?", session=msg.session_id)
            self._disarm(charge)
        ticket = {
            "session": msg.session_id,
            "kwh": msg.kwh,
            "euros": msg.euros,
            "seconds": msg.duration_seconds,
            "reason": msg.reason,
            **self._where(charge),
        }
        self.emit("ticket", **ticket)
        self.summary.tickets.append({k: v for k, v in ticket.items() if k not in ("n", "total")})
        if mine:
            self._outcome(PhaseInput.TICKET)
            return
        if msg.session_id == self.resume_session and self.current is None:
            # The ticket of the request this driver was following when it
            # stopped: that request is done, go on with the next one.
            self.resume_session = None
            self.index += 1
            self._save_progress()
        self._next()

    def _on_Notice(self, link: Any, msg: m.Notice) -> None:
        self.emit("notice", subject=msg.subject, text=msg.text)

    def _on_Available(self, link: Any, msg: m.Available) -> None:
        if not self.list_only:
            # Working through the file: the answer to the LIST before each
            # request, or (Kafka) network.status whenever a CP changes; shown.
            cps = self.status_parts.add(msg)
            if cps is not None:
                self.emit("available", cps=[{"cp": cp.cp_id, "location": cp.location, "price": cp.price} for cp in cps])
            return
        # Only while a LIST of ours waits (not, e.g., an old record replayed from Kafka).
        if not self._phase.attempt(PhaseInput.AVAILABLE):
            return
        if not self.list_parts.follows(msg):
            self.log.info(
                "driver {driver}: AVAILABLE part {part} of {parts} out of order; waiting for a new answer",
                driver=self.driver_id, part=msg.part, parts=msg.parts,
            )
        cps = self.list_parts.add(msg)
        self._list_timer.start(self.charge_timeout, self._list_gave_up)  # news of the list
        if cps is None:
            return
        self.emit("available", cps=[{"cp": cp.cp_id, "location": cp.location, "price": cp.price} for cp in cps])
        self._finish(EXIT_OK)

    # -- the end -----------------------------------------------------------

    def _finish(self, code: int, interrupted: bool = False) -> None:
        if not self._phase.attempt(PhaseInput.FINISH):
            return
        if self.progress is not None and code == EXIT_OK and self.index >= len(self.requests):
            self.progress.clear()
        for timer in (self._settle_timer, self._wait_timer, self._list_timer):
            timer.cancel()
        for charge in [self.current, *self.recovered.values()]:
            self._disarm(charge)
        if interrupted:
            self.emit("interrupted")
        if not self.list_only and code != EXIT_REFUSED:
            self.emit(
                "summary",
                tickets=self.summary.tickets,
                refused=self.summary.refused,
                unfinished=self.summary.unfinished,
            )
        self.transport.close()
        self.done.callback(code)

    def interrupt(self) -> None:
        """The user stopped us (Ctrl-C): say so, show what we have, finish with 130."""
        self._finish(EXIT_INTERRUPTED, interrupted=True)
