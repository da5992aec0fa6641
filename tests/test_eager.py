"""
Eager writes (evnet.protocols.eager) on real loopback TCP sockets: a write
with nothing buffered leaves at once without the reactor watching the socket;
once the kernel's buffer is full the rest is buffered by Twisted and every
byte still arrives, in order; other transports are left to transport.write.
"""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import defer, endpoints, protocol, reactor
from twisted.internet.testing import StringTransport

from evnet.protocols import messages as m
from evnet.protocols import eager
from evnet.protocols.link import LinkFactory, LinkHandler

WAIT = 10


class Collector(protocol.Protocol):
    def __init__(self):
        self.data = bytearray()
        self.waiting: list[tuple[int, defer.Deferred]] = []
        self.connected_d = defer.Deferred()

    def connectionMade(self):
        self.connected_d.callback(self)

    def dataReceived(self, data):
        self.data += data
        for item in list(self.waiting):
            if len(self.data) >= item[0]:
                self.waiting.remove(item)
                item[1].callback(bytes(self.data))

    def until(self, size):
        d = defer.Deferred()
        self.waiting.append((size, d))
        self.dataReceived(b"")
        return d.addTimeout(WAIT, reactor)


class Sender(protocol.Protocol):
    def connectionMade(self):
        self.factory.made.callback(self)


@defer.inlineCallbacks
def connected_pair():
    """A (sender, collector, port) joined by a loopback TCP connection."""
    factory = protocol.Factory.forProtocol(Sender)
    factory.made = defer.Deferred()
    port = yield endpoints.TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(factory)
    collector = Collector()
    yield endpoints.connectProtocol(endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port), collector)
    sender = yield factory.made.addTimeout(WAIT, reactor)
    return sender, collector, port


@pytest.fixture
def pair():
    """A (sender, collector) joined by a loopback TCP connection, both closed after the test."""
    sender, collector, port = pytest_twisted.blockon(connected_pair())
    yield sender, collector
    sender.transport.loseConnection()
    collector.transport.loseConnection()
    pytest_twisted.blockon(defer.maybeDeferred(port.stopListening))


def buffered(transport):
    return transport._tempDataLen + len(transport.dataBuffer) - transport.offset


def counting_start_writing(transport):
    calls = []
    original = transport.startWriting

    def startWriting():
        calls.append(1)
        original()

    transport.startWriting = startWriting
    return calls


def test_transports_that_are_not_tcp_connections_are_left_to_transport_write():
    assert not eager.sends_eagerly(StringTransport())


@pytest_twisted.inlineCallbacks
def test_a_write_with_nothing_buffered_is_sent_without_the_reactor_watching_the_socket(pair):
    sender, collector = pair
    assert eager.sends_eagerly(sender.transport)
    starts = counting_start_writing(sender.transport)
    eager.write(sender.transport, b"\x06")
    assert buffered(sender.transport) == 0
    assert starts == []
    assert sender.transport not in reactor.getWriters()
    got = yield collector.until(1)
    assert got == b"\x06"


@pytest_twisted.inlineCallbacks
def test_once_the_kernel_buffer_is_full_the_rest_is_buffered_and_every_byte_arrives_in_order(pair):
    sender, collector = pair
    collector.transport.pauseProducing()  # the peer stops reading: the kernel's buffers fill
    assert eager.sends_eagerly(sender.transport)
    chunk = bytes(range(256)) * 256  # 64 KiB
    sent = bytearray()
    for _ in range(1024):  # at most 64 MiB: far more than loopback buffers hold
        eager.write(sender.transport, chunk)
        sent += chunk
        if buffered(sender.transport):
            break
    assert buffered(sender.transport) > 0, "the kernel took 64 MiB without the peer reading"
    starts = counting_start_writing(sender.transport)
    for i in range(100):  # small writes now queue behind what is buffered
        piece = b"%d;" % i
        eager.write(sender.transport, piece)
        sent += piece
    assert starts, "a write while bytes are buffered went through transport.write"
    collector.transport.resumeProducing()
    got = yield collector.until(len(sent))
    assert got == bytes(sent)


@pytest_twisted.inlineCallbacks
def test_nothing_is_sent_around_tls_once_a_connection_started_it(pair, tmp_path):
    from twisted.internet import ssl
    from twisted.internet.task import deferLater

    from evnet.registry.tls import self_signed_identity

    sender, collector = pair
    made = self_signed_identity(str(tmp_path), ["127.0.0.1"])
    sender.transport.startTLS(ssl.DefaultOpenSSLContextFactory(made.key_path, made.cert_path))
    assert eager.sends_eagerly(sender.transport)  # a TCP connection still; write() must see TLS
    eager.write(sender.transport, b"a secret in plain text")
    yield deferLater(reactor, 0.2, lambda: None)
    assert b"a secret in plain text" not in bytes(collector.data)


class Recorder(LinkHandler):
    def __init__(self):
        self.received = defer.Deferred()
        self.links = []

    def linkOpened(self, link):
        self.links.append(link)

    def messageReceived(self, link, msg):
        if not self.received.called:
            self.received.callback(msg)


@pytest_twisted.inlineCallbacks
def test_a_framed_link_on_tcp_acks_a_frame_without_the_reactor_watching_its_socket():
    server = Recorder()
    port = yield endpoints.TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
        LinkFactory(server, initiator=False, clock=reactor))
    try:
        client = LinkHandler()
        link = yield endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port).connect(
            LinkFactory(client, initiator=True, clock=reactor))
        yield link.opened.addTimeout(WAIT, reactor)
        assert len(server.links) == 1
        starts = counting_start_writing(server.links[0].transport)
        yield link.sendMessage(m.Status("CP01", "OK")).addTimeout(WAIT, reactor)  # fires on Central's ACK
        got = yield server.received
        assert got == m.Status("CP01", "OK")
        assert starts == []
        link.close()
    finally:
        yield port.stopListening()
