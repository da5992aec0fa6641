"""
The Monitor's explicit state machines (tables for L{evnet.protocols.machine}):
each link's phase, from ENQ to ready, and the Engine's health.  Pure: no
I/O, no Twisted.  An input a table does not allow in the current state is
logged and ignored by the Monitor (an ACCEPTED#AUTH before ACCEPTED#REG, a
second ACCEPTED#REG...), never a crash.
"""

from __future__ import annotations

from enum import Enum

from evnet.protocols.vocabulary import WHAT_AUTH, WHAT_REG


class LinkPhase(str, Enum):
    CONNECTING = "connecting"  # ENQ sent, no answer yet
    REGISTERING = "registering"  # Central: REG sent, waiting for ACCEPTED#REG
    AUTHENTICATING = "authenticating"  # Central: AUTH sent, waiting for ACCEPTED#AUTH
    READY = "ready"  # Central authenticated the CP / the Engine link is open
    REFUSED = "refused"  # the peer refused the link, REG or AUTH: it closes, retried later


class LinkInput(str, Enum):
    OPENED = "ACK to ENQ"
    NACKED = "NACK to ENQ"
    REG_ACCEPTED = f"ACCEPTED#{WHAT_REG}"
    REG_REFUSED = f"REFUSED#{WHAT_REG}"
    AUTH_ACCEPTED = f"ACCEPTED#{WHAT_AUTH}"
    AUTH_REFUSED = f"REFUSED#{WHAT_AUTH}"


#: The Central link: REG, then AUTH, then ready.
CENTRAL_LINK: dict[tuple[LinkPhase, LinkInput], LinkPhase] = {
    (LinkPhase.CONNECTING, LinkInput.OPENED): LinkPhase.REGISTERING,
    (LinkPhase.CONNECTING, LinkInput.NACKED): LinkPhase.REFUSED,
    (LinkPhase.REGISTERING, LinkInput.REG_ACCEPTED): LinkPhase.AUTHENTICATING,
    (LinkPhase.REGISTERING, LinkInput.REG_REFUSED): LinkPhase.REFUSED,
    (LinkPhase.AUTHENTICATING, LinkInput.AUTH_ACCEPTED): LinkPhase.READY,
    (LinkPhase.AUTHENTICATING, LinkInput.AUTH_REFUSED): LinkPhase.REFUSED,
}

#: The Engine link: ready once open (the Engine refuses a second Monitor).
ENGINE_LINK: dict[tuple[LinkPhase, LinkInput], LinkPhase] = {
    (LinkPhase.CONNECTING, LinkInput.OPENED): LinkPhase.READY,
    (LinkPhase.CONNECTING, LinkInput.NACKED): LinkPhase.REFUSED,
}


class Health(str, Enum):
    UNKNOWN = "unknown"  # no answer yet since the Monitor started
    OK = "OK"
    KO = "KO"


class HealthInput(str, Enum):
    ANSWERED_OK = "HCK_RESP#OK"
    FAILED = "failure"  # HCK_RESP#KO, no answer in time, or no link to the Engine


#: Every input is allowed everywhere; what a move sends is the Monitor's:
#: entering KO sends AVR, leaving KO sends RCV.
HEALTH: dict[tuple[Health, HealthInput], Health] = {
    (Health.UNKNOWN, HealthInput.ANSWERED_OK): Health.OK,
    (Health.UNKNOWN, HealthInput.FAILED): Health.KO,
    (Health.OK, HealthInput.ANSWERED_OK): Health.OK,
    (Health.OK, HealthInput.FAILED): Health.KO,
    (Health.KO, HealthInput.ANSWERED_OK): Health.OK,
    (Health.KO, HealthInput.FAILED): Health.KO,
}
