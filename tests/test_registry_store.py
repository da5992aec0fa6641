"""
EV_Registry's store against real databases: SQLite always, and the real
MariaDB of scripts/services.sh (EVNET_TEST_MYSQL), through Central's Store
and its adbapi pool.
"""

import pytest_twisted
from twisted.internet import defer

from evnet.central.store import Store, parse_db_url
from evnet.protocols import security
from evnet.registry import schema
from evnet.registry.store import RegistryStore, token_hash
from tests.test_store import db_url  # noqa: F401  (the sqlite / mysql fixture)

NOW = 1_800_000_000.0


def opened(url: str) -> RegistryStore:
    return RegistryStore(Store(parse_db_url(url)))


@pytest_twisted.inlineCallbacks
def test_tables_are_created_in_either_order_with_central_and_reopened(db_url):  # noqa: F811
    central = Store(parse_db_url(db_url))
    try:
        yield central.start()
        yield central.run(schema.create_tables)  # what Central may run at its start
        yield central.add_event("cp", "CP9", "Central wrote first")
    finally:
        central.close()
    for _ in range(2):  # created if missing, then a no-op
        store = opened(db_url)
        try:
            yield store.start()
            assert (yield store.registrations()) == []
        finally:
            store.close()


@pytest_twisted.inlineCallbacks
def test_register_enroll_deregister_on_a_real_database(db_url):  # noqa: F811
    store = opened(db_url)
    try:
        yield store.start()
        secret = security.new_secret()
        verifier = security.make_verifier(secret).to_text()
        yield store.issue_enrollment("CP01", token_hash("tok"), NOW, NOW + 60, "test")
        done = yield store.register("CP01", "Calle Mayor 1", 0.35, lambda: verifier, NOW + 1, "test",
                                    token_hash("tok"))
        assert done.refused is None and done.created and not done.reset
        assert done.row == {"cp_id": "CP01", "location": "Calle Mayor 1", "price": 0.35, "status": "registered",
                            "registered_at": NOW + 1, "updated_at": NOW + 1}
        row = yield store.registration("CP01")
        assert row["verifier"] == verifier and row["status"] == "registered"
        assert (yield store.registration("CP02")) is None

        # The token is used up; a concurrent pair of calls with a fresh one: exactly one registers.
        reused = yield store.register("CP01", "X", 1.0, lambda: verifier, NOW + 2, "test", token_hash("tok"))
        assert "already used" in reused.refused
        yield store.issue_enrollment("CP01", token_hash("tok2"), NOW, NOW + 60, "test")
        pair = yield defer.gatherResults([
            store.register("CP01", "Y", 0.5, lambda: verifier, NOW + 3, "test", token_hash("tok2"))
            for _ in range(2)
        ])
        assert sorted(r.refused is None for r in pair) == [False, True]
        assert [r.reset for r in pair if r.refused is None] == [True]

        gone = yield store.deregister("CP01", NOW + 4, "test")
        assert gone["status"] == "deregistered"
        row = yield store.registration("CP01")
        assert row["verifier"] is None and row["status"] == "deregistered"
        assert (yield store.deregister("CP09", NOW + 4, "test")) is None
        yield store.refused("CP01", "PUT refused (401): test; from 10.0.0.5:1234", NOW + 5)

        events = yield store.store.recent_events(20)
        kinds = [(e["kind"], e["subject"]) for e in reversed(events)]
        assert kinds == [("registry", "CP01")] * 5 + [("registry-refused", "CP01")]
        assert "credentials reset" in events[2]["detail"] and "baja" in events[1]["detail"]
        assert secret not in repr(events)
    finally:
        store.close()
