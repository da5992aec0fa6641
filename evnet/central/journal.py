"""
What Central tells people: an application message is one line in the log,
one row in the store's ``events`` table, one entry in the recent messages
and one event to the observers (the web panel, Kafka's ``network.status``).
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.logger import Logger
from twisted.python.failure import Failure

RECENT_MESSAGES = 200


class Journal:
    log = Logger()

    def __init__(self, store: Any, wall_clock: Callable[[], float]) -> None:
        self.store = store
        self.now = wall_clock
        self.observers: list[Callable[[dict], None]] = []
        self.recent_messages: list[dict] = []

    def notify(self, event: dict) -> None:
        """Tell every observer; one that fails is logged and the others still hear."""
        for observer in list(self.observers):
            try:
                observer(event)
            except Exception:
                self.log.failure("observer failed on {type}", type=event.get("type"))

    def message(self, kind: str, subject: str, text: str, *, level: str = "info") -> None:
        """An application message: logged, stored in events, shown on the panel."""
        getattr(self.log, level)("{text}", text=text)
        entry = {"at": self.now(), "kind": kind, "subject": subject, "text": text}
        self.recent_messages.append(entry)
        del self.recent_messages[:-RECENT_MESSAGES]
        self.store.add_event(kind, subject, text).addErrback(self.db_error, "recording an event")
        self.notify({"type": "message", **entry})

    def db_error(self, failure: Failure, doing: str) -> None:
        """An errback for store calls: the database failed while C{doing}."""
        self.log.error("database error while {doing}: {why}", doing=doing, why=failure.getErrorMessage())
