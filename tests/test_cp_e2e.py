"""
A charging point as real processes: ``twistd evengine`` and ``twistd
evmonitor`` against a real ``twistd evcentral`` and ``twistd evregistry``:
the Monitor registers its CP with an enrollment token (0600 credentials
file) and logs in; a fault simulated with ``evctl engine … fault`` reaches
Central as AVR, and the recovery as RCV; ``evctl keys revoke`` puts the CP
out of service until ``evctl monitor … reauth``.
"""

import os
import stat

import pytest

from evnet.launcher import Registry
from evnet.registry.credentials import load_credentials
from tests.procs import free_port, wait_for_port

pytestmark = pytest.mark.slow


def evctl(procs, name, control_port, *command, tool="engine"):
    proc = procs.command(name, "evctl", tool, f"tcp:host=127.0.0.1:port={control_port}", *command)
    assert proc.wait(15) == 0, proc.output()
    return proc.output()


def test_a_cp_registers_logs_in_reports_a_fault_and_comes_back_after_a_revoked_key(procs, tmp_path):
    cp_port, drivers_port, http_port, engine_port, control_port, monitor_port = (free_port() for _ in range(6))
    db = f"sqlite:{tmp_path / 'central.db'}"
    registry = Registry(procs, db, tmp_path / "registry")
    registry.start()
    central = procs.twistd(
        "central", "evcentral",
        "--listen", f"tcp:{cp_port}:interface=127.0.0.1",
        "--drivers", f"tcp:{drivers_port}:interface=127.0.0.1",
        "--db", db,
        "--http", f"tcp:{http_port}:interface=127.0.0.1",
    )
    engine = procs.twistd(
        "engine", "evengine",
        "--listen", f"tcp:{engine_port}:interface=127.0.0.1",
        "--control", f"tcp:{control_port}:interface=127.0.0.1",
        "--state-dir", str(tmp_path / "engine-state"),
    )
    registry.enroll("CPX1")
    wait_for_port(cp_port)
    wait_for_port(control_port)
    credentials = tmp_path / "cpx1.json"
    monitor = procs.twistd(
        "monitor", "evmonitor",
        "--cp-id", "CPX1", "--location", "Test bench", "--price", "0.35",
        "--engine", f"tcp:host=127.0.0.1:port={engine_port}",
        "--central", f"tcp:host=127.0.0.1:port={cp_port}",
        "--control", f"tcp:{monitor_port}:interface=127.0.0.1",
        *registry.monitor_args("CPX1", credentials),
    )
    monitor.wait_for(r"The Registry registered CP CPX1: its credentials are in .*cpx1\.json \(mode 0600\)", timeout=30)
    monitor.wait_for(r"Central authenticated CP CPX1: its state there is ACTIVADO; key [0-9a-f]{8}", timeout=20)
    monitor.wait_for(r"Engine OK", timeout=20)
    engine.wait_for(r"Serving CP CPX1 at 0\.350 EUR/kWh", timeout=20)
    central.wait_for(r"CP CPX1 registered: Test bench, 0\.350 €/kWh \(EV_Registry\)", timeout=10)
    assert stat.S_IMODE(os.stat(credentials).st_mode) == 0o600
    secret = load_credentials(str(credentials)).secret
    for proc in (monitor, central, engine, registry.proc):
        assert secret not in proc.output()
    assert "cp=CPX1" in evctl(procs, "status", control_port, "status")
    assert "central=ready" in evctl(procs, "mstatus", monitor_port, "status", tool="monitor")

    mark = central.mark()
    assert "fault simulated" in evctl(procs, "fault", control_port, "fault")
    monitor.wait_for(r"Engine KO: the Engine reports a fault", timeout=10)
    central.wait_for(r"CPX1.*(AVR|AVERIADO)|(AVR|AVERIADO).*CPX1", timeout=10, start=mark)

    mark = central.mark()
    evctl(procs, "recover", control_port, "recover")
    monitor.wait_for(r"Engine OK again", timeout=10)
    central.wait_for(r"CPX1.*(RCV|ACTIVADO|recover)|(RCV|ACTIVADO).*CPX1", timeout=10, start=mark)

    # The operator revokes the key: out of service, and the Monitor waits for its own operator.
    mark, monitor_mark = central.mark(), monitor.mark()
    revoke = procs.command("revoke", "evctl", "keys", "revoke", "CPX1", "--http", f"http://127.0.0.1:{http_port}")
    assert revoke.wait(15) == 0, revoke.output()
    central.wait_for(r"CP CPX1 out of service: its key was revoked", timeout=10, start=mark)
    monitor.wait_for(r"Central revoked the key of CP CPX1: .*does not log in again by itself", timeout=10,
                     start=monitor_mark)
    assert "central=revoked" in evctl(procs, "revoked", monitor_port, "status", tool="monitor")
    assert "logging in to Central" in evctl(procs, "reauth", monitor_port, "reauth", tool="monitor")
    central.wait_for(r"CP CPX1 authenticated from", timeout=20, start=mark)
    monitor.wait_for(r"Central authenticated CP CPX1", timeout=10, start=monitor_mark)
    assert "Traceback" not in monitor.output()


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
