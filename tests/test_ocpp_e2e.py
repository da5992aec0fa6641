"""
OCPP 1.6J on real processes: ``twistd evcentral --ocpp``, EV_Registry
(``twistd evregistry`` + ``evctl registry add``), ``evdriver``, and a charge
point written with the mobilityhouse ``ocpp`` library (``evnet ocpp-cp``).
Fuzzed frames and a wrong password come from a plain ``websockets`` client.
"""

import base64
import json
import random
import sqlite3
import ssl

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from evnet.central.store import parse_db_url
from tests.network import Network, eventually, events
from tests.procs import free_port, wait_for_port

pytestmark = pytest.mark.slow


class OcppNetwork(Network):
    def __init__(self, procs, tls=False):
        super().__init__(procs)
        self.ocpp_port = free_port()
        self.tls = tls
        self.cert = self.dir / "registry" / "registry-cert.pem"  # the Registry's self-signed one serves here too
        endpoint = f"tcp:{self.ocpp_port}:interface=127.0.0.1"
        if tls:
            key = self.dir / "registry" / "registry-key.pem"
            endpoint = f"ssl:{self.ocpp_port}:interface=127.0.0.1:privateKey={key}:certKey={self.cert}"
        self.central_args += ["--ocpp", endpoint, "--ocpp-heartbeat", "5"]
        self.registry_port = free_port()

    def start_central(self, ready=30.0):
        # "EV_Central ready" is said once the database is loaded; the listeners start after it.
        central = super().start_central(ready)
        wait_for_port(self.ocpp_port, timeout=ready)
        return central

    def start_registry(self):
        self.registry = self.procs.twistd("registry", "evregistry", "--listen",
                                          f"tcp:{self.registry_port}:interface=127.0.0.1", "--db", self.db,
                                          "--state-dir", str(self.dir / "registry"))
        wait_for_port(self.registry_port, timeout=30)

    def register(self, cp_id, location, price):
        """``evctl registry add``: the CP's secret, from its credentials file."""
        path = self.dir / f"{cp_id}.json"
        proc = self.procs.command(
            f"evctl-registry-{cp_id}", "evctl", "registry", "add", cp_id, "--location", location,
            "--price", str(price), "--registry", f"https://127.0.0.1:{self.registry_port}",
            "--ca-file", str(self.cert), "--credentials-file", str(path))
        assert self.finished(proc, 30) == 0, proc.output()
        return json.loads(path.read_text())["secret"]

    def url(self, cp_id):
        return f"{'wss' if self.tls else 'ws'}://127.0.0.1:{self.ocpp_port}/ocpp/{cp_id}"

    def charge_point(self, cp_id, secret):
        password = self.dir / f"{cp_id}.password"
        password.write_text(secret)
        return self.procs.command(f"ocpp-{cp_id}", "evnet", "ocpp-cp", "--url", self.url(cp_id),
                                  "--cp-id", cp_id, "--password-file", str(password), stdin=True)

    def events_table(self):
        with sqlite3.connect(parse_db_url(self.db).path) as conn:
            return [(k, s, d) for k, s, d in conn.execute("SELECT kind, subject, detail FROM events")]

    def client(self, cp_id, secret):
        token = base64.b64encode(f"{cp_id}:{secret}".encode()).decode()
        context = ssl.create_default_context(cafile=str(self.cert)) if self.tls else None
        return connect(self.url(cp_id), subprotocols=["ocpp1.6"], ssl=context,
                       additional_headers={"Authorization": f"Basic {token}"}, open_timeout=10)


def test_an_ocpp_charge_point_charges_faults_stops_and_refuses_strangers(procs):
    net = OcppNetwork(procs)
    net.start_registry()
    secret = net.register("CP01", "Calle OCPP 1", 0.4)
    fuzz_secret = net.register("CP02", "Calle OCPP 2", 0.3)
    net.start_central()
    cp = net.charge_point("CP01", secret)
    cp.wait_for(r'"type": "boot", "status": "Accepted", "interval": 5', timeout=30)
    listed = eventually(lambda: [c for c in net.evctl("cps") if c["id"] == "CP01" and c["state"] == "ACTIVADO"],
                        20, "CP01 ACTIVADO", net.dump)
    assert (listed[0]["location"], listed[0]["price"]) == ("Calle OCPP 1", 0.4)

    # A driver's request, started remotely, metered every second, stopped at the target, ticketed.
    driver = net.driver("D1", "CP01 0.03\n")
    assert net.finished(driver, 60) == 0, net.dump()
    ticket = events(driver, "ticket")[0]
    assert ticket["cp"] == "CP01" and ticket["reason"] == "target" and ticket["kwh"] >= 0.03
    assert len(events(driver, "charging")) >= 2
    assert events(cp, "remote_start")[0]["id_tag"] == "D1"
    assert len(events(cp, "meter")) >= 2
    stopped = cp.wait_for(r'"type": "stopped"', timeout=10)
    row = [r for r in net.sessions() if r["id"] == ticket["session"]][0]
    assert (row["status"], row["driver_id"]) == ("closed", "D1")
    assert abs(row["kwh"] - ticket["kwh"]) < 0.0006
    assert abs(row["kwh"] - (json.loads(stopped.string)["wh"] - 1000) / 1000) < 0.0015

    # A fault through StatusNotification, then the CP is available again.
    cp.send_line("fault")
    eventually(lambda: net.cp_state("CP01") == "AVERIADO", 20, "CP01 AVERIADO", net.dump)
    cp.send_line("ok")
    eventually(lambda: net.cp_state("CP01") == "ACTIVADO", 20, "CP01 recovered", net.dump)

    # PARAR and REANUDAR are ChangeAvailability.
    net.evctl("stop", "CP01")
    cp.wait_for(r'"type": "availability", "kind": "Inoperative"', timeout=20)
    assert net.cp_state("CP01") == "PARADO"
    net.evctl("resume", "CP01")
    cp.wait_for(r'"type": "availability", "kind": "Operative"', timeout=20)
    eventually(lambda: net.cp_state("CP01") == "ACTIVADO", 20, "CP01 resumed", net.dump)

    # A wrong password is refused at the handshake, and recorded with the peer's address.
    with pytest.raises(InvalidStatus) as refused:
        net.client("CP01", "not-the-secret")
    assert refused.value.response.status_code == 401
    eventually(lambda: [e for e in net.events_table() if e[0] == "refused" and "wrong password" in e[2]
                        and "127.0.0.1:" in e[2]], 10, "the refusal's row", net.dump)
    assert net.cp_state("CP01") == "ACTIVADO"  # the real CP01 was not disturbed

    # Fuzzed frames: every one answered with a CALLERROR, the connection still serves.
    expected = {
        "{not json": "FormationViolation",
        "[2, \"f1\", \"BootNotification\", {\"chargePointVendor\": \"V\"}]": "ProtocolError",
        "[2, \"f2\", \"BootNotification\", {\"chargePointVendor\": 5, \"chargePointModel\": \"M\"}]": "TypeConstraintViolation",
        "[2, \"f3\", \"Teleport\", {}]": "NotImplemented",
        "[2, \"f4\", \"Reset\", {\"type\": \"Hard\"}]": "NotSupported",
        "[2, \"f5\", \"Heartbeat\", {}]": "SecurityError",  # before BootNotification
        "[9, \"f6\", \"Heartbeat\", {}]": "FormationViolation",
    }
    rng = random.Random(19)
    alphabet = '[]{}",:0123456789abcdefxyz2 '
    garbage = ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 40))) for _ in range(40)]
    with net.client("CP02", fuzz_secret) as ws:
        for text, code in expected.items():
            ws.send(text)
            answer = json.loads(ws.recv(timeout=10))
            assert answer[0] == 4 and answer[2] == code, (text, answer)
        for text in garbage:
            ws.send(text)
            answer = json.loads(ws.recv(timeout=10))
            assert answer[0] in (3, 4), (text, answer)
        ws.send('[2, "b1", "BootNotification", {"chargePointVendor": "V", "chargePointModel": "M"}]')
        assert json.loads(ws.recv(timeout=10))[2]["status"] == "Accepted"
        ws.send('[2, "h1", "Heartbeat", {}]')
        assert "currentTime" in json.loads(ws.recv(timeout=10))[2]
    assert net.central.running
    assert "Traceback" not in net.central.output()


def test_security_profile_2_is_the_same_inside_tls(procs):
    net = OcppNetwork(procs, tls=True)
    net.start_registry()
    secret = net.register("CP01", "Calle OCPP 1", 0.4)
    net.start_central()
    with pytest.raises(InvalidStatus) as refused:
        net.client("CP01", "wrong")
    assert refused.value.response.status_code == 401
    with net.client("CP01", secret) as ws:
        ws.send('[2, "b1", "BootNotification", {"chargePointVendor": "V", "chargePointModel": "M"}]')
        assert json.loads(ws.recv(timeout=10))[2]["status"] == "Accepted"
        eventually(lambda: net.cp_state("CP01") == "ACTIVADO", 20, "CP01 ACTIVADO over TLS", net.dump)
    # Plain WebSocket on the TLS port gets nowhere.
    plain = f"ws://127.0.0.1:{net.ocpp_port}/ocpp/CP01"
    with pytest.raises(Exception):
        connect(plain, subprotocols=["ocpp1.6"], open_timeout=5).close()


def test_a_taken_ocpp_port_is_one_line_and_exit_status_1(procs):
    net = OcppNetwork(procs)
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", net.ocpp_port))
        taken.listen()
        central = procs.twistd("central", "evcentral", *net.central_args)
        assert central.wait(30) == 1
    assert central.count(rf"cannot listen on --ocpp tcp:{net.ocpp_port}:interface=127.0.0.1: address already in use") == 1
    assert "Traceback" not in central.output()
