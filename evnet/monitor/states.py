"""
The Monitor's explicit state machines (tables for L{evnet.protocols.machine}):
each link's phase, from ENQ to keyed, and the Engine's health.  Pure: no
I/O, no Twisted.  An input a table does not allow in the current state is
logged and ignored by the Monitor (a KEY before any CHALLENGE, a REAUTH
before the first KEY...), never a crash.
"""

from __future__ import annotations

from enum import Enum


class LinkPhase(str, Enum):
    CONNECTING = "connecting"  # ENQ sent, no answer yet
    AUTHENTICATING = "authenticating"  # Central: AUTH sent, waiting for CHALLENGE
    PROVING = "proving"  # Central: PROOF sent, waiting for KEY
    READY = "ready"  # Central gave a key: everything is sealed / the Engine link is open
    ROTATING = "re-authenticating"  # keyed, REAUTH: AUTH sent sealed, waiting for CHALLENGE
    ROTATING_PROOF = "re-proving"  # keyed, REAUTH: PROOF sent sealed, waiting for KEY
    REFUSED = "refused"  # the peer refused the link or the login, or is not the real Central: retried later
    REVOKED = "revoked"  # Central revoked the key: closed, no new login until the operator asks


class LinkInput(str, Enum):
    OPENED = "ACK to ENQ"
    NACKED = "NACK to ENQ"
    CHALLENGE = "CHALLENGE"
    KEY = "KEY"
    NOT_CENTRAL = "a CHALLENGE or KEY refused"  # not the real Central (a wrong signature, a hostile cost)
    AUTH_REFUSED = "REFUSED#AUTH"
    REAUTH = "REAUTH"
    REVOKED = "REVOKED"


#: Phases in which the Central link has a key: messages flow, sealed.
KEYED = frozenset({LinkPhase.READY, LinkPhase.ROTATING, LinkPhase.ROTATING_PROOF})

#: The Central link: AUTH, CHALLENGE, PROOF, KEY, then keyed; REAUTH logs in
#: again on the keyed link (sealed) and switches to the new key.
CENTRAL_LINK: dict[tuple[LinkPhase, LinkInput], LinkPhase] = {
    (LinkPhase.CONNECTING, LinkInput.OPENED): LinkPhase.AUTHENTICATING,
    (LinkPhase.CONNECTING, LinkInput.NACKED): LinkPhase.REFUSED,
    (LinkPhase.AUTHENTICATING, LinkInput.CHALLENGE): LinkPhase.PROVING,
    (LinkPhase.AUTHENTICATING, LinkInput.AUTH_REFUSED): LinkPhase.REFUSED,
    (LinkPhase.AUTHENTICATING, LinkInput.NOT_CENTRAL): LinkPhase.REFUSED,
    (LinkPhase.PROVING, LinkInput.KEY): LinkPhase.READY,
    (LinkPhase.PROVING, LinkInput.NOT_CENTRAL): LinkPhase.REFUSED,
    (LinkPhase.PROVING, LinkInput.AUTH_REFUSED): LinkPhase.REFUSED,
    (LinkPhase.READY, LinkInput.REAUTH): LinkPhase.ROTATING,
    (LinkPhase.READY, LinkInput.REVOKED): LinkPhase.REVOKED,
    (LinkPhase.ROTATING, LinkInput.CHALLENGE): LinkPhase.ROTATING_PROOF,
    (LinkPhase.ROTATING, LinkInput.AUTH_REFUSED): LinkPhase.REFUSED,
    (LinkPhase.ROTATING, LinkInput.NOT_CENTRAL): LinkPhase.REFUSED,
    (LinkPhase.ROTATING, LinkInput.REVOKED): LinkPhase.REVOKED,
    (LinkPhase.ROTATING_PROOF, LinkInput.KEY): LinkPhase.READY,
    (LinkPhase.ROTATING_PROOF, LinkInput.NOT_CENTRAL): LinkPhase.REFUSED,
    (LinkPhase.ROTATING_PROOF, LinkInput.AUTH_REFUSED): LinkPhase.REFUSED,
    (LinkPhase.ROTATING_PROOF, LinkInput.REVOKED): LinkPhase.REVOKED,
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
