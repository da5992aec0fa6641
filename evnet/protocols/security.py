"""
evnet's security codecs: a peer's credentials, the challenge–response that
proves them without sending them, the key Central issues on a successful
authentication, and the sealed messages that key protects.

Pure: no I/O, no Twisted.  Every primitive comes from ``cryptography``
(scrypt, HMAC-SHA-256, HKDF, AES-256-GCM); nothing here is a cipher of our
own.  ``docs/protocol.md`` ("Authentication and sealed messages") is the
contract, with a worked example that tests/test_security.py checks.

Credentials and proof (SCRAM, RFC 5802 / 7677, with scrypt as the slow hash):

- A secret is shown once, when the Registry issues it.  What is stored is a
  L{Verifier}: the salt, ``StoredKey = SHA-256(ClientKey)`` and
  ``ServerKey``, where ``SaltedSecret = scrypt(secret, salt)``,
  ``ClientKey = HMAC(SaltedSecret, "Client Key")`` and
  ``ServerKey = HMAC(SaltedSecret, "Server Key")``.  Neither the secret nor
  anything that proves it can be computed from the stored row alone.
- The peer sends a fresh nonce; Central answers with the salt, the scrypt
  cost and its own fresh nonce; the peer sends
  ``proof = ClientKey XOR HMAC(StoredKey, AuthMessage)``; Central recovers
  ClientKey from it and checks its hash against StoredKey (in constant
  time).  Central proves itself back with ``HMAC(ServerKey, AuthMessage)``.
- The session key: 32 random bytes, wrapped with AES-GCM under a key derived
  (HKDF) from ClientKey and the AuthMessage, so only that peer can unwrap it.

Sealed messages: the DATA of a message, encrypted and authenticated with
AES-256-GCM under the session key.  The 12-byte nonce is a 4-byte random
epoch (new for every process that seals) and an 8-byte counter; the
associated data binds the protocol version, the CP id, the key id, the
sender's role and the nonce.  An L{Opener} refuses a message that is
tampered with, sealed under another key or for another CP, sent by a role it
does not accept (a reflected message), or whose counter is not above the
last one it accepted from that sender (replayed or reordered).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os
import re
import secrets
from collections import OrderedDict
from dataclasses import dataclass
from typing import NamedTuple

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as crypto_hmac
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

VERSION = "evnet-1"
SECRET_BYTES = 32
SALT_BYTES = 16
NONCE_BYTES = 16  # authentication nonces
KEY_BYTES = 32  # AES-256
SCRYPT_N = 2**14  # ~16 MiB and ~50 ms per derivation: slow for a guesser, fine once per login
SCRYPT_R = 8
SCRYPT_P = 1
MAX_SCRYPT_N = 2**20  # a peer never derives with a cost above this (a hostile "challenge")

# The roles that seal messages.  A receiver names the roles it accepts.
ROLE_CENTRAL = "C"
ROLE_MONITOR = "M"
ROLE_ENGINE = "E"
ROLE_DRIVER = "D"  # a driver, under the key of its own login (the "cp_id" of the seal is then the driver id)
ROLES = (ROLE_CENTRAL, ROLE_MONITOR, ROLE_ENGINE, ROLE_DRIVER)

# Bytes a sealed message adds to the DATA it carries, before base64:
_TAG_BYTES = 16
_EPOCHS_KEPT = 64  # replay windows kept per Opener (one per sender process)

_B64URL_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_B64URL_TO_STD = bytes.maketrans(b"-_", b"+/")
_HEX = re.compile(r"[0-9a-f]+\Z")


class SecurityError(Exception):
    """A proof, a wrapped key or a sealed message is refused; the text says why (safe to log)."""


def b64(data: bytes) -> str:
    """URL-safe base64 without padding: no '#', fits in a frame field."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64(text: str, what: str) -> bytes:
    """
    The bytes of URL-safe base64 C{text} without padding, or
    L{SecurityError}.  (Two C-level passes: delete every base64url byte
    -- anything left is refused -- then decode strictly; twice every
    sealed frame, so not the regex and the decoder's own translation.)
    """
    try:
        raw = text.encode("ascii")
        if raw.translate(None, _B64URL_ALPHABET):
            raise ValueError(what)
        return binascii.a2b_base64(raw.translate(_B64URL_TO_STD) + b"=" * (-len(raw) % 4), strict_mode=True)
    except ValueError:  # (UnicodeEncodeError and binascii.Error are ValueErrors)
        raise SecurityError(f"{what} is not base64url text") from None


def _hmac(key: bytes, data: bytes) -> bytes:
    h = crypto_hmac.HMAC(key, hashes.SHA256())
    h.update(data)
    return h.finalize()


def _sha256(data: bytes) -> bytes:
    h = hashes.Hash(hashes.SHA256())
    h.update(data)
    return h.finalize()


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


# -- credentials -------------------------------------------------------------


def new_secret() -> str:
    """A fresh secret for a CP or a driver: 256 random bits as text."""
    return secrets.token_urlsafe(SECRET_BYTES)


def new_nonce() -> str:
    return b64(os.urandom(NONCE_BYTES))


def salted_secret(secret: str, salt: bytes, n: int = SCRYPT_N) -> bytes:
    """scrypt(secret, salt): the slow part, done once per login on the peer's side."""
    if not 2 <= n <= MAX_SCRYPT_N or n & (n - 1):
        raise SecurityError(f"scrypt cost {n} refused: a power of two up to {MAX_SCRYPT_N}")
    return Scrypt(salt=salt, length=32, n=n, r=SCRYPT_R, p=SCRYPT_P).derive(secret.encode("utf-8"))


@dataclass(frozen=True)
class Verifier:
    """What the database keeps of a secret (never the secret)."""

    salt: bytes
    stored_key: bytes
    server_key: bytes
    n: int = SCRYPT_N

    def to_text(self) -> str:
        return f"scram-scrypt${self.n}${b64(self.salt)}${b64(self.stored_key)}${b64(self.server_key)}"

    @classmethod
    def from_text(cls, text: str) -> "Verifier":
        parts = text.split("$")
        if len(parts) != 5 or parts[0] != "scram-scrypt" or not parts[1].isdigit():
            raise SecurityError("not a stored verifier")
        return cls(unb64(parts[2], "salt"), unb64(parts[3], "stored key"), unb64(parts[4], "server key"), int(parts[1]))


def _keys(salted: bytes) -> tuple[bytes, bytes]:
    return _hmac(salted, b"Client Key"), _hmac(salted, b"Server Key")


def make_verifier(secret: str, *, salt: bytes | None = None, n: int = SCRYPT_N) -> Verifier:
    salt = os.urandom(SALT_BYTES) if salt is None else salt
    client_key, server_key = _keys(salted_secret(secret, salt, n))
    return Verifier(salt, _sha256(client_key), server_key, n)


def check_secret(verifier: Verifier, secret: str) -> bool:
    """
    Whether C{secret} is the one C{verifier} was made from (for a peer that
    presents its secret itself, as an OCPP charge point does in HTTP Basic
    auth): StoredKey recomputed from scrypt(secret, salt), compared in
    constant time.  Slow by design (one scrypt): call it off the reactor.
    """
    try:
        client_key, _ = _keys(salted_secret(secret, verifier.salt, verifier.n))
    except SecurityError:
        return False  # a stored cost this side refuses to derive with
    return hmac.compare_digest(_sha256(client_key), verifier.stored_key)


def auth_message(cp_id: str, client_nonce: str, server_nonce: str, salt: bytes, n: int) -> bytes:
    """What both sides sign: every field of the exchange, in order."""
    return "|".join([VERSION, "auth", cp_id, client_nonce, server_nonce, b64(salt), str(n)]).encode("utf-8")


@dataclass(frozen=True)
class Proof:
    """The peer's side of a login: what it sends and what it keeps."""

    proof: bytes  # sent
    client_key: bytes  # kept: unwraps the session key
    server_signature: bytes  # kept: what Central must answer


def prove(secret: str, message: bytes, salt: bytes, n: int) -> Proof:
    """The peer: prove C{secret} for C{message} (see L{auth_message})."""
    client_key, server_key = _keys(salted_secret(secret, salt, n))
    signature = _hmac(_sha256(client_key), message)
    return Proof(_xor(client_key, signature), client_key, _hmac(server_key, message))


def check_proof(verifier: Verifier, message: bytes, proof: bytes) -> bytes:
    """
    Central: the peer's ClientKey if C{proof} is right for C{message}, else
    L{SecurityError}.  Constant time in what it compares.
    """
    if len(proof) != len(verifier.stored_key):
        raise SecurityError("wrong credentials")
    client_key = _xor(proof, _hmac(verifier.stored_key, message))
    if not hmac.compare_digest(_sha256(client_key), verifier.stored_key):
        raise SecurityError("wrong credentials")
    return client_key


def server_signature(verifier: Verifier, message: bytes) -> bytes:
    return _hmac(verifier.server_key, message)


def check_server_signature(proof: Proof, signature: bytes) -> None:
    """The peer: Central knew the verifier (it is the real Central), else L{SecurityError}."""
    if not hmac.compare_digest(proof.server_signature, signature):
        raise SecurityError("Central's signature is wrong: it does not hold this CP's registration")


# -- the session key -----------------------------------------------------------


def new_key() -> bytes:
    return AESGCM.generate_key(bit_length=8 * KEY_BYTES)


def new_key_id() -> str:
    return secrets.token_hex(4)


def _wrapping_key(client_key: bytes, message: bytes) -> bytes:
    return HKDF(hashes.SHA256(), 32, salt=None, info=b"evnet key wrap|" + message).derive(client_key)


def wrap_key(client_key: bytes, message: bytes, key: bytes, *, nonce: bytes | None = None) -> bytes:
    nonce = os.urandom(12) if nonce is None else nonce
    return nonce + AESGCM(_wrapping_key(client_key, message)).encrypt(nonce, key, message)


def unwrap_key(client_key: bytes, message: bytes, wrapped: bytes) -> bytes:
    if len(wrapped) != 12 + KEY_BYTES + _TAG_BYTES:
        raise SecurityError("the wrapped key has the wrong length")
    try:
        return AESGCM(_wrapping_key(client_key, message)).decrypt(wrapped[:12], wrapped[12:], message)
    except InvalidTag:
        raise SecurityError("the wrapped key does not open with these credentials") from None


# -- sealed messages -------------------------------------------------------------


class Sealed(NamedTuple):
    """
    The fields of a sealed message (``SEC#keyId#role#nonce#box`` on the
    wire).  (A named tuple: one is made for every frame received.)
    """

    key_id: str
    role: str
    nonce: bytes  # 12 bytes: epoch (4) + counter (8, big-endian)
    box: bytes  # ciphertext + tag


def _aad(cp_id: str, key_id: str, role: str, nonce: bytes) -> bytes:
    return "|".join([VERSION, "sec", cp_id, key_id, role]).encode("utf-8") + b"|" + nonce


def sealed_size(data_bytes: int) -> int:
    """Length of the base64 box for C{data_bytes} of DATA."""
    return -(-4 * (data_bytes + _TAG_BYTES) // 3)


class Sealer:
    """Seals what one sender (one process, one role) sends under one key."""

    def __init__(self, cp_id: str, key_id: str, key: bytes, role: str, *, epoch: bytes | None = None) -> None:
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}")
        self.cp_id = cp_id
        self.key_id = key_id
        self.role = role
        self._aead = AESGCM(key)
        self.epoch = os.urandom(4) if epoch is None else epoch
        self.counter = 0

    def seal(self, data: bytes) -> Sealed:
        self.counter += 1
        nonce = self.epoch + self.counter.to_bytes(8, "big")
        box = self._aead.encrypt(nonce, data, _aad(self.cp_id, self.key_id, self.role, nonce))
        return Sealed(self.key_id, self.role, nonce, box)


class Opener:
    """
    Opens what peers sealed under one key, for one CP: refuses tampering,
    another key or CP, a role not in C{accept}, and replays (a counter not
    above the last accepted from the same sender).
    """

    def __init__(self, cp_id: str, key_id: str, key: bytes, accept: tuple[str, ...]) -> None:
        self.cp_id = cp_id
        self.key_id = key_id
        self.accept = accept
        self._aead = AESGCM(key)
        self._last: OrderedDict[tuple[str, bytes], int] = OrderedDict()
        self._aad_prefix = {role: _aad(cp_id, key_id, role, b"") for role in accept}  # + the nonce

    def open(self, sealed: Sealed) -> bytes:
        key_id, role, nonce, box = sealed
        if key_id != self.key_id:
            raise SecurityError(f"sealed under key {key_id}, not the current key {self.key_id}")
        if role not in self.accept:
            raise SecurityError(f"a message sealed by role {role!r} is not accepted here")
        if len(nonce) != 12:
            raise SecurityError("the nonce must be 12 bytes")
        sender = (role, nonce[:4])
        counter = int.from_bytes(nonce[4:], "big")
        last = self._last.get(sender, 0)
        if counter <= last:
            raise SecurityError(f"replayed or reordered: counter {counter} after {last}")
        try:
            data = self._aead.decrypt(nonce, box, self._aad_prefix[role] + nonce)
        except InvalidTag:
            raise SecurityError("tampered with, or sealed for another CP or key") from None
        last_window = self._last
        last_window[sender] = counter
        if len(last_window) > 1:  # (the usual single sender is already the newest)
            last_window.move_to_end(sender)
            while len(last_window) > _EPOCHS_KEPT:
                last_window.popitem(last=False)
        return data


def parse_sealed(key_id: str, role: str, nonce: str, box: str) -> Sealed:
    """The fields of ``SEC#keyId#role#nonce#box`` as text, checked for shape."""
    if not (len(key_id) == 8 and _HEX.match(key_id)):
        raise SecurityError("the key id must be 8 hex digits")
    if role not in ROLES:
        raise SecurityError(f"unknown role {role!r}")
    raw_nonce = unb64(nonce, "the nonce")
    if len(raw_nonce) != 12:
        raise SecurityError("the nonce must be 12 bytes")
    raw_box = unb64(box, "the box")
    if len(raw_box) < _TAG_BYTES:
        raise SecurityError("the box is shorter than its tag")
    return Sealed(key_id, role, raw_nonce, raw_box)


# -- the exchanges as messages ------------------------------------------------------
# The two sides of a login and of a sealed link, as the rules and the Monitor
# use them.  Each keeps only what its side must.

from evnet.protocols import messages as m  # noqa: E402 (pure; imported here to keep the codec part above self-contained)


def seal_message(sealer: Sealer, msg: m.Message) -> m.Sec:
    s = sealer.seal(msg.to_data())
    return m.Sec(s.key_id, s.role, b64(s.nonce), b64(s.box))


def open_message(opener: Opener, sec: m.Sec) -> m.Message:
    """The message inside C{sec}; L{SecurityError} if refused, L{m.MessageError} if its DATA is bad."""
    return m.decode(opener.open(parse_sealed(sec.key_id, sec.role, sec.nonce, sec.box)))


def inner_capacity(max_data: int) -> int:
    """The largest DATA a sealed message can carry in a frame of C{max_data} bytes."""
    overhead = len("SEC#") + 8 + len("#C#") + 16 + 1  # key id, role, 12-byte nonce in base64
    return max(0, (max_data - overhead) * 3 // 4 - _TAG_BYTES)


class ClientLogin:
    """The Monitor's side of one login as C{cp_id} with C{secret}."""

    def __init__(self, cp_id: str, secret: str, *, nonce: str | None = None) -> None:
        self.cp_id = cp_id
        self._secret = secret
        self.nonce = new_nonce() if nonce is None else nonce
        self._proof: Proof | None = None
        self.proof = ""  # the PROOF sent (base64url), once a CHALLENGE was answered
        self._message = b""

    def start(self) -> m.Auth:
        return m.Auth(self.cp_id, self.nonce)

    def answer(self, challenge: m.Challenge) -> m.Proof:
        """
        The PROOF for Central's CHALLENGE to this login: only the first
        CHALLENGE that names this login's nonce is answered (one of another
        login, an older one, is refused: through Kafka every login of an id
        is answered on the same topic).
        """
        if challenge.login != self.nonce:
            raise SecurityError("a CHALLENGE for another login (not this AUTH's nonce)")
        if self._proof is not None:
            raise SecurityError("a second CHALLENGE for this login")
        salt = unb64(challenge.salt, "the salt")
        self._message = auth_message(self.cp_id, self.nonce, challenge.nonce, salt, challenge.cost)
        self._proof = prove(self._secret, self._message, salt, challenge.cost)
        self.proof = b64(self._proof.proof)
        return m.Proof(self.cp_id, self.proof)

    def refuses(self, refused: m.Refused) -> bool:
        """Whether C{refused} (REFUSED#AUTH) is Central's answer to this login's AUTH or PROOF."""
        return bool(refused.ref) and refused.ref in (self.nonce, self.proof)

    def accept(self, key: m.Key) -> tuple[str, bytes]:
        """The session key (id, bytes) from Central's KEY, once Central has proved itself."""
        if self._proof is None:
            raise SecurityError("KEY before any CHALLENGE")
        check_server_signature(self._proof, unb64(key.signature, "the signature"))
        return key.key_id, unwrap_key(self._proof.client_key, self._message, unb64(key.wrapped, "the wrapped key"))


class ServerLogin:
    """
    Central's side of one login.  C{verifier} is None for an id that is not
    registered: the exchange then goes on with a decoy salt derived from
    C{decoy_secret}, and fails at the proof like a wrong secret, so a peer
    learns nothing about which ids exist.
    """

    def __init__(self, auth: m.Auth, verifier: Verifier | None, decoy_secret: bytes, *, nonce: str | None = None) -> None:
        self.cp_id = auth.cp_id
        self.client_nonce = auth.nonce
        self.verifier = verifier
        if verifier is None:
            salt = _hmac(decoy_secret, b"decoy salt|" + auth.cp_id.encode("utf-8"))[:SALT_BYTES]
            self._salt, self._n = salt, SCRYPT_N
        else:
            self._salt, self._n = verifier.salt, verifier.n
        self.nonce = new_nonce() if nonce is None else nonce
        self._message = auth_message(self.cp_id, self.client_nonce, self.nonce, self._salt, self._n)

    def challenge(self) -> m.Challenge:
        return m.Challenge(self.cp_id, b64(self._salt), self._n, self.nonce, self.client_nonce)

    def check(self, proof: m.Proof, state: str, liveness: float = 1.0, *,
              key: bytes | None = None, key_id: str | None = None,
              wrap_nonce: bytes | None = None) -> tuple[m.Key, str, bytes]:
        """KEY for the peer and the new session key (id, bytes), or L{SecurityError}."""
        if proof.cp_id != self.cp_id:
            raise SecurityError("the proof is for another CP")
        if self.verifier is None:
            raise SecurityError("wrong credentials")
        client_key = check_proof(self.verifier, self._message, unb64(proof.proof, "the proof"))
        key = new_key() if key is None else key
        key_id = new_key_id() if key_id is None else key_id
        answer = m.Key(
            self.cp_id, state, key_id, b64(wrap_key(client_key, self._message, key, nonce=wrap_nonce)),
            b64(server_signature(self.verifier, self._message)), liveness,
        )
        return answer, key_id, key
