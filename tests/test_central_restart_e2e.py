"""
Central killed mid-charge and started again on the same database: the CP
reconnects, the charge is reconciled, and the driver gets exactly one ticket.
Real processes: evcentral, evengine, evmonitor, evdriver.
"""

import json
import signal
import sqlite3

import pytest

from tests.network import registered
from tests.procs import free_port, wait_for_port

pytestmark = pytest.mark.slow


def events(proc, kind):
    out = []
    for line in proc.output().splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if event.get("type") == kind:
            out.append(event)
    return out


def test_central_killed_mid_charge_restarts_and_the_driver_gets_one_ticket(procs, tmp_path):
    cp_port, drivers_port, engine_port, control_port = (free_port() for _ in range(4))
    db = tmp_path / "central.db"
    central_args = [
        "--listen", f"tcp:{cp_port}:interface=127.0.0.1",
        "--drivers", f"tcp:{drivers_port}:interface=127.0.0.1",
        "--http", "none",
        "--db", f"sqlite:{db}",
    ]
    central = procs.twistd("central-1", "evcentral", *central_args)
    central.wait_for("EV_Central ready")
    procs.twistd(
        "engine", "evengine",
        "--listen", f"tcp:{engine_port}:interface=127.0.0.1",
        "--control", f"tcp:{control_port}:interface=127.0.0.1",
        "--state-dir", str(tmp_path / "engine"), "--power-kw", "36", "--auto-plug",
    )
    wait_for_port(engine_port)
    procs.twistd(
        "monitor", "evmonitor", "--cp-id", "CP1", "--location", "Centro", "--price", "0.30",
        "--engine", f"tcp:host=127.0.0.1:port={engine_port}",
        "--central", f"tcp:host=127.0.0.1:port={cp_port}",
        *registered(f"sqlite:{db}", tmp_path, "CP1", "Centro", 0.30),
    )
    central.wait_for("CP CP1 authenticated", timeout=20)
    requests = tmp_path / "requests.txt"
    requests.write_text("CP1 0.08\n")  # 8 s at 36 kW
    driver = procs.command(
        "driver", "evdriver", "--driver-id", "D1", "--requests-file", str(requests),
        "--central", f"tcp:host=127.0.0.1:port={drivers_port}", "--wait", "0.2", "--json",
    )
    driver.wait_for(r'"type": "charging"', timeout=30)

    central.kill(signal.SIGKILL)
    central.wait(10)

    central2 = procs.twistd("central-2", "evcentral", *central_args)
    central2.wait_for(r"EV_Central ready: 1 charging points known .* 1 charges open", timeout=20)
    central2.wait_for("CP CP1 authenticated", timeout=30)
    central2.wait_for(r"TICKET S\w+: driver D1 at CP CP1", timeout=40)
    assert driver.wait(60) == 0, driver.output()[-3000:]

    tickets = events(driver, "ticket")
    assert len(tickets) == 1, tickets
    assert tickets[0]["kwh"] == pytest.approx(0.08, abs=0.0015)
    assert central.count(r"TICKET S") + central2.count(r"TICKET S") == 1
    [summary] = events(driver, "summary")
    assert len(summary["tickets"]) == 1 and not summary["unfinished"]

    central2.stop()
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT status, kwh, ticket_delivered_at FROM sessions").fetchall()
    assert len(rows) == 1
    status, kwh, delivered = rows[0]
    assert status == "closed" and kwh == pytest.approx(0.08, abs=0.0015) and delivered is not None
