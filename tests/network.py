"""
A small evnet network of real processes for end-to-end tests: one Central,
one EV_Registry on the same database, charging points (Engine + Monitor,
the Monitor registering its CP at the Registry with an enrollment token the
first time), drivers (``evdriver --json``), every port from free_port(), and
restarts with the same command line.  L{registered} is the shortcut for a
test that starts a Monitor itself: the CP's registration written in the
database as the Registry writes it, and its credentials file.  Processes are
started through the ``procs`` fixture (evnet.launcher), so every one of them
is stopped by PID at the end of the test.

Also the ledger check shared by the crash matrix: what Central's database,
the drivers' output and the Engines' logs say about every charge; and the
two bounded waits of tests on real processes or the real reactor:
L{eventually} (poll a condition until a deadline) and L{within} (a Deferred
that must fire in time).
"""

from __future__ import annotations

import contextlib
import json
import re
import secrets
import sqlite3
import subprocess
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, TypeVar

from evnet.central.store import parse_db_url
from evnet.launcher import Registry
from evnet.protocols import security
from evnet.registry.credentials import Credentials, save_credentials
from evnet.registry.schema import STATEMENTS
from tests.procs import BIN, Proc, ProcGroup, free_port, wait_for_port

T = TypeVar("T")

# Engine: "Charge ended: session S… ended (target): 0.050 kWh, 0.02 EUR, 5 s"
_ENGINE_END = re.compile(r"Charge ended: session (\S+) ended \(([\w-]+)\): ([\d.]+) kWh")


def eventually(check: Callable[[], T], timeout: float, what: str, context: Callable[[], str] = lambda: "",
               interval: float = 0.1) -> T:
    """
    Call C{check} until it returns something true, and return that; after
    C{timeout} seconds, fail with an AssertionError saying that C{what} never
    happened (followed by C{context()}, e.g. what the processes printed).
    """
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() >= deadline:
            detail = context()
            raise AssertionError(f"{what}: not within {timeout} s" + (f"\n{detail}" if detail else ""))
        time.sleep(interval)  # the polling interval: the deadline decides, not this


def within(d, seconds: float, what: str):
    """
    C{d}, failed with an AssertionError saying that C{what} did not happen if it
    has not fired within C{seconds} on the real reactor (it is cancelled then).
    """
    from twisted.internet import reactor  # the one pytest-twisted runs; not at import
    from twisted.python.failure import Failure

    def timed_out(result, timeout):
        return Failure(AssertionError(f"{what}: no answer within {timeout} s"))

    return d.addTimeout(seconds, reactor, onTimeoutCancel=timed_out)


def events(procs: list[Proc] | Proc, kind: str) -> list[dict]:
    """The JSON events of one type printed by a driver (or by its successive runs)."""
    out = []
    for proc in procs if isinstance(procs, list) else [procs]:
        for line in proc.output().splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict) and event.get("type") == kind:
                out.append(event)
    return out


def mysql(url, sql: str) -> list[dict]:
    """One statement on a fresh connection (it survives a server restart between calls)."""
    import MySQLdb
    import MySQLdb.cursors

    database = {"db": url.database} if url.database else {}
    conn = MySQLdb.connect(host=url.host, port=url.port, user=url.user, passwd=url.password,
                           cursorclass=MySQLdb.cursors.DictCursor, **database)
    try:
        cursor = conn.cursor()
        cursor.execute(sql)
        return list(cursor.fetchall())
    finally:
        conn.close()


@contextlib.contextmanager
def fresh_mysql_database(server_url: str):
    """A new, empty ``evnet_test_*`` database on the server of C{server_url}; its URL; dropped after."""
    base = replace(parse_db_url(server_url), database="")
    name = "evnet_test_" + secrets.token_hex(4)
    mysql(base, f"CREATE DATABASE {name}")
    try:
        yield f"mysql://{base.user}:{base.password}@{base.host}:{base.port}/{name}"
    finally:
        mysql(base, f"DROP DATABASE IF EXISTS {name}")


def registered(db: str, directory: Path, cp_id: str, location: str = "Centro", price: float = 0.30) -> list[str]:
    """
    CP C{cp_id} registered in Central's database C{db} (an ``sqlite:PATH``
    or ``mysql://`` URL) as EV_Registry writes it, with a fresh secret kept in
    a 0600 credentials file in C{directory}: the Monitor's options to use it.
    """
    secret = security.new_secret()
    row = (cp_id, location, price, security.make_verifier(secret).to_text(), "registered", time.time(), time.time())
    insert = ("REPLACE INTO registrations (cp_id, location, price, verifier, status, registered_at, updated_at) "
              "VALUES ({0}, {0}, {0}, {0}, {0}, {0}, {0})")
    url = parse_db_url(db)
    if url.backend == "sqlite":
        with sqlite3.connect(url.path) as conn:
            for statement in STATEMENTS:
                conn.execute(statement)
            conn.execute(insert.format("?"), row)
    else:
        import MySQLdb

        conn = MySQLdb.connect(host=url.host, port=url.port, user=url.user, passwd=url.password, db=url.database)
        try:
            cursor = conn.cursor()
            for statement in STATEMENTS:
                cursor.execute(statement)
            cursor.execute(insert.format("%s"), row)
            conn.commit()
        finally:
            conn.close()
    path = Path(directory) / f"credentials-{cp_id}.json"
    save_credentials(str(path), Credentials(cp_id, secret, "https://127.0.0.1:7443"))
    return ["--credentials-file", str(path)]


@dataclass
class ChargingPoint:
    cp_id: str
    engine_args: list[str]
    monitor_args: list[str]
    control: str
    monitor_control: str = ""  # the Monitor's --control (evctl monitor)
    engine: Proc | None = None
    monitor: Proc | None = None
    engines: list[Proc] = field(default_factory=list)  # every run, for the delivered energy


class Network:
    """
    One Central on C{db} (SQLite in the test's directory by default) with an
    HTTP port for ``evctl`` (or none), plus the CPs and drivers a test adds,
    and the EV_Registry (same database) their Monitors register at, started
    with the first CP.
    """

    def __init__(self, procs: ProcGroup, db: str | None = None, http: bool = True):
        self.procs = procs
        self.dir: Path = procs.workdir
        self.cp_port, self.drivers_port = free_port(), free_port()
        self.http_port = free_port() if http else None
        self.db = db or f"sqlite:{self.dir / 'central.db'}"
        self.central_args = [
            "--listen", f"tcp:{self.cp_port}:interface=127.0.0.1",
            "--drivers", f"tcp:{self.drivers_port}:interface=127.0.0.1",
            "--http", f"tcp:{self.http_port}:interface=127.0.0.1" if http else "none",
            "--db", self.db,
        ]
        self.central: Proc | None = None
        self.centrals: list[Proc] = []
        self.registry = Registry(procs, self.db, self.dir / "registry")
        self.cps: dict[str, ChargingPoint] = {}
        self.drivers: dict[str, list[Proc]] = {}
        self.arrivals: dict[str, list[tuple[float, str]]] = {}  # driver run -> (when, line)

    @property
    def drivers_endpoint(self) -> str:
        return f"tcp:host=127.0.0.1:port={self.drivers_port}"

    # -- processes -----------------------------------------------------------

    def start_central(self, ready: float = 30.0) -> Proc:
        self.central = self.procs.twistd(f"central-{len(self.centrals) + 1}", "evcentral", *self.central_args)
        self.centrals.append(self.central)
        self.central.wait_for("EV_Central ready", timeout=ready)
        return self.central

    def add_cp(self, cp_id: str, price: float = 0.30, power_kw: float = 36, wait: bool = True) -> ChargingPoint:
        """
        An Engine (--auto-plug) and its Monitor, the CP enrolled at the
        Registry first (the Monitor registers it with the token); with C{wait},
        until Central authenticates the CP.
        """
        if self.registry.proc is None:
            self.registry.start()
        self.registry.enroll(cp_id)
        engine_port, control_port, monitor_control = free_port(), free_port(), free_port()
        cp = ChargingPoint(
            cp_id,
            engine_args=[
                "--listen", f"tcp:{engine_port}:interface=127.0.0.1",
                "--control", f"tcp:{control_port}:interface=127.0.0.1",
                "--state-dir", str(self.dir / f"engine-{cp_id}"),
                "--power-kw", f"{power_kw:g}", "--auto-plug",
            ],
            monitor_args=[
                "--cp-id", cp_id, "--location", f"Street {cp_id}", "--price", f"{price:.2f}",
                "--engine", f"tcp:host=127.0.0.1:port={engine_port}",
                "--central", f"tcp:host=127.0.0.1:port={self.cp_port}",
                "--control", f"tcp:{monitor_control}:interface=127.0.0.1",
                *self.registry.monitor_args(cp_id, self.dir / f"credentials-{cp_id}.json"),
            ],
            control=f"tcp:host=127.0.0.1:port={control_port}",
            monitor_control=f"tcp:host=127.0.0.1:port={monitor_control}",
        )
        self.cps[cp_id] = cp
        mark = self.central.mark() if self.central else 0
        self.start_engine(cp_id)
        wait_for_port(engine_port)
        self.start_monitor(cp_id)
        if wait:
            self.central.wait_for(rf"CP {cp_id} authenticated", timeout=30, start=mark)
        return cp

    def start_engine(self, cp_id: str) -> Proc:
        """Start (or start again: same arguments, same state dir) the CP's Engine."""
        cp = self.cps[cp_id]
        cp.engine = self.procs.twistd(f"engine-{cp_id}-{len(cp.engines) + 1}", "evengine", *cp.engine_args)
        cp.engines.append(cp.engine)
        return cp.engine

    def start_monitor(self, cp_id: str) -> Proc:
        """Start (or start again, with the same arguments) the CP's Monitor."""
        cp = self.cps[cp_id]
        cp.monitor = self.procs.twistd(f"monitor-{cp_id}", "evmonitor", *cp.monitor_args)
        return cp.monitor

    def driver(self, driver_id: str, lines: str, wait: float = 0.2) -> Proc:
        """
        ``evdriver --json`` on a requests file with C{lines}; a later call with
        the same id is a restart (same file).  Each line's arrival time is kept
        in C{arrivals}.
        """
        requests = self.dir / f"requests-{driver_id}.txt"
        if not requests.exists():
            requests.write_text(lines)
        runs = self.drivers.setdefault(driver_id, [])
        proc = self.procs.command(
            f"driver-{driver_id}-{len(runs) + 1}", "evdriver", "--driver-id", driver_id,
            "--requests-file", str(requests), *self.driver_way(),
            "--wait", f"{wait:g}", "--json", on_line=self._stamp,
        )
        runs.append(proc)
        return proc

    def driver_way(self) -> list[str]:
        """How a driver reaches Central: its drivers endpoint (through Kafka in tests.kafkanet)."""
        return ["--central", self.drivers_endpoint]

    def _stamp(self, proc: Proc, line: str) -> None:
        self.arrivals.setdefault(proc.name, []).append((time.monotonic(), line))

    def finished(self, proc: Proc, timeout: float) -> int:
        """Wait for C{proc} to exit; on timeout, fail with what every process printed."""
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{proc.name} still running after {timeout} s\n{self.dump()}") from None

    def dump(self, tail: int = 2500) -> str:
        return "\n".join(f"===== {p.name} {p.argv[2:]}\n{p.output()[-tail:]}" for p in self.procs.procs)

    # -- asking Central --------------------------------------------------------

    def evctl(self, *args: str, timeout: float = 10):
        """``evctl ARGS --json --http …``: Central's JSON answer."""
        out = subprocess.run(
            [str(BIN / "evctl"), *args, "--json", "--http", f"http://127.0.0.1:{self.http_port}"],
            capture_output=True, text=True, timeout=timeout,
        )
        assert out.returncode == 0, out.stdout + out.stderr
        return json.loads(out.stdout)

    def cp_state(self, cp_id: str) -> str:
        return {cp["id"]: cp["state"] for cp in self.evctl("cps")}[cp_id]

    def sessions(self) -> list[dict]:
        """Every row of Central's ``sessions`` table, read directly from the database."""
        url = parse_db_url(self.db)
        if url.backend == "sqlite":
            with sqlite3.connect(url.path) as conn:
                conn.row_factory = sqlite3.Row
                return [dict(r) for r in conn.execute("SELECT * FROM sessions")]
        return mysql(url, "SELECT * FROM sessions")

    def engine_delivered(self) -> dict[str, float]:
        """session id -> kWh, as each Engine logged the charge's end (over all its runs)."""
        delivered = {}
        for cp in self.cps.values():
            for proc in cp.engines:
                for line in proc.output().splitlines():
                    match = _ENGINE_END.search(line)
                    if match:
                        delivered[match.group(1)] = float(match.group(3))
        return delivered

    # -- the ledger -------------------------------------------------------------

    def check_ledger(self, charges: int) -> list[dict]:
        """
        What every crash scenario ends with: C{charges} sessions in Central's
        database, each once, closed, its ticket delivered; each driver printed
        each of its tickets once, with the database's kWh; no session holds
        more kWh than its Engine delivered.  Returns the session rows.
        """
        rows = self.sessions()
        ids = [r["id"] for r in rows]
        assert len(ids) == len(set(ids)) == charges, rows
        by_id = {r["id"]: r for r in rows}
        tickets = {}
        for driver_id, runs in self.drivers.items():
            for ticket in events(runs, "ticket"):
                assert ticket["session"] not in tickets, f"ticket {ticket['session']} shown twice"
                tickets[ticket["session"]] = ticket
        assert sorted(tickets) == sorted(ids), (tickets, rows)
        delivered = self.engine_delivered()
        for sid, row in by_id.items():
            ticket = tickets[sid]
            assert row["status"] == "closed", row
            assert row["ticket_delivered_at"] is not None, row
            assert row["driver_id"] == ticket["driver"] and row["cp_id"] == ticket["cp"], (row, ticket)
            assert abs(row["kwh"] - ticket["kwh"]) <= 0.0006, (row, ticket)
            if sid in delivered:  # the Engine logs 3 decimals
                assert row["kwh"] <= delivered[sid] + 0.0006, (row, delivered[sid])
        return rows


def driver_signed_up(db: str, directory: Path, driver_id: str) -> list[str]:
    """
    Driver C{driver_id} signed up in Central's database C{db} (sqlite:PATH) as
    EV_Registry writes it, its credentials in a 0600 file: evdriver's options.
    """
    from evnet.registry.credentials import DriverCredentials, save_driver_credentials

    secret = security.new_secret()
    url = parse_db_url(db)
    with sqlite3.connect(url.path) as conn:
        for statement in STATEMENTS:
            conn.execute(statement)
        conn.execute("REPLACE INTO driver_accounts (driver_id, verifier, status, created_at, updated_at) "
                     "VALUES (?, ?, 'registered', ?, ?)",
                     (driver_id, security.make_verifier(secret).to_text(), time.time(), time.time()))
    path = Path(directory) / f"credentials-{driver_id}.json"
    save_driver_credentials(str(path), DriverCredentials(driver_id, secret))
    return ["--credentials-file", str(path)]
