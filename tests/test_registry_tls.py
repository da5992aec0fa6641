"""
EV_Registry's TLS identity, the credentials file, the tap's options, and
one real TLS handshake on loopback per way a client can trust or distrust
the Registry (real sockets are the point there).
"""

from __future__ import annotations

import ipaddress
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import pytest_twisted
from cryptography import x509
from twisted.internet import defer
from twisted.python import usage

from evnet.registry import tls
from evnet.registry.credentials import Credentials, CredentialsError, load_credentials, save_credentials
from evnet.registry.tap import Options
from tests.test_registry_api import Registry

ROOT = Path(__file__).resolve().parent.parent


# -- the self-signed certificate ---------------------------------------------------------


def test_first_start_makes_a_self_signed_ca_certificate_later_starts_reuse_it(tmp_path):
    names = tls.names_for(tls.interface_of("tcp:7443:interface=10.1.2.3"), ["registry.example", "192.0.2.7"])
    made = tls.self_signed_identity(str(tmp_path), names)
    assert made.created and made.self_signed
    cert = x509.load_pem_x509_certificate(Path(made.cert_path).read_bytes())
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.DNSName)) == {"localhost", "registry.example"}
    assert set(san.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address(a) for a in ("127.0.0.1", "10.1.2.3", "192.0.2.7")}
    assert made.fingerprint == tls.fingerprint(cert) and len(made.fingerprint.split(":")) == 32
    assert stat.S_IMODE(os.stat(made.key_path).st_mode) == 0o600
    again = tls.self_signed_identity(str(tmp_path), ["127.0.0.1"])
    assert not again.created and again.fingerprint == made.fingerprint


def test_half_an_identity_or_a_foreign_key_is_a_clear_error(tmp_path):
    made = tls.self_signed_identity(str(tmp_path / "a"), ["127.0.0.1"])
    other = tls.self_signed_identity(str(tmp_path / "b"), ["127.0.0.1"])
    assert tls.operator_identity(made.cert_path, made.key_path).fingerprint == made.fingerprint
    with pytest.raises(tls.TlsError, match="does not belong"):
        tls.operator_identity(made.cert_path, other.key_path)
    os.unlink(made.cert_path)
    with pytest.raises(tls.TlsError, match="is there but .* is not"):
        tls.self_signed_identity(str(tmp_path / "a"), ["127.0.0.1"])


def test_interface_of_an_endpoint_string():
    assert tls.interface_of("tcp:7443:interface=127.0.0.1") == "127.0.0.1"
    assert tls.interface_of(r"tcp6:7443:interface=\:\:1") == "::1"
    assert tls.interface_of("tcp:7443") is None
    assert tls.interface_of("tcp:7443:interface=0.0.0.0") is None


# -- the credentials file ------------------------------------------------------------------


def test_the_credentials_file_is_private_and_a_readable_one_is_refused(tmp_path):
    path = str(tmp_path / "cp01.json")
    creds = Credentials("CP01", "s3cr3t", "https://127.0.0.1:7443")
    save_credentials(path, creds)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert load_credentials(path) == creds
    assert "s3cr3t" not in repr(creds)
    save_credentials(path, Credentials("CP01", "other", "https://127.0.0.1:7443"))  # replaced atomically
    assert load_credentials(path).secret == "other" and os.listdir(tmp_path) == ["cp01.json"]
    os.chmod(path, 0o640)
    with pytest.raises(CredentialsError, match=f"chmod 600 {path}"):
        load_credentials(path)
    os.chmod(path, 0o600)
    Path(path).write_text('{"cp_id": "CP01"}')
    with pytest.raises(CredentialsError, match="no 'secret'"):
        load_credentials(path)


# -- the tap's options ------------------------------------------------------------------------


def options(tmp_path, *argv) -> Options:
    o = Options()
    o.parseOptions(["--db", f"sqlite:{tmp_path}/c.db", "--state-dir", str(tmp_path / "state"), *argv])
    return o


def test_options_make_the_certificate_and_check_what_they_are_given(tmp_path):
    o = options(tmp_path, "--tls-name", "registry.example,10.0.0.9", "--tls-name", "reg2.example")
    assert o.identity.created and {"registry.example", "10.0.0.9", "reg2.example"} <= set(o.identity.names)
    assert o["admin_token"] is None
    for argv, text in (
        (["--tls-cert", o.identity.cert_path], "go together"),
        (["--listen", "ssl:7443"], "give a tcp: endpoint"),
        (["--listen", "tcp:notaport"], "not a server endpoint"),
        (["--db", "postgres://x"], "--db"),
        (["--tls-name", "new.example"], "does not name new.example"),
        (["--admin-token-file", str(tmp_path / "missing")], "cannot read it"),
    ):
        with pytest.raises(usage.UsageError, match=text):
            options(tmp_path, *argv)
    token = tmp_path / "admin.token"
    token.write_text("t0ken\n")
    assert options(tmp_path, "--admin-token-file", str(token))["admin_token"] == "t0ken"


def test_the_tap_imports_no_reactor_nor_kafka_and_twistd_lists_evregistry():
    code = (
        "import sys\n"
        "import evnet.registry.tap\n"
        "assert 'twisted.internet.reactor' not in sys.modules, 'the tap imported the reactor'\n"
        "assert not [m for m in sys.modules if m.startswith('kafka')], 'the tap imported kafka'\n"
        "from twisted.plugin import getPlugins\n"
        "from twisted.application.service import IServiceMaker\n"
        "names = {s.tapname for s in getPlugins(IServiceMaker)}\n"
        "assert 'evregistry' in names, names\n"
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, env=env)


# -- real TLS on loopback ----------------------------------------------------------------------


@pytest.fixture
def serving(tmp_path):
    """Serve a Registry (on fakes) over TLS on a loopback port: (url, cert path, stop)."""
    from twisted.internet import endpoints, reactor
    from twisted.protocols.tls import TLSMemoryBIOFactory

    def serve(identity: tls.Identity):
        reg = Registry()
        factory = TLSMemoryBIOFactory(identity.server_options(), False, reg.site)
        d = endpoints.serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(factory)
        d.addCallback(ports.append)
        return d.addCallback(lambda _: f"https://127.0.0.1:{ports[-1].getHost().port}")

    ports: list = []
    yield serve
    for port in ports:
        port.stopListening()


def _failure_text(d: defer.Deferred) -> defer.Deferred:
    from twisted.internet import reactor

    d.addTimeout(10, reactor)
    return d.addCallbacks(lambda value: f"no failure: {value!r}", lambda f: str(f.value))


@pytest_twisted.inlineCallbacks
def test_a_client_trusts_the_registry_only_through_its_ca_file(tmp_path, serving):
    from twisted.internet import reactor

    from evnet.registry.client import RegistryClient, register

    identity = tls.self_signed_identity(str(tmp_path / "state"), ["127.0.0.1"])
    url = yield serving(identity)
    trusted = RegistryClient(reactor, url, identity.cert_path, timeout=5)
    answer = yield trusted.list()
    assert answer == []
    creds = yield register(reactor, url, identity.cert_path, "CP01", "Calle Mayor 1", 0.35, timeout=5)
    assert creds.cp_id == "CP01" and creds.registry == url

    text = yield _failure_text(RegistryClient(reactor, url, None, timeout=5).list())
    assert "certificate" in text and "not trusted" in text and "--ca-file" in text
    other = tls.self_signed_identity(str(tmp_path / "other"), ["127.0.0.1"])
    text = yield _failure_text(RegistryClient(reactor, url, other.cert_path, timeout=5).list())
    assert "not trusted" in text


@pytest_twisted.inlineCallbacks
def test_a_certificate_for_another_name_is_refused(tmp_path, serving):
    from twisted.internet import reactor

    from evnet.registry.client import RegistryClient
    from evnet.registry.credentials import write_private_file

    cert_pem, key_pem = tls.make_self_signed(["registry.example"])
    write_private_file(str(tmp_path / "cert.pem"), cert_pem, 0o644)
    write_private_file(str(tmp_path / "key.pem"), key_pem)
    url = yield serving(tls.operator_identity(str(tmp_path / "cert.pem"), str(tmp_path / "key.pem")))
    text = yield _failure_text(RegistryClient(reactor, url, str(tmp_path / "cert.pem"), timeout=5).list())
    assert text.endswith("does not name 127.0.0.1"), text


@pytest_twisted.inlineCallbacks
def test_no_registry_there_and_no_ca_file_are_one_line_errors(tmp_path):
    from twisted.internet import reactor

    from evnet.registry.client import RegistryClient, RegistryError
    from tests.procs import free_port

    url = f"https://127.0.0.1:{free_port()}"
    identity = tls.self_signed_identity(str(tmp_path), ["127.0.0.1"])
    text = yield _failure_text(RegistryClient(reactor, url, identity.cert_path, timeout=5).list())
    assert text == f"cannot connect to the Registry at {url}: connection refused"
    with pytest.raises(RegistryError, match="--ca-file .*missing.pem: cannot read it"):
        RegistryClient(reactor, url, str(tmp_path / "missing.pem"))
    with pytest.raises(RegistryError, match="must be https://"):
        RegistryClient(reactor, url.replace("https", "http"), identity.cert_path)
