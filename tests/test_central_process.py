"""``twistd -n evcentral`` as a real process, spoken to over a raw socket."""

import re
import signal
import socket

import pytest

from evnet.protocols import messages as m
from evnet.protocols.framing import ACK_BYTE, ENQ_BYTE, EOT_BYTE, NACK_BYTE, encode_frame
from tests.procs import free_port, wait_for_port

pytestmark = pytest.mark.slow


def recv_exactly(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


def test_evcentral_accepts_a_link_answers_frames_and_stops_on_sigterm(procs, tmp_path):
    port, drivers = free_port(), free_port()
    central = procs.twistd(
        "central", "evcentral",
        "--listen", f"tcp:{port}:interface=127.0.0.1",
        "--drivers", f"tcp:{drivers}:interface=127.0.0.1",
        "--db", f"sqlite:{tmp_path}/c.db",
        "--http", "none",
    )
    central.wait_for("EV_Central ready")
    wait_for_port(port)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(ENQ_BYTE)
        assert recv_exactly(s, 1) == ACK_BYTE
        s.sendall(encode_frame(m.Reg("CP1", "Centro", 0.3).to_data()))
        assert recv_exactly(s, 1) == ACK_BYTE
        # Central answers REG with ACCEPTED in a frame of its own.
        reply = encode_frame(m.Accepted("REG", "CP1").to_data())
        assert recv_exactly(s, len(reply)) == reply
        s.sendall(ACK_BYTE)
        bad = bytearray(encode_frame(m.Auth("CP1").to_data()))
        bad[-1] ^= 0x55
        s.sendall(bytes(bad))
        assert recv_exactly(s, 1) == NACK_BYTE
        s.sendall(EOT_BYTE)
        assert recv_exactly(s, 1) == b""  # Central closed the link
    central.wait_for("CP CP1 registered")
    central.kill(signal.SIGTERM)
    # twistd shuts down cleanly, then re-raises SIGTERM so its exit status tells why it ended.
    assert central.wait(10) in (0, -signal.SIGTERM)
    central.wait_for("Server Shut Down")
    assert "Traceback" not in central.output()


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
