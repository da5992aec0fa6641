"""
Drivers' accounts against real processes (issue 14): twistd evcentral
--driver-auth required, a charging point, and evdriver with and without
credentials, on a link and through the real Kafka broker.
"""

import json
import os
import secrets
import sqlite3
import time

import pytest

from tests.network import driver_signed_up, registered
from tests.procs import free_port, wait_for_port

KAFKA = os.environ.get("EVNET_TEST_KAFKA")


@pytest.fixture(params=["inband", pytest.param("kafka", marks=pytest.mark.kafka)])
def transport(request):
    if request.param == "kafka" and not KAFKA:
        pytest.skip("EVNET_TEST_KAFKA is not set (scripts/services.sh up sets it)")
    return request.param


@pytest.mark.slow
def test_only_the_signed_up_driver_charges_as_itself_and_an_impostor_is_refused_and_recorded(procs, tmp_path, transport):
    run = secrets.token_hex(3)
    cp, driver_id = f"CPA{run}", f"DA{run}"
    db = f"sqlite:{tmp_path / 'central.db'}"
    kafka = ["--kafka", KAFKA] if transport == "kafka" else []
    cp_port, driver_port = free_port(), free_port()
    credentials = driver_signed_up(db, tmp_path, driver_id)
    central = procs.twistd(
        "central", "evcentral",
        "--listen", f"tcp:{cp_port}:interface=127.0.0.1", "--drivers", f"tcp:{driver_port}:interface=127.0.0.1",
        "--db", db, "--http", "none", "--driver-auth", "required",
        *(kafka + ["--kafka-group", f"evcentral-{run}"] if kafka else []),
    )
    wait_for_port(driver_port)
    reach = kafka or ["--central", f"tcp:host=127.0.0.1:port={driver_port}"]
    engine_port = free_port()
    procs.twistd("engine", "evengine", "--listen", f"tcp:{engine_port}:interface=127.0.0.1",
                 "--control", f"tcp:{free_port()}:interface=127.0.0.1", "--state-dir", str(tmp_path / "engine"),
                 "--power-kw", "360", "--auto-plug", *kafka)
    wait_for_port(engine_port)
    procs.twistd("monitor", "evmonitor", "--cp-id", cp, "--location", "Centro", "--price", "0.30",
                 "--engine", f"tcp:host=127.0.0.1:port={engine_port}", "--central", f"tcp:host=127.0.0.1:port={cp_port}",
                 *registered(db, tmp_path, cp, "Centro", 0.30), *kafka)
    requests = tmp_path / "requests.txt"
    requests.write_text(f"{cp} 0.05\n{cp}\n")  # the second line has no target: auto-plug ends it
    deadline = time.monotonic() + 60
    while True:  # the CP must be up: the honest driver's first line would be denied otherwise
        with sqlite3.connect(tmp_path / "central.db") as conn:
            state = conn.execute("SELECT state FROM cps WHERE id = ?", (cp,)).fetchone()
        if state and state[0] == "ACTIVADO":
            break
        assert time.monotonic() < deadline, central.output()[-3000:]
        time.sleep(0.3)

    impostor = procs.command("impostor", "evdriver", "--driver-id", driver_id, "--requests-file", str(requests),
                             *reach, "--charge-timeout", "15", "--json", "--progress-file", str(tmp_path / "p1"))
    if transport == "kafka":
        # Central answers a stranger nothing through Kafka: it says hello again and again; stop it after a while.
        impostor.wait_for('"no_answer"', timeout=30)
        code = impostor.stop()
    else:
        code = impostor.wait(60)
    events = [json.loads(line) for line in impostor.output().splitlines() if line.startswith("{")]
    assert not [e for e in events if e["type"] in ("authorized", "charging", "ticket")], impostor.output()
    if transport == "inband":
        assert code == 1 and any(e["type"] == "refused" for e in events), impostor.output()
    else:
        assert not [e for e in events if e["type"] == "connected"], impostor.output()

    honest = procs.command("driver", "evdriver", "--driver-id", driver_id, "--requests-file", str(requests), *reach,
                           *credentials, "--wait", "0.2", "--charge-timeout", "40", "--json",
                           "--progress-file", str(tmp_path / "p2"))
    assert honest.wait(120) == 0, honest.output()
    events = [json.loads(line) for line in honest.output().splitlines()]
    tickets = [e for e in events if e["type"] == "ticket"]
    assert [(t["n"], t["reason"]) for t in tickets] == [(1, "target"), (2, "unplug")], honest.output()
    assert any(e["type"] == "available" for e in events)  # point 11, while working through the file
    with sqlite3.connect(tmp_path / "central.db") as conn:
        rows = conn.execute("SELECT kind, detail FROM events WHERE kind LIKE 'driver-%'").fetchall()
        sessions = conn.execute("SELECT driver_id FROM sessions").fetchall()
    assert len(sessions) == 2
    refused = [d for k, d in rows if k == "driver-refused"]
    assert refused and all(driver_id in d for d in refused), rows
    if transport == "inband":
        assert any("127.0.0.1" in d for d in refused), rows  # the impostor's address
    assert any(k == "driver-auth" and "authenticated" in d for k, d in rows), rows
