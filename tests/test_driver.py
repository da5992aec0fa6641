"""
EV_Driver on fakes: the request-file parser, the view, and the driver service
against a scripted fake Central on an in-memory link (iosim) and a Clock.
"""

import io
import json

import pytest
from twisted.internet import defer
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.test import iosim

from evnet.driver import cli as driver_cli
from evnet.protocols import messages as m
from evnet.protocols.link import FramedLink, LinkHandler
from tests.test_engine import FakeBus
from evnet.kafka.errors import BusError
from evnet.driver.core import EXIT_NO_LIST, DriverService
from evnet.driver.states import Phase
from evnet.driver.requests import BadLine, Request, RequestsFileError, parse_requests, read_requests
from evnet.driver.transports import KafkaTransport, LinkTransport
from evnet.driver.view import DriverView

CENTRAL = "tcp:host=127.0.0.1:port=7001"


# ---------------------------------------------------------------------------
# The request file
# ---------------------------------------------------------------------------


def test_parser_reads_ids_targets_and_skips_comments_and_blank_lines():
    text = "# my charges\n\nCP01\n  CP02 0.05  \nCP03 12   # long one\n\t\nCP-4.b_x 1.5\n"
    requests, problems = parse_requests(text, "d.txt")
    assert problems == []
    assert requests == [
        Request("CP01", 0.0, 3),
        Request("CP02", 0.05, 4),
        Request("CP03", 12.0, 5),
        Request("CP-4.b_x", 1.5, 7),
    ]


def test_parser_reports_bad_lines_with_their_number_and_skips_them():
    text = "CP01\nCP02 abc\nCP03 1 2\nCP#4\nCP05 -1\nCP06 0\nCP07 1,5\nCP08\n"
    requests, problems = parse_requests(text, "requests.txt")
    assert [r.cp_id for r in requests] == ["CP01", "CP08"]
    assert problems == [
        BadLine(2, "requests.txt:2: expected 'CP_ID [TARGET_KWH]', got 'CP02 abc'"),
        BadLine(3, "requests.txt:3: expected 'CP_ID [TARGET_KWH]', got 'CP03 1 2'"),
        BadLine(4, "requests.txt:4: expected 'CP_ID [TARGET_KWH]', got 'CP#4'"),
        BadLine(5, "requests.txt:5: expected 'CP_ID [TARGET_KWH]', got 'CP05 -1'"),
        BadLine(6, "requests.txt:6: TARGET_KWH must be more than 0, got '0'"),
        BadLine(7, "requests.txt:7: expected 'CP_ID [TARGET_KWH]', got 'CP07 1,5'"),
    ]


def test_parser_comment_needs_a_space_before_it():
    requests, problems = parse_requests("#CP01\nCP02 #CP03\nCP04 1#x\n", "f")
    assert requests == [Request("CP02", 0.0, 2)]
    assert [p.line for p in problems] == [3]


def test_parser_rejects_an_overlong_id():
    requests, problems = parse_requests("C" * 33 + "\n", "f")
    assert requests == [] and problems[0].line == 1


def test_read_requests_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(RequestsFileError, match="does not exist"):
        read_requests(str(tmp_path / "nope.txt"))
    with pytest.raises(RequestsFileError, match="is a directory"):
        read_requests(str(tmp_path))
    bad = tmp_path / "bin.txt"
    bad.write_bytes(b"\xff\xfe CP01")
    with pytest.raises(RequestsFileError, match="not UTF-8"):
        read_requests(str(bad))


def test_example_files_parse_cleanly():
    from pathlib import Path

    import evnet

    examples = Path(evnet.__file__).parent / "examples"
    for name in ("driver1.txt", "driver2.txt", "driver3.txt"):
        requests, problems = read_requests(str(examples / name))
        assert problems == [], name
        assert len(requests) >= 10, name
        assert any(r.target_kwh for r in requests), name


# ---------------------------------------------------------------------------
# The command line (user mistakes: clear message, exit 2, no traceback)
# ---------------------------------------------------------------------------


def run_main(capsys, *argv):
    with pytest.raises(SystemExit) as exit:
        driver_cli.main(list(argv))
    out, err = capsys.readouterr()
    return exit.value.code, out, err


def test_cli_missing_file(capsys, tmp_path):
    code, out, err = run_main(
        capsys, "--driver-id", "D1", "--requests-file", str(tmp_path / "x.txt"), "--central", CENTRAL
    )
    assert code == 2
    assert err == f"evdriver: error: request file '{tmp_path / 'x.txt'}' does not exist\n"
    assert "Traceback" not in out + err


def test_cli_bad_kafka_address_is_a_clear_error(capsys, tmp_path):
    f = tmp_path / "r.txt"
    f.write_text("CP01\n")
    code, _, err = run_main(capsys, "--driver-id", "D1", "--requests-file", str(f), "--kafka", "localhost")
    assert code == 2
    assert err == "evdriver: error: --kafka: Kafka address 'localhost': expected HOST:PORT, e.g. 127.0.0.1:9092\n"
    code, _, err = run_main(
        capsys, "--driver-id", "D1", "--requests-file", str(f), "--kafka", "h:1", "--central", CENTRAL
    )
    assert code == 2 and "not allowed with argument" in err


def test_cli_bad_driver_id_and_bad_endpoint(capsys, tmp_path):
    f = tmp_path / "r.txt"
    f.write_text("CP01\n")
    code, _, err = run_main(capsys, "--driver-id", "D 1", "--requests-file", str(f), "--central", CENTRAL)
    assert code == 2 and "--driver-id" in err
    code, _, err = run_main(capsys, "--driver-id", "D1", "--requests-file", str(f), "--central", "nope:1")
    assert code == 2 and "not a client endpoint string" in err


def test_cli_needs_a_file_or_list(capsys):
    code, _, err = run_main(capsys, "--driver-id", "D1", "--central", CENTRAL)
    assert code == 2 and "--requests-file" in err


def test_cli_help_lists_every_exit_code(capsys):
    code, out, _ = run_main(capsys, "--help")
    assert code == 0
    assert "0 done" in out and "1 Central refused" in out and "2 bad option" in out
    assert "3 no list from Central\nwithin --charge-timeout (--list)" in out and "130 interrupted" in out


def test_cli_negative_wait_is_refused(capsys, tmp_path):
    f = tmp_path / "r.txt"
    f.write_text("CP01\n")
    code, _, err = run_main(capsys, "--driver-id", "D1", "--requests-file", str(f), "--central", CENTRAL, "--wait", "-1")
    assert code == 2 and "must be 0 or more" in err


# ---------------------------------------------------------------------------
# A fake Central on the other end of an in-memory link
# ---------------------------------------------------------------------------


class FakeCentral(LinkHandler):
    """Answers DRIVER with ACCEPTED then C{on_hello}; everything else is up to the test."""

    def __init__(self, on_hello=(), refuse=None):
        self.on_hello = list(on_hello)
        self.refuse = refuse
        self.received = []
        self.link = None

    def linkOpened(self, link):
        self.link = link

    def messageReceived(self, link, msg):
        self.received.append(msg)
        if isinstance(msg, m.Driver):
            if self.refuse:
                link.send(m.Refused("DRIVER", msg.driver_id, self.refuse))
                return
            link.send(m.Accepted("DRIVER", msg.driver_id))
            for x in self.on_hello:
                link.send(x)

    def requests(self):
        return [x for x in self.received if isinstance(x, m.Req)]


class FakeCentralEndpoint:
    """A client endpoint that connects to C{central} over iosim, or fails while C{up} is false."""

    def __init__(self, central, clock):
        self.central = central
        self.clock = clock
        self.up = True
        self.pump = None
        self.attempts = 0

    def connect(self, factory):
        self.attempts += 1
        if not self.up:
            return defer.fail(ConnectionRefusedError("Connection refused"))
        client = factory.buildProtocol(None)
        server = FramedLink(self.central, self.clock, initiator=False)
        self.pump = iosim.connect(
            server,
            iosim.FakeTransport(server, isServer=True),
            client,
            iosim.FakeTransport(client, isServer=False),
            greet=False,
        )
        return defer.succeed(client)


class SilentCentralEndpoint(FakeCentralEndpoint):
    """A Central that takes the connection and never answers the ENQ."""

    def connect(self, factory):
        self.attempts += 1
        client = factory.buildProtocol(None)
        server = Protocol()
        self.pump = iosim.connect(
            server, iosim.FakeTransport(server, isServer=True), client, iosim.FakeTransport(client, isServer=False),
            greet=False,
        )
        return defer.succeed(client)


class Rig:
    """The driver on a framed link to a FakeCentral (iosim)."""

    connected_line = f"connected to Central at {CENTRAL} as driver D1"

    def __init__(self, requests, central=None, wait=4.0, settle=1.0, charge_timeout=600.0, list_only=False,
                 progress=None):
        self.clock = Clock()
        self.central = central or FakeCentral()
        self.endpoint = FakeCentralEndpoint(self.central, self.clock)
        self.events = []
        self.view = DriverView()
        self.driver = DriverService(
            "D1",
            requests,
            LinkTransport(self.endpoint, CENTRAL, self.clock, retry_policy=lambda attempt: 1.0),
            self.events.append,
            self.clock,
            wait=wait,
            settle=settle,
            charge_timeout=charge_timeout,
            list_only=list_only,
            progress=progress,
        )
        self.codes = []
        self.driver.done.addCallback(self.codes.append)
        self.driver.startService()
        self.flush()

    def flush(self):
        if self.endpoint.pump is not None:
            self.endpoint.pump.flush(advanceClock=False)

    def advance(self, seconds):
        self.clock.advance(seconds)
        self.flush()

    def send(self, *msgs):
        for msg in msgs:
            self.central.link.send(msg)
        self.flush()

    def lines(self):
        """The plain lines printed since the last call."""
        out = [line for event in self.events for line in self.view.text(event)]
        self.events.clear()
        return out

    def restart_central(self, central):
        """Central goes away (its side drops the link) and comes back as C{central}."""
        self.endpoint.pump.serverIO.loseConnection()
        self.flush()
        self.central = central
        self.endpoint.central = central


class _KafkaCentralEnd:
    """FakeCentral's 'link' in Kafka mode: what it sends goes to the driver's consumer."""

    def __init__(self, rig):
        self.rig = rig

    def send(self, msg):
        self.rig.inbox.append(msg)


class ObservedFakeBus(FakeBus):
    """The fake bus with KafkaBus's status hook: C{status(ok, reason)} tells the observers."""

    def __init__(self, hold=False):
        super().__init__(hold)
        self.observers = []

    def add_status_observer(self, fn):
        self.observers.append(fn)

    def status(self, reachable, reason=""):
        for fn in self.observers:
            fn(reachable, reason)


class KafkaRig(Rig):
    """
    The same driver on a KafkaTransport over a FakeBus: what it publishes to
    driver.requests goes to the FakeCentral; what the FakeCentral sends is
    fed to the driver's consumer of driver.notifications.
    """

    connected_line = "connected to Central through Kafka at fake:9092 as driver D1"

    def __init__(self, requests, central=None, wait=4.0, settle=1.0, charge_timeout=600.0, list_only=False,
                 ready=True, hello_timeout=5.0, probe_after=10.0):
        self.clock = Clock()
        self.central = central or FakeCentral()
        self.bus = ObservedFakeBus()
        self.inbox = []
        self.central.link = _KafkaCentralEnd(self)
        self.events = []
        self.view = DriverView()
        self.transport = KafkaTransport(
            self.bus, "D1", self.clock, hello_timeout=hello_timeout, probe_after=probe_after,
            hello_backoff=lambda n: min(hello_timeout * 2**n, 30.0),
        )
        self.driver = DriverService(
            "D1", requests, self.transport, self.events.append, self.clock,
            wait=wait, settle=settle, charge_timeout=charge_timeout, list_only=list_only,
        )
        self.consumer, self.status_consumer = self.bus.consumers  # driver.notifications, network.status
        self.codes = []
        self.driver.done.addCallback(self.codes.append)
        self.driver.startService()
        if ready:
            self.positioned()

    def positioned(self):
        self.consumer.ready.callback(self.consumer)
        self.flush()

    def flush(self):
        """Deliver until both sides are quiet: requests to Central, its answers to the driver."""
        while True:
            requests = [msg for topic, key, msg in self.bus.take() if topic == "driver.requests" and key == "D1"]
            for msg in requests:
                self.central.messageReceived(self.central.link, msg)
            inbox, self.inbox = self.inbox, []
            for msg in inbox:
                self.consumer.feed(msg)
            if not requests and not inbox:
                return

    def send(self, *msgs):
        for msg in msgs:
            self.central.link.send(msg)
        self.flush()

    def advance(self, seconds):
        """Second by second, delivering in between, as the real bus would."""
        while seconds > 1e-9:
            step = min(1.0, seconds)
            self.clock.advance(step)
            self.flush()
            seconds -= step

    def confirmations(self):
        return [x.subject for x in self.central.received if isinstance(x, m.Accepted) and x.what == "TICKET"]


@pytest.fixture(params=["inband", "kafka"])
def make_rig(request):
    """The driver on either transport: the same flow, the same events."""
    return Rig if request.param == "inband" else KafkaRig


def telem(seq, kwh, kw=7.2, euros=0.0, seconds=0, session="S1", cp="CP01"):
    return m.Telem(cp, session, seq, kwh, kw, euros, seconds)


def started(requests, make=Rig, **kwargs):
    """A rig past the hello and the settle pause: the first REQ is out."""
    rig = make(requests, **kwargs)
    rig.advance(1.0)
    return rig


# ---------------------------------------------------------------------------
# Each step of the output
# ---------------------------------------------------------------------------


def test_authorized_charge_step_by_step(make_rig):
    rig = make_rig([Request("CP01", 0.05), Request("CP02")])
    assert rig.lines() == [rig.connected_line]
    assert rig.central.received == [m.Driver("D1")]
    rig.advance(1.0)  # the settle pause after hello
    assert rig.central.requests() == [m.Req("D1", "CP01", 0.05)]
    assert rig.lines() == ["[1/2] CP01: requesting a charge (target 0.050 kWh)"]

    rig.send(m.Authorized("D1", "CP01", "S1"))
    assert rig.lines() == [
        "[1/2] CP01: AUTHORIZED, session S1",
        "[1/2] CP01: waiting for the vehicle to be plugged in",
    ]
    assert rig.driver.phase is Phase.AUTHORIZED
    rig.send(telem(1, 0.002, 7.2, 0.0, 1), telem(2, 0.004, 7.2, 0.01, 2))
    assert rig.lines() == [
        "[1/2] CP01: charging 0.002 kWh  7.20 kW  0.00 €  0:01",
        "[1/2] CP01: charging 0.004 kWh  7.20 kW  0.01 €  0:02",
    ]
    assert rig.driver.phase is Phase.CHARGING
    rig.send(m.Ticket("S1", 0.05, 0.02, 25, "CP01", "D1", "target"))
    assert rig.lines() == [
        "[1/2] CP01: TICKET 0.050 kWh  0.02 €  0:25  (target reached), session S1",
        "next request in 4 s",
    ]


def test_denied_request_then_the_next_one(make_rig):
    rig = started([Request("CP01"), Request("CP02")], make_rig)
    rig.lines()
    rig.send(m.Denied("D1", "CP01", "CP not available (PARADO)"))
    assert rig.lines() == ["[1/2] CP01: DENIED: CP not available (PARADO)", "next request in 4 s"]
    rig.advance(4.0)
    assert rig.lines() == ["[2/2] CP02: requesting a charge (no target)"]
    rig.send(m.Denied("D1", "CP02", "unknown CP"))
    lines = rig.lines()
    assert lines[0] == "[2/2] CP02: DENIED: unknown CP"
    assert lines[1:] == [
        "summary for driver D1: 0 tickets (0.000 kWh, 0.00 €), 2 refused, 0 unfinished",
        "  refused  CP01     CP not available (PARADO)",
        "  refused  CP02     unknown CP",
    ]
    assert rig.codes == [0]


def test_fault_during_charge(make_rig):
    rig = started([Request("CP01")], make_rig)
    rig.send(m.Authorized("D1", "CP01", "S1"), telem(1, 0.002, euros=0.01, seconds=1))
    rig.lines()
    rig.send(
        m.Notice("CP01", "fault: engine KO; the charge was ended"),
        m.Ticket("S1", 0.002, 0.01, 1, "CP01", "D1", "fault"),
    )
    assert rig.lines() == [
        "NOTICE CP01: fault: engine KO; the charge was ended",
        "[1/1] CP01: TICKET 0.002 kWh  0.01 €  0:01  (charging point fault), session S1",
        "summary for driver D1: 1 ticket (0.002 kWh, 0.01 €), 0 refused, 0 unfinished",
        "  ticket   CP01        0.002 kWh     0.01 €      0:01  charging point fault",
    ]
    assert rig.codes == [0]


def test_parar_during_charge(make_rig):
    rig = started([Request("CP01"), Request("CP02")], make_rig)
    rig.send(m.Authorized("D1", "CP01", "S1"), telem(1, 0.5, 10.0, 0.15, 3))
    rig.lines()
    rig.send(m.Ticket("S1", 0.5, 0.15, 3, "CP01", "D1", "parar"))
    assert rig.lines() == [
        "[1/2] CP01: TICKET 0.500 kWh  0.15 €  0:03  (charging point stopped by Central), session S1",
        "next request in 4 s",
    ]
    assert rig.driver.phase is Phase.WAITING


def test_the_wait_after_an_outcome_runs_on_the_clock(make_rig):
    rig = started([Request("CP01"), Request("CP02")], make_rig, wait=4.0)
    rig.send(m.Denied("D1", "CP01", "unknown CP"))
    rig.advance(3.9)
    assert rig.central.requests() == [m.Req("D1", "CP01")]
    rig.advance(0.1)
    assert rig.central.requests() == [m.Req("D1", "CP01"), m.Req("D1", "CP02")]


def test_the_driver_finishes_with_a_summary_and_closes_the_link():
    rig = started([Request("CP01", 1.0)])
    rig.send(m.Authorized("D1", "CP01", "S1"), m.Ticket("S1", 1.0, 0.3, 600, "CP01", "D1", "target"))
    assert rig.codes == [0]
    assert rig.driver.phase is Phase.DONE
    assert rig.endpoint.pump.clientIO.disconnecting
    summary = [e for e in rig.events if e["type"] == "summary"]
    assert summary == [
        {
            "type": "summary",
            "driver": "D1",
            "tickets": [
                {"session": "S1", "kwh": 1.0, "euros": 0.3, "seconds": 600, "reason": "target", "cp": "CP01"}
            ],
            "refused": [],
            "unfinished": [],
        }
    ]


# ---------------------------------------------------------------------------
# Central unreachable, link lost, restarts
# ---------------------------------------------------------------------------


def test_unreachable_central_is_reported_once_and_retried():
    clock = Clock()
    central = FakeCentral()
    endpoint = FakeCentralEndpoint(central, clock)
    endpoint.up = False
    events = []
    driver = DriverService(
        "D1", [Request("CP01")], LinkTransport(endpoint, CENTRAL, clock, retry_policy=lambda n: 2.0), events.append, clock
    )
    driver.startService()
    for _ in range(5):
        clock.advance(2.0)
    assert endpoint.attempts == 6
    assert [DriverView().text(e) for e in events] == [
        [f"cannot reach Central at {CENTRAL} (Connection was refused by other side: Connection refused.), retrying"]
    ]
    endpoint.up = True
    clock.advance(2.0)
    endpoint.pump.flush(advanceClock=False)
    assert events[-1]["type"] == "connected"
    assert central.received == [m.Driver("D1")]


def silent_central(list_only=False, charge_timeout=600.0):
    clock = Clock()
    endpoint = SilentCentralEndpoint(None, clock)
    events, codes = [], []
    driver = DriverService(
        "D1", [Request("CP01")], LinkTransport(endpoint, CENTRAL, clock, retry_policy=lambda n: 1.0),
        events.append, clock, list_only=list_only, charge_timeout=charge_timeout,
    )
    driver.done.addCallback(codes.append)
    driver.startService()
    return driver, endpoint, clock, events, codes


def test_a_central_that_never_answers_the_enq_is_reported_once_and_retried():
    driver, endpoint, clock, events, codes = silent_central()
    for _ in range(3):  # each attempt: 5 s without an answer to ENQ, the link dropped, 1 s, again
        endpoint.pump.flush(advanceClock=False)
        clock.advance(5.0)
        endpoint.pump.flush(advanceClock=False)
        clock.advance(1.0)
    assert endpoint.attempts == 4
    assert [DriverView().text(e) for e in events] == [
        [f"cannot reach Central at {CENTRAL} (link did not open: no answer to ENQ), retrying"]
    ]
    assert codes == []


def test_a_list_from_a_silent_central_ends_with_its_exit_code_and_the_driver_stops_cleanly():
    driver, endpoint, clock, events, codes = silent_central(list_only=True, charge_timeout=3.0)
    endpoint.pump.flush(advanceClock=False)
    clock.advance(3.0)  # before the ENQ timeout: the link is still opening
    assert codes == [EXIT_NO_LIST]
    assert [e["type"] for e in events] == ["list_timeout"]
    stopped = driver.stopService()
    endpoint.pump.flush(advanceClock=False)
    assert stopped.called
    assert endpoint.pump.clientIO.disconnected  # no connection left behind
    clock.advance(60)
    assert endpoint.attempts == 1  # stopped: no more attempts
    assert clock.getDelayedCalls() == []


def test_reconnect_after_central_restarts_mid_charge():
    rig = started([Request("CP01"), Request("CP02")])
    rig.send(m.Authorized("D1", "CP01", "S1"), telem(1, 0.1, seconds=1))
    rig.lines()
    # Central goes down and stays down for a while.
    rig.endpoint.up = False
    rig.restart_central(FakeCentral(on_hello=[m.Authorized("D1", "CP01", "S1")]))
    rig.advance(1.0)
    rig.advance(1.0)
    lines = rig.lines()
    assert lines[0] == f"lost the link to Central at {CENTRAL}, reconnecting"
    assert lines[1].startswith(f"cannot reach Central at {CENTRAL}")
    assert len(lines) == 2
    # Central is back: hello again, Central re-sends the AUTHORIZED of the charge.
    rig.endpoint.up = True
    rig.advance(1.0)
    assert rig.lines() == [f"reconnected to Central at {CENTRAL} as driver D1"]
    assert rig.central.received == [m.Driver("D1")]
    rig.send(telem(2, 0.2, seconds=2), m.Ticket("S1", 0.25, 0.08, 3, "CP01", "D1", "target"))
    assert rig.lines()[:2] == [
        "[1/2] CP01: charging 0.200 kWh  7.20 kW  0.00 €  0:02",
        "[1/2] CP01: TICKET 0.250 kWh  0.08 €  0:03  (target reached), session S1",
    ]
    rig.advance(1.0)  # the settle pause must not send the request again
    assert rig.central.requests() == []
    rig.advance(3.0)
    assert rig.central.requests() == [m.Req("D1", "CP02")]


def test_ticket_missed_during_an_outage_is_received_after_reconnecting():
    rig = started([Request("CP01")])
    rig.send(m.Authorized("D1", "CP01", "S1"))
    rig.restart_central(FakeCentral(on_hello=[m.Ticket("S1", 0.3, 0.09, 40, "CP01", "D1", "unplug")]))
    rig.advance(1.0)
    lines = rig.lines()
    assert "[1/1] CP01: TICKET 0.300 kWh  0.09 €  0:40  (vehicle unplugged), session S1" in lines
    assert rig.codes == [0]


def test_request_whose_answer_was_lost_is_sent_again():
    rig = started([Request("CP01", 0.2)])
    rig.restart_central(FakeCentral())
    rig.advance(1.0)  # reconnect
    assert rig.central.requests() == []
    rig.advance(1.0)  # settle: Central re-sent nothing about it
    assert rig.central.requests() == [m.Req("D1", "CP01", 0.2)]
    rig.send(m.Authorized("D1", "CP01", "S9"))
    assert rig.driver.current.session == "S9"


def test_ticket_recovered_after_a_driver_restart(make_rig):
    central = FakeCentral(on_hello=[m.Ticket("S0", 2.5, 0.75, 300, "CP07", "D1", "unplug")])
    rig = make_rig([Request("CP01")], central=central)
    assert rig.lines() == [
        rig.connected_line,
        "CP07 (earlier run): recovered TICKET 2.500 kWh  0.75 €  5:00  (vehicle unplugged), session S0",
    ]
    rig.advance(1.0)
    assert central.requests() == [m.Req("D1", "CP01")]
    rig.send(m.Authorized("D1", "CP01", "S1"), m.Ticket("S1", 0.1, 0.03, 10, "CP01", "D1", "target"))
    lines = rig.lines()
    assert lines[-3:] == [
        "summary for driver D1: 2 tickets (2.600 kWh, 0.78 €), 0 refused, 0 unfinished",
        "  ticket   CP07        2.500 kWh     0.75 €      5:00  vehicle unplugged  recovered from an earlier run",
        "  ticket   CP01        0.100 kWh     0.03 €      0:10  target reached",
    ]


def test_charge_in_progress_after_a_driver_restart_is_followed_first(make_rig):
    central = FakeCentral(on_hello=[m.Authorized("D1", "CP05", "S0")])
    rig = make_rig([Request("CP01")], central=central)
    rig.advance(1.0)
    assert rig.lines()[1:] == ["CP05: following a charge started in an earlier run, session S0"]
    assert central.requests() == []  # it would be denied while that charge runs
    rig.send(telem(7, 1.2, seconds=7, session="S0", cp="CP05"))
    assert rig.lines() == ["CP05 (earlier run): charging 1.200 kWh  7.20 kW  0.00 €  0:07"]
    rig.send(m.Ticket("S0", 1.3, 0.4, 8, "CP05", "D1", "target"))
    assert rig.lines() == [
        "CP05 (earlier run): recovered TICKET 1.300 kWh  0.40 €  0:08  (target reached), session S0",
        "[1/1] CP01: requesting a charge (no target)",
    ]
    assert central.requests() == [m.Req("D1", "CP01")]


REQUESTS_TEXT = "CP01 0.1\nCP02 0.1\nCP03 0.1\n"


def progress_file(tmp_path):
    from evnet.driver.requests import Progress

    requests_file = tmp_path / "requests.txt"
    requests_file.write_text(REQUESTS_TEXT)
    return Progress(str(tmp_path / "progress.json"), str(requests_file), REQUESTS_TEXT)


THREE = [Request("CP01", 0.1), Request("CP02", 0.1), Request("CP03", 0.1)]


def test_a_driver_killed_mid_charge_goes_on_with_its_file_after_the_recovered_ticket(tmp_path):
    progress = progress_file(tmp_path)
    rig = started(THREE, progress=progress)
    rig.send(m.Authorized("D1", "CP01", "S1"), m.Ticket("S1", 0.1, 0.03, 10, "CP01", "D1", "target"))
    rig.advance(4.0)
    rig.send(m.Authorized("D1", "CP02", "S2"))
    assert progress.load() == (1, "S2")
    # Killed here; Central finishes S2 meanwhile and re-sends its ticket at the next hello.
    central = FakeCentral(on_hello=[m.Ticket("S2", 0.1, 0.03, 10, "CP02", "D1", "target")])
    again = Rig(THREE, central=central, progress=progress)
    again.advance(1.0)
    assert again.lines() == [
        "going on with request 2 of 3: its charge (session S2) was in progress when this driver stopped "
        "(--from-start to start over)",
        again.connected_line,
        "CP02 (earlier run): recovered TICKET 0.100 kWh  0.03 €  0:10  (target reached), session S2",
        "[3/3] CP03: requesting a charge (target 0.100 kWh)",
    ]
    assert central.requests() == [m.Req("D1", "CP03", 0.1)]
    again.send(m.Authorized("D1", "CP03", "S3"), m.Ticket("S3", 0.1, 0.03, 10, "CP03", "D1", "target"))
    assert again.codes == [0]
    assert not (tmp_path / "progress.json").exists()  # done: the next run starts from the top


def test_a_changed_request_file_starts_from_the_top(tmp_path):
    from evnet.driver.requests import Progress

    progress = progress_file(tmp_path)
    progress.save(2, None)
    edited = Progress(progress.path, str(tmp_path / "requests.txt"), REQUESTS_TEXT + "CP04\n")
    assert edited.load() == (0, None)
    assert progress.load() == (2, None)


def test_duplicate_ticket_is_shown_once(make_rig):
    rig = started([Request("CP01"), Request("CP02")], make_rig)
    ticket = m.Ticket("S1", 0.1, 0.03, 10, "CP01", "D1", "target")
    rig.send(m.Authorized("D1", "CP01", "S1"), ticket, ticket)
    assert [e["type"] for e in rig.events].count("ticket") == 1


def test_a_charge_that_never_finishes_is_given_up(make_rig):
    rig = started([Request("CP01"), Request("CP02")], make_rig, charge_timeout=600)
    rig.send(m.Authorized("D1", "CP01", "S1"))
    rig.advance(599)
    rig.send(telem(1, 0.1))  # news: the clock starts again
    rig.advance(599)
    rig.lines()
    rig.advance(1)
    assert rig.lines() == [
        "[1/2] CP01: no news of the charge for 600 s, giving up on it",
        "next request in 4 s",
    ]
    rig.advance(4)
    assert rig.central.requests()[-1] == m.Req("D1", "CP02")
    rig.advance(600)  # no answer at all to the second one
    lines = rig.lines()
    assert "[2/2] CP02: no answer for 600 s, giving up on it" in lines
    assert rig.codes == [0]
    summary = rig.driver.summary.unfinished
    assert [u["cp"] for u in summary] == ["CP01", "CP02"]


def test_refused_driver_id_ends_with_code_1(make_rig):
    rig = make_rig([Request("CP01")], central=FakeCentral(refuse="bad id"))
    assert rig.lines() == ["Central refused driver D1: bad id"]
    assert rig.codes == [1]


def test_list_shows_the_available_cps(make_rig):
    rig = make_rig([], list_only=True)
    assert rig.central.received == [m.Driver("D1"), m.ListCps("D1")]
    rig.send(m.Available([m.CpInfo("CP01", "Calle Mayor 1", 0.3), m.CpInfo("CP02", "Plaza", 0.25)]))
    assert rig.lines()[1:] == [
        "2 charging points available now:",
        "  CP01       Calle Mayor 1            0.300 €/kWh",
        "  CP02       Plaza                    0.250 €/kWh",
    ]
    assert rig.codes == [0]


MANY_CPS = [m.CpInfo(f"CP{i:03d}", f"Calle Larga {i}", 0.25 + i / 1000) for i in range(300)]


def test_list_of_300_cps_in_several_parts_is_shown_whole_once_the_last_part_is_in(make_rig):
    rig = make_rig([], list_only=True)
    rig.lines()
    parts = m.split_available(MANY_CPS, 4096)  # a link's frame
    assert len(parts) >= 2
    rig.send(*parts[:-1])
    assert rig.lines() == [] and rig.codes == []  # nothing shown before the last part
    rig.send(parts[-1])
    [available] = [e for e in rig.events if e["type"] == "available"]
    assert [cp["cp"] for cp in available["cps"]] == [cp.cp_id for cp in MANY_CPS]
    lines = rig.lines()
    assert lines[0] == "300 charging points available now:"
    assert lines[1:] == [f"  {cp.cp_id:<10} {cp.location:<24} {cp.price:.3f} €/kWh" for cp in MANY_CPS]
    assert rig.codes == [0]


def test_list_parts_of_an_abandoned_answer_are_dropped_for_the_next_answer(make_rig):
    rig = make_rig([], list_only=True)
    rig.lines()
    first = m.split_available(MANY_CPS, 2048)
    second = m.split_available(MANY_CPS[:150], 2048)
    assert len(first) >= 3 and len(second) >= 2
    rig.send(first[0], first[2])  # a part missed: what came so far is dropped
    rig.send(*first[:2])  # another answer begins, and is cut short by a third
    rig.send(*second)
    [available] = [e for e in rig.events if e["type"] == "available"]
    assert [cp["cp"] for cp in available["cps"]] == [cp.cp_id for cp in MANY_CPS[:150]]
    assert rig.codes == [0]


def test_an_unanswered_list_ends_with_its_exit_code_after_the_charge_timeout(make_rig):
    rig = make_rig([], list_only=True, charge_timeout=30)
    assert rig.central.received[-1] == m.ListCps("D1")
    rig.lines()
    rig.advance(29.9)
    assert rig.codes == []
    rig.advance(0.1)
    where = rig.connected_line.split("Central ", 1)[1].split(" as driver")[0]
    assert rig.lines() == [f"no list from Central {where} for 30 s, giving up"]
    assert rig.codes == [EXIT_NO_LIST] == [3]


def test_a_list_cut_short_ends_with_its_exit_code_and_shows_no_partial_list():
    rig = Rig([], list_only=True, charge_timeout=30)
    parts = m.split_available(MANY_CPS, 2048)
    rig.advance(20)
    rig.send(*parts[:2])  # news of the list: the clock starts again
    rig.lines()
    rig.advance(29.9)
    assert rig.codes == []
    rig.advance(0.1)
    assert rig.lines() == [
        f"the list from Central at {CENTRAL} stopped at part 2 of {len(parts)}: no news for 30 s, giving up"
    ]
    assert [e["type"] for e in rig.events] == []
    assert rig.codes == [EXIT_NO_LIST]


def test_a_list_from_an_unreachable_central_ends_with_its_exit_code_too():
    clock = Clock()
    endpoint = FakeCentralEndpoint(FakeCentral(), clock)
    endpoint.up = False
    events, codes = [], []
    driver = DriverService(
        "D1", [], LinkTransport(endpoint, CENTRAL, clock, retry_policy=lambda n: 1.0), events.append, clock,
        list_only=True, charge_timeout=20,
    )
    driver.done.addCallback(codes.append)
    driver.startService()
    for _ in range(20):
        clock.advance(1.0)
    assert [e["type"] for e in events] == ["unreachable", "list_timeout"]
    assert codes == [EXIT_NO_LIST]
    assert endpoint.attempts >= 10


def test_inputs_the_phase_does_not_allow_are_ignored(make_rig):
    rig = started([Request("CP01"), Request("CP02")], make_rig)
    rig.send(m.Authorized("D1", "CP01", "S1"))
    rig.lines()
    rig.send(m.Denied("D1", "CP01", "too late"), m.Available([]))  # not answers to anything now
    # (a list of CPs is shown whenever it comes, point 11; it changes nothing)
    assert rig.lines() == ["no charging point is available now"] and rig.driver.phase is Phase.AUTHORIZED
    rig.send(m.Ticket("S1", 0.1, 0.03, 10, "CP01", "D1", "target"))
    rig.advance(4.0)
    rig.send(m.Denied("D1", "CP02", "unknown CP"))
    assert rig.codes == [0]
    rig.lines()
    rig.driver.interrupt()  # the shutdown after the end, as evdriver does
    rig.send(m.Ticket("S9", 0.1, 0.03, 10, "CP09", "D1", "target"))
    assert rig.codes == [0] and rig.lines() == []


def test_interrupt_shows_what_there_is_and_ends_with_130(make_rig):
    rig = started([Request("CP01")], make_rig)
    rig.lines()
    rig.driver.interrupt()
    assert rig.lines() == [
        "interrupted",
        "summary for driver D1: 0 tickets (0.000 kWh, 0.00 €), 0 refused, 0 unfinished",
    ]
    assert rig.codes == [130]


# ---------------------------------------------------------------------------
# Kafka only: positioning, ticket receipts, silence, outages, replays
# ---------------------------------------------------------------------------


def test_kafka_hello_waits_until_the_consumer_is_positioned():
    rig = KafkaRig([Request("CP01")], ready=False)
    rig.clock.advance(30)
    rig.flush()
    assert rig.central.received == []  # an answer now could land before our position
    assert rig.consumer.topic == "driver.notifications" and rig.consumer.key == "D1"
    assert rig.consumer.group_id == "evdriver-D1"
    rig.positioned()
    assert rig.central.received == [m.Driver("D1")]
    assert rig.lines() == ["connected to Central through Kafka at fake:9092 as driver D1"]


def test_kafka_every_ticket_received_is_confirmed_even_a_duplicate():
    central = FakeCentral(on_hello=[m.Ticket("S0", 2.5, 0.75, 300, "CP07", "D1", "unplug")])
    rig = started([Request("CP01")], KafkaRig, central=central)
    assert rig.confirmations() == ["S0"]
    ticket = m.Ticket("S1", 0.1, 0.03, 10, "CP01", "D1", "target")
    rig.send(m.Authorized("D1", "CP01", "S1"), ticket, ticket)
    # Central re-sends a ticket until it hears of it: the driver, done, still confirms it.
    assert rig.confirmations() == ["S0", "S1", "S1"]
    assert [e["session"] for e in rig.events if e["type"] == "ticket"] == ["S0", "S1"]
    assert rig.codes == [0]


def test_kafka_the_last_ticket_is_confirmed_although_the_run_ends_with_it():
    rig = started([Request("CP01")], KafkaRig)
    # As evdriver does: the end of the run stops the service at once.
    rig.driver.done.addCallback(lambda code: rig.driver.stopService())
    rig.send(m.Authorized("D1", "CP01", "S1"), m.Ticket("S1", 0.1, 0.03, 10, "CP01", "D1", "target"))
    assert rig.codes == [0] and not rig.transport.running
    assert rig.confirmations() == ["S1"]


def test_kafka_central_silent_is_said_once_and_the_hello_retried_with_backoff():
    central = FakeCentral()
    rig = KafkaRig([Request("CP01")], central=central, ready=False)
    central.messageReceived = lambda link, msg: central.received.append(msg)  # Central is not there
    rig.positioned()
    rig.advance(4.9)
    assert rig.lines() == []
    rig.advance(0.1)
    assert rig.lines() == [
        "Central does not answer through Kafka at fake:9092 (is it running with --kafka?), still waiting"
    ]
    assert central.received == [m.Driver("D1")] * 2
    rig.advance(9.9)
    assert central.received == [m.Driver("D1")] * 2  # the next one 10 s later, then 20 s...
    rig.advance(0.1)
    rig.advance(20)
    assert central.received == [m.Driver("D1")] * 4
    assert rig.lines() == []  # said once
    # Central comes up and answers the last hello.
    del central.messageReceived
    rig.send(m.Accepted("DRIVER", "D1"))
    assert rig.lines() == ["connected to Central through Kafka at fake:9092 as driver D1"]
    rig.advance(1.0)
    assert central.requests() == [m.Req("D1", "CP01")]
    assert rig.lines() == ["[1/1] CP01: requesting a charge (no target)"]
    # No answer to the REQ: every 10 s of silence, a hello checks Central is there.
    rig.advance(60)
    assert [x for x in central.received if isinstance(x, m.Driver)] == [m.Driver("D1")] * (4 + 6)
    assert rig.lines() == []


def test_kafka_silence_mid_charge_brings_a_hello_that_recovers_the_ticket():
    # Central restarted mid-charge and no longer forwards anything to us until we speak.
    rig = started([Request("CP01")], KafkaRig, probe_after=10.0)
    rig.send(m.Authorized("D1", "CP01", "S1"), telem(1, 0.1, seconds=1))
    rig.lines()
    hellos = lambda: [x for x in rig.central.received if isinstance(x, m.Driver)]
    rig.advance(9.9)
    assert len(hellos()) == 1
    rig.central.on_hello = [m.Ticket("S1", 0.3, 0.09, 3, "CP01", "D1", "target")]
    rig.advance(0.1)
    assert len(hellos()) == 2
    assert rig.lines() == [
        "[1/1] CP01: TICKET 0.300 kWh  0.09 €  0:03  (target reached), session S1",
        "summary for driver D1: 1 ticket (0.300 kWh, 0.09 €), 0 refused, 0 unfinished",
        "  ticket   CP01        0.300 kWh     0.09 €      0:03  target reached",
    ]
    assert rig.confirmations() == ["S1"]
    assert rig.codes == [0]


def test_kafka_hellos_that_check_on_central_do_not_postpone_giving_up():
    rig = started([Request("CP01")], KafkaRig, charge_timeout=30)
    rig.central.on_hello = [m.Authorized("D1", "CP01", "S1")]  # as Central does for a charge in progress
    rig.send(m.Authorized("D1", "CP01", "S1"))
    rig.lines()
    rig.advance(29.9)
    assert len([x for x in rig.central.received if isinstance(x, m.Driver)]) == 1 + 2
    assert rig.lines() == []  # no "reconnected" for each check
    rig.advance(0.1)
    assert rig.lines()[0] == "[1/1] CP01: no news of the charge for 30 s, giving up on it"


def test_kafka_outage_is_shown_once_and_its_end_too():
    rig = KafkaRig([Request("CP01")], ready=False)
    assert len(rig.bus.observers) == 1
    rig.bus.status(False, "NoBrokersAvailable")
    rig.bus.status(False, "NoBrokersAvailable")
    rig.advance(30)
    assert rig.lines() == ["cannot reach Kafka at fake:9092 (NoBrokersAvailable), retrying"]
    rig.bus.status(True, "")
    rig.bus.status(True, "")
    rig.positioned()
    assert rig.lines() == [
        "reached Kafka at fake:9092 again",
        "connected to Central through Kafka at fake:9092 as driver D1",
    ]


def test_kafka_answers_to_earlier_hellos_and_unasked_lists_are_ignored():
    central = FakeCentral()
    rig = KafkaRig([Request("CP01"), Request("CP02")], central=central)
    rig.lines()
    # An answer to an earlier hello (or an earlier run's, replayed from the
    # partition), and an AVAILABLE nobody asked for, change nothing.
    rig.send(m.Accepted("DRIVER", "D1"), m.Available([]))
    assert rig.lines() == ["no charging point is available now"]  # shown (point 11), nothing else changes
    rig.advance(1.0)
    assert central.requests() == [m.Req("D1", "CP01")]
    rig.send(m.Accepted("DRIVER", "D1"))
    rig.advance(5.0)
    assert central.requests() == [m.Req("D1", "CP01")]
    assert rig.driver.phase is Phase.REQUESTED


def test_kafka_a_request_kafka_refused_is_sent_again_after_the_next_hello():
    rig = KafkaRig([Request("CP01", 0.2)])
    rig.bus.hold = True
    rig.clock.advance(1.0)
    assert rig.bus.take() == [("driver.requests", "D1", m.ListCps("D1")),
                              ("driver.requests", "D1", m.Req("D1", "CP01", 0.2))]  # never reach Central
    rig.bus.hold = False
    rig.lines()
    rig.bus.fail(BusError("Kafka at fake:9092 did not take the driver.requests message: not authorized"))
    assert rig.lines() == [
        "could not send REQ through Kafka at fake:9092: "
        "Kafka at fake:9092 did not take the driver.requests message: not authorized"
    ]
    rig.flush()
    assert rig.central.received[-1] == m.Driver("D1")  # a hello: once answered, the REQ goes again
    assert rig.central.requests() == []
    rig.advance(1.0)
    assert rig.central.requests() == [m.Req("D1", "CP01", 0.2)]


def test_kafka_a_list_kafka_refused_is_sent_again_after_the_next_hello():
    rig = KafkaRig([], list_only=True, ready=False)
    rig.bus.hold = True  # what is published waits for Kafka's answer
    rig.positioned()
    assert rig.central.received == [m.Driver("D1"), m.ListCps("D1")]
    rig.bus.hold = False
    rig.lines()
    rig.bus.fail(BusError("Kafka at fake:9092 did not take the driver.requests message: timed out"))
    assert [(e["type"], e["code"]) for e in rig.events] == [("not_sent", "DRIVER"), ("not_sent", "LIST")]
    rig.flush()
    assert rig.central.received[2:] == [m.Driver("D1"), m.ListCps("D1")]  # a hello, and the LIST again
    rig.send(m.Available([m.CpInfo("CP01", "Plaza", 0.3)]))
    assert rig.codes == [0]


def test_kafka_stop_cancels_the_timers():
    rig = KafkaRig([Request("CP01")])
    rig.driver.interrupt()
    rig.driver.stopService()
    assert rig.clock.getDelayedCalls() == []


# ---------------------------------------------------------------------------
# Outputs
# ---------------------------------------------------------------------------


def test_json_output_is_one_object_per_event():
    out = io.StringIO()
    sink = driver_cli.JsonOutput(out)
    sink({"type": "ticket", "driver": "D1", "cp": "CP01", "session": "S1", "kwh": 0.1, "euros": 0.03, "seconds": 10, "reason": "target"})
    sink({"type": "denied", "driver": "D1", "cp": "CP02", "reason": "unknown CP"})
    lines = out.getvalue().splitlines()
    assert [json.loads(line)["type"] for line in lines] == ["ticket", "denied"]
    assert json.loads(lines[0])["kwh"] == 0.1


def test_plain_output_writes_the_view_lines():
    out = io.StringIO()
    driver_cli.PlainOutput(out)({"type": "notice", "driver": "D1", "subject": "CP01", "text": "fault"})
    assert out.getvalue() == "NOTICE CP01: fault\n"


def test_rich_output_keeps_one_progress_line_per_charge():
    from rich.console import Console

    out = io.StringIO()
    sink = driver_cli.RichOutput(Console(file=out, force_terminal=True, width=120))
    base = {"driver": "D1", "cp": "CP01", "n": 1, "total": 1, "session": "S1"}
    for i in range(1, 4):
        sink({"type": "charging", **base, "kwh": i / 1000, "kw": 7.2, "euros": 0.0, "seconds": i})
    sink({"type": "ticket", **base, "kwh": 0.003, "euros": 0.0, "seconds": 3, "reason": "target"})
    sink({"type": "summary", "driver": "D1", "tickets": [{**base, "kwh": 0.003, "euros": 0.0, "seconds": 3, "reason": "target"}], "refused": [], "unfinished": []})
    text = out.getvalue()
    assert "charging 0.003 kWh" in text and "TICKET 0.003 kWh" in text
    assert "how it ended" in text  # the summary table
    assert sink.live is None


def test_a_driver_stopped_between_requests_goes_on_with_the_next(tmp_path):
    progress = progress_file(tmp_path)
    progress.save(2, None)
    central = FakeCentral()
    rig = Rig(THREE, central=central, progress=progress)
    rig.advance(1.0)
    assert rig.lines()[0] == (
        "going on with request 3 of 3: an earlier run of this driver did the first 2 (--from-start to start over)"
    )
    assert central.requests() == [m.Req("D1", "CP03", 0.1)]


# ---------------------------------------------------------------------------
# The machines
# ---------------------------------------------------------------------------


def test_a_machine_reports_an_input_it_does_not_allow_and_stays_put():
    from evnet.driver.states import PHASES, PhaseInput
    from evnet.protocols.machine import Machine

    rejected = []
    phase = Machine("phase", PHASES, Phase.AUTHORIZED, rejected.append)
    assert not phase.attempt(PhaseInput.DENY)
    assert phase.state is Phase.AUTHORIZED
    assert rejected == ["phase: deny is not allowed when authorized"]
    assert phase.attempt(PhaseInput.TELEMETRY) and phase.changed and phase.state is Phase.CHARGING
    assert phase.attempt(PhaseInput.TELEMETRY) and not phase.changed
    assert phase.attempt(PhaseInput.FINISH) and not phase.attempt(PhaseInput.FINISH)
    assert len(rejected) == 2


def test_every_phase_but_done_can_finish_and_a_lost_channel_only_matters_to_an_unanswered_request():
    from evnet.driver.states import PHASES, PhaseInput

    for state in Phase:
        assert ((state, PhaseInput.FINISH) in PHASES) is (state is not Phase.DONE)
        expected = Phase.REQUEST_LOST if state is Phase.REQUESTED else state
        assert PHASES[(state, PhaseInput.LOST)] is expected


def test_working_through_the_file_the_driver_asks_for_and_shows_the_available_cps(make_rig):
    rig = started([Request("CP01"), Request("CP02")], make_rig)
    assert [x for x in rig.central.received if not isinstance(x, m.Driver)] == [m.ListCps("D1"), m.Req("D1", "CP01")]
    rig.lines()
    rig.send(m.Available([m.CpInfo("CP01", "Centro", 0.3), m.CpInfo("CP02", "Playa", 0.35)]))
    lines = rig.lines()
    assert lines[0] == "2 charging points available now:" and any("CP02" in line for line in lines[1:])
    assert rig.driver.phase is Phase.REQUESTED and not rig.codes  # it goes on with its file


def test_kafka_network_status_is_shown_while_working_through_the_file():
    rig = KafkaRig([Request("CP01")])
    rig.advance(1.0)
    rig.lines()
    rig.status_consumer.feed(m.Available([m.CpInfo("CP07", "Puerto", 0.4)]))
    lines = rig.lines()
    assert lines[0] == "1 charging point available now:" and "CP07" in lines[1]


# ---------------------------------------------------------------------------
# Logging in through Kafka: every login of an id is answered on one topic
# ---------------------------------------------------------------------------


class _Credentials:
    driver_id = "D1"
    secret = "s3cret-of-D1"


def test_a_driver_logging_in_through_kafka_ignores_the_answers_to_another_login_of_its_id():
    from evnet.protocols import security

    clock, bus, events = Clock(), ObservedFakeBus(), []
    transport = KafkaTransport(bus, "D1", clock, credentials=_Credentials())
    driver = DriverService("D1", [Request("CP01")], transport, events.append, clock)
    notifications, _ = bus.consumers
    driver.startService()
    notifications.ready.callback(notifications)
    [(topic, _, auth)] = bus.take()
    assert topic == "driver.requests" and isinstance(auth, m.Auth)
    central = security.ServerLogin(auth, security.make_verifier(_Credentials.secret, n=1024), b"central")
    strangers = security.ServerLogin(security.ClientLogin("D1", "a guess").start(), None, b"central")

    notifications.feed(strangers.challenge())  # Central's answer to a stranger's AUTH with this id
    notifications.feed(m.Refused("AUTH", "D1", "wrong credentials", "c3RyYW5nZXJzLXByb29m"))  # to its PROOF
    notifications.feed(m.Refused("AUTH", "D1", "wrong credentials"))  # naming no login at all
    assert bus.take() == [] and not driver.finished  # nothing answered, the login goes on

    notifications.feed(central.challenge())
    [(_, _, proof)] = bus.take()
    assert isinstance(proof, m.Proof)
    notifications.feed(m.Refused("AUTH", "D1", "wrong credentials", proof.proof))  # this login's PROOF refused
    assert driver.finished and [e for e in events if e.get("type") == "refused"]
