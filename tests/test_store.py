"""
The store against real databases: SQLite always, and the real MariaDB that
scripts/services.sh starts (EVNET_TEST_MYSQL).  One module, parametrized by
backend.
"""

import os

import pytest
import pytest_twisted

from evnet.central.store import Store, StoreError, parse_db_url
from tests.network import fresh_mysql_database

MYSQL_URL = os.environ.get("EVNET_TEST_MYSQL")


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


@pytest.fixture(params=["sqlite", pytest.param("mysql", marks=pytest.mark.mysql)])
def db_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:{tmp_path}/evcentral.db"
        return
    if not MYSQL_URL:
        pytest.skip("EVNET_TEST_MYSQL is not set (scripts/services.sh up sets it)")
    with fresh_mysql_database(MYSQL_URL) as url:
        yield url


@pytest_twisted.inlineCallbacks
def test_schema_is_created_and_reopened(db_url):
    store = Store(parse_db_url(db_url))
    try:
        yield store.start()
        yield store.upsert_cp("CP1", "Centro", 0.3, "DESCONECTADO")
    finally:
        store.close()
    again = Store(parse_db_url(db_url))
    try:
        yield again.start()  # migrating an existing schema is a no-op
        rows = yield again.load_cps()
        assert [(r["id"], r["location"], r["price"], r["stopped"]) for r in rows] == [("CP1", "Centro", 0.3, 0)]
    finally:
        again.close()


@pytest_twisted.inlineCallbacks
def test_cp_state_and_driver(db_url):
    store = Store(parse_db_url(db_url))
    try:
        yield store.start()
        yield store.upsert_cp("CP1", "Centro", 0.3, "DESCONECTADO")
        yield store.upsert_cp("CP1", "Centro Norte", 0.35, "ACTIVADO")
        yield store.set_cp_state("CP1", "PARADO", True)
        yield store.set_cp_state("CP1", "PARADO", True)  # unchanged values are fine
        [row] = yield store.load_cps()
        assert (row["location"], row["price"], row["state"], row["stopped"]) == ("Centro Norte", 0.35, "PARADO", 1)
        yield store.touch_driver("D1")
        yield store.touch_driver("D1")
    finally:
        store.close()


@pytest_twisted.inlineCallbacks
def test_session_lifecycle_and_tickets(db_url):
    store = Store(parse_db_url(db_url))
    try:
        yield store.start()
        yield store.open_session({"id": "S1", "cp_id": "CP1", "driver_id": "D1", "origin": "driver",
                                  "price": 0.3, "target_kwh": 0.0, "started_at": 100.0})
        yield store.save_progress([(0.5, 0.15, 30, 30, "S1")])
        [row] = yield store.open_sessions()
        assert (row["id"], row["kwh"], row["last_seq"]) == ("S1", 0.5, 30)
        closed = yield store.close_session("S1", 200.0, 0.6, 0.18, 36, 36, "target")
        assert closed is True
        again = yield store.close_session("S1", 300.0, 9.9, 9.9, 99, 99, "target")
        assert again is False  # a repeated STOP changes nothing
        yield store.save_progress([(7.0, 2.1, 99, 99, "S1")])  # nor does late progress
        row = yield store.get_session("S1")
        assert (row["status"], row["kwh"], row["euros"], row["seconds"], row["end_reason"]) == (
            "closed", 0.6, 0.18, 36, "target")
        assert (yield store.open_sessions()) == []
        [pending] = yield store.undelivered_tickets("D1")
        assert pending["id"] == "S1"
        yield store.mark_ticket_delivered("S1")
        assert (yield store.undelivered_tickets("D1")) == []
        assert (yield store.get_session("nope")) is None
    finally:
        store.close()


@pytest_twisted.inlineCallbacks
def test_events(db_url):
    store = Store(parse_db_url(db_url))
    try:
        yield store.start()
        for i in range(3):
            yield store.add_event("fault", "CP1", f"fault {i} — ñ")
        rows = yield store.recent_events(2)
        assert [r["detail"] for r in rows] == ["fault 2 — ñ", "fault 1 — ñ"]
    finally:
        store.close()


@pytest_twisted.inlineCallbacks
def test_writes_asked_together_share_commits_and_one_bad_write_loses_nothing(db_url):
    from twisted.internet import defer

    store = Store(parse_db_url(db_url))
    transactions = []
    real = store.pool.runInteraction

    def counting(interaction, *args):
        transactions.append(interaction)
        return real(interaction, *args)

    store.pool.runInteraction = counting
    try:
        yield store.start()
        transactions.clear()
        yield defer.gatherResults([store.add_event("test", "CP1", f"event {i}") for i in range(40)])
        # Writes asked for while a transaction runs share the next one: at most
        # the first runs alone, then the rest go together.
        assert 1 <= len(transactions) <= 2

        def bad(cursor):
            cursor.execute("INSERT INTO no_such_table VALUES (1)")

        writes = [store.add_event("test", "CP1", f"event {i}") for i in range(40, 45)]
        broken = store.run(bad)
        writes += [store.add_event("test", "CP1", f"event {i}") for i in range(45, 50)]
        results = yield defer.DeferredList(writes + [broken], consumeErrors=True)
        assert all(ok for ok, _ in results[:-1])
        assert results[-1][0] is False
        rows = yield store.recent_events(100)
        assert [r["detail"] for r in reversed(rows)] == [f"event {i}" for i in range(50)]
    finally:
        store.close()
