"""
EV_Driver: a driver's app that asks Central for charges, one request file
line at a time, and follows each charge to its ticket.

Three parts, each testable alone:

- :func:`parse_requests` — pure: the text of a request file to a list of
  :class:`Request` and a list of :class:`BadLine` problems.
- :class:`DriverService` — the behaviour: a ``Service`` and a
  :class:`~evnet.protocols.link.LinkHandler` that keeps one link to
  Central's drivers endpoint (through ``ClientService`` with backoff), says
  hello, works through the requests, and reports everything it sees as
  *events*: plain dicts with a ``type`` and named fields (the same dicts are
  printed by ``evdriver --json``).
- :class:`DriverView` — pure: an event to the lines a person reads, each
  with a ``rich`` style name.

The wire contract is Central's (``docs/protocol.md``); ``docs/driver.md``
describes the command.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Callable, Optional

from twisted.application import service
from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime, IStreamClientEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure

from evnet.protocols import messages as m
from evnet.protocols.link import FramedLink, LinkFactory, LinkHandler

DEFAULT_WAIT = 4.0
DEFAULT_CHARGE_TIMEOUT = 600.0
# After hello, how long to let Central re-send missed tickets and the
# AUTHORIZED of a charge in progress before sending a request.
DEFAULT_SETTLE = 1.0

ID_PATTERN = re.compile(r"[A-Za-z0-9_.-]{1,32}\Z")

Event = dict[str, Any]


# ---------------------------------------------------------------------------
# The request file (pure)
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """One line of a request file: charge at C{cp_id}, up to C{target_kwh} (0: no target)."""

    cp_id: str
    target_kwh: float = 0.0
    line: int = 0


@dataclass(frozen=True)
class BadLine:
    """A malformed line, skipped; C{message} is what the user reads."""

    line: int
    message: str


class RequestsFileError(Exception):
    """The request file cannot be read; the text says why, for the user."""


_COMMENT = re.compile(r"(?:^|\s)#")
_NUMBER = re.compile(r"[0-9]+(\.[0-9]+)?\Z|\.[0-9]+\Z")


def parse_requests(text: str, name: str = "requests") -> tuple[list[Request], list[BadLine]]:
    """
    The requests in the text of a request file called C{name}: one per line,
    C{CP_ID [TARGET_KWH]}; blank lines and C{#} comments (a whole line, or
    after a space at the end of one) are ignored; a malformed line becomes
    a L{BadLine}.
    """
    requests: list[Request] = []
    problems: list[BadLine] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        content = _COMMENT.split(raw, 1)[0].strip()
        if not content:
            continue
        words = content.split()
        if len(words) > 2 or not ID_PATTERN.match(words[0]) or (
            len(words) == 2 and not _NUMBER.match(words[1])
        ):
            problems.append(
                BadLine(number, f"{name}:{number}: expected 'CP_ID [TARGET_KWH]', got {content!r}")
            )
            continue
        target = round(float(words[1]), 3) if len(words) == 2 else 0.0
        if len(words) == 2 and target <= 0:
            problems.append(
                BadLine(number, f"{name}:{number}: TARGET_KWH must be more than 0, got {words[1]!r}")
            )
            continue
        requests.append(Request(words[0], target, number))
    return requests, problems


def read_requests(path: str) -> tuple[list[Request], list[BadLine]]:
    """
    L{parse_requests} on the file at C{path}; L{RequestsFileError} with a
    plain message if it cannot be read.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RequestsFileError(f"request file {path!r} does not exist") from None
    except IsADirectoryError:
        raise RequestsFileError(f"request file {path!r} is a directory") from None
    except PermissionError:
        raise RequestsFileError(f"request file {path!r} cannot be read: permission denied") from None
    except UnicodeDecodeError:
        raise RequestsFileError(f"request file {path!r} is not UTF-8 text") from None
    except OSError as e:
        raise RequestsFileError(f"request file {path!r} cannot be read: {e.strerror or e}") from None
    return parse_requests(text, path)


# ---------------------------------------------------------------------------
# The view (pure)
# ---------------------------------------------------------------------------

REASONS = {
    "target": "target reached",
    "unplug": "vehicle unplugged",
    "fault": "charging point fault",
    "parar": "charging point stopped by Central",
    "disconnected": "charging point disconnected",
    "engine-restart": "charging point restarted",
}


def describe_reason(reason: str) -> str:
    return REASONS.get(reason, reason or "ended")


def fmt_duration(seconds: float) -> str:
    """C{0:07}, C{12:30}, C{1:02:03}."""
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}:{minutes:02d}:{secs:02d}"
    return f"{minutes}:{secs:02d}"


def fmt_target(kwh: float) -> str:
    return f"target {kwh:.3f} kWh" if kwh else "no target"


class DriverView:
    """
    Turns events into the lines a person reads: C{lines(event)} is a list
    of C{(text, style)} pairs, the style a ``rich`` style name ("" for
    none).  No I/O.
    """

    def lines(self, event: Event) -> list[tuple[str, str]]:
        method = getattr(self, "_" + event["type"], None)
        if method is None:
            return [(f"{event['type']}: {event}", "")]
        return method(event)

    def text(self, event: Event) -> list[str]:
        """The lines without styles, as printed when stdout is not a terminal."""
        return [text for text, _ in self.lines(event)]

    # -- one method per event type ---------------------------------------

    @staticmethod
    def _who(event: Event) -> str:
        if event.get("recovered"):
            return f"{event['cp']} (earlier run)"
        if "n" in event:
            return f"[{event['n']}/{event['total']}] {event['cp']}"
        return event["cp"]

    def _bad_line(self, e: Event) -> list[tuple[str, str]]:
        return [(f"skipped {e['message']}", "yellow")]

    def _connected(self, e: Event) -> list[tuple[str, str]]:
        verb = "reconnected" if e.get("again") else "connected"
        return [(f"{verb} to Central at {e['central']} as driver {e['driver']}", "green")]

    def _unreachable(self, e: Event) -> list[tuple[str, str]]:
        return [(f"cannot reach Central at {e['central']} ({e['reason']}), retrying", "bold red")]

    def _link_lost(self, e: Event) -> list[tuple[str, str]]:
        return [(f"lost the link to Central at {e['central']}, reconnecting", "bold red")]

    def _refused(self, e: Event) -> list[tuple[str, str]]:
        return [(f"Central refused driver {e['driver']}: {e['reason']}", "bold red")]

    def _request(self, e: Event) -> list[tuple[str, str]]:
        return [(f"{self._who(e)}: requesting a charge ({fmt_target(e['target_kwh'])})", "bold")]

    def _authorized(self, e: Event) -> list[tuple[str, str]]:
        return [
            (f"{self._who(e)}: AUTHORIZED, session {e['session']}", "green"),
            (f"{self._who(e)}: waiting for the vehicle to be plugged in", "dim"),
        ]

    def _recovered_charge(self, e: Event) -> list[tuple[str, str]]:
        return [
            (
                f"{e['cp']}: following a charge started in an earlier run, session {e['session']}",
                "cyan",
            )
        ]

    def _denied(self, e: Event) -> list[tuple[str, str]]:
        return [(f"{self._who(e)}: DENIED: {e['reason']}", "bold red")]

    def _charging(self, e: Event) -> list[tuple[str, str]]:
        return [
            (
                f"{self._who(e)}: charging {e['kwh']:.3f} kWh  {e['kw']:.2f} kW  "
                f"{e['euros']:.2f} €  {fmt_duration(e['seconds'])}",
                "cyan",
            )
        ]

    def _notice(self, e: Event) -> list[tuple[str, str]]:
        return [(f"NOTICE {e['subject']}: {e['text']}", "bold yellow")]

    def _ticket(self, e: Event) -> list[tuple[str, str]]:
        style = "bold green" if e["reason"] in ("target", "unplug") else "bold yellow"
        prefix = "recovered TICKET" if e.get("recovered") else "TICKET"
        return [
            (
                f"{self._who(e)}: {prefix} {e['kwh']:.3f} kWh  {e['euros']:.2f} €  "
                f"{fmt_duration(e['seconds'])}  ({describe_reason(e['reason'])}), session {e['session']}",
                style,
            )
        ]

    def _timeout(self, e: Event) -> list[tuple[str, str]]:
        what = "no answer" if e.get("session") is None else "no news of the charge"
        return [
            (f"{self._who(e)}: {what} for {e['seconds']:g} s, giving up on it", "bold red")
        ]

    def _wait(self, e: Event) -> list[tuple[str, str]]:
        return [(f"next request in {e['seconds']:g} s", "dim")]

    def _interrupted(self, e: Event) -> list[tuple[str, str]]:
        return [("interrupted", "bold red")]

    def _available(self, e: Event) -> list[tuple[str, str]]:
        cps = e["cps"]
        if not cps:
            return [("no charging point is available now", "yellow")]
        out = [(f"{len(cps)} charging point{'s' if len(cps) != 1 else ''} available now:", "bold")]
        for cp in cps:
            out.append((f"  {cp['cp']:<10} {cp['location']:<24} {cp['price']:.3f} €/kWh", ""))
        return out

    def _summary(self, e: Event) -> list[tuple[str, str]]:
        tickets, refused, unfinished = e["tickets"], e["refused"], e["unfinished"]
        kwh = sum(t["kwh"] for t in tickets)
        euros = sum(t["euros"] for t in tickets)
        out = [
            (
                f"summary for driver {e['driver']}: {len(tickets)} ticket{'s' if len(tickets) != 1 else ''} "
                f"({kwh:.3f} kWh, {euros:.2f} €), {len(refused)} refused, {len(unfinished)} unfinished",
                "bold",
            )
        ]
        for t in tickets:
            note = "  recovered from an earlier run" if t.get("recovered") else ""
            out.append(
                (
                    f"  ticket   {t['cp']:<8} {t['kwh']:8.3f} kWh {t['euros']:8.2f} €  "
                    f"{fmt_duration(t['seconds']):>8}  {describe_reason(t['reason'])}{note}",
                    "",
                )
            )
        for r in refused:
            out.append((f"  refused  {r['cp']:<8} {r['reason']}", "red"))
        for u in unfinished:
            out.append((f"  no result {u['cp']:<7} {u['reason']}", "red"))
        return out


# ---------------------------------------------------------------------------
# The service
# ---------------------------------------------------------------------------


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
    # The REQ went out on a link that was lost before Central answered.
    unanswered_on_lost_link: bool = False
    req_link: Any = None


@dataclass
class Summary:
    tickets: list[Event] = field(default_factory=list)
    refused: list[Event] = field(default_factory=list)
    unfinished: list[Event] = field(default_factory=list)


class _ReportingEndpoint:
    """An endpoint that tells the driver when a connection attempt fails."""

    def __init__(self, endpoint: IStreamClientEndpoint, failed: Callable[[Failure], None]) -> None:
        self._endpoint = endpoint
        self._failed = failed

    def connect(self, factory: Any) -> defer.Deferred:
        d = self._endpoint.connect(factory)

        def report(failure: Failure) -> Failure:
            self._failed(failure)
            return failure

        return d.addErrback(report)


class DriverService(service.MultiService, LinkHandler):
    """
    The driver: works through C{requests} against Central at C{endpoint}
    (described to the user as C{central}), reporting events to C{emit}.
    C{done} fires with the exit code when it has finished (0) or Central
    refused the driver id (1).  With C{list_only}, it asks which CPs are
    available instead and finishes.
    """

    log = Logger()

    def __init__(
        self,
        driver_id: str,
        requests: list[Request],
        endpoint: IStreamClientEndpoint,
        central: str,
        emit: Callable[[Event], None],
        clock: IReactorTime,
        *,
        wait: float = DEFAULT_WAIT,
        charge_timeout: float = DEFAULT_CHARGE_TIMEOUT,
        settle: float = DEFAULT_SETTLE,
        list_only: bool = False,
        retry_policy: Optional[Callable[[int], float]] = None,
    ) -> None:
        super().__init__()
        self.driver_id = driver_id
        self.requests = list(requests)
        self.central = central
        self._emit = emit
        self.clock = clock
        self.wait = wait
        self.charge_timeout = charge_timeout
        self.settle = settle
        self.list_only = list_only
        self.phase = Phase.STARTING
        self.index = 0  # the next request to send
        self.current: Optional[Charge] = None
        self.recovered: dict[str, Charge] = {}
        self.seen_tickets: set[str] = set()
        self.summary = Summary()
        self.link: Optional[FramedLink] = None
        self.ready = False  # hello accepted on self.link
        self.done: defer.Deferred = defer.Deferred()
        self._hellos = 0
        self._outage_reported = False
        self._settle_timer: Any = None
        self._wait_timer: Any = None
        self._client = ClientService(
            _ReportingEndpoint(endpoint, self._connect_failed),
            LinkFactory(self, initiator=True, clock=clock),
            retryPolicy=retry_policy or backoffPolicy(initialDelay=0.5, maxDelay=5.0),
            clock=clock,
            prepareConnection=self._prepare,
        )
        self._client.setServiceParent(self)

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

    # -- connection --------------------------------------------------------

    def _prepare(self, link: FramedLink) -> defer.Deferred:
        # Wait for the link to open; a refused or silent peer counts as a failed attempt.
        return link.opened.addErrback(lambda f: (self._connect_failed(f), f)[1])

    def _connect_failed(self, failure: Failure) -> None:
        if self.phase is Phase.DONE or self._outage_reported:
            return
        self._outage_reported = True
        self.emit("unreachable", central=self.central, reason=failure.getErrorMessage())

    def linkOpened(self, link: FramedLink) -> None:
        self.link = link
        self.ready = False
        link.send(m.Driver(self.driver_id))

    def linkLost(self, link: FramedLink, reason: Failure) -> None:
        if link is not self.link:
            return
        was_ready = self.ready
        self.link = None
        self.ready = False
        self._cancel("_settle_timer")
        if self.phase is Phase.DONE:
            return
        if self.phase is Phase.REQUESTED and self.current is not None:
            self.current.unanswered_on_lost_link = True
        if was_ready and not self._outage_reported:
            self.emit("link_lost", central=self.central)

    def _hello_accepted(self) -> None:
        self.ready = True
        self._outage_reported = False
        self.emit("connected", central=self.central, again=self._hellos > 0)
        self._hellos += 1
        if self.list_only:
            self.link.send(m.ListCps(self.driver_id))
            return
        # Central has a fresh chance to answer: restart the give-up timers.
        for charge in [self.current, *self.recovered.values()]:
            if charge is not None and charge.timer is not None:
                self._arm(charge)
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
        charge.req_link = self.link
        self.emit("request", target_kwh=request.target_kwh, **self._where(charge))
        self.link.send(m.Req(self.driver_id, request.cp_id, request.target_kwh))
        self._arm(charge)

    def _outcome(self) -> None:
        """The current request has its result: pause, then the next one."""
        charge, self.current = self.current, None
        self._disarm(charge)
        self.index += 1
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

    def messageReceived(self, link: FramedLink, msg: m.Message) -> None:
        if self.phase is Phase.DONE:
            return
        handler = getattr(self, "_on_" + type(msg).__name__, None)
        if handler is None:
            self.log.info("driver {driver}: unexpected {code} from Central ignored", driver=self.driver_id, code=msg.code)
            return
        handler(link, msg)

    def _on_Accepted(self, link: FramedLink, msg: m.Accepted) -> None:
        if msg.what == "DRIVER" and link is self.link:
            self._hello_accepted()

    def _on_Refused(self, link: FramedLink, msg: m.Refused) -> None:
        if msg.what == "DRIVER":
            self.emit("refused", reason=msg.reason)
            self._finish(1)
        else:
            self.log.info("driver {driver}: Central refused {what}: {reason}", driver=self.driver_id, what=msg.what, reason=msg.reason)

    def _on_Authorized(self, link: FramedLink, msg: m.Authorized) -> None:
        charge = self.current
        if charge is not None and msg.session_id == charge.session:
            return  # re-sent after a reconnect: we are following it already
        if msg.session_id in self.recovered or msg.session_id in self.seen_tickets:
            return
        if self.phase is Phase.REQUESTED and msg.cp_id == charge.cp_id:
            charge.session = msg.session_id
            self._goto(Phase.AUTHORIZED)
            self.emit("authorized", session=msg.session_id, **self._where(charge))
            self._arm(charge)
            return
        # A charge this driver started in an earlier run: follow it to its ticket.
        recovered = Charge(msg.cp_id, session=msg.session_id)
        self.recovered[msg.session_id] = recovered
        self.emit("recovered_charge", cp=msg.cp_id, session=msg.session_id)
        self._arm(recovered)

    def _on_Denied(self, link: FramedLink, msg: m.Denied) -> None:
        charge = self.current
        if self.phase is not Phase.REQUESTED or msg.cp_id != charge.cp_id:
            self.log.info("driver {driver}: DENIED for {cp} not expected, ignored", driver=self.driver_id, cp=msg.cp_id)
            return
        self.emit("denied", reason=msg.reason, **self._where(charge))
        self.summary.refused.append({"cp": charge.cp_id, "reason": msg.reason})
        self._outcome()

    def _on_Telem(self, link: FramedLink, msg: m.Telem) -> None:
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

    def _on_Ticket(self, link: FramedLink, msg: m.Ticket) -> None:
        if msg.session_id in self.seen_tickets:
            return  # a duplicate: our ACK of the first one was lost
        self.seen_tickets.add(msg.session_id)
        charge = self.current
        mine = charge is not None and (
            msg.session_id == charge.session
            # The charge ended while we were away, before we heard AUTHORIZED.
            or (
                self.phase is Phase.REQUESTED
                and charge.req_link is not link
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
        else:
            self._next()

    def _on_Notice(self, link: FramedLink, msg: m.Notice) -> None:
        self.emit("notice", subject=msg.subject, text=msg.text)

    def _on_Available(self, link: FramedLink, msg: m.Available) -> None:
        if not self.list_only:
            return
        cps = [{"cp": cp.cp_id, "location": cp.location, "price": cp.price} for cp in msg.cps]
        self.emit("available", cps=cps)
        self._finish(0)

    # -- the end -----------------------------------------------------------

    def _finish(self, code: int, interrupted: bool = False) -> None:
        if self.phase is Phase.DONE:
            return
        self._goto(Phase.DONE)
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
        if self.link is not None:
            self.link.close()
        self.done.callback(code)

    def interrupt(self) -> None:
        """The user stopped us (Ctrl-C): say so, show what we have, finish with 130."""
        self._finish(130, interrupted=True)

    def _cancel(self, name: str) -> None:
        timer = getattr(self, name)
        if timer is not None and timer.active():
            timer.cancel()
        setattr(self, name, None)
