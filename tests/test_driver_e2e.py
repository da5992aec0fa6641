"""
EV_Driver against real processes: twistd evcentral, three charging points
(twistd evengine --auto-plug + twistd evmonitor) and the evdriver command.
"""

import json
import os
import secrets
import subprocess
import time

import pytest

from tests.network import registered
from tests.procs import BIN, free_port, wait_for_port

KAFKA = os.environ.get("EVNET_TEST_KAFKA")


def _available(reach: list[str], timeout: float = 30.0) -> list[str]:
    """The CPs Central says are available now, asked with evdriver --list --json."""
    try:
        out = subprocess.run(
            [str(BIN / "evdriver"), "--driver-id", "probe-" + secrets.token_hex(3), "--list", *reach, "--json"],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return []
    assert out.returncode == 0, out.stdout + out.stderr
    events = [json.loads(line) for line in out.stdout.splitlines()]
    return [cp["cp"] for e in events if e["type"] == "available" for cp in e["cps"]]


@pytest.fixture(params=["inband", pytest.param("kafka", marks=pytest.mark.kafka)])
def transport(request):
    """The same test in-band (framed links) and through the real Kafka broker."""
    if request.param == "kafka" and not KAFKA:
        pytest.skip("EVNET_TEST_KAFKA is not set (scripts/services.sh up sets it)")
    return request.param


@pytest.mark.slow
def test_driver_completes_a_ten_line_file_against_real_central_and_cps(procs, tmp_path, transport):
    run = secrets.token_hex(3)  # fresh ids: the shared broker keeps earlier runs' records
    CPS = tuple(f"CP{i}{run}" for i in (1, 2, 3))
    kafka = ["--kafka", KAFKA] if transport == "kafka" else []
    cp_port, driver_port = free_port(), free_port()
    central = procs.twistd(
        "central",
        "evcentral",
        "--listen", f"tcp:{cp_port}:interface=127.0.0.1",
        "--drivers", f"tcp:{driver_port}:interface=127.0.0.1",
        "--db", f"sqlite:{tmp_path / 'central.db'}",
        "--http", "none",
        *(kafka + ["--kafka-group", f"evcentral-{run}"] if kafka else []),
    )
    wait_for_port(driver_port)
    reach = kafka or ["--central", f"tcp:host=127.0.0.1:port={driver_port}"]
    for cp in CPS:
        engine_port = free_port()
        procs.twistd(
            f"engine-{cp}",
            "evengine",
            "--listen", f"tcp:{engine_port}:interface=127.0.0.1",
            "--control", f"tcp:{free_port()}:interface=127.0.0.1",
            "--state-dir", str(tmp_path / f"engine-{cp}"),
            "--power-kw", "360",  # 0.1 kWh a second: a 0.05 kWh target is reached at once
            "--auto-plug",
            *kafka,
        )
        wait_for_port(engine_port)
        procs.twistd(
            f"monitor-{cp}",
            "evmonitor",
            "--cp-id", cp,
            "--location", f"Street {cp}",
            "--price", "0.30",
            "--engine", f"tcp:host=127.0.0.1:port={engine_port}",
            "--central", f"tcp:host=127.0.0.1:port={cp_port}",
            *registered(f"sqlite:{tmp_path / 'central.db'}", tmp_path, cp, f"Street {cp}", 0.30),
            *kafka,
        )
    deadline = time.monotonic() + 90
    while sorted(_available(reach)) != sorted(CPS):
        assert time.monotonic() < deadline, f"CPs not available after 90 s:\n{central.output()[-4000:]}"
        time.sleep(0.3)

    requests = tmp_path / "driver.txt"
    requests.write_text(
        "# ten charges, all with a small target\n"
        + "".join(f"{CPS[i % len(CPS)]} 0.05\n" for i in range(10))
    )
    driver = procs.command(
        "driver",
        "evdriver",
        "--driver-id", f"D1-{run}",
        "--requests-file", str(requests),
        *reach,
        "--wait", "0.2",
        "--charge-timeout", "30",
        "--json",
    )
    assert driver.wait(120) == 0, driver.output()
    events = [json.loads(line) for line in driver.output().splitlines()]
    outcomes = [e for e in events if e["type"] in ("ticket", "denied", "timeout")]
    assert [(e["type"], e["n"], e["cp"]) for e in outcomes] == [
        ("ticket", i + 1, CPS[i % len(CPS)]) for i in range(10)
    ], driver.output()
    assert all(e["reason"] == "target" and e["kwh"] >= 0.05 for e in outcomes), driver.output()
    assert all(e["euros"] == pytest.approx(e["kwh"] * 0.30, abs=0.011) for e in outcomes)
    (summary,) = [e for e in events if e["type"] == "summary"]
    assert len(summary["tickets"]) == 10 and summary["refused"] == [] and summary["unfinished"] == []


@pytest.mark.slow
def test_driver_says_plainly_when_central_is_unreachable(procs, tmp_path):
    requests = tmp_path / "driver.txt"
    requests.write_text("CP01\n")
    port = free_port()
    driver = procs.command(
        "driver", "evdriver", "--driver-id", "D1", "--requests-file", str(requests),
        "--central", f"tcp:host=127.0.0.1:port={port}",
    )
    driver.wait_for(rf"cannot reach Central at tcp:host=127.0.0.1:port={port} .*retrying", timeout=10)
    time.sleep(2)  # it keeps retrying, and says so only once
    assert driver.popen.poll() is None
    assert driver.count("cannot reach Central") == 1
    assert "Traceback" not in driver.output()


@pytest.mark.slow
@pytest.mark.parametrize("central", ["unreachable", "silent"])
def test_driver_list_gives_up_with_code_3_when_central_never_answers(procs, central):
    import socket

    silent = None
    if central == "silent":  # a port that takes the connection and never answers the ENQ
        silent = socket.socket()
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
    else:
        port = free_port()
    try:
        started = time.monotonic()
        driver = procs.command(
            "driver", "evdriver", "--driver-id", "D1", "--list",
            "--central", f"tcp:host=127.0.0.1:port={port}", "--charge-timeout", "3", "--json",
        )
        assert driver.wait(30) == 3, driver.output()
        assert time.monotonic() - started < 25
    finally:
        if silent is not None:
            silent.close()
    events = [json.loads(line) for line in driver.output().splitlines()]
    assert events[-1] == {
        "type": "list_timeout", "driver": "D1", "central": f"tcp:host=127.0.0.1:port={port}",
        "seconds": 3.0, "part": 0, "parts": 0,
    }
    assert "available" not in [e["type"] for e in events]
