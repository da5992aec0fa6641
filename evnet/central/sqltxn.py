"""
The two pieces every transaction function of Central's store shares: a
statement written with C{?} placeholders made MySQL's C{%s} when it runs
on MariaDB/MySQL, and a cursor's rows as dicts by column name.  Pure.
"""

from __future__ import annotations

from typing import Any


def placeholders(mysql: bool, sql: str) -> str:
    """C{sql} with its C{?} placeholders as the driver wants them (C{%s} for MySQLdb)."""
    return sql.replace("?", "%s") if mysql else sql


def dict_rows(cursor: Any) -> list[dict]:
    """The rows C{cursor} has left to fetch, each a dict by column name."""
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row)) for row in cursor.fetchall()]
