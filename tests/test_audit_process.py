"""
The audit trail of a real ``twistd evcentral``: a login with the wrong
secret from a raw socket is in the trail with its address and port, read by
``evctl audit tail``/``export`` from the database, and ``evctl audit
verify`` finds the trail intact while Central runs and after it stopped.
"""

import json
import signal
import stat
import os

import pytest

from evnet.protocols import messages as m
from evnet.protocols import security
from tests.procs import free_port, wait_for_port
from tests.test_central_process import RawMonitor, register_in_db

pytestmark = pytest.mark.slow


def test_a_refused_login_is_in_the_trail_with_its_address_and_the_trail_verifies(procs, tmp_path):
    port, drivers = free_port(), free_port()
    db = f"sqlite:{tmp_path}/c.db"
    register_in_db(tmp_path / "c.db", "CP1")
    central = procs.twistd("central", "evcentral", "--listen", f"tcp:{port}:interface=127.0.0.1",
                           "--drivers", f"tcp:{drivers}:interface=127.0.0.1", "--db", db, "--http", "none")
    central.wait_for("EV_Central ready")
    wait_for_port(port)
    key_file = tmp_path / "c.db.audit-key"
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    intruder = RawMonitor(port, "CP1")
    try:
        client = security.ClientLogin("CP1", "not-the-secret")
        intruder.send(client.start())
        intruder.send(client.answer(intruder.receive()))
        refused = intruder.receive()
        assert isinstance(refused, m.Refused) and refused.reason == "wrong credentials"
        local_port = intruder.sock.getsockname()[1]
    finally:
        intruder.close()
    central.wait_for("login of CP CP1 from 127.0.0.1")

    def export():
        proc = procs.command("export", "evctl", "audit", "export", "--jsonl", "--db", db, "--action", "cp.login")
        assert proc.wait(30) == 0, proc.output()
        return [json.loads(line) for line in proc.output().splitlines() if line.startswith("{")]

    from tests.network import eventually

    rows = eventually(lambda: export() or None, 15, "the refused login's audit row")
    (row,) = rows
    assert (row["actor_kind"], row["actor_id"], row["outcome"]) == ("cp", "CP1", "refused")
    assert (row["address"], row["port"]) == ("127.0.0.1", local_port)
    assert row["detail"]["reason"] == "wrong secret" and row["at"].endswith("Z") and len(row["at"]) == 27
    tail = procs.command("tail", "evctl", "audit", "tail", "--db", db, "-n", "5")
    assert tail.wait(30) == 0 and f"from 127.0.0.1:{local_port} cp.login refused" in tail.output()
    verify = procs.command("verify", "evctl", "audit", "verify", "--db", db)
    assert verify.wait(30) == 0 and "chain central: " in verify.output() and "intact" in verify.output()
    central.kill(signal.SIGTERM)
    central.wait(15)
    after = procs.command("verify2", "evctl", "audit", "verify", "--db", db, "--json")
    assert after.wait(30) == 0, after.output()
    report = json.loads(after.output().strip().splitlines()[-1])
    assert report["intact"] and [c["chain"] for c in report["chains"]] == ["central"]
    actions = [r["action"] for r in export()]
    assert actions == ["cp.login"]
    assert secret_free(central.output())


def secret_free(output):
    return "not-the-secret" not in output and "Traceback" not in output
