"""EV_W's operator commands (terminal, control endpoint, evctl weather) and ``twistd evweather``'s options."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import pytest_twisted
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import LogLevel, capturedLogs, formatEvent
from twisted.python import usage

from evnet.ctl import cli
from evnet.linecontrol import ConsoleProtocol, ConsoleService, ControlFactory
from evnet.weather.control import command
from evnet.weather.office import WeatherOffice
from evnet.weather.state import StateFile
from evnet.weather.tap import API_KEY_ENV, Options
from tests.network import within
from tests.weatherfakes import FakeCentral, FakeSource

SECRET = "s3cr3t-0123456789abcdef"


@pytest.fixture
def office(tmp_path):
    clock = Clock()
    clock.advance(1_764_620_000)
    o = WeatherOffice(FakeSource(Alicante=-1.5, Elche=9), FakeCentral("Alicante Centro"), clock,
                      StateFile(str(tmp_path)), mapping={"Alicante Centro": "Alicante"})
    o.startService()
    yield o
    o.stopService()


def test_commands_answer_one_line_ok_or_error(office):
    assert command(office, "help").startswith("OK commands:")
    assert command(office, "add Elche") == "OK EV_W watches Elche"
    assert command(office, "ADD   Elche") == "ERROR Elche is already on the list"
    assert command(office, "add") == "ERROR usage: add CITY"
    assert command(office, "list") == (
        "OK Alicante: FROST, -1.5 °C at " + _hms(office) + " (CPs at Alicante Centro); alert at Central for "
        "Alicante Centro\nElche: MILD, 9.0 °C at " + _hms(office) + " (added)")
    rows = json.loads(command(office, "list --json")[3:])
    assert [(r["city"], r["state"], r["temperature"]) for r in rows] == [("Alicante", "FROST", -1.5),
                                                                          ("Elche", "MILD", 9.0)]
    assert command(office, "remove Elche") == "OK EV_W no longer watches Elche"
    assert command(office, "remove Elche") == "ERROR Elche is not on the list"
    assert command(office, "fly") == "ERROR unknown command 'fly' (try: help)"


def _hms(office):
    from datetime import datetime

    return datetime.fromtimestamp(office.clock.seconds()).strftime("%H:%M:%S")


def test_the_control_endpoint_answers_each_line_on_one_line(office):
    protocol = ControlFactory(lambda line: command(office, line)).buildProtocol(None)
    transport = StringTransport()
    protocol.makeConnection(transport)
    protocol.dataReceived(b"add Madrid\r\nlist\n")
    first, second = transport.value().decode().splitlines()
    assert first == "OK EV_W watches Madrid"
    assert second.startswith("OK Alicante: FROST") and " | Madrid: " in second
    protocol.dataReceived(b"x" * 2000 + b"\n")
    assert transport.value().endswith(b"ERROR line too long\r\n") or b"ERROR line too long" in transport.value()
    assert transport.disconnecting


def test_the_terminal_takes_the_same_commands(office):
    transport = StringTransport()
    protocol = ConsoleProtocol(lambda line: command(office, line), "EV_W: type a command (help lists them)")
    protocol.makeConnection(transport)
    protocol.dataReceived(b"add Teruel\n")
    assert transport.value().decode() == "EV_W: type a command (help lists them)\nOK EV_W watches Teruel\n"


def test_a_stdin_that_cannot_be_read_is_one_line():
    def closed(protocol):
        raise OSError(9, "Bad file descriptor")

    failures = []
    with capturedLogs() as events:
        ConsoleService(lambda line: "", failures.append, "hi", stdio=closed).startService()
    assert failures == ["cannot read commands from stdin: Bad file descriptor"]
    assert [formatEvent(e) for e in events if e["log_level"] >= LogLevel.warn] == failures


@pytest_twisted.ensureDeferred
async def test_evctl_weather_adds_lists_and_removes_through_the_control_endpoint(office, capsys):
    from twisted.internet import reactor

    port = reactor.listenTCP(0, ControlFactory(lambda line: command(office, line)), interface="127.0.0.1")
    endpoint = str(port.getHost().port)

    async def evctl(*argv):
        args = cli.build_parser().parse_args(["weather", *argv])
        return await within(defer_of(cli.run_on_reactor(reactor, args)), 10, f"evctl weather {argv}")

    try:
        assert await evctl("add", endpoint, "San", "Vicente") == 0
        assert capsys.readouterr().out == "EV_W watches San Vicente\n"
        assert await evctl("list", endpoint) == 0
        out = capsys.readouterr().out.splitlines()
        assert out[0].startswith("Alicante: FROST") and out[1].startswith("San Vicente: ")
        assert await evctl("list", endpoint, "--json") == 0
        assert [r["city"] for r in json.loads(capsys.readouterr().out)] == ["Alicante", "San Vicente"]
        assert await evctl("remove", endpoint, "Alicante") == 1
        assert "watched for Central's CPs at Alicante Centro" in capsys.readouterr().err
        assert await evctl("add", endpoint) == 2
        assert capsys.readouterr().err.strip() == "evctl: usage: evctl weather add ENDPOINT CITY"
    finally:
        await port.stopListening()


def defer_of(coroutine):
    from twisted.internet import defer

    return defer.ensureDeferred(coroutine)


# -- twistd evweather's options ------------------------------------------------------------


def options(tmp_path, *argv, env=None, monkeypatch=None):
    if monkeypatch is not None:
        monkeypatch.delenv(API_KEY_ENV, raising=False)
        for name, value in (env or {}).items():
            monkeypatch.setenv(name, value)
    o = Options()
    o.parseOptions(["--state-dir", str(tmp_path / "state"), *argv])
    return o


@pytest.mark.parametrize("argv", [
    ["--api-key", SECRET], [f"--api-key={SECRET}"], ["--central-token", SECRET], ["--token", SECRET],
    ["--api", SECRET], ["--central-tok", SECRET],
])
def test_no_secret_is_taken_on_the_command_line_nor_repeated(tmp_path, monkeypatch, argv):
    with pytest.raises(usage.UsageError) as caught:
        options(tmp_path, *argv, monkeypatch=monkeypatch)
    assert SECRET not in str(caught.value)


def test_a_secret_file_that_cannot_be_read_is_not_named(tmp_path, monkeypatch):
    for option in ("--api-key-file", "--central-token-file"):
        with pytest.raises(usage.UsageError) as caught:
            options(tmp_path, option, SECRET, monkeypatch=monkeypatch)
        assert SECRET not in str(caught.value) and "cannot read that file" in str(caught.value)


def test_the_api_key_comes_from_its_file_or_the_environment(tmp_path, monkeypatch):
    key = tmp_path / "key"
    key.write_text(SECRET + "\n")
    key.chmod(0o600)
    assert options(tmp_path, "--api-key-file", str(key), monkeypatch=monkeypatch).api_key == SECRET
    assert options(tmp_path, env={API_KEY_ENV: SECRET}, monkeypatch=monkeypatch).api_key == SECRET
    with pytest.raises(usage.UsageError, match="OpenWeather needs an API key"):
        options(tmp_path, monkeypatch=monkeypatch)
    token = tmp_path / "token"
    token.write_text("tok en")
    with pytest.raises(usage.UsageError, match="one line without spaces"):
        options(tmp_path, "--central-token-file", str(token), env={API_KEY_ENV: SECRET}, monkeypatch=monkeypatch)


def test_the_local_source_needs_no_key_and_checks_its_file(tmp_path, monkeypatch):
    weather = tmp_path / "weather.txt"
    weather.write_text("Alicante = 3\n")
    o = options(tmp_path, "--local-weather", str(weather), monkeypatch=monkeypatch)
    assert o.api_key is None and o["interval"] == 4.0 and o["threshold"] == 0.0 and o["control"] == "none"
    with pytest.raises(usage.UsageError, match="no such file"):
        options(tmp_path, "--local-weather", str(tmp_path / "missing"), monkeypatch=monkeypatch)


@pytest.mark.parametrize("argv, why", [
    (["--interval", "0"], "--interval must be a number of seconds above 0"),
    (["--threshold", "cold"], "--threshold must be a temperature"),
    (["--refresh-every", "1.5"], "--refresh-every must be a whole number"),
    (["--central", "ftp://x"], "--central: expected Central's web panel URL"),
    (["--openweather-url", "nope"], "--openweather-url: expected a base URL"),
    (["--control", "tcp:notaport"], "--control 'tcp:notaport' is not a server endpoint string"),
])
def test_bad_options_are_one_clear_line(tmp_path, monkeypatch, argv, why):
    with pytest.raises(usage.UsageError, match=why):
        options(tmp_path, *argv, env={API_KEY_ENV: SECRET}, monkeypatch=monkeypatch)


def test_the_locations_file_and_the_state_file_are_checked_at_start(tmp_path, monkeypatch):
    locations = tmp_path / "locations.txt"
    locations.write_text("Alicante Centro = Alicante\nwhat\n")
    with pytest.raises(usage.UsageError, match=f"--locations-file {locations} line 2: expected"):
        options(tmp_path, "--locations-file", str(locations), env={API_KEY_ENV: SECRET}, monkeypatch=monkeypatch)
    locations.write_text("Alicante Centro = Alicante\n")
    o = options(tmp_path, "--locations-file", str(locations), env={API_KEY_ENV: SECRET}, monkeypatch=monkeypatch)
    assert o.mapping == {"Alicante Centro": "Alicante"}
    (tmp_path / "state" / "weather-state.json").write_text("{")
    with pytest.raises(usage.UsageError, match="move it away to start afresh"):
        options(tmp_path, env={API_KEY_ENV: SECRET}, monkeypatch=monkeypatch)


def test_the_tap_imports_no_reactor_and_twistd_lists_evweather():
    script = (
        "import sys\n"
        "import evnet.weather.tap\n"
        "assert 'twisted.internet.reactor' not in sys.modules, 'the tap imported the reactor'\n"
        "from twisted.plugin import getPlugins\n"
        "from twisted.application.service import IServiceMaker\n"
        "import twisted.plugins\n"
        "names = {p.tapname for p in getPlugins(IServiceMaker, twisted.plugins)}\n"
        "assert 'evweather' in names, names\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
