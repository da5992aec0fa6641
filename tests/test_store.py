"""
The store's contract, and the real store on real databases.

The contract tests run on every store Central can be given: the in-memory
fake the unit tests use (tests.fakes.MemoryStore), the real Store on SQLite,
and the real Store on the MariaDB that scripts/services.sh starts
(EVNET_TEST_MYSQL).  A unit test on the fake then says what the real one
would.  The tests after them are about the real Store only (schema,
migration, group commit).

Every Deferred waited for here is bounded (tests.network.within): a store
that never answers fails the test, saying which call it was.
"""

import contextlib
import os
import time

import pytest
import pytest_twisted
from twisted.enterprise import adbapi
from twisted.internet import defer

from evnet.central.store import SESSION_COLUMNS, Store, StoreError, parse_db_url
from tests.fakes import MemoryStore
from tests.network import fresh_mysql_database, within

MYSQL_URL = os.environ.get("EVNET_TEST_MYSQL")
WAIT = 15.0  # seconds any one store call may take (MariaDB on a busy machine)

BACKENDS = ["sqlite", pytest.param("mysql", marks=pytest.mark.mysql)]
CP_COLUMNS = {"id", "location", "price", "state", "stopped", "registered_at", "last_seen", "registration"}
REGISTRATION_KEYS = {"cp_id", "location", "price", "verifier", "status", "registered_at", "updated_at"}
SESSION_KEYS = {c.strip() for c in SESSION_COLUMNS.split(",")}
EVENT_COLUMNS = {"id", "at", "kind", "subject", "detail"}


def test_parse_db_urls():
    assert parse_db_url("sqlite:evcentral.db").path == "evcentral.db"
    url = parse_db_url("mysql://ev:p%40ss@db.example:3307/evnet")
    assert (url.user, url.password, url.host, url.port, url.database) == ("ev", "p@ss", "db.example", 3307, "evnet")
    assert url.display() == "mysql://ev@db.example:3307/evnet"
    for bad in ("postgres://x/y", "sqlite:", "mysql://host-only"):
        with pytest.raises(ValueError):
            parse_db_url(bad)


def test_sqlite_in_a_missing_directory_is_a_clear_error(tmp_path):
    with pytest.raises(StoreError, match="does not exist"):
        Store(parse_db_url(f"sqlite:{tmp_path}/nope/x.db"))


@contextlib.contextmanager
def database_url(backend, tmp_path):
    """A URL of an empty database: SQLite in C{tmp_path}, or a scratch database on the test MariaDB."""
    if backend == "sqlite":
        yield f"sqlite:{tmp_path}/evcentral.db"
        return
    if not MYSQL_URL:
        pytest.skip("EVNET_TEST_MYSQL is not set (scripts/services.sh up sets it)")
    with fresh_mysql_database(MYSQL_URL) as url:
        yield url


@pytest.fixture(params=BACKENDS)
def db_url(request, tmp_path):
    with database_url(request.param, tmp_path) as url:
        yield url


class Bounded:
    """
    A store whose every call that returns a Deferred is bounded by WAIT seconds
    (a hanging call fails the test with its name); other attributes pass through.
    """

    def __init__(self, store):
        self.store = store

    def __getattr__(self, name):
        attr = getattr(self.store, name)
        if not callable(attr):
            return attr

        def call(*args, **kwargs):
            result = attr(*args, **kwargs)
            if isinstance(result, defer.Deferred):
                result = within(result, WAIT, f"store.{name}({', '.join(map(repr, args))})")
            return result

        return call


@pytest.fixture(params=["memory", *BACKENDS])
def store(request, tmp_path):
    """Each store Central can be given, not started yet, with every wait bounded."""
    if request.param == "memory":
        yield Bounded(MemoryStore())
        return
    with database_url(request.param, tmp_path) as url:
        real = Store(parse_db_url(url))
        try:
            yield Bounded(real)
        finally:
            real.close()


def session(sid, started_at, driver="D1", origin="driver", cp="CP1", **extra):
    return {"id": sid, "cp_id": cp, "driver_id": driver, "origin": origin, "price": 0.3, "target_kwh": 0.0,
            "started_at": started_at, **extra}


def drivers(store):
    """The drivers table, as rows (it has no reader in the store's interface)."""
    if isinstance(store.store, MemoryStore):
        return defer.succeed([dict(row) for _, row in sorted(store.drivers.items())])

    def txn(cursor):
        cursor.execute("SELECT id, first_seen, last_seen FROM drivers ORDER BY id")
        return [dict(zip(("id", "first_seen", "last_seen"), row)) for row in cursor.fetchall()]

    return store.run(txn)


# -- the contract: memory, SQLite, MariaDB ------------------------------------------


@pytest_twisted.inlineCallbacks
def test_cps_are_rows_of_plain_values_in_id_order(store):
    yield store.start()
    assert (yield store.load_cps()) == []
    before = time.time()
    yield store.upsert_cp("CP2", "Playa", 1, "DESCONECTADO")  # an int price is stored as a float
    yield store.upsert_cp("CP1", "Centro", 0.3, "DESCONECTADO")
    after = time.time()
    rows = yield store.load_cps()
    assert [r["id"] for r in rows] == ["CP1", "CP2"]
    assert all(set(r) == CP_COLUMNS for r in rows), rows
    cp2 = rows[1]
    assert (cp2["location"], cp2["price"], cp2["state"], cp2["stopped"]) == ("Playa", 1.0, "DESCONECTADO", 0)
    assert cp2["registration"] is None  # not registered at EV_Registry
    assert type(cp2["price"]) is float and type(cp2["stopped"]) is int
    assert before <= cp2["registered_at"] == cp2["last_seen"] <= after

    yield store.upsert_cp("CP2", "Playa Norte", 0.35, "ACTIVADO")
    yield store.set_cp_state("CP2", "PARADO", True)
    yield store.set_cp_state("CP2", "PARADO", True)  # unchanged values are fine
    yield store.set_cp_state("CP9", "PARADO", True)  # an unknown CP: nothing happens
    yield store.upsert_cp("CP2", "Playa Norte", 0.35, "ACTIVADO")  # a new registration keeps "stopped"
    rows = yield store.load_cps()
    assert [r["id"] for r in rows] == ["CP1", "CP2"]
    again = rows[1]
    assert (again["location"], again["price"], again["state"], again["stopped"]) == (
        "Playa Norte", 0.35, "ACTIVADO", 1)
    assert type(again["stopped"]) is int
    assert again["registered_at"] == cp2["registered_at"] and again["last_seen"] >= cp2["last_seen"]


def registry_writes(store):
    """EV_Registry's alta and baja on C{store}: RegistryStore on the real one, its stand-ins on the fake."""
    fake = store.store
    if isinstance(fake, MemoryStore):
        return (lambda cp_id, location, price, verifier: defer.succeed(fake.register_cp(cp_id, location, price, verifier)),
                lambda cp_id: defer.succeed(fake.deregister_cp(cp_id)))
    from evnet.registry.store import RegistryStore

    registry = RegistryStore(fake)
    return (lambda cp_id, location, price, verifier: registry.register(
                cp_id, location, price, lambda: verifier, time.time(), "a test"),
            lambda cp_id: registry.deregister(cp_id, time.time(), "a test"))


@pytest_twisted.inlineCallbacks
def test_a_registration_is_read_as_the_registry_wrote_it_and_shown_with_its_cp(store):
    yield store.start()  # creates EV_Registry's tables too: Central alone works
    register, deregister = registry_writes(store)
    assert (yield store.registration("CP1")) is None
    before = time.time()
    yield register("CP1", "Centro", 0.35, "scram-scrypt$16$AA$BB$CC")
    row = yield store.registration("CP1")
    assert set(row) == REGISTRATION_KEYS, row
    assert (row["cp_id"], row["location"], row["price"], row["verifier"], row["status"]) == (
        "CP1", "Centro", 0.35, "scram-scrypt$16$AA$BB$CC", "registered")
    assert type(row["price"]) is float and before <= row["registered_at"] <= row["updated_at"] <= time.time()
    yield store.upsert_cp("CP1", "Centro", 0.35, "DESCONECTADO")
    yield store.upsert_cp("CP2", "Playa", 0.3, "DESCONECTADO")
    assert [(r["id"], r["registration"]) for r in (yield store.load_cps())] == [("CP1", "registered"), ("CP2", None)]
    yield deregister("CP1")
    row = yield store.registration("CP1")
    assert (row["status"], row["verifier"]) == ("deregistered", None)
    assert [r["registration"] for r in (yield store.load_cps())] == ["deregistered", None]
    row["status"] = "changed"  # a copy
    assert (yield store.registration("CP1"))["status"] == "deregistered"


WEATHER_KEYS = {"location", "city", "temperature", "observed_at", "raised_at", "updated_at"}


@pytest_twisted.inlineCallbacks
def test_weather_alerts_by_exact_location_raised_updated_and_cleared(store):
    yield store.start()
    assert (yield store.load_weather_alerts()) == []
    yield store.save_weather_alert("Playa", "Alicante", -1, 1000.0, 2000.0, 2000.0)  # an int °C is a float
    yield store.save_weather_alert("Alicante Centro", "Alicante", -1.5, 1000.0, 2000.0, 2000.0)
    yield store.save_weather_alert("alicante centro", "alicante", -3.0, 1001.0, 2001.0, 2001.0)  # another name
    rows = yield store.load_weather_alerts()
    assert [r["location"] for r in rows] == ["Alicante Centro", "Playa", "alicante centro"]
    assert all(set(r) == WEATHER_KEYS for r in rows), rows
    assert type(rows[1]["temperature"]) is float and rows[1]["temperature"] == -1.0
    # A second alert on a location updates it; it was raised when first raised.
    yield store.save_weather_alert("Alicante Centro", "Alicante", -4.25, 1010.0, 2010.0, 2010.0)
    rows = yield store.load_weather_alerts()
    assert len(rows) == 3
    assert rows[0] == {"location": "Alicante Centro", "city": "Alicante", "temperature": -4.25,
                       "observed_at": 1010.0, "raised_at": 2000.0, "updated_at": 2010.0}
    assert (yield store.delete_weather_alerts(["Alicante Centro", "Nowhere"])) == 1
    assert (yield store.delete_weather_alerts(["Alicante Centro"])) == 0
    assert [r["location"] for r in (yield store.load_weather_alerts())] == ["Playa", "alicante centro"]
    assert (yield store.delete_weather_alerts(["Playa", "alicante centro"])) == 2
    assert (yield store.load_weather_alerts()) == []


@pytest_twisted.inlineCallbacks
def test_a_driver_is_recorded_once_and_its_last_visit_kept(store):
    yield store.start()
    before = time.time()
    yield store.touch_driver("D1")
    [first] = yield drivers(store)
    yield store.touch_driver("D1")
    yield store.touch_driver("D2")
    rows = yield drivers(store)
    assert [r["id"] for r in rows] == ["D1", "D2"]
    assert before <= first["first_seen"] == first["last_seen"] <= time.time()
    assert rows[0]["first_seen"] == first["first_seen"] and rows[0]["last_seen"] >= first["last_seen"]


@pytest_twisted.inlineCallbacks
def test_session_lifecycle_and_tickets(store):
    yield store.start()
    yield store.open_session(session("S1", 100.0, extra_key="not a column"))
    row = yield store.get_session("S1")
    assert set(row) == SESSION_KEYS, row
    assert row == {
        "id": "S1", "cp_id": "CP1", "driver_id": "D1", "origin": "driver", "price": 0.3, "target_kwh": 0.0,
        "started_at": 100.0, "ended_at": None, "kwh": 0.0, "euros": 0.0, "seconds": 0, "last_seq": 0,
        "status": "open", "end_reason": None, "ticket_delivered_at": None,
    }
    assert [type(row[k]) for k in ("kwh", "euros", "seconds", "last_seq")] == [float, float, int, int]
    yield store.save_progress([(0.5, 0.15, 30, 30, "S1"), (9.0, 9.0, 9, 9, "nope")])  # an unknown id is ignored
    [row] = yield store.open_sessions()
    assert (row["id"], row["kwh"], row["euros"], row["seconds"], row["last_seq"]) == ("S1", 0.5, 0.15, 30, 30)
    closed = yield store.close_session("S1", 200.0, 0.6, 0.18, 36, 36, "target")
    assert closed is True
    again = yield store.close_session("S1", 300.0, 9.9, 9.9, 99, 99, "target")
    assert again is False  # a repeated STOP changes nothing
    assert (yield store.close_session("nope", 300.0, 1, 1, 1, 1, "target")) is False
    yield store.save_progress([(7.0, 2.1, 99, 99, "S1")])  # nor does late progress
    row = yield store.get_session("S1")
    assert (row["status"], row["ended_at"], row["kwh"], row["euros"], row["seconds"], row["last_seq"],
            row["end_reason"]) == ("closed", 200.0, 0.6, 0.18, 36, 36, "target")
    assert (yield store.open_sessions()) == []
    [pending] = yield store.undelivered_tickets("D1")
    assert pending == row
    assert (yield store.undelivered_tickets("D2")) == []
    before = time.time()
    yield store.mark_ticket_delivered("S1")
    delivered_at = (yield store.get_session("S1"))["ticket_delivered_at"]
    assert before <= delivered_at <= time.time()
    yield store.mark_ticket_delivered("S1")  # the first delivery is the one kept
    assert (yield store.get_session("S1"))["ticket_delivered_at"] == delivered_at
    yield store.mark_ticket_delivered("nope")  # an unknown id: nothing happens
    assert (yield store.undelivered_tickets("D1")) == []
    assert (yield store.get_session("nope")) is None


@pytest_twisted.inlineCallbacks
def test_a_session_id_is_opened_once(store):
    yield store.start()
    yield store.open_session(session("S1", 100.0))
    with pytest.raises(Exception, match="(?i)duplicate|unique"):
        yield store.open_session(session("S1", 500.0, driver="D2"))
    row = yield store.get_session("S1")
    assert (row["driver_id"], row["started_at"]) == ("D1", 100.0)


@pytest_twisted.inlineCallbacks
def test_session_lists_are_ordered_and_limited(store):
    yield store.start()
    for sid, started in (("S2", 200.0), ("S1", 100.0), ("S3", 300.0), ("S4", 400.0)):
        yield store.open_session(session(sid, started))
    yield store.open_session(session("L1", 50.0, driver="LOCAL", origin="cp"))
    assert [r["id"] for r in (yield store.open_sessions())] == ["L1", "S1", "S2", "S3", "S4"]
    # closed in another order than opened; S4 stays open
    for sid, ended in (("S3", 310.0), ("S1", 320.0), ("S2", 330.0), ("L1", 340.0)):
        assert (yield store.close_session(sid, ended, 0.1, 0.03, 1, 1, "target"))
    assert [r["id"] for r in (yield store.open_sessions())] == ["S4"]
    # only the driver's own closed charges, in the order they ended
    assert [r["id"] for r in (yield store.undelivered_tickets("D1"))] == ["S3", "S1", "S2"]
    assert (yield store.undelivered_tickets("LOCAL")) == []  # a charge started at the CP has no driver to tell
    assert [r["id"] for r in (yield store.recent_sessions())] == ["S4", "S3", "S2", "S1", "L1"]
    assert [r["id"] for r in (yield store.recent_sessions(2))] == ["S4", "S3"]
    assert all(set(r) == SESSION_KEYS for r in (yield store.recent_sessions(1)))


@pytest_twisted.inlineCallbacks
def test_session_pages_are_newest_first_filtered_and_follow_their_cursor(store):
    yield store.start()
    for sid, started, cp, driver in (("S1", 100.0, "CP1", "D1"), ("S2", 200.0, "CP2", "D1"), ("S3", 200.0, "CP1", "D2"),
                                     ("S4", 300.0, "CP1", "D1")):
        yield store.open_session(session(sid, started, driver=driver, cp=cp))
    page = yield store.sessions_page({}, 2)
    assert [r["id"] for r in page] == ["S4", "S3"] and all(set(r) == SESSION_KEYS for r in page)
    # Two sessions of the same second: the cursor (time, id) keeps one order and loses neither.
    assert [r["id"] for r in (yield store.sessions_page({}, 2, (200.0, "S3")))] == ["S2", "S1"]
    assert [r["id"] for r in (yield store.sessions_page({"cp": "CP1"}, 10))] == ["S4", "S3", "S1"]
    assert [r["id"] for r in (yield store.sessions_page({"driver": "D1", "cp": "CP1"}, 10))] == ["S4", "S1"]
    assert [r["id"] for r in (yield store.sessions_page({"since": 200.0, "until": 300.0}, 10))] == ["S3", "S2"]
    assert (yield store.sessions_page({"cp": "NOPE"}, 10)) == []


@pytest_twisted.inlineCallbacks
def test_the_closed_charges_since_a_time_are_summed_but_the_ones_excluded(store):
    yield store.start()
    assert (yield store.closed_since(0.0, [])) == {"energy_kwh": 0.0, "revenue_eur": 0.0, "sessions": 0}
    for sid, ended, kwh in (("S1", 90.0, 5.0), ("S2", 110.0, 1.5), ("S3", 120.0, 2.0)):
        yield store.open_session(session(sid, 50.0))
        yield store.close_session(sid, ended, kwh, kwh * 0.3, 60, 1, "target")
    yield store.open_session(session("S4", 60.0))  # open: not counted
    totals = yield store.closed_since(100.0, ["S3"])
    assert totals["sessions"] == 1 and totals["energy_kwh"] == 1.5 and abs(totals["revenue_eur"] - 0.45) < 1e-9
    assert (yield store.closed_since(100.0, []))["sessions"] == 2


@pytest_twisted.inlineCallbacks
def test_driver_pages_are_newest_first_without_verifiers(store):
    yield store.start()
    fake = store.store
    for driver_id, created in (("D1", 100.0), ("D3", 200.0), ("D2", 200.0), ("D4", 300.0)):
        if isinstance(fake, MemoryStore):
            fake.sign_up_driver(driver_id, "scram-scrypt$16$AA$BB$CC")
            fake.driver_accounts_rows[driver_id]["created_at"] = created
        else:
            from evnet.registry.store import RegistryStore

            yield RegistryStore(fake).add_driver(driver_id, lambda: "scram-scrypt$16$AA$BB$CC", created, "a test")
    page = yield store.drivers_page(3)
    assert [r["driver_id"] for r in page] == ["D4", "D3", "D2"]
    assert all(set(r) == {"driver_id", "status", "created_at", "updated_at"} for r in page)
    assert [r["driver_id"] for r in (yield store.drivers_page(3, (200.0, "D2")))] == ["D1"]


@pytest_twisted.inlineCallbacks
def test_rows_are_copies(store):
    yield store.start()
    yield store.upsert_cp("CP1", "Centro", 0.3, "ACTIVADO")
    yield store.open_session(session("S1", 100.0))
    for rows in ((yield store.load_cps()), (yield store.open_sessions()), (yield store.recent_sessions())):
        rows[0]["id"] = "changed"
    (yield store.get_session("S1"))["status"] = "changed"
    assert [r["id"] for r in (yield store.load_cps())] == ["CP1"]
    assert [(r["id"], r["status"]) for r in (yield store.recent_sessions())] == [("S1", "open")]


@pytest_twisted.inlineCallbacks
def test_events_newest_first_limited_and_truncated(store):
    yield store.start()
    assert (yield store.recent_events()) == []
    before = time.time()
    for i in range(3):
        yield store.add_event("fault", "CP1", f"fault {i} — ñ")
    yield store.add_event("refused", "x" * 100, "y" * 2000, at=1234.5)
    rows = yield store.recent_events(3)
    assert all(set(r) == EVENT_COLUMNS for r in rows), rows
    assert [r["detail"] for r in rows[1:]] == ["fault 2 — ñ", "fault 1 — ñ"]
    assert (rows[0]["kind"], rows[0]["subject"], rows[0]["detail"], rows[0]["at"]) == (
        "refused", "x" * 64, "y" * 1024, 1234.5)  # subjects and details are cut to their columns
    assert before <= rows[1]["at"] <= time.time()
    everything = yield store.recent_events()
    assert len(everything) == 4 and [r["id"] for r in everything] == sorted((r["id"] for r in everything), reverse=True)


@pytest_twisted.inlineCallbacks
def test_a_read_asked_after_a_write_sees_it(store):
    yield store.start()
    writes = [store.upsert_cp("CP1", "Centro", 0.3, "ACTIVADO"), store.set_cp_state("CP1", "PARADO", True),
              store.add_event("stop", "CP1", "stopped")]
    cps, events = store.load_cps(), store.recent_events()  # asked before any write has answered
    [cp] = yield cps
    assert (cp["state"], cp["stopped"]) == ("PARADO", 1)
    assert [e["detail"] for e in (yield events)] == ["stopped"]
    yield defer.gatherResults(writes)


# -- the in-memory store's own knobs ---------------------------------------------------


def test_memory_store_held_calls_answer_in_order_once_released():
    store = MemoryStore()
    store.hold = True
    answered = []
    store.upsert_cp("CP1", "Centro", 0.3, "ACTIVADO").addCallback(lambda _: answered.append("upsert"))
    store.load_cps().addCallback(lambda rows: answered.append([r["id"] for r in rows]))
    assert answered == [] and store.cps == {}
    store.hold = False
    # A read asked while a write waits waits with it, as it does in the real store's queue.
    store.load_cps().addCallback(lambda rows: answered.append(("late", [r["id"] for r in rows])))
    assert answered == []
    store.release()
    assert answered == ["upsert", ["CP1"], ("late", ["CP1"])]
    assert store.events == [] and store.held == []


def test_memory_store_failures_are_failed_deferreds():
    store = MemoryStore()
    store.open_session(session("S1", 100.0))
    failures = []
    store.open_session(session("S1", 100.0)).addErrback(failures.append)
    assert len(failures) == 1
    store.hold = True
    held = store.open_session(session("S1", 100.0))
    store.release()  # a failing held call fails its Deferred; release itself does not raise
    held.addErrback(failures.append)
    assert len(failures) == 2


# -- the real store only -------------------------------------------------------------


@pytest.fixture
def real_store(db_url):
    """The real Store on SQLite and on MariaDB, not started yet, every wait bounded."""
    real = Store(parse_db_url(db_url))
    try:
        yield Bounded(real)
    finally:
        real.close()


@pytest_twisted.inlineCallbacks
def test_schema_is_created_and_reopened(db_url):
    store = Bounded(Store(parse_db_url(db_url)))
    try:
        yield store.start()
        yield store.upsert_cp("CP1", "Centro", 0.3, "DESCONECTADO")
    finally:
        store.close()
    again = Bounded(Store(parse_db_url(db_url)))
    try:
        yield again.start()  # migrating an existing schema is a no-op
        rows = yield again.load_cps()
        assert [(r["id"], r["location"], r["price"], r["stopped"]) for r in rows] == [("CP1", "Centro", 0.3, 0)]
    finally:
        again.close()


@pytest_twisted.inlineCallbacks
def test_writes_asked_together_share_commits_and_one_bad_write_loses_nothing(real_store):
    transactions = []
    runInteraction = real_store.pool.runInteraction

    def counting(interaction, *args):
        transactions.append(interaction)
        return runInteraction(interaction, *args)

    real_store.pool.runInteraction = counting
    yield real_store.start()
    transactions.clear()
    yield defer.gatherResults([real_store.add_event("test", "CP1", f"event {i}") for i in range(40)])
    # Writes asked for while a transaction runs share the next one: at most
    # the first runs alone, then the rest go together.
    assert 1 <= len(transactions) <= 2

    def bad(cursor):
        cursor.execute("INSERT INTO no_such_table VALUES (1)")

    writes = [real_store.add_event("test", "CP1", f"event {i}") for i in range(40, 45)]
    broken = real_store.run(bad)
    writes += [real_store.add_event("test", "CP1", f"event {i}") for i in range(45, 50)]
    results = yield defer.DeferredList(writes + [broken], consumeErrors=True)
    assert all(ok for ok, _ in results[:-1])
    assert results[-1][0] is False
    rows = yield real_store.recent_events(100)
    assert [r["detail"] for r in reversed(rows)] == [f"event {i}" for i in range(50)]


@pytest_twisted.inlineCallbacks
def test_sqlite_keeps_a_write_ahead_log(tmp_path):
    real = Store(parse_db_url(f"sqlite:{tmp_path}/evcentral.db"))
    store = Bounded(real)
    try:
        yield store.start()

        def pragmas(cursor):
            return [cursor.execute(f"PRAGMA {name}").fetchone()[0] for name in ("journal_mode", "synchronous")]

        assert (yield store.run(pragmas)) == ["wal", 1]  # 1: synchronous=NORMAL
    finally:
        real.close()


@pytest_twisted.inlineCallbacks
def test_a_lost_connection_is_retried_once(real_store):
    runInteraction = real_store.pool.runInteraction
    losses = []

    def losing(interaction, *args):
        if losses:
            losses.pop()
            return defer.fail(adbapi.ConnectionLost("the server went away"))
        return runInteraction(interaction, *args)

    real_store.pool.runInteraction = losing
    yield real_store.start()
    losses[:] = [1]
    yield real_store.add_event("test", "CP1", "written on the second try")
    assert [r["detail"] for r in (yield real_store.recent_events())] == ["written on the second try"]
    losses[:] = [1, 1]
    with pytest.raises(adbapi.ConnectionLost):  # once, not forever
        yield real_store.add_event("test", "CP1", "lost twice")
    assert [r["detail"] for r in (yield real_store.recent_events())] == ["written on the second try"]
