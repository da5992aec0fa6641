"""
The audit trail (docs/audit.md): the pure chain and its verification
(hypothesis), the writer's bounds under a flood and a failing database,
the rows Central writes (on fakes), and on both real backends: rows written
by Central's and the Registry's stores verify with ``evctl audit verify``,
and editing, deleting or reordering any row by hand is found and named.
"""

from __future__ import annotations

import json
import os
import sqlite3
import stat

import pytest
import pytest_twisted
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import defer
from twisted.internet.task import Clock

from evnet.central import audit, audittrail
from evnet.central.audittrail import AuditTrail
from evnet.central.store import Store, parse_db_url
from evnet.ctl import cli
from evnet.registry.store import RegistryStore
from tests.fakes import FAST_COST, MemoryStore
from tests.network import within
from tests.test_store import BACKENDS, database_url

KEY = bytes(range(32))

# -- the pure chain ---------------------------------------------------------------------

texts = st.text(max_size=20)
entries = st.builds(
    lambda t, kind, who, host, port, action, outcome, detail: audit.entry(
        t, kind, who, host, action, outcome, detail, port=port),
    st.floats(min_value=0, max_value=4e9, allow_nan=False),
    st.sampled_from(audit.ACTOR_KINDS), texts, texts, st.one_of(st.none(), st.integers(0, 65535)),
    st.sampled_from(["cp.login", "key.revoke", "link.malformed", "registry.alta"]), st.sampled_from(audit.OUTCOMES),
    st.dictionaries(st.text(max_size=8), st.one_of(texts, st.integers(), st.floats(), st.booleans(), st.none()),
                    max_size=4),
)


def chain_rows(es, chain="central", key=KEY):
    return [{"id": 100 + x.seq, **x.as_row()} for x in audit.link(key, chain, None, es)]


@settings(max_examples=60, deadline=None)
@given(st.lists(entries, min_size=1, max_size=12))
def test_an_untouched_chain_verifies_and_its_rows_round_trip_as_stored(es):
    rows = chain_rows(es)
    (report,) = audit.verify(KEY, rows)
    assert report.intact and report.rows == len(es) and report.head == (len(es), rows[-1]["hash"])
    assert [audit.entry_of(r) for r in rows] == es  # what is stored is what was hashed
    assert audit.verify(bytes(32), rows)[0].problem.what == audit.EDITED  # another key: nothing verifies


FIELDS = ["at", "actor_kind", "actor_id", "address", "port", "action", "outcome", "detail", "prev", "hash"]


@settings(max_examples=80, deadline=None)
@given(st.lists(entries, min_size=2, max_size=10), st.data())
def test_editing_any_field_of_any_row_is_found_at_that_row(es, data):
    rows = chain_rows(es)
    i = data.draw(st.integers(0, len(rows) - 1))
    name = data.draw(st.sampled_from(FIELDS))
    old = rows[i][name]
    rows[i][name] = (old + 1) if name == "port" and old is not None else 7 if name == "port" else f"{old}x"
    problem = audit.verify(KEY, rows)[0].problem
    assert problem is not None and problem.seq == i + 1 and problem.row_id == 101 + i
    assert problem.what in (audit.EDITED, audit.DELETED)  # a changed prev looks like its predecessor went


@settings(max_examples=60, deadline=None)
@given(st.lists(entries, min_size=3, max_size=10), st.data())
def test_deleting_any_row_but_the_last_is_found_at_the_row_after_it(es, data):
    rows = chain_rows(es)
    i = data.draw(st.integers(0, len(rows) - 2))
    renumber = data.draw(st.booleans())
    del rows[i]
    if renumber:  # the seqs closed up by hand too
        for j, row in enumerate(rows):
            row["seq"] = j + 1
    problem = audit.verify(KEY, rows)[0].problem
    # Named: the row that came after the deleted one (its seq, renumbered or not, and its id).
    assert problem is not None and problem.what == audit.DELETED and problem.seq == i + (1 if renumber else 2)
    assert problem.row_id == 102 + i


@settings(max_examples=60, deadline=None)
@given(st.lists(entries, min_size=2, max_size=10), st.data())
def test_swapping_the_seqs_of_two_rows_is_found_at_the_first(es, data):
    rows = chain_rows(es)
    i = data.draw(st.integers(0, len(rows) - 2))
    j = data.draw(st.integers(i + 1, len(rows) - 1))
    rows[i]["seq"], rows[j]["seq"] = rows[j]["seq"], rows[i]["seq"]
    problem = audit.verify(KEY, rows)[0].problem
    assert problem is not None and problem.what == audit.REORDERED and problem.seq == i + 1
    assert "follows the row now at seq" in problem.text


def test_chains_verify_apart_and_a_duplicate_seq_is_named():
    rows = chain_rows([audit.entry(1, "cp", "CP1", "10.0.0.1:5", "cp.login", "ok")] * 3)
    rows += chain_rows([audit.entry(2, "operator", "loopback", "127.0.0.1:9", "registry.alta", "ok")], "registry")
    reports = audit.verify(KEY, rows)
    assert [(r.chain, r.rows, r.intact) for r in reports] == [("central", 3, True), ("registry", 1, True)]
    rows.append(dict(rows[1], id=999))
    assert "appears twice" in audit.verify(KEY, rows)[0].problem.text


def test_a_row_holds_utc_microseconds_the_address_split_and_bounded_canonical_detail():
    e = audit.entry(1700000000.25, "cp", "CP1", "10.0.0.5:4321", "cp.login", "refused",
                    {"reason": "x" * 5000, "b": 1, "a": [1.5, None]})
    assert e.at == "2023-11-14T22:13:20.250000Z" and (e.address, e.port) == ("10.0.0.5", 4321)
    assert e.detail.startswith('{"a":[1.5,null],"b":1,"reason":"xxx') and len(e.detail) < 600
    assert audit.entry(0, "system", "", "::1:80", "a", "ok").address == "::1"
    assert (audit.entry(0, "system", "", "::1", "a", "ok", port=None).address) == "::1"
    for bad in ({"actor_kind": "alien"}, {"outcome": "maybe"}, {"action": ""}):
        args = {"actor_kind": "cp", "outcome": "ok", "action": "a", **bad}
        with pytest.raises(audit.AuditError):
            audit.entry(0, args["actor_kind"], "x", "", args["action"], args["outcome"])


@pytest.mark.parametrize("text, canonical", [
    ("1700000000.25", "2023-11-14T22:13:20.250000Z"),
    ("2023-11-14T22:13:20Z", "2023-11-14T22:13:20.000000Z"),
    ("2023-11-14T22:13:20.5", "2023-11-14T22:13:20.500000Z"),
])
def test_filter_times_read_as_the_rows_write_them(text, canonical):
    assert audit.parse_time(text) == canonical


@pytest.mark.parametrize("text", ["yesterday", "2023-13-01T00:00:00Z", "-5", "nan"])
def test_a_bad_filter_time_is_a_clear_error(text):
    with pytest.raises(audit.AuditError, match="time"):
        audit.parse_time(text)


# -- the key file ---------------------------------------------------------------------------


def test_the_key_file_is_made_0600_once_and_read_again(tmp_path):
    path = str(tmp_path / "k")
    key = audittrail.load_key(path)
    assert len(key) == 32 and stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert audittrail.load_key(path) == key == audittrail.load_key(path, create=False)
    os.chmod(path, 0o644)
    with pytest.raises(audittrail.KeyError_, match="chmod 600"):
        audittrail.load_key(path)
    with pytest.raises(audittrail.KeyError_, match="no audit key file"):
        audittrail.load_key(str(tmp_path / "missing"), create=False)
    assert audittrail.default_key_path(parse_db_url("sqlite:/x/c.db")) == "/x/c.db.audit-key"


# -- the writer ------------------------------------------------------------------------------


def trail(store=None, **kw):
    clock = Clock()
    store = store or MemoryStore(now=clock.seconds)
    return AuditTrail(store, clock, clock.seconds, KEY, **kw), store, clock


def all_rows(store):
    return [audittrail.shown(r) for r in store.audit_chains()]


def test_rows_are_written_in_batches_and_chain_verifies():
    t, store, clock = trail()
    store.hold = True
    for i in range(5):
        t.record("cp", f"CP{i}", f"10.0.0.{i}:100", "cp.login", "ok", key_id="k")
    store.release()  # the first row went alone; the four behind it share one append
    store.release()
    rows = all_rows(store)
    assert [r["actor_id"] for r in rows] == ["CP0", "CP1", "CP2", "CP3", "CP4"] and t.written == 5
    assert audit.verify(KEY, store.audit_chains())[0].intact


def test_a_flood_is_counted_not_written_then_one_row_says_how_many():
    t, store, clock = trail(max_per_minute=10)
    for i in range(1000):
        t.record("cp", "CP1", "10.0.0.9:1", "link.refused", "refused", n=i)
    assert len(all_rows(store)) == 10
    clock.advance(61)
    t.sweep()
    rows = all_rows(store)
    assert rows[-1]["action"] == "audit.suppressed"
    assert rows[-1]["detail"]["rows_not_written"] == 990 and rows[-1]["detail"]["by_action"] == {"link.refused": 990}
    assert len(rows) == 11 and audit.verify(KEY, store.audit_chains())[0].intact


def test_a_failing_database_loses_rows_with_a_row_saying_so_and_no_retry_loop():
    class Failing(MemoryStore):
        fail = True
        calls = 0

        def append_audit(self, chain, key, entries):
            self.calls += 1
            if self.fail:
                return defer.fail(RuntimeError("disk full"))
            return super().append_audit(chain, key, entries)

    t, store, clock = trail(Failing())
    t.record("system", "central", None, "system.start", "ok")
    t.record("system", "central", None, "x", "ok")
    assert store.calls == 2  # one try per new row, none in between: no loop against a database that is down
    done = t.flush()
    assert done.called and store.calls == 2
    store.fail = False
    t.record("cp", "CP1", "10.0.0.1:2", "cp.login", "ok")
    rows = all_rows(store)
    assert [(r["action"], r["detail"].get("rows_not_written")) for r in rows] == [("audit.lost", 2), ("cp.login", None)]


def test_a_bad_call_is_a_log_line_not_an_exception():
    t, store, clock = trail()
    t.record("alien", "x", None, "a", "ok")
    assert all_rows(store) == []


# -- what Central writes (on fakes) -----------------------------------------------------------


def central_rows(world, action=None):
    return [r for r in all_rows(world.store) if action is None or r["action"] == action]


def test_a_wrong_secret_is_a_refused_login_row_with_the_address_then_a_lockout():
    from tests.test_central import World

    world = World(login_failures=2)
    world.register("CP1")
    for _ in range(3):  # two wrong secrets lock the address out; the third gets no CHALLENGE
        intruder = world.monitor("CP1", secret="wrong", host="10.1.2.3")
        with pytest.raises(AssertionError, match="got no"):
            intruder.login()
    good = world.cp("CP1")
    rows = central_rows(world)
    refused = [r for r in rows if r["action"] == "cp.login" and r["outcome"] == "refused"]
    assert refused[0]["actor_id"] == "CP1" and refused[0]["detail"]["reason"] == "wrong secret"
    assert refused[0]["address"] == "10.1.2.3" and refused[0]["port"] is not None
    lockout = [r for r in rows if r["action"] == "login.lockout"]
    assert len(lockout) == 1 and lockout[0]["address"] == "10.1.2.3"
    assert [r["address"] for r in rows if r["action"] == "login.locked"] == ["10.1.2.3"]
    ok = [r for r in rows if r["action"] == "cp.login" and r["outcome"] == "ok"]
    assert ok[0]["detail"]["key_id"] == good.key_id and ok[0]["address"] == "127.0.0.1"
    assert all(r.intact for r in audit.verify(world.central.audit.key, world.store.audit_chains()))


def test_malformed_frames_are_one_row_per_link_a_minute_with_how_many():
    from tests.test_central import World
    from evnet.protocols.framing import encode_frame

    world = World()
    peer = world.monitor("CP1", host="10.3.3.3")
    for _ in range(50):
        bad = bytearray(encode_frame(b"AUTH#CP1#x"))
        bad[-1] ^= 0x55
        peer.link.dataReceived(bytes(bad))
    world.clock.advance(61)
    world.central.trust.sweep()
    rows = [r for r in central_rows(world) if r["action"] == "link.malformed"]
    assert len(rows) == 2 and rows[0]["address"] == "10.3.3.3" and "bad LRC" in rows[0]["detail"]["reason"]
    assert rows[1]["detail"]["repeats"] == 49 and rows[1]["detail"]["window_seconds"] == 60


def test_operator_commands_are_rows_with_the_token_identity_and_address():
    from tests.test_web import Web, bearer

    web = Web(token="tok")
    web.world.cp()
    assert web.post("/api/v1/cps/CP1/stop", headers=bearer("tok"), host="10.9.9.9").status == 200
    assert web.post("/api/v1/cps/CP1/resume", headers=bearer("wrong"), host="10.9.9.8").status == 401
    assert web.post("/api/v1/cps/stop", headers=bearer("tok")).status == 200
    rows = all_rows(web.world.store)
    stop = next(r for r in rows if r["action"] == "cp.stop")
    assert (stop["actor_kind"], stop["actor_id"], stop["address"], stop["outcome"]) == (
        "operator", "admin-token", "10.9.9.9", "ok")
    assert stop["detail"]["cp"] == "CP1" and stop["port"] == 50000
    refused = next(r for r in rows if r["action"] == "api.refused")
    assert (refused["address"], refused["detail"]["status"]) == ("10.9.9.8", 401)
    assert any(r["action"] == "cps.stop-all" for r in rows)


def test_a_refused_command_has_its_own_row_after_a_refused_read_from_the_same_address():
    from tests.test_web import Web

    web = Web(token="tok")
    web.world.cp()
    assert web.get("/api/v1/audit", host="10.9.9.7").status == 401
    assert web.get("/api/v1/audit", host="10.9.9.7").status == 401  # the same kind again: summarized
    assert web.post("/api/v1/cps/CP1/revoke", host="10.9.9.7").status == 401
    refused = [r for r in all_rows(web.world.store) if r["action"] == "api.refused"]
    assert [(r["detail"]["method"], r["detail"]["path"]) for r in refused] == [
        ("GET", "/api/v1/audit"), ("POST", "/api/v1/cps/CP1/revoke")]


def test_the_audit_api_filters_pages_and_is_guarded():
    from tests.test_web import Web, bearer

    web = Web(token="tok")
    trail_ = web.central.audit
    for i in range(5):
        trail_.record("cp", f"CP{i}", f"10.0.0.{i}:7", "cp.login", "refused" if i % 2 else "ok")
    assert web.get("/api/v1/audit").status == 401
    page = web.get("/api/v1/audit?limit=2&outcome=refused&actor=cp", headers=bearer("tok")).json()
    assert [r["actor_id"] for r in page["rows"]] == ["CP3", "CP1"] and page["next"] == page["rows"][-1]["id"]
    first = web.get("/api/v1/audit?limit=2&actor=cp", headers=bearer("tok")).json()
    second = web.get(f"/api/v1/audit?limit=2&actor=cp&before={first['next']}", headers=bearer("tok")).json()
    last = web.get(f"/api/v1/audit?limit=2&actor=cp&before={second['next']}", headers=bearer("tok")).json()
    assert [r["actor_id"] for r in first["rows"] + second["rows"] + last["rows"]] == ["CP4", "CP3", "CP2", "CP1", "CP0"]
    assert last["next"] is None
    assert web.get("/api/v1/audit?actor=cp:CP2&address=10.0.0.2", headers=bearer("tok")).json()["rows"][0]["seq"] == 4  # (after system.start, CP0, CP1)
    assert web.get("/api/v1/audit?since=yesterday", headers=bearer("tok")).status == 400
    assert web.get("/api/v1/audit?actor=alien", headers=bearer("tok")).status == 400
    assert web.get("/api/v1/audit?action=cp.*", headers=bearer("tok")).json()["rows"]
    # What the OpenAPI document forbids is refused (schemathesis checks both ways against a live Central).
    for bad in ("outcome=AAA", "chain=other", "address=", "before=-1", "before=99999999999999999999"):
        assert web.get(f"/api/v1/audit?{bad}", headers=bearer("tok")).status == 400, bad


# -- both real backends: written by the stores, checked by evctl --------------------------------


def evctl(capsys, *args):
    with pytest.raises(SystemExit) as exit_:
        cli.main(list(args))
    out = capsys.readouterr()
    return exit_.value.code, out.out, out.err


@defer.inlineCallbacks
def write_trail(url):
    """Rows on both chains, as Central's and the Registry's processes write them."""
    from twisted.internet import reactor

    store = Store(parse_db_url(url))
    try:
        yield within(RegistryStore(store, KEY).start(), 30, "schema")
        t = AuditTrail(store, reactor, lambda: 1700000000.0, KEY)
        for i in range(6):
            t.record("cp", "CP1", f"127.0.0.1:{5000 + i}", "cp.login", "refused" if i % 2 else "ok", reason=f"r{i}")
        yield within(t.flush(), 30, "audit flush")
        registry = RegistryStore(store, KEY)
        yield within(registry.register("CP1", "Centro", 0.3, lambda: "v", 1700000001.0, "loopback",
                                       actor=("operator", "loopback", "127.0.0.1", 4444)), 30, "alta")
        yield within(registry.deregister("CP1", 1700000002.0, "loopback",
                                         actor=("operator", "loopback", "127.0.0.1", 4445)), 30, "baja")
    finally:
        store.close()


def tamper(url, sql):
    if url.startswith("sqlite:"):
        with sqlite3.connect(url[len("sqlite:"):]) as db:
            for statement in sql.split(";"):
                db.execute(statement)
    else:
        import MySQLdb

        u = parse_db_url(url)
        conn = MySQLdb.connect(host=u.host, port=u.port, user=u.user, passwd=u.password, db=u.database)
        try:
            for statement in sql.split(";"):
                conn.cursor().execute(statement)
            conn.commit()
        finally:
            conn.close()


TAMPERING = [
    ("UPDATE audit SET detail = '{\"reason\":\"nothing\"}' WHERE chain = 'central' AND seq = 3", 3, "edited"),
    ("UPDATE audit SET address = '10.6.6.6' WHERE chain = 'central' AND seq = 2", 2, "edited"),
    ("DELETE FROM audit WHERE chain = 'central' AND seq = 4", 5, "deleted"),
    ("UPDATE audit SET seq = -1 WHERE chain = 'central' AND seq = 2;"
     "UPDATE audit SET seq = 2 WHERE chain = 'central' AND seq = 5;"
     "UPDATE audit SET seq = 5 WHERE chain = 'central' AND seq = -1", 2, "reordered"),
    ("UPDATE audit SET actor_id = 'someone' WHERE chain = 'registry' AND seq = 1", 1, "edited"),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest_twisted.inlineCallbacks
def test_evctl_audit_verifies_an_untouched_trail_and_reads_it(backend, tmp_path, capsys):
    with database_url(backend, tmp_path) as url:
        yield write_trail(url)
        key_file = tmp_path / "key"
        key_file.write_text(KEY.hex())
        key_file.chmod(0o600)
        code, out, err = evctl(capsys, "audit", "verify", "--db", url, "--audit-key-file", str(key_file))
        assert code == 0, err
        assert "chain central: 6 rows, intact" in out and "chain registry: 2 rows, intact" in out
        code, out, _ = evctl(capsys, "audit", "tail", "--db", url, "-n", "3")
        lines = out.splitlines()
        assert code == 0 and len(lines) == 3 and "registry.baja ok" in lines[-1] and "from 127.0.0.1:4445" in lines[-1]
        code, out, _ = evctl(capsys, "audit", "export", "--jsonl", "--db", url, "--outcome", "refused")
        rows = [json.loads(x) for x in out.splitlines()]
        assert code == 0 and [r["detail"]["reason"] for r in rows] == ["r1", "r3", "r5"]
        assert rows[0]["at"] == "2023-11-14T22:13:20.000000Z" and rows[0]["port"] == 5001
        code, _, err = evctl(capsys, "audit", "verify", "--db", url, "--audit-key-file", str(tmp_path / "none"))
        assert code == 2 and "no audit key file" in err and "Traceback" not in err


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("sql, seq, what", TAMPERING)
@pytest_twisted.inlineCallbacks
def test_editing_deleting_or_reordering_a_row_by_hand_is_found_by_evctl_audit_verify(backend, sql, seq, what,
                                                                                     tmp_path, capsys):
    with database_url(backend, tmp_path) as url:
        yield write_trail(url)
        key_file = tmp_path / "key"
        key_file.write_text(KEY.hex())
        key_file.chmod(0o600)
        tamper(url, sql)
        code, out, err = evctl(capsys, "audit", "verify", "--db", url, "--audit-key-file", str(key_file))
        assert code == 1 and "BROKEN" in out
        assert f"row seq {seq} " in err and f": {what}: " in err, err
