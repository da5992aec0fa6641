"""
Central's HTTP API, SSE stream and static files, through a real
twisted.web Site on in-memory transports: Central on the MemoryStore, fake
Monitor/driver links, a task.Clock.  No global reactor, no sleeps.
"""

from __future__ import annotations

import errno
import io
import json
import re
import urllib.error
import urllib.parse

import pytest
from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.internet.error import CannotListenError, ConnectionDone
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import LogLevel, capturedLogs, formatEvent
from twisted.python import usage
from twisted.python.failure import Failure

from evnet.central.tap import Options
from evnet.ctl import cli
from evnet.protocols import messages as m
from evnet.central.web import OPENAPI, ROUTES, EventHub, WebPanel, make_site

from tests.test_central import World

TOKEN = "s3cret-token"


class Response:
    def __init__(self, raw: bytes):
        head, _, rest = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split()[1])
        self.headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            self.headers[name.strip().lower()] = value.strip()
        if self.headers.get("transfer-encoding") == "chunked":
            self.body = dechunk(rest)
        else:
            self.body = rest[: int(self.headers.get("content-length", len(rest)))]

    def json(self):
        assert self.headers["content-type"].startswith("application/json"), self.headers
        return json.loads(self.body)


def dechunk(data: bytes) -> bytes:
    """The complete chunks of a (possibly unfinished) chunked body."""
    out = b""
    while True:
        size_line, sep, rest = data.partition(b"\r\n")
        if not sep:
            return out
        size = int(size_line, 16)
        if size == 0 or len(rest) < size + 2:
            return out
        out += rest[:size]
        data = rest[size + 2:]


def parse_events(body: bytes) -> list[tuple[str, object]]:
    """(event, data) for each complete event; comments as ('comment', text)."""
    events = []
    for block in body.decode("utf-8").split("\n\n")[:-1]:
        name, data = "message", None
        for line in block.split("\n"):
            if line.startswith(":"):
                events.append(("comment", line[1:].strip()))
            elif line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data = json.loads(line[6:])
        if data is not None:
            events.append((name, data))
    return events


class Web:
    """A Central (tests.test_central.World) with its panel on in-memory HTTP connections."""

    def __init__(self, token=None, max_pending=256 * 1024):
        self.world = World()
        self.central = self.world.central
        self.clock = self.world.clock
        self.hub = EventHub(self.central, self.clock, max_pending=max_pending)
        self.hub.startService()
        self.site = make_site(self.central, self.hub, self.clock, token)

    def connect(self, host="127.0.0.1"):
        peer = IPv4Address("TCP", host, 50000)
        channel = self.site.buildProtocol(peer)
        transport = StringTransport(peerAddress=peer, hostAddress=IPv4Address("TCP", "127.0.0.1", 8080))
        channel.makeConnection(transport)
        return channel, transport

    def send(self, method, path, headers=None, host="127.0.0.1"):
        channel, transport = self.connect(host)
        lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1:8080", "Content-Length: 0"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        channel.dataReceived(("\r\n".join(lines) + "\r\n\r\n").encode("utf-8"))
        return channel, transport

    def request(self, method, path, headers=None, host="127.0.0.1") -> Response:
        _, transport = self.send(method, path, headers, host)
        return Response(transport.value())

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, **kw):
        return self.request("POST", path, **kw)


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


# -- reading ----------------------------------------------------------------------


def test_cps_list_and_one_cp():
    web = Web()
    assert web.get("/api/v1/cps").json() == {"cps": []}
    web.world.cp("CP2", "Plaza", 0.25)
    web.world.cp("CP1", "Centro", 0.3)
    cps = web.get("/api/v1/cps").json()["cps"]
    assert [(c["id"], c["location"], c["price"], c["state"]) for c in cps] == [
        ("CP1", "Centro", 0.3, "ACTIVADO"), ("CP2", "Plaza", 0.25, "ACTIVADO")]
    one = web.get("/api/v1/cps/CP2").json()
    assert one["id"] == "CP2" and one["driver_id"] is None
    missing = web.get("/api/v1/cps/NOPE")
    assert missing.status == 404 and missing.json() == {"error": "unknown CP NOPE"}


def charging(web, kwh, euros, seconds):
    """CP1 supplying driver D1, one TELEM in: (cp, driver, session id)."""
    cp, driver = web.world.cp(), web.world.driver()
    sid = web.world.charge(cp, driver)
    cp.send(m.Telem("CP1", sid, 1, kwh, 11.0, euros, seconds))
    return cp, driver, sid


def test_a_charge_shows_driver_kw_kwh_and_euros():
    web = Web()
    _, _, sid = charging(web, 0.5, 0.15, 160)
    one = web.get("/api/v1/cps/CP1").json()
    assert (one["state"], one["driver_id"], one["session_id"]) == ("SUMINISTRANDO", "D1", sid)
    assert (one["kw"], one["kwh"], one["euros"]) == (11.0, 0.5, 0.15)


def test_sessions_ongoing_and_recent_with_tickets():
    web = Web()
    cp, driver, first = charging(web, 1.0, 0.3, 327)
    cp.send(m.Stop("CP1", first, 2, 1.0, 0.3, 327, "target"))
    web.clock.advance(1)
    second = web.world.charge(cp, driver)
    answer = web.get("/api/v1/sessions").json()
    assert [s["id"] for s in answer["ongoing"]] == [second]
    assert answer["ongoing"][0]["driver_id"] == "D1" and answer["ongoing"][0]["cp_id"] == "CP1"
    recent = {s["id"]: s for s in answer["recent"]}
    assert set(recent) == {first, second}
    ticket = recent[first]
    assert (ticket["status"], ticket["kwh"], ticket["euros"], ticket["seconds"], ticket["end_reason"]) == (
        "closed", 1.0, 0.3, 327, "target")
    assert ticket["ticket_delivered"] is True
    assert recent[second]["status"] == "open"
    assert [s["id"] for s in web.get("/api/v1/sessions?limit=1").json()["recent"]] == [second]


@pytest.mark.parametrize("limit", ["0", "x", "501"])
def test_a_bad_limit_is_400(limit):
    web = Web()
    for path in ("/api/v1/sessions", "/api/v1/events"):
        answer = web.get(f"{path}?limit={limit}")
        assert answer.status == 400 and "limit" in answer.json()["error"]


def test_events_are_the_application_messages_newest_first():
    web = Web()
    web.world.cp()
    web.post("/api/v1/cps/CP1/stop")
    events = web.get("/api/v1/events").json()["events"]
    assert events[0]["kind"] == "stop" and events[0]["subject"] == "CP1"
    assert "PARADO (Out of Order)" in events[0]["text"]
    assert [e["kind"] for e in events[1:]] == ["connect", "register"]


def test_a_database_failure_is_a_503_json_error(monkeypatch):
    web = Web()
    monkeypatch.setattr(web.central.store, "recent_events", lambda limit: defer.fail(RuntimeError("disk gone")))
    answer = web.get("/api/v1/events")
    assert answer.status == 503 and "disk gone" in answer.json()["error"]


def test_a_slow_database_answer_arrives_when_ready():
    web = Web()
    pending = defer.Deferred()
    web.central.store.sessions_page = lambda filters, limit, before: pending
    _, transport = web.send("GET", "/api/v1/sessions")
    assert transport.value() == b""
    pending.callback([])
    assert Response(transport.value()).json() == {"ongoing": [], "recent": [], "next": None}


# -- writing ------------------------------------------------------------------------


def test_stop_and_resume_one_cp_from_loopback():
    web = Web()
    cp = web.world.cp()
    cp.take()
    answer = web.post("/api/v1/cps/CP1/stop")
    assert answer.status == 200
    body = answer.json()
    assert body["ok"] is True and body["cp"]["state"] == "PARADO" and body["message"] == "CP CP1 stopped"
    assert cp.take(m.Parar) == [m.Parar("CP1")]
    answer = web.post("/api/v1/cps/CP1/resume").json()
    assert answer["cp"]["state"] == "ACTIVADO"
    assert cp.take(m.Reanudar) == [m.Reanudar("CP1")]
    again = web.post("/api/v1/cps/CP1/resume")
    assert again.status == 409 and again.json() == {"error": "CP CP1 is not stopped (ACTIVADO)"}
    for verb in ("stop", "resume"):
        unknown = web.post(f"/api/v1/cps/NOPE/{verb}")
        assert unknown.status == 404 and unknown.json() == {"error": "unknown CP NOPE"}


def test_stop_during_a_charge_ends_it_with_a_ticket():
    web = Web()
    _, driver, sid = charging(web, 0.2, 0.06, 60)
    assert web.post("/api/v1/cps/CP1/stop").json()["cp"]["state"] == "PARADO"
    [ticket] = driver.take(m.Ticket)
    assert (ticket.session_id, ticket.kwh, ticket.reason) == (sid, 0.2, "parar")


def test_revoke_a_cps_key():
    web = Web()
    cp = web.world.cp()
    assert web.get("/api/v1/cps/CP1").json()["key"] == "active"
    answer = web.post("/api/v1/cps/CP1/revoke")
    assert answer.status == 200
    body = answer.json()
    assert body["ok"] is True and body["message"].startswith("CP CP1's key revoked")
    assert (body["cp"]["state"], body["cp"]["key"], body["cp"]["key_id"]) == ("DESCONECTADO", "revoked", None)
    assert body["cp"]["key_revoked_by"].startswith("the operator at 127.0.0.1:")
    [revoked] = cp.take(m.Revoked)
    assert revoked.reason == f"its key was revoked by {body['cp']['key_revoked_by']}"
    again = web.post("/api/v1/cps/CP1/revoke").json()
    assert again["message"] == "CP CP1's key is already revoked"
    # A CP known from the database, whose Monitor has not logged in to this Central: no key.
    web.central.restore([{"id": "CP2", "location": "Playa", "price": 0.3, "state": "DESCONECTADO", "stopped": 0}], [])
    refused = web.post("/api/v1/cps/CP2/revoke")
    assert refused.status == 409 and refused.json() == {"error": "CP CP2 has no key to revoke: it has not logged in"}
    unknown = web.post("/api/v1/cps/NOPE/revoke")
    assert unknown.status == 404 and unknown.json() == {"error": "unknown CP NOPE"}
    [event] = [e for e in web.get("/api/v1/events").json()["events"] if e["kind"] == "revoke"]
    assert event["text"] == f"CP CP1 out of service: {revoked.reason}"


class SiteOpener:
    """urllib's opener for evctl's CentralApi, answered by the in-memory Site of C{web} (from C{host})."""

    def __init__(self, web, host="127.0.0.1"):
        self.web, self.host = web, host

    def open(self, request, timeout):
        url = urllib.parse.urlsplit(request.full_url)
        path = url.path + (f"?{url.query}" if url.query else "")
        headers = {k: v for k, v in request.header_items() if k.lower() == "authorization"}
        answer = self.web.request(request.get_method(), path, headers, host=self.host)
        if answer.status >= 400:
            raise urllib.error.HTTPError(request.full_url, answer.status, "refused", {}, io.BytesIO(answer.body))
        return io.BytesIO(answer.body)


def evctl(capsys, web, *argv, host="127.0.0.1"):
    code = cli.run_plain(cli.build_parser().parse_args(list(argv)), SiteOpener(web, host))
    out, err = capsys.readouterr()
    return code, out, err


def test_evctl_keys_revoke(capsys, tmp_path):
    web = Web(token=TOKEN)
    cp = web.world.cp()
    (tmp_path / "token").write_text(TOKEN)
    token = ("--token-file", str(tmp_path / "token"))
    assert evctl(capsys, web, "keys", "revoke", "CP1", host="10.1.2.3")[0] == 1  # a write call: no token, refused
    assert web.central.cps["CP1"].key_state == "active"
    code, out, err = evctl(capsys, web, "keys", "revoke", "CP1", *token, host="10.1.2.3")
    assert (code, out, err) == (0, "CP CP1's key revoked: it is out of service until it logs in again\n", "")
    assert cp.take(m.Revoked) and web.central.cps["CP1"].as_dict()["key"] == "revoked"
    code, out, _ = evctl(capsys, web, "keys", "revoke", "CP1", "--json", *token)
    assert code == 0 and json.loads(out)["message"] == "CP CP1's key is already revoked"
    code, out, err = evctl(capsys, web, "keys", "revoke", "NOPE", *token)
    assert (code, out, err) == (1, "", "evctl: Central refused: unknown CP NOPE\n")


def test_stop_all_and_resume_all():
    web = Web()
    web.world.cp("CP1")
    web.world.cp("CP2")
    answer = web.post("/api/v1/cps/stop").json()
    assert [r["message"] for r in answer["results"]] == ["CP CP1 stopped", "CP CP2 stopped"]
    assert {c["state"] for c in answer["cps"]} == {"PARADO"}
    assert web.post("/api/v1/cps/CP1/resume").status == 200
    answer = web.post("/api/v1/cps/resume").json()
    assert [r["message"] for r in answer["results"]] == ["CP CP2 resumed"]
    assert {c["state"] for c in answer["cps"]} == {"ACTIVADO"}
    assert web.post("/api/v1/cps/resume").json()["results"] == []


@pytest.mark.parametrize("path", ["/api/v1/cps/CP1/stop", "/api/v1/cps/CP1/resume", "/api/v1/cps/stop", "/api/v1/cps/resume",
                                  "/api/v1/cps/CP1/revoke"])
def test_without_a_token_file_writes_from_elsewhere_are_403(path):
    web = Web()
    web.world.cp()
    answer = web.post(path, host="10.1.2.3")
    assert answer.status == 403 and "only from this host" in answer.json()["error"]
    assert web.central.cps["CP1"].state.value == "ACTIVADO" and web.central.cps["CP1"].key_state == "active"
    assert web.get("/api/v1/cps", host="10.1.2.3").status == 200  # reading is open


def test_loopback_also_covers_ipv6_and_refuses_other_web_origins():
    web = Web()
    web.world.cp()
    refused = web.post("/api/v1/cps/CP1/stop", headers={"Origin": "http://evil.example"})
    assert refused.status == 403 and "another web origin" in refused.json()["error"]
    assert web.post("/api/v1/cps/CP1/stop", headers={"Origin": "http://127.0.0.1:8080"}).status == 200


@pytest.mark.parametrize("headers", [{}, bearer("wrong"), {"Authorization": f"Basic {TOKEN}"}, bearer("")])
def test_with_a_token_file_a_missing_or_wrong_token_is_401(headers):
    web = Web(token=TOKEN)
    web.world.cp()
    answer = web.post("/api/v1/cps/CP1/stop", headers=headers)
    assert answer.status == 401 and "admin token" in answer.json()["error"]
    assert answer.headers["www-authenticate"].startswith("Bearer")
    assert web.central.cps["CP1"].state.value == "ACTIVADO"


def test_with_the_right_token_writes_work_from_anywhere():
    web = Web(token=TOKEN)
    web.world.cp()
    assert web.post("/api/v1/cps/CP1/stop", headers=bearer(TOKEN), host="10.1.2.3").status == 200
    assert web.post("/api/v1/cps/resume", headers=bearer(TOKEN), host="10.1.2.3").status == 200
    assert web.central.cps["CP1"].state.value == "ACTIVADO"


def test_wrong_method_is_405_and_unknown_path_404():
    web = Web()
    web.world.cp()
    answer = web.get("/api/v1/cps/CP1/stop")
    assert answer.status == 405 and answer.headers["allow"] == "POST"
    answer = web.request("DELETE", "/api/v1/cps")
    assert answer.status == 405 and answer.headers["allow"] == "GET" and "not allowed" in answer.json()["error"]
    assert web.request("PUT", "/api/v1/cps/stop").headers["allow"] == "POST"  # not also /api/cps/{id}'s GET
    assert web.request("OPTIONS", "/api/v1/cps/resume").headers["allow"] == "POST"
    answer = web.get("/api/v1/nothing")
    assert answer.status == 404 and "no such API path" in answer.json()["error"]


# -- the OpenAPI document -------------------------------------------------------------


def test_openapi_document_lists_exactly_the_routes_served():
    web = Web()
    web.world.cp()
    doc = web.get("/api/v1/openapi.json").json()
    assert doc == OPENAPI and doc["openapi"].startswith("3.")
    documented = {(method.upper(), path) for path, ops in doc["paths"].items() for method in ops}
    served = {(route.method, route.template) for route in ROUTES}
    assert documented == served
    # Each documented operation is really answered by the site (not a 404 for the path, not 405).
    for method, path in sorted(documented):
        if path == "/api/v1/stream":
            continue  # a stream: see the SSE tests
        answer = web.request(method, path.replace("{id}", "CP1").replace("{location}", "Centro"))
        assert answer.status in {int(code) for code in doc["paths"][path][method.lower()]["responses"]}, (
            method, path, answer.status)
        assert answer.status not in (404, 405), (method, path, answer.body)
    # Every status the handlers can answer is documented for the write routes.
    for path, ops in doc["paths"].items():
        for op in ops.values():
            if "security" in op:
                assert {"401", "403"} <= set(op["responses"]), path


def test_every_route_template_is_reachable_only_with_its_method():
    web = Web()
    web.world.cp()
    for route in ROUTES:
        other = "GET" if route.method == "POST" else "POST"
        path = route.template.replace("{id}", "CP1")
        if any(r.method == other and re.fullmatch(r.regex, path) for r in ROUTES):
            continue
        assert web.request(other, path).status == 405, route


# -- the SSE stream --------------------------------------------------------------------


class Stream:
    def __init__(self, web, host="127.0.0.1"):
        self.channel, self.transport = web.send("GET", "/api/v1/stream", host=host)
        self.response = Response(self.transport.value())

    def events(self):
        return parse_events(dechunk(self.transport.value().partition(b"\r\n\r\n")[2]))

    def named(self):
        return [(name, data) for name, data in self.events() if name != "comment"]

    def disconnect(self):
        self.channel.connectionLost(Failure(ConnectionDone()))


def test_stream_starts_with_a_snapshot_then_every_change_in_order():
    web = Web()
    web.world.cp("CP1", "Centro", 0.3)
    stream = Stream(web)
    assert stream.response.status == 200
    assert stream.response.headers["content-type"].startswith("text/event-stream")
    [(name, snap)] = stream.named()
    assert name == "snapshot" and [c["id"] for c in snap["cps"]] == ["CP1"]
    assert snap["sessions"] == [] and snap["messages"][-1]["kind"] == "connect"
    assert b"retry: " in stream.transport.value()

    driver = web.world.driver()
    cp = web.world.cp("CP2", "Plaza", 0.25)
    sid = web.world.charge(cp, driver, cp_id="CP2")
    cp.send(m.Telem("CP2", sid, 1, 0.1, 11.0, 0.03, 30))
    web.post("/api/v1/cps/CP2/stop")
    events = stream.named()[1:]
    kinds = [name for name, _ in events]
    # Registration, authentication, the charge, its telemetry, the stop and the ticket, in order.
    assert kinds[:4] == ["message", "cp", "cp", "message"], kinds
    assert events[0][1]["text"].startswith("CP CP2 registered")
    assert events[2][1]["cp"]["state"] == "ACTIVADO"
    start = kinds.index("session")
    assert events[start][1]["session"]["id"] == sid and events[start][1]["session"]["state"] == "authorized"
    telemetry = [data for name, data in events if name == "telemetry"]
    assert telemetry[0]["cp"]["kw"] == 11.0 and telemetry[0]["cp"]["driver_id"] == "D1"
    tail = [(name, data.get("kind") or data.get("cp", {}).get("state") or data.get("session", {}).get("state"))
            for name, data in events[kinds.index("telemetry") + 1:]]
    assert tail == [("message", "ticket"), ("session", "closed"), ("cp", "PARADO"), ("message", "stop")], tail
    # The ids increase: a client can tell the order.
    ids = [int(x) for x in re.findall(rb"^id: (\d+)$", stream.transport.value(), re.M)]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)


def test_stream_sends_a_keepalive_every_15_seconds_and_forgets_closed_clients():
    web = Web()
    stream = Stream(web)
    web.clock.advance(14.9)
    assert ("comment", "keep-alive") not in stream.events()
    web.clock.advance(0.2)
    assert stream.events()[-1] == ("comment", "keep-alive")
    assert len(web.hub.clients) == 1
    stream.disconnect()
    assert web.hub.clients == []
    web.world.cp()  # publishing to nobody is fine
    web.clock.advance(15)


def test_a_slow_client_waits_in_order_and_does_not_hold_back_others():
    web = Web()
    slow, quick = Stream(web), Stream(web)
    slow.transport.producer.pauseProducing()  # what TCP does when the client does not read
    before = slow.transport.value()
    web.world.cp("CP1")
    web.world.cp("CP2")
    assert slow.transport.value() == before
    quick_events = quick.named()
    assert len(quick_events) > 4
    slow.transport.producer.resumeProducing()
    assert slow.named() == quick_events


def test_a_client_too_far_behind_is_dropped():
    web = Web(max_pending=2000)
    slow, quick = Stream(web), Stream(web)
    slow.transport.producer.pauseProducing()
    for n in range(10):
        web.world.cp(f"CP{n}")
    assert slow.transport.disconnected or slow.transport.disconnecting
    assert len(web.hub.clients) == 1 and web.hub.clients[0].request.transport is quick.transport
    assert sum(1 for name, _ in quick.named() if name == "cp") == 20


def test_stopping_the_panel_ends_the_streams():
    web = Web()
    stream = Stream(web)
    web.hub.stopService()
    assert stream.transport.value().endswith(b"0\r\n\r\n")
    assert web.hub.publish not in web.central.observers
    web.world.cp()
    assert stream.named()[-1][0] == "snapshot"


# -- static files ------------------------------------------------------------------------


def test_the_dashboard_is_served_at_the_root():
    web = Web()
    page = web.get("/")
    assert page.status == 200 and page.headers["content-type"].startswith("text/html")
    html = page.body.decode("utf-8")
    assert "<title>EV CHARGING — MONITORING PANEL</title>" in html
    assert "ON-GOING DRIVERS REQUESTS" in html and "APPLICATION MESSAGES" in html
    scripts = {}
    for name in re.findall(r'<script src="([^"]+)"></script>', html):
        scripts[name] = web.get(f"/{name}")
        assert scripts[name].status == 200 and "javascript" in scripts[name].headers["content-type"], name
    assert list(scripts) == ["util.js", "chart.js", "cpviews.js", "sections.js", "app.js"]
    assert b"EventSource" in scripts["app.js"].body
    assert b'["revoke", "Revoke key"]' in scripts["cpviews.js"].body and b"cp.key_revoked_by" in scripts["cpviews.js"].body
    assert "css" in web.get("/style.css").headers["content-type"]
    assert web.get("/nothing-here").status == 404


# -- the panel as a service: listening on --http ------------------------------------------


class FakeCentral:
    """Just what the panel reads of Central to start and stop."""

    def __init__(self):
        self.cps, self.sessions, self.observers, self.recent_messages = {}, {}, [], []


class TakenPortReactor(MemoryReactorClock):
    def listenTCP(self, port, factory, backlog=50, interface=""):
        raise CannotListenError(interface, port, OSError(errno.EADDRINUSE, "Address already in use"))


def test_the_panel_listens_on_its_endpoint_and_stops_with_the_service():
    reactor, central = MemoryReactorClock(), FakeCentral()
    panel = WebPanel(central, "tcp:8080:interface=127.0.0.1", reactor, TOKEN)
    with capturedLogs() as events:
        panel.startService()
    [(port, factory, _, interface)] = reactor.tcpServers
    assert (port, interface, factory) == (8080, "127.0.0.1", panel.site)
    assert central.observers == [panel.hub.publish]
    assert [formatEvent(e) for e in events if e["log_level"] == LogLevel.info] == [
        "web panel and API on tcp:8080:interface=127.0.0.1 (write calls: admin token required; "
        "weather calls: refused (no --weather-token-file))"]
    panel.stopService()
    assert panel.listener.port is None and central.observers == []


def test_a_taken_http_port_is_one_line_passed_to_on_failure_not_a_traceback():
    reactor, failures = TakenPortReactor(), []
    panel = WebPanel(FakeCentral(), "tcp:8080:interface=127.0.0.1", reactor, on_failure=failures.append)
    with capturedLogs() as events:
        panel.startService()
    assert failures == ["cannot listen on --http tcp:8080:interface=127.0.0.1: address already in use"]
    assert [formatEvent(e) for e in events if e["log_level"] >= LogLevel.warn] == failures
    assert not any("log_failure" in e for e in events)
    assert not any("web panel and API on" in formatEvent(e) for e in events)
    panel.stopService()


# -- the evcentral options -------------------------------------------------------------


def test_http_and_admin_token_options(tmp_path):
    options = Options()
    options.parseOptions([])
    assert options["http"] == "tcp:8080:interface=127.0.0.1" and options["admin_token"] is None
    token_file = tmp_path / "token"
    token_file.write_text(f"  {TOKEN}\n")
    options = Options()
    options.parseOptions(["--http", "none", "--admin-token-file", str(token_file)])
    assert options["http"] == "none" and options["admin_token"] == TOKEN


@pytest.mark.parametrize("content, message", [(None, "cannot read it"), ("\n", "the file is empty"),
                                              ("two words", "one line without spaces")])
def test_a_bad_admin_token_file_is_a_clear_usage_error(tmp_path, content, message):
    token_file = tmp_path / "token"
    if content is not None:
        token_file.write_text(content)
    with pytest.raises(usage.UsageError, match=message):
        Options().parseOptions(["--admin-token-file", str(token_file)])


def test_cancel_a_drivers_charge_through_the_api_ends_it_with_a_ticket():
    web = Web(token="t0ken")
    cp, driver = web.world.cp(), web.world.driver()
    sid = web.world.charge(cp, driver)
    assert web.post("/api/v1/drivers/D1/cancel").status == 401
    answer = web.post("/api/v1/drivers/D1/cancel", headers=bearer("t0ken"))
    assert answer.status == 200 and answer.json()["session_id"] == sid
    [ticket] = driver.take(m.Ticket)
    assert (ticket.session_id, ticket.reason) == (sid, "cancelled by the driver")
    again = web.post("/api/v1/drivers/D1/cancel", headers=bearer("t0ken"))
    assert again.status == 409 and again.json() == {"error": "driver D1 has no charge in progress"}


def test_the_drivers_route_lists_the_accounts_without_verifiers():
    from tests.fakes import verifier_of

    web = Web()
    web.world.store.sign_up_driver("D1", verifier_of("x"))
    body = web.get("/api/v1/drivers").json()
    assert body["driver_auth"] == "optional"
    [d] = body["drivers"]
    assert (d["driver_id"], d["status"], d["connected"], d["session_id"]) == ("D1", "registered", False, None)
    assert "verifier" not in d
