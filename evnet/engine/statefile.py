"""
The Engine's state file: the L{Charger}'s snapshot on disk, replaced
atomically (temp file in the same directory, fsync, rename) so a kill at
any moment leaves either the previous or the new complete file, and
L{read_snapshot}, which checks a snapshot before the Charger takes it over.

``docs/chargingpoint.md`` ("The state file") describes its contents.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from twisted.internet import defer, threads
from twisted.python.threadpool import ThreadPool

from evnet.engine.charger import STATE_VERSION, STOP_FIELDS, Phase, Session
from evnet.protocols import messages as m
from evnet.protocols.vocabulary import ID_RULE, valid_id

STATE_FILE_NAME = "engine-state.json"


class StateError(Exception):
    """The state file cannot be read or restored; the text says which and why."""


_NUMBER = (int, float)
_SESSION_TYPES = {
    "session_id": str,
    "driver_id": str,
    "price": _NUMBER,
    "target_kwh": _NUMBER,
    "target_seconds": int,
    "seq": int,
    "kwh": _NUMBER,
    "seconds": _NUMBER,
}


@dataclass
class Restored:
    """What a snapshot holds, checked (L{read_snapshot})."""

    cp_id: Optional[str]
    price: Optional[float]
    session: Optional[Session]
    phase: Phase
    pending: dict[str, m.Stop]


def read_snapshot(data: dict[str, Any]) -> Restored:
    """The contents of a snapshot L{Charger.snapshot} made, checked; L{StateError} says what is wrong."""
    part = "the snapshot"
    try:
        cp_id, price = data.get("cp_id"), data.get("price")
        if cp_id is not None and not (isinstance(cp_id, str) and valid_id(cp_id)):
            raise StateError(f"cp_id {cp_id!r} is not a CP id ({ID_RULE})")
        if price is not None and not isinstance(price, _NUMBER):
            raise StateError(f"price {price!r} is not a number")
        part = "pending_stops"
        pending = {}
        for stop in data.get("pending_stops") or []:
            pending[stop["session_id"]] = m.Stop(**{f: stop[f] for f in STOP_FIELDS})
        part = "session"
        session, phase = None, Phase.IDLE
        if data.get("session"):
            fields = dict(data["session"])
            phase = Phase(fields.pop("phase"))
            if phase is Phase.IDLE:
                raise StateError("a charge in progress cannot be idle")
            for name, value in fields.items():
                kind = _SESSION_TYPES.get(name)
                if kind is None:
                    raise StateError(f"unknown field {name!r}")
                if not isinstance(value, kind) or isinstance(value, bool):
                    what = "text" if kind is str else "a number"
                    raise StateError(f"{name} is {value!r}, not {what}")
            session = Session(**fields)
    except StateError as e:
        raise StateError(f"{part}: {e}") from None
    except KeyError as e:
        raise StateError(f"{part}: the field {e} is missing") from None
    except (AttributeError, TypeError, ValueError) as e:
        raise StateError(f"{part}: {e}") from None
    return Restored(cp_id, price, session, phase, pending)


class StateFile:
    """
    The Engine's snapshot as JSON in C{directory}/engine-state.json.

    L{save} writes a temp file in the same directory, flushes and fsyncs it,
    then renames it over the state file (C{replace}, os.replace by default;
    atomic on POSIX), so a reader only ever sees a complete file.  A temp
    file left by a kill before the rename is ignored by L{load}.
    """

    def __init__(self, directory: str | os.PathLike, replace: Callable[[str, str], None] = os.replace) -> None:
        self.directory = Path(directory)
        self.path = self.directory / STATE_FILE_NAME
        self.temp = self.directory / (STATE_FILE_NAME + ".tmp")
        self._replace = replace

    def load(self) -> Optional[dict[str, Any]]:
        """
        The last complete snapshot, or None when there is none; L{StateError}
        when it cannot be read or restored.
        """
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as e:
            why = getattr(e, "strerror", None) or str(e)
            raise StateError(f"cannot read the state file {self.path}: {why}") from None
        try:
            data = json.loads(text)
        except ValueError as e:
            raise StateError(f"the state file {self.path} is not valid JSON ({e})") from None
        if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
            raise StateError(f"the state file {self.path} is not an evengine state file (version {STATE_VERSION})")
        try:
            read_snapshot(data)
        except StateError as e:
            raise StateError(f"the state file {self.path} cannot be restored: {e}") from None
        return data

    def save(self, data: dict[str, Any]) -> None:
        text = json.dumps(data, indent=1, sort_keys=True)
        with open(self.temp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        self._replace(str(self.temp), str(self.path))


class StateWriter:
    """
    Saves snapshots with L{StateFile.save} on a thread of its own (a
    one-thread pool), so the reactor never waits for the write and its
    fsync.  The Engine's service starts it and stops it (after its last
    save).  L{save} gives a Deferred that fires on the reactor once the
    snapshot is on disk, or fails with the error (an L{OSError}).  One
    thread: snapshots reach the disk in the order they were given.
    """

    def __init__(self, store: StateFile, reactor: Any) -> None:
        self.store = store
        self.reactor = reactor
        self._pool = ThreadPool(minthreads=1, maxthreads=1, name="evengine-state")

    def start(self) -> None:
        self._pool.start()

    def stop(self) -> None:
        """Stop the thread (what was given to it is written first)."""
        self._pool.stop()

    def save(self, data: dict[str, Any]) -> defer.Deferred:
        return threads.deferToThreadPool(self.reactor, self._pool, self.store.save, data)
