"""
EV_Driver on fakes: the request-file parser, the view, and the driver service
against a scripted fake Central on an in-memory link (iosim) and a Clock.
"""

import io
import json

import pytest
from twisted.internet import defer
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.test import iosim

from evnet import driver_cli
from evnet.protocols import messages as m
from evnet.protocols.link import FramedLink, LinkHandler
from evnet.services.driver import (
    BadLine,
    DriverService,
    DriverView,
    Phase,
    Request,
    parse_requests,
    read_requests,
    RequestsFileError,
)

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


def test_cli_kafka_is_refused_for_now(capsys, tmp_path):
    f = tmp_path / "r.txt"
    f.write_text("CP01\n")
    code, _, err = run_main(capsys, "--driver-id", "D1", "--requests-file", str(f), "--kafka", "localhost:9092")
    assert code == 2
    assert "--kafka is not yet supported; use --central" in err


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


class Rig:
    def __init__(self, requests, central=None, wait=4.0, settle=1.0, charge_timeout=600.0, list_only=False):
        self.clock = Clock()
        self.central = central or FakeCentral()
        self.endpoint = FakeCentralEndpoint(self.central, self.clock)
        self.events = []
        self.view = DriverView()
        self.driver = DriverService(
            "D1",
            requests,
            self.endpoint,
            CENTRAL,
            self.events.append,
            self.clock,
            wait=wait,
            settle=settle,
            charge_timeout=charge_timeout,
            list_only=list_only,
            retry_policy=lambda attempt: 1.0,
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


def telem(seq, kwh, kw=7.2, euros=0.0, seconds=0, session="S1", cp="CP01"):
    return m.Telem(cp, session, seq, kwh, kw, euros, seconds)


def started(requests, **kwargs):
    """A rig past the hello and the settle pause: the first REQ is out."""
    rig = Rig(requests, **kwargs)
    rig.advance(1.0)
    return rig


# ---------------------------------------------------------------------------
# Each step of the output
# ---------------------------------------------------------------------------


def test_authorized_charge_step_by_step():
    rig = Rig([Request("CP01", 0.05), Request("CP02")])
    assert rig.lines() == [f"connected to Central at {CENTRAL} as driver D1"]
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


def test_denied_request_then_the_next_one():
    rig = started([Request("CP01"), Request("CP02")])
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


def test_fault_during_charge():
    rig = started([Request("CP01")])
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


def test_parar_during_charge():
    rig = started([Request("CP01"), Request("CP02")])
    rig.send(m.Authorized("D1", "CP01", "S1"), telem(1, 0.5, 10.0, 0.15, 3))
    rig.lines()
    rig.send(m.Ticket("S1", 0.5, 0.15, 3, "CP01", "D1", "parar"))
    assert rig.lines() == [
        "[1/2] CP01: TICKET 0.500 kWh  0.15 €  0:03  (charging point stopped by Central), session S1",
        "next request in 4 s",
    ]
    assert rig.driver.phase is Phase.WAITING


def test_the_wait_after_an_outcome_runs_on_the_clock():
    rig = started([Request("CP01"), Request("CP02")], wait=4.0)
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
        "D1", [Request("CP01")], endpoint, CENTRAL, events.append, clock, retry_policy=lambda n: 2.0
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


def test_ticket_recovered_after_a_driver_restart():
    central = FakeCentral(on_hello=[m.Ticket("S0", 2.5, 0.75, 300, "CP07", "D1", "unplug")])
    rig = Rig([Request("CP01")], central=central)
    assert rig.lines() == [
        f"connected to Central at {CENTRAL} as driver D1",
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


def test_charge_in_progress_after_a_driver_restart_is_followed_first():
    central = FakeCentral(on_hello=[m.Authorized("D1", "CP05", "S0")])
    rig = Rig([Request("CP01")], central=central)
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


def test_duplicate_ticket_is_shown_once():
    rig = started([Request("CP01"), Request("CP02")])
    ticket = m.Ticket("S1", 0.1, 0.03, 10, "CP01", "D1", "target")
    rig.send(m.Authorized("D1", "CP01", "S1"), ticket, ticket)
    assert [e["type"] for e in rig.events].count("ticket") == 1


def test_a_charge_that_never_finishes_is_given_up():
    rig = started([Request("CP01"), Request("CP02")], charge_timeout=600)
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


def test_refused_driver_id_ends_with_code_1():
    rig = Rig([Request("CP01")], central=FakeCentral(refuse="bad id"))
    assert rig.lines() == ["Central refused driver D1: bad id"]
    assert rig.codes == [1]


def test_list_shows_the_available_cps():
    rig = Rig([], list_only=True)
    assert rig.central.received == [m.Driver("D1"), m.ListCps("D1")]
    rig.send(m.Available([m.CpInfo("CP01", "Calle Mayor 1", 0.3), m.CpInfo("CP02", "Plaza", 0.25)]))
    assert rig.lines()[1:] == [
        "2 charging points available now:",
        "  CP01       Calle Mayor 1            0.300 €/kWh",
        "  CP02       Plaza                    0.250 €/kWh",
    ]
    assert rig.codes == [0]


def test_interrupt_shows_what_there_is_and_ends_with_130():
    rig = started([Request("CP01")])
    rig.lines()
    rig.driver.interrupt()
    assert rig.lines() == [
        "interrupted",
        "summary for driver D1: 0 tickets (0.000 kWh, 0.00 €), 0 refused, 0 unfinished",
    ]
    assert rig.codes == [130]


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
