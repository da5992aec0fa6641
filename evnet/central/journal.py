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
        # Told when a store call fails (what was being done, why) and when an event row is written.
        self.on_db_error: Callable[[str, str], None] = lambda doing, why: None
        self.on_db_ok: Callable[[Any], Any] = lambda result: result

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
        self.store.add_event(kind, subject, text).addCallbacks(self.on_db_ok, self.db_error,
                                                               errbackArgs=("recording an event",))
        self.notify({"type": "message", **entry})

    def db_error(self, failure: Failure, doing: str) -> None:
        """An errback for store calls: the database failed while C{doing}."""
        self.log.error("database error while {doing}: {why}", doing=doing, why=failure.getErrorMessage())
        self.on_db_error(doing, failure.getErrorMessage())
