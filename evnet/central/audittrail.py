"""
The audit trail's writer and readers (docs/audit.md); the pure part is
L{evnet.central.audit}.

- L{AuditTrail}: what Central's parts call, C{record(actor_kind, actor_id,
  address, action, outcome, **detail)}.  Rows wait in memory (bounded) and
  go to the store in one interaction per batch, through its group commit,
  never on the reactor thread.  A flood is bounded twice: refusals are
  summarized before they come here (L{evnet.central.refusals.Refusals}),
  and beyond L{MAX_ROWS_PER_MINUTE} or L{MAX_PENDING} rows the trail counts
  instead of writing, then writes one ``audit.suppressed`` row.
- The SQL: L{append_txn} (the chain's head is read in the same transaction
  that appends, so a restart, a failed batch or another process on another
  chain can never fork it), L{select_txn} (filters, paging), L{chain_txn}.
  They are plain functions of a DB-API cursor: the store runs them on its
  pool, C{evctl audit} on its own blocking connection.
- The key file: L{load_key} (created 0600 at first start).
"""

from __future__ import annotations

import json
import os
import secrets
from typing import Any, Callable, Optional

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from evnet.central import audit
from evnet.central.audit import Entry
from evnet.central.sqltxn import dict_rows, placeholders

MAX_PENDING = 2000  # rows waiting for the database; more are counted, not kept
MAX_ROWS_PER_MINUTE = 6000  # rows written per minute; more are counted, then one row says how many
MAX_PAGE = 1000
DEFAULT_PAGE = 100
KEY_BYTES = 32
DEFAULT_KEY_FILE = "evnet-audit.key"  # next to a SQLite database; in the working directory for MySQL

COLUMNS = ("id", "chain", "seq", "at", "actor_kind", "actor_id", "address", "port", "action", "outcome", "detail",
           "prev", "hash")


class KeyError_(Exception):
    """The audit key file cannot be read or made; the text says what to do."""


# -- the key ------------------------------------------------------------------------


def default_key_path(url: Any) -> str:
    """The key file's default place: next to a SQLite database (C{PATH.audit-key}), else L{DEFAULT_KEY_FILE}."""
    if getattr(url, "backend", None) == "sqlite":
        return f"{url.path}.audit-key"
    return DEFAULT_KEY_FILE


def load_key(path: str, create: bool = True) -> bytes:
    """
    The audit key in C{path} (hex, one line).  With C{create}, a missing
    file is made with a new random key, mode 0600, atomically (two
    processes starting at once end with the same key).  A file others may
    read is refused: the key is what makes the chain impossible to redo.
    """
    if create and not os.path.exists(path):
        directory = os.path.dirname(os.path.abspath(path))
        temporary = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.{secrets.token_hex(4)}")
        try:
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(KEY_BYTES) + "\n")
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(temporary, path)  # fails if another process made it first: then its key is the key
            except FileExistsError:
                pass
        except OSError as e:
            raise KeyError_(f"cannot create the audit key file {path}: {e.strerror or e}") from None
        finally:
            try:
                os.unlink(temporary)
            except OSError:
                pass
    try:
        mode = os.stat(path).st_mode
        with open(path, encoding="ascii") as f:
            text = f.read().strip()
    except FileNotFoundError:
        raise KeyError_(f"no audit key file at {path} (Central creates it at its first start; "
                        "give the same --audit-key-file as Central)") from None
    except (OSError, UnicodeDecodeError) as e:
        raise KeyError_(f"cannot read the audit key file {path}: {getattr(e, 'strerror', None) or e}") from None
    if mode & 0o077:
        raise KeyError_(f"the audit key file {path} may be read by others (mode {mode & 0o777:o}): chmod 600 {path}")
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) < 16:
        raise KeyError_(f"the audit key file {path} does not hold a key (hex, at least 16 bytes)")
    return key


# -- SQL: plain functions of a cursor ----------------------------------------------------------


def append_txn(cursor: Any, mysql: bool, chain: str, key: bytes, entries: list[Entry]) -> list[audit.Linked]:
    """Append C{entries} to C{chain} after its head, read here, in the caller's transaction."""
    cursor.execute(placeholders(mysql, "SELECT seq, hash FROM audit WHERE chain = ? ORDER BY seq DESC LIMIT 1"), (chain,))
    row = cursor.fetchone()
    linked = audit.link(key, chain, None if row is None else (int(row[0]), str(row[1])), entries)
    cursor.executemany(
        placeholders(mysql, "INSERT INTO audit (chain, seq, at, actor_kind, actor_id, address, port, action, outcome, "
                    "detail, prev, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"),
        [(x.chain, x.seq, x.entry.at, x.entry.actor_kind, x.entry.actor_id, x.entry.address, x.entry.port,
          x.entry.action, x.entry.outcome, x.entry.detail, x.prev, x.hash) for x in linked],
    )
    return linked


def where(filters: dict) -> tuple[str, list]:
    """
    The WHERE clause of a query (C{?} placeholders) from the filters a
    reader may give: C{actor} (KIND or KIND:ID), C{action} (exact, or a
    prefix ending in C{*}), C{outcome}, C{address} (the host), C{since} and
    C{until} (times as L{audit.parse_time} reads them), C{chain}, C{before}
    and C{after} (row ids, for paging).  Raises L{audit.AuditError} for a
    filter it cannot read.
    """
    clauses, params = [], []
    actor = filters.get("actor")
    if actor:
        kind, _, ident = actor.partition(":")
        if kind not in audit.ACTOR_KINDS:
            raise audit.AuditError(f"actor {actor!r}: KIND or KIND:ID, KIND one of {', '.join(audit.ACTOR_KINDS)}")
        clauses.append("actor_kind = ?")
        params.append(kind)
        if ident:
            clauses.append("actor_id = ?")
            params.append(ident)
    action = filters.get("action")
    if action:
        if action.endswith("*"):
            stem = action[:-1]
            if any(c in stem for c in "%_\\"):
                raise audit.AuditError(f"action {action!r}: a prefix cannot hold %, _ or \\")
            clauses.append("action LIKE ?")
            params.append(stem + "%")
        else:
            clauses.append("action = ?")
            params.append(action)
    for name in ("outcome", "address", "chain"):
        if filters.get(name):
            clauses.append(f"{name} = ?")
            params.append(filters[name])
    if filters.get("since"):
        clauses.append("at >= ?")
        params.append(audit.parse_time(filters["since"]))
    if filters.get("until"):
        clauses.append("at < ?")
        params.append(audit.parse_time(filters["until"]))
    for name, op in (("before", "<"), ("after", ">")):
        if filters.get(name) is not None:
            clauses.append(f"id {op} ?")
            params.append(int(filters[name]))
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


def select_txn(cursor: Any, mysql: bool, filters: dict, limit: int, newest_first: bool = True) -> list[dict]:
    """At most C{limit} rows matching C{filters}, by id (newest first unless told)."""
    clause, params = where(filters)
    order = "DESC" if newest_first else "ASC"
    cursor.execute(placeholders(mysql, f"SELECT {', '.join(COLUMNS)} FROM audit{clause} ORDER BY id {order} LIMIT {int(limit)}"),
                   params)
    return dict_rows(cursor)


def chain_txn(cursor: Any, mysql: bool) -> list[dict]:
    """Every row, by chain and seq (what verification reads)."""
    cursor.execute(f"SELECT {', '.join(COLUMNS)} FROM audit ORDER BY chain, seq")
    return dict_rows(cursor)


def shown(row: dict) -> dict:
    """A stored row as the API and C{evctl audit export} give it (the detail as JSON, not text)."""
    out = {name: row[name] for name in COLUMNS}
    out["id"], out["seq"] = int(row["id"]), int(row["seq"])
    out["port"] = None if row["port"] is None else int(row["port"])
    try:
        out["detail"] = json.loads(row["detail"])
    except ValueError:
        out["detail"] = {"unreadable": str(row["detail"])[:200]}
    return out


# -- the writer -------------------------------------------------------------------------


class AuditTrail:
    """
    Central's writer of its chain.  C{store} has C{append_audit(chain, key,
    entries)}; C{clock} paces the flood limit; C{wall_clock} gives the
    rows' time.  Nothing here raises into the caller: a bad call is a log
    line, a database failure is a log line and one ``audit.lost`` row once
    the database works again.
    """

    log = Logger()

    def __init__(self, store: Any, clock: IReactorTime, wall_clock: Callable[[], float], key: bytes, *,
                 chain: str = audit.CHAIN_CENTRAL, max_pending: int = MAX_PENDING,
                 max_per_minute: int = MAX_ROWS_PER_MINUTE) -> None:
        self.store = store
        self.clock = clock
        self.now = wall_clock
        self.key = key
        self.chain = chain
        self.max_pending = max_pending
        self.max_per_minute = max_per_minute
        self._pending: list[Entry] = []
        self._writing: Optional[defer.Deferred] = None
        # Told when a batch of rows cannot be written (what, why) and when one is (Central's alerts).
        self.on_db_error: Callable[[str, str], None] = lambda doing, why: None
        self.on_db_ok: Callable[[Any], Any] = lambda result: result
        self._minute_started = clock.seconds()
        self._this_minute = 0
        self._suppressed: dict[str, int] = {}
        self._lost = 0
        self._failing = False
        self._idle: list[defer.Deferred] = []
        self.written = 0  # rows this process appended (for tests and the log)

    def record(self, actor_kind: str, actor_id: str, address: Optional[str], action: str, outcome: str,
               *, port: Any = ..., **detail: Any) -> None:
        """
        One row: who (C{actor_kind}: cp, driver, operator, registry, weather,
        system; C{actor_id}), from where (C{address}: C{host:port} or a host;
        C{port=} to give the port apart), C{action} (docs/audit.md lists
        them), C{outcome} (ok, refused, failed) and C{detail} (JSON values).
        """
        try:
            e = audit.entry(self.now(), actor_kind, actor_id, address, action, outcome, detail, port=port)
        except audit.AuditError as error:
            self.log.error("audit: a row that cannot be written ({why}): {action}", why=str(error), action=action)
            return
        self._add(e)

    def note(self, note: audit.Note) -> None:
        """A row from a L{audit.Note} (what the refusal summarizer hands over)."""
        self.record(note.actor_kind, note.actor_id, note.address, note.action, note.outcome, **(note.detail or {}))

    def _add(self, e: Entry, counted: bool = True) -> None:
        now = self.clock.seconds()
        if now - self._minute_started >= 60.0:
            self._minute_started, self._this_minute = now, 0
        if counted and (self._this_minute >= self.max_per_minute or len(self._pending) >= self.max_pending):
            self._suppressed[e.action] = self._suppressed.get(e.action, 0) + 1
            return
        if counted:
            self._this_minute += 1
        self._pending.append(e)
        if self._writing is None:
            self._write()

    def _write(self, force: bool = False) -> None:
        room = self._this_minute < self.max_per_minute and len(self._pending) < self.max_pending
        if self._suppressed and (room or force):
            counts, self._suppressed = self._suppressed, {}
            self.log.warn("audit: {n} rows not written (a flood); one row says so", n=sum(counts.values()))
            self._pending.append(audit.entry(self.now(), "system", self.chain, None, "audit.suppressed", audit.OK,
                                             audit.summary_detail(counts, 60.0), port=None))
            self._this_minute += 1
        lost = self._lost if (self._pending or force) else 0
        if lost:
            self._pending.insert(0, audit.entry(self.now(), "system", self.chain, None, "audit.lost", audit.FAILED,
                                                {"rows_not_written": lost, "why": "database error"}, port=None))
        if not self._pending:
            self._writing = None
            idle, self._idle = self._idle, []
            for d in idle:
                d.callback(None)
            return
        batch, self._pending = self._pending, []
        d = self._writing = defer.maybeDeferred(self.store.append_audit, self.chain, self.key, batch)
        d.addCallbacks(self._written, self._failed, callbackArgs=(batch, lost), errbackArgs=(batch, lost))
        # After a failure, only new rows (or a new flush) try again: no loop against a database that is down.
        d.addBoth(lambda _: self._write(force=bool(self._idle) and not self._failing))

    def _written(self, _: Any, batch: list[Entry], lost: int) -> None:
        self._failing = False
        self.on_db_ok(None)
        self.written += len(batch)
        self._lost -= lost  # the audit.lost row that said so is written

    def _failed(self, failure: Any, batch: list[Entry], lost: int) -> None:
        self._failing = True
        self.log.error("audit: {n} rows could not be written: {why}", n=len(batch), why=failure.getErrorMessage())
        self.on_db_error("writing the audit trail", failure.getErrorMessage())
        self._lost += len(batch) - (1 if lost else 0)  # (the audit.lost row is made again, with the new count)

    def sweep(self) -> None:
        """Write the summary of rows a flood kept out, once its minute is over (every few seconds)."""
        if self._suppressed and self._writing is None and self.clock.seconds() - self._minute_started >= 60.0:
            self._minute_started, self._this_minute = self.clock.seconds(), 0
            self._write()

    def flush(self) -> defer.Deferred:
        """Fires once every row recorded so far is written (or has failed): Central is stopping."""
        if self._writing is None and not self._pending and not self._suppressed:
            return defer.succeed(None)
        d: defer.Deferred = defer.Deferred()
        self._idle.append(d)
        if self._writing is None:
            self._write(force=True)
        return d
