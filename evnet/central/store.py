"""
Central's persistent store, over one ``twisted.enterprise.adbapi``
connection pool: SQLite (embedded default) or MySQL/MariaDB (mysqlclient).

One schema serves both backends.  The pool has a single thread, so writes
run in the order they were issued and SQLite's one-writer rule holds; every
interaction is a small function that takes a cursor and returns plain data.
A connection lost under MySQL (server restarted: errors 2006/2013) is
retried once on a fresh connection.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional
from urllib.parse import unquote, urlsplit

from twisted.enterprise import adbapi
from twisted.internet import defer
from twisted.logger import Logger

from evnet.central import audittrail, panelqueries
from evnet.central.schema import _INDEXES, _TABLES, SCHEMA_VERSION, SESSION_COLUMNS, WEATHER_COLUMNS  # noqa: F401
from evnet.central.sqltxn import dict_rows, placeholders
from evnet.registry import schema as registry_schema


class StoreError(Exception):
    """The database could not be opened or used; the text says what to do."""


@dataclass(frozen=True)
class DbUrl:
    backend: str  # "sqlite" or "mysql"
    path: str = ""
    user: str = ""
    password: str = ""
    host: str = "127.0.0.1"
    port: int = 3306
    database: str = ""

    def display(self) -> str:
        if self.backend == "sqlite":
            return f"sqlite:{self.path}"
        return f"mysql://{self.user}@{self.host}:{self.port}/{self.database}"


def parse_db_url(url: str) -> DbUrl:
    """
    ``sqlite:PATH`` or ``mysql://user:password@host:port/dbname``; raises
    ValueError with the expected forms.
    """
    if url.startswith("sqlite:"):
        path = url[len("sqlite:") :]
        if path.startswith("//"):
            path = path[2:]
        if not path:
            raise ValueError("sqlite URL needs a path: sqlite:evcentral.db")
        return DbUrl("sqlite", path=path)
    if url.startswith("mysql://"):
        parts = urlsplit(url)
        database = parts.path.lstrip("/")
        if not parts.hostname or not database:
            raise ValueError("MySQL URL must be mysql://user:password@host:port/dbname")
        return DbUrl(
            "mysql",
            user=unquote(parts.username or ""),
            password=unquote(parts.password or ""),
            host=parts.hostname,
            port=parts.port or 3306,
            database=database,
        )
    raise ValueError(
        f"unknown database URL {url!r}: use sqlite:PATH or mysql://user:password@host:port/dbname"
    )


def _sqlite_opened(connection: Any) -> None:
    """
    Write-ahead log with synchronous=NORMAL: a commit survives the process
    being killed (only an OS crash may lose the last ones), at a small
    fraction of the cost of a full sync per commit.
    """
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")


def _is_lost_connection(failure: Any) -> bool:
    if failure.check(adbapi.ConnectionLost):
        return True
    value = failure.value
    args = getattr(value, "args", ())
    return type(value).__name__ == "OperationalError" and bool(args) and args[0] in (2006, 2013)


class Store:
    """
    Central's tables: cps, drivers, sessions, events, weather_alerts; and EV_Registry's
    (L{evnet.registry.schema}), created here too so that Central alone
    works, which Central only reads.  Every method returns a Deferred of
    plain data.
    """

    log = Logger()

    def __init__(self, url: DbUrl, pool: Optional[adbapi.ConnectionPool] = None) -> None:
        self.url = url
        if pool is None:
            pool = self._make_pool(url)
        self.pool = pool
        self.mysql = url.backend == "mysql"
        self._queue: list[tuple[Callable[..., Any], tuple, defer.Deferred]] = []
        self._busy = False

    @staticmethod
    def _make_pool(url: DbUrl) -> adbapi.ConnectionPool:
        common = dict(cp_min=1, cp_max=1, cp_reconnect=True, cp_noisy=False)
        if url.backend == "sqlite":
            directory = os.path.dirname(os.path.abspath(url.path))
            if not os.path.isdir(directory):
                raise StoreError(f"cannot open {url.display()}: directory {directory} does not exist")
            return adbapi.ConnectionPool(
                "sqlite3", url.path, check_same_thread=False, timeout=30, cp_openfun=_sqlite_opened, **common
            )
        try:
            import MySQLdb  # noqa: F401
        except ImportError:
            raise StoreError(
                "the mysql backend needs mysqlclient: pip install 'evnet[mysql]' "
                "(Debian: apt-get install default-libmysqlclient-dev pkg-config first)"
            ) from None
        return adbapi.ConnectionPool(
            "MySQLdb",
            host=url.host,
            port=url.port,
            user=url.user,
            passwd=url.password,
            db=url.database,
            charset="utf8mb4",
            connect_timeout=10,
            client_flag=2,  # CLIENT.FOUND_ROWS: rowcount counts matched rows, not changed ones
            **common,
        )

    # -- plumbing ----------------------------------------------------------

    def _sql(self, sql: str) -> str:
        return placeholders(self.mysql, sql)

    def run(self, interaction: Callable[..., Any], *args: Any) -> defer.Deferred:
        """
        Run C{interaction(cursor, *args)}; the Deferred fires with its result
        once it is committed.

        Interactions run in the order they were asked for.  Those asked for
        while a transaction is in progress wait and then share the next one
        (group commit): under load the database sees one commit per batch,
        not per write.  If a shared transaction fails, each of its
        interactions is run again on its own, so one bad write cannot take
        the others down.
        """
        d: defer.Deferred = defer.Deferred()
        self._queue.append((interaction, args, d))
        if not self._busy:
            self._next_batch()
        return d

    def _next_batch(self) -> None:
        if not self._queue:
            self._busy = False
            return
        self._busy = True
        batch, self._queue = self._queue, []

        def together(cursor):
            return [interaction(cursor, *args) for interaction, args, _ in batch]

        def done(results):
            for (_, _, d), result in zip(batch, results):
                d.callback(result)

        @defer.inlineCallbacks
        def failed(failure):
            if len(batch) == 1:
                batch[0][2].errback(failure)
                return
            self.log.warn(
                "a batch of {n} database writes failed ({why}); running them one by one",
                n=len(batch), why=failure.getErrorMessage(),
            )
            for interaction, args, d in batch:
                try:
                    result = yield self._transaction(interaction, *args)
                except Exception:
                    d.errback()
                else:
                    d.callback(result)

        self._transaction(together).addCallbacks(done, failed).addBoth(lambda _: self._next_batch())

    def _transaction(self, interaction: Callable[..., Any], *args: Any) -> defer.Deferred:
        """One transaction on the pool's thread; retried once on a lost connection."""

        def retry(failure):
            if not _is_lost_connection(failure):
                return failure
            self.log.warn("database connection lost ({why}); retrying once", why=failure.getErrorMessage())
            return self.pool.runInteraction(interaction, *args)

        return self.pool.runInteraction(interaction, *args).addErrback(retry)

    def _execute(self, sql: str, *params: Any) -> defer.Deferred:
        sql = self._sql(sql)

        def txn(cursor):
            cursor.execute(sql, params)

        return self.run(txn)

    def _query(self, sql: str, *params: Any) -> defer.Deferred:
        sql = self._sql(sql)

        def txn(cursor):
            cursor.execute(sql, params)
            return dict_rows(cursor)

        return self.run(txn)

    # -- schema ------------------------------------------------------------

    def start(self) -> defer.Deferred:
        """Create or migrate the schema."""
        autoincrement = "BIGINT AUTO_INCREMENT PRIMARY KEY" if self.mysql else "INTEGER PRIMARY KEY AUTOINCREMENT"
        # MySQL's default collation folds case (and accents): a key that must compare exactly says so.
        binary = "CHARACTER SET utf8mb4 COLLATE utf8mb4_bin" if self.mysql else ""
        mysql = self.mysql

        def txn(cursor):
            for table in _TABLES:
                cursor.execute(table.format(autoincrement=autoincrement, binary=binary))
            for name, sql in _INDEXES:
                if mysql:
                    cursor.execute(
                        "SELECT COUNT(*) FROM information_schema.statistics "
                        "WHERE table_schema = DATABASE() AND index_name = %s",
                        (name,),
                    )
                    if cursor.fetchone()[0]:
                        continue
                    cursor.execute(sql)
                else:
                    cursor.execute(sql.replace(f"INDEX {name} ", f"INDEX IF NOT EXISTS {name} "))
            cursor.execute("SELECT version FROM schema_version")
            row = cursor.fetchone()
            if row is None:
                cursor.execute(
                    "INSERT INTO schema_version (version) VALUES (%s)" % int(SCHEMA_VERSION)
                )
            elif row[0] > SCHEMA_VERSION:
                raise StoreError(
                    f"the database has schema version {row[0]}, newer than this evnet "
                    f"({SCHEMA_VERSION}): upgrade evnet"
                )
            registry_schema.create_tables(cursor)

        return self.run(txn)

    def close(self) -> None:
        self.pool.close()

    # -- CPs and drivers ---------------------------------------------------

    def load_cps(self) -> defer.Deferred:
        """Every CP, by id, with C{registration}: its status at EV_Registry, or None if it has no row there."""
        return self._query(
            "SELECT c.id, c.location, c.price, c.state, c.stopped, c.registered_at, c.last_seen, "
            "r.status AS registration FROM cps c LEFT JOIN registrations r ON r.cp_id = c.id ORDER BY c.id"
        )

    def registration(self, cp_id: str) -> defer.Deferred:
        """
        The CP's row at EV_Registry (cp_id, location, price, verifier text or
        None, status, registered_at, updated_at), or None: what a login checks.
        """
        from evnet.registry.store import RegistryStore  # it is built on this module

        return RegistryStore(self).registration(cp_id)

    def driver_account(self, driver_id: str) -> defer.Deferred:
        """The driver's account at EV_Registry (with its verifier text or None), or None: what a driver login checks."""
        from evnet.registry.store import RegistryStore

        return RegistryStore(self).driver_account(driver_id)

    def driver_accounts(self) -> defer.Deferred:
        """Every driver account (driver_id, status, created_at, updated_at; never a verifier), by id."""
        from evnet.registry.store import RegistryStore

        return RegistryStore(self).drivers()

    def upsert_cp(self, cp_id: str, location: str, price: float, state: str) -> defer.Deferred:
        now = time.time()
        sql_update = self._sql("UPDATE cps SET location = ?, price = ?, state = ?, last_seen = ? WHERE id = ?")
        sql_insert = self._sql(
            "INSERT INTO cps (id, location, price, state, stopped, registered_at, last_seen) VALUES (?, ?, ?, ?, 0, ?, ?)"
        )

        def txn(cursor):
            cursor.execute(sql_update, (location, price, state, now, cp_id))
            if cursor.rowcount == 0:
                cursor.execute(sql_insert, (cp_id, location, price, state, now, now))

        return self.run(txn)

    def set_cp_state(self, cp_id: str, state: str, stopped: bool) -> defer.Deferred:
        return self._execute(
            "UPDATE cps SET state = ?, stopped = ?, last_seen = ? WHERE id = ?",
            state,
            int(stopped),
            time.time(),
            cp_id,
        )

    def touch_driver(self, driver_id: str) -> defer.Deferred:
        now = time.time()
        sql_update = self._sql("UPDATE drivers SET last_seen = ? WHERE id = ?")
        sql_insert = self._sql("INSERT INTO drivers (id, first_seen, last_seen) VALUES (?, ?, ?)")

        def txn(cursor):
            cursor.execute(sql_update, (now, driver_id))
            if cursor.rowcount == 0:
                cursor.execute(sql_insert, (driver_id, now, now))

        return self.run(txn)

    # -- sessions ----------------------------------------------------------

    def open_session(self, s: dict) -> defer.Deferred:
        return self._execute(
            "INSERT INTO sessions (id, cp_id, driver_id, origin, price, target_kwh, started_at, status) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, 'open')",
            s["id"],
            s["cp_id"],
            s["driver_id"],
            s["origin"],
            s["price"],
            s["target_kwh"],
            s["started_at"],
        )

    def save_progress(self, rows: list[tuple]) -> defer.Deferred:
        """Batch update of open sessions: (kwh, euros, seconds, last_seq, session_id) rows."""
        sql = self._sql(
            "UPDATE sessions SET kwh = ?, euros = ?, seconds = ?, last_seq = ? WHERE id = ? AND status = 'open'"
        )

        def txn(cursor):
            cursor.executemany(sql, rows)

        return self.run(txn)

    def close_session(
        self, session_id: str, ended_at: float, kwh: float, euros: float, seconds: int, last_seq: int, reason: str
    ) -> defer.Deferred:
        """Close an open session; fires with True if it was open (False: already closed)."""
        sql = self._sql(
            "UPDATE sessions SET status = 'closed', ended_at = ?, kwh = ?, euros = ?, seconds = ?, "
            "last_seq = ?, end_reason = ? WHERE id = ? AND status = 'open'"
        )

        def txn(cursor):
            cursor.execute(sql, (ended_at, kwh, euros, seconds, last_seq, reason, session_id))
            return cursor.rowcount == 1

        return self.run(txn)

    def mark_ticket_delivered(self, session_id: str) -> defer.Deferred:
        return self._execute(
            "UPDATE sessions SET ticket_delivered_at = ? WHERE id = ? AND ticket_delivered_at IS NULL",
            time.time(),
            session_id,
        )

    def open_sessions(self) -> defer.Deferred:
        """Open sessions, oldest first (the same order on every backend)."""
        return self._query(f"SELECT {SESSION_COLUMNS} FROM sessions WHERE status = 'open' ORDER BY started_at, id")

    def get_session(self, session_id: str) -> defer.Deferred:
        d = self._query(f"SELECT {SESSION_COLUMNS} FROM sessions WHERE id = ?", session_id)
        return d.addCallback(lambda rows: rows[0] if rows else None)

    def undelivered_tickets(self, driver_id: str) -> defer.Deferred:
        return self._query(
            f"SELECT {SESSION_COLUMNS} FROM sessions WHERE driver_id = ? AND status = 'closed' "
            "AND origin = 'driver' AND ticket_delivered_at IS NULL ORDER BY ended_at",
            driver_id,
        )

    def sessions_page(self, filters: dict, limit: int, before: Optional[tuple] = None) -> defer.Deferred:
        """A page of stored sessions, newest first (L{panelqueries.sessions_page_txn})."""
        return self.run(panelqueries.sessions_page_txn, self.mysql, dict(filters), limit, before)

    def drivers_page(self, limit: int, before: Optional[tuple] = None) -> defer.Deferred:
        """A page of the drivers' accounts, newest first (L{panelqueries.drivers_page_txn})."""
        return self.run(panelqueries.drivers_page_txn, self.mysql, limit, before)

    def closed_since(self, since: float, exclude: list[str]) -> defer.Deferred:
        """The kWh, € and count of the charges closed since C{since}, but C{exclude} (L{panelqueries})."""
        return self.run(panelqueries.closed_since_txn, self.mysql, since, list(exclude))

    def recent_sessions(self, limit: int = 50) -> defer.Deferred:
        return self._query(
            f"SELECT {SESSION_COLUMNS} FROM sessions ORDER BY started_at DESC LIMIT {int(limit)}"
        )

    # -- events ------------------------------------------------------------

    def add_event(self, kind: str, subject: str, detail: str, at: Optional[float] = None) -> defer.Deferred:
        return self._execute(
            "INSERT INTO events (at, kind, subject, detail) VALUES (?, ?, ?, ?)",
            time.time() if at is None else at,
            kind,
            subject[:64],
            detail[:1024],
        )

    def recent_events(self, limit: int = 100) -> defer.Deferred:
        return self._query(
            f"SELECT id, at, kind, subject, detail FROM events ORDER BY id DESC LIMIT {int(limit)}"
        )

    # -- weather alerts ------------------------------------------------------

    def load_weather_alerts(self) -> defer.Deferred:
        """Every weather alert Central holds, by location."""
        return self._query(f"SELECT {WEATHER_COLUMNS} FROM weather_alerts ORDER BY location")

    def save_weather_alert(self, location: str, city: str, temperature: float, observed_at: float,
                           raised_at: float, updated_at: float) -> defer.Deferred:
        """Raise the alert on C{location}, or update it (its C{raised_at} stays the first one's)."""
        sql_update = self._sql(
            "UPDATE weather_alerts SET city = ?, temperature = ?, observed_at = ?, updated_at = ? WHERE location = ?"
        )
        sql_insert = self._sql(f"INSERT INTO weather_alerts ({WEATHER_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)")

        def txn(cursor):
            cursor.execute(sql_update, (city, temperature, observed_at, updated_at, location))
            if cursor.rowcount == 0:
                cursor.execute(sql_insert, (location, city, temperature, observed_at, raised_at, updated_at))

        return self.run(txn)

    def delete_weather_alerts(self, locations: list[str]) -> defer.Deferred:
        """Clear the alerts on C{locations}; fires with how many there were."""
        sql = self._sql("DELETE FROM weather_alerts WHERE location = ?")

        def txn(cursor):
            count = 0
            for location in locations:
                cursor.execute(sql, (location,))
                count += max(cursor.rowcount, 0)
            return count

        return self.run(txn)
    # -- the audit trail (evnet/central/audittrail.py) ------------------------

    def append_audit(self, chain: str, key: bytes, entries: list) -> defer.Deferred:
        """Append C{entries} (L{audit.Entry}s) to C{chain}, after its head as stored now; fires with the rows."""
        return self.run(audittrail.append_txn, self.mysql, chain, key, list(entries))

    def audit_rows(self, filters: dict, limit: int, newest_first: bool = True) -> defer.Deferred:
        """At most C{limit} audit rows matching C{filters} (L{audittrail.where}), by id."""
        return self.run(audittrail.select_txn, self.mysql, dict(filters), limit, newest_first)
