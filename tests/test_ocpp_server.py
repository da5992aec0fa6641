"""OCPP security profiles 1/2 at the handshake (evnet.central.ocpp.auth) and the WebSocket shell on a StringTransport."""

import base64
import json
import os

from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from evnet.central.ocpp import auth
from evnet.central.ocpp.server import OcppFactory
from evnet.protocols import security

from tests.ocpp_fakes import MemoryTransactions, World

FAST = 2**4


def basic(user, password):
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


class Registry:
    """Registrations by id, and the slow check run at once, counted."""

    def __init__(self):
        self.rows = {}
        self.checks = []
        self.refusals = []

    def add(self, cp_id, secret, status="registered"):
        verifier = security.make_verifier(secret, n=FAST).to_text() if status == "registered" else None
        self.rows[cp_id] = {"cp_id": cp_id, "location": "Calle OCPP", "price": 0.4, "verifier": verifier, "status": status}

    def lookup(self, cp_id):
        return defer.succeed(self.rows.get(cp_id))

    def slow_check(self, verifier, secret):
        self.checks.append(verifier)
        return defer.succeed(verifier is not None and auth.check(verifier, secret))

    def authenticator(self):
        return auth.Authenticator(self.lookup, self.slow_check, lambda cp_id, text, *_: self.refusals.append((cp_id, text)))


def outcome(d):
    results = []
    d.addBoth(results.append)
    assert results, "the check did not finish"
    return results[0]


def test_the_cp_id_is_the_last_path_segment_and_basic_credentials_parse():
    assert auth.cp_id_of("/ocpp/CP01") == auth.cp_id_of("/CP01") == auth.cp_id_of("/ocpp/CP01/?x=1") == "CP01"
    assert auth.cp_id_of("/ocpp/CP%2001") == "CP 01" and auth.cp_id_of("/") == ""
    assert auth.basic_credentials(basic("CP01", "a:b")) == ("CP01", "a:b")
    for header in (None, "", "Bearer x", "Basic !!!", "Basic " + base64.b64encode(b"nocolon").decode()):
        assert auth.basic_credentials(header) is None


def test_the_right_secret_opens_and_every_refusal_is_recorded_with_the_peer():
    registry = Registry()
    registry.add("CP01", "s3cret")
    registry.add("CP02", "x", status="deregistered")
    a = registry.authenticator()
    assert outcome(a.authenticate("/ocpp/CP01", basic("CP01", "s3cret"), "10.0.0.5:4000"))["cp_id"] == "CP01"
    cases = [
        ("/ocpp/CP01", basic("CP01", "wrong"), "wrong password"),
        ("/ocpp/CP09", basic("CP09", "s3cret"), "not registered"),
        ("/ocpp/CP02", basic("CP02", "x"), "deregistered"),
        ("/ocpp/CP01", basic("CP02", "s3cret"), "is not the CP id"),
        ("/ocpp/CP01", None, "no HTTP Basic credentials"),
        ("/ocpp/bad id!", basic("bad id!", "x"), "no valid CP id"),
    ]
    for path, header, why in cases:
        result = outcome(a.authenticate(path, header, "10.0.0.5:4000"))
        assert isinstance(result.value, auth.Refused) and why in str(result.value)
    assert [why in text and "10.0.0.5:4000" in text for (_, text), (_, _, why) in zip(registry.refusals, cases)] \
        == [True] * len(cases)
    assert registry.refusals[1][0] == "CP09"


def test_an_unknown_id_costs_the_same_slow_check_as_a_wrong_password():
    registry = Registry()
    a = registry.authenticator()
    outcome(a.authenticate("/CP09", basic("CP09", "guess"), "peer"))
    assert registry.checks == [None]  # the decoy's check ran


def test_the_decoy_check_is_slow_and_says_no():
    assert not auth.check(None, "anything")
    assert not auth.check("not a verifier", "anything")


def test_a_cp_that_logged_in_is_not_checked_slowly_again_until_its_verifier_changes():
    registry = Registry()
    registry.add("CP01", "s3cret")
    a = registry.authenticator()
    for _ in range(3):
        outcome(a.authenticate("/CP01", basic("CP01", "s3cret"), "peer"))
    assert len(registry.checks) == 1
    assert isinstance(outcome(a.authenticate("/CP01", basic("CP01", "other"), "peer")).value, auth.Refused)
    registry.add("CP01", "new")  # registered again: new credentials
    assert isinstance(outcome(a.authenticate("/CP01", basic("CP01", "s3cret"), "peer")).value, auth.Refused)
    assert outcome(a.authenticate("/CP01", basic("CP01", "new"), "peer"))["cp_id"] == "CP01"


# -- the WebSocket shell -----------------------------------------------------------


def handshake(path="/ocpp/CP01", authorization=None, protocols="ocpp1.6"):
    lines = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1:9000", "Upgrade: websocket", "Connection: Upgrade",
             "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version: 13"]
    if protocols:
        lines.append(f"Sec-WebSocket-Protocol: {protocols}")
    if authorization:
        lines.append(f"Authorization: {authorization}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def client_frame(text, opcode=0x1):
    data = text.encode()
    assert len(data) < 126
    mask = os.urandom(4)
    return bytes([0x80 | opcode, 0x80 | len(data)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data))


def server_frames(data):
    frames = []
    while data:
        opcode, length = data[0] & 0x0F, data[1] & 0x7F
        offset = 2
        if length == 126:
            length, offset = int.from_bytes(data[2:4], "big"), 4
        frames.append((opcode, data[offset:offset + length]))
        data = data[offset + length:]
    return frames


class Transport(StringTransport):
    """A StringTransport that, like a real TCP transport, lets a protocol unregister no producer."""

    def unregisterProducer(self):
        self.producer = None


class Shell:
    def __init__(self, registry):
        self.world = World()
        self.factory = OcppFactory(self.world.central, registry.authenticator(), MemoryTransactions(),
                                   self.world.clock, open_timeout=0, reactor=Clock())
        self.protocol = self.factory.buildProtocol(IPv4Address("TCP", "10.0.0.5", 4000))
        self.transport = Transport(peerAddress=IPv4Address("TCP", "10.0.0.5", 4000))
        self.protocol.makeConnection(self.transport)

    def take(self):
        data = self.transport.value()
        self.transport.clear()
        return data

    def send(self, text):
        self.protocol.dataReceived(client_frame(text))
        return [json.loads(payload) for opcode, payload in server_frames(self.take()) if opcode == 0x1]


def test_a_wrong_password_is_refused_at_the_handshake_with_401():
    registry = Registry()
    registry.add("CP01", "s3cret")
    shell = Shell(registry)
    shell.protocol.dataReceived(handshake(authorization=basic("CP01", "nope")))
    response = shell.take().decode()
    assert response.startswith("HTTP/1.1 401 Unauthorized\r\n")
    assert 'WWW-Authenticate: Basic realm="EV_Central OCPP"' in response
    assert shell.transport.disconnecting
    assert "CP01" not in shell.world.central.cps


def test_a_registered_cp_speaks_ocpp16_and_its_calls_reach_the_station():
    registry = Registry()
    registry.add("CP01", "s3cret")
    shell = Shell(registry)
    shell.protocol.dataReceived(handshake(authorization=basic("CP01", "s3cret"), protocols="ocpp2.0.1, ocpp1.6"))
    response = shell.take().decode()
    assert response.startswith("HTTP/1.1 101") and "Sec-WebSocket-Protocol: ocpp1.6\r\n" in response
    assert shell.send('[2, "a", "Heartbeat", {}]')[0][:3] == [4, "a", "SecurityError"]
    boot = shell.send('[2, "b", "BootNotification", {"chargePointVendor": "V", "chargePointModel": "M"}]')
    assert boot[0][2]["status"] == "Accepted"
    assert shell.world.state() == "ACTIVADO"
    assert shell.send("[2, garbage")[0][:3] == [4, "-1", "FormationViolation"]
    shell.factory.tick()
    assert [op for op, _ in server_frames(shell.take())] == [0x9]  # a ping
    shell.protocol.connectionLost(Failure(ConnectionDone()))
    assert shell.world.state() == "DESCONECTADO" and shell.factory.stations == {}


def test_without_the_subprotocol_the_handshake_completes_and_the_connection_closes():
    registry = Registry()
    registry.add("CP01", "s3cret")
    shell = Shell(registry)
    shell.protocol.dataReceived(handshake(authorization=basic("CP01", "s3cret"), protocols=None))
    data = shell.take()
    head, _, rest = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101") and b"Sec-WebSocket-Protocol" not in head
    assert [op for op, _ in server_frames(rest)] == [0x8]  # close
    assert "CP01" not in shell.world.central.cps


def test_a_second_connection_of_a_cp_replaces_the_first():
    registry = Registry()
    registry.add("CP01", "s3cret")
    first, second = Shell(registry), None
    first.protocol.dataReceived(handshake(authorization=basic("CP01", "s3cret")))
    first.take()
    first.send('[2, "b", "BootNotification", {"chargePointVendor": "V", "chargePointModel": "M"}]')
    old = first.factory.stations["CP01"]
    # The same factory takes the new connection.
    protocol = first.factory.buildProtocol(IPv4Address("TCP", "10.0.0.6", 4001))
    transport = Transport(peerAddress=IPv4Address("TCP", "10.0.0.6", 4001))
    protocol.makeConnection(transport)
    protocol.dataReceived(handshake(authorization=basic("CP01", "s3cret")))
    new = first.factory.stations["CP01"]
    assert new is not old and not old.is_open
    assert first.world.central.cps["CP01"].link is new
    assert first.world.state() == "ACTIVADO"
    assert second is None


def test_the_ocpp_options_are_checked_at_once():
    import pytest
    from twisted.python import usage

    from evnet.central.tap import Options

    options = Options()
    options.parseOptions(["--ocpp", "tcp:9000:interface=127.0.0.1", "--ocpp-heartbeat", "30"])
    assert (options["ocpp"], options["ocpp-heartbeat"]) == ("tcp:9000:interface=127.0.0.1", 30.0)
    assert Options().parseOptions([]) is None
    for argv, text in ((["--ocpp", "nonsense:1"], "--ocpp 'nonsense:1' is not a server endpoint string"),
                       (["--ocpp-heartbeat", "0"], "--ocpp-heartbeat must be at least 1")):
        with pytest.raises(usage.UsageError, match=text):
            Options().parseOptions(argv)
