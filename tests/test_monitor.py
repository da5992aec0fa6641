"""The Monitor (EV_CP_M) on fake endpoints, fake transports, a fake clock and a fake Central."""

import pytest
from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone, ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import capturedLogs, formatEvent
from twisted.python import usage
from twisted.python.failure import Failure

from evnet.monitor import tap as monitor_tap
from evnet.protocols import messages as m
from evnet.protocols import security
from evnet.protocols.framing import ACK_BYTE, ENQ_BYTE, EOT_BYTE, NACK_BYTE, FrameDecoder
from evnet.monitor.service import MonitorService
from evnet.monitor.states import Health
from evnet.registry.credentials import Credentials

from tests.fakes import frame_of
from evnet.kafka.bus import BusError, KafkaBus
from tests.test_engine import FakeBus, read_frames

FAST = 2**4  # the scrypt cost of the test verifiers: a login in microseconds
SECRET = "c2VjcmV0LWZvci10aGUtdGVzdHMtb25seS0tLS0tLS0"
VERIFIER = security.make_verifier(SECRET, n=FAST)
CREDENTIALS = Credentials("CP1", SECRET, "https://127.0.0.1:7443")


class Peer:
    """The far end of one link the Monitor opened: Central or the Engine."""

    def __init__(self, proto, transport):
        self.proto = proto  # ClientService's proxy around the FramedLink
        self.transport = transport
        self.decoder = FrameDecoder()

    def _take(self):
        data = self.transport.value()
        self.transport.clear()
        return data

    def accept(self):
        assert self._take() == ENQ_BYTE
        self.proto.dataReceived(ACK_BYTE)

    def refuse(self):
        assert self._take() == ENQ_BYTE
        self.proto.dataReceived(NACK_BYTE)

    def send(self, msg):
        self.proto.dataReceived(frame_of(msg))

    def received(self):
        """What the Monitor sent since last asked, each frame ACKed in turn."""
        return read_frames(self.decoder, self._take, lambda: self.proto.dataReceived(ACK_BYTE))

    def lose(self):
        self.proto.connectionLost(Failure(ConnectionDone("gone")))


class CentralPeer(Peer):
    """
    A fake Central built from L{security.ServerLogin}: L{login} answers the
    Monitor's AUTH and PROOF; once it gave a key, L{send} seals (role C) and
    L{received} opens what the Monitor sealed (role M), failing on anything
    in the clear.  L{raw} is what the link carried, unopened.
    """

    def __init__(self, proto, transport):
        super().__init__(proto, transport)
        self.sealer = self.opener = None
        self.key_id = self.key = None
        self.raw = []

    def send_plain(self, msg):
        super().send(msg)

    def send(self, msg):
        if self.sealer is None:
            return self.send_plain(msg)
        return self.send_plain(security.seal_message(self.sealer, msg))

    def received(self):
        msgs = super().received()
        self.raw += msgs
        if self.opener is None:
            return msgs
        assert all(isinstance(x, m.Sec) for x in msgs), f"in the clear after KEY: {msgs}"
        return [security.open_message(self.opener, x) for x in msgs]

    def use_key(self, key_id, key):
        self.key_id, self.key = key_id, key
        self.sealer = security.Sealer("CP1", key_id, key, security.ROLE_CENTRAL)
        self.opener = security.Opener("CP1", key_id, key, (security.ROLE_MONITOR,))
        self.kafka = security.Opener("CP1", key_id, key, (security.ROLE_MONITOR, security.ROLE_ENGINE))

    def login(self, state="ACTIVADO", liveness=1.0, verifier=VERIFIER, tamper=None):
        """
        Answer the Monitor's login (plain, or sealed on a keyed link) and give
        it a new key; what the Monitor sent after the KEY, opened.  With
        C{tamper}, the KEY sent is C{tamper(KEY)} and no key is taken.
        """
        (auth,) = self.received()
        assert isinstance(auth, m.Auth) and auth.cp_id == "CP1"
        server = security.ServerLogin(auth, verifier, b"decoy")
        self.send(server.challenge())
        (proof,) = self.received()
        assert isinstance(proof, m.Proof)
        answer, key_id, key = server.check(proof, state, liveness)
        if tamper is not None:
            self.send(tamper(answer))
            return self.received()
        self.send(answer)
        self.use_key(key_id, key)
        return self.received()


class FakeEndpoint:
    """Connects at once to a fresh peer (a C{peer_class}), or fails while C{down}."""

    def __init__(self, peer_class=Peer):
        self.peers = []
        self.attempts = []
        self.down = False
        self.clock = None
        self.peer_class = peer_class

    def connect(self, factory):
        self.attempts.append(self.clock.seconds() if self.clock else None)
        if self.down:
            return defer.fail(ConnectionRefusedError("nobody listens"))
        proto = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 7000))
        transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 7000))
        proto.makeConnection(transport)
        self.peers.append(self.peer_class(proto, transport))
        return defer.succeed(proto)

    @property
    def peer(self):
        return self.peers[-1]


def no_jitter(attempt):
    return 1.5**attempt  # backoffPolicy(initialDelay=1, factor=1.5) without jitter


def make_monitor(**kwargs):
    clock = Clock()
    engine, central = FakeEndpoint(), FakeEndpoint(CentralPeer)
    engine.clock = central.clock = clock
    kwargs.setdefault("backoff", no_jitter)
    kwargs.setdefault("credentials", CREDENTIALS)
    monitor = MonitorService(
        "CP1", "Calle Mayor 1", 0.3, engine, central, clock,
        engine_name="tcp:host=127.0.0.1:port=7100", central_name="tcp:host=127.0.0.1:port=7000", **kwargs
    )
    return monitor, engine, central, clock


def authenticate(central, state="ACTIVADO", **kwargs):
    """Open the link and answer the login; what the Monitor sent after KEY (opened)."""
    central.accept()
    return central.login(state, **kwargs)


def running(engine_ok=True, **kwargs):
    """A Monitor with both links up, logged in, the Engine answering OK."""
    monitor, engine, central, clock = make_monitor(**kwargs)
    monitor.startService()
    authenticate(central.peer)
    engine.peer.accept()
    assert engine.peer.received() == [m.Cfg("CP1", 0.3), cpkey_of(central.peer), m.Hck()]
    if engine_ok:
        engine.peer.send(m.HckResp("OK"))
    return monitor, engine.peer, central.peer, clock


def cpkey_of(central):
    """The CPKEY the Monitor hands its Engine for the key C{central} gave."""
    return m.CpKey("CP1", central.key_id, security.b64(central.key))


def answer_health(engine_peer, clock, result="OK"):
    clock.advance(1)
    msgs = engine_peer.received()
    if m.Hck() in msgs:
        engine_peer.send(m.HckResp(result))
    return msgs


def test_logs_in_then_reports_status_every_second():
    monitor, engine, central, clock = make_monitor()
    monitor.startService()
    after_key = authenticate(central.peer)
    assert after_key == [m.Status("CP1", "OK")]  # the Engine's health is not known yet
    assert monitor.central_state == "ACTIVADO"
    engine.peer.accept()
    for _ in range(3):
        answer_health(engine.peer, clock)
        assert m.Status("CP1", "OK") in central.peer.received()


def test_an_engine_never_reached_is_a_fault_after_one_health_period():
    monitor, engine, central, clock = make_monitor()
    engine.down = True
    monitor.startService()
    authenticate(central.peer)
    clock.advance(1)
    msgs = central.peer.received()
    assert m.Avr("CP1", "no link to the Engine at tcp:host=127.0.0.1:port=7100") in msgs
    assert m.Status("CP1", "KO") in msgs


def test_health_check_every_period_with_cfg_first():
    monitor, engine, central, clock = running()
    assert answer_health(engine, clock) == [m.Hck()]
    assert answer_health(engine, clock) == [m.Hck()]
    assert monitor.health is Health.OK


def test_health_period_is_configurable():
    monitor, engine, central, clock = make_monitor(health_period=3)
    monitor.startService()
    engine.peer.accept()
    engine.peer.received()
    engine.peer.send(m.HckResp("OK"))
    clock.advance(2)
    assert engine.peer.received() == []
    clock.advance(1)
    assert engine.peer.received() == [m.Hck()]


def test_engine_ko_sends_avr_then_ok_sends_rcv():
    monitor, engine, central, clock = running()
    central.received()
    answer_health(engine, clock, "KO")
    msgs = central.received()
    assert m.Avr("CP1", "the Engine reports a fault (KO)") in msgs
    clock.advance(1)
    assert m.Status("CP1", "KO") in central.received()
    answer_health(engine, clock, "KO")
    assert [x for x in central.received() if isinstance(x, m.Avr)] == []  # one AVR per fault
    answer_health(engine, clock, "OK")
    assert m.Rcv("CP1") in central.received()
    clock.advance(1)
    assert m.Status("CP1", "OK") in central.received()


def test_no_answer_within_the_timeout_is_a_fault():
    monitor, engine, central, clock = running()
    central.received()
    clock.advance(1)
    assert engine.received() == [m.Hck()]  # and the Engine never answers
    clock.advance(1.9)
    assert not [x for x in central.received() if isinstance(x, m.Avr)]
    clock.advance(0.1)
    avr = [x for x in central.received() if isinstance(x, m.Avr)]
    assert avr == [m.Avr("CP1", "the Engine did not answer a health check within 2 s")]
    # A late answer is a recovery.
    engine.send(m.HckResp("OK"))
    assert m.Rcv("CP1") in central.received()


def test_engine_link_loss_is_reported_at_once_and_recovered_after_reconnect():
    monitor, engine, central_ep, clock = make_monitor()
    monitor.startService()
    central = central_ep.peer
    authenticate(central)
    engine.peer.accept()
    engine.peer.received()
    engine.peer.send(m.HckResp("OK"))
    central.received()
    engine.peer.lose()
    avr = [x for x in central.received() if isinstance(x, m.Avr)]
    assert len(avr) == 1 and avr[0].reason.startswith("lost the link to the Engine")
    # ClientService reconnects after its backoff delay: CFG again, then health is OK again.
    clock.advance(1.5)
    engine.peer.accept()
    assert engine.peer.received() == [m.Cfg("CP1", 0.3), cpkey_of(central), m.Hck()]
    engine.peer.send(m.HckResp("OK"))
    assert m.Rcv("CP1") in central.received()


def test_central_unreachable_is_said_once_and_retried_with_growing_delays():
    monitor, engine, central, clock = make_monitor()
    central.down = True
    with capturedLogs() as events:
        monitor.startService()
        for _ in range(60):
            clock.advance(1)
    attempts = central.attempts
    gaps = [b - a for a, b in zip(attempts, attempts[1:])]
    assert len(attempts) >= 5
    assert gaps == sorted(gaps) and gaps[-1] > gaps[0]  # backoff
    text = [formatEvent(e) for e in events]
    cannot = [t for t in text if "cannot reach Central at tcp:host=127.0.0.1:port=7000" in t]
    assert len(cannot) == 1
    central.down = False
    with capturedLogs() as events:
        clock.advance(60)
        authenticate(central.peer)
    assert any("connected to Central at tcp:host=127.0.0.1:port=7000" in formatEvent(e) for e in events)


def test_a_refused_login_is_shown_and_retried_with_backoff():
    monitor, engine, central, clock = make_monitor()
    with capturedLogs() as events:
        monitor.startService()
        central.peer.accept()
        (auth,) = central.peer.received()
        central.peer.send(m.Refused("AUTH", "CP1", "wrong credentials"))
    assert EOT_BYTE in central.peer.transport.value()
    assert central.peer.transport.disconnecting
    assert any("Central refused the login of CP CP1: wrong credentials; retrying later" in formatEvent(e)
               for e in events)
    central.peer.lose()
    assert len(central.attempts) == 1
    # Each refusal lengthens the delay: 1.5**2 after the first one...
    clock.advance(2.2)
    assert len(central.attempts) == 1
    clock.advance(0.1)
    assert len(central.attempts) == 2
    central.peer.accept()
    (auth,) = central.peer.received()
    server = security.ServerLogin(auth, VERIFIER, b"decoy")
    central.peer.send(server.challenge())
    central.peer.received()
    central.peer.send(m.Refused("AUTH", "CP1", "too many failures from this address"))
    central.peer.lose()
    clock.advance(1.5**3 - 0.1)
    assert len(central.attempts) == 2  # ...1.5**3 after the second
    clock.advance(0.2)
    assert len(central.attempts) == 3
    authenticate(central.peer)
    assert monitor.central_ready and monitor.refusals["central"] == 0


def test_a_fault_known_before_auth_is_reported_right_after_it():
    monitor, engine, central, clock = make_monitor()
    monitor.startService()
    engine.peer.accept()
    engine.peer.received()
    engine.peer.send(m.HckResp("KO"))  # Central gave no key yet: the AVR is dropped...
    msgs = authenticate(central.peer)
    assert msgs[0] == m.Avr("CP1", "the Engine reports a fault (KO)")  # ...and sent after KEY
    assert msgs[1] == m.Status("CP1", "KO")


def test_engine_that_refuses_this_monitor_is_a_fault():
    monitor, engine, central, clock = make_monitor()
    monitor.startService()
    authenticate(central.peer)
    engine.peer.refuse()
    engine.peer.lose()
    assert m.Avr("CP1", "the Engine refused this Monitor (it already serves another one)") in central.peer.received()


def test_relays_central_to_engine_and_engine_to_central():
    monitor, engine, central, clock = running()
    central.received()
    start = m.Start("CP1", "S1", "D1", 0.3, 5.0, 0)
    for msg in (start, m.Parar("CP1"), m.Reanudar("CP1"), m.Ticket("S1", 1.0, 0.3, 60, "CP1", "D1", "unplug")):
        central.send(msg)
        assert engine.received() == [msg]
    telem = m.Telem("CP1", "S1", 1, 0.01, 36.0, 0.01, 1)
    stop = m.Stop("CP1", "S1", 2, 0.01, 0.01, 1, "unplug")
    req = m.Req("D2", "CP1", 0.0)
    for msg in (telem, stop, req):
        engine.send(msg)
        assert central.received() == [msg]


def test_engine_messages_are_dropped_with_a_log_line_while_central_is_unreachable():
    monitor, engine, central, clock = running()
    central.lose()
    with capturedLogs() as events:
        engine.send(m.Telem("CP1", "S1", 1, 0.01, 36.0, 0.01, 1))
    assert any("Central is not reachable: TELEM dropped" in formatEvent(e) for e in events)


def test_a_charge_asked_at_the_cp_while_central_is_unreachable_is_denied_on_the_engine():
    monitor, engine, central, clock = running()
    central.lose()
    engine.received()
    with capturedLogs() as events:
        engine.send(m.Req("D7", "CP1", 5.0))
    (answer,) = engine.received()
    assert isinstance(answer, m.Denied) and (answer.driver_id, answer.cp_id) == ("D7", "CP1")
    assert answer.reason.startswith("cannot reach EV_Central")
    assert any("Charge for D7 asked at the CP not sent: cannot reach EV_Central" in formatEvent(e) for e in events)


def test_answers_from_central_out_of_order_are_logged_and_ignored():
    monitor, engine, central_ep, clock = make_monitor()
    monitor.startService()
    central = central_ep.peer
    central.accept()
    (auth,) = central.received()
    server = security.ServerLogin(auth, VERIFIER, b"decoy")
    with capturedLogs() as events:
        central.send(m.Key("CP1", "ACTIVADO", "0a1b2c3d", "AA", "AA"))  # before any CHALLENGE
    text = [formatEvent(e) for e in events]
    assert "the Central link: KEY is not allowed when authenticating; ignored" in text, text
    assert not monitor.central_ready and central.received() == []
    central.send(server.challenge())
    (proof,) = central.received()
    with capturedLogs() as events:
        central.send(server.challenge())  # again: no second PROOF
    assert "the Central link: CHALLENGE is not allowed when proving; ignored" in [formatEvent(e) for e in events]
    assert central.received() == []
    with capturedLogs() as events:
        central.send(m.Start("CP1", "S1", "D1", 0.3))  # not logged in yet: not relayed
    assert "Ignored START from Central" in [formatEvent(e) for e in events]
    answer, key_id, session_key = server.check(proof, "ACTIVADO")
    central.send(answer)
    central.use_key(key_id, session_key)
    assert monitor.central_ready and central.received() == [m.Status("CP1", "OK")]
    with capturedLogs() as events:
        central.send(m.Refused("AUTH", "CP1", "late"))  # keyed: nothing to refuse any more
    assert "the Central link: REFUSED#AUTH is not allowed when ready; ignored" in [formatEvent(e) for e in events]
    assert monitor.central_ready and not central.transport.disconnecting
    clock.advance(1)
    assert [x.code for x in central.received()] == ["AVR", "STATUS"]  # the link still carries the reports


def test_a_relayed_message_the_engine_link_does_not_take_is_said():
    monitor, engine, central, clock = running()
    engine.proto.drop("going away")  # closing: sends fail at once, nothing raises
    with capturedLogs() as events:
        central.send(m.Start("CP1", "S1", "D1", 0.3, 5.0, 0))
    text = [formatEvent(e) for e in events]
    assert any("START not delivered to the Engine: cannot send START: link closing" in t for t in text), text


def parse_monitor_options(*argv):
    options = monitor_tap.Options()
    options.parseOptions(list(argv))
    return options


GOOD = ["--cp-id", "CP1", "--location", "Centro", "--price", "0.3"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--location", "Centro", "--price", "0.3"], "--cp-id is required"),
        (["--cp-id", "CP#1", "--location", "Centro", "--price", "0.3"], "--cp-id 'CP#1'"),
        (["--cp-id", "CP1", "--location", " ", "--price", "0.3"], "--location may not be empty"),
        (["--cp-id", "CP1", "--location", "Centro", "--price", "cheap"], "--price must be a number"),
        (["--cp-id", "CP1", "--location", "Centro", "--price", "-1"], "--price must be a number"),
        (GOOD + ["--health-period", "0"], "--health-period must be a number of seconds above 0"),
        (GOOD + ["--central", "nowhere"], "--central 'nowhere' is not a client endpoint string"),
        (GOOD + ["--engine", "nowhere"], "--engine 'nowhere' is not a client endpoint string (e.g. tcp:host=127.0.0.1:port=7100)"),
        (GOOD + ["--control", "nowhere"], "--control 'nowhere' is not a server endpoint string"),
        (["--cp-id", "CP1", "--location", "Centro", "--price", "500"], "--price must be a number of EUR per kWh from 0 to 100"),
        (["--cp-id", "CP1", "--location", "x" * 256, "--price", "0.3"], "--location is too long: the Registry takes at most 255 characters"),
        (GOOD + ["--registry", "https://127.0.0.1:7443"], "--registry and --enrollment-token-file go together"),
        (GOOD + ["--enrollment-token-file", "cp1.token"], "--registry and --enrollment-token-file go together"),
        (GOOD + ["--registry", "http://127.0.0.1:7443", "--enrollment-token-file", "t"], "--registry: the Registry's URL must be https://HOST:PORT"),
        (GOOD + ["--registry", "https://127.0.0.1:7443", "--enrollment-token-file", "t", "--ca-file", "/nonexistent.pem"],
         "--ca-file /nonexistent.pem: cannot read it"),
    ],
)
def test_monitor_options_reject_mistakes_clearly(argv, message):
    with pytest.raises(usage.UsageError) as e:
        parse_monitor_options(*argv)
    assert message in str(e.value)


def test_monitor_options_accept_a_good_command_line():
    options = parse_monitor_options(*GOOD, "--health-timeout", "1.5")
    assert (options["price"], options["health-period"], options["health-timeout"]) == (0.3, 1.0, 1.5)
    assert options["credentials-file"] == "evmonitor-CP1-credentials.json"  # the documented default
    assert options["control"] == "none"
    # Once registered, neither a location nor a price is needed.
    options = parse_monitor_options("--cp-id", "CP1", "--credentials-file", "cp1.json")
    assert (options["location"], options["price"], options["credentials-file"]) == (None, None, "cp1.json")


# ---------------------------------------------------------------------------
# --kafka: AVR and RCV through cp.events; STATUS stays on the link
# ---------------------------------------------------------------------------


def test_with_kafka_avr_and_rcv_go_to_cp_events_and_status_stays_on_the_link():
    bus = FakeBus()
    monitor, engine, central, clock = running(bus=bus)
    central.received()
    answer_health(engine, clock, "KO")
    assert bus.take_opened(central.kafka) == [("cp.events", "CP1", m.Avr("CP1", "the Engine reports a fault (KO)"))]
    clock.advance(1)
    msgs = central.received()
    assert m.Status("CP1", "KO") in msgs  # Central sees the fault this way too
    assert not [x for x in msgs if isinstance(x, (m.Avr, m.Rcv))]
    answer_health(engine, clock, "OK")
    assert bus.take_opened(central.kafka) == [("cp.events", "CP1", m.Rcv("CP1"))]
    assert not [x for x in central.received() if isinstance(x, (m.Avr, m.Rcv))]


def test_with_kafka_a_fault_known_before_auth_is_published_right_after_it():
    bus = FakeBus()
    monitor, engine, central, clock = make_monitor(bus=bus)
    monitor.startService()
    engine.peer.accept()
    engine.peer.received()
    engine.peer.send(m.HckResp("KO"))
    assert bus.take() == []  # Central is not authenticated yet
    msgs = authenticate(central.peer)
    assert bus.take_opened(central.peer.kafka) == [("cp.events", "CP1", m.Avr("CP1", "the Engine reports a fault (KO)"))]
    assert msgs == [m.Status("CP1", "KO")]


def test_with_kafka_the_engines_messages_are_still_relayed_on_the_link():
    # An Engine without --kafka behind a Monitor with it: nothing is lost.
    bus = FakeBus()
    monitor, engine, central, clock = running(bus=bus)
    central.received()
    telem = m.Telem("CP1", "S1", 1, 0.01, 36.0, 0.01, 1)
    engine.send(telem)
    assert central.received() == [telem]
    assert bus.take() == []


def test_with_kafka_a_refused_avr_is_logged():
    bus = FakeBus(hold=True)
    monitor, engine, central, clock = running(bus=bus)
    answer_health(engine, clock, "KO")
    with capturedLogs() as events:
        bus.fail(BusError("Kafka at fake:9092 did not take the cp.events message: not authorized"))
    text = [formatEvent(e) for e in events]
    assert any("AVR not sent to Kafka: Kafka at fake:9092 did not take" in t and "STATUS" in t for t in text), text


def test_monitor_options_accept_kafka_and_refuse_a_bad_address():
    with pytest.raises(usage.UsageError) as e:
        parse_monitor_options(*GOOD, "--kafka", "nowhere")
    assert "--kafka: Kafka address 'nowhere': expected HOST:PORT" in str(e.value)
    options = parse_monitor_options(*GOOD, "--kafka", "127.0.0.1:9092")
    monitor = monitor_tap.makeService(options)
    assert isinstance(monitor.bus, KafkaBus) and monitor.bus.parent is monitor
