"""
The Monitor's side of one Central link: its login (docs/protocol.md §7) and,
once Central gave a key, the sealing of everything on it.

A L{CentralSession} lives in the link's context for as long as the link.
It keeps the phase machine (L{evnet.monitor.states.CENTRAL_LINK}), the login
in progress (L{security.ClientLogin}) and the current key: a
L{SealedChannel} (role M) to send through and an L{security.Opener} that
accepts only role C.  A login on a keyed link (REAUTH) travels sealed under
the current key; its KEY switches the session to the new key.

No I/O of its own and no logging: it turns messages into messages and
raises L{security.SecurityError} for what it refuses; the Monitor decides
what to say and do.
"""

from __future__ import annotations

from typing import Any, Optional

from evnet.monitor.states import CENTRAL_LINK, KEYED, LinkPhase
from evnet.protocols import messages as m
from evnet.protocols import security
from evnet.protocols.machine import Machine
from evnet.protocols.sealed import SealedChannel


class CentralSession:
    """One Central link (C{link}, a framed link) of the CP C{cp_id}."""

    def __init__(self, link: Any, cp_id: str) -> None:
        self.link = link
        self.cp_id = cp_id
        self.phase: Machine[LinkPhase, Any] = Machine("the Central link", CENTRAL_LINK, LinkPhase.CONNECTING)
        self.login: Optional[security.ClientLogin] = None
        self.channel: Optional[SealedChannel] = None
        self.opener: Optional[security.Opener] = None
        self.key_id: Optional[str] = None
        self.key = b""
        self.state = ""  # the CP's state at Central, from the last KEY
        self.liveness = 1.0  # seconds between STATUS, from the last KEY

    @property
    def keyed(self) -> bool:
        """Central gave a key on this link: what goes on it is sealed."""
        return self.phase.state in KEYED

    @property
    def out(self) -> Any:
        """What to send through: the sealed channel once keyed, else the link itself."""
        return self.channel if self.keyed else self.link

    def start_login(self, secret: str) -> m.Auth:
        """A new login with C{secret}: the AUTH to send (sealed if keyed)."""
        self.login = security.ClientLogin(self.cp_id, secret)
        return self.login.start()

    def answer(self, challenge: m.Challenge) -> m.Proof:
        """The PROOF for Central's CHALLENGE (L{security.SecurityError} for a challenge refused)."""
        if self.login is None or challenge.cp_id != self.cp_id:
            raise security.SecurityError(f"a CHALLENGE for {challenge.cp_id}, not for this login")
        return self.login.answer(challenge)

    def check_key(self, key: m.Key) -> tuple[str, bytes]:
        """
        The session key in Central's KEY, once Central proved it holds this
        CP's registration; L{security.SecurityError} otherwise (not the real
        Central, or a KEY for another CP).
        """
        if self.login is None:
            raise security.SecurityError("KEY before any login")
        if key.cp_id != self.cp_id:
            raise security.SecurityError(f"a KEY for {key.cp_id}, not for {self.cp_id}")
        return self.login.accept(key)

    def use_key(self, key: m.Key, key_id: str, secret_key: bytes) -> None:
        """Switch to the key L{check_key} gave: from now on, sealed under it."""
        self.login = None
        self.key_id, self.key = key_id, secret_key
        self.state, self.liveness = key.state, key.liveness if key.liveness > 0 else 1.0
        sealer = security.Sealer(self.cp_id, key_id, secret_key, security.ROLE_MONITOR)
        self.channel = SealedChannel(self.link, sealer)
        self.opener = security.Opener(self.cp_id, key_id, secret_key, (security.ROLE_CENTRAL,))

    def open(self, sec: m.Sec) -> m.Message:
        """The message sealed in C{sec} by Central (L{security.SecurityError} or L{m.MessageError})."""
        if self.opener is None:
            raise security.SecurityError("SEC before any key")
        return security.open_message(self.opener, sec)
