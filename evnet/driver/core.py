"""
The driver's core: L{DriverService} says hello to Central, works through the
requests, follows each charge to its ticket, and reports everything it sees
as *events*: plain dicts with a ``type`` and named fields (the same dicts
are printed by ``evdriver --json``).  It does not know how Central is
reached: a transport (L{evnet.driver.transports}) calls it and carries its
messages.

The wire contract is Central's (``docs/protocol.md``); ``docs/driver.md``
describes the command.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Callable, Optional

from twisted.application import service
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from evnet.driver.requests import Progress, Request
from evnet.protocols import messages as m

DEFAULT_WAIT = 4.0
DEFAULT_CHARGE_TIMEOUT = 600.0
# After hello, how long to let Central re-send missed tickets and the
# AUTHORIZED of a charge in progress before sending a request.
DEFAULT_SETTLE = 1.0

Event = dict[str, Any]



def _cancel_timer(owner: Any, name: str) -> None:
    """Cancel the delayed call in C{owner}'s attribute C{name} (if pending) and clear it."""
    timer = getattr(owner, name)
    if timer is not None and timer.active():
        timer.cancel()
    setattr(owner, name, None)


class Phase(Enum):
    STARTING = "starting"  # no hello accepted yet in this run
    IDLE = "idle"  # ready for the next request (once the link is up)
    REQUESTED = "requested"  # REQ sent, no AUTHORIZED/DENIED yet
    AUTHORIZED = "authorized"  # waiting for the vehicle to be plugged in
    CHARGING = "charging"  # TELEM coming in
    WAITING = "waiting"  # the --wait pause after an outcome
    DONE = "done"


_TRANSITIONS: dict[Phase, frozenset[Phase]] = {
    Phase.STARTING: frozenset({Phase.IDLE, Phase.DONE}),
    Phase.IDLE: frozenset({Phase.REQUESTED, Phase.DONE}),
    Phase.REQUESTED: frozenset({Phase.AUTHORIZED, Phase.WAITING, Phase.DONE}),
    Phase.AUTHORIZED: frozenset({Phase.CHARGING, Phase.WAITING, Phase.DONE}),
    Phase.CHARGING: frozenset({Phase.WAITING, Phase.DONE}),
    Phase.WAITING: frozenset({Phase.IDLE, Phase.DONE}),
    Phase.DONE: frozenset(),
}


@dataclass
class Charge:
    """A charge the driver follows: one of its requests, or one recovered from an earlier run."""

    cp_id: str
    request: Optional[Request] = None
    n: int = 0  # 1-based position in the file; 0 for a recovered charge
    session: Optional[str] = None
    timer: Any = None
    # The REQ went out on a link that was lost before Central answered (or
    # the transport could not send it): send it again after the next hello.
    unanswered_on_lost_link: bool = False
    req_channel: Any = None


@dataclass
class Summary:
    tickets: list[Event] = field(default_factory=list)
    refused: list[Event] = field(default_factory=list)
    unfinished: list[Event] = field(default_factory=list)


class DriverService(service.MultiService):
    """
    The driver, whatever the transport: works through C{requests} against
    Central, reached through C{transport} (a L{LinkTransport} or a
    L{KafkaTransport}), reporting events to C{emit}.  C{done} fires with
    the exit code when it has finished (0) or Central refused the driver id
    (1).  With C{list_only}, it asks which CPs are available instead and
    finishes.

    The transport calls L{channel_opened} when Central can be spoken to
    (the hello goes out then), L{message_received} for each message from
    Central, L{channel_lost} when a link is lost and L{central_silent} when
    Central stopped answering; the driver calls the transport's
    C{hello_accepted()} and C{close()}, and a channel's C{send(msg)}.
    """

    log = Logger()

    def __init__(
        self,
        driver_id: str,
        requests: list[Request],
        transport: "LinkTransport | KafkaTransport",
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
        self.phase = Phase.STARTING
        self.progress = progress
        # The next request to send; a restarted driver goes on where it was.
        self.index, self.resume_session = progress.load() if progress is not None else (0, None)
        if self.index > len(requests):
            self.index, self.resume_session = 0, None
        self.current: Optional[Charge] = None
        self.recovered: dict[str, Charge] = {}
        self.seen_tickets: set[str] = set()
        self.summary = Summary()
        self.channel: Any = None  # where the hello went: a FramedLink, or the Kafka transport
        self.ready = False  # Central accepted the hello on self.channel
        self.listed = False  # LIST sent (list_only)
        self.done: defer.Deferred = defer.Deferred()
        self._hellos = 0
        self._settle_timer: Any = None
        self._wait_timer: Any = None
        self.transport = transport
        transport.attach(self)
        transport.setServiceParent(self)

    def startService(self) -> None:
        if (self.index or self.resume_session) and not self.list_only:
            self.emit("resumed", n=self.index + 1, total=len(self.requests), session=self.resume_session)
        super().startService()

    @property
    def finished(self) -> bool:
        return self.phase is Phase.DONE

    def _save_progress(self, session: Optional[str] = None) -> None:
        if self.progress is not None:
            self.progress.save(self.index, session)

    @property
    def awaiting_central(self) -> bool:
        """Something is expected from Central: an answer, news of a charge, the list."""
        if self.phase is Phase.DONE:
            return False
        return (
            self.phase in (Phase.STARTING, Phase.REQUESTED, Phase.AUTHORIZED, Phase.CHARGING)
            or bool(self.recovered)
            or self.list_only
        )

    # -- events and the phase machine -------------------------------------

    def emit(self, type: str, **fields: Any) -> None:
        event: Event = {"type": type, "driver": self.driver_id}
        event.update(fields)
        self._emit(event)

    def _goto(self, new: Phase) -> None:
        if new not in _TRANSITIONS[self.phase]:
            raise AssertionError(f"illegal driver transition {self.phase} -> {new}")
        self.phase = new

    def _where(self, charge: Charge) -> dict[str, Any]:
        if charge.request is None:
            return {"cp": charge.cp_id, "recovered": True}
        return {"cp": charge.cp_id, "n": charge.n, "total": len(self.requests)}

    # -- the transport's calls ----------------------------------------------

    def channel_opened(self, channel: Any) -> None:
        """Central can be spoken to through C{channel}: say hello."""
        self.channel = channel
        self.ready = False
        channel.send(m.Driver(self.driver_id))

    def channel_lost(self, channel: Any) -> None:
        """The link C{channel} is gone; a hello on the next one resumes."""
        if channel is not self.channel:
            return
        self.channel = None
        self.ready = False
        self._cancel("_settle_timer")
        if self.phase is Phase.REQUESTED and self.current is not None:
            self.current.unanswered_on_lost_link = True

    def central_silent(self) -> None:
        """Central does not answer our hello: no new request until it does."""
        self.ready = False

    def request_not_sent(self) -> None:
        """The transport could not send the current REQ: send it again after the next hello."""
        if self.phase is Phase.REQUESTED and self.current is not None:
            self.current.unanswered_on_lost_link = True

    def _hello_accepted(self) -> None:
        self.transport.hello_accepted()
        if not self.ready:
            self.ready = True
            self.emit("connected", again=self._hellos > 0, **self.transport.describe())
            self._hellos += 1
            # Central has a fresh chance to answer: restart the give-up timers.
            for charge in [self.current, *self.recovered.values()]:
                if charge is not None and charge.timer is not None:
                    self._arm(charge)
        # (Otherwise it answers a hello that checked Central is still there.)
        if self.list_only:
            self.listed = True
            self.channel.send(m.ListCps(self.driver_id))
            return
        self._cancel("_settle_timer")
        self._settle_timer = self.clock.callLater(self.settle, self._settled)

    def _settled(self) -> None:
        self._settle_timer = None
        if self.phase is Phase.STARTING:
            self._goto(Phase.IDLE)
        if self.phase is Phase.IDLE:
            self._next()
        elif self.phase is Phase.REQUESTED and self.current.unanswered_on_lost_link:
            # The answer to our REQ was lost with the old link and Central
            # re-sent nothing about it: ask again.
            self._send_request(self.current)

    # -- the requests ------------------------------------------------------

    def _next(self) -> None:
        if self.phase is not Phase.IDLE or not self.ready or self.recovered:
            return  # called again when the link is up / the recovered charge ends
        if self.index >= len(self.requests):
            self._finish(0)
            return
        request = self.requests[self.index]
        self.current = Charge(request.cp_id, request, self.index + 1)
        self._goto(Phase.REQUESTED)
        self._send_request(self.current)

    def _send_request(self, charge: Charge) -> None:
        request = charge.request
        charge.unanswered_on_lost_link = False
        charge.req_channel = self.channel
        self.emit("request", target_kwh=request.target_kwh, **self._where(charge))
        self.channel.send(m.Req(self.driver_id, request.cp_id, request.target_kwh))
        self._arm(charge)

    def _outcome(self) -> None:
        """The current request has its result: pause, then the next one."""
        charge, self.current = self.current, None
        self._disarm(charge)
        self.index += 1
        self._save_progress()
        if self.index >= len(self.requests):
            self._goto(Phase.WAITING)
            self._goto(Phase.IDLE)
            self._next()
            return
        self._goto(Phase.WAITING)
        self.emit("wait", seconds=self.wait)
        self._wait_timer = self.clock.callLater(self.wait, self._waited)

    def _waited(self) -> None:
        self._wait_timer = None
        self._goto(Phase.IDLE)
        self._next()

    # -- give-up timers ----------------------------------------------------

    def _arm(self, charge: Charge) -> None:
        self._disarm(charge)
        charge.timer = self.clock.callLater(self.charge_timeout, self._gave_up, charge)

    def _disarm(self, charge: Optional[Charge]) -> None:
        if charge is not None and charge.timer is not None:
            if charge.timer.active():
                charge.timer.cancel()
            charge.timer = None

    def _gave_up(self, charge: Charge) -> None:
        charge.timer = None
        self.emit("timeout", session=charge.session, seconds=self.charge_timeout, **self._where(charge))
        what = "no answer" if charge.session is None else "no news of the charge"
        self.summary.unfinished.append(
            {"cp": charge.cp_id, "session": charge.session, "reason": f"{what} for {self.charge_timeout:g} s"}
        )
        if charge is self.current:
            self._outcome()
        else:
            self.recovered.pop(charge.session, None)
            self._next()

    # -- messages from Central ---------------------------------------------

    def message_received(self, link: Any, msg: m.Message) -> None:
        """A message from Central, through C{link} (the channel it came by)."""
        if self.phase is Phase.DONE:
            return
        handler = getattr(self, "_on_" + type(msg).__name__, None)
        if handler is None:
            self.log.info("driver {driver}: unexpected {code} from Central ignored", driver=self.driver_id, code=msg.code)
            return
        handler(link, msg)

    def _on_Accepted(self, link: Any, msg: m.Accepted) -> None:
        if msg.what == "DRIVER" and link is self.channel:
            self._hello_accepted()

    def _on_Refused(self, link: Any, msg: m.Refused) -> None:
        if msg.what == "DRIVER":
            self.emit("refused", reason=msg.reason)
            self._finish(1)
        else:
            self.log.info("driver {driver}: Central refused {what}: {reason}", driver=self.driver_id, what=msg.what, reason=msg.reason)

    def _on_Authorized(self, link: Any, msg: m.Authorized) -> None:
        charge = self.current
        if charge is not None and msg.session_id == charge.session:
            return  # re-sent after a reconnect: we are following it already
        if msg.session_id in self.recovered or msg.session_id in self.seen_tickets:
            return
        if self.phase is Phase.REQUESTED and msg.cp_id == charge.cp_id:
            charge.session = msg.session_id
            self._save_progress(msg.session_id)
            self._goto(Phase.AUTHORIZED)
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
        if self.phase is not Phase.REQUESTED or msg.cp_id != charge.cp_id:
            self.log.info("driver {driver}: DENIED for {cp} not expected, ignored", driver=self.driver_id, cp=msg.cp_id)
            return
        self.emit("denied", reason=msg.reason, **self._where(charge))
        self.summary.refused.append({"cp": charge.cp_id, "reason": msg.reason})
        self._outcome()

    def _on_Telem(self, link: Any, msg: m.Telem) -> None:
        charge = self.current
        if charge is not None and msg.session_id == charge.session:
            if self.phase is Phase.AUTHORIZED:
                self._goto(Phase.CHARGING)
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
            or (
                self.phase is Phase.REQUESTED
                and charge.req_channel is not link
                and msg.cp_id == charge.cp_id
            )
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
            self._outcome()
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
        if not self.listed:
            return  # not an answer to our LIST (e.g. an old record replayed from Kafka)
        cps = [{"cp": cp.cp_id, "location": cp.location, "price": cp.price} for cp in msg.cps]
        self.emit("available", cps=cps)
        self._finish(0)

    # -- the end -----------------------------------------------------------

    def _finish(self, code: int, interrupted: bool = False) -> None:
        if self.phase is Phase.DONE:
            return
        self._goto(Phase.DONE)
        if self.progress is not None and code == 0 and self.index >= len(self.requests):
            self.progress.clear()
        for name in ("_settle_timer", "_wait_timer"):
            self._cancel(name)
        for charge in [self.current, *self.recovered.values()]:
            self._disarm(charge)
        if interrupted:
            self.emit("interrupted")
        if not self.list_only and code != 1:
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
        self._finish(130, interrupted=True)

    def _cancel(self, name: str) -> None:
        _cancel_timer(self, name)
