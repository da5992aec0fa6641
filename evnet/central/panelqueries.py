"""
The panel's reads of the store (API_Central v1, docs/panel.md): stored
sessions filtered and paged, the drivers' accounts paged, and the day's
closed charges in one sum.  Each is a transaction function over a cursor
returning plain data, run by L{evnet.central.store.Store.run}; no I/O here.

A page is newest first, ordered by (time, id) so that two rows of the same
second keep one order; the cursor of the next page is the (time, id) of
the last row of this one, and the next page holds the rows before it.
"""

from __future__ import annotations

from typing import Any, Optional

from evnet.central.schema import SESSION_COLUMNS
from evnet.central.sqltxn import dict_rows, placeholders
from evnet.registry.schema import DRIVER_COLUMNS

Cursor = tuple[float, str]  # (time, id) of the last row of a page


def _before(column: str, key: str, before: Optional[Cursor], where: list[str], params: list) -> None:
    if before is not None:
        where.append(f"({column} < ? OR ({column} = ? AND {key} < ?))")
        params += [before[0], before[0], before[1]]


def sessions_page_txn(cursor: Any, mysql: bool, filters: dict, limit: int, before: Optional[Cursor]) -> list[dict]:
    """
    At most C{limit} sessions, newest first (started_at, id), with
    C{filters}: C{cp} and C{driver} (exact ids), C{since} (started at or
    after, Unix seconds) and C{until} (started before).
    """
    where, params = [], []
    for name, column in (("cp", "cp_id"), ("driver", "driver_id")):
        if name in filters:
            where.append(f"{column} = ?")
            params.append(filters[name])
    if "since" in filters:
        where.append("started_at >= ?")
        params.append(filters["since"])
    if "until" in filters:
        where.append("started_at < ?")
        params.append(filters["until"])
    _before("started_at", "id", before, where, params)
    sql = (f"SELECT {SESSION_COLUMNS} FROM sessions" + (" WHERE " + " AND ".join(where) if where else "")
           + f" ORDER BY started_at DESC, id DESC LIMIT {int(limit)}")
    cursor.execute(placeholders(mysql, sql), tuple(params))
    return dict_rows(cursor)


def drivers_page_txn(cursor: Any, mysql: bool, limit: int, before: Optional[Cursor]) -> list[dict]:
    """At most C{limit} drivers' accounts (never a verifier), newest first (created_at, driver_id)."""
    where, params = [], []
    _before("created_at", "driver_id", before, where, params)
    sql = (f"SELECT {DRIVER_COLUMNS} FROM driver_accounts" + (" WHERE " + " AND ".join(where) if where else "")
           + f" ORDER BY created_at DESC, driver_id DESC LIMIT {int(limit)}")
    cursor.execute(placeholders(mysql, sql), tuple(params))
    return dict_rows(cursor)


def closed_since_txn(cursor: Any, mysql: bool, since: float, exclude: list[str]) -> dict:
    """
    The charges closed at or after C{since} (Unix seconds), but those in
    C{exclude}: C{{"energy_kwh", "revenue_eur", "sessions"}}.
    """
    sql = "SELECT COUNT(*), COALESCE(SUM(kwh), 0), COALESCE(SUM(euros), 0) FROM sessions " \
          "WHERE status = 'closed' AND ended_at >= ?"
    params: list = [since]
    if exclude:
        sql += f" AND id NOT IN ({', '.join('?' for _ in exclude)})"
        params += list(exclude)
    cursor.execute(placeholders(mysql, sql), tuple(params))
    count, kwh, euros = cursor.fetchone()
    return {"energy_kwh": float(kwh or 0), "revenue_eur": float(euros or 0), "sessions": int(count or 0)}
