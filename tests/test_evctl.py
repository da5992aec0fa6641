"""
``evctl cps | stop | resume | sessions | panel`` against a real ``twistd
evcentral`` (with a real Engine and Monitor for CP1); the terminal panel's
pure parts (SSE parsing, state, rendering); its stream on fakes (an Agent,
StringTransport, task.Clock: events, disconnections, backoff, silence,
Ctrl+C); and evctl's user errors, each one line and a non-zero exit.
"""

from __future__ import annotations

import http.client
import io
import json
import re
import signal
import urllib.error

import pytest
from rich.console import Console
from twisted.application.internet import backoffPolicy
from twisted.internet import defer, error
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.web._newclient import ParseError
from twisted.web.client import ResponseDone, ResponseFailed, ResponseNeverReceived

from evnet.ctl import cli, panel, stream, terminal
from evnet.ctl.errors import CentralRefused, UserError
from tests.network import registered
from tests.procs import free_port, wait_for_port


class Central:
    """A real evcentral with its web panel; optionally one CP (Engine + Monitor)."""

    def __init__(self, procs, tmp_path, *extra):
        self.procs = procs
        self.cp_port, self.drivers_port, self.http_port = free_port(), free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.http_port}"
        self.args = [
            "--listen", f"tcp:{self.cp_port}:interface=127.0.0.1",
            "--drivers", f"tcp:{self.drivers_port}:interface=127.0.0.1",
            "--http", f"tcp:{self.http_port}:interface=127.0.0.1",
            "--db", f"sqlite:{tmp_path / 'central.db'}", *extra,
        ]
        self.tmp_path = tmp_path
        self.proc = procs.twistd("central", "evcentral", *self.args)
        wait_for_port(self.http_port)

    def add_cp(self, cp_id="CP1"):
        engine_port, self.control_port = free_port(), free_port()
        self.procs.twistd(
            "engine", "evengine", "--listen", f"tcp:{engine_port}:interface=127.0.0.1",
            "--control", f"tcp:{self.control_port}:interface=127.0.0.1",
            "--state-dir", str(self.tmp_path / "engine-state"),
        )
        wait_for_port(self.control_port)
        monitor = self.procs.twistd(
            "monitor", "evmonitor", "--cp-id", cp_id, "--location", "Calle Mayor 1", "--price", "0.3",
            "--engine", f"tcp:host=127.0.0.1:port={engine_port}",
            "--central", f"tcp:host=127.0.0.1:port={self.cp_port}",
            *registered(f"sqlite:{self.tmp_path / 'central.db'}", self.tmp_path, cp_id, "Calle Mayor 1", 0.3),
        )
        monitor.wait_for(rf"Central authenticated CP {cp_id}", timeout=20)
        self.proc.wait_for(rf"CP {cp_id} authenticated", timeout=20)

    def evctl(self, *args, code=0, url=True):
        argv = [*args, "--http", self.url] if url else list(args)
        proc = self.procs.command("evctl", "evctl", *argv)
        assert proc.wait(20) == code, proc.output()
        out = proc.output()
        assert "Traceback" not in out
        return out


def run_evctl(procs, *args):
    proc = procs.command("evctl", "evctl", *args)
    code = proc.wait(20)
    assert "Traceback" not in proc.output()
    return code, proc.output()


# -- against a real Central ---------------------------------------------------------


@pytest.mark.slow
def test_evctl_lists_stops_resumes_and_shows_sessions(procs, tmp_path):
    central = Central(procs, tmp_path)
    assert "no charging point has registered yet" in central.evctl("cps")
    central.add_cp()
    out = central.evctl("cps")
    assert "CP1" in out and "ACTIVADO" in out and "0.300 €/kWh" in out and "Calle Mayor 1" in out
    [cp] = json.loads(central.evctl("cps", "--json"))
    assert (cp["id"], cp["state"], cp["price"]) == ("CP1", "ACTIVADO", 0.3)

    assert central.evctl("stop", "CP1").strip() == "CP CP1 stopped"
    assert "PARADO (Out of Order)" in central.evctl("cps")
    answer = json.loads(central.evctl("resume", "CP1", "--json"))
    assert answer["ok"] is True and answer["cp"]["state"] == "ACTIVADO"
    assert "evctl: Central refused: CP CP1 is not stopped (ACTIVADO)" in central.evctl("resume", "CP1", code=1)
    assert "evctl: Central refused: unknown CP NOPE" in central.evctl("stop", "NOPE", code=1)

    assert central.evctl("stop", "all").strip() == "CP CP1 stopped"
    assert central.evctl("resume", "all").strip() == "CP CP1 resumed"
    assert central.evctl("resume", "all").strip() == "no charging point is stopped"

    out = central.evctl("sessions")
    assert "In progress: none" in out and "Recent tickets: none" in out
    procs.command("request", "evctl", "engine", str(central.control_port), "request", "D7").wait(15)
    central.proc.wait_for(r"REQ D7 -> CP1: AUTHORIZED", timeout=15)
    out = central.evctl("sessions")
    assert "driver D7 at CP1" in out
    answer = json.loads(central.evctl("sessions", "--json"))
    assert [s["driver_id"] for s in answer["ongoing"]] == ["D7"]
    central.evctl("stop", "CP1")
    central.proc.wait_for(r"TICKET .*driver D7", timeout=15)
    out = central.evctl("sessions")
    assert "In progress: none" in out and "driver D7 at CP1" in out and "(parar)" in out

    once = central.evctl("panel", "--once")
    assert "EV CHARGING — MONITORING PANEL" in once and "CP1" in once and "Out of Order" in once
    assert "ON-GOING DRIVERS REQUESTS" in once and "APPLICATION MESSAGES" in once


@pytest.mark.slow
def test_evctl_with_an_admin_token(procs, tmp_path):
    token = tmp_path / "admin.token"
    token.write_text("tok-123\n")
    wrong = tmp_path / "wrong.token"
    wrong.write_text("nope\n")
    central = Central(procs, tmp_path, "--admin-token-file", str(token))
    assert "Central refused: this needs a valid admin token" in central.evctl("stop", "all", code=1)
    assert "Central refused: this needs a valid admin token" in central.evctl(
        "resume", "all", "--token-file", str(wrong), code=1)
    assert central.evctl("stop", "all", "--token-file", str(token)).strip() == "no charging point known"
    assert "cannot read it" in central.evctl("stop", "all", "--token-file", str(tmp_path / "missing"), code=2)
    central.evctl("cps")  # reading needs no token


@pytest.mark.slow
def test_evcentral_refuses_an_empty_admin_token_file(procs, tmp_path):
    empty = tmp_path / "empty.token"
    empty.write_text("\n")
    proc = procs.twistd("central", "evcentral", "--http", f"tcp:{free_port()}:interface=127.0.0.1",
                        "--admin-token-file", str(empty), "--db", f"sqlite:{tmp_path / 'c.db'}")
    assert proc.wait(20) != 0
    assert "the file is empty" in proc.output() and "Traceback" not in proc.output()


@pytest.mark.slow
def test_evctl_says_clearly_when_central_is_unreachable(procs):
    url = f"http://127.0.0.1:{free_port()}"
    for command in (["cps"], ["stop", "CP1"], ["resume", "all"], ["sessions"], ["panel", "--once"]):
        code, out = run_evctl(procs, *command, "--http", url)
        assert code == 2 and f"evctl: cannot reach Central at {url}" in out, (command, out)
    code, out = run_evctl(procs, "cps", "--http", "127.0.0.1:8080")
    assert code == 2 and "--http must be a URL" in out


# rich draws as on a terminal (alternate screen, a frame on every change) so that the test can watch it.
AS_A_TERMINAL = {"FORCE_COLOR": "1", "COLUMNS": "200", "LINES": "60"}
STYLED = r"(?:\s|\x1b\[[0-9;?]*[A-Za-z])+"  # spaces and the escape sequences of styles between two words


@pytest.mark.slow
def test_evctl_panel_follows_central_across_a_restart_and_quits_on_ctrl_c(procs, tmp_path):
    central = Central(procs, tmp_path)
    follower = procs.command("panel", "evctl", "panel", "--http", central.url, env=AS_A_TERMINAL)
    status = re.escape(central.url) + STYLED
    central.proc.wait_for(r"panel client .* follows the stream \(1 now\)", timeout=15)
    follower.wait_for(status + r"live\b", timeout=15)
    mark = follower.mark()
    central.proc.stop()
    follower.wait_for(status + r"(Central closed the stream|cannot reach Central).*(reconnecting|retrying)…",
                      timeout=15, start=mark)
    mark = follower.mark()
    central.proc = procs.twistd("central-2", "evcentral", *central.args)
    central.proc.wait_for(r"panel client .* follows the stream \(1 now\)", timeout=20)
    follower.wait_for(status + r"live\b", timeout=15, start=mark)  # the new snapshot is drawn
    follower.kill(signal.SIGINT)
    assert follower.wait(15) == 0
    out = follower.output()
    assert "Traceback" not in out and "EV CHARGING — MONITORING PANEL" in out
    assert out.rindex("\x1b[?1049l") > out.rindex("\x1b[?1049h")  # the terminal's screen is given back


# -- the terminal panel's pure parts ------------------------------------------------------


def test_sse_parser_handles_events_comments_and_multiline_data():
    parser = panel.SseParser()
    lines = ["retry: 2000", "", ": keep-alive", "", "id: 1", "event: cp", 'data: {"a":', "data: 1}", "",
             "data: plain", ""]
    got = [e for e in map(parser.feed_line, lines) if e is not None]
    assert got == [("cp", '{"a":\n1}'), ("message", "plain")]


def cp(cp_id, state, **kw):
    return {"id": cp_id, "location": "Centro", "price": 0.3, "state": state, "stopped": state == "PARADO",
            "driver_id": None, "kw": None, "kwh": None, "euros": None, **kw}


def text_of(state):
    console = Console(file=io.StringIO(), width=120, color_system=None)
    console.print(panel.render(state, "http://x"))
    return console.file.getvalue()


def test_panel_state_follows_the_events_and_renders_every_state():
    state = panel.PanelState()
    assert "connecting" in text_of(state)
    state.apply("snapshot", json.dumps({"cps": [cp("CP1", "ACTIVADO"), cp("CP2", "DESCONECTADO")],
                                        "sessions": [], "messages": []}))
    state.apply("cp", json.dumps({"type": "cp", "cp": cp("CP3", "PARADO")}))
    state.apply("cp", json.dumps({"type": "cp", "cp": cp("CP4", "AVERIADO")}))
    session = {"id": "S1", "cp_id": "CP1", "driver_id": "D1", "state": "authorized", "started_at": 1.7e9}
    state.apply("session", json.dumps({"type": "session", "session": session}))
    state.apply("telemetry", json.dumps({"type": "telemetry", "cp": cp(
        "CP1", "SUMINISTRANDO", driver_id="D1", kw=11.0, kwh=0.5, euros=0.15)}))
    state.apply("message", json.dumps({"type": "message", "at": 1.7e9, "kind": "fault", "subject": "CP4",
                                       "text": "CP CP4 AVERIADO: boom"}))
    out = text_of(state)
    for expected in ("EV CHARGING — MONITORING PANEL", "live", "SUMINISTRANDO", "Driver D1", "11.0 kW", "0.15 €",
                     "DESCONECTADO", "Out of Order", "AVERIADO", "CP CP4 AVERIADO: boom", "ON-GOING DRIVERS REQUESTS"):
        assert expected in out, expected
    assert "D1" in out.split("ON-GOING DRIVERS REQUESTS")[1]
    state.apply("session", json.dumps({"type": "session", "session": {**session, "state": "closed"}}))
    assert state.sessions == {}
    state.disconnected("cannot reach Central; retrying…")
    assert "retrying" in text_of(state) and not state.live


def network_state():
    state = panel.PanelState()
    state.apply("snapshot", json.dumps({"cps": [
        cp("CP1", "SUMINISTRANDO", location="Alicante Centro", driver_id="D1", kw=11.0, kwh=0.5, euros=0.15),
        cp("CP2", "SUMINISTRANDO", location="Valencia Puerto", driver_id="D2", kw=7.4, kwh=1.0, euros=0.3),
        cp("CP3", "AVERIADO", location="Valencia Norte"), cp("CP4", "PARADO", location="Elche"),
        cp("CP5", "DESCONECTADO", location="Murcia")], "sessions": [], "messages": []}))
    return state


def test_the_panel_summary_counts_every_state_the_power_and_the_charges():
    state = network_state()
    assert panel.summary(state.cps.values()) == {
        "cps": 5, "states": {"ACTIVADO": 0, "SUMINISTRANDO": 2, "PARADO": 1, "AVERIADO": 1, "DESCONECTADO": 1},
        "power_kw": 18.4, "charging": 2}
    assert panel.summary_line(state.cps.values()).plain == (
        "5 CPs  ACTIVADO 0   SUMINISTRANDO 2   PARADO 1   AVERIADO 1   DESCONECTADO 1   18.4 kW now · 2 charging")
    state.apply("cp", json.dumps({"type": "cp", "cp": cp("CP2", "ACTIVADO", location="Valencia Puerto")}))
    out = text_of(state)
    assert "ACTIVADO 1" in out and "SUMINISTRANDO 1" in out and "11.0 kW now · 1 charging" in out
    assert "showing" not in out
    assert panel.summary([]) == {"cps": 0, "states": dict.fromkeys(panel.STATES, 0), "power_kw": 0.0, "charging": 0}


def shown_tiles(state, cp_filter):
    console = Console(file=io.StringIO(), width=200, color_system=None)
    console.print(panel.render(state, "http://x", cp_filter))
    out = console.file.getvalue()
    return [cp_id for cp_id in state.cps if f" {cp_id} " in out], out


@pytest.mark.parametrize("states, search, shown", [
    ([], "", ["CP1", "CP2", "CP3", "CP4", "CP5"]),
    (["averiado"], "", ["CP3"]),
    (["SUMINISTRANDO,parado"], "", ["CP1", "CP2", "CP4"]),
    (["AVERIADO", "DESCONECTADO"], "", ["CP3", "CP5"]),
    ([], " VALENCIA ", ["CP2", "CP3"]),
    ([], "cp4", ["CP4"]),
    (["SUMINISTRANDO"], "valencia", ["CP2"]),
    (["ACTIVADO"], "", []),
])
def test_the_panel_filter_by_state_and_search_chooses_the_tiles_and_the_summary_counts_them_all(states, search, shown):
    cp_filter = panel.CpFilter.parse(states, search)
    tiles, out = shown_tiles(network_state(), cp_filter)
    assert tiles == shown
    assert "5 CPs  ACTIVADO 0   SUMINISTRANDO 2" in out  # every CP, whatever is shown
    if cp_filter.active:
        assert f"showing {len(shown)} of 5: " in out
    if not shown:
        assert "No charging point matches the filter." in out


def test_the_panel_filter_refuses_an_unknown_state_in_one_line(capsys):
    with pytest.raises(ValueError, match="^--state must be one of ACTIVADO, SUMINISTRANDO, PARADO, AVERIADO, "
                                         "DESCONECTADO, not 'CHARGING'$"):
        panel.CpFilter.parse(["ACTIVADO,charging"])
    assert panel.CpFilter.parse(["parado"], "x").describe() == "PARADO, matching 'x'"
    reactor = MemoryReactorClock()
    assert on_reactor(reactor, "panel", "--http", "http://c:1", "--state", "bogus") == [2]
    assert capsys.readouterr().err.splitlines() == [
        "evctl: --state must be one of ACTIVADO, SUMINISTRANDO, PARADO, AVERIADO, DESCONECTADO, not 'BOGUS'"]
    assert reactor.tcpClients == []


# -- the panel's stream on twisted.web's Agent (fakes: an Agent, StringTransport, task.Clock) ---------

SNAPSHOT = json.dumps({"cps": [cp("CP1", "ACTIVADO")], "sessions": [], "messages": []})
REFUSED = error.ConnectionRefusedError(111, "Connection refused")
NOT_HTTP = ResponseFailed([Failure(ParseError("wrong number of parts", b"SSH-2.0"))])


def sse(event, data):
    return f"event: {event}\ndata: {data}\n\n".encode()


class FakeResponse:
    """A response head; its body is fed to the protocol it is delivered to (over a StringTransport)."""

    def __init__(self, code=200, phrase=b"OK"):
        self.code, self.phrase = code, phrase
        self.body = self.transport = None

    def deliverBody(self, protocol):
        self.body, self.transport = protocol, StringTransport()
        protocol.makeConnection(self.transport)

    def end(self, reason=None):
        self.body.connectionLost(Failure(reason or ResponseDone()))


class FakeAgent:
    """Records each request; the test answers it (L{answer}) or fails it (L{fail})."""

    def __init__(self):
        self.requests = []

    def request(self, method, uri, headers=None, bodyProducer=None):
        d = defer.Deferred()
        self.requests.append((method, uri, headers, d))
        return d

    def answer(self, *body, code=200, phrase=b"OK"):
        response = FakeResponse(code, phrase)
        self.requests[-1][3].callback(response)
        for data in body:
            response.body.dataReceived(data)
        return response

    def fail(self, exc):
        self.requests[-1][3].errback(Failure(exc))


def results(d):
    got = []
    d.addBoth(got.append)
    return got


def test_sse_parser_takes_the_body_in_any_chunking_and_any_line_ending():
    body = b"retry: 2000\r\n\r\n: keep-alive\n\nevent: cp\ndata: {\"a\":\r\ndata: 1}\n\n" + sse("message", "€ plain")
    expected = [("cp", '{"a":\n1}'), ("message", "€ plain")]
    for size in range(1, len(body) + 1):
        parser = panel.SseParser()
        got = [e for i in range(0, len(body), size) for e in parser.feed(body[i:i + size])]
        assert got == expected, size


def test_sse_parser_refuses_a_line_that_never_ends():
    parser = panel.SseParser(max_line=10)
    assert parser.feed(b"data: 12345\n\n") == [("message", "12345")]  # a long line that ends is fine
    with pytest.raises(panel.LineTooLong):
        parser.feed(b"data: 1234567890")


def test_event_stream_asks_for_the_stream_and_hands_each_event_on_until_central_ends_it():
    agent, clock, state = FakeAgent(), Clock(), panel.PanelState()
    s = stream.EventStream(agent, "http://central:8080/", state.apply, clock)
    done = results(s.start())
    [(method, uri, headers, _)] = agent.requests
    assert (method, uri, headers.getRawHeaders(b"accept")) == (b"GET", b"http://central:8080/api/v1/stream",
                                                               [b"text/event-stream"])
    response = agent.answer(b"retry: 2000\n\n" + sse("snapshot", SNAPSHOT)[:20])
    assert not state.live
    response.body.dataReceived(sse("snapshot", SNAPSHOT)[20:] + b": keep-alive\n\n")
    response.body.dataReceived(sse("cp", json.dumps({"type": "cp", "cp": cp("CP1", "AVERIADO")})))
    assert state.live and state.cps["CP1"]["state"] == "AVERIADO" and done == []
    response.end()
    assert done == [None] and clock.getDelayedCalls() == []


@pytest.mark.parametrize("answer, status", [
    (lambda agent: agent.fail(REFUSED), "cannot reach Central at http://c:1 ([Errno 111] Connection refused); retrying…"),
    (lambda agent: agent.answer(code=503, phrase=b"Service Unavailable"), "Central answered 503 Service Unavailable; retrying…"),
    (lambda agent: agent.answer(b'event: snapshot\ndata: {"no": "cps"}\n\n'), "cannot read Central's stream (a snapshot event"),
    (lambda agent: agent.fail(NOT_HTTP), "cannot read Central's stream (not an HTTP answer); reconnecting…"),
    (lambda agent: agent.answer().end(ResponseFailed([Failure(error.ConnectionLost())])),
     "cannot reach Central at http://c:1 (the connection was lost); retrying…"),
    (lambda agent: agent.answer().end(ResponseFailed([Failure(error.ConnectionDone())])), "Central closed the stream; reconnecting…"),
])
def test_the_follower_says_how_each_connection_ended(answer, status):
    agent, clock, lost = FakeAgent(), Clock(), []
    follower = stream.Follower(agent, "http://c:1", panel.PanelState().apply, lost.append, clock)
    follower.startService()
    answer(agent)
    assert len(lost) == 1 and lost[0].startswith(status), lost


@pytest.mark.parametrize("exc, reason", [
    (REFUSED, "[Errno 111] Connection refused"),
    (error.DNSLookupError("no results for hostname lookup: nope"), "DNS lookup failed: no results for hostname lookup: nope"),
    (NotImplementedError("SSL support unavailable"), "https needs TLS support: pip install 'twisted[tls]'"),
    (ResponseNeverReceived([Failure(error.ConnectionLost())]), "the connection was lost"),
])
def test_a_failed_connection_is_described_in_a_few_words(exc, reason):
    assert stream.describe(Failure(exc)) == reason


def test_the_follower_reconnects_after_a_backoff_and_shows_each_disconnection():
    agent, clock, state = FakeAgent(), Clock(), panel.PanelState()
    follower = stream.Follower(agent, "http://central:8080/", state.apply, state.disconnected, clock,
                               retry=backoffPolicy(initialDelay=2.0, maxDelay=10.0, factor=1.5, jitter=lambda: 0))
    follower.startService()
    agent.fail(REFUSED)
    assert not state.live and state.status.startswith("cannot reach Central at http://central:8080/ ([Errno 111]")
    clock.advance(1.9)
    assert len(agent.requests) == 1  # no new attempt before the backoff
    clock.advance(0.1)
    assert len(agent.requests) == 2
    agent.fail(REFUSED)
    clock.advance(2.9)
    assert len(agent.requests) == 2  # the second pause is longer: 3 s
    clock.advance(0.1)
    assert len(agent.requests) == 3 and agent.requests[-1][1] == b"http://central:8080/api/v1/stream"
    response = agent.answer(sse("snapshot", SNAPSHOT))
    assert state.live and state.status == "live" and list(state.cps) == ["CP1"]
    response.end()
    assert not state.live and state.status == "Central closed the stream; reconnecting…"
    clock.advance(2.0)  # a connection that brought events starts the backoff again
    assert len(agent.requests) == 4
    agent.answer(sse("snapshot", SNAPSHOT))
    assert state.live


def test_a_silent_stream_is_dropped_and_followed_again():
    agent, clock, state = FakeAgent(), Clock(), panel.PanelState()
    follower = stream.Follower(agent, "http://c:1", state.apply, state.disconnected, clock, retry=lambda n: 2.0)
    follower.startService()
    clock.advance(40)  # no answer at all: the request is given up
    assert agent.requests[0][3].called and state.status == "cannot reach Central at http://c:1 (timed out); retrying…"
    clock.advance(2)
    response = agent.answer(sse("snapshot", SNAPSHOT))
    clock.advance(39)
    response.body.dataReceived(b": keep-alive\n\n")  # any byte proves the connection alive
    clock.advance(39)
    assert state.live and response.transport.producerState == "producing"
    clock.advance(1)
    assert response.transport.producerState == "stopped" and "(timed out)" in state.status


def test_stopping_the_follower_closes_the_stream_and_cancels_the_next_attempt():
    agent, clock, lost = FakeAgent(), Clock(), []
    follower = stream.Follower(agent, "http://c:1", lambda e, d: None, lost.append, clock)
    follower.startService()
    response = agent.answer(sse("snapshot", SNAPSHOT))
    follower.stopService()
    assert response.transport.producerState == "stopped" and lost == [] and clock.getDelayedCalls() == []
    follower.startService()
    agent.fail(REFUSED)
    follower.stopService()
    assert clock.getDelayedCalls() == [] and len(agent.requests) == 2


def test_the_live_panel_redraws_from_the_stream_and_prints_the_last_panel_at_exit():
    agent, clock, until = FakeAgent(), Clock(), defer.Deferred()
    console = Console(file=io.StringIO(), width=120, color_system=None)  # not a terminal
    running = results(defer.ensureDeferred(terminal.panel_live(agent, clock, "http://x", console, until, 40.0)))
    response = agent.answer(sse("snapshot", SNAPSHOT))
    assert running == [] and console.file.getvalue() == ""
    until.callback(None)  # Ctrl+C
    assert running == [0] and response.transport.producerState == "stopped" and clock.getDelayedCalls() == []
    out = console.file.getvalue()
    assert "EV CHARGING — MONITORING PANEL" in out and "CP1" in out
    assert re.search(r"^http://x\s+live\s*$", out, re.M), out


@pytest.mark.parametrize("answer, error_type, line", [
    (lambda agent: agent.fail(REFUSED), UserError, "cannot reach Central at http://x: [Errno 111] Connection refused"),
    (lambda agent: agent.answer(code=404, phrase=b"Not Found"), CentralRefused, "404 Not Found"),
    (lambda agent: agent.answer(b": keep-alive\n\n").end(), UserError, "http://x closed the stream before its snapshot"),
    (lambda agent: agent.fail(NOT_HTTP), UserError,
     "http://x did not send Central's event stream (not an HTTP answer): is it Central's --http endpoint?"),
])
def test_the_panel_once_prints_the_snapshot_or_says_why_not(answer, error_type, line):
    agent, clock = FakeAgent(), Clock()
    console = Console(file=io.StringIO(), width=120, color_system=None)
    once = results(defer.ensureDeferred(terminal.panel_once(agent, clock, "http://x", console, 10.0)))
    answer(agent)
    assert once[0].check(error_type) and str(once[0].value) == line
    agent, clock = FakeAgent(), Clock()
    once = results(defer.ensureDeferred(terminal.panel_once(agent, clock, "http://x", console, 10.0)))
    response = agent.answer(sse("snapshot", SNAPSHOT))
    assert once == [0] and response.transport.producerState == "stopped" and "CP1" in console.file.getvalue()


# -- evctl's user errors: one line on stderr, a non-zero exit, no traceback --------------------------


class FakeOpener:
    """urllib's opener for CentralApi: records the request, answers with C{answer} (a body or an exception)."""

    def __init__(self, answer):
        self.answer, self.requests = answer, []

    def open(self, request, timeout):
        self.requests.append(request)
        if isinstance(self.answer, BaseException):
            raise self.answer
        return io.BytesIO(self.answer)


def evctl_plain(capsys, *argv, answer=b"{}"):
    opener = FakeOpener(answer)
    code = cli.run_plain(cli.build_parser().parse_args(argv), opener)
    return code, capsys.readouterr().err.splitlines(), opener


@pytest.mark.parametrize("answer, code, line", [
    (urllib.error.URLError(ConnectionRefusedError(111, "Connection refused")), 2,
     "evctl: cannot reach Central at http://c:1: [Errno 111] Connection refused"),
    (urllib.error.HTTPError("http://c:1/api/v1/cps", 502, "Bad Gateway", {}, io.BytesIO(b"<html>")), 1,
     "evctl: Central refused: 502 Bad Gateway"),
    (urllib.error.HTTPError("http://c:1/api/v1/cps", 409, "Conflict", {}, io.BytesIO(b'{"error": "not now"}')), 1,
     "evctl: Central refused: not now"),
    (http.client.BadStatusLine("SSH-2.0"), 2, "evctl: http://c:1 did not answer HTTP: is it Central's --http endpoint?"),
    (b"<html>", 2, "evctl: http://c:1 did not answer JSON: is it Central's --http endpoint?"),
])
def test_evctl_explains_what_central_answered_in_one_line(capsys, answer, code, line):
    assert evctl_plain(capsys, "cps", "--http", "http://c:1", answer=answer)[:2] == (code, [line])


@pytest.mark.parametrize("url", ["127.0.0.1:8080", "http://", "http://127.0.0.1:abc", "http://127.0.0.1:99999",
                                 "http://[::1", "http://c 1", "http://c:1/\n"])
def test_evctl_refuses_a_url_that_is_not_one_before_sending_anything(capsys, url):
    code, err, opener = evctl_plain(capsys, "stop", "all", "--http", url)
    assert code == 2 and len(err) == 1 and err[0].startswith(f"evctl: --http must be a URL like {cli.DEFAULT_HTTP}, not {url!r}")
    assert opener.requests == []


def test_evctl_says_which_token_file_it_cannot_use_before_sending_anything(capsys, tmp_path):
    (tmp_path / "empty").write_text("\n")
    for path, why in ((tmp_path / "missing", "cannot read it: No such file or directory"),
                      (tmp_path / "empty", "the file is empty"), (tmp_path, "cannot read it: Is a directory")):
        code, err, opener = evctl_plain(capsys, "stop", "CP1", "--http", "http://c:1", "--token-file", str(path))
        assert (code, err, opener.requests) == (2, [f"evctl: --token-file {path}: {why}"], [])
    (tmp_path / "token").write_text(" tok-1\n")
    code, err, opener = evctl_plain(capsys, "stop", "CP 1", "--http", "http://c:1/", "--token-file", str(tmp_path / "token"),
                                    answer=b'{"ok": true, "message": "CP CP 1 stopped"}')
    [request] = opener.requests
    assert (code, request.full_url, request.get_method(), request.data) == (0, "http://c:1/api/v1/cps/CP%201/stop", "POST", b"{}")
    assert request.get_header("Authorization") == "Bearer tok-1"


def on_reactor(reactor, *argv):
    return results(defer.ensureDeferred(cli.run_on_reactor(reactor, cli.build_parser().parse_args(argv))))


def test_evctl_engine_says_in_one_line_when_the_endpoint_is_wrong_or_out_of_reach(capsys):
    reactor = MemoryReactorClock()
    assert on_reactor(reactor, "engine", "nope:x", "status") == [2]
    assert capsys.readouterr().err.splitlines() == [
        "evctl: 'nope:x' is not a client endpoint string (e.g. tcp:host=127.0.0.1:port=7101): Unknown endpoint type: 'nope'"]
    for failure, why in ((REFUSED, "Connection was refused by other side: 111: Connection refused."),
                         (OverflowError("connect_ex(): port must be 0-65535"), "connect_ex(): port must be 0-65535")):
        reactor = MemoryReactorClock()
        done = on_reactor(reactor, "engine", "7101", "status")
        [(host, port, factory, _, _)] = reactor.tcpClients
        assert (host, port) == ("127.0.0.1", 7101)
        factory.clientConnectionFailed(None, Failure(failure))
        assert done == [2]
        assert capsys.readouterr().err.splitlines() == [f"evctl: cannot reach the control endpoint 7101: {why}"]
    reactor = MemoryReactorClock()
    done = on_reactor(reactor, "engine", "7101", "status", "--timeout", "3")
    reactor.tcpClients[0][2].buildProtocol(None).makeConnection(StringTransport())
    reactor.advance(3)
    assert done == [2]
    assert capsys.readouterr().err.splitlines() == ["evctl: no answer from 7101 within 3 s"]
