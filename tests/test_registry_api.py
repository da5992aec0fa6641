"""
EV_Registry's API on fakes: its Site over StringTransport, Central's Store
run synchronously on an in-memory SQLite connection (the real SQL, no
threads), a task.Clock; and the treq client over treq's StubTreq.
"""

from __future__ import annotations

import json
import os
import sqlite3
import stat

import pytest
from twisted.internet import defer, task
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.logger import globalLogPublisher, formatEvent
from treq.testing import StubTreq

from evnet.central.store import DbUrl, Store
from evnet.protocols import security
from evnet.protocols.vocabulary import MAX_PRICE
from evnet.registry.api import OPENAPI, ROUTES, RegistryApi, make_site
from evnet.registry.client import RegistryClient, RegistryRefused
from evnet.registry.credentials import load_credentials
from evnet.registry.store import RegistryStore, token_hash
from tests.test_web import Response

ADMIN = "admin-t0ken"
NOW = 1_800_000_000.0
REMOTE = "10.0.0.5"


class SyncStore(Store):
    """Central's Store, each interaction run at once on an in-memory SQLite connection."""

    def __init__(self) -> None:
        super().__init__(DbUrl("sqlite", path=":memory:"), pool=object())
        self.connection = sqlite3.connect(":memory:")

    def run(self, interaction, *args):
        cursor = self.connection.cursor()
        try:
            result = interaction(cursor, *args)
        except Exception:
            self.connection.rollback()
            return defer.fail()
        self.connection.commit()
        return defer.succeed(result)

    def close(self) -> None:
        self.connection.close()

    def rows(self, sql: str, *params) -> list[dict]:
        cursor = self.connection.execute(sql, params)
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row)) for row in cursor.fetchall()]


class Registry:
    """The Registry's site on in-memory connections, from loopback or from REMOTE."""

    def __init__(self, admin_token=None):
        self.clock = task.Clock()
        self.clock.advance(NOW)
        self.db = SyncStore()
        self.store = RegistryStore(self.db)
        self.store.start()
        self.api = RegistryApi(self.store, self.clock, admin_token)
        self.site = make_site(self.api, self.clock)

    def request(self, method, path, body=None, token=None, host="127.0.0.1", headers=None) -> Response:
        peer = IPv4Address("TCP", host, 50000)
        channel = self.site.buildProtocol(peer)
        transport = StringTransport(peerAddress=peer, hostAddress=IPv4Address("TCP", "127.0.0.1", 7443))
        channel.makeConnection(transport)
        data = b"" if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode("utf-8"))
        lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1:7443", f"Content-Length: {len(data)}"]
        if body is not None:
            lines.append("Content-Type: application/json")
        if token is not None:
            lines.append(f"Authorization: Bearer {token}")
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        channel.dataReceived(("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + data)
        return Response(transport.value())

    def enroll(self, cp_id="CP01", ttl=None, **kw) -> str:
        body = {"cp_id": cp_id} if ttl is None else {"cp_id": cp_id, "ttl_seconds": ttl}
        answer = self.request("POST", "/api/v1/enrollments", body, **kw)
        assert answer.status == 201, answer.body
        return answer.json()["token"]

    def put(self, cp_id="CP01", location="Calle Mayor 1", price=0.35, **kw) -> Response:
        return self.request("PUT", f"/api/v1/cps/{cp_id}", {"location": location, "price": price}, **kw)

    def events(self, kind=None) -> list[dict]:
        rows = self.db.rows("SELECT kind, subject, detail FROM events ORDER BY id")
        return [r for r in rows if kind is None or r["kind"] == kind]

    def everything_stored(self) -> str:
        """Every value of every Registry and events row, as one text."""
        text = []
        for table in ("registrations", "enrollments", "events"):
            text += [repr(row) for row in self.db.rows(f"SELECT * FROM {table}")]
        return "\n".join(text)


@pytest.fixture
def logged():
    """Every log line formatted while the test runs."""
    lines: list[str] = []

    def observe(event):
        lines.append(formatEvent(event) or "")
        if "log_failure" in event:
            lines.append(event["log_failure"].getTraceback())

    globalLogPublisher.addObserver(observe)
    yield lines
    globalLogPublisher.removeObserver(observe)


def proves(verifier_text: str, secret: str) -> bool:
    verifier = security.Verifier.from_text(verifier_text)
    return security.make_verifier(secret, salt=verifier.salt, n=verifier.n) == verifier


# -- alta with an enrollment token -----------------------------------------------------------


def test_an_enrollment_token_registers_its_cp_once_and_only_a_verifier_is_kept(logged):
    reg = Registry(ADMIN)
    answer = reg.request("POST", "/api/v1/enrollments", {"cp_id": "CP01", "ttl_seconds": 3600}, token=ADMIN)
    assert answer.status == 201
    issued = answer.json()
    assert issued["cp_id"] == "CP01" and issued["expires_at"] == NOW + 3600
    token = issued["token"]
    assert len(security.unb64(token, "token")) == 32
    [row] = reg.db.rows("SELECT * FROM enrollments")
    assert row["token_hash"] == token_hash(token) and row["used_at"] is None

    answer = reg.put("CP01", "Calle Mayor 1", 0.35, token=token)
    assert answer.status == 201
    body = answer.json()
    assert set(body) == {"cp_id", "location", "price", "secret", "registered_at", "updated_at", "status"}
    assert (body["cp_id"], body["location"], body["price"], body["status"]) == ("CP01", "Calle Mayor 1", 0.35,
                                                                                "registered")
    assert answer.headers["cache-control"] == "no-store"
    secret = body["secret"]
    stored = reg.db.rows("SELECT * FROM registrations")[0]
    assert proves(stored["verifier"], secret)
    assert reg.db.rows("SELECT used_at FROM enrollments")[0]["used_at"] == NOW

    # Used once: the second time it is refused, with the reason in the audit row, not in the answer.
    again = reg.put("CP01", "Calle Mayor 1", 0.35, token=token, host=REMOTE)
    assert again.status == 401 and "not valid for CP01" in again.json()["error"]
    refusal = reg.events("registry-refused")[-1]
    assert refusal["subject"] == "CP01"
    assert "already used" in refusal["detail"] and f"{REMOTE}:50000" in refusal["detail"]
    assert proves(reg.db.rows("SELECT verifier FROM registrations")[0]["verifier"], secret)  # unchanged

    kinds = [(e["kind"], e["subject"]) for e in reg.events()]
    assert kinds[:2] == [("registry", "CP01"), ("registry", "CP01")]
    assert "enrollment token issued" in reg.events()[0]["detail"]
    assert "registered (alta)" in reg.events()[1]["detail"] and "enrollment token" in reg.events()[1]["detail"]
    for text in (reg.everything_stored(), "\n".join(logged)):
        assert token not in text and secret not in text


def test_an_enrollment_token_opens_only_its_own_cp_and_only_until_it_expires():
    reg = Registry(ADMIN)
    token = reg.enroll("CP01", ttl=60, token=ADMIN)
    other = reg.put("CP02", token=token)
    assert other.status == 401
    assert "issued for CP01" in reg.events("registry-refused")[-1]["detail"]
    reg.clock.advance(60)
    late = reg.put("CP01", token=token)
    assert late.status == 401 and late.headers["www-authenticate"].startswith("Bearer")
    assert "expired" in reg.events("registry-refused")[-1]["detail"]
    unknown = reg.put("CP01", token="not-a-token")
    assert unknown.status == 401
    assert "unknown enrollment token" in reg.events("registry-refused")[-1]["detail"]
    assert reg.db.rows("SELECT * FROM registrations") == []


def test_an_enrollment_token_does_not_open_the_admin_calls():
    reg = Registry(ADMIN)
    token = reg.enroll("CP01", token=ADMIN)
    for method, path, body in (("DELETE", "/api/v1/cps/CP01", None), ("GET", "/api/v1/cps", None),
                               ("POST", "/api/v1/enrollments", {"cp_id": "CP01"})):
        answer = reg.request(method, path, body, token=token, host=REMOTE)
        assert answer.status == 401, (method, path)
        assert "wrong admin token" in reg.events("registry-refused")[-1]["detail"]


# -- re-registration and baja --------------------------------------------------------------


def test_registering_again_resets_the_credentials_and_is_recorded():
    reg = Registry(ADMIN)
    first = reg.put("CP01", "Calle Mayor 1", 0.35, token=ADMIN).json()
    reg.clock.advance(10)
    answer = reg.put("CP01", "Plaza Nueva 2", 0.4, token=ADMIN)
    assert answer.status == 200
    second = answer.json()
    assert second["secret"] != first["secret"]
    assert (second["location"], second["price"]) == ("Plaza Nueva 2", 0.4)
    assert second["registered_at"] == NOW and second["updated_at"] == NOW + 10
    verifier = reg.db.rows("SELECT verifier FROM registrations")[0]["verifier"]
    assert proves(verifier, second["secret"]) and not proves(verifier, first["secret"])
    assert "credentials reset" in reg.events("registry")[-1]["detail"]


def test_deregistering_removes_the_verifier_and_expires_unused_tokens():
    reg = Registry(ADMIN)
    reg.put("CP01", token=ADMIN)
    token = reg.enroll("CP01", token=ADMIN)
    reg.clock.advance(5)
    answer = reg.request("DELETE", "/api/v1/cps/CP01", token=ADMIN)
    assert answer.status == 200 and answer.json() == {"cp_id": "CP01", "status": "deregistered"}
    stored = reg.db.rows("SELECT * FROM registrations")[0]
    assert stored["verifier"] is None and stored["status"] == "deregistered" and stored["updated_at"] == NOW + 5
    assert "deregistered (baja)" in reg.events("registry")[-1]["detail"]
    assert reg.put("CP01", token=token).status == 401  # the token issued before the baja no longer works
    shown = reg.request("GET", "/api/v1/cps/CP01", token=ADMIN).json()
    assert shown["status"] == "deregistered"
    # A new alta after the baja: a new registration date.
    reg.clock.advance(5)
    again = reg.put("CP01", token=ADMIN)
    assert again.status == 200 and again.json()["registered_at"] == NOW + 10
    assert reg.request("DELETE", "/api/v1/cps/CP09", token=ADMIN).status == 404


def test_reading_shows_registrations_without_their_verifier():
    reg = Registry(ADMIN)
    reg.put("CP02", "B", 0.2, token=ADMIN)
    reg.put("CP01", "A", 0.1, token=ADMIN)
    listing = reg.request("GET", "/api/v1/cps")  # loopback may read without the token
    assert listing.status == 200
    cps = listing.json()["cps"]
    assert [c["cp_id"] for c in cps] == ["CP01", "CP02"]
    for row in cps + [reg.request("GET", "/api/v1/cps/CP01").json()]:
        assert set(row) == {"cp_id", "location", "price", "status", "registered_at", "updated_at"}
    assert "scram" not in listing.body.decode()
    assert reg.request("GET", "/api/v1/cps/CP09").status == 404


def test_registration_for_central_carries_the_verifier():
    reg = Registry()
    secret = reg.put("CP01").json()["secret"]
    got = []
    reg.store.registration("CP01").addCallback(got.append)
    reg.store.registration("CP09").addCallback(got.append)
    row, missing = got
    assert (row["location"], row["price"], row["status"]) == ("Calle Mayor 1", 0.35, "registered")
    assert proves(row["verifier"], secret) and missing is None


# -- who may call ---------------------------------------------------------------------------


def test_without_an_admin_token_file_admin_calls_come_only_from_loopback():
    reg = Registry()
    assert reg.put("CP01").status == 201
    for method, path, body in (("PUT", "/api/v1/cps/CP02", {"location": "x", "price": 1}),
                               ("DELETE", "/api/v1/cps/CP01", None), ("GET", "/api/v1/cps", None),
                               ("POST", "/api/v1/enrollments", {"cp_id": "CP03"})):
        answer = reg.request(method, path, body, host=REMOTE)
        assert answer.status == 403, (method, path)
        assert f"{REMOTE}:50000" in reg.events("registry-refused")[-1]["detail"]
    assert reg.request("GET", "/api/v1/cps", host=REMOTE, token="anything").status == 401
    # A page of another site, through a browser on this host, cannot change anything.
    answer = reg.put("CP01", headers={"Origin": "http://evil.example"})
    assert answer.status == 403 and "origin" in answer.json()["error"]


def test_with_an_admin_token_every_admin_call_needs_it():
    reg = Registry(ADMIN)
    assert reg.put("CP01").status == 401  # loopback is not enough to write
    assert reg.put("CP01", token="wrong").status == 401
    assert reg.request("GET", "/api/v1/cps", host=REMOTE).status == 401
    assert reg.request("GET", "/api/v1/cps", host=REMOTE, token=ADMIN).status == 200
    assert reg.put("CP01", token=ADMIN, host=REMOTE).status == 201
    answer = reg.request("GET", "/api/v1/cps", headers={"Authorization": "Basic abc"}, host=REMOTE)
    assert answer.status == 401 and "Bearer" in answer.json()["error"]
    assert len(reg.events("registry-refused")) == 4


# -- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize("body, field", [
    ({"location": "", "price": 0.3}, "location"),
    ({"location": "   ", "price": 0.3}, "location"),
    ({"location": "A#B", "price": 0.3}, "location"),
    ({"location": "x" * 256, "price": 0.3}, "location"),
    ({"location": 7, "price": 0.3}, "location"),
    ({"location": "A", "price": -0.01}, "price"),
    ({"location": "A", "price": MAX_PRICE + 1}, "price"),
    ({"location": "A", "price": "0.3"}, "price"),
    ({"location": "A", "price": True}, "price"),
    ({"location": "A"}, "price"),
    ({"price": 0.3}, "location"),
    ({"location": "A", "price": 0.3, "secret": "mine"}, "secret"),
])
def test_a_bad_registration_is_refused_naming_the_field(body, field):
    reg = Registry()
    answer = reg.request("PUT", "/api/v1/cps/CP01", body)
    assert answer.status == 400
    assert answer.json()["error"].startswith(f"{field}:")
    assert reg.events("registry-refused")[-1]["subject"] == "CP01"
    assert reg.db.rows("SELECT * FROM registrations") == []


def test_bad_ids_bodies_and_ttls_are_refused():
    reg = Registry()
    assert reg.request("PUT", "/api/v1/cps/CP%2301", {"location": "A", "price": 1}).json()["error"].startswith(
        "cp_id:")
    assert reg.request("GET", "/api/v1/cps/" + "x" * 33).status == 400
    assert reg.request("PUT", "/api/v1/cps/CP01", b"{not json").json()["error"] == "the body is not valid JSON"
    assert reg.request("PUT", "/api/v1/cps/CP01", [1, 2]).status == 400
    no_type = reg.request("PUT", "/api/v1/cps/CP01", headers={"Content-Type": "text/plain"}, body=None)
    assert no_type.status == 415
    big = reg.request("PUT", "/api/v1/cps/CP01", {"location": "x" * 20000, "price": 1})
    assert big.status == 413 and reg.events("registry-refused")[-1]["subject"] == "CP01"
    for body, field in (({"cp_id": "CP01", "ttl_seconds": 10}, "ttl_seconds"),
                        ({"cp_id": "CP01", "ttl_seconds": 1.5}, "ttl_seconds"),
                        ({"ttl_seconds": 100}, "cp_id"), ({"cp_id": "a b"}, "cp_id")):
        answer = reg.request("POST", "/api/v1/enrollments", body)
        assert answer.status == 400 and answer.json()["error"].startswith(f"{field}:"), body
    assert reg.events("registry-refused")[-1]["subject"] == "a b"


def test_unknown_paths_and_methods():
    reg = Registry()
    answer = reg.request("PATCH", "/api/v1/cps/CP01")
    assert answer.status == 405 and answer.headers["allow"] == "DELETE, GET, PUT"
    answer = reg.request("GET", "/api/v1/enrollments")
    assert answer.status == 405 and answer.headers["allow"] == "POST"
    assert reg.request("GET", "/api/v2/cps").status == 404
    assert reg.request("GET", "/").status == 404
    assert [e["detail"].split(" refused ")[1][:5] for e in reg.events("registry-refused")] == [
        "(405)", "(405)", "(404)", "(404)"]


def test_a_database_that_fails_is_a_503_not_a_hang(logged):
    reg = Registry()

    def broken(interaction, *args):
        return defer.fail(RuntimeError("database is locked"))

    reg.db.run = broken
    answer = reg.request("GET", "/api/v1/cps")
    assert answer.status == 503 and "database failed" in answer.json()["error"]
    assert "database is locked" in "\n".join(logged)


# -- the OpenAPI document --------------------------------------------------------------------


def test_openapi_document_lists_exactly_the_routes_served():
    reg = Registry(ADMIN)
    doc = reg.request("GET", "/api/v1/openapi.json", host=REMOTE).json()
    assert doc == OPENAPI and doc["openapi"].startswith("3.")
    documented = {(method.upper(), path) for path, ops in doc["paths"].items() for method in ops}
    assert documented == {(route.method, route.template) for route in ROUTES}
    bodies = {"POST": {"cp_id": "CP01"}, "PUT": {"location": "A", "price": 0.3}}
    for method, path in sorted(documented):
        op = doc["paths"][path][method.lower()]
        codes = {int(code) for code in op["responses"]}
        for token, host in ((ADMIN, REMOTE), (None, REMOTE), ("wrong", REMOTE)):
            answer = reg.request(method, path.replace("{id}", "CP01"), bodies.get(method), token=token, host=host)
            assert answer.status in codes, (method, path, token, answer.status, answer.body)
            assert answer.status not in (404, 405) or path.endswith("{id}"), (method, path, answer.body)
        if "requestBody" in op:
            answer = reg.request(method, path.replace("{id}", "CP01"), {"nonsense": 1}, token=ADMIN)
            assert answer.status == 400 and 400 in codes
    # Every schema reference resolves.
    text = json.dumps(doc)
    for name in {part.split('"')[0] for part in text.split("#/components/schemas/")[1:]}:
        assert name in doc["components"]["schemas"], name


# -- the client, over StubTreq --------------------------------------------------------------


def client_of(reg: Registry, token=None) -> RegistryClient:
    return RegistryClient(reg.clock, "https://127.0.0.1:7443", token=token, http=StubTreq(reg.api))


def result_of(d: defer.Deferred):
    results = []
    d.addBoth(results.append)
    assert results, "the call did not complete"
    if hasattr(results[0], "raiseException"):
        results[0].raiseException()
    return results[0]


def test_the_client_enrolls_registers_lists_and_deregisters():
    reg = Registry(ADMIN)
    admin = client_of(reg, ADMIN)
    issued = result_of(admin.enroll("CP01", 3600))
    assert issued["expires_at"] == NOW + 3600
    creds = result_of(client_of(reg).register("CP01", "Calle Mayor 1", 0.35, issued["token"]))
    assert creds.cp_id == "CP01" and creds.registry == "https://127.0.0.1:7443"
    assert proves(result_of(reg.store.registration("CP01"))["verifier"], creds.secret)
    assert creds.secret not in repr(creds)
    created, answer = result_of(admin.put_cp("CP01", "Calle Mayor 1", 0.4))
    assert not created and answer["price"] == 0.4
    assert [r["cp_id"] for r in result_of(admin.list())] == ["CP01"]
    assert result_of(admin.show("CP01"))["status"] == "registered"
    assert result_of(admin.deregister("CP01")) == {"cp_id": "CP01", "status": "deregistered"}


def test_the_client_says_in_one_line_why_the_registry_refused():
    reg = Registry(ADMIN)
    with pytest.raises(RegistryRefused) as refused:
        result_of(client_of(reg, "wrong").list())
    assert refused.value.status == 401
    assert str(refused.value) == "the Registry refused (401): this needs the admin token"
    with pytest.raises(RegistryRefused, match=r"\(404\): CP09 is not registered"):
        result_of(client_of(reg, ADMIN).show("CP09"))


# -- evctl registry, over StubTreq -----------------------------------------------------------


@pytest.fixture
def evctl(monkeypatch, capsys):
    """Run ``evctl registry ARGS`` against a Registry on fakes: (exit code, stdout, stderr)."""
    from evnet.ctl import cli
    from evnet.registry import client

    def run(reg: Registry, *argv: str):
        monkeypatch.setattr(client, "http_client", lambda reactor, ca_file, timeout: StubTreq(reg.api))
        args = cli.build_parser().parse_args(["registry", *argv])
        try:
            code = result_of(defer.ensureDeferred(args.run(reg.clock, args)))
        except cli.UserError as e:
            code = f"UserError: {e}"
        out = capsys.readouterr()
        return code, out.out, out.err

    return run


def test_evctl_registry_add_prints_the_secret_once_or_writes_a_private_file(evctl, tmp_path):
    reg = Registry(ADMIN)
    admin = tmp_path / "admin.token"
    admin.write_text(ADMIN + "\n")
    code, out, err = evctl(reg, "add", "CP01", "--location", "Calle Mayor 1", "--price", "0.35",
                           "--token-file", str(admin))
    assert code == 0
    secret = out.split("secret: ")[1].strip()
    assert proves(result_of(reg.store.registration("CP01"))["verifier"], secret)
    assert "CP01 registered (alta)" in out and "not shown" not in out and "shown only now" in err

    token_file = tmp_path / "cp02.token"
    code, out, _ = evctl(reg, "enroll", "CP02", "--token-file", str(admin), "--token-output", str(token_file))
    assert code == 0 and token_file.read_text().strip() not in out
    assert stat.S_IMODE(os.stat(token_file).st_mode) == 0o600
    creds_file = tmp_path / "cp02.json"
    code, out, err = evctl(reg, "add", "CP02", "--location", "Plaza 2", "--price", "0.3",
                           "--enrollment-token-file", str(token_file), "--credentials-file", str(creds_file))
    assert code == 0 and "credentials written to" in out
    creds = load_credentials(str(creds_file))
    assert creds.secret not in out + err and stat.S_IMODE(os.stat(creds_file).st_mode) == 0o600

    code, out, err = evctl(reg, "add", "CP02", "--location", "Plaza 2", "--price", "0.3",
                           "--enrollment-token-file", str(token_file))
    assert code == 1 and "refused (401)" in err
    code, out, _ = evctl(reg, "list")
    assert code == 0 and [line.split()[0] for line in out.splitlines()] == ["CP01", "CP02"]
    code, out, _ = evctl(reg, "remove", "CP01", "--token-file", str(admin), "--json")
    assert code == 0 and json.loads(out) == {"cp_id": "CP01", "status": "deregistered"}
    code, _, _ = evctl(reg, "show", "CP01", "--token-file", str(tmp_path / "nope"))
    assert code.startswith("UserError: --token-file") and "cannot read it" in code


def test_a_driver_signs_up_gets_its_secret_once_and_only_a_verifier_is_stored():
    from evnet.protocols import security

    reg = Registry(admin_token="adm1n")
    assert reg.request("PUT", "/api/v1/drivers/D1", {}).status == 401  # loopback is not enough with a token
    answer = reg.request("PUT", "/api/v1/drivers/D1", {}, token="adm1n")
    assert answer.status == 201
    body = answer.json()
    secret = body["secret"]
    assert (body["driver_id"], body["status"]) == ("D1", "registered")
    [row] = reg.db.rows("SELECT * FROM driver_accounts")
    assert secret not in repr(row) and security.check_secret(security.Verifier.from_text(row["verifier"]), secret)
    assert reg.request("GET", "/api/v1/drivers", token="adm1n").json()["drivers"] == [
        {k: body[k] for k in ("driver_id", "status", "created_at", "updated_at")}]
    again = reg.request("PUT", "/api/v1/drivers/D1", {}, token="adm1n")
    assert again.status == 200 and again.json()["secret"] != secret
    gone = reg.request("DELETE", "/api/v1/drivers/D1", token="adm1n")
    assert gone.status == 200 and gone.json()["status"] == "deregistered"
    assert reg.db.rows("SELECT verifier FROM driver_accounts") == [{"verifier": None}]
    assert reg.request("DELETE", "/api/v1/drivers/NOPE", token="adm1n").status == 404
    assert reg.request("PUT", "/api/v1/drivers/bad%23id", {}, token="adm1n").status == 400
    assert secret not in reg.everything_stored()
    assert any("signed up" in e["detail"] for e in reg.events("registry"))
