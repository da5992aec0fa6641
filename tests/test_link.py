"""The link protocol on fake transports and a fake clock."""

from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.test import iosim

from evnet.protocols import messages as m
from evnet.protocols.framing import ACK_BYTE, ENQ_BYTE, EOT_BYTE, NACK_BYTE, encode_frame
from evnet.protocols.link import FramedLink, LinkClosed, LinkFactory, LinkState

from tests.fakes import RecordingHandler, frame_of, make_link, take


def open_server(**options):
    link, transport, handler, clock = make_link(False, **options)
    link.dataReceived(ENQ_BYTE)
    assert take(transport) == ACK_BYTE
    return link, transport, handler, clock


def open_client(**options):
    link, transport, handler, clock = make_link(True, **options)
    assert take(transport) == ENQ_BYTE
    link.dataReceived(ACK_BYTE)
    return link, transport, handler, clock


def test_server_accepts_enq_with_ack():
    link, transport, handler, _ = open_server()
    assert link.state is LinkState.OPEN
    assert handler.events == ["requested", "opened"]


def test_server_refuses_enq_with_nack_and_closes():
    link, transport, handler, _ = make_link(False, handler=RecordingHandler(refuse="busy"))
    link.dataReceived(ENQ_BYTE)
    assert transport.value() == NACK_BYTE
    assert transport.disconnecting
    assert "opened" not in handler.events


def test_client_sees_refusal():
    link, transport, handler, _ = make_link(True)
    link.dataReceived(NACK_BYTE)
    assert handler.events == ["refused"]
    assert transport.disconnecting


def test_client_gives_up_when_enq_is_not_answered():
    link, transport, handler, clock = make_link(True, enq_timeout=2)
    clock.advance(1.9)
    assert not transport.disconnecting
    clock.advance(0.2)
    assert transport.disconnecting


def test_frame_before_enq_is_nacked_and_not_delivered():
    link, transport, handler, _ = make_link(False)
    link.dataReceived(frame_of(m.Hck()))
    assert transport.value() == NACK_BYTE
    assert handler.messages == []
    # The link can still be opened afterwards.
    transport.clear()
    link.dataReceived(ENQ_BYTE)
    assert transport.value() == ACK_BYTE


def test_good_frame_is_acked_and_delivered():
    link, transport, handler, _ = open_server()
    link.dataReceived(frame_of(m.Status("CP1", "OK")))
    assert take(transport) == ACK_BYTE
    assert handler.messages == [m.Status("CP1", "OK")]


def test_frames_fed_one_byte_at_a_time():
    link, transport, handler, _ = open_server()
    stream = frame_of(m.Status("CP1", "OK")) + b"noise" + frame_of(m.Avr("CP1", "engine KO"))
    for i in range(len(stream)):
        link.dataReceived(stream[i : i + 1])
    assert take(transport) == ACK_BYTE * 2
    assert handler.messages == [m.Status("CP1", "OK"), m.Avr("CP1", "engine KO")]
    assert link.decoder.garbage == 5


def test_bad_lrc_is_nacked():
    link, transport, handler, _ = open_server()
    frame = bytearray(frame_of(m.Hck()))
    frame[-1] ^= 1
    link.dataReceived(bytes(frame))
    assert take(transport) == NACK_BYTE
    assert handler.messages == []
    assert link.state is LinkState.OPEN


def test_undecodable_frame_is_nacked():
    link, transport, handler, _ = open_server()
    link.dataReceived(encode_frame(b"REG#only-one-field"))
    assert take(transport) == NACK_BYTE
    assert handler.messages == []


def test_oversize_frame_is_nacked_and_the_link_dropped():
    link, transport, handler, _ = open_server(max_data=16)
    link.dataReceived(b"\x02" + b"A" * 17)
    assert take(transport) == NACK_BYTE
    assert transport.disconnecting
    link.dataReceived(frame_of(m.Hck()))
    assert handler.messages == []


def test_eot_closes_cleanly():
    link, transport, handler, _ = open_server()
    link.dataReceived(EOT_BYTE)
    assert transport.disconnecting
    link.connectionLost(Failure(Exception("gone")))
    assert link.state is LinkState.CLOSED
    assert handler.events[-1] == "lost"


def test_close_sends_eot():
    link, transport, handler, _ = open_client()
    link.close()
    assert transport.value() == EOT_BYTE
    assert transport.disconnecting


def test_send_waits_for_ack_one_frame_at_a_time():
    link, transport, handler, _ = open_client()
    acked = []
    link.sendMessage(m.Status("CP1", "OK")).addCallback(acked.append)
    link.sendMessage(m.Rcv("CP1")).addCallback(acked.append)
    assert take(transport) == frame_of(m.Status("CP1", "OK"))
    assert link.state is LinkState.AWAITING_ACK
    link.dataReceived(ACK_BYTE)
    assert acked == [None]
    assert take(transport) == frame_of(m.Rcv("CP1"))
    link.dataReceived(ACK_BYTE)
    assert acked == [None, None]
    assert link.state is LinkState.OPEN


def test_messages_sent_before_open_wait_for_the_link():
    link, transport, handler, _ = make_link(True)
    link.send(m.Auth("CP1"))
    assert take(transport) == ENQ_BYTE
    link.dataReceived(ACK_BYTE)
    assert take(transport) == frame_of(m.Auth("CP1"))


def test_nacked_frame_is_retransmitted_three_times_then_the_link_dropped():
    link, transport, handler, _ = open_client()
    failures = []
    link.sendMessage(m.Hck()).addErrback(failures.append)
    frame = frame_of(m.Hck())
    assert take(transport) == frame
    for _ in range(3):
        link.dataReceived(NACK_BYTE)
        assert link.state is LinkState.RETRANSMITTING
        assert take(transport) == frame
    link.dataReceived(NACK_BYTE)
    assert transport.disconnecting
    assert take(transport) == b""
    link.connectionLost(Failure(Exception("dropped")))
    assert failures and failures[0].check(LinkClosed)
    assert "NACKed 4 times" in failures[0].getErrorMessage()


def test_retransmission_then_ack_recovers():
    link, transport, handler, _ = open_client()
    acked = []
    link.sendMessage(m.Hck()).addCallback(acked.append)
    take(transport)
    link.dataReceived(NACK_BYTE)
    assert take(transport) == frame_of(m.Hck())
    link.dataReceived(ACK_BYTE)
    assert acked == [None]
    assert link.state is LinkState.OPEN


def test_missing_ack_drops_the_link():
    link, transport, handler, clock = open_client(ack_timeout=3)
    link.send(m.Hck())
    clock.advance(3.1)
    assert transport.disconnecting


def test_pending_messages_fail_when_the_connection_is_lost():
    link, transport, handler, _ = open_client()
    failures = []
    for _ in range(3):
        link.sendMessage(m.Hck()).addErrback(failures.append)
    link.connectionLost(Failure(Exception("boom")))
    assert len(failures) == 3
    assert all(f.check(LinkClosed) for f in failures)
    assert link.sendMessage(m.Hck()).addErrback(failures.append) is not None
    assert len(failures) == 4


def test_handler_error_does_not_escape_data_received():
    class Exploding(RecordingHandler):
        def messageReceived(self, link, msg):
            raise RuntimeError("bug in a service")

    link, transport, handler, _ = make_link(False, handler=Exploding())
    link.dataReceived(ENQ_BYTE + frame_of(m.Hck()) + frame_of(m.Hck()))
    # Both frames were acknowledged and the link is still up.
    assert transport.value() == ACK_BYTE * 3
    assert link.state is LinkState.OPEN


def test_client_and_server_over_iosim():
    clock = Clock()
    server_handler, client_handler = RecordingHandler(), RecordingHandler()
    server_factory = LinkFactory(server_handler, initiator=False, clock=clock)
    client_factory = LinkFactory(client_handler, initiator=True, clock=clock)
    client, server, pump = iosim.connectedServerAndClient(
        lambda: server_factory.buildProtocol(None), lambda: client_factory.buildProtocol(None)
    )
    pump.flush()
    assert client.state is LinkState.OPEN and server.state is LinkState.OPEN
    acked = []
    client.sendMessage(m.Reg("CP1", "Centro", 0.3)).addCallback(acked.append)
    server.sendMessage(m.Accepted("REG", "CP1")).addCallback(acked.append)
    pump.flush()
    assert server_handler.messages == [m.Reg("CP1", "Centro", 0.3)]
    assert client_handler.messages == [m.Accepted("REG", "CP1")]
    assert acked == [None, None]
    client.close()
    pump.flush()
    assert server.state is LinkState.CLOSED and client.state is LinkState.CLOSED


def test_a_message_longer_than_a_frame_is_a_failed_deferred_not_an_exception():
    link, transport, _, _ = open_server(max_data=64)
    cps = [m.CpInfo(f"CP{i}", "Centro", 0.3) for i in range(10)]
    d = link.sendMessage(m.Available(cps))  # would raise before: the caller's catch-all only logged it
    failures = []
    d.addErrback(failures.append)
    assert failures and failures[0].check(m.MessageError)
    assert "longer than the 64" in failures[0].getErrorMessage()
    assert transport.value() == b""  # nothing half-sent
    assert link.is_open  # and the link carries on
    link.send(m.Available(cps))  # send() logs it, never raises


def test_a_long_list_of_cps_fits_in_parts_on_a_small_link():
    link, transport, _, _ = open_server(max_data=80)
    cps = [m.CpInfo(f"CP{i:03d}", "Calle Mayor", 0.3) for i in range(40)]
    parts = m.split_available(cps, 80)
    assert len(parts) > 1
    for part in parts:
        d = link.sendMessage(part)
        assert not d.called  # queued, not failed
        assert transport.value().startswith(frame_of(part))
        transport.clear()
        link.dataReceived(ACK_BYTE)
        assert d.called


def test_tcp_links_turn_nagle_off_on_both_sides():
    from twisted.internet.interfaces import ITCPTransport
    from twisted.internet.testing import StringTransport
    from zope.interface import implementer

    @implementer(ITCPTransport)
    class TcpTransport(StringTransport):
        no_delay = False

        def setTcpNoDelay(self, enabled):
            self.no_delay = enabled

    for initiator in (True, False):
        link = FramedLink(RecordingHandler(), Clock(), initiator=initiator)
        transport = TcpTransport()
        link.makeConnection(transport)
        assert transport.no_delay is True


def test_an_input_the_link_machine_does_not_allow_is_logged_and_ignored():
    from twisted.logger import capturedLogs

    from evnet.protocols.link import LinkInput

    link, transport, handler, _ = open_server()
    with capturedLogs() as events:
        link._goto(LinkInput.ACKED)  # nothing is in flight: not allowed when open
    assert link.state is LinkState.OPEN
    assert any("acked is not allowed when open" in str(e.get("why", "")) for e in events)
    link.sendMessage(m.Parar("CP01"))  # and the link carries on
    assert link.state is LinkState.AWAITING_ACK


# -- write coalescing: what one input chunk produces leaves as one write ----


def counted(transport):
    """Record every transport.write call of C{transport} in a list (returned)."""
    writes = []
    original = transport.write

    def write(data):
        writes.append(data)
        original(data)

    transport.write = write
    return writes


class Answering(RecordingHandler):
    """Answers every STATUS at once with a HCK on the same link (an immediate answer)."""

    def messageReceived(self, link, msg):
        super().messageReceived(link, msg)
        if isinstance(msg, m.Status):
            link.send(m.Hck())


def test_ack_and_immediate_answer_leave_in_one_write_in_order():
    link, transport, handler, _ = open_server(handler=Answering())
    writes = counted(transport)
    link.dataReceived(frame_of(m.Status("CP1", "OK")))
    assert writes == [ACK_BYTE + frame_of(m.Hck())]


def test_many_frames_in_one_chunk_give_one_write():
    link, transport, handler, _ = open_server()
    writes = counted(transport)
    link.dataReceived(frame_of(m.Status("CP1", "OK")) * 5)
    assert writes == [ACK_BYTE * 5]
    assert len(handler.messages) == 5


def test_one_write_per_chunk_when_fed_byte_by_byte():
    link, transport, handler, _ = open_server(handler=Answering())
    writes = counted(transport)
    stream = frame_of(m.Status("CP1", "OK"))
    for i in range(len(stream)):
        link.dataReceived(stream[i : i + 1])
    # Only the chunk that completed the frame wrote anything: the ACK and the answer together.
    assert writes == [ACK_BYTE + frame_of(m.Hck())]


def test_order_kept_across_ack_of_ours_answer_and_next_frame():
    # The client has a frame in flight; one chunk brings the peer's ACK for it and a
    # STATUS.  Out: the next queued frame (sent on the ACK), then our ACK of the STATUS,
    # then the answer to it: in the order they were produced, one write.
    link, transport, handler, _ = open_client(handler=Answering())
    link.send(m.Avr("CP1", "engine KO"))
    link.send(m.Hck())
    assert take(transport) == frame_of(m.Avr("CP1", "engine KO"))
    writes = counted(transport)
    link.dataReceived(ACK_BYTE + frame_of(m.Status("CP1", "OK")))
    assert writes == [frame_of(m.Hck()) + ACK_BYTE]
    # the answer HCK is queued behind the HCK in flight (stop-and-wait): it leaves on its ACK
    link.dataReceived(ACK_BYTE)
    assert writes[-1] == frame_of(m.Hck())
    assert len(writes) == 2


def test_output_outside_input_is_written_at_once():
    link, transport, handler, _ = open_server()
    writes = counted(transport)
    link.send(m.Hck())
    assert writes == [frame_of(m.Hck())]


def test_coalesced_output_goes_out_before_the_link_is_dropped():
    class AckThenDrop(RecordingHandler):
        def messageReceived(self, link, msg):
            super().messageReceived(link, msg)
            link.drop("test")

    link, transport, handler, _ = open_server(handler=AckThenDrop())
    writes = counted(transport)
    lost = []
    transport.loseConnection = lambda: lost.append(list(writes))
    link.dataReceived(frame_of(m.Status("CP1", "OK")) * 2)
    # the ACK of the first frame was written before loseConnection; the second was not handled
    assert lost == [[ACK_BYTE]]
    assert writes == [ACK_BYTE]
