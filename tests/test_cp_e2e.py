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
