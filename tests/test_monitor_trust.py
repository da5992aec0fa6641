"""
The Monitor's side of trust, on fakes: its credentials (a file, or a
registration at a fake Registry), the login to a fake Central built from
L{security.ServerLogin}, the sealed link, REAUTH, REVOKED and the operator's
reauth (console and control endpoint), and the key handed to the Engine.
"""

import json
import os
import stat

from twisted.internet import defer
from twisted.internet.testing import StringTransport
from twisted.logger import capturedLogs, formatEvent

from evnet.ctl.cli import build_parser
from evnet.linecontrol import ConsoleProtocol, ControlFactory
from evnet.monitor import tap as monitor_tap
from evnet.monitor.control import BANNER
from evnet.monitor.enrollment import CredentialSource
from evnet.monitor.states import LinkPhase
from evnet.protocols import messages as m
from evnet.protocols import security
from evnet.protocols.framing import EOT_BYTE
from evnet.registry.client import RegistryError, RegistryRefused
from evnet.registry.credentials import Credentials, save_credentials

from tests.test_engine import FakeBus
from tests.test_monitor import (
    CREDENTIALS,
    FAST,
    SECRET,
    VERIFIER,
    answer_health,
    authenticate,
    cpkey_of,
    make_monitor,
    running,
)


class FakeRegistry:
    """What L{evnet.registry.client.register} does, without HTTPS: answers held until told."""

    def __init__(self):
        self.calls = []
        self.answers = []

    def register(self, cp_id, location, price, token):
        d = defer.Deferred()
        self.calls.append(((cp_id, location, price, token), d))
        return d

    def answer(self, result):
        _, d = self.calls[-1]
        if isinstance(result, Exception):
            d.errback(result)
        else:
            d.callback(result)


def source(tmp_path, clock, registry=None, **kwargs):
    token = tmp_path / "cp1.token"
    token.write_text("enrollment-token-for-CP1\n")
    kwargs.setdefault("location", "Calle Mayor 1")
    kwargs.setdefault("price", 0.3)
    if registry is not None:
        kwargs.setdefault("registry", "https://127.0.0.1:7443")
        kwargs.setdefault("token_file", str(token))
        kwargs["register"] = registry.register
    return CredentialSource(str(tmp_path / "cp1.json"), "CP1", clock, backoff=lambda attempt: 1.5**attempt, **kwargs)


def text_of(events):
    return [formatEvent(e) for e in events]


def monitor_with(tmp_path, registry=None, **kwargs):
    failures = []
    monitor, engine, central, clock = make_monitor(on_failure=failures.append, credentials=None)
    monitor.source = source(tmp_path, clock, registry, **kwargs)
    return monitor, engine, central, clock, failures


# ---------------------------------------------------------------------------
# credentials
# ---------------------------------------------------------------------------


def test_without_credentials_the_monitor_registers_itself_and_keeps_them_in_a_0600_file(tmp_path):
    registry = FakeRegistry()
    monitor, engine, central, clock, failures = monitor_with(tmp_path, registry)
    with capturedLogs() as events:
        monitor.startService()
        assert central.attempts == []  # no login before there are credentials
        ((args, _),) = registry.calls
        assert args == ("CP1", "Calle Mayor 1", 0.3, "enrollment-token-for-CP1")
        registry.answer(Credentials("CP1", SECRET, "https://127.0.0.1:7443"))
        authenticate(central.peer)
    path = tmp_path / "cp1.json"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert json.loads(path.read_text()) == {"cp_id": "CP1", "secret": SECRET, "registry": "https://127.0.0.1:7443"}
    text = text_of(events)
    assert "Registering CP CP1 at the Registry at https://127.0.0.1:7443" in text
    assert f"The Registry registered CP CP1: its credentials are in {path} (mode 0600)" in text
    assert monitor.central_ready and failures == []
    assert not any(SECRET in t or "enrollment-token-for-CP1" in t for t in text)  # never in a log line


def test_an_existing_credentials_file_is_used_without_the_registry(tmp_path):
    save_credentials(str(tmp_path / "cp1.json"), CREDENTIALS)
    registry = FakeRegistry()
    monitor, engine, central, clock, failures = monitor_with(tmp_path, registry)
    monitor.startService()
    assert registry.calls == []
    authenticate(central.peer)
    assert monitor.central_ready


def test_a_credentials_file_others_may_read_is_refused_in_one_line(tmp_path):
    path = tmp_path / "cp1.json"
    save_credentials(str(path), CREDENTIALS)
    os.chmod(path, 0o644)
    monitor, engine, central, clock, failures = monitor_with(tmp_path, FakeRegistry())
    with capturedLogs() as events:
        monitor.startService()
    line = f"the credentials file {path} may be read by others (mode 0644): chmod 600 {path}"
    assert failures == [line]  # the tap stops the process with exit status 1
    assert [t for t in text_of(events) if "credentials" in t] == [line]
    clock.advance(60)
    assert central.attempts == []


def test_a_credentials_file_for_another_cp_is_refused(tmp_path):
    save_credentials(str(tmp_path / "cp1.json"), Credentials("CP2", SECRET, "https://r"))
    monitor, engine, central, clock, failures = monitor_with(tmp_path)
    monitor.startService()
    assert failures == [f"the credentials file {tmp_path / 'cp1.json'} is for CP CP2, not --cp-id CP1"]


def test_no_credentials_and_no_registry_says_how_to_get_them(tmp_path):
    monitor, engine, central, clock, failures = monitor_with(tmp_path)
    monitor.startService()
    assert failures == [
        f"no credentials for CP CP1: {tmp_path / 'cp1.json'} does not exist. Register the CP at EV_Registry with "
        "--registry URL --enrollment-token-file F (a token from 'evctl registry enroll CP1'), "
        "or give --credentials-file a file made by 'evctl registry add CP1 --credentials-file F'"
    ]
    assert central.attempts == []


def test_registering_needs_a_location_and_a_price(tmp_path):
    monitor, engine, central, clock, failures = monitor_with(tmp_path, FakeRegistry(), location=None)
    monitor.startService()
    assert failures == ["to register CP CP1 at the Registry the Monitor needs --location and --price"]


def test_a_token_the_registry_refuses_stops_the_monitor_in_one_line(tmp_path):
    registry = FakeRegistry()
    monitor, engine, central, clock, failures = monitor_with(tmp_path, registry)
    monitor.startService()
    registry.answer(RegistryRefused(401, "this enrollment token is not valid"))
    assert failures == [
        "the Registry at https://127.0.0.1:7443 refused to register CP CP1: this enrollment token is not valid "
        "(an enrollment token works once, for one CP, until it expires: ask for a new one, "
        "'evctl registry enroll CP1')"
    ]
    assert not (tmp_path / "cp1.json").exists()


def test_an_unreachable_registry_is_tried_again_with_a_growing_delay_and_said_once(tmp_path):
    registry = FakeRegistry()
    monitor, engine, central, clock, failures = monitor_with(tmp_path, registry)
    with capturedLogs() as events:
        monitor.startService()
        why = "cannot connect to the Registry at https://127.0.0.1:7443: connection refused"
        registry.answer(RegistryError(why))
        clock.advance(1)  # 1.5**0
        assert len(registry.calls) == 2
        registry.answer(RegistryError(why))
        clock.advance(1.4)
        assert len(registry.calls) == 2
        clock.advance(0.1)  # 1.5**1
        assert len(registry.calls) == 3
        registry.answer(Credentials("CP1", SECRET, "https://127.0.0.1:7443"))
    said = [t for t in text_of(events) if "Cannot register" in t]
    assert said == [f"Cannot register CP CP1: {why}; retrying"]
    assert failures == [] and (tmp_path / "cp1.json").exists()


# ---------------------------------------------------------------------------
# the login and the sealed link
# ---------------------------------------------------------------------------


def test_the_login_proves_the_secret_without_sending_it_and_nothing_is_clear_after_key():
    monitor, engine, central, clock = running()
    auth, proof = central.raw[:2]
    assert isinstance(auth, m.Auth) and auth.cp_id == "CP1" and len(security.unb64(auth.nonce, "nonce")) == 16
    assert isinstance(proof, m.Proof)
    assert not any(SECRET in x.to_data().decode() for x in central.raw)
    # Everything after KEY, both ways: STATUS, AVR, RCV, the relayed messages.
    answer_health(engine, clock, "KO")
    answer_health(engine, clock, "OK")
    central.send(m.Start("CP1", "S1", "D1", 0.3))
    assert engine.received()[-1] == m.Start("CP1", "S1", "D1", 0.3)
    for msg in (m.Telem("CP1", "S1", 1, 0.01, 36.0, 0.01, 1), m.Stop("CP1", "S1", 2, 0.01, 0.01, 1, "unplug"),
                m.Req("D2", "CP1")):
        engine.send(msg)
    got = central.received()  # CentralPeer fails on anything in the clear
    assert {x.code for x in got} >= {"STATUS", "AVR", "RCV", "TELEM", "STOP", "REQ"}
    assert all(isinstance(x, m.Sec) and x.role == "M" for x in central.raw[2:])


def test_status_goes_at_the_interval_the_key_gives():
    monitor, engine, central, clock = make_monitor()
    monitor.startService()
    assert authenticate(central.peer, liveness=2.5) == [m.Status("CP1", "OK")]
    clock.advance(2.4)
    assert [x for x in central.peer.received() if isinstance(x, m.Status)] == []
    clock.advance(0.1)
    assert [x for x in central.peer.received() if isinstance(x, m.Status)] == [m.Status("CP1", "KO")]


def test_a_central_that_does_not_hold_the_registration_is_refused_and_retried_later():
    monitor, engine, central_ep, clock = make_monitor()
    monitor.startService()
    central = central_ep.peer
    central.accept()
    impostor = security.make_verifier("another secret", salt=VERIFIER.salt, n=FAST)

    def forged(key):  # what a Central without the CP's verifier can sign
        return m.Key(key.cp_id, key.state, key.key_id, key.wrapped,
                     security.b64(security.server_signature(impostor, b"anything")), key.liveness)

    with capturedLogs() as events:
        assert central.login(tamper=forged) == []  # no STATUS, nothing after a refused KEY
    text = text_of(events)
    assert any(
        t.startswith("Refused the peer at tcp:host=127.0.0.1:port=7000: it is not the real Central "
                     "(Central's signature is wrong") for t in text
    ), text
    assert not monitor.central_ready and monitor.session.phase.state is LinkPhase.REFUSED
    assert central.transport.disconnecting  # EOT, then closed
    central.lose()
    clock.advance(1.5)  # 1.5**1: a refusal lengthens the delay
    assert len(central_ep.attempts) == 1
    clock.advance(0.8)
    assert len(central_ep.attempts) == 2
    authenticate(central_ep.peer)
    assert monitor.central_ready


def test_what_central_sends_unsealed_or_sealed_wrongly_after_the_key_is_dropped():
    monitor, engine, central, clock = running()
    engine.received()
    reflected = security.Sealer("CP1", central.key_id, central.key, security.ROLE_MONITOR)
    other_key = security.Sealer("CP1", central.key_id, security.new_key(), security.ROLE_CENTRAL)
    with capturedLogs() as events:
        central.send_plain(m.Parar("CP1"))
        central.send_plain(security.seal_message(reflected, m.Parar("CP1")))
        central.send_plain(security.seal_message(other_key, m.Parar("CP1")))
    assert engine.received() == []  # never acted on
    assert text_of(events) == [
        "Central sent PARAR in the clear after the key: dropped",
        "Refused a sealed message on the Central link: a message sealed by role 'M' is not accepted here; dropped",
        "Refused a sealed message on the Central link: tampered with, or sealed for another CP or key; dropped",
    ]
    central.send(m.Parar("CP1"))
    assert engine.received() == [m.Parar("CP1")]


def test_reauth_logs_in_again_sealed_on_the_same_link_and_switches_key():
    monitor, engine_ep, central_ep, clock = make_monitor()
    monitor.startService()
    central, engine = central_ep.peer, engine_ep.peer
    authenticate(central)
    engine.accept()
    engine.received()
    old_key_id = central.key_id
    central.send(m.Reauth("CP1"))
    # The new login travels sealed under the current key (CentralPeer.login opens it).
    assert central.login() == [m.Status("CP1", "OK")]
    assert central.key_id != old_key_id and monitor.session.key_id == central.key_id
    assert all(isinstance(x, m.Sec) for x in central.raw[2:])  # nothing clear since the first KEY
    assert len(central_ep.attempts) == 1  # the same link
    assert engine.received() == [cpkey_of(central)]  # the Engine seals with the new key
    clock.advance(1)
    assert central.received() == [m.Status("CP1", "OK")]  # opened under the new key


def test_revoked_closes_the_link_and_waits_for_the_operators_reauth_on_the_console():
    monitor, engine, central_ep, clock = make_monitor()
    monitor.startService()
    central = central_ep.peer
    authenticate(central)
    with capturedLogs() as events:
        central.send(m.Revoked("CP1", "revoked by the operator"))
    assert any(t.startswith("Central revoked the key of CP CP1: revoked by the operator. The Monitor does not "
                            "log in again by itself") for t in text_of(events))
    assert EOT_BYTE in central.transport.value()
    central.lose()
    clock.advance(600)
    assert len(central_ep.attempts) == 1  # no reconnection by itself
    console = ConsoleProtocol(monitor.command, BANNER)
    transport = StringTransport()
    console.makeConnection(transport)
    assert transport.value() == b"EV_CP_M: type a command (help lists them)\n"
    transport.clear()
    console.dataReceived(b"status\n")
    assert transport.value() == (
        b"OK cp=CP1 central=revoked engine=KO (Central revoked the key: revoked by the operator; "
        b"type reauth to log in again)\n"
    )
    transport.clear()
    console.dataReceived(b"reauth\n")
    assert transport.value().startswith(b"OK logging in to Central at tcp:host=127.0.0.1:port=7000 again "
                                        b"(the key had been revoked)")
    assert len(central_ep.attempts) == 2
    authenticate(central_ep.peer)
    assert monitor.central_ready and monitor.revoked is None
    transport.clear()
    console.dataReceived(b"s\n")
    assert transport.value().startswith(f"OK cp=CP1 central=ready key={central_ep.peer.key_id}".encode())


def test_reauth_through_the_control_endpoint_reads_the_credentials_file_again(tmp_path):
    path = tmp_path / "cp1.json"
    save_credentials(str(path), CREDENTIALS)
    monitor, engine, central_ep, clock, failures = monitor_with(tmp_path)
    monitor.startService()
    authenticate(central_ep.peer)
    central_ep.peer.send(m.Revoked("CP1", "revoked by the operator"))
    central_ep.peer.lose()
    new_secret = security.new_secret()
    save_credentials(str(path), Credentials("CP1", new_secret, "https://r"))  # evctl registry add again
    control = ControlFactory(monitor.command).buildProtocol(None)
    transport = StringTransport()
    control.makeConnection(transport)
    control.dataReceived(b"reauth\n")
    assert transport.value().startswith(b"OK logging in to Central")
    authenticate(central_ep.peer, verifier=security.make_verifier(new_secret, n=FAST))
    assert monitor.central_ready
    transport.clear()
    control.dataReceived(b"help\n")
    assert transport.value().startswith(b"OK commands") and transport.value().count(b"\n") == 1
    transport.clear()
    control.dataReceived(b"plug\n")
    assert transport.value() == b"ERROR unknown command 'plug' (try: help)\n"
    os.chmod(path, 0o644)
    transport.clear()
    control.dataReceived(b"reauth\n")
    assert transport.value().startswith(b"ERROR the credentials file") and monitor.central_ready


def test_a_reauth_while_logged_in_opens_a_new_link_at_once():
    monitor, engine, central_ep, clock = make_monitor()
    monitor.startService()
    authenticate(central_ep.peer)
    first = central_ep.peer
    assert monitor.command("reauth").startswith("OK logging in to Central")
    assert first.transport.disconnecting
    first.lose()
    assert len(central_ep.attempts) == 2  # at once, not after a retry delay
    authenticate(central_ep.peer)
    assert monitor.central_ready


# ---------------------------------------------------------------------------
# the key to the Engine, and the Monitor's own Kafka records
# ---------------------------------------------------------------------------


def test_the_engine_gets_the_key_whenever_its_link_opens_while_there_is_one():
    monitor, engine_ep, central_ep, clock = make_monitor()
    monitor.startService()
    engine_ep.peer.accept()
    assert engine_ep.peer.received() == [m.Cfg("CP1", 0.3), m.Hck()]  # no key yet: no CPKEY
    authenticate(central_ep.peer)
    assert engine_ep.peer.received() == [cpkey_of(central_ep.peer)]
    engine_ep.peer.lose()
    clock.advance(1.5)
    engine_ep.peer.accept()
    assert engine_ep.peer.received()[:2] == [m.Cfg("CP1", 0.3), cpkey_of(central_ep.peer)]


def test_the_monitors_kafka_records_are_sealed_by_role_m_under_the_current_key():
    bus = FakeBus()
    monitor, engine, central, clock = running(bus=bus)
    answer_health(engine, clock, "KO")
    ((topic, key, record),) = bus.take()
    assert (topic, key, record.role, record.key_id) == ("cp.events", "CP1", "M", central.key_id)
    assert security.open_message(central.kafka, record) == m.Avr("CP1", "the Engine reports a fault (KO)")


# ---------------------------------------------------------------------------
# wiring: --control, --stdin, evctl monitor
# ---------------------------------------------------------------------------


def test_the_tap_wires_a_control_endpoint_and_a_credential_source(tmp_path):
    from evnet.endpoints import Listener

    options = monitor_tap.Options()
    options.parseOptions(["--cp-id", "CP1", "--credentials-file", str(tmp_path / "c.json"),
                          "--control", "tcp:0:interface=127.0.0.1"])
    monitor = monitor_tap.makeService(options)
    listeners = [s for s in monitor if isinstance(s, Listener)]
    assert [(x.option, x.description) for x in listeners] == [("control", "tcp:0:interface=127.0.0.1")]
    assert isinstance(monitor.source, CredentialSource) and monitor.source.path == str(tmp_path / "c.json")
    options = monitor_tap.Options()
    options.parseOptions(["--cp-id", "CP1"])
    assert not [s for s in monitor_tap.makeService(options) if isinstance(s, Listener)]  # default: none


def test_evctl_monitor_takes_an_endpoint_and_an_action():
    args = build_parser().parse_args(["monitor", "7102", "reauth"])
    assert (args.endpoint, args.action) == ("7102", "reauth")
    assert monitor_phase_names() >= {"ready", "revoked", "re-authenticating"}


def monitor_phase_names():
    return {p.value for p in LinkPhase}
