"""
Trust for charging points, Central's side (docs/protocol.md §7): who a
Monitor is, and the key everything from its CP is sealed under.

- **Login** on a Monitor's link: ``AUTH#cpId#nonce`` → the registration
  EV_Registry wrote (L{security.ServerLogin}; a decoy when the id is
  unknown, deregistered or has no verifier) → ``CHALLENGE``; ``PROOF`` →
  ``KEY`` with the CP's state, a new key and the liveness interval.  From
  KEY on the link is sealed both ways: Central sends through a
  L{SealedChannel} (that is C{cp.link}), and accepts only ``SEC`` that
  opens under the CP's current key.  A second link that logs in for a CP
  replaces the first; a link that has not logged in never affects a CP.
- **Refusals** are told to the peer ("wrong credentials", whatever the
  real reason) and recorded with the peer's address and the real reason,
  repeated ones summarized (L{Refusals}); too many failed logins from one
  address lock it out for a while (L{LoginThrottle}).
- **Keys**: one per CP (L{CpKey}, in memory only), rotated by ``REAUTH``
  every C{key_rotation} seconds (the CP logs in again on the same link,
  sealed under the current key); the key a rotation replaced stays good
  for Kafka records C{key_grace} seconds.  L{Trust.revoke} deletes a key
  at once and puts the CP out of service until a new login.
- **Kafka**: a record on ``cp.telemetry``/``cp.events`` is opened under its
  CP's key (L{Trust.open_record}) or refused.

What a CP says once opened goes to the rules' one dispatch
(L{evnet.central.rules.Central.cp_report}), as before.
"""

from __future__ import annotations

import dataclasses
import os
from typing import TYPE_CHECKING, Callable, Optional

from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from evnet.protocols import messages as m
from evnet.protocols import security
from evnet.protocols.channel import IChannel
from evnet.protocols.sealed import SealedChannel
from evnet.protocols.vocabulary import ID_RULE, REASON_DISCONNECTED, REASON_KEY_REVOKED, WHAT_AUTH, valid_id
from evnet.registry.schema import STATUS_REGISTERED
from evnet.central.audit import OK, REFUSED, Note
from evnet.central.model import KEY_ACTIVE, KEY_NONE, KEY_REVOKED, REGISTRATION_UNKNOWN, ChargingPoint, CpKey
from evnet.central.refusals import LoginThrottle, Refusals

if TYPE_CHECKING:  # pragma: no cover
    from evnet.central.rules import Central

KEY_ROTATION = 3600.0  # seconds between two REAUTH of a CP (0: never)
KEY_GRACE = 15.0  # seconds the key a rotation replaced is still good for Kafka records
REAUTH_TIMEOUT = 30.0  # seconds a CP has to log in again after REAUTH before its key expires
LOGIN_FAILURES = 5  # failed logins from one address ...
LOGIN_WINDOW = 60.0  # ... within this many seconds lock it out for as long

# Kinds of the events rows.
KIND_AUTH_REFUSED = "auth-refused"  # a login refused
KIND_REFUSED = "refused"  # a message refused on a Monitor's link
KIND_KAFKA_REFUSED = "kafka-refused"  # a CP record refused on Kafka
KIND_KEY = "key"  # a key expired, a link replaced
KIND_REVOKE = "revoke"
KIND_MALFORMED = "malformed"  # frames that are not frames or not messages, on a link (one row per link a minute)

# Actions of the audit rows (docs/audit.md).
ACTION_LOGIN = "cp.login"
ACTION_LOCKOUT = "login.lockout"  # an address locked out after too many failed logins
ACTION_LOCKED = "login.locked"  # a login from a locked-out address, refused
ACTION_LINK_REFUSED = "link.refused"  # a message refused on a Monitor's link
ACTION_SEALED_REFUSED = "sealed.refused"  # a sealed message or record that does not open (tamper, replay, old key)
ACTION_MALFORMED = "link.malformed"
ACTION_ROTATE = "key.rotate"
ACTION_REAUTH = "key.reauth"
ACTION_KEY_END = "key.end"
_SEALED = {"not-opened", "old-key", "plain", "unknown"}

# What a peer is told.
WRONG_CREDENTIALS = "wrong credentials"
NOT_AUTHENTICATED = "link not authenticated"
REG_REFUSED = "register this CP at EV_Registry; a link can no longer change a CP's location or price"
NO_NONCE = ("this CP must be registered at EV_Registry and log in with its credentials "
            "(AUTH with its id and a fresh nonce: this Monitor sent no nonce)")
LOCKED_OUT = "too many failed logins from this address; try again in {seconds} s"


def shown(text: str) -> str:
    """An id as it may go in a log line or a row: as is if valid, else quoted and cut."""
    return text if valid_id(text) else repr(text[:32])


def field(text: str) -> str:
    """C{text} as a REFUSED field may carry it: no '#', no control character."""
    return "".join(" " if c == "#" or c < " " else c for c in text)


class LinkSession:
    """What Central knows of one Monitor's link (its context["trust"])."""

    def __init__(self, link: IChannel) -> None:
        self.link = link
        host, sep, _ = link.peer_name.rpartition(":")
        self.address = host if sep else link.peer_name  # for the lockout: the host, without the port
        self.cp_id: Optional[str] = None  # the CP it logged in as
        self.key: Optional[CpKey] = None  # the key it logged in with last
        self.channel: Optional[SealedChannel] = None  # what Central sends on it, once it has a key
        self.previous: Optional[CpKey] = None  # the key before a re-login, until the peer uses the new one
        self.login: Optional[PendingLogin] = None
        self.ended: Optional[str] = None  # why its key is no longer good (revoked, replaced, expired)


@dataclasses.dataclass
class PendingLogin:
    auth: m.Auth
    reply: IChannel  # where the login's answers go: the link, or its sealed channel on a re-login
    server: Optional[security.ServerLogin] = None  # once the registration is read
    row: Optional[dict] = None
    why: Optional[str] = None  # why it cannot succeed (no usable verifier), for the record


class Trust:
    log = Logger()

    def __init__(
        self,
        central: "Central",
        *,
        key_rotation: float = KEY_ROTATION,
        key_grace: float = KEY_GRACE,
        reauth_timeout: float = REAUTH_TIMEOUT,
        login_failures: int = LOGIN_FAILURES,
        login_window: float = LOGIN_WINDOW,
        decoy_secret: Optional[bytes] = None,
    ) -> None:
        self.central = central
        self.clock = central.clock
        self.journal = central.journal
        self.key_rotation = key_rotation
        self.key_grace = key_grace
        self.reauth_timeout = reauth_timeout
        self.audit = central.audit
        self.refusals = Refusals(central.journal, central.clock, audit=central.audit)
        self.throttle = LoginThrottle(central.clock, login_failures, login_window) if login_failures else None
        self._decoy = os.urandom(32) if decoy_secret is None else decoy_secret
        self._timers: dict[str, IDelayedCall] = {}  # CP id -> its next REAUTH, or the deadline of one

    # -- a Monitor's link ------------------------------------------------------

    @staticmethod
    def session(link: IChannel) -> LinkSession:
        s = link.context.get("trust")
        if s is None:
            s = link.context["trust"] = LinkSession(link)
        return s

    def received(self, link: IChannel, msg: m.Message) -> None:
        """A message on a Monitor's link: a login step, or (sealed) a report of its CP."""
        s = self.session(link)
        if s.key is None:
            if isinstance(msg, m.Sec):
                self._refuse(s, link, msg, "", NOT_AUTHENTICATED, "not-authenticated")
            else:
                self._dispatch(s, msg, link)
            return
        if not isinstance(msg, m.Sec):
            self._refuse(s, link, msg, s.cp_id or "",
                         f"this link is sealed since KEY: a plain {msg.code} is refused", "plain-after-key")
            return
        inner = self._open(s, msg)
        if inner is not None:
            self._dispatch(s, inner, s.channel)

    def link_lost(self, link: IChannel, why: str) -> None:
        s = link.context.get("trust")
        if s is None:
            return
        if s.login is not None and s.key is None and self.throttle is not None:
            # A login left half-way counts as a failed one (a costless probe otherwise), silently.
            self._count_failure(s, s.login.auth.cp_id)
        s.login = None
        cp = self.central.cps.get(s.cp_id) if s.cp_id else None
        if cp is not None and s.channel is not None and cp.link is s.channel:
            self.central.cp_offline(cp, f"CP {cp.id} DESCONECTADO: link to its Monitor lost ({why})")

    def _dispatch(self, s: LinkSession, msg: m.Message, reply: IChannel) -> None:
        if isinstance(msg, m.Auth):
            self._auth(s, msg, reply)
        elif isinstance(msg, m.Proof):
            self._proof(s, msg, reply)
        elif isinstance(msg, m.Reg):
            self._refuse(s, reply, msg, msg.cp_id, REG_REFUSED, "reg")
        elif s.key is None:
            self._refuse(s, reply, msg, getattr(msg, "cp_id", ""), NOT_AUTHENTICATED, "not-authenticated")
        else:
            why = self.central.cp_report(s.cp_id, msg)
            if why is not None:
                self._refuse(s, reply, msg, s.cp_id, why, "report")

    def _refuse(self, s: LinkSession, reply: IChannel, msg: m.Message, subject: str, why: str, like: str) -> None:
        """Tell the peer (on C{reply}) and record it: one row per address, message and reason a minute."""
        reply.send(m.Refused(msg.code, field(subject), field(why)))
        action = ACTION_SEALED_REFUSED if like in _SEALED else ACTION_LINK_REFUSED
        self.refusals.record(
            KIND_REFUSED, subject, f"{msg.code} from {s.link.peer_name} refused: {why}", (s.address, msg.code, like),
            Note("cp", subject, s.link.peer_name, action, REFUSED, {"message": msg.code, "reason": why}),
        )

    def _open(self, s: LinkSession, sec: m.Sec) -> Optional[m.Message]:
        """The message in C{sec} if it opens under the link's current key; else refused (plainly) and None."""
        cp = self.central.cps.get(s.cp_id or "")
        if cp is None or cp.key is not s.key:
            why = s.ended or f"this link's key is no longer CP {s.cp_id}'s key"
            self._refuse(s, s.link, sec, s.cp_id or "", why, "old-key")
            return None
        key = s.key
        if s.previous is not None and sec.key_id == s.previous.key_id and sec.key_id != key.key_id:
            key = s.previous  # sent before the peer had the KEY of its re-login
        try:
            inner = security.open_message(key.opener("link"), sec)
        except (security.SecurityError, m.MessageError) as e:
            self._refuse(s, s.link, sec, cp.id, f"not opened: {e}", "not-opened")
            return None
        if key is s.key:
            s.previous = None  # the peer uses the new key now
        return inner

    # -- login -----------------------------------------------------------------

    def _locked_out(self, s: LinkSession, reply: IChannel, cp_id: str) -> bool:
        """True (and refused, unrecorded: the lockout was) if C{s}'s address is locked out."""
        wait = self.throttle.locked_for(s.address) if self.throttle else 0
        if wait:
            reply.send(m.Refused(WHAT_AUTH, cp_id, LOCKED_OUT.format(seconds=wait)))
            # The lockout has its row; the logins it refuses, one a minute per address (with how many more).
            self.refusals.record(KIND_AUTH_REFUSED, shown(cp_id), "", (s.address, "locked"),
                                 Note("cp", cp_id, s.link.peer_name, ACTION_LOCKED, REFUSED,
                                      {"reason": "the address is locked out", "seconds_left": wait}),
                                 journal=False)
        return bool(wait)

    def _refuse_login(self, s: LinkSession, reply: IChannel, cp_id: str, told: str, why: str, like: str) -> None:
        reply.send(m.Refused(WHAT_AUTH, cp_id, field(told)))
        said = "" if told == why else f" (the peer was told: {told})"
        self.refusals.record(KIND_AUTH_REFUSED, cp_id, f"login of CP {shown(cp_id)} from {s.link.peer_name} "
                             f"refused: {why}{said}", (s.address, like),
                             Note("cp", cp_id, s.link.peer_name, ACTION_LOGIN, REFUSED, {"reason": why, "told": told}))
        self.central.alerts.cp_login_failed(shown(cp_id), f"from {s.link.peer_name}: {why}")

    def _auth(self, s: LinkSession, msg: m.Auth, reply: IChannel) -> None:
        cp_id = msg.cp_id
        # A re-login on a sealed link has proved itself already: the lockout is for strangers.
        if s.key is None and self._locked_out(s, reply, cp_id):
            return
        why = None
        if not msg.nonce:
            why, like = NO_NONCE, "no-nonce"
        elif not valid_id(cp_id):
            why, like = f"a CP id is {ID_RULE}", "bad-id"
        elif s.cp_id not in (None, cp_id):
            why, like = f"this link is CP {s.cp_id}", "other-cp"
        else:
            try:
                nonce = security.unb64(msg.nonce, "the nonce")
            except security.SecurityError:
                nonce = b""
            if not 8 <= len(nonce) <= 64:
                why, like = "the nonce must be 8 to 64 random bytes in base64url", "bad-nonce"
        if why is not None:
            self._refuse_login(s, reply, cp_id, why, why, like)
            return
        if s.login is not None and s.key is None:  # (a CP logged in may just start its login again)
            self._failed(s, s.login.reply, s.login.auth.cp_id, "a new AUTH before the PROOF of the last one", "abandoned")
            if self._locked_out(s, reply, cp_id):
                s.login = None
                return
        pending = s.login = PendingLogin(msg, reply)
        self.central.store.registration(cp_id).addCallbacks(
            self._looked_up, self._not_looked_up, callbackArgs=(s, pending), errbackArgs=(s, pending)
        )

    def _looked_up(self, row: Optional[dict], s: LinkSession, pending: PendingLogin) -> None:
        if s.login is not pending or not s.link.is_open or s.ended:
            return  # another AUTH, or the link went or lost its key, meanwhile
        verifier, pending.why = self._verifier(row)
        cp = self.central.cps.get(pending.auth.cp_id)
        if cp is not None:
            self._registration_read(cp, row)
        pending.row = row
        pending.server = security.ServerLogin(pending.auth, verifier, self._decoy)
        pending.reply.send(pending.server.challenge())

    def _registration_read(self, cp: ChargingPoint, row: Optional[dict]) -> None:
        status = row["status"] if row is not None else REGISTRATION_UNKNOWN
        if cp.registration != status:
            cp.registration = status
            self.journal.notify({"type": "cp", "cp": cp.as_dict()})

    @staticmethod
    def _verifier(row: Optional[dict]) -> tuple[Optional[security.Verifier], Optional[str]]:
        """The verifier of a registration, or None and why (for the record; the peer learns nothing)."""
        if row is None:
            return None, "unknown CP id (not registered at EV_Registry)"
        if row["status"] != STATUS_REGISTERED:
            return None, f"{row['status']} at EV_Registry"
        if not row["verifier"]:
            return None, "no credentials at EV_Registry"
        try:
            return security.Verifier.from_text(row["verifier"]), None
        except security.SecurityError:
            return None, "its verifier at EV_Registry cannot be read"

    def _not_looked_up(self, failure: Failure, s: LinkSession, pending: PendingLogin) -> None:
        self.journal.db_error(failure, "reading a registration")
        if s.login is pending:
            s.login = None
            self._refuse_login(s, pending.reply, pending.auth.cp_id, "Central cannot check credentials now; try again",
                               "the registration could not be read (database error)", "db")

    def _proof(self, s: LinkSession, msg: m.Proof, reply: IChannel) -> None:
        pending, s.login = s.login, None
        if s.key is None and self._locked_out(s, reply, msg.cp_id):
            return
        if pending is None or pending.server is None:
            self._failed(s, reply, msg.cp_id, "PROOF without a CHALLENGE", "no-challenge")
            return
        cp_id = pending.auth.cp_id
        if msg.cp_id != cp_id:
            self._failed(s, reply, msg.cp_id, f"PROOF for CP {msg.cp_id} in a login as CP {cp_id}", "other-cp")
            return
        try:
            answer, key_id, key = pending.server.check(msg, "", self.central.liveness_interval)
        except security.SecurityError as e:
            why = pending.why or ("wrong secret" if str(e) == WRONG_CREDENTIALS else str(e))
            self._failed(s, reply, cp_id, why, why)  # one summary per real reason (a few fixed texts)
            return
        self._logged_in(s, pending, answer, CpKey(cp_id, key_id, key, self.central.now()), reply)

    def _failed(self, s: LinkSession, reply: IChannel, cp_id: str, why: str, like: str) -> None:
        """A failed login: "wrong credentials" to the peer, the real reason to the record; it counts."""
        self._refuse_login(s, reply, cp_id, WRONG_CREDENTIALS, why, like)
        self._count_failure(s, cp_id)
        if s.key is not None:
            # A CP whose credentials no longer hold keeps no key: it must log in anew.
            cp = self.central.cps.get(s.cp_id or "")
            if cp is not None and cp.key is s.key:
                self._end_key(cp, f"its login again failed ({why})", KIND_KEY, KEY_NONE)

    def _count_failure(self, s: LinkSession, cp_id: str) -> None:
        if self.throttle is not None and self.throttle.failed(s.address):
            self.audit.record("cp", cp_id, s.link.peer_name, ACTION_LOCKOUT, REFUSED,
                              failures=self.throttle.max_failures, window_seconds=self.throttle.window,
                              locked_seconds=self.throttle.window)
            self.journal.message(
                KIND_AUTH_REFUSED, cp_id,
                f"{self.throttle.max_failures} failed logins from {s.address} within {self.throttle.window:g} s: "
                f"its logins are refused for {self.throttle.window:g} s (without a row each)", level="warn",
            )

    def _logged_in(self, s: LinkSession, pending: PendingLogin, answer: m.Key, key: CpKey, reply: IChannel) -> None:
        central = self.central
        cp = central.cp_registered(pending.row)
        again = s.key is not None and cp.key is s.key  # a rotation on this very link
        old = cp.link
        if old is not None and old is not s.channel:
            old_session = old.context.get("trust")
            if old_session is not None:
                old_session.ended = f"CP {cp.id} logged in on another link"
            cp.link = None
            old.close()
            self.journal.message(KIND_KEY, cp.id, f"CP {cp.id}: its link from {old.peer_name} is replaced by a new "
                                 f"login from {s.link.peer_name}")
        self._cancel_timer(cp.id)
        if cp.key is not None:
            cp.old_key, cp.old_key_until = cp.key, self.clock.seconds() + self.key_grace
        s.previous = s.key if again else None
        cp.key, cp.key_state, cp.key_revoked_by = key, KEY_ACTIVE, None
        s.cp_id, s.key, s.ended = cp.id, key, None
        s.link.context["cp_id"] = cp.id
        s.channel = SealedChannel(s.link, key.sealer())

        def greet(state) -> None:
            reply.send(dataclasses.replace(answer, state=state.value))

        self.audit.record("cp", cp.id, s.link.peer_name, ACTION_ROTATE if again else ACTION_LOGIN, OK,
                          key_id=key.key_id, **({"replaced_link": old.peer_name} if old is not None and old is not s.channel
                                                else {}))
        if again:
            cp.link = s.channel
            greet(cp.state)
            self.log.info("CP {cp} logged in again on its link: key {key} (rotation)", cp=cp.id, key=key.key_id)
            self.journal.notify({"type": "cp", "cp": cp.as_dict()})
        else:
            central.cp_logged_in(cp, s.channel, greet)
        if self.key_rotation > 0:
            self._timers[cp.id] = self.clock.callLater(self.key_rotation, self._rotate, cp, key)

    # -- keys: rotation, expiry, revocation --------------------------------------

    def _cancel_timer(self, cp_id: str) -> None:
        call = self._timers.pop(cp_id, None)
        if call is not None and call.active():
            call.cancel()

    def cancel_pending(self) -> None:
        for cp_id in list(self._timers):
            self._cancel_timer(cp_id)

    def _rotate(self, cp: ChargingPoint, key: CpKey) -> None:
        self._timers.pop(cp.id, None)
        if cp.key is not key:
            return
        if cp.link is None:
            self._end_key(cp, f"its key expired ({self.key_rotation:g} s old, and no link to rotate it on)",
                          KIND_KEY, KEY_NONE)
            return
        self.log.info("CP {cp}: key {key} rotation: REAUTH sent", cp=cp.id, key=key.key_id)
        self.audit.record("system", "central", cp.link.peer_name, ACTION_REAUTH, OK, cp=cp.id, key_id=key.key_id)
        cp.link.send(m.Reauth(cp.id))
        self._timers[cp.id] = self.clock.callLater(self.reauth_timeout, self._reauth_missed, cp, key)

    def _reauth_missed(self, cp: ChargingPoint, key: CpKey) -> None:
        self._timers.pop(cp.id, None)
        if cp.key is key:
            self._end_key(cp, f"it did not log in again within {self.reauth_timeout:g} s of REAUTH: its key expired",
                          KIND_KEY, KEY_NONE)

    def _end_key(self, cp: ChargingPoint, why: str, kind: str, state: str, *,
                 reason: str = REASON_DISCONNECTED, last: Optional[Callable[[IChannel], None]] = None) -> None:
        """
        Delete C{cp}'s key now (and the one a rotation replaced): nothing under
        them is accepted any more.  A CP connected goes DESCONECTADO, its charge
        ending with a ticket; its link gets C{last} (a last word), then closes.
        """
        self._cancel_timer(cp.id)
        channel = cp.link
        if kind != KIND_REVOKE:  # (a revocation has the operator's row)
            self.audit.record("system", "central", channel.peer_name if channel is not None else None, ACTION_KEY_END,
                              OK, cp=cp.id, key_id=cp.key.key_id if cp.key else None, reason=why)
        cp.key, cp.old_key, cp.key_state = None, None, state
        if channel is not None and channel.context.get("trust") is not None:
            channel.context["trust"].ended = why
        self.central.cp_offline(cp, f"CP {cp.id} out of service: {why}", kind=kind, reason=reason)
        if channel is not None and last is not None:
            last(channel)
        elif channel is not None:
            channel.close()

    def revoke(self, cp_id: str, requester: str) -> tuple[bool, str]:
        """
        Revoke C{cp_id}'s key at once: REVOKED goes to its Monitor (sealed
        under that key, the last message under it), its link closes, its
        charge ends with a ticket, and it is out of service (DESCONECTADO,
        key revoked) until a new login.
        """
        cp = self.central.cps.get(cp_id)
        if cp is None:
            return False, f"unknown CP {cp_id}"
        if cp.key_state == KEY_REVOKED:
            return True, f"CP {cp_id}'s key is already revoked"
        if cp.key is None:
            return False, f"CP {cp_id} has no key to revoke: it has not logged in"
        why = f"its key was revoked by {requester}"
        cp.key_revoked_by = requester
        if cp.session is not None:
            self.central.charges.notify_driver(
                cp.session, m.Notice(cp.id, f"CP {cp.id} is out of service ({why}); your charge ends now"))

        def last(channel: IChannel) -> None:
            # Closed once REVOKED is acknowledged (or the link gives up on it).
            channel.sendMessage(m.Revoked(cp.id, why)).addBoth(lambda _: channel.close())

        self._end_key(cp, why, KIND_REVOKE, KEY_REVOKED, reason=REASON_KEY_REVOKED, last=last)
        return True, f"CP {cp_id}'s key revoked: it is out of service until it logs in again"

    # -- Kafka -----------------------------------------------------------------

    def open_record(self, topic: str, cp_id: str, msg: m.Message) -> Optional[m.Message]:
        """
        The message in a record of C{topic} keyed C{cp_id}, if it is sealed
        under that CP's key (or the one a rotation replaced, for a while);
        else refused, recorded, and None.
        """
        cp = self.central.cps.get(cp_id)
        if not isinstance(msg, m.Sec):
            why, like = f"a plain {msg.code}: a CP's records must be sealed under its key", "plain"
        elif cp is None:
            why, like = "unknown CP", "unknown"
        else:
            key = self._record_key(cp, msg.key_id)
            if key is None:
                why = f"sealed under key {msg.key_id}, not the CP's key" + (" (revoked)" if cp.key_state == KEY_REVOKED else "")
                like = "old-key"
            else:
                try:
                    return security.open_message(key.opener(topic), msg)
                except (security.SecurityError, m.MessageError) as e:
                    why, like = f"not opened: {e}", "not-opened"
        self.refusals.record(KIND_KAFKA_REFUSED, shown(cp_id), f"{topic}: a record for CP {shown(cp_id)} refused: {why}",
                             (topic, like), Note("cp", shown(cp_id), None, ACTION_SEALED_REFUSED, REFUSED,
                                                 {"topic": topic, "reason": why}))
        return None

    def _record_key(self, cp: ChargingPoint, key_id: str) -> Optional[CpKey]:
        if cp.key is not None and cp.key.key_id == key_id:
            return cp.key
        old = cp.old_key
        if old is not None and old.key_id == key_id and self.clock.seconds() < cp.old_key_until:
            return old
        return None

    def malformed(self, link: IChannel, actor_kind: str, why: str) -> None:
        """A frame on C{link} that is not a frame or not a message: one row per link a minute, with how many."""
        who = link.context.get("cp_id") or link.context.get("driver_id") or ""
        self.refusals.record(KIND_MALFORMED, who, f"malformed input from {link.peer_name}: {why}", (link.peer_name,),
                             Note(actor_kind, who, link.peer_name, ACTION_MALFORMED, REFUSED, {"reason": why}))

    def sweep(self, everything: bool = False) -> None:
        """Write the refusal summaries that are due, forget old failures (every few seconds)."""
        self.refusals.sweep(everything)
        self.audit.sweep()
        if self.throttle is not None:
            self.throttle.sweep()
