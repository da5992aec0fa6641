"""
The network on four computers, as docs/deploy.md deploys it, each computer a
network namespace of this machine (tests/multihost.py) on a private subnet:

- PC1 10.77.0.1: the drivers;
- PC2 10.77.0.2: EV_Central, EV_Registry, Kafka and MariaDB (dedicated
  instances, bound to PC2's address);
- PC3 10.77.0.3 and PC4 10.77.0.4: one charging point each (Engine + Monitor).

Every process binds to its computer's address.  The CP links (Monitor ->
Central, Monitor -> Engine) and the drivers' link to Central are TLS with
certificates of a CA the test makes; the Registry's API is HTTPS with one;
Kafka and MariaDB are plain TCP.  A real charge runs across the computers in
Kafka mode; then PC4's cable is pulled (a partition, not a kill): its CP is
DESCONECTADO within the liveness timeout and its charge ends with a ticket;
the cable back, the CP recovers by itself and charges again.

Needs root; if the namespaces cannot be made the test fails saying why.
Everything is stopped by PID and the namespaces are deleted at the end.
"""

from __future__ import annotations

import functools
import json
import subprocess
import time

import pytest

from evnet.launcher import Proc
from tests.multihost import Certificates, Host, HostServices, Lab, LabError
from tests.network import eventually, events
from tests.procs import BIN, ProcGroup

LIVENESS = 3.0  # Central's --liveness-timeout
CENTRAL_PORT, DRIVERS_PORT, HTTP_PORT, REGISTRY_PORT = 7000, 7001, 8080, 7443
ENGINE_PORT = 7100


@functools.cache
def monitor_options() -> str:
    """``twistd evmonitor --help``: which options this Monitor has."""
    return subprocess.run([str(BIN / "twistd"), "evmonitor", "--help"], capture_output=True, text=True,
                          timeout=30).stdout


class Deployment:
    """What the guide's operator started where, and how to ask it."""

    def __init__(self, lab: Lab, procs: ProcGroup, pki: Certificates, services: HostServices):
        self.lab, self.procs, self.pki, self.services = lab, procs, pki, services
        self.pc1, self.pc2 = lab.hosts["pc1"], lab.hosts["pc2"]
        self.cp_hosts = {"CP3": lab.hosts["pc3"], "CP4": lab.hosts["pc4"]}
        self.dir = procs.workdir
        self.central: Proc | None = None
        self.engines: dict[str, Proc] = {}
        self.monitors: dict[str, Proc] = {}

    def dump(self) -> str:
        return "\n".join(f"===== {p.name}\n{p.output()[-2500:]}" for p in self.procs.procs)

    # -- PC2 --------------------------------------------------------------------------

    def start_central(self) -> None:
        pc2 = self.pc2
        self.central = pc2.twistd(
            self.procs, "EV_Central", "evcentral",
            "--listen", self.pki.server(CENTRAL_PORT, pc2, "central"),
            "--drivers", self.pki.server(DRIVERS_PORT, pc2, "central-drivers"),
            "--http", f"tcp:{HTTP_PORT}:interface={pc2.address}",
            "--db", self.services.mysql_url,
            "--kafka", self.services.kafka,
            "--liveness-timeout", f"{LIVENESS:g}",
        )
        self.central.wait_for("EV_Central ready", timeout=60)

    def start_registry(self) -> None:
        pc2 = self.pc2
        cert, key = self.pki.issue("registry", pc2.address)
        self.admin_token = self.dir / "admin.token"
        self.admin_token.write_text("t0k3n-" + "x" * 32 + "\n")
        self.admin_token.chmod(0o600)
        registry = pc2.twistd(
            self.procs, "EV_Registry", "evregistry",
            "--listen", f"tcp:{REGISTRY_PORT}:interface={pc2.address}",
            "--db", self.services.mysql_url, "--tls-cert", str(cert), "--tls-key", str(key),
            "--admin-token-file", str(self.admin_token),
        )
        registry.wait_for("EV_Registry ready", timeout=60)

    def evctl(self, host: Host, *args: str) -> dict | list:
        out = host.run(str(BIN / "evctl"), *args, "--json", timeout=30)
        return json.loads(out.stdout)

    def cp_states(self) -> dict[str, str]:
        """Central's view of the CPs, asked on PC2 as its operator does (evctl cps)."""
        cps = self.evctl(self.pc2, "cps", "--http", f"http://{self.pc2.address}:{HTTP_PORT}")
        return {cp["id"]: cp["state"] for cp in cps}

    def sessions(self) -> list[dict]:
        return self.services.sql("SELECT * FROM sessions ORDER BY started_at")

    # -- PC3, PC4 ---------------------------------------------------------------------

    def register_cp(self, cp_id: str) -> None:
        """The operator enrolls the CP on PC2; the CP's host registers itself with that token (HTTPS)."""
        registry = ["--registry", f"https://{self.pc2.address}:{REGISTRY_PORT}", "--ca-file", str(self.pki.ca)]
        token = self.dir / f"{cp_id}.token"
        self.evctl(self.pc2, "registry", "enroll", cp_id, *registry, "--token-file", str(self.admin_token),
                   "--token-output", str(token))
        host = self.cp_hosts[cp_id]
        self.evctl(host, "registry", "add", cp_id, "--location", f"Street {cp_id}", "--price", "0.30",
                   *registry, "--enrollment-token-file", str(token),
                   "--credentials-file", str(self.dir / f"{cp_id}.credentials.json"))

    def start_cp(self, cp_id: str) -> None:
        host = self.cp_hosts[cp_id]
        mark = self.central.mark()
        self.engines[cp_id] = host.twistd(
            self.procs, f"EV_CP_E-{cp_id}", "evengine",
            "--listen", self.pki.server(ENGINE_PORT, host, f"engine-{cp_id}"),
            "--control", "none", "--state-dir", str(self.dir / f"engine-{cp_id}"),
            "--power-kw", "36", "--auto-plug", "--kafka", self.services.kafka,
        )
        host.wait_for_port(ENGINE_PORT)
        # The CP's host registered it already (evctl registry add): the Monitor logs in with that file.
        login = ["--credentials-file", str(self.dir / f"{cp_id}.credentials.json")]
        self.monitors[cp_id] = host.twistd(
            self.procs, f"EV_CP_M-{cp_id}", "evmonitor",
            "--cp-id", cp_id, "--location", f"Street {cp_id}", "--price", "0.30",
            "--engine", self.pki.client(host, ENGINE_PORT),
            "--central", self.pki.client(self.pc2, CENTRAL_PORT),
            "--kafka", self.services.kafka, *login,
        )
        try:
            self.central.wait_for(rf"CP {cp_id} authenticated", timeout=60, start=mark)
        except AssertionError as e:
            raise AssertionError(f"{e}\n--- its Monitor said:\n{self.monitors[cp_id].output()[-4000:]}") from None

    # -- PC1 --------------------------------------------------------------------------

    def driver(self, driver_id: str, lines: str) -> Proc:
        requests = self.dir / f"{driver_id}.txt"
        requests.write_text(lines)
        return self.pc1.command(
            self.procs, f"EV_Driver-{driver_id}", "evdriver", "--driver-id", driver_id,
            "--requests-file", str(requests), "--kafka", self.services.kafka, "--wait", "0.5", "--json",
        )

    def listed(self, *way: str) -> list[str]:
        """The CPs Central lists as available to a driver on PC1 asking by C{way}."""
        out = self.pc1.run(str(BIN / "evdriver"), "--driver-id", "probe", "--list", "--json",
                           "--charge-timeout", "10", *way, timeout=30, check=False)
        return [cp["cp"] for line in out.stdout.splitlines() if (e := json.loads(line))["type"] == "available"
                for cp in e["cps"]]


@pytest.fixture
def deployment(tmp_path):
    lab = Lab.of(Host("pc1", "drivers", 1), Host("pc2", "EV_Central, EV_Registry, Kafka, MariaDB", 2),
                 Host("pc3", "charging point CP3", 3), Host("pc4", "charging point CP4", 4))
    procs = ProcGroup(str(tmp_path / "run"))
    services = None
    try:
        lab.open()
        pki = Certificates(tmp_path)
        services = HostServices(lab.hosts["pc2"], tmp_path / "pc2-services")
        yield Deployment(lab, procs, pki, services)
    finally:
        try:
            procs.stop_all()
            if services is not None:
                services.down()
        finally:
            lab.close()


@pytest.mark.multihost
@pytest.mark.slow
def test_four_computers_a_charge_a_partition_and_a_recovery(deployment):
    net = deployment
    t0 = time.monotonic()
    net.services.up()  # PC2: MariaDB and Kafka on 10.77.0.2
    net.start_central()
    net.start_registry()
    for cp_id in net.cp_hosts:
        net.register_cp(cp_id)
        net.start_cp(cp_id)

    # PC1 reaches Central over TLS (the drivers' link) and through Kafka.
    assert sorted(net.listed("--central", net.pki.client(net.pc2, DRIVERS_PORT))) == ["CP3", "CP4"], net.dump()
    eventually(lambda: sorted(net.listed("--kafka", net.services.kafka)) == ["CP3", "CP4"], 90,
               "both CPs available to PC1 through Kafka", net.dump, interval=0.5)
    assert [r["cp_id"] for r in net.services.sql("SELECT cp_id FROM registrations ORDER BY cp_id")] == \
        ["CP3", "CP4"]

    # 1. A charge end to end across the computers: PC1 -> Kafka on PC2 -> Central -> PC3's Monitor and Engine.
    d1 = net.driver("D1", "CP3 0.05\n")
    assert d1.wait(90) == 0, net.dump()
    [ticket] = events(d1, "ticket")
    assert (ticket["cp"], ticket["reason"]) == ("CP3", "target") and ticket["kwh"] == pytest.approx(0.05, abs=1e-6)
    assert events(d1, "charging"), net.dump()

    # 2. PC4's cable out in the middle of a charge: its CP is DESCONECTADO within the liveness
    #    timeout, and the charge ends with a ticket that reaches the driver on PC1.
    d2 = net.driver("D2", "CP4 0.5\n")  # 50 s at 36 kW: it is still charging when the cable goes
    d2.wait_for(r'"type": "charging"', timeout=60)
    pc4 = net.cp_hosts["CP4"]
    net.lab.unplug(pc4)
    cut = time.monotonic()
    eventually(lambda: net.cp_states()["CP4"] == "DESCONECTADO", LIVENESS + 5, "CP4 DESCONECTADO", net.dump,
               interval=0.2)
    assert time.monotonic() - cut <= LIVENESS + 5
    assert net.cp_states()["CP3"] != "DESCONECTADO"  # only PC4 is cut off
    assert d2.wait(60) == 0, net.dump()
    [ticket2] = events(d2, "ticket")
    assert (ticket2["cp"], ticket2["reason"]) == ("CP4", "disconnected"), net.dump()
    assert 0 < ticket2["kwh"] < 0.5

    # 3. The cable back: the CP recovers by itself (nothing restarted) and charges again.
    net.lab.plug(pc4)
    eventually(lambda: net.cp_states()["CP4"] == "ACTIVADO", 90, "CP4 ACTIVADO again", net.dump, interval=0.5)
    # Its Engine supplied on while cut off; it learns that Central closed the charge (the stored
    # ticket, once its telemetry reaches Central again) and is free for the next one.
    net.engines["CP4"].wait_for(rf"Ticket for session {ticket2['session']}: .*charge closed", timeout=60)
    for cp_id in net.cp_hosts:
        assert net.engines[cp_id].running and net.monitors[cp_id].running, net.dump()
    assert net.central.running
    d3 = net.driver("D3", "CP4 0.03\n")
    assert d3.wait(90) == 0, net.dump()
    [ticket3] = events(d3, "ticket")
    assert (ticket3["cp"], ticket3["reason"]) == ("CP4", "target"), net.dump()

    # In Central's database on PC2: three charges, each once, closed, as the drivers saw them.
    rows = eventually(lambda: (rs := net.sessions()) and all(r["ticket_delivered_at"] for r in rs) and rs, 30,
                      "every ticket marked delivered", net.dump)
    assert [(r["id"], r["cp_id"], r["status"], r["end_reason"]) for r in rows] == [
        (ticket["session"], "CP3", "closed", "target"),
        (ticket2["session"], "CP4", "closed", "disconnected"),
        (ticket3["session"], "CP4", "closed", "target"),
    ]
    for row, t in zip(rows, (ticket, ticket2, ticket3)):
        assert row["kwh"] == pytest.approx(t["kwh"], abs=1e-6)
    for proc in net.procs.procs:
        assert "Traceback" not in proc.output(), proc.output()[-4000:]
    assert time.monotonic() - t0 < 400  # bounded: a few minutes on two cores


# -- the harness fails, it never skips, where namespaces cannot be made ---------------


def test_not_root_is_a_failure_that_says_why(monkeypatch):
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    with pytest.raises(LabError, match="must run as root: it creates network namespaces"):
        Lab.of(Host("pc1", "drivers", 1)).open()


def test_ip_netns_refused_is_a_failure_that_says_why(monkeypatch, tmp_path):
    fake = tmp_path / "ip"
    fake.write_text("#!/bin/sh\necho 'mount --make-shared /run/netns failed: Operation not permitted' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    monkeypatch.setattr("os.geteuid", lambda: 0)
    lab = Lab.of(Host("pc1", "drivers", 1))
    with pytest.raises(LabError, match=r"cannot create network namespaces.*\(root with CAP_SYS_ADMIN"
                                       r".*Operation not permitted"):
        lab.open()
    assert lab.made == []  # nothing to undo
