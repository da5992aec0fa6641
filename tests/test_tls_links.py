"""
Framed links over TLS, as every evnet listener can serve them (`ssl:`
server endpoint strings) and every client dials them (`tls:` with
`--ca-file`, evnet.endpoints.client_endpoint).  Real sockets on loopback:
the handshake is the point.
"""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import defer, endpoints, reactor
from twisted.python import usage

from evnet.endpoints import check_server_endpoint, client_endpoint
from evnet.protocols import messages as m
from evnet.protocols.link import LinkFactory, LinkHandler
from evnet.registry.tls import make_self_signed

WAIT = 10


class Recorder(LinkHandler):
    def __init__(self):
        self.received = defer.Deferred()

    def messageReceived(self, link, msg):
        if not self.received.called:
            self.received.callback(msg)


def identity(tmp_path, name, names=("127.0.0.1", "localhost")):
    cert, key = make_self_signed(list(names))
    (tmp_path / f"{name}-cert.pem").write_bytes(cert)
    (tmp_path / f"{name}-key.pem").write_bytes(key)
    return str(tmp_path / f"{name}-cert.pem"), str(tmp_path / f"{name}-key.pem")


@pytest.fixture
def tls_server(tmp_path):
    cert, key = identity(tmp_path, "server")
    server = Recorder()
    description = f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}"
    check_server_endpoint("listen", description, "ssl:7000:privateKey=K:certKey=C")
    d = endpoints.serverFromString(reactor, description).listen(LinkFactory(server, initiator=False, clock=reactor))
    port = pytest_twisted.blockon(d)
    yield server, port.getHost().port, cert
    pytest_twisted.blockon(defer.maybeDeferred(port.stopListening))


@pytest_twisted.inlineCallbacks
def test_a_link_over_tls_verified_against_the_ca_file_carries_messages(tls_server):
    server, port, ca = tls_server
    client = LinkHandler()
    endpoint = client_endpoint("central", f"tls:host=127.0.0.1:port={port}", "tls:host=H:port=P", ca_file=ca)
    link = yield endpoint.connect(LinkFactory(client, initiator=True, clock=reactor)).addTimeout(WAIT, reactor)
    yield link.opened.addTimeout(WAIT, reactor)
    yield link.sendMessage(m.Status("CP01", "OK")).addTimeout(WAIT, reactor)
    got = yield server.received.addTimeout(WAIT, reactor)
    assert got == m.Status("CP01", "OK")
    link.close()


@pytest_twisted.inlineCallbacks
def test_a_server_not_signed_by_the_ca_file_is_refused(tls_server, tmp_path):
    _, port, _ = tls_server
    other_ca, _ = identity(tmp_path, "other")
    client = LinkHandler()
    endpoint = client_endpoint("central", f"tls:127.0.0.1:{port}", "tls:host=H:port=P", ca_file=other_ca)
    link = yield endpoint.connect(LinkFactory(client, initiator=True, clock=reactor)).addTimeout(WAIT, reactor)
    with pytest.raises(Exception) as failure:
        yield link.opened.addTimeout(WAIT, reactor)
    assert "certificate verify failed" in str(failure.value)


@pytest_twisted.inlineCallbacks
def test_a_certificate_for_another_name_is_refused(tmp_path):
    cert, key = identity(tmp_path, "elsewhere", names=("central.example",))
    server = Recorder()
    listening = yield endpoints.serverFromString(
        reactor, f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}"
    ).listen(LinkFactory(server, initiator=False, clock=reactor))
    try:
        endpoint = client_endpoint("central", f"tls:host=127.0.0.1:port={listening.getHost().port}", "x", ca_file=cert)
        link = yield endpoint.connect(LinkFactory(LinkHandler(), initiator=True, clock=reactor)).addTimeout(WAIT, reactor)
        with pytest.raises(Exception):
            yield link.opened.addTimeout(WAIT, reactor)
        assert not server.received.called
    finally:
        yield listening.stopListening()


@pytest.mark.parametrize(
    "description, ca, expected",
    [
        ("tls:host=127.0.0.1", "ca", "expected tls:host=HOST:port=PORT"),
        ("tls:host=127.0.0.1:port=99999", "ca", "expected tls:host=HOST:port=PORT"),
        ("tls:host=127.0.0.1:port=7000:colour=blue", "ca", "unknown: colour"),
        ("tls:host=127.0.0.1:port=7000", "/nonexistent/ca.pem", "cannot read it"),
    ],
)
def test_tls_client_options_say_what_is_wrong(description, ca, expected, tmp_path):
    if ca == "ca":
        ca, _ = identity(tmp_path, "ca")
    with pytest.raises(usage.UsageError, match=expected):
        client_endpoint("central", description, "tls:host=H:port=P", ca_file=ca)


def test_a_server_endpoint_whose_key_file_is_missing_is_one_clear_error():
    with pytest.raises(usage.UsageError, match="No such file"):
        check_server_endpoint("listen", "ssl:7000:privateKey=/nonexistent.pem", "ssl:7000:privateKey=K:certKey=C")


def test_the_monitor_and_the_driver_verify_a_tls_central_with_their_ca_file(tmp_path):
    import subprocess

    from evnet.monitor import tap as monitor_tap
    from tests.procs import BIN

    ca, _ = identity(tmp_path, "ca")
    options = monitor_tap.Options()
    (tmp_path / "creds.json").write_text('{"cp_id": "CP1", "secret": "s", "registry": ""}')
    (tmp_path / "creds.json").chmod(0o600)
    base = ["--cp-id", "CP1", "--credentials-file", str(tmp_path / "creds.json")]
    options.parseOptions(base + ["--central", "tls:host=127.0.0.1:port=7000", "--ca-file", ca])
    assert options.central_endpoint is not None
    with pytest.raises(usage.UsageError, match="cannot read it"):
        monitor_tap.Options().parseOptions(base + ["--central", "tls:host=127.0.0.1:port=7000",
                                                    "--ca-file", str(tmp_path / "missing.pem")])
    out = subprocess.run(
        [str(BIN / "evdriver"), "--driver-id", "D1", "--list",
         "--central", "tls:host=127.0.0.1:port=7001", "--ca-file", str(tmp_path / "missing.pem")],
        capture_output=True, text=True, timeout=30,
    )
    assert out.returncode != 0 and "cannot read it" in out.stderr and "Traceback" not in out.stderr, out.stderr
