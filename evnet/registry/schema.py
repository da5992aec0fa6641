"""
EV_Registry's tables, in the database it shares with EV_Central.

One list of statements for SQLite and MariaDB alike, each creating its table
only when it is missing, so that the Registry and Central can both run them
at start, in either order: L{create_tables} is an interaction for
C{evnet.central.store.Store.run}.

- ``registrations``: one row per CP ever registered.  ``verifier`` is the
  text of L{evnet.protocols.security.Verifier} (never the secret); it is
  NULL once the CP is deregistered.
- ``driver_accounts``: one row per driver ever signed up; ``verifier`` as
  for a CP (never the secret), NULL once the driver is removed.
- ``enrollments``: one-time tokens the operator issued for a CP id, kept only
  as their SHA-256 (hex).
"""

from __future__ import annotations

from typing import Any

STATUS_REGISTERED = "registered"
STATUS_DEREGISTERED = "deregistered"
DRIVER_COLUMNS = "driver_id, status, created_at, updated_at"  # a driver account's public fields (never the verifier)

STATEMENTS: list[str] = [
    """CREATE TABLE IF NOT EXISTS registrations (
        cp_id VARCHAR(64) NOT NULL PRIMARY KEY,
        location VARCHAR(255) NOT NULL,
        price DOUBLE NOT NULL,
        verifier VARCHAR(255) NULL,
        status VARCHAR(16) NOT NULL,
        registered_at DOUBLE NOT NULL,
        updated_at DOUBLE NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS driver_accounts (
        driver_id VARCHAR(64) NOT NULL PRIMARY KEY,
        verifier VARCHAR(255) NULL,
        status VARCHAR(16) NOT NULL,
        created_at DOUBLE NOT NULL,
        updated_at DOUBLE NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS enrollments (
        token_hash CHAR(64) NOT NULL PRIMARY KEY,
        cp_id VARCHAR(64) NOT NULL,
        created_at DOUBLE NOT NULL,
        expires_at DOUBLE NOT NULL,
        used_at DOUBLE NULL
    )""",
]


def create_tables(cursor: Any) -> None:
    """Create the Registry's tables where missing (an interaction: run it in a transaction)."""
    for statement in STATEMENTS:
        cursor.execute(statement)
