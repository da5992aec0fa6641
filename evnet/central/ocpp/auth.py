"""
Who may open an OCPP connection: OCPP 1.6 security profile 1 (HTTP Basic
auth, user = the charge point id, password = its secret) and profile 2 (the
same inside TLS: an ``ssl:`` endpoint), checked at the WebSocket handshake
against the CP's registration at EV_Registry (its verifier: the secret is
never stored).  The CP id is the URL's last path segment, as OCPP-J
specifies (``/ocpp/CP01`` or ``/CP01``).

A refusal is the same HTTP 401 for every reason (an unknown id, a
deregistered CP, a wrong password), after the same slow check (a decoy
verifier stands in for an unknown id), so a peer learns nothing about which
ids exist; the ``events`` row says which reason, with the peer's address.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from typing import Any, Callable, Optional
from urllib.parse import unquote

from twisted.internet import defer
from twisted.logger import Logger

from evnet.protocols import security
from evnet.protocols.vocabulary import valid_id

_DECOY: list[security.Verifier] = []


class Refused(Exception):
    """The handshake is refused (HTTP 401); the text is for the audit trail, not for the peer."""


def cp_id_of(path: str) -> str:
    """The CP id in the URL path: its last non-empty segment, percent-decoded."""
    segments = [s for s in path.split("?", 1)[0].split("/") if s]
    return unquote(segments[-1]) if segments else ""


def basic_credentials(header: Optional[str]) -> Optional[tuple[str, str]]:
    """(user, password) of an ``Authorization: Basic …`` header, or None."""
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        text = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = text.partition(":")
    return (user, password) if sep else None


def shown(text: str) -> str:
    """A peer-given text fit for a log line or an audit row."""
    clean = "".join(c if c.isprintable() else "?" for c in text)
    return clean if len(clean) <= 40 else clean[:40] + "…"


def check(verifier_text: Optional[str], secret: str) -> bool:
    """
    The slow check (run it off the reactor): C{secret} against the stored
    verifier, or against a decoy when there is none, so both take as long.
    """
    if verifier_text is None:
        if not _DECOY:
            _DECOY.append(security.make_verifier(security.new_secret()))
        security.check_secret(_DECOY[0], secret)
        return False
    try:
        verifier = security.Verifier.from_text(verifier_text)
    except security.SecurityError:
        return False
    return security.check_secret(verifier, secret)


class Authenticator:
    """
    Checks a handshake: C{lookup(cp_id)} gives the registration (a Deferred
    of the Registry's row or None), C{slow_check(verifier_text, secret)} runs
    L{check} on a thread of its own (a Deferred of bool).  A CP that logged
    in is remembered (a keyed digest of its secret, in memory, for as long as
    its verifier does not change) so that a reconnection storm does not cost
    one scrypt per CP.
    """

    log = Logger()

    def __init__(self, lookup: Callable[[str], defer.Deferred], slow_check: Callable[[Optional[str], str], defer.Deferred],
                 record: Callable[[str, str, str, str], None]) -> None:
        self.lookup = lookup
        self.slow_check = slow_check
        self.record = record  # (cp id, text, peer, why): the journal message and audit row of a refusal
        self._key = os.urandom(32)
        self._known: dict[str, tuple[str, bytes]] = {}  # cp id -> (verifier text, digest of the secret)

    def _digest(self, secret: str) -> bytes:
        return hmac.new(self._key, secret.encode("utf-8"), hashlib.sha256).digest()

    @defer.inlineCallbacks
    def authenticate(self, path: str, authorization: Optional[str], peer: str) -> Any:
        """Fires with the CP's registration row, or fails with L{Refused} (already recorded)."""
        cp_id = cp_id_of(path)
        try:
            row = yield self._check(cp_id, authorization)
        except Refused as e:
            subject = cp_id if valid_id(cp_id) else shown(cp_id)
            self.record(subject, f"OCPP connection as CP {subject} from {peer} refused: {e}", peer, str(e))
            raise
        return row

    @defer.inlineCallbacks
    def _check(self, cp_id: str, authorization: Optional[str]) -> Any:
        if not valid_id(cp_id):
            raise Refused("the URL names no valid CP id")
        credentials = basic_credentials(authorization)
        if credentials is None:
            raise Refused("no HTTP Basic credentials (OCPP security profile 1 or 2 is required)")
        user, secret = credentials
        if user != cp_id:
            raise Refused(f"the Basic auth user {shown(user)!r} is not the CP id of the URL")
        try:
            row = yield self.lookup(cp_id)
        except Exception as e:
            self.log.error("CP {cp}: cannot read its registration: {why}", cp=cp_id, why=str(e))
            raise Refused(f"its registration could not be read ({e})")
        verifier = row.get("verifier") if row is not None else None
        known = self._known.get(cp_id)
        if verifier is not None and known is not None and known[0] == verifier:
            if hmac.compare_digest(known[1], self._digest(secret)):
                return row
        good = yield self.slow_check(verifier, secret)
        if row is None:
            raise Refused("it is not registered at EV_Registry")
        if verifier is None:
            raise Refused("it is deregistered at EV_Registry")
        if not good:
            raise Refused("wrong password")
        self._known[cp_id] = (verifier, self._digest(secret))
        return row
