"""
The whole network in Kafka mode, as real processes against the real Apache
Kafka broker of scripts/services.sh (EVNET_TEST_KAFKA): twistd evcentral,
evengine and evmonitor with --kafka, and evdriver --kafka.

Every test uses its own CP ids, driver ids and Central consumer group, so
records left on the shared broker by earlier runs never interfere.  Every
wait is bounded.
"""

from __future__ import annotations

import os
import secrets
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from tests.kafkanet import available_through_kafka
from tests.network import eventually, events, registered
from tests.procs import free_port, wait_for_port

KAFKA = os.environ.get("EVNET_TEST_KAFKA")
REPO = Path(__file__).resolve().parent.parent

pytestmark = [
    pytest.mark.kafka,
    pytest.mark.slow,
    pytest.mark.skipif(not KAFKA, reason="EVNET_TEST_KAFKA is not set (scripts/services.sh up sets it)"),
]


def sessions(db: Path) -> list[dict]:
    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(row) for row in conn.execute("SELECT * FROM sessions ORDER BY started_at")]


class KafkaNetwork:
    """Central, CPs and drivers, all with --kafka, named uniquely for this test."""

    def __init__(self, procs, tmp_path):
        self.procs = procs
        self.tmp = tmp_path
        self.run = secrets.token_hex(3)
        self.db = tmp_path / "central.db"
        self.group = f"evcentral-test-{self.run}"
        self.cp_port = free_port()
        self.central_args = [
            "--listen", f"tcp:{self.cp_port}:interface=127.0.0.1",
            "--drivers", f"tcp:{free_port()}:interface=127.0.0.1",
            "--db", f"sqlite:{self.db}",
            "--http", "none",
            "--kafka", KAFKA,
            "--kafka-group", self.group,
        ]
        self.centrals = []
        self.engines = {}
        self.probes = 0

    def outputs(self) -> str:
        """Every process's last lines, for a failing assertion."""
        return "\n".join(f"--- {p.name}:\n{p.output()[-2500:]}" for p in self.procs.procs)

    def id(self, name: str) -> str:
        return f"{name}-{self.run}"

    def start_central(self):
        central = self.procs.twistd(f"central-{len(self.centrals) + 1}", "evcentral", *self.central_args)
        central.wait_for("EV_Central ready", timeout=20)
        self.centrals.append(central)
        return central

    def start_cp(self, cp_id: str, power_kw: float = 36.0):
        engine_port = free_port()
        engine = self.procs.twistd(
            f"engine-{cp_id}", "evengine",
            "--listen", f"tcp:{engine_port}:interface=127.0.0.1",
            "--control", "none",
            "--state-dir", str(self.tmp / f"engine-{cp_id}"),
            "--power-kw", str(power_kw),
            "--auto-plug",
            "--kafka", KAFKA,
        )
        wait_for_port(engine_port)
        self.engines[cp_id] = engine
        self.procs.twistd(
            f"monitor-{cp_id}", "evmonitor",
            "--cp-id", cp_id, "--location", f"Street {cp_id}", "--price", "0.30",
            "--engine", f"tcp:host=127.0.0.1:port={engine_port}",
            "--central", f"tcp:host=127.0.0.1:port={self.cp_port}",
            *registered(f"sqlite:{self.db}", self.tmp, cp_id, f"Street {cp_id}", 0.30),
            "--kafka", KAFKA,
        )
        return engine

    def available(self) -> list[str]:
        """The CPs Central says are available, asked through Kafka (evdriver --list; [] if no answer)."""
        self.probes += 1
        return available_through_kafka(self.id(f"probe{self.probes}"), ["--kafka", KAFKA])

    def wait_available(self, cps: list[str], timeout: float = 90.0) -> None:
        eventually(lambda: set(cps) <= set(self.available()), timeout, f"CPs {cps} available through Kafka",
                   self.outputs, interval=0.5)  # each probe is an evdriver process

    def driver(self, name: str, lines: list[str], *extra: str):
        requests = self.tmp / f"{name}.txt"
        requests.write_text("".join(line + "\n" for line in lines))
        return self.procs.command(
            name, "evdriver",
            "--driver-id", self.id(name), "--requests-file", str(requests),
            "--kafka", KAFKA, "--wait", "0.2", "--charge-timeout", "120", "--json", *extra,
        )


@pytest.fixture
def net(procs, tmp_path):
    return KafkaNetwork(procs, tmp_path)


def test_the_whole_network_through_kafka(net):
    central = net.start_central()
    cps = [net.id("KA"), net.id("KB")]
    for cp in cps:
        net.start_cp(cp)
    net.wait_available(cps)

    driver = net.driver("D", [f"{cps[0]} 0.03", f"{cps[1]} 0.03", f"{cps[0]} 0.04"])
    assert driver.wait(120) == 0, driver.output()[-4000:]

    tickets = events(driver, "ticket")
    assert [(t["n"], t["cp"], t["reason"]) for t in tickets] == [
        (1, cps[0], "target"), (2, cps[1], "target"), (3, cps[0], "target")
    ], driver.output()[-4000:]
    assert [t["kwh"] for t in tickets] == pytest.approx([0.03, 0.03, 0.04], abs=1e-6)
    assert events(driver, "connected")[0]["via"] == "kafka"
    # The telemetry went Engine -> cp.telemetry -> Central -> driver.notifications -> driver.
    for t in tickets:
        charging = [e for e in events(driver, "charging") if e["session"] == t["session"]]
        # (the first reading may come at the very start of the supply, with 0 kWh)
        assert charging and 0 < max(e["kwh"] for e in charging) <= t["kwh"], driver.output()[-4000:]
        assert [e["kwh"] for e in charging] == sorted(e["kwh"] for e in charging), driver.output()[-4000:]
        central.wait_for(rf"CP {t['cp']}: supplying session {t['session']}", timeout=5)
    # Central marks each ticket delivered when the driver's ACCEPTED#TICKET arrives.
    rows = eventually(
        lambda: (rs := sessions(net.db)) and all(r["ticket_delivered_at"] for r in rs) and rs,
        20, "every ticket marked delivered", lambda: f"{sessions(net.db)}\n{central.output()[-5000:]}",
    )
    assert [(r["status"], r["cp_id"]) for r in rows] == [("closed", t["cp"]) for t in tickets]
    assert [r["kwh"] for r in rows] == pytest.approx([t["kwh"] for t in tickets], abs=1e-9)
    for engine in net.engines.values():
        assert "not sent to Kafka" not in engine.output()
        assert "Traceback" not in engine.output()


# A SIGKILLed Central's consumer stays a member of its group until its session
# times out (the bus sets 10 s); restarted sooner, the new Central waits for the
# rebalance.  Both ways it must resume from its committed offsets.
@pytest.mark.parametrize(
    "down_seconds",
    [
        pytest.param(3, id="quick-restart"),
        pytest.param(15, id="after-the-session-timeout"),
    ],
)
def test_central_killed_mid_charge_resumes_from_its_committed_offsets(net, down_seconds):
    central = net.start_central()
    cp = net.id("KC")
    engine = net.start_cp(cp)
    net.wait_available([cp])

    driver = net.driver("D", [f"{cp} 0.12"])  # 12 s at 36 kW: it ends while Central is down
    driver.wait_for(r'"type": "charging"', timeout=30)
    central.kill()
    central.wait(10)
    # Not a wait for a condition: Central stays down for the scenario's time (before or after its
    # consumer's session timeout) while the Engine keeps publishing its telemetry and its STOP.
    # What happened meanwhile is asserted after the restart.
    time.sleep(down_seconds)
    central2 = net.start_central()
    central2.wait_for(rf"CP {cp} authenticated", timeout=30)

    assert driver.wait(120) == 0, driver.output()[-4000:]
    tickets = events(driver, "ticket")
    assert len(tickets) == 1, net.outputs()
    assert tickets[0]["kwh"] == pytest.approx(0.12, abs=1e-6), net.outputs()
    engine.wait_for(rf"Charge ended: session {tickets[0]['session']} ended \(target\): 0.120 kWh", timeout=5)
    assert central.count("TICKET S") + central2.count("TICKET S") == 1
    [row] = eventually(
        lambda: (rs := sessions(net.db)) and rs[0]["ticket_delivered_at"] and rs, 20, "the ticket marked delivered"
    )
    assert row["status"] == "closed" and row["kwh"] == pytest.approx(0.12, abs=1e-9)
    assert row["end_reason"] == "target"


def test_broker_restarted_mid_charge_loses_no_telemetry_and_no_ticket(net):
    central = net.start_central()
    cp = net.id("KR")
    engine = net.start_cp(cp)
    net.wait_available([cp])

    driver = net.driver("D", [f"{cp} 0.2"])  # 20 s at 36 kW
    driver.wait_for(r'"type": "charging"', timeout=30)
    subprocess.run(
        ["bash", str(REPO / "scripts" / "services.sh"), "restart-kafka"],
        check=True, timeout=180, stdout=subprocess.DEVNULL,
    )
    assert driver.wait(180) == 0, driver.output()[-4000:]

    tickets = events(driver, "ticket")
    assert len(tickets) == 1, driver.output()[-4000:]
    assert tickets[0]["kwh"] == pytest.approx(0.2, abs=1e-6) and tickets[0]["reason"] == "target"
    charging = [e["kwh"] for e in events(driver, "charging")]
    assert charging == sorted(charging)
    [row] = eventually(
        lambda: (rs := sessions(net.db)) and rs[0]["ticket_delivered_at"] and rs, 30, "the ticket marked delivered"
    )
    assert row["status"] == "closed" and row["kwh"] == pytest.approx(0.2, abs=1e-9)
    assert central.count("TICKET S") == 1
    # Every TELEM and the STOP waited for the broker and went out: none refused, none left unsent.
    assert "not sent to Kafka" not in engine.output() and "were not sent" not in engine.output()
    assert "Traceback" not in engine.output() + central.output()
