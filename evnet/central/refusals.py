"""
What Central refuses, written down without letting a flood of bad input
write a row each: L{Refusals} records the first refusal of a kind from one
place at once and counts the ones like it for a minute, then writes one
row with the count; L{LoginThrottle} locks out an address after too many
failed logins.  Both run on Central's clock; neither knows the protocol.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Hashable, Optional

from twisted.internet.interfaces import IReactorTime

from evnet.central.audit import Note
from evnet.central.journal import Journal

SUMMARY_WINDOW = 60.0  # seconds: refusals like one another within it share one summary row
SUBJECTS_SHOWN = 5  # CP ids a summary names


@dataclass
class _Burst:
    started: float
    kind: str
    subject: str
    text: str
    more: int = 0
    subjects: list[str] = field(default_factory=list)
    note: Optional[Note] = None
    journal: bool = True


class Refusals:
    """
    Records refusals in Central's journal (log line, ``events`` row, panel)
    and, given a C{note}, in the audit trail (C{audit}: an
    L{evnet.central.audittrail.AuditTrail}).  Refusals with the same C{like}
    key (say: kind, address, reason) within L{SUMMARY_WINDOW} seconds of the
    first are one row, then one row saying how many more came; L{sweep}
    writes those once their window is over.
    """

    def __init__(self, journal: Journal, clock: IReactorTime, window: float = SUMMARY_WINDOW,
                 audit: Optional[Any] = None) -> None:
        self.journal = journal
        self.clock = clock
        self.window = window
        self.audit = audit
        self._bursts: dict[Hashable, _Burst] = {}

    def record(self, kind: str, subject: str, text: str, like: Hashable, note: Optional[Note] = None,
               journal: bool = True) -> None:
        """C{journal=False}: the audit row (and its summary) only, no journal message."""
        now = self.clock.seconds()
        key = (kind, like)
        burst = self._bursts.get(key)
        if burst is not None and now - burst.started < self.window:
            burst.more += 1
            if subject != burst.subject and subject not in burst.subjects and len(burst.subjects) < SUBJECTS_SHOWN:
                burst.subjects.append(subject)
            return
        if burst is not None:
            self._summarize(burst)
        self._bursts[key] = _Burst(now, kind, subject, text, note=note, journal=journal)
        if journal:
            self.journal.message(kind, subject, text, level="warn")
        if note is not None and self.audit is not None:
            self.audit.note(note)

    def sweep(self, everything: bool = False) -> None:
        """Write the summaries whose window is over (C{everything}: all of them, Central is stopping)."""
        now = self.clock.seconds()
        for key, burst in list(self._bursts.items()):
            if everything or now - burst.started >= self.window:
                del self._bursts[key]
                self._summarize(burst)

    def _summarize(self, burst: _Burst) -> None:
        if not burst.more:
            return
        if burst.journal:
            others = f" (also about {', '.join(burst.subjects)})" if burst.subjects else ""
            self.journal.message(
                burst.kind, burst.subject,
                f"{burst.more} more like this within {self.window:g} s{others}: {burst.text}", level="warn",
            )
        if burst.note is not None and self.audit is not None:
            self.audit.note(burst.note.summary(burst.more, self.window, burst.subjects))


class LoginThrottle:
    """
    Failed logins by address: after C{max_failures} within C{window}
    seconds, that address is locked out for C{window} seconds.  Memory is
    bounded by the addresses that failed within the last window (L{sweep}).
    """

    def __init__(self, clock: IReactorTime, max_failures: int = 5, window: float = 60.0) -> None:
        self.clock = clock
        self.max_failures = max_failures
        self.window = window
        self._failures: dict[str, deque[float]] = {}
        self._locked: dict[str, float] = {}  # address -> until when

    def locked_for(self, address: str) -> int:
        """Whole seconds until C{address} may log in again (0: it may now)."""
        until = self._locked.get(address)
        if until is None:
            return 0
        left = until - self.clock.seconds()
        if left <= 0:
            del self._locked[address]
            return 0
        return max(1, math.ceil(left))

    def failed(self, address: str) -> bool:
        """Count a failed login from C{address}; True if this one locks it out."""
        now = self.clock.seconds()
        times = self._failures.setdefault(address, deque())
        times.append(now)
        while times and now - times[0] >= self.window:
            times.popleft()
        if len(times) < self.max_failures:
            return False
        del self._failures[address]
        self._locked[address] = now + self.window
        return True

    def sweep(self) -> None:
        now = self.clock.seconds()
        for address, times in list(self._failures.items()):
            if now - times[-1] >= self.window:
                del self._failures[address]
        for address, until in list(self._locked.items()):
            if until <= now:
                del self._locked[address]
