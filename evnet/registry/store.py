"""
EV_Registry's store: registrations and enrollment tokens, in the database
Central uses, through Central's L{evnet.central.store.Store} (its one
adbapi pool and thread, its ordered group commit, its retry on a lost
MySQL connection).  The Registry's process makes its own Store on the same
``--db``; Central can wrap the Store it already has to read what the
Registry wrote: C{RegistryStore(store).registration(cp_id)}.

Every interaction is a small function of a cursor returning plain data.
The changes (alta, baja, credentials reset, enrollment issued) write their
``events`` row in the same transaction as the change, so the audit trail
cannot miss one.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

from twisted.internet import defer

from evnet.central import audit, audittrail
from evnet.central.store import Store
from evnet.registry import schema
from evnet.registry.schema import DRIVER_COLUMNS, STATUS_DEREGISTERED, STATUS_REGISTERED

EVENT_CHANGE = "registry"
EVENT_REFUSED = "registry-refused"

PUBLIC_COLUMNS = "cp_id, location, price, status, registered_at, updated_at"


def when(seconds: float) -> str:
    """A timestamp for an audit row: UTC, to the second."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def token_hash(token: str) -> str:
    """How an enrollment token is kept: its SHA-256, in hex."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def public(row: dict) -> dict:
    """A registration as the API shows it (never the verifier)."""
    return {
        "cp_id": row["cp_id"],
        "location": row["location"],
        "price": float(row["price"]),
        "status": row["status"],
        "registered_at": float(row["registered_at"]),
        "updated_at": float(row["updated_at"]),
    }


@dataclass(frozen=True)
class Registered:
    """What L{RegistryStore.register} did."""

    refused: Optional[str] = None  # why the enrollment token does not open this registration (audit text)
    created: bool = False  # a CP id never registered before
    reset: bool = False  # a registered CP's credentials were replaced (the old secret stops working)
    row: Optional[dict] = None  # the registration now (public fields)


def _enrollment_problem(row: Optional[tuple], cp_id: str, now: float) -> Optional[str]:
    if row is None:
        return "unknown enrollment token"
    token_cp, expires_at, used_at = row
    if token_cp != cp_id:
        return f"the enrollment token was issued for {token_cp}"
    if used_at is not None:
        return f"the enrollment token was already used at {when(float(used_at))}"
    if now >= float(expires_at):
        return f"the enrollment token expired at {when(float(expires_at))}"
    return None


class RegistryStore:
    """The Registry's tables over a Central L{Store}; every method returns a Deferred of plain data."""

    def __init__(self, store: Store, audit_key: Optional[bytes] = None) -> None:
        """
        C{audit_key}: the audit trail's key (docs/audit.md): each change and
        refusal also appends a row to the ``registry`` chain, in the same
        transaction.  Without one (Central reading registrations) a random
        key: rows written so do not verify, which is why the tap gives it.
        """
        self.store = store
        self.mysql = store.mysql
        self.audit_key = audit_key if audit_key is not None else os.urandom(32)

    def _audit(self, cursor: Any, at: float, by: Any, action: str, outcome: str, **detail: Any) -> None:
        """The audit row of a change or refusal, in the caller's transaction (its ``registry`` chain)."""
        if isinstance(by, tuple):
            actor_kind, actor_id, address, port = by
        else:  # only the events row's text: the Registry itself, saying by whom
            actor_kind, actor_id, address, port = "registry", "registry", "", None
            detail["by"] = str(by)
        e = audit.entry(at, actor_kind, actor_id, address, action, outcome, detail, port=port)
        audittrail.append_txn(cursor, self.mysql, audit.CHAIN_REGISTRY, self.audit_key, [e])

    def _sql(self, sql: str) -> str:
        return sql.replace("?", "%s") if self.mysql else sql

    def _event(self, cursor: Any, at: float, kind: str, subject: str, detail: str) -> None:
        cursor.execute(
            self._sql("INSERT INTO events (at, kind, subject, detail) VALUES (?, ?, ?, ?)"),
            (at, kind, subject[:64], detail[:1024]),
        )

    def _one(self, cursor: Any, cp_id: str) -> Optional[dict]:
        cursor.execute(self._sql(f"SELECT {PUBLIC_COLUMNS} FROM registrations WHERE cp_id = ?"), (cp_id,))
        row = cursor.fetchone()
        return None if row is None else public(dict(zip(PUBLIC_COLUMNS.split(", "), row)))

    # -- schema --------------------------------------------------------------

    def start(self) -> defer.Deferred:
        """Central's schema (the ``events`` table is there), then the Registry's tables."""
        d = self.store.start()
        d.addCallback(lambda _: self.store.run(schema.create_tables))
        return d

    def close(self) -> None:
        self.store.close()

    # -- reading ---------------------------------------------------------------

    def registration(self, cp_id: str) -> defer.Deferred:
        """
        For Central: the CP's registration as a dict (cp_id, location, price,
        verifier: the text of a L{Verifier} or None, status, registered_at,
        updated_at), or None if the id was never registered.
        """
        columns = "cp_id, location, price, verifier, status, registered_at, updated_at"
        sql = self._sql(f"SELECT {columns} FROM registrations WHERE cp_id = ?")

        def txn(cursor):
            cursor.execute(sql, (cp_id,))
            row = cursor.fetchone()
            return None if row is None else dict(zip(columns.split(", "), row))

        return self.store.run(txn)

    def shown(self, cp_id: str) -> defer.Deferred:
        """One registration as the API shows it, or None."""
        return self.store.run(self._one, cp_id)

    def registrations(self) -> defer.Deferred:
        """Every registration (both statuses) as the API shows them, by id."""
        sql = f"SELECT {PUBLIC_COLUMNS} FROM registrations ORDER BY cp_id"

        def txn(cursor):
            cursor.execute(sql)
            return [public(dict(zip(PUBLIC_COLUMNS.split(", "), row))) for row in cursor.fetchall()]

        return self.store.run(txn)

    # -- changes ---------------------------------------------------------------

    def issue_enrollment(self, cp_id: str, token_hash: str, now: float, expires_at: float, by: str,
                         actor: Any = None) -> defer.Deferred:
        """
        Keep a new enrollment token's hash for C{cp_id}, with its audit rows.
        C{by} is the events row's text; C{actor} the audit row's (kind, id,
        host, port) (by default: C{by}).
        """
        sql = self._sql("INSERT INTO enrollments (token_hash, cp_id, created_at, expires_at) VALUES (?, ?, ?, ?)")

        def txn(cursor):
            cursor.execute(sql, (token_hash, cp_id, now, expires_at))
            self._event(cursor, now, EVENT_CHANGE, cp_id,
                        f"enrollment token issued for {cp_id}, valid until {when(expires_at)}; by {by}")
            self._audit(cursor, now, actor or by, "registry.enrollment", audit.OK, cp=cp_id,
                        expires_at=audit.utc_text(expires_at))

        return self.store.run(txn)

    def register(
        self,
        cp_id: str,
        location: str,
        price: float,
        make_verifier: Callable[[], str],
        now: float,
        by: str,
        token_hash: Optional[str] = None,
        actor: Any = None,
    ) -> defer.Deferred:
        """
        Register C{cp_id} (alta) or register it again (its credentials are
        reset), storing C{make_verifier()}: called in the transaction, once the
        enrollment token (if any) is found good, so the slow hash runs on the
        store's thread and only for an authorized call.  With C{token_hash},
        the enrollment token it names must be for this CP, unused and
        unexpired; it is used up in the same transaction.  Fires with a
        L{Registered}; nothing is written when it is refused.
        """
        sql = {
            "token": "SELECT cp_id, expires_at, used_at FROM enrollments WHERE token_hash = ?",
            "use": "UPDATE enrollments SET used_at = ? WHERE token_hash = ? AND used_at IS NULL",
            "old": "SELECT status, registered_at FROM registrations WHERE cp_id = ?",
            "insert": "INSERT INTO registrations (cp_id, location, price, verifier, status, registered_at, "
                      "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            "update": "UPDATE registrations SET location = ?, price = ?, verifier = ?, status = ?, "
                      "registered_at = ?, updated_at = ? WHERE cp_id = ?",
        }
        sql = {k: self._sql(v) for k, v in sql.items()}

        def txn(cursor):
            if token_hash is not None:
                cursor.execute(sql["token"], (token_hash,))
                problem = _enrollment_problem(cursor.fetchone(), cp_id, now)
                if problem is not None:
                    return Registered(refused=problem)  # (the API records the refusal)
            cursor.execute(sql["old"], (cp_id,))
            old = cursor.fetchone()
            verifier = make_verifier()
            if token_hash is not None:
                cursor.execute(sql["use"], (now, token_hash))
                if cursor.rowcount != 1:  # used by a concurrent call in between
                    return Registered(refused="the enrollment token was already used")
            who = actor or by
            how = f"'{location}', {price:.3f} €/kWh; by {by}"
            if old is None:
                cursor.execute(sql["insert"], (cp_id, location, price, verifier, STATUS_REGISTERED, now, now))
                text = f"{cp_id} registered (alta): {how}"
                action = "registry.alta"
            else:
                reset = old[0] == STATUS_REGISTERED
                registered_at = float(old[1]) if reset else now
                cursor.execute(sql["update"], (location, price, verifier, STATUS_REGISTERED, registered_at, now, cp_id))
                text = (f"{cp_id} registered again, credentials reset (the old secret no longer works): {how}"
                        if reset else f"{cp_id} registered again after its baja (alta): {how}")
                action = "registry.reset" if reset else "registry.alta"
            self._event(cursor, now, EVENT_CHANGE, cp_id, text)
            self._audit(cursor, now, who, action, audit.OK, cp=cp_id, location=location, price=price,
                        enrollment_token=token_hash is not None)
            return Registered(created=old is None, reset=old is not None and old[0] == STATUS_REGISTERED,
                              row=self._one(cursor, cp_id))

        return self.store.run(txn)

    def deregister(self, cp_id: str, now: float, by: str, actor: Any = None) -> defer.Deferred:
        """
        Deregister C{cp_id} (baja): its verifier is removed, so its
        credentials stop working, and its unused enrollment tokens expire.
        Fires with the registration (public fields), or None for an unknown id.
        """
        sql_status = self._sql("SELECT status FROM registrations WHERE cp_id = ?")
        sql_update = self._sql("UPDATE registrations SET verifier = NULL, status = ?, updated_at = ? WHERE cp_id = ?")
        sql_tokens = self._sql(
            "UPDATE enrollments SET expires_at = ? WHERE cp_id = ? AND used_at IS NULL AND expires_at > ?"
        )

        def txn(cursor):
            cursor.execute(sql_status, (cp_id,))
            row = cursor.fetchone()
            if row is None:
                return None
            if row[0] != STATUS_DEREGISTERED:
                cursor.execute(sql_update, (STATUS_DEREGISTERED, now, cp_id))
                cursor.execute(sql_tokens, (now, cp_id, now))
                expired = cursor.rowcount
                tokens = f"; {expired} unused enrollment token(s) expired" if expired else ""
                self._event(cursor, now, EVENT_CHANGE, cp_id,
                            f"{cp_id} deregistered (baja): its credentials no longer work{tokens}; by {by}")
                self._audit(cursor, now, actor or by, "registry.baja", audit.OK, cp=cp_id,
                            enrollment_tokens_expired=expired)
            return self._one(cursor, cp_id)

        return self.store.run(txn)

    def refused(self, subject: str, detail: str, now: float, actor: Any = None, **why: Any) -> defer.Deferred:
        """The events row and the audit row of a refused call (C{actor}: (kind, id, host, port); C{why}: its detail)."""

        def txn(cursor):
            self._event(cursor, now, EVENT_REFUSED, subject, detail)
            self._audit(cursor, now, actor or ("registry", "unauthenticated", "", None), "registry.refused",
                        audit.REFUSED, cp=subject, **why)

        return self.store.run(txn)

    # -- drivers' accounts (issue 14) ----------------------------------------------

    def driver_account(self, driver_id: str) -> defer.Deferred:
        """The driver's row (driver_id, verifier text or None, status, created_at, updated_at), or None."""
        sql = self._sql(f"SELECT {DRIVER_COLUMNS}, verifier FROM driver_accounts WHERE driver_id = ?")

        def txn(cursor):
            cursor.execute(sql, (driver_id,))
            row = cursor.fetchone()
            return None if row is None else dict(zip(DRIVER_COLUMNS.split(", ") + ["verifier"], row))

        return self.store.run(txn)

    def drivers(self) -> defer.Deferred:
        """Every driver account (public fields, no verifier), by id."""
        sql = f"SELECT {DRIVER_COLUMNS} FROM driver_accounts ORDER BY driver_id"

        def txn(cursor):
            cursor.execute(sql)
            return [dict(zip(DRIVER_COLUMNS.split(", "), row)) for row in cursor.fetchall()]

        return self.store.run(txn)

    def add_driver(self, driver_id: str, make_verifier: Callable[[], str], now: float, by: str) -> defer.Deferred:
        """
        Sign C{driver_id} up, or again (its credentials reset): stores
        C{make_verifier()} (the slow hash, on the store's thread).  Fires with
        (created, the public row).
        """
        sql_old = self._sql("SELECT status FROM driver_accounts WHERE driver_id = ?")
        sql_insert = self._sql("INSERT INTO driver_accounts (driver_id, verifier, status, created_at, updated_at) "
                               "VALUES (?, ?, ?, ?, ?)")
        sql_update = self._sql("UPDATE driver_accounts SET verifier = ?, status = ?, updated_at = ? WHERE driver_id = ?")
        sql_row = self._sql(f"SELECT {DRIVER_COLUMNS} FROM driver_accounts WHERE driver_id = ?")

        def txn(cursor):
            cursor.execute(sql_old, (driver_id,))
            old = cursor.fetchone()
            verifier = make_verifier()
            if old is None:
                cursor.execute(sql_insert, (driver_id, verifier, STATUS_REGISTERED, now, now))
                text = f"driver {driver_id} signed up; by {by}"
            else:
                cursor.execute(sql_update, (verifier, STATUS_REGISTERED, now, driver_id))
                text = f"driver {driver_id} signed up again, credentials reset (the old secret no longer works); by {by}"
            self._event(cursor, now, EVENT_CHANGE, driver_id, text)
            self._audit(cursor, now, by, "registry.driver-signup" if old is None else "registry.driver-reset",
                        audit.OK, driver=driver_id)
            cursor.execute(sql_row, (driver_id,))
            return old is None, dict(zip(DRIVER_COLUMNS.split(", "), cursor.fetchone()))

        return self.store.run(txn)

    def remove_driver(self, driver_id: str, now: float, by: str) -> defer.Deferred:
        """Remove C{driver_id}'s credentials (they stop working); fires with its public row, or None if unknown."""
        sql_status = self._sql("SELECT status FROM driver_accounts WHERE driver_id = ?")
        sql_update = self._sql("UPDATE driver_accounts SET verifier = NULL, status = ?, updated_at = ? WHERE driver_id = ?")
        sql_row = self._sql(f"SELECT {DRIVER_COLUMNS} FROM driver_accounts WHERE driver_id = ?")

        def txn(cursor):
            cursor.execute(sql_status, (driver_id,))
            row = cursor.fetchone()
            if row is None:
                return None
            if row[0] != STATUS_DEREGISTERED:
                cursor.execute(sql_update, (STATUS_DEREGISTERED, now, driver_id))
                self._event(cursor, now, EVENT_CHANGE, driver_id,
                            f"driver {driver_id} removed: its credentials no longer work; by {by}")
                self._audit(cursor, now, by, "registry.driver-remove", audit.OK, driver=driver_id)
            cursor.execute(sql_row, (driver_id,))
            return dict(zip(DRIVER_COLUMNS.split(", "), cursor.fetchone()))

        return self.store.run(txn)
