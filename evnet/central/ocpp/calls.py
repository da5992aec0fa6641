"""
Central's CALLs to one charge point.  OCPP-J allows one CALL at a time in
each direction (§4.1.1): the next waits until the last is answered or has
timed out.  Each call's Deferred fires with the CALLRESULT's payload
(checked against the action's response schema) and fails with
L{CallFailed} on a CALLERROR, an invalid result, a timeout or the
connection's end; nothing is sent twice.
"""

from __future__ import annotations

import secrets
from collections import deque
from typing import Callable, Optional

from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from evnet.central.ocpp import codec

CALL_TIMEOUT = 30.0  # seconds a CP has to answer a CALL


class CallFailed(Exception):
    """A CALL that did not succeed; the text says why (safe to log)."""


class OutgoingCalls:
    log = Logger()

    def __init__(self, send_text: Callable[[str], None], clock: IReactorTime, name: str,
                 timeout: float = CALL_TIMEOUT) -> None:
        self.send_text = send_text
        self.clock = clock
        self.name = name  # for logs: the CP id
        self.timeout = timeout
        self._queue: deque[tuple[str, dict, defer.Deferred]] = deque()
        self._current: Optional[tuple[str, str, defer.Deferred, IDelayedCall]] = None
        self.closed = False

    @property
    def pending(self) -> int:
        """Calls sent and not answered, or waiting to be sent."""
        return len(self._queue) + (self._current is not None)

    def call(self, action: str, payload: dict) -> defer.Deferred:
        """Send CALL C{action} when the last one is answered; fires with the result's payload."""
        if self.closed:
            return defer.fail(CallFailed(f"{action}: the connection to CP {self.name} is closed"))
        codec.validate_request(action, payload)  # our own mistake if it fails: raise, do not send
        d: defer.Deferred = defer.Deferred()
        self._queue.append((action, payload, d))
        self._next()
        return d

    def _next(self) -> None:
        if self._current is not None or not self._queue or self.closed:
            return
        action, payload, d = self._queue.popleft()
        unique_id = secrets.token_hex(8)
        timer = self.clock.callLater(self.timeout, self._timed_out, unique_id)
        self._current = (unique_id, action, d, timer)
        self.send_text(codec.encode_call(unique_id, action, payload))

    def answered(self, frame: codec.Frame) -> bool:
        """A CALLRESULT or CALLERROR from the CP: True if it answers the current call."""
        current = self._current
        if current is None or frame.unique_id != current[0]:
            self.log.warn("CP {cp}: an answer to no call of ours (id {uid!r}): ignored", cp=self.name,
                          uid=frame.unique_id)
            return False
        unique_id, action, d, timer = current
        self._current = None
        timer.cancel()
        if isinstance(frame, codec.CallError):
            outcome: object = CallFailed(f"{action}: CALLERROR {frame.code}: {frame.description}"[:300])
        else:
            try:
                codec.validate_response(action, frame.payload, unique_id)
                outcome = frame.payload
            except codec.OcppError as e:
                outcome = CallFailed(f"{action}: invalid answer: {e.description}")
        self._next()
        if isinstance(outcome, Exception):
            d.errback(outcome)
        else:
            d.callback(outcome)
        return True

    def _timed_out(self, unique_id: str) -> None:
        if self._current is None or self._current[0] != unique_id:
            return
        _, action, d, _ = self._current
        self._current = None
        self._next()
        d.errback(CallFailed(f"{action}: no answer from CP {self.name} within {self.timeout:g} s"))

    def close(self, why: str) -> None:
        """The connection is gone: every call not answered fails."""
        self.closed = True
        waiting = [d for _, _, d in self._queue]
        self._queue.clear()
        if self._current is not None:
            _, action, d, timer = self._current
            self._current = None
            if timer.active():
                timer.cancel()
            waiting.insert(0, d)
        for d in waiting:
            d.errback(CallFailed(f"the connection to CP {self.name} was lost ({why})"))
