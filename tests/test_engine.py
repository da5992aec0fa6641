"""The Engine (EV_CP_E) on a fake Monitor link, a fake clock and a temp state dir."""

import json

import pytest
from twisted.application import service
from twisted.internet import defer
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import Logger, capturedLogs, formatEvent
from twisted.python import usage
from twisted.python.failure import Failure

from evnet.engine import tap as engine_tap
from evnet.ctl.cli import LineExchange, build_parser, client_endpoint_string
from evnet.protocols import messages as m
from evnet.protocols import security
from evnet.protocols.framing import ACK_BYTE, ENQ_BYTE, NACK_BYTE, FrameDecoder, Kind
from evnet.kafka.bus import BusError, BusFull, KafkaBus
from evnet.engine.charger import Charger, Phase, PhaseInput
from evnet.engine.control import ENGINE_BANNER
from evnet.linecontrol import ConsoleProtocol, ConsoleService, ControlFactory
from evnet.engine.service import EngineService
from evnet.engine.statefile import STATE_FILE_NAME, StateFile

from tests.fakes import FakeStateWriter, frame_of, make_link, take

PRICE = 0.5
POWER = 36.0  # kW: 0.01 kWh a second


def read_frames(decoder, take_bytes, ack, early=b""):
    """Decode the frames a peer wrote, calling C{ack} after each, until it writes no more."""
    msgs = []
    data = early + take_bytes()
    while True:
        frames = [e for e in decoder.feed(data) if e.kind is Kind.FRAME]
        if not frames:
            return msgs
        for event in frames:
            msgs.append(m.decode(event.data))
            ack()
        data = take_bytes()


class MonitorEnd:
    """The Monitor's end of an Engine link: reads and ACKs the Engine's frames."""

    def __init__(self, engine, clock):
        self.link, self.transport, _, _ = make_link(False, handler=engine, clock=clock)
        self.decoder = FrameDecoder()
        self.link.dataReceived(ENQ_BYTE)
        data = take(self.transport)
        self.answer, self._early = data[:1], data[1:]

    def send(self, msg):
        self.link.dataReceived(frame_of(msg))

    def received(self):
        """The messages the Engine sent since last asked, each ACKed in turn."""
        early, self._early = self._early, b""
        return read_frames(self.decoder, lambda: take(self.transport), lambda: self.link.dataReceived(ACK_BYTE), early)

    def lose(self):
        self.link.connectionLost(Failure(ConnectionDone()))


class FakeBus(service.MultiService):
    """
    A L{KafkaBus} stand-in: records every publish as (topic, key, msg).  Each
    publish's Deferred fires at once (C{hold=False}) or waits in C{waiting}
    for L{ack} / L{fail}.  L{subscribe_key} returns a L{FakeConsumer}.
    """

    bootstrap = "fake:9092"

    def __init__(self, hold=False):
        super().__init__()
        self.hold = hold
        self.published = []
        self.waiting = []
        self.consumers = []
        self.watchers = []

    def publish(self, topic, key, msg):
        self.published.append((topic, key, msg))
        d = defer.Deferred()
        if self.hold:
            self.waiting.append(d)
        else:
            d.callback(None)
        return d

    def ack(self):
        waiting, self.waiting = self.waiting, []
        for d in waiting:
            d.callback(None)

    def fail(self, error):
        waiting, self.waiting = self.waiting, []
        for d in waiting:
            d.errback(error)

    def take(self, topic=None):
        """What was published (to C{topic}) since last asked, as (topic, key, msg)."""
        got = [p for p in self.published if topic is None or p[0] == topic]
        self.published = [p for p in self.published if p not in got]
        return got

    def take_opened(self, opener, topic=None):
        """L{take}, each record opened with C{opener} (they must all be sealed): (topic, key, msg)."""
        got = self.take(topic)
        assert all(isinstance(msg, m.Sec) for _, _, msg in got), f"published in the clear: {got}"
        return [(t, k, security.open_message(opener, msg)) for t, k, msg in got]

    def subscribe_key(self, topic, key, handler, group_id):
        consumer = FakeConsumer(topic, key, handler, group_id)
        self.consumers.append(consumer)
        return consumer


class FakeConsumer:
    def __init__(self, topic, key, handler, group_id):
        self.topic, self.key, self.handler, self.group_id = topic, key, handler, group_id
        self.ready = defer.Deferred()

    def feed(self, *msgs):
        for msg in msgs:
            self.handler(self.topic, self.key, msg)


def make_engine(tmp_path, clock=None, hold=False, **kwargs):
    """An Engine on a fake clock whose state writes go through a L{FakeStateWriter} (at once, or held)."""
    clock = clock or Clock()
    store = StateFile(tmp_path)
    kwargs.setdefault("power_kw", POWER)
    kwargs.setdefault("writer", FakeStateWriter(store, hold=hold))
    engine = EngineService(store, clock, restored=store.load(), **kwargs)
    engine.startService()
    return engine, clock


KEY_ID = "0a1b2c3d"
KEY = bytes(range(32, 64))  # the session key a Monitor hands over in tests
CPKEY = m.CpKey("CP1", KEY_ID, security.b64(KEY))


def central_opener():
    """What Central opens the CP's Kafka records with (the roles a CP seals by)."""
    return security.Opener("CP1", KEY_ID, KEY, (security.ROLE_MONITOR, security.ROLE_ENGINE))


def connect(engine, clock, cfg=True, key=False):
    """A Monitor link to C{engine}: CFG first (C{cfg}), then the CPKEY (C{key})."""
    monitor = MonitorEnd(engine, clock)
    assert monitor.answer == ACK_BYTE
    if cfg:
        monitor.send(m.Cfg("CP1", PRICE))
    if key:
        monitor.send(CPKEY)
    return monitor


def run(clock, monitor, seconds):
    """Let C{seconds} seconds pass, one tick at a time, reading as a Monitor does."""
    msgs = []
    for _ in range(seconds):
        clock.advance(1)
        msgs += monitor.received()
    return msgs


def start_msg(session="S1", kwh=0.0, seconds=0):
    return m.Start("CP1", session, "D1", PRICE, kwh, seconds)


def of(msgs, cls):
    return [msg for msg in msgs if isinstance(msg, cls)]


def test_health_checks_answer_ok_then_ko_during_a_fault_then_ok(tmp_path):
    engine, clock = make_engine(tmp_path)
    monitor = connect(engine, clock)
    monitor.send(m.Hck())
    assert monitor.received() == [m.HckResp("OK")]
    assert engine.command("fault").startswith("OK fault simulated")
    monitor.send(m.Hck())
    assert monitor.received() == [m.HckResp("KO")]
    assert engine.command("recover").startswith("OK recovered")
    monitor.send(m.Hck())
    assert monitor.received() == [m.HckResp("OK")]


def test_second_monitor_is_refused_with_a_clear_log_line(tmp_path):
    engine, clock = make_engine(tmp_path)
    first = connect(engine, clock)
    with capturedLogs() as events:
        second = MonitorEnd(engine, clock)
    assert second.answer == NACK_BYTE
    assert second.transport.disconnecting
    text = [formatEvent(e) for e in events]
    assert any("Refused a second Monitor" in t and "already serving a Monitor from 127.0.0.1:5555" in t for t in text)
    # The first Monitor is still the one served.
    first.send(m.Hck())
    assert first.received() == [m.HckResp("OK")]
    # Once it is gone, another Monitor may connect.
    first.lose()
    assert MonitorEnd(engine, clock).answer == ACK_BYTE


def test_a_charge_to_its_kwh_target(tmp_path):
    engine, clock = make_engine(tmp_path)
    monitor = connect(engine, clock)
    monitor.send(start_msg(kwh=0.035))
    clock.advance(1)
    assert monitor.received() == []  # authorized, but nothing is plugged in yet
    assert engine.command("plug") == "OK plugged in: supplying session S1 for D1"
    msgs = run(clock, monitor, 3)
    assert msgs == [
        m.Telem("CP1", "S1", 1, 0.01, POWER, 0.005, 1),
        m.Telem("CP1", "S1", 2, 0.02, POWER, 0.01, 2),
        m.Telem("CP1", "S1", 3, 0.03, POWER, 0.015, 3),
    ]
    clock.advance(1)  # the target is reached half-way through this second
    msgs = monitor.received()
    assert msgs == [
        m.Telem("CP1", "S1", 4, 0.035, POWER, 0.0175, 3),
        m.Stop("CP1", "S1", 5, 0.035, 0.0175, 3, "target"),
    ]
    assert run(clock, monitor, 3) == []  # no TELEM after the end
    assert "state=idle" in engine.command("status")


def test_a_charge_to_its_seconds_target_with_auto_plug(tmp_path):
    engine, clock = make_engine(tmp_path, auto_plug=True)
    monitor = connect(engine, clock)
    monitor.send(start_msg(seconds=2))
    msgs = run(clock, monitor, 2)
    assert [msg.code for msg in msgs] == ["TELEM", "TELEM", "STOP"]
    assert msgs[-1] == m.Stop("CP1", "S1", 3, 0.02, 0.01, 2, "target")
    # Auto-plug also unplugs at the end: the next charge plugs in again.
    assert "plugged=no" in engine.command("status")


def test_a_charge_ended_by_unplug(tmp_path):
    engine, clock = make_engine(tmp_path)
    monitor = connect(engine, clock)
    monitor.send(start_msg())
    engine.command("plug")
    msgs = run(clock, monitor, 10)
    clock.advance(0.5)
    answer = engine.command("unplug")
    assert answer == "OK unplugged: session S1 ended (unplug): 0.105 kWh, 0.05 EUR, 10 s"
    msgs += monitor.received()
    assert len(of(msgs, m.Telem)) == 10
    assert of(msgs, m.Stop) == [m.Stop("CP1", "S1", 11, 0.105, 0.0525, 10, "unplug")]
    assert engine.command("unplug") == "ERROR no vehicle is plugged in"


def test_plug_without_an_authorized_charge_is_refused(tmp_path):
    engine, clock = make_engine(tmp_path)
    connect(engine, clock)
    assert engine.command("plug").startswith("ERROR no charge authorized")
    assert engine.command("p").startswith("ERROR no charge authorized")  # the one-key form
    assert engine.command("dance") == "ERROR unknown command 'dance' (try: help)"
    assert engine.command("status extra") == "ERROR status takes no arguments"


def test_fault_during_a_charge_ends_it_with_reason_fault(tmp_path):
    engine, clock = make_engine(tmp_path, auto_plug=True)
    monitor = connect(engine, clock)
    monitor.send(start_msg())
    clock.advance(1)
    engine.command("fault")
    msgs = monitor.received()
    assert of(msgs, m.Stop) == [m.Stop("CP1", "S1", 2, 0.01, 0.005, 1, "fault")]
    # While the fault lasts, a START cannot be supplied: it is ended at once.
    monitor.send(start_msg("S2"))
    assert of(monitor.received(), m.Stop) == [m.Stop("CP1", "S2", 1, 0.0, 0.0, 0, "fault")]


def test_parar_ends_a_charge_and_refuses_new_ones_until_reanudar(tmp_path):
    engine, clock = make_engine(tmp_path, auto_plug=True)
    monitor = connect(engine, clock)
    monitor.send(start_msg())
    run(clock, monitor, 2)
    monitor.send(m.Parar("CP1"))
    assert of(monitor.received(), m.Stop) == [m.Stop("CP1", "S1", 3, 0.02, 0.01, 2, "parar")]
    monitor.send(start_msg("S2"))
    assert of(monitor.received(), m.Stop)[0].reason == "parar"
    monitor.send(m.Reanudar("CP1"))
    monitor.send(start_msg("S3"))
    clock.advance(1)
    assert of(monitor.received(), m.Telem)[0].session_id == "S3"


def test_stop_is_resent_until_its_ticket_comes_back(tmp_path):
    engine, clock = make_engine(tmp_path, auto_plug=True)
    monitor = connect(engine, clock)
    monitor.send(start_msg(seconds=1))
    clock.advance(1)
    stop = of(monitor.received(), m.Stop)[0]
    assert run(clock, monitor, 5) == [stop]
    # A new Monitor link gets it at once too.
    monitor.lose()
    again = connect(engine, clock, cfg=False)
    assert again.received() == [stop]
    again.send(m.Ticket("S1", 0.01, 0.01, 1, "CP1", "D1", "target"))
    assert run(clock, again, 10) == []
    assert json.loads((tmp_path / STATE_FILE_NAME).read_text())["pending_stops"] == []


def test_losing_the_monitor_ends_the_charge_and_reports_it_to_the_next_one(tmp_path):
    engine, clock = make_engine(tmp_path, auto_plug=True)
    monitor = connect(engine, clock)
    monitor.send(start_msg(kwh=1.0))
    run(clock, monitor, 3)
    clock.advance(0.5)
    monitor.lose()  # Central makes the CP DESCONECTADO and ends the charge: so does the Engine
    clock.advance(5)
    assert "state=idle" in engine.command("status")
    again = connect(engine, clock, cfg=False)
    assert of(again.received(), m.Stop) == [m.Stop("CP1", "S1", 4, 0.035, 0.0175, 3, "monitor-lost")]
    # A new charge can start at once.
    again.send(start_msg("S2", kwh=0.01))
    assert of(run(clock, again, 2), m.Stop)[0].session_id == "S2"


def test_a_ticket_for_the_charge_in_progress_ends_it(tmp_path):
    engine, clock = make_engine(tmp_path, auto_plug=True)
    monitor = connect(engine, clock)
    monitor.send(start_msg())
    run(clock, monitor, 2)
    monitor.send(m.Ticket("S1", 0.02, 0.01, 2, "CP1", "D1", "fault: engine does not answer"))
    msgs = monitor.received()
    assert of(msgs, m.Stop) == [m.Stop("CP1", "S1", 3, 0.02, 0.01, 2, "closed-by-central")]
    assert run(clock, monitor, 6) == []  # confirmed already: not re-sent
    assert "state=idle" in engine.command("status")


def test_a_start_while_another_charge_runs_is_refused_with_a_stop(tmp_path):
    engine, clock = make_engine(tmp_path, auto_plug=True)
    monitor = connect(engine, clock)
    monitor.send(start_msg("S1"))
    monitor.received()
    monitor.send(start_msg("S2"))
    assert of(monitor.received(), m.Stop) == [m.Stop("CP1", "S2", 1, 0.0, 0.0, 0, "busy")]
    assert "session=S1" in engine.command("status")


def test_crash_during_a_charge_and_restore_from_the_state_dir(tmp_path):
    engine, clock = make_engine(tmp_path, auto_plug=True)
    monitor = connect(engine, clock)
    monitor.send(start_msg())
    last = of(run(clock, monitor, 3), m.Telem)[-1]
    assert last.kwh == 0.03
    # Crash: the process dies; no stopService, nothing more is written.
    del engine

    restarted, clock2 = make_engine(tmp_path)
    status = restarted.command("status")
    assert "state=idle" in status and "awaiting-tickets=1" in status
    monitor2 = connect(restarted, clock2)
    stop = m.Stop("CP1", "S1", 4, 0.03, 0.015, 3, "engine-restart")
    assert of(monitor2.received(), m.Stop) == [stop]  # nothing lost, nothing counted twice
    # Until the TICKET comes back, the STOP survives further restarts.
    restarted3, clock3 = make_engine(tmp_path)
    assert of(connect(restarted3, clock3).received(), m.Stop) == [stop]
    monitor3 = connect(make_engine(tmp_path)[0], Clock())
    monitor3.received()
    monitor3.send(m.Ticket("S1", 0.03, 0.02, 3, "CP1", "D1", "engine-restart"))
    fresh, clock4 = make_engine(tmp_path)
    assert of(connect(fresh, clock4).received(), m.Stop) == []


class Killed(BaseException):
    """The process is killed between the write and the rename."""


def test_state_file_survives_a_kill_between_write_and_rename(tmp_path):
    store = StateFile(tmp_path)
    store.save({"version": 1, "session": None, "n": 1})

    def killed(src, dst):
        raise Killed()

    dying = StateFile(tmp_path, replace=killed)
    with pytest.raises(Killed):
        dying.save({"version": 1, "session": None, "n": 2})
    assert json.loads(dying.temp.read_text())["n"] == 2  # the new file was written...
    assert StateFile(tmp_path).load()["n"] == 1  # ...but the previous complete one is used


def test_engine_restarts_from_the_last_complete_file_despite_a_torn_temp_file(tmp_path):
    engine, clock = make_engine(tmp_path, auto_plug=True)
    monitor = connect(engine, clock)
    monitor.send(start_msg())
    run(clock, monitor, 2)
    # The next write is cut short by a kill: a torn temp file is left behind.
    (tmp_path / (STATE_FILE_NAME + ".tmp")).write_text('{"version": 1, "sess')
    restarted, clock2 = make_engine(tmp_path)
    assert of(connect(restarted, clock2).received(), m.Stop) == [m.Stop("CP1", "S1", 3, 0.02, 0.01, 2, "engine-restart")]


def test_request_at_the_cp_goes_to_central_through_the_monitor(tmp_path):
    engine, clock = make_engine(tmp_path)
    assert engine.command("request D1") == "ERROR no Monitor connected: Central cannot be asked"
    monitor = connect(engine, clock)
    assert engine.command("request D1 2.5").startswith("OK asked Central for a charge for D1 up to 2.500 kWh")
    assert monitor.received() == [m.Req("D1", "CP1", 2.5)]
    assert engine.command("request bad#id").startswith("ERROR bad driver id")
    assert engine.command("request D1 lots").startswith("ERROR bad target")
    assert engine.command("request").startswith("ERROR usage: request DRIVER [KWH]")


def test_control_endpoint_answers_one_line_per_command(tmp_path):
    engine, _ = make_engine(tmp_path)
    proto = ControlFactory(engine.command).buildProtocol(None)
    transport = StringTransport()
    proto.makeConnection(transport)
    proto.dataReceived(b"status\nplu")
    assert transport.value().startswith(b"OK cp=? state=idle")
    transport.clear()
    proto.dataReceived(b"g\r\n")
    assert transport.value() == b"ERROR no charge authorized (use a driver's app, or: request DRIVER [KWH])\n"
    transport.clear()
    proto.dataReceived(b"help\n")
    assert transport.value().count(b"\n") == 1  # a multi-line help still travels as one line


def test_console_reads_keys_on_stdin(tmp_path):
    engine, _ = make_engine(tmp_path)
    proto = ConsoleProtocol(engine.command, ENGINE_BANNER)
    transport = StringTransport()
    proto.makeConnection(transport)
    transport.clear()
    proto.dataReceived(b"f\n")
    assert transport.value() == b"OK fault simulated: the Engine answers KO\n"
    transport.clear()
    proto.dataReceived(b"s\n")
    assert b"fault=yes" in transport.value()


def test_charger_without_i_o_needs_only_a_clock():
    clock, sent = Clock(), []
    charger = Charger(clock, 3.6, sent.append, auto_plug=True)  # 0.001 kWh a second
    charger.configure("CP9", 1.0)
    charger.start(m.Start("CP9", "S", "D", 1.0, 0.0, 0))
    clock.advance(0.5)
    charger.tick()
    assert sent == [m.Telem("CP9", "S", 1, 0.0005, 3.6, 0.0005, 0)]
    assert charger.snapshot()["session"]["kwh"] == pytest.approx(0.0005)


def test_an_input_the_charge_does_not_allow_is_logged_and_ignored():
    clock, sent = Clock(), []
    charger = Charger(clock, 3.6, sent.append, auto_plug=True, log=Logger())
    charger.configure("CP9", 1.0)
    with capturedLogs() as events:
        assert charger.phase.attempt(PhaseInput.SUPPLY, charger.log) is False  # no charge to supply
        assert charger.phase.attempt(PhaseInput.END, charger.log) is False  # no charge to end
    text = [formatEvent(e) for e in events]
    assert text == [
        "the charge: supply is not allowed when idle; ignored",
        "the charge: end is not allowed when idle; ignored",
    ]
    assert charger.phase.state is Phase.IDLE and charger.session is None and sent == []
    # The Charger carries on: a charge goes through its phases as ever.
    charger.start(m.Start("CP9", "S", "D", 1.0, 0.0, 1))
    assert charger.phase.state is Phase.SUPPLYING
    with capturedLogs() as events:
        assert charger.phase.attempt(PhaseInput.AUTHORIZE, charger.log) is False
    assert [formatEvent(e) for e in events] == ["the charge: authorize is not allowed when supplying; ignored"]
    clock.advance(1)
    charger.tick()
    assert [msg.code for msg in sent] == ["TELEM", "STOP"] and charger.phase.state is Phase.IDLE


def test_a_stop_the_closing_link_does_not_take_is_said_and_sent_to_the_next_monitor(tmp_path):
    engine, clock = make_engine(tmp_path, auto_plug=True)
    monitor = connect(engine, clock)
    monitor.send(start_msg())
    run(clock, monitor, 1)
    monitor.link.drop("the Monitor is going away")  # closing: sends fail at once, no exception
    with capturedLogs() as events:
        assert engine.command("unplug").startswith("OK unplugged: session S1 ended (unplug)")
    text = [formatEvent(e) for e in events]
    assert any(
        "STOP for session S1 not sent to the Monitor: cannot send STOP: link closing" in t
        and "sent again once a Monitor is connected" in t
        for t in text
    ), text
    monitor.lose()
    assert of(connect(engine, clock, cfg=False).received(), m.Stop)[0].session_id == "S1"


def test_console_that_cannot_read_stdin_says_so_in_one_line(tmp_path):
    engine, _ = make_engine(tmp_path)
    failures = []

    def closed_stdin(protocol):
        raise OSError(22, "Invalid argument")

    with capturedLogs() as events:
        ConsoleService(engine.command, failures.append, ENGINE_BANNER, stdio=closed_stdin).startService()
    assert failures == ["cannot read commands from stdin: Invalid argument"]
    assert [formatEvent(e) for e in events] == failures


def parse_engine_options(*argv):
    options = engine_tap.Options()
    options.parseOptions(list(argv))
    return options


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--power-kw", "0"], "--power-kw must be a number of kW above 0"),
        (["--power-kw", "fast"], "--power-kw must be a number of kW above 0"),
        (["--kafka", "localhost"], "--kafka: Kafka address 'localhost': expected HOST:PORT"),
        (["--kafka", "tcp:host=h"], "--kafka: Kafka address 'tcp:host=h': expected tcp:host=HOST:port=PORT"),
        (["--listen", "nonsense"], "--listen 'nonsense' is not a server endpoint string"),
    ],
)
def test_engine_options_reject_mistakes_clearly(tmp_path, argv, message):
    with pytest.raises(usage.UsageError) as e:
        parse_engine_options("--state-dir", str(tmp_path), *argv)
    assert message in str(e.value)


def test_engine_options_reject_a_corrupt_state_file(tmp_path):
    (tmp_path / STATE_FILE_NAME).write_text("not json")
    with pytest.raises(usage.UsageError) as e:
        parse_engine_options("--state-dir", str(tmp_path))
    assert "is not valid JSON" in str(e.value) and "move it away" in str(e.value)


def session_file(**changes):
    session = {
        "session_id": "S1", "driver_id": "D1", "price": 0.5, "target_kwh": 0.0, "target_seconds": 0,
        "phase": "supplying", "seq": 3, "kwh": 0.03, "seconds": 3.0,
    }
    return {"version": 1, "cp_id": "CP1", "price": 0.5, "session": {**session, **changes}, "pending_stops": []}


@pytest.mark.parametrize(
    "data, message",
    [
        (session_file(kwh="lots"), "session: kwh is 'lots', not a number"),
        (session_file(phase="charging"), "session: 'charging' is not a valid Phase"),
        (session_file(colour="red"), "session: unknown field 'colour'"),
        ({"version": 1, "pending_stops": [{"cp_id": "CP1"}]}, "pending_stops: the field 'session_id' is missing"),
        ({"version": 1, "cp_id": "CP#1"}, "cp_id 'CP#1' is not a CP id"),
    ],
)
def test_engine_options_reject_a_state_file_that_cannot_be_restored(tmp_path, data, message):
    (tmp_path / STATE_FILE_NAME).write_text(json.dumps(data))
    with pytest.raises(usage.UsageError) as e:
        parse_engine_options("--state-dir", str(tmp_path))
    text = str(e.value)
    assert f"the state file {tmp_path / STATE_FILE_NAME} cannot be restored: " in text, text
    assert message in text and "move it away" in text and "\n" not in text


def test_a_state_file_the_engine_wrote_is_restored(tmp_path):
    (tmp_path / STATE_FILE_NAME).write_text(json.dumps(session_file()))
    engine, clock = make_engine(tmp_path)
    assert of(connect(engine, clock).received(), m.Stop) == [m.Stop("CP1", "S1", 4, 0.03, 0.015, 3, "engine-restart")]


def test_engine_options_reject_a_state_dir_that_is_a_file(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(usage.UsageError) as e:
        parse_engine_options("--state-dir", str(tmp_path / "file"))
    assert str(e.value) == f"--state-dir {str(tmp_path / 'file')!r} is not a directory"


def test_engine_options_create_the_state_dir(tmp_path):
    options = parse_engine_options("--state-dir", str(tmp_path / "new"), "--power-kw", "22")
    assert options["power-kw"] == 22.0
    assert (tmp_path / "new").is_dir()
    assert options.restored is None


def test_evctl_sends_one_command_line_and_reads_one_answer():
    exchange = LineExchange("request D1 5")
    transport = StringTransport()
    exchange.makeConnection(transport)
    assert transport.value() == b"request D1 5\n"
    answers = []
    exchange.answer.addCallback(answers.append)
    exchange.dataReceived(b"OK asked Central\n")
    assert answers == ["OK asked Central"]
    assert transport.disconnecting
    args = build_parser().parse_args(["engine", "7101", "request", "D1", "5"])
    assert (args.endpoint, args.action, args.args) == ("7101", "request", ["D1", "5"])
    assert client_endpoint_string("7101") == "tcp:host=127.0.0.1:port=7101"


# ---------------------------------------------------------------------------
# --kafka: TELEM, STOP and REQ through Kafka instead of the Monitor link
# ---------------------------------------------------------------------------


def test_with_kafka_telemetry_and_stop_go_to_their_topics_not_the_monitor(tmp_path):
    bus = FakeBus()
    engine, clock = make_engine(tmp_path, bus=bus)
    monitor = connect(engine, clock, key=True)
    monitor.send(start_msg(kwh=0.025))
    engine.command("plug")
    assert run(clock, monitor, 3) == []  # nothing for Central on the Monitor link
    opener = central_opener()
    assert bus.take_opened(opener) == [
        ("cp.telemetry", "CP1", m.Telem("CP1", "S1", 1, 0.01, POWER, 0.005, 1)),
        ("cp.telemetry", "CP1", m.Telem("CP1", "S1", 2, 0.02, POWER, 0.01, 2)),
        ("cp.telemetry", "CP1", m.Telem("CP1", "S1", 3, 0.025, POWER, 0.0125, 2)),
        ("cp.events", "CP1", m.Stop("CP1", "S1", 4, 0.025, 0.0125, 2, "target")),
    ]
    # Control still comes on the Monitor link: the TICKET ends the re-sending.
    monitor.send(m.Hck())
    assert monitor.received() == [m.HckResp("OK")]
    monitor.send(m.Ticket("S1", 0.025, 0.0125, 2, "CP1", "D1", "target"))
    run(clock, monitor, 10)
    assert bus.take() == []
    assert "awaiting-tickets=0" in engine.command("status")
    assert "kafka=fake:9092" in engine.command("status")


def test_with_kafka_a_stop_is_resent_until_its_ticket_one_copy_at_a_time(tmp_path):
    bus = FakeBus(hold=True)  # Kafka is unreachable: nothing is acknowledged
    engine, clock = make_engine(tmp_path, bus=bus, auto_plug=True)
    monitor = connect(engine, clock, key=True)
    monitor.send(start_msg(seconds=1))
    clock.advance(1)
    stop = m.Stop("CP1", "S1", 2, 0.01, 0.005, 1, "target")
    opener = central_opener()
    assert bus.take_opened(opener, "cp.events") == [("cp.events", "CP1", stop)]
    clock.advance(10)
    assert bus.take("cp.events") == []  # the first copy still waits for Kafka: no pile-up
    bus.ack()  # Kafka is back and took it; the TICKET has not come back yet
    clock.advance(5)
    assert bus.take_opened(opener, "cp.events") == [("cp.events", "CP1", stop)]  # sealed again: not a replay
    bus.fail(BusError("Kafka at fake:9092 did not take the cp.events message: too large"))
    clock.advance(5)
    assert bus.take_opened(opener, "cp.events") == [("cp.events", "CP1", stop)]  # sent again after a refusal
    bus.ack()
    monitor.send(m.Ticket("S1", 0.01, 0.005, 1, "CP1", "D1", "target"))
    clock.advance(20)
    assert bus.take("cp.events") == []
    assert monitor.received() == []  # never on the Monitor link


def test_with_kafka_a_refused_stop_is_logged_and_kept(tmp_path):
    bus = FakeBus(hold=True)
    engine, clock = make_engine(tmp_path, bus=bus, auto_plug=True)
    connect(engine, clock, key=True)
    engine.messageReceived(engine.monitor, start_msg(seconds=1))
    clock.advance(1)
    with capturedLogs() as events:
        bus.fail(BusFull("10000 messages are already waiting for Kafka at fake:9092; refusing a new cp.events message"))
    text = [formatEvent(e) for e in events]
    assert any(
        "STOP for session S1 not sent to Kafka: 10000 messages are already waiting" in t and "sent again in 5 s" in t
        for t in text
    ), text
    assert "awaiting-tickets=1" in engine.command("status")


def test_with_kafka_refused_telemetry_is_logged_once_then_its_recovery(tmp_path):
    bus = FakeBus(hold=True)
    engine, clock = make_engine(tmp_path, bus=bus, auto_plug=True)
    monitor = connect(engine, clock, key=True)
    monitor.send(start_msg())
    with capturedLogs() as events:
        for _ in range(3):
            clock.advance(1)
            bus.fail(BusFull("10000 messages are already waiting for Kafka at fake:9092; refusing a new cp.telemetry message"))
        clock.advance(1)
        bus.ack()
    text = [formatEvent(e) for e in events]
    refused = [t for t in text if "not sent to Kafka" in t]
    assert refused == [
        "TELEM 1 of session S1 not sent to Kafka: 10000 messages are already waiting for Kafka at fake:9092; "
        "refusing a new cp.telemetry message. Central misses this update; the state file and the STOP keep the "
        "totals. Further failures are counted until Kafka takes one"
    ]
    assert any("Kafka takes telemetry again; 3 TELEM records could not be sent meanwhile" in t for t in text)
    # The state file still holds the truth.
    assert json.loads((tmp_path / STATE_FILE_NAME).read_text())["session"]["seq"] == 4


def test_with_kafka_a_request_at_the_cp_goes_to_cp_events(tmp_path):
    bus = FakeBus()
    engine, clock = make_engine(tmp_path, bus=bus)
    assert engine.command("request D1").startswith("ERROR no Monitor connected")  # its answer comes that way
    monitor = connect(engine, clock, key=True)
    assert engine.command("request D1 2.5").startswith("OK asked Central")
    assert bus.take_opened(central_opener()) == [("cp.events", "CP1", m.Req("D1", "CP1", 2.5))]
    assert monitor.received() == []


def test_with_kafka_a_stop_restored_from_the_state_file_is_published_once_a_key_comes(tmp_path):
    engine, clock = make_engine(tmp_path, auto_plug=True)
    monitor = connect(engine, clock)
    monitor.send(start_msg())
    run(clock, monitor, 2)
    engine.stopService()
    bus = FakeBus()
    engine, clock = make_engine(tmp_path, bus=bus)  # the charge ends: engine-restart, no Monitor yet
    assert bus.take() == []  # no key (it lives only in memory): nothing in the clear
    monitor = connect(engine, clock)
    assert bus.take() == []
    monitor.send(CPKEY)
    stop = m.Stop("CP1", "S1", 3, 0.02, 0.01, 2, "engine-restart")
    assert bus.take_opened(central_opener()) == [("cp.events", "CP1", stop)]


def test_with_kafka_nothing_is_published_before_the_monitors_key(tmp_path):
    bus = FakeBus()
    engine, clock = make_engine(tmp_path, bus=bus, auto_plug=True)
    monitor = connect(engine, clock)  # CFG, but no CPKEY yet
    with capturedLogs() as events:
        monitor.send(start_msg(seconds=3))
        run(clock, monitor, 3)  # three TELEMs, then the STOP at the target
    assert bus.take() == [] and monitor.received() == []
    said = [formatEvent(e) for e in events if "No key from the Monitor yet" in formatEvent(e)]
    assert said == [
        "No key from the Monitor yet: nothing is published to Kafka in the clear "
        "(STOPs are kept until a key comes, TELEMs skipped: the next one is cumulative)"
    ]
    assert "awaiting-tickets=1" in engine.command("status") and "key=none" in engine.command("status")
    assert engine.command("request D1").startswith("ERROR no key from the Monitor yet")
    monitor.send(CPKEY)  # the STOP goes at once, sealed by the Engine
    records = bus.take()
    assert [(topic, msg.role, msg.key_id) for topic, _, msg in records] == [("cp.events", "E", KEY_ID)]
    assert security.open_message(central_opener(), records[0][2]) == m.Stop("CP1", "S1", 4, 0.03, 0.015, 3, "target")
    status = engine.command("status")
    assert f"key={KEY_ID}" in status and CPKEY.key not in status  # the id, never the key


def test_with_kafka_each_topic_is_sealed_as_its_own_sequence(tmp_path):
    # Central reads cp.telemetry and cp.events on their own: whichever it reads
    # first, the other still opens (neither looks like a replay of the other).
    bus = FakeBus()
    engine, clock = make_engine(tmp_path, bus=bus, auto_plug=True)
    monitor = connect(engine, clock, key=True)
    monitor.send(start_msg(seconds=2))
    run(clock, monitor, 2)
    opener = central_opener()
    events = bus.take_opened(opener, "cp.events")
    telemetry = bus.take_opened(opener, "cp.telemetry")
    assert [msg.code for _, _, msg in events] == ["STOP"]
    assert [msg.seq for _, _, msg in telemetry] == [1, 2]


def test_a_key_the_engine_cannot_use_is_logged_and_ignored(tmp_path):
    bus = FakeBus()
    engine, clock = make_engine(tmp_path, bus=bus)
    monitor = connect(engine, clock)
    with capturedLogs() as events:
        monitor.send(m.CpKey("CP1", KEY_ID, security.b64(b"short")))
        monitor.send(m.CpKey("CP1", "not-hex!", security.b64(KEY)))
        monitor.send(m.CpKey("CP2", KEY_ID, security.b64(KEY)))
    assert [formatEvent(e) for e in events] == [
        "Ignored a key from the Monitor: the key must be 32 bytes",
        "Ignored a key from the Monitor: the key id must be 8 hex digits",
        "Ignored a key for CP CP2: this Engine serves CP1",
    ]
    assert engine.key_id is None
    with capturedLogs() as events:
        monitor.send(CPKEY)
    assert [formatEvent(e) for e in events] == [f"Key {KEY_ID} from the Monitor: Kafka records are sealed with it"]
    assert KEY_ID in engine.command("status")


def test_engine_options_accept_kafka_and_make_a_bus_started_before_the_engine(tmp_path):
    options = parse_engine_options("--state-dir", str(tmp_path), "--kafka", "127.0.0.1:9092", "--control", "none")
    top = engine_tap.makeService(options)
    children = list(top)
    assert isinstance(children[0], KafkaBus) and children[0].bootstrap == "127.0.0.1:9092"
    assert isinstance(children[1], EngineService) and children[1].bus is children[0]


def test_with_auto_plug_a_charge_without_target_ends_as_an_unplug_when_the_vehicle_is_full():
    from evnet.engine.charger import AUTO_UNPLUG_SECONDS

    clock, sent = Clock(), []
    charger = Charger(clock, 3.6, sent.append, auto_plug=True)
    charger.configure("CP9", 1.0)
    charger.start(m.Start("CP9", "S", "D", 1.0, 0.0, 0))
    for _ in range(AUTO_UNPLUG_SECONDS - 1):
        clock.advance(1)
        charger.tick()
    assert charger.session is not None and not any(isinstance(x, m.Stop) for x in sent)
    clock.advance(1)
    charger.tick()
    stop = sent[-1]
    assert isinstance(stop, m.Stop) and (stop.reason, stop.seconds) == ("unplug", AUTO_UNPLUG_SECONDS)
    assert charger.session is None and not charger.plugged


def test_without_auto_plug_a_charge_without_target_waits_for_the_unplug():
    clock, sent = Clock(), []
    charger = Charger(clock, 3.6, sent.append)
    charger.configure("CP9", 1.0)
    charger.start(m.Start("CP9", "S", "D", 1.0, 0.0, 0))
    charger.plug()
    for _ in range(100):
        clock.advance(1)
        charger.tick()
    assert charger.session is not None and not any(isinstance(x, m.Stop) for x in sent)


def test_every_example_request_file_finishes_unattended_with_auto_plug():
    """Each line of evnet/examples/*.txt, as the Engine with --auto-plug supplies it, ends by itself."""
    from pathlib import Path

    from evnet.driver.requests import read_requests

    files = sorted((Path(__file__).parent.parent / "evnet" / "examples").rglob("*.txt"))
    assert len(files) >= 6
    for path in files:
        requests, problems = read_requests(str(path))
        assert requests and not problems, path
        for request in requests:
            clock, sent = Clock(), []
            charger = Charger(clock, 11, sent.append, auto_plug=True)
            charger.configure(request.cp_id, 0.3)
            charger.start(m.Start(request.cp_id, "S", "D", 0.3, request.target_kwh, 0))
            for _ in range(3600):
                if charger.session is None:
                    break
                clock.advance(1)
                charger.tick()
            assert charger.session is None, f"{path}: {request} never ends"


# -- the state file is written off the reactor: what a change emitted waits for the disk --


def saved_stops(tmp_path):
    return [stop["session_id"] for stop in StateFile(tmp_path).load()["pending_stops"]]


def test_telem_and_stop_wait_for_their_snapshot_on_disk_in_order(tmp_path):
    engine, clock = make_engine(tmp_path, auto_plug=True, hold=True)
    writer = engine.writer
    monitor = connect(engine, clock)
    monitor.send(start_msg(seconds=2))
    writer.drain()
    monitor.received()
    clock.advance(1)  # TELEM 1: its snapshot is being written
    assert monitor.received() == []
    clock.advance(1)  # TELEM 2 and the STOP (target): their snapshot waits behind the first
    assert len(writer.held) == 1 and monitor.received() == []
    clock.advance(1)  # a third tick while that write still runs: still one write in flight
    assert len(writer.held) == 1
    writer.release()  # the first snapshot is on disk: TELEM 1 goes, the newest snapshot is written next
    assert [msg.seq for msg in of(monitor.received(), m.Telem)] == [1]
    assert saved_stops(tmp_path) == [] and len(writer.held) == 1
    writer.release()  # now the STOP is on disk, then sent
    assert saved_stops(tmp_path) == ["S1"]
    got = monitor.received()
    assert [type(msg) for msg in got] == [m.Telem, m.Stop]
    assert got[0].seq == 2 and got[1].reason == "target"


def test_a_stop_whose_state_write_failed_is_sent_only_once_a_snapshot_holding_it_is_on_disk(tmp_path):
    engine, clock = make_engine(tmp_path, auto_plug=True)
    store = engine.writer.store
    monitor = connect(engine, clock)
    monitor.send(start_msg(seconds=2))
    monitor.received()
    real_save = store.save

    def disk_full(data):
        raise OSError(28, "No space left on device")

    store.save = disk_full
    with capturedLogs() as events:
        got = run(clock, monitor, 2)  # TELEM 1, TELEM 2 and the STOP; no write succeeds
    assert [msg.seq for msg in of(got, m.Telem)] == [1, 2]  # telemetry still goes
    assert of(got, m.Stop) == []  # the STOP is not on disk: it waits
    assert any("Cannot save the state file" in formatEvent(e) and "No space left" in formatEvent(e) for e in events)
    store.save = real_save
    assert run(clock, monitor, 2) == []  # t = 3: the snapshot with the STOP is written; t = 4: nothing
    assert saved_stops(tmp_path) == ["S1"]
    assert [msg.reason for msg in of(run(clock, monitor, 1), m.Stop)] == ["target"]  # t = 5: the resend


def test_stop_service_waits_for_the_write_in_flight_then_stops_the_writer(tmp_path):
    engine, clock = make_engine(tmp_path, auto_plug=True, hold=True)
    writer = engine.writer
    assert writer.running
    monitor = connect(engine, clock)
    monitor.send(start_msg())
    stopped = engine.stopService()
    assert not stopped.called and writer.running
    writer.drain()
    assert stopped.called and not writer.running
    assert StateFile(tmp_path).load()["session"]["session_id"] == "S1"


class QueuedReactor:
    """callFromThread queues the call (thread-safe); run() makes them on this thread."""

    def __init__(self):
        import queue

        self.calls = queue.Queue()

    def callFromThread(self, f, *args, **kwargs):
        self.calls.put((f, args, kwargs))

    def run(self):
        while not self.calls.empty():
            f, args, kwargs = self.calls.get()
            f(*args, **kwargs)


def test_state_writer_saves_on_its_own_thread_and_answers_on_the_reactor(tmp_path):
    import threading

    from evnet.engine.statefile import StateWriter

    threads_seen = []

    class Recording(StateFile):
        def save(self, data):
            threads_seen.append(threading.get_ident())
            super().save(data)

    reactor = QueuedReactor()
    writer = StateWriter(Recording(tmp_path), reactor)
    writer.start()
    d1 = writer.save({"version": 1, "session": None, "n": 1})
    d2 = writer.save({"version": 1, "session": None, "n": 2})
    writer.stop()  # joins the thread once what it was given is written
    assert not d1.called  # results come only through the reactor
    reactor.run()
    assert d1.called and d2.called
    assert StateFile(tmp_path).path.exists() and json.loads(StateFile(tmp_path).path.read_text())["n"] == 2
    assert len(threads_seen) == 2 and threading.get_ident() not in threads_seen
