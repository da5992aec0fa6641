"""
EV_Driver: a driver's app that asks Central for charges, one request file
line at a time, and follows each charge to its ticket.

Three parts, each testable alone:

- :func:`parse_requests` — pure: the text of a request file to a list of
  :class:`Request` and a list of :class:`BadLine` problems.
- :class:`DriverService` — the behaviour, whatever the transport: says
  hello, works through the requests, follows each charge to its ticket,
  and reports everything it sees as *events*: plain dicts with a ``type``
  and named fields (the same dicts are printed by ``evdriver --json``).
  It reaches Central through one of two thin transports:
  :class:`LinkTransport` (a framed link to Central's drivers endpoint, kept
  up by ``ClientService`` with backoff) or :class:`KafkaTransport` (the
  ``driver.requests`` / ``driver.notifications`` topics).
- :class:`DriverView` — pure: an event to the lines a person reads, each
  with a ``rich`` style name.

The wire contract is Central's (``docs/protocol.md``); ``docs/driver.md``
describes the command.
"""

from __future__ import annotations

import hashlib
import json
import os
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
from evnet.kafka.bus import BusError, KafkaBus

DEFAULT_WAIT = 4.0
DEFAULT_CHARGE_TIMEOUT = 600.0
# After hello, how long to let Central re-send missed tickets and the
# AUTHORIZED of a charge in progress before sending a request.
DEFAULT_SETTLE = 1.0
# Kafka: how long to wait for the answer to a hello before saying Central
# does not answer (then the hello is sent again, with a growing delay), and
# how long Central may stay silent while we wait for news of a charge before
# we say hello again (Central answers with the charge in progress and any
# ticket not yet confirmed).
DEFAULT_HELLO_TIMEOUT = 5.0
DEFAULT_PROBE_AFTER = 10.0

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


class Progress:
    """
    Where a driver is in its request file, kept in a small JSON file so that
    a driver killed and started again goes on with its file instead of
    starting it over: the index of the request in progress (0-based), and
    the session Central authorized for it, if any.  A file whose requests
    changed since (another path or other contents) starts from the top.
    Written atomically (temp file + rename); removed once the file is done.
    """

    log = Logger()

    def __init__(self, path: str, requests_path: str, requests_text: str) -> None:
        self.path = Path(path)
        self.requests_path = str(Path(requests_path).resolve())
        self.digest = hashlib.sha256(requests_text.encode("utf-8")).hexdigest()

    def load(self) -> tuple[int, Optional[str]]:
        """(index of the request to go on with, its session if it was authorized); (0, None) by default."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return 0, None
        except (OSError, ValueError) as e:
            self.log.warn("progress file {path} unreadable ({why}): starting from the first request", path=str(self.path), why=e)
            return 0, None
        if data.get("requests_file") != self.requests_path or data.get("sha256") != self.digest:
            return 0, None
        index = data.get("next")
        session = data.get("session")
        if not isinstance(index, int) or index < 0:
            return 0, None
        return index, session if isinstance(session, str) else None

    def save(self, index: int, session: Optional[str]) -> None:
        data = {"requests_file": self.requests_path, "sha256": self.digest, "next": index, "session": session}
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            tmp.write_text(json.dumps(data), encoding="utf-8")
            os.replace(tmp, self.path)
        except OSError as e:
            self.log.warn("cannot write the progress file {path}: {why}", path=str(self.path), why=e)

    def clear(self) -> None:
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
        except OSError as e:
            self.log.warn("cannot remove the progress file {path}: {why}", path=str(self.path), why=e)


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

    @staticmethod
    def _at(e: Event) -> str:
        """Where Central is: on a link, or through Kafka."""
        if e.get("via") == "kafka":
            return f"through Kafka at {e['central']}"
        return f"at {e['central']}"

    def _connected(self, e: Event) -> list[tuple[str, str]]:
        verb = "reconnected" if e.get("again") else "connected"
        return [(f"{verb} to Central {self._at(e)} as driver {e['driver']}", "green")]

    def _no_answer(self, e: Event) -> list[tuple[str, str]]:
        return [
            (
                f"Central does not answer through Kafka at {e['central']} "
                f"(is it running with --kafka?), still waiting",
                "bold red",
            )
        ]

    def _kafka_unreachable(self, e: Event) -> list[tuple[str, str]]:
        return [(f"cannot reach Kafka at {e['kafka']} ({e['reason']}), retrying", "bold red")]

    def _kafka_back(self, e: Event) -> list[tuple[str, str]]:
        return [(f"reached Kafka at {e['kafka']} again", "green")]

    def _not_sent(self, e: Event) -> list[tuple[str, str]]:
        return [(f"could not send {e['code']} through Kafka at {e['kafka']}: {e['reason']}", "bold red")]

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

    def _resumed(self, e: Event) -> list[tuple[str, str]]:
        where = f"going on with request {e['n']} of {e['total']}"
        if e.get("session"):
            why = f"its charge (session {e['session']}) was in progress when this driver stopped"
        else:
            why = f"an earlier run of this driver did the first {e['n'] - 1}"
        return [(f"{where}: {why} (--from-start to start over)", "cyan")]

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


# ---------------------------------------------------------------------------
# The transports: how the driver reaches Central
# ---------------------------------------------------------------------------


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
