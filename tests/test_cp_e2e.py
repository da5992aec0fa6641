"""
A charging point as real processes: ``twistd evengine`` and ``twistd
evmonitor`` against a real ``twistd evcentral``; a fault simulated with
``evctl engine … fault`` reaches Central as AVR, and the recovery as RCV.
"""

import pytest

from tests.procs import free_port, wait_for_port

pytestmark = pytest.mark.slow


def evctl(procs, name, control_port, *command):
    proc = procs.command(name, "evctl", "engine", f"tcp:host=127.0.0.1:port={control_port}", *command)
    assert proc.wait(15) == 0, proc.output()
    return proc.output()


def test_fault_through_the_control_command_reaches_central_as_avr(procs, tmp_path):
    cp_port, drivers_port, engine_port, control_port = (free_port() for _ in range(4))
    central = procs.twistd(
        "central", "evcentral",
        "--listen", f"tcp:{cp_port}:interface=127.0.0.1",
        "--drivers", f"tcp:{drivers_port}:interface=127.0.0.1",
        "--db", f"sqlite:{tmp_path / 'central.db'}",
        "--http", "none",
    )
    engine = procs.twistd(
        "engine", "evengine",
        "--listen", f"tcp:{engine_port}:interface=127.0.0.1",
        "--control", f"tcp:{control_port}:interface=127.0.0.1",
        "--state-dir", str(tmp_path / "engine-state"),
    )
    wait_for_port(cp_port)
    wait_for_port(control_port)
    monitor = procs.twistd(
        "monitor", "evmonitor",
        "--cp-id", "CPX1", "--location", "Test bench", "--price", "0.35",
        "--engine", f"tcp:host=127.0.0.1:port={engine_port}",
        "--central", f"tcp:host=127.0.0.1:port={cp_port}",
    )
    monitor.wait_for(r"Central authenticated CP CPX1", timeout=20)
    monitor.wait_for(r"Engine OK", timeout=20)
    engine.wait_for(r"Serving CP CPX1 at 0\.350 EUR/kWh", timeout=20)
    assert "cp=CPX1" in evctl(procs, "status", control_port, "status")

    mark = central.mark()
    assert "fault simulated" in evctl(procs, "fault", control_port, "fault")
    monitor.wait_for(r"Engine KO: the Engine reports a fault", timeout=10)
    central.wait_for(r"CPX1.*(AVR|AVERIADO)|(AVR|AVERIADO).*CPX1", timeout=10, start=mark)

    mark = central.mark()
    evctl(procs, "recover", control_port, "recover")
    monitor.wait_for(r"Engine OK again", timeout=10)
    central.wait_for(r"CPX1.*(RCV|ACTIVADO|recover)|(RCV|ACTIVADO).*CPX1", timeout=10, start=mark)


def test_a_second_engine_on_a_taken_control_port_stops_in_one_line(procs, tmp_path):
    control_port = free_port()
    control = f"tcp:{control_port}:interface=127.0.0.1"
    first = procs.twistd(
        "engine1", "evengine",
        "--listen", f"tcp:{free_port()}:interface=127.0.0.1",
        "--control", control,
        "--state-dir", str(tmp_path / "state1"),
    )
    wait_for_port(control_port)
    second = procs.twistd(
        "engine2", "evengine",
        "--listen", f"tcp:{free_port()}:interface=127.0.0.1",
        "--control", control,
        "--state-dir", str(tmp_path / "state2"),
    )
    assert second.wait(20) == 1, second.output()
    out = second.output()
    lines = [line for line in out.splitlines() if "cannot listen" in line]
    assert len(lines) == 1, out
    assert f"cannot listen on --control {control}: address already in use" in lines[0]
    assert "Traceback" not in out
    assert first.running  # the first one is not disturbed
    assert "cp=?" in evctl(procs, "status", control_port, "status")


def test_an_engine_whose_state_file_cannot_be_restored_says_so_without_a_traceback(procs, tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    (state / "engine-state.json").write_text('{"version": 1, "session": {"phase": "supplying", "kwh": "lots"}}')
    engine = procs.twistd(
        "engine", "evengine",
        "--listen", f"tcp:{free_port()}:interface=127.0.0.1",
        "--control", "none",
        "--state-dir", str(state),
    )
    assert engine.wait(20) == 1, engine.output()
    engine.wait_for(r"the state file .*engine-state\.json cannot be restored: session: kwh is 'lots', not a number; "
                    r"move it away to start afresh")
    assert "Traceback" not in engine.output()
