"""
Drivers' accounts, Central's side (docs/protocol.md §7, "Drivers"): who a
driver is, on its own link or through Kafka, and the key what it exchanges
with Central is sealed under.

- **Login** as a CP's (L{security.ServerLogin} over the account EV_Registry
  keeps, a decoy for an id without one): ``AUTH#driverId#nonce`` →
  ``CHALLENGE`` → ``PROOF`` → ``KEY``.  On a link, everything after KEY is
  sealed both ways (Central seals as role C, the driver as role D) and the
  link is then the driver's (L{Central.driver_hello}: it replaces an older
  link of that id).  Through Kafka the same four messages travel on
  ``driver.requests`` / ``driver.notifications`` (keyed by the driver id);
  then every request must be a ``SEC`` under that key and every
  notification for that driver is sealed for it.
- **Mode** (Central's ``--driver-auth``): ``required``, nothing but a login
  is taken from a driver; ``optional`` (the migration path), a plain hello
  or request is still taken for an id that has **no** account, never for
  one that has: an account's id is only ever its owner's.
- **Refusals** are recorded by L{audit}, the one place this module leaves
  a row.  A refused login is told ("wrong credentials" whatever the real
  reason) on the link or on ``driver.notifications``, naming the AUTH nonce
  or the PROOF it refuses (REFUSED's C{ref}), as a CHALLENGE names its AUTH:
  the driver ignores the answers to another login of its id (a stranger's,
  an older one).  Through Kafka a driver id may have a few logins under way
  at once (L{MAX_KAFKA_LOGINS}; at most L{MAX_KAFKA_LOGIN_IDS} ids have one,
  so AUTHs for ever new ids do not grow Central); a PROOF is checked
  against each and a wrong one ends none, so a stranger's attempts do not
  break the owner's login.
  Any other refused record from Kafka is not answered: a stranger cannot
  make a driver's notifications say anything else.
"""

from __future__ import annotations

import collections
import dataclasses
import os
from typing import TYPE_CHECKING, Any, Optional

from twisted.logger import Logger
from twisted.python.failure import Failure

from evnet.central import audit
from evnet.protocols import messages as m
from evnet.protocols import security
from evnet.protocols.channel import IChannel
from evnet.protocols.sealed import SealedChannel
from evnet.protocols.vocabulary import ID_RULE, WHAT_AUTH, valid_id
from evnet.registry.schema import STATUS_REGISTERED
from evnet.central.trust import LOCKED_OUT, WRONG_CREDENTIALS, field, shown

if TYPE_CHECKING:  # pragma: no cover
    from evnet.central.rules import Central

AUTH_REQUIRED = "required"
AUTH_OPTIONAL = "optional"
AUTH_MODES = (AUTH_REQUIRED, AUTH_OPTIONAL)

KIND_DRIVER_AUTH = "driver-auth"  # a driver logged in
KIND_DRIVER_REFUSED = "driver-refused"  # a driver's login or request refused

LOG_IN_FIRST = "this Central requires driver credentials: log in (AUTH) first"
HAS_ACCOUNT = "driver {id} has credentials: log in with them"
KEY_STATE = "DRIVER"  # the state field of a driver's KEY
MAX_KAFKA_LOGINS = 4  # logins of one driver id under way through Kafka at once (a fifth drops the oldest)
MAX_KAFKA_LOGIN_IDS = 10_000  # driver ids with a login under way through Kafka (one more drops the longest waiting)
REF_CHARS = 88  # a REFUSED's ref at most: a 64-byte nonce in base64url


@dataclasses.dataclass
class DriverKey:
    """One driver's key of one login: what it seals and opens with."""

    driver_id: str
    key_id: str
    sealer: security.Sealer
    opener: security.Opener
    channel: Optional[SealedChannel] = None  # what Central sends the driver through (link or Kafka)


def make_key(driver_id: str, key_id: str, key: bytes) -> DriverKey:
    return DriverKey(driver_id, key_id, security.Sealer(driver_id, key_id, key, security.ROLE_CENTRAL),
                     security.Opener(driver_id, key_id, key, (security.ROLE_DRIVER,)))


@dataclasses.dataclass
class Login:
    auth: m.Auth
    server: Optional[security.ServerLogin] = None
    why: Optional[str] = None  # why it cannot succeed, for the record


class DriverTrust:
    log = Logger()

    def __init__(self, central: "Central", mode: str = AUTH_OPTIONAL, decoy_secret: Optional[bytes] = None) -> None:
        if mode not in AUTH_MODES:
            raise ValueError(f"driver auth {mode!r}: one of {', '.join(AUTH_MODES)}")
        self.central = central
        self.mode = mode
        self._decoy = os.urandom(32) if decoy_secret is None else decoy_secret
        self.kafka_keys: dict[str, DriverKey] = {}  # driver id -> the key of its last Kafka login
        # driver id -> its logins under way, by AUTH nonce; the id of the newest AUTH last
        self._kafka_logins: collections.OrderedDict[str, dict[str, Login]] = collections.OrderedDict()
        self.accounts: set[str] = set()  # ids known to have an account (loaded at start, and at each look-up)

    # -- the one record of this module -------------------------------------------

    def audit(self, action: str, driver_id: str, address: str, ok: bool, detail: str) -> None:
        """
        A driver's login (success or failure, with the real reason) or a
        refused request, with where it came from: the one row this module
        writes (repeated refusals summarized by L{Refusals}).
        """
        text = f"driver {shown(driver_id)}: {action} from {address}: {detail}"
        what = f"driver.{action.lower()}"  # driver.login, driver.req, ... (docs/audit.md)
        if ok:
            self.central.journal.message(KIND_DRIVER_AUTH, driver_id, text)
            trail = getattr(self.central, "audit", None)
            if trail is not None:
                trail.record("driver", shown(driver_id), address, what, audit.OK, detail=detail)
        else:
            self.central.trust.refusals.record(
                KIND_DRIVER_REFUSED, shown(driver_id), text, (address, action, detail),
                note=audit.Note("driver", shown(driver_id), address, what, audit.REFUSED, {"reason": detail}))

    # -- a driver's link -----------------------------------------------------------

    def received(self, link: IChannel, msg: m.Message) -> None:
        key: Optional[DriverKey] = link.context.get("driver_key")
        if key is not None:
            self._sealed(link, key, msg)
        elif isinstance(msg, m.Auth):
            self._auth(link, msg)
        elif isinstance(msg, m.Proof):
            self._proof(link, msg)
        else:
            self._plain(link, msg, lambda: self.central.driver_message(link, msg))

    def _sealed(self, link: IChannel, key: DriverKey, msg: m.Message) -> None:
        if not isinstance(msg, m.Sec):
            self._refuse(link, msg, key.driver_id, f"this link is sealed since KEY: a plain {msg.code} is refused")
            return
        try:
            inner = security.open_message(key.opener, msg)
        except (security.SecurityError, m.MessageError) as e:
            self._refuse(link, msg, key.driver_id, f"not opened: {e}")
            return
        self._dispatch(key, inner, key.channel, link.peer_name)

    def _dispatch(self, key: DriverKey, inner: m.Message, channel: IChannel, address: str) -> None:
        named = getattr(inner, "driver_id", key.driver_id)
        if named != key.driver_id or isinstance(inner, (m.Auth, m.Proof)):
            self.audit(inner.code, key.driver_id, address, False, f"{inner.code} for driver {shown(named)} refused")
            channel.send(m.Refused(inner.code, field(named), f"this is driver {key.driver_id}'s key"))
            return
        self.central.driver_message(channel, inner)

    def _plain(self, link: IChannel, msg: m.Message, take: Any) -> None:
        """A plain message from a driver that has not logged in: taken only in optional mode, for an id without an account."""
        driver_id = getattr(msg, "driver_id", None)
        if self.mode == AUTH_REQUIRED or driver_id is None:
            self._refuse(link, msg, driver_id or "", LOG_IN_FIRST)
            return
        if link.context.get("plain_driver") == driver_id:
            take()
            return

        def looked_up(row: Optional[dict]) -> None:
            if row is not None:
                self.accounts.add(driver_id)
                self._refuse(link, msg, driver_id, HAS_ACCOUNT.format(id=driver_id))
            elif link.is_open:
                link.context["plain_driver"] = driver_id
                take()

        self.central.store.driver_account(driver_id).addCallbacks(looked_up, self._db_failed, errbackArgs=(link, msg))

    def _db_failed(self, failure: Failure, link: IChannel, msg: m.Message) -> None:
        self.central.journal.db_error(failure, "reading a driver account")
        link.send(m.Refused(msg.code, field(getattr(msg, "driver_id", "")), "Central cannot check credentials now; try again"))

    def _refuse(self, link: IChannel, msg: m.Message, driver_id: str, why: str) -> None:
        link.send(m.Refused(msg.code, field(driver_id), field(why)))
        self.audit(msg.code, driver_id, link.peer_name, False, f"{msg.code} refused: {why}")

    # -- login (a link, or Kafka: C{reply} is where the answers go) ----------------

    def _address(self, link: IChannel) -> str:
        host, sep, _ = link.peer_name.rpartition(":")
        return host if sep else link.peer_name

    def _auth(self, link: IChannel, msg: m.Auth) -> None:
        throttle = self.central.trust.throttle
        wait = throttle.locked_for(self._address(link)) if throttle else 0
        if wait:
            link.send(m.Refused(WHAT_AUTH, field(msg.cp_id), LOCKED_OUT.format(seconds=wait), msg.nonce[:REF_CHARS]))
            return
        why = self._bad_auth(msg)
        if why is not None:
            link.send(m.Refused(WHAT_AUTH, field(msg.cp_id), field(why), msg.nonce[:REF_CHARS]))
            self.audit("login", msg.cp_id, link.peer_name, False, why)
            return
        login = link.context["driver_login"] = Login(msg)
        self._look_up(login, link, lambda: link.context.get("driver_login") is login and link.is_open)

    @staticmethod
    def _bad_auth(msg: m.Auth) -> Optional[str]:
        if not valid_id(msg.cp_id):
            return f"a driver id is {ID_RULE}"
        try:
            nonce = security.unb64(msg.nonce, "the nonce")
        except security.SecurityError:
            nonce = b""
        if not 8 <= len(nonce) <= 64:
            return "the nonce must be 8 to 64 random bytes in base64url"
        return None

    def _look_up(self, login: Login, reply: IChannel, still: Any) -> None:
        def looked_up(row: Optional[dict]) -> None:
            if row is not None:
                self.accounts.add(row["driver_id"])
            if not still():
                return
            verifier = None
            if row is None:
                login.why = "unknown driver id (not signed up)"
            elif row["status"] != STATUS_REGISTERED or not row["verifier"]:
                login.why = "its account was removed"
            else:
                try:
                    verifier = security.Verifier.from_text(row["verifier"])
                except security.SecurityError:
                    login.why = "its verifier cannot be read"
            login.server = security.ServerLogin(login.auth, verifier, self._decoy)
            reply.send(login.server.challenge())

        def failed(failure: Failure) -> None:
            self.central.journal.db_error(failure, "reading a driver account")
            reply.send(m.Refused(WHAT_AUTH, login.auth.cp_id, "Central cannot check credentials now; try again",
                                 login.auth.nonce))

        self.central.store.driver_account(login.auth.cp_id).addCallbacks(looked_up, failed)

    def _check(self, logins: list[Login], msg: m.Proof, reply: IChannel, address: str) -> Optional[tuple]:
        """
        The login C{msg} proves (of C{logins}, newest first) with its KEY
        and key; else refused ("wrong credentials", naming the proof),
        recorded, None.
        """
        why = "PROOF without a CHALLENGE"
        for login in reversed(logins):
            if login.server is None:
                continue
            if msg.cp_id != login.auth.cp_id:
                why = f"PROOF for {shown(msg.cp_id)} in a login as {login.auth.cp_id}"
                continue
            try:
                return (login,) + login.server.check(msg, KEY_STATE, self.central.liveness_interval)
            except security.SecurityError:
                if why == "PROOF without a CHALLENGE":  # the newest login's reason
                    why = login.why or "wrong secret"
        reply.send(m.Refused(WHAT_AUTH, field(msg.cp_id), WRONG_CREDENTIALS, msg.proof[:REF_CHARS]))
        self.audit("login", msg.cp_id, address, False, why)
        return None

    def _proof(self, link: IChannel, msg: m.Proof) -> None:
        login = link.context.pop("driver_login", None)
        checked = self._check([login] if login is not None else [], msg, link, link.peer_name)
        if checked is None:
            throttle = self.central.trust.throttle
            if throttle is not None:
                throttle.failed(self._address(link))
            return
        _, answer, key_id, key_bytes = checked
        driver_id = msg.cp_id
        key = make_key(driver_id, key_id, key_bytes)
        key.channel = SealedChannel(link, key.sealer)
        link.send(answer)  # KEY, plain: the last plain message on this link
        link.context["driver_key"] = key
        self.audit("login", driver_id, link.peer_name, True, f"authenticated (key {key_id})")
        self.central.driver_hello(key.channel, driver_id)

    # -- Kafka ---------------------------------------------------------------------

    def record(self, plain: IChannel, driver_id: str, msg: m.Message) -> None:
        """A record on ``driver.requests`` keyed C{driver_id}; C{plain} is its notifications, unsealed."""
        where = plain.peer_name
        if isinstance(msg, m.Auth):
            why = self._bad_auth(msg) or (None if msg.cp_id == driver_id else "AUTH for another id than its key")
            if why is not None:
                self.audit("login", driver_id, where, False, why)
                return
            logins = self._kafka_logins.setdefault(driver_id, {})
            self._kafka_logins.move_to_end(driver_id)
            while len(self._kafka_logins) > MAX_KAFKA_LOGIN_IDS:  # AUTHs for ever new ids do not grow Central
                self._kafka_logins.popitem(last=False)
            logins.pop(msg.nonce, None)
            login = logins[msg.nonce] = Login(msg)
            while len(logins) > MAX_KAFKA_LOGINS:
                del logins[next(iter(logins))]
            self._look_up(login, plain, lambda: self._kafka_logins.get(driver_id, {}).get(msg.nonce) is login)
        elif isinstance(msg, m.Proof):
            logins = self._kafka_logins.get(driver_id, {})
            checked = self._check(list(logins.values()), msg, plain, where)
            if checked is None:
                return  # a wrong PROOF ends no login: it may be a stranger's, not the one the owner runs
            login, answer, key_id, key_bytes = checked
            del logins[login.auth.nonce]
            if not logins:
                del self._kafka_logins[driver_id]
            key = make_key(driver_id, key_id, key_bytes)
            key.channel = SealedChannel(plain, key.sealer)
            plain.send(answer)
            self.kafka_keys[driver_id] = key
            self.audit("login", driver_id, where, True, f"authenticated through Kafka (key {key_id})")
        elif isinstance(msg, m.Sec):
            key = self.kafka_keys.get(driver_id)
            if key is None or key.key_id != msg.key_id:
                self.audit(msg.code, driver_id, where, False, "a sealed request under a key that is not the driver's "
                           "(log in again: Central restarted, or another login replaced it)")
                return
            try:
                inner = security.open_message(key.opener, msg)
            except (security.SecurityError, m.MessageError) as e:
                self.audit(msg.code, driver_id, where, False, f"not opened: {e}")
                return
            self._dispatch(key, inner, key.channel, where)
        elif self.mode == AUTH_REQUIRED:
            self.audit(msg.code, driver_id, where, False, f"a plain {msg.code}: {LOG_IN_FIRST}")
        else:
            def looked_up(row: Optional[dict]) -> None:
                if row is not None or driver_id in self.kafka_keys:
                    self.accounts.add(driver_id)
                    self.audit(msg.code, driver_id, where, False, f"a plain {msg.code}: " + HAS_ACCOUNT.format(id=driver_id))
                    return
                self.central.driver_message(plain, msg)

            self.central.store.driver_account(driver_id).addCallbacks(
                looked_up, self.central.journal.db_error, errbackArgs=("reading a driver account",))

    def kafka_channel(self, driver_id: str, plain: Optional[IChannel]) -> Optional[IChannel]:
        """How to reach C{driver_id} through Kafka: sealed for it if it logged in there; plainly only an id without an account."""
        key = self.kafka_keys.get(driver_id)
        if key is not None and plain is not None:
            return key.channel
        if plain is not None and self.mode == AUTH_OPTIONAL and driver_id not in self.accounts:
            return plain
        return None

    def load_accounts(self) -> None:
        """Which ids have an account (at start): Central never writes plainly to one of them."""
        def loaded(rows: list[dict]) -> None:
            self.accounts.update(row["driver_id"] for row in rows)

        self.central.store.driver_accounts().addCallbacks(
            loaded, self.central.journal.db_error, errbackArgs=("reading the driver accounts",))
