"""
Table-driven state machines, the one idiom for every machine in evnet
(Central's CP and session states, the Engine's charge, the Monitor's links
and its Engine's health).

A machine is its state and a table ``(state, input) -> next state``; the
table is the whole behaviour, so a reader sees every allowed move in one
place.  An input the table does not list for the current state is illegal:
L{Machine.fire} raises L{IllegalTransition}, L{Machine.attempt} logs it and
changes nothing.  Nobody crashes or asserts on an illegal input.

Pure: no I/O, no Twisted (the log given to L{Machine.attempt} is anything
with a C{warn(format, **fields)} method, such as a L{twisted.logger.Logger}).
"""

from __future__ import annotations

from enum import Enum
from typing import Any, Callable, Generic, Mapping, Optional, TypeVar

S = TypeVar("S", bound=Enum)
I = TypeVar("I", bound=Enum)


class IllegalTransition(Exception):
    """An input that the machine does not accept in its current state."""


class Machine(Generic[S, I]):
    """
    The state of one thing (C{name}: how a log line names it) and the C{table}
    of its moves.
    """

    def __init__(
        self, name: str, table: Mapping[tuple[S, I], S], state: S, rejected: Optional[Callable[[str], None]] = None
    ) -> None:
        self.name = name
        self.table = table
        self.state = state
        #: Where L{attempt} tells an illegal input when it is given no log (a sentence saying why).
        self.rejected = rejected
        #: True when the last input allowed moved the machine to another state.
        self.changed = False

    def can(self, event: I) -> bool:
        return (self.state, event) in self.table

    def fire(self, event: I) -> S:
        """Apply C{event}: the new state, or L{IllegalTransition} (nothing changes)."""
        target = self.table.get((self.state, event))
        if target is None:
            raise IllegalTransition(f"{self.name}: {event.value} is not allowed when {self.state.value}")
        self.changed = target is not self.state
        self.state = target
        return target

    def attempt(self, event: I, log: Any = None) -> bool:
        """
        Apply C{event} if the table allows it in the current state; otherwise
        tell it (a warning on C{log}, or the machine's C{rejected}), change
        nothing, and return False.
        """
        try:
            self.fire(event)
        except IllegalTransition as e:
            if log is not None:
                log.warn("{why}; ignored", why=str(e))
            elif self.rejected is not None:
                self.rejected(str(e))
            return False
        return True

    def __repr__(self) -> str:
        return f"<Machine {self.name}: {self.state.value}>"
