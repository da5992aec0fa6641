"""Fakes for link tests: a recording handler and links on StringTransport."""

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from evnet.protocols.framing import encode_frame
from evnet.protocols.link import FramedLink, LinkHandler


class RecordingHandler(LinkHandler):
    def __init__(self, refuse=None):
        self.refuse = refuse
        self.events = []
        self.messages = []

    def linkRequested(self, link):
        self.events.append("requested")
        return self.refuse

    def linkOpened(self, link):
        self.events.append("opened")

    def linkRefused(self, link):
        self.events.append("refused")

    def messageReceived(self, link, msg):
        self.messages.append(msg)

    def linkLost(self, link, reason):
        self.events.append("lost")


def make_link(initiator, handler=None, clock=None, **options):
    handler = handler or RecordingHandler()
    clock = clock or Clock()
    link = FramedLink(handler, clock, initiator=initiator, **options)
    transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 5555))
    link.makeConnection(transport)
    return link, transport, handler, clock


def take(transport):
    data = transport.value()
    transport.clear()
    return data


def frame_of(msg):
    return encode_frame(msg.to_data())
