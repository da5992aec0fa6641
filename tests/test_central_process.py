"""``twistd -n evcentral`` as a real process, spoken to over a raw socket."""

import re
import signal
import socket
import sqlite3
from collections import deque

import pytest

from evnet.protocols import messages as m
from evnet.protocols import security
from evnet.protocols.framing import ACK_BYTE, ENQ_BYTE, EOT_BYTE, NACK_BYTE, FrameDecoder, Kind, encode_frame
from evnet.registry.schema import create_tables
from tests.fakes import secret_of, verifier_of
from tests.procs import free_port, wait_for_port

pytestmark = pytest.mark.slow


def register_in_db(path, cp_id, location="Centro", price=0.3):
    """CP C{cp_id} registered in the SQLite database at C{path}, as EV_Registry writes it (secret: secret_of)."""
    with sqlite3.connect(path) as db:
        create_tables(db.cursor())
        db.execute("INSERT INTO registrations (cp_id, location, price, verifier, status, registered_at, updated_at) "
                   "VALUES (?, ?, ?, ?, 'registered', 0, 0)", (cp_id, location, price, verifier_of(secret_of(cp_id))))


class RawMonitor:
    """
    A CP's Monitor on a real socket to a real Central, blocking, every wait
    bounded by the socket's timeout: it opens the link, ACKs each frame,
    logs in with its credentials and then seals and opens, as evmonitor does.
    """

    def __init__(self, port, cp_id, timeout=10.0):
        self.cp_id = cp_id
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.decoder = FrameDecoder()
        self.frames, self.controls = deque(), deque()
        self.sealer = self.opener = None
        self.sock.sendall(ENQ_BYTE)
        assert self.control() == ACK_BYTE[0]

    def _read(self):
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("Central closed the connection")
        for event in self.decoder.feed(data):
            if event.kind is Kind.FRAME:
                self.sock.sendall(ACK_BYTE)
                self.frames.append(event.data)
            elif event.kind is Kind.CONTROL:
                self.controls.append(event.control)

    def control(self):
        while not self.controls:
            self._read()
        return self.controls.popleft()

    def send(self, msg):
        if self.sealer is not None:
            msg = security.seal_message(self.sealer, msg)
        self.sock.sendall(encode_frame(msg.to_data()))
        assert self.control() == ACK_BYTE[0]

    def receive(self):
        while not self.frames:
            self._read()
        msg = m.decode(self.frames.popleft())
        if isinstance(msg, m.Sec) and self.opener is not None:
            msg = security.open_message(self.opener, msg)
        return msg

    def login(self):
        client = security.ClientLogin(self.cp_id, secret_of(self.cp_id))
        self.send(client.start())
        self.send(client.answer(self.receive()))
        key = self.receive()
        key_id, session_key = client.accept(key)
        self.sealer = security.Sealer(self.cp_id, key_id, session_key, security.ROLE_MONITOR)
        self.opener = security.Opener(self.cp_id, key_id, session_key, (security.ROLE_CENTRAL,))
        return key

    def close(self):
        self.sock.close()


def test_evcentral_logs_a_registered_cp_in_refuses_reg_and_stops_on_sigterm(procs, tmp_path):
    port, drivers = free_port(), free_port()
    register_in_db(tmp_path / "c.db", "CP1")
    central = procs.twistd(
        "central", "evcentral",
        "--listen", f"tcp:{port}:interface=127.0.0.1",
        "--drivers", f"tcp:{drivers}:interface=127.0.0.1",
        "--db", f"sqlite:{tmp_path}/c.db",
        "--http", "none",
    )
    central.wait_for("EV_Central ready")
    wait_for_port(port)
    cp = RawMonitor(port, "CP1")
    try:
        cp.send(m.Reg("CP1", "Elsewhere", 0.01))
        refused = cp.receive()
        assert (refused.what, refused.reason.split(";")[0]) == ("REG", "register this CP at EV_Registry")
        bad = bytearray(encode_frame(m.Auth("CP1", security.new_nonce()).to_data()))
        bad[-1] ^= 0x55
        cp.sock.sendall(bytes(bad))
        assert cp.control() == NACK_BYTE[0]
        key = cp.login()
        assert (key.state, key.liveness) == ("ACTIVADO", 1.0)
        cp.send(m.Status("CP1", "OK"))
        central.wait_for(r"CP CP1 authenticated from 127\.0\.0\.1:\d+: ACTIVADO")
        cp.sock.sendall(EOT_BYTE)
        assert cp.sock.recv(1) == b""  # Central closed the link
    finally:
        cp.close()
    central.wait_for(r"REG from 127\.0\.0\.1:\d+ refused: register this CP at EV_Registry")
    central.wait_for("CP CP1 DESCONECTADO")
    central.kill(signal.SIGTERM)
    # twistd shuts down cleanly, then re-raises SIGTERM so its exit status tells why it ended.
    assert central.wait(10) in (0, -signal.SIGTERM)
    central.wait_for("Server Shut Down")
    output = central.output()
    assert "Traceback" not in output and secret_of("CP1") not in output


def test_evcentral_refuses_a_bad_option_without_a_traceback(procs, tmp_path):
    central = procs.twistd("central", "evcentral", "--db", "postgres://nope")
    assert central.wait(20) != 0
    central.wait_for("--db: unknown database URL")
    assert "Traceback" not in central.output()


@pytest.mark.parametrize("option", ["listen", "drivers"])
def test_a_taken_port_stops_evcentral_with_one_line_and_status_1(procs, tmp_path, option):
    ports = {"listen": free_port(), "drivers": free_port()}
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", ports[option]))
        taken.listen(1)
        central = procs.twistd(
            "central", "evcentral",
            "--listen", f"tcp:{ports['listen']}:interface=127.0.0.1",
            "--drivers", f"tcp:{ports['drivers']}:interface=127.0.0.1",
            "--db", f"sqlite:{tmp_path}/c.db",
            "--http", "none",
        )
        assert central.wait(30) == 1
    address = f"tcp:{ports[option]}:interface=127.0.0.1"
    assert central.count(rf"cannot listen on --{option} {re.escape(address)}: address already in use") == 1
    assert "Traceback" not in central.output()


def test_a_database_that_cannot_be_read_stops_evcentral_with_one_line_and_status_1(procs, tmp_path):
    db = tmp_path / "not-a-database.db"
    db.write_bytes(b"this is not SQLite" * 100)
    central = procs.twistd(
        "central", "evcentral",
        "--listen", f"tcp:{free_port()}:interface=127.0.0.1",
        "--drivers", f"tcp:{free_port()}:interface=127.0.0.1",
        "--db", f"sqlite:{db}",
        "--http", "none",
    )
    assert central.wait(30) == 1
    assert central.count(rf"EV_Central cannot start: database sqlite:{re.escape(str(db))}: file is not a database") == 1
    assert "Traceback" not in central.output()
