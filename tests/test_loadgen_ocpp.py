"""
``benchmarks/loadgen.py --ocpp`` on a few CPs, so that the OCPP load mode
cannot rot: a real Central with --ocpp, OCPP CPs that boot, heartbeat and
charge (RemoteStartTransaction, StartTransaction, MeterValues,
StopTransaction), drivers that get their TELEM and TICKET.  It checks what
happened, never how fast (the figures are docs/performance.md's).
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

LOADGEN = Path(__file__).resolve().parent.parent / "benchmarks" / "loadgen.py"


def test_the_ocpp_mode_boots_heartbeats_charges_and_tickets(tmp_path):
    out = tmp_path / "run.json"
    run = subprocess.run(
        [sys.executable, str(LOADGEN), "--ocpp", "--ocpp-heartbeat", "1", "--cps", "6", "--charges", "3",
         "--window", "3", "--scenarios", "idle,charge", "--connect-rate", "20", "--json-out", str(out)],
        capture_output=True, text=True, timeout=240,
    )
    assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
    results = json.loads(out.read_text())
    phases = {ph["phase"]: ph for ph in results["phases"]}
    assert sum(ph["errors"] for ph in phases.values()) == 0, [ph["error_samples"] for ph in phases.values()]
    assert phases["connect"]["boot_ms"]["n"] == 6
    assert phases["connect"]["workers"][0]["not_accepted"] == 0
    assert phases["idle"]["ocpp_call_rtt_ms"]["n"] >= 6 * 2  # Heartbeats, every second, from every CP
    assert phases["charge-ramp"]["req_to_authorized_ms"]["n"] == 3
    assert phases["charge-ramp"]["req_to_remote_start_ms"]["n"] == 3
    assert phases["charging"]["telemetry_ms"]["n"] >= 3 * 2  # MeterValues reached the drivers as TELEM
    assert phases["stop-charges"]["stop_to_ticket_ms"]["n"] == 3
    assert results["final_stop"] == [{"ok": True, "stopped": 3, "driver_tickets_missing": 0, "cp_tickets_missing": 0}]
    assert results["server_log"]["tracebacks"] == 0
