"""
``evnet demo`` as a person runs it (without the live panel): the whole network
comes up (every CP registered by its Monitor at the Registry, its credentials
in a 0600 file; the OCPP CP registered with evctl registry add), every driver
works through its file (D2 charges once at the OCPP CP: RemoteStartTransaction,
MeterValues, StopTransaction, its ticket), a CP's key is revoked and its Monitor
logs in again, the verdict is OK, exit 0, and no process it
started is left running.
"""

import os
import signal
import stat
import subprocess
from pathlib import Path

import pytest

from tests.network import fresh_mysql_database
from tests.procs import BIN

pytestmark = pytest.mark.slow


def processes_mentioning(text: str) -> list[str]:
    """Command lines of the running processes that contain C{text}."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if text in cmdline:
            found.append(f"{entry.name}: {cmdline}")
    return found


@pytest.fixture(params=["embedded", pytest.param("kafka-mysql", marks=[pytest.mark.kafka, pytest.mark.mysql])])
def backend(request):
    """The embedded default (SQLite, in-band), and the same demo on the real Kafka and MariaDB."""
    if request.param == "embedded":
        yield []
        return
    kafka, mysql = os.environ.get("EVNET_TEST_KAFKA"), os.environ.get("EVNET_TEST_MYSQL")
    if not (kafka and mysql):
        pytest.skip("EVNET_TEST_KAFKA / EVNET_TEST_MYSQL are not set (scripts/services.sh up sets them)")
    with fresh_mysql_database(mysql) as url:
        yield ["--kafka", kafka, "--db", url]


def run_bounded(args: list[str], timeout: float) -> subprocess.CompletedProcess:
    """
    Run the demo in a session of its own; past C{timeout} it is stopped as
    an operator would (SIGTERM: it stops its network), then its whole group
    is killed, so that a demo cut short never leaves its Central answering
    the next tests through the shared Kafka topics.
    """
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.terminate()
        try:
            out, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
        if _group_alive(proc.pid):
            os.killpg(proc.pid, signal.SIGKILL)
        raise AssertionError(f"the demo did not finish within {timeout:g} s:\n{(out + err)[-6000:]}") from None
    return subprocess.CompletedProcess(args, proc.returncode, out, err)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_demo_runs_the_network_to_an_ok_verdict_and_leaves_nothing_running(tmp_path, backend):
    workdir = tmp_path / "demo"
    demo = run_bounded([str(BIN / "evnet"), "demo", "--no-panel", "--wait", "1", "--workdir", str(workdir), *backend],
                       timeout=480)
    output = demo.stdout + demo.stderr
    assert demo.returncode == 0, output[-6000:]
    assert "VERDICT: OK" in output, output[-6000:]
    assert "sessions in the database, each ticketed once" in output
    assert "all 10 charging points and OCPP01 are connected" in output
    assert "OCPP01 (OCPP) charged and ticketed" in output
    assert "OCPP01    StopTransaction: transaction" in output
    assert "CP03 out of service with its key revoked and back after its Monitor's new login" in output
    assert "CP01, CP02 out of service in the frost and back" in output
    credentials = sorted(workdir.glob("credentials-CP*.json"))
    assert len(credentials) == 10
    credentials.append(workdir / "credentials-OCPP01.json")
    credentials += [workdir / f"credentials-{driver}.json" for driver in ("D1", "D2", "D3")]  # evctl drivers add
    assert "drivers must log in: --driver-auth required" in output
    assert "every driver logged in with its credentials (in the audit trail)" in output
    assert {stat.S_IMODE(os.stat(path).st_mode) for path in credentials} == {0o600}
    for driver in ("D1", "D2", "D3"):
        assert f"driver {driver}: " in output and "(exit code 0)" in output
    assert processes_mentioning(str(workdir)) == []
