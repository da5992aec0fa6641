"""
The statement's program names (evnet.names): EV_Central, EV_CP_E, EV_CP_M,
EV_Registry, EV_W over their twistd plugins, EV_Driver over evdriver.  The wheel
test (test_packaging) checks that they are installed as commands.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from evnet import names
from tests.procs import free_port

# program -> an option only its plugin has
OWN_OPTION = {
    "EV_Central": "--liveness-timeout",
    "EV_CP_E": "--power-kw",
    "EV_CP_M": "--health-period",
    "EV_Registry": "--tls-cert",
    "EV_W": "--local-weather",
}


def run(capsys, program, *argv):
    with pytest.raises(SystemExit) as exit:
        names.run_twistd(program, list(argv))
    out, err = capsys.readouterr()
    return exit.value.code, out, err


def test_each_twistd_program_is_its_plugin_in_the_foreground_without_a_pid_file():
    assert set(names.TWISTD_PROGRAMS) == set(OWN_OPTION)
    assert names.twistd_arguments("evcentral", ["--db", "sqlite:x.db"]) == [
        "--nodaemon", "--pidfile=", "evcentral", "--db", "sqlite:x.db"
    ]
    config = names.server_options("EV_CP_E", "evengine")
    config.parseOptions(names.twistd_arguments("evengine", ["--power-kw", "22", "--state-dir", "/tmp"]))
    assert config["nodaemon"] and config["pidfile"] == ""
    assert config.subCommand == "evengine" and config.subOptions["power-kw"] == 22.0


@pytest.mark.parametrize("program", sorted(OWN_OPTION))
def test_help_shows_the_plugins_options_under_the_programs_name(capsys, program):
    code, out, err = run(capsys, program, "--help")
    assert code == 0, err
    assert out.startswith(f"Usage: {program} ")
    assert OWN_OPTION[program] in out
    assert f"twistd -n --pidfile= {names.TWISTD_PROGRAMS[program]} ARGS" in " ".join(out.split())
    assert "--reactor" not in out  # twistd's own options are not the program's


def test_a_bad_option_is_one_line_naming_the_program(capsys):
    code, out, err = run(capsys, "EV_Central", "--liveness-timeout", "x")
    assert code == 1 and out == ""
    assert err == "EV_Central: --liveness-timeout must be a number, not 'x'\nEV_Central --help lists the options.\n"


def test_ev_driver_is_evdriver_under_its_own_name(capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["EV_Driver", "--help"])
    with pytest.raises(SystemExit) as exit:
        names.ev_driver()
    out, _ = capsys.readouterr()
    assert exit.value.code == 0
    assert out.startswith("usage: EV_Driver ") and "--requests-file" in out and "--kafka" in out


@pytest.mark.slow
def test_ev_central_runs_in_the_foreground_like_twistd_n(procs):
    port = free_port()
    code = "import sys; sys.argv[0] = 'EV_Central'; from evnet.names import ev_central; ev_central()"
    central = procs.start("EV_Central", [
        sys.executable, "-c", code, "--listen", f"tcp:{port}:interface=127.0.0.1",
        "--drivers", f"tcp:{free_port()}:interface=127.0.0.1", "--http", "none",
        "--db", f"sqlite:{procs.workdir / 'central.db'}",
    ])
    central.wait_for("EV_Central ready", timeout=30)  # logged to stdout: in the foreground
    assert central.running
    assert not list(Path(procs.workdir).glob("*.pid"))  # --pidfile=: none written
    central.stop()
    central.wait_for("Server Shut Down", timeout=5)  # stopped as twistd stops, by SIGTERM to its PID
