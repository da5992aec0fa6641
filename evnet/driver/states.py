"""
The driver's explicit state machines: tables (state × input → next state)
for L{evnet.protocols.machine.Machine}, evnet's one machine idiom.  Pure:
no I/O, no Twisted.

- L{Phase}: what the driver is doing with its requests (or its list).
- L{Reach}: where its conversation with Central stands (no channel, hello
  sent, hello accepted).
- L{Outage}: whether an outage was told to the user (Central unreachable on
  a link, Kafka unreachable), so that it is said once.
- L{Hello}: the Kafka transport's hellos (none out, one out, unanswered).
- L{ListParts}: the answer to LIST, put together from its parts.

An input a machine does not allow in its state is reported to the
machine's C{rejected} callback (the owner logs it) and ignored: it is never
an assertion or a crash.
"""

from __future__ import annotations

from enum import Enum
from typing import Optional

from evnet.protocols.messages import Available, CpInfo

# -- the driver's work ---------------------------------------------------------


class Phase(str, Enum):
    STARTING = "starting"  # no hello accepted yet in this run
    IDLE = "idle"  # ready for the next request (once Central is reached)
    REQUESTED = "requested"  # REQ sent, no AUTHORIZED/DENIED yet
    # The REQ went on a channel lost before Central answered (or the
    # transport could not send it): send it again after the next hello.
    REQUEST_LOST = "request-lost"
    AUTHORIZED = "authorized"  # waiting for the vehicle to be plugged in
    CHARGING = "charging"  # TELEM coming in
    WAITING = "waiting"  # the --wait pause after an outcome
    LISTING = "listing"  # --list: LIST sent, the parts of the answer coming in
    DONE = "done"


class PhaseInput(str, Enum):
    SETTLED = "settled"  # the pause after an accepted hello is over
    SEND = "send"  # the REQ of the current request goes out (again)
    LOST = "lost"  # the channel is gone, or could not send the REQ
    AUTHORIZE = "authorize"  # AUTHORIZED for the current request
    DENY = "deny"  # DENIED for the current request
    TELEMETRY = "telemetry"  # TELEM of the current charge
    TICKET = "ticket"  # TICKET of the current request
    GIVE_UP = "give-up"  # no news of the current request for --charge-timeout
    WAITED = "waited"  # the --wait pause is over
    LIST = "list"  # LIST sent (after each accepted hello)
    AVAILABLE = "available"  # a part of the answer to LIST
    FINISH = "finish"  # done, refused, interrupted or given up


_OUTCOMES = {PhaseInput.TICKET: Phase.WAITING, PhaseInput.GIVE_UP: Phase.WAITING}


def _phase_rows() -> dict[tuple[Phase, PhaseInput], Phase]:
    rows: dict[Phase, dict[PhaseInput, Phase]] = {
        Phase.STARTING: {PhaseInput.SETTLED: Phase.IDLE, PhaseInput.LIST: Phase.LISTING},
        Phase.IDLE: {PhaseInput.SETTLED: Phase.IDLE, PhaseInput.SEND: Phase.REQUESTED},
        Phase.REQUESTED: {
            PhaseInput.SETTLED: Phase.REQUESTED,
            PhaseInput.LOST: Phase.REQUEST_LOST,
            PhaseInput.AUTHORIZE: Phase.AUTHORIZED,
            PhaseInput.DENY: Phase.WAITING,
            **_OUTCOMES,
        },
        Phase.REQUEST_LOST: {
            PhaseInput.SETTLED: Phase.REQUEST_LOST,
            PhaseInput.SEND: Phase.REQUESTED,
            PhaseInput.AUTHORIZE: Phase.AUTHORIZED,  # Central re-sent it after the hello
            PhaseInput.DENY: Phase.WAITING,
            **_OUTCOMES,
        },
        Phase.AUTHORIZED: {PhaseInput.SETTLED: Phase.AUTHORIZED, PhaseInput.TELEMETRY: Phase.CHARGING, **_OUTCOMES},
        Phase.CHARGING: {PhaseInput.SETTLED: Phase.CHARGING, PhaseInput.TELEMETRY: Phase.CHARGING, **_OUTCOMES},
        Phase.WAITING: {PhaseInput.SETTLED: Phase.WAITING, PhaseInput.WAITED: Phase.IDLE},
        Phase.LISTING: {PhaseInput.LIST: Phase.LISTING, PhaseInput.AVAILABLE: Phase.LISTING},
        Phase.DONE: {},
    }
    table = {(state, event): target for state, row in rows.items() for event, target in row.items()}
    for state in Phase:
        # A lost channel matters only to a REQ not answered yet; anything
        # may end (but an end only once).
        table.setdefault((state, PhaseInput.LOST), state)
        if state is not Phase.DONE:
            table[(state, PhaseInput.FINISH)] = Phase.DONE
    return table


PHASES: dict[tuple[Phase, PhaseInput], Phase] = _phase_rows()

#: The phases in which the driver expects something from Central.
AWAITING_CENTRAL = frozenset(
    {Phase.STARTING, Phase.REQUESTED, Phase.REQUEST_LOST, Phase.AUTHORIZED, Phase.CHARGING, Phase.LISTING}
)

#: The phases of a request Central has not answered yet.
UNANSWERED = frozenset({Phase.REQUESTED, Phase.REQUEST_LOST})


# -- the conversation with Central ---------------------------------------------


class Reach(str, Enum):
    AWAY = "away"  # no channel to Central
    GREETING = "greeting"  # hello sent on the channel, not accepted (yet, or any more)
    READY = "ready"  # Central accepted the hello on the channel


class ReachInput(str, Enum):
    OPENED = "opened"  # a channel is up: the hello goes out on it
    ACCEPTED = "accepted"  # ACCEPTED#DRIVER on the channel
    SILENT = "silent"  # Central does not answer the hellos (Kafka)
    LOST = "lost"  # the channel is gone


REACH: dict[tuple[Reach, ReachInput], Reach] = {
    (Reach.AWAY, ReachInput.OPENED): Reach.GREETING,
    (Reach.GREETING, ReachInput.OPENED): Reach.GREETING,
    (Reach.READY, ReachInput.OPENED): Reach.GREETING,
    (Reach.GREETING, ReachInput.ACCEPTED): Reach.READY,
    (Reach.READY, ReachInput.ACCEPTED): Reach.READY,  # the answer to a hello that checked on Central
    (Reach.GREETING, ReachInput.SILENT): Reach.GREETING,
    (Reach.READY, ReachInput.SILENT): Reach.GREETING,
    (Reach.GREETING, ReachInput.LOST): Reach.AWAY,
    (Reach.READY, ReachInput.LOST): Reach.AWAY,
}


# -- outages told to the user ----------------------------------------------------


class Outage(str, Enum):
    CLEAR = "clear"
    REPORTED = "reported"  # the user was told; said again only after it ended


class OutageInput(str, Enum):
    FAILED = "failed"  # an attempt failed (every retry brings one)
    RECOVERED = "recovered"  # it works again


OUTAGES: dict[tuple[Outage, OutageInput], Outage] = {
    (Outage.CLEAR, OutageInput.FAILED): Outage.REPORTED,
    (Outage.REPORTED, OutageInput.FAILED): Outage.REPORTED,
    (Outage.REPORTED, OutageInput.RECOVERED): Outage.CLEAR,
    (Outage.CLEAR, OutageInput.RECOVERED): Outage.CLEAR,
}


# -- the Kafka transport's hellos -------------------------------------------------


class Hello(str, Enum):
    QUIET = "quiet"  # no hello waiting for an answer
    PENDING = "pending"  # a hello went out, Central has not answered it
    SILENT = "silent"  # hellos went unanswered past the timeout: said once


class HelloInput(str, Enum):
    SENT = "sent"
    UNANSWERED = "unanswered"  # the timeout after a hello passed (while Kafka is reachable)
    ANSWERED = "answered"


HELLOS: dict[tuple[Hello, HelloInput], Hello] = {
    (Hello.QUIET, HelloInput.SENT): Hello.PENDING,
    (Hello.PENDING, HelloInput.SENT): Hello.PENDING,
    (Hello.SILENT, HelloInput.SENT): Hello.SILENT,
    (Hello.PENDING, HelloInput.UNANSWERED): Hello.SILENT,
    (Hello.SILENT, HelloInput.UNANSWERED): Hello.SILENT,
    (Hello.PENDING, HelloInput.ANSWERED): Hello.QUIET,
    (Hello.SILENT, HelloInput.ANSWERED): Hello.QUIET,
}


# -- the answer to LIST ----------------------------------------------------------


class ListParts:
    """
    The answer to LIST, put together from its AVAILABLE parts (a list too
    long for one frame comes in numbered parts, in order).  A part that
    does not follow the ones before (another answer, or a part missed)
    drops what was gathered: the next part 1 starts again.
    """

    def __init__(self) -> None:
        self.cps: list[CpInfo] = []
        self.part = 0  # the last part taken (0: none)
        self.parts = 0  # how many the answer has (0: not known yet)

    def follows(self, msg: Available) -> bool:
        """C{msg} is part 1 of an answer, or the part after the last one taken."""
        return msg.part == 1 or (msg.parts == self.parts and msg.part == self.part + 1)

    def add(self, msg: Available) -> Optional[list[CpInfo]]:
        """Take C{msg}; the whole list once its last part is in, else None."""
        if not self.follows(msg):
            self.cps, self.part, self.parts = [], 0, 0
            return None
        if msg.part == 1:
            self.cps = []
        self.cps += msg.cps
        self.part, self.parts = msg.part, msg.parts
        return self.cps if msg.last else None
