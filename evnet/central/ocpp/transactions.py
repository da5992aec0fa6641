"""
OCPP transaction ids and the evnet sessions they are, in Central's
database (table ``ocpp_transactions``, created at start where missing, on
SQLite and MariaDB alike).  OCPP gives the CP an integer transactionId in
StartTransaction's answer; the CP quotes it in MeterValues and
StopTransaction, possibly after either side restarted, so the mapping and
what the session's figures are computed from (the meter at the start, the
CP's start time, the price) live in the store, not in memory.

Every interaction is a small function of a cursor returning plain data, run
through the Central L{evnet.central.store.Store}'s one queue (C{store.run}).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from twisted.internet import defer

TABLE = """CREATE TABLE IF NOT EXISTS ocpp_transactions (
    transaction_id INTEGER NOT NULL PRIMARY KEY,
    cp_id VARCHAR(64) NOT NULL,
    session_id VARCHAR(64) NULL,
    meter_start DOUBLE NOT NULL,
    started_at DOUBLE NOT NULL,
    price DOUBLE NOT NULL,
    target_kwh DOUBLE NOT NULL,
    stopped_at DOUBLE NULL
)"""
COLUMNS = "transaction_id, cp_id, session_id, meter_start, started_at, price, target_kwh, stopped_at"


@dataclass
class Transaction:
    """One OCPP transaction: C{session_id} None for a start Central refused (nothing to bill)."""

    transaction_id: int
    cp_id: str
    session_id: Optional[str]
    meter_start: float  # Wh, the CP's meter at StartTransaction
    started_at: float  # POSIX seconds, the CP's clock at StartTransaction
    price: float  # €/kWh of the session
    target_kwh: float = 0.0
    stopped_at: Optional[float] = None

    @classmethod
    def from_row(cls, row: tuple) -> "Transaction":
        tid, cp_id, sid, meter, at, price, target, stopped = row
        return cls(int(tid), cp_id, sid, float(meter), float(at), float(price), float(target),
                   None if stopped is None else float(stopped))


class TransactionStore:
    """The table over a Central Store; every method returns a Deferred of plain data."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.mysql = bool(getattr(store, "mysql", False))

    def _sql(self, sql: str) -> str:
        return sql.replace("?", "%s") if self.mysql else sql

    def start(self) -> defer.Deferred:
        """Create the table where missing (Central's schema is already there)."""
        mysql = self.mysql

        def txn(cursor):
            cursor.execute(TABLE)
            if mysql:
                cursor.execute("SELECT COUNT(*) FROM information_schema.statistics WHERE table_schema = DATABASE() "
                               "AND index_name = 'ocpp_transactions_session'")
                if cursor.fetchone()[0]:
                    return
                cursor.execute("CREATE INDEX ocpp_transactions_session ON ocpp_transactions (session_id)")
            else:
                cursor.execute("CREATE INDEX IF NOT EXISTS ocpp_transactions_session ON ocpp_transactions (session_id)")

        return self.store.run(txn)

    def _one(self, cursor: Any, where: str, value: Any) -> Optional[Transaction]:
        cursor.execute(self._sql(f"SELECT {COLUMNS} FROM ocpp_transactions WHERE {where} = ?"), (value,))
        row = cursor.fetchone()
        return None if row is None else Transaction.from_row(row)

    def open(self, cp_id: str, session_id: Optional[str], meter_start: float, started_at: float,
             price: float, target_kwh: float) -> defer.Deferred:
        """
        A new transaction id for C{session_id} (the one it already has if
        the CP repeats its StartTransaction), with what its figures start from.
        """

        def txn(cursor):
            if session_id is not None:
                known = self._one(cursor, "session_id", session_id)
                if known is not None:
                    return known
            cursor.execute("SELECT COALESCE(MAX(transaction_id), 0) + 1 FROM ocpp_transactions")
            tid = int(cursor.fetchone()[0])
            cursor.execute(
                self._sql(f"INSERT INTO ocpp_transactions ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, NULL)"),
                (tid, cp_id, session_id, meter_start, started_at, price, target_kwh),
            )
            return Transaction(tid, cp_id, session_id, meter_start, started_at, price, target_kwh)

        return self.store.run(txn)

    def get(self, transaction_id: int) -> defer.Deferred:
        """The transaction, or None."""
        return self.store.run(self._one, "transaction_id", int(transaction_id))

    def of_session(self, session_id: str) -> defer.Deferred:
        """The transaction of an evnet session, or None."""
        return self.store.run(self._one, "session_id", session_id)

    def stopped(self, transaction_id: int, at: float) -> defer.Deferred:
        """The CP ended the transaction (its StopTransaction) at C{at}."""
        sql = self._sql("UPDATE ocpp_transactions SET stopped_at = ? WHERE transaction_id = ? AND stopped_at IS NULL")

        def txn(cursor):
            cursor.execute(sql, (at, int(transaction_id)))

        return self.store.run(txn)
