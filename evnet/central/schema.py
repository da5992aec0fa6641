"""
Central's schema, written once for both backends (SQLite, MySQL/MariaDB):
the tables (their column types mapped per dialect by the store), the
indexes, and the column lists the store's queries read.  No I/O here.
"""

SCHEMA_VERSION = 1

# Column types are written once and mapped per dialect below.
_TABLES = [
    """CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS cps (
        id VARCHAR(64) NOT NULL PRIMARY KEY,
        location VARCHAR(255) NOT NULL,
        price DOUBLE NOT NULL,
        state VARCHAR(16) NOT NULL,
        stopped INTEGER NOT NULL DEFAULT 0,
        registered_at DOUBLE NOT NULL,
        last_seen DOUBLE
    )""",
    """CREATE TABLE IF NOT EXISTS drivers (
        id VARCHAR(64) NOT NULL PRIMARY KEY,
        first_seen DOUBLE NOT NULL,
        last_seen DOUBLE NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS sessions (
        id VARCHAR(64) NOT NULL PRIMARY KEY,
        cp_id VARCHAR(64) NOT NULL,
        driver_id VARCHAR(64) NOT NULL,
        origin VARCHAR(16) NOT NULL,
        price DOUBLE NOT NULL,
        target_kwh DOUBLE NOT NULL DEFAULT 0,
        started_at DOUBLE NOT NULL,
        ended_at DOUBLE,
        kwh DOUBLE NOT NULL DEFAULT 0,
        euros DOUBLE NOT NULL DEFAULT 0,
        seconds INTEGER NOT NULL DEFAULT 0,
        last_seq INTEGER NOT NULL DEFAULT 0,
        status VARCHAR(16) NOT NULL,
        end_reason VARCHAR(255),
        ticket_delivered_at DOUBLE
    )""",
    """CREATE TABLE IF NOT EXISTS events (
        id {autoincrement},
        at DOUBLE NOT NULL,
        kind VARCHAR(32) NOT NULL,
        subject VARCHAR(64) NOT NULL,
        detail VARCHAR(1024) NOT NULL
    )""",
    # EV_W's alerts by CP location (docs/weather.md), compared exactly as EV_W and the cps table do.
    """CREATE TABLE IF NOT EXISTS weather_alerts (
        location VARCHAR(255) {binary} NOT NULL PRIMARY KEY,
        city VARCHAR(80) NOT NULL,
        temperature DOUBLE NOT NULL,
        observed_at DOUBLE NOT NULL,
        raised_at DOUBLE NOT NULL,
        updated_at DOUBLE NOT NULL
    )""",
    # The audit trail (docs/audit.md; evnet/central/audit.py): append-only, one hash chain per writer.
    """CREATE TABLE IF NOT EXISTS audit (
        id {autoincrement},
        chain VARCHAR(16) NOT NULL,
        seq BIGINT NOT NULL,
        at VARCHAR(32) NOT NULL,
        actor_kind VARCHAR(16) NOT NULL,
        actor_id VARCHAR(64) NOT NULL,
        address VARCHAR(64) NOT NULL,
        port INTEGER,
        action VARCHAR(32) NOT NULL,
        outcome VARCHAR(16) NOT NULL,
        detail TEXT NOT NULL,
        prev CHAR(64) NOT NULL,
        hash CHAR(64) NOT NULL
    )""",
]
WEATHER_COLUMNS = "location, city, temperature, observed_at, raised_at, updated_at"
_INDEXES = [
    ("sessions_status", "CREATE INDEX sessions_status ON sessions (status)"),
    ("sessions_driver", "CREATE INDEX sessions_driver ON sessions (driver_id)"),
    ("sessions_started", "CREATE INDEX sessions_started ON sessions (started_at)"),  # the panel's pages
    ("sessions_ended", "CREATE INDEX sessions_ended ON sessions (ended_at)"),  # the day's totals
    ("audit_chain_seq", "CREATE UNIQUE INDEX audit_chain_seq ON audit (chain, seq)"),
    ("audit_at", "CREATE INDEX audit_at ON audit (at)"),
]

SESSION_COLUMNS = (
    "id, cp_id, driver_id, origin, price, target_kwh, started_at, ended_at, kwh, euros, "
    "seconds, last_seq, status, end_reason, ticket_delivered_at"
)
