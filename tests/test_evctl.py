"""
``evctl cps | stop | resume | sessions | panel`` against a real ``twistd
evcentral`` (with a real Engine and Monitor for CP1), and the terminal
panel's pure parts (SSE parsing, state, rendering, reconnecting).
"""

from __future__ import annotations

import io
import json
import re
import signal
import time
import urllib.error

import pytest
from rich.console import Console

from evnet.ctl import panel
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


@pytest.mark.slow
def test_evctl_panel_follows_central_across_a_restart_and_quits_on_ctrl_c(procs, tmp_path):
    central = Central(procs, tmp_path)
    follower = procs.command("panel", "evctl", "panel", "--http", central.url)
    central.proc.wait_for(r"panel client .* follows the stream \(1 now\)", timeout=15)
    central.proc.stop()
    central.proc = procs.twistd("central-2", "evcentral", *central.args)
    central.proc.wait_for(r"panel client .* follows the stream \(1 now\)", timeout=20)
    time.sleep(1)  # the snapshot follows the connection within milliseconds
    follower.kill(signal.SIGINT)
    assert follower.wait(15) == 0
    out = follower.output()
    assert "Traceback" not in out and "EV CHARGING — MONITORING PANEL" in out
    # Drawn at exit (stdout is not a terminal here): the status line of the last state, connected again.
    assert re.search(rf"^{re.escape(central.url)}\s+live\s*$", out, re.M), out


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


def test_follow_reconnects_after_a_failure_and_after_the_stream_ends():
    class Opener:
        def __init__(self):
            self.calls = 0

        def open(self, request, timeout):
            self.calls += 1
            assert request.full_url == "http://central:8080/api/stream" and timeout == 40.0
            if self.calls == 1:
                raise urllib.error.URLError(ConnectionRefusedError("refused"))
            return io.BytesIO(b'event: snapshot\ndata: {"n": 1}\n\n: keep-alive\n\n')

    events, lost, sleeps = [], [], []
    panel.follow("http://central:8080/", lambda e, d: events.append((e, d)), lost.append,
                 opener=Opener(), sleep=sleeps.append, rounds=2)
    assert events == [("snapshot", '{"n": 1}')]
    assert "cannot reach Central at http://central:8080/" in lost[0] and "closed the stream" in lost[1]
    assert sleeps == [2.0, 2.0]
