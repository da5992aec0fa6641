"""
In-memory fakes shared by the unit tests:

- L{MemoryStore}: the real Store's interface over dicts (synchronous
  Deferreds, optionally held to test ordering);
- L{Peer}: drives a FramedLink over a StringTransport, acknowledging what it
  receives;
- L{RecordingHandler}, L{make_link}, L{take}, L{frame_of}: a LinkHandler
  that records what happens, and a FramedLink on a StringTransport.
"""

from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from evnet.protocols import framing
from evnet.protocols.framing import ACK_BYTE, ENQ_BYTE, Kind, encode_frame
from evnet.protocols.link import FramedLink, LinkHandler
from evnet.protocols.messages import decode


class MemoryStore:
    """The Store's interface over dicts.  With C{hold=True}, writes wait for release()."""

    def __init__(self):
        self.cps = {}
        self.drivers = {}
        self.sessions = {}
        self.events = []
        self.hold = False
        self.held = []
        self.closed = False
        self.started = 0

    def _done(self, fn, *args):
        if self.hold:
            d = defer.Deferred()
            self.held.append((d, fn, args))
            return d
        return defer.succeed(fn(*args))

    def release(self):
        held, self.held = self.held, []
        for d, fn, args in held:
            d.callback(fn(*args))

    def start(self):
        self.started += 1
        return defer.succeed(None)

    def close(self):
        self.closed = True

    def load_cps(self):
        return defer.succeed([dict(row) for row in sorted(self.cps.values(), key=lambda r: r["id"])])

    def upsert_cp(self, cp_id, location, price, state):
        def do():
            row = self.cps.setdefault(cp_id, {"id": cp_id, "stopped": 0, "registered_at": 0, "last_seen": 0})
            row.update(location=location, price=price, state=state)
        return self._done(do)

    def set_cp_state(self, cp_id, state, stopped):
        def do():
            if cp_id in self.cps:
                self.cps[cp_id].update(state=state, stopped=int(stopped))
        return self._done(do)

    def touch_driver(self, driver_id):
        return self._done(lambda: self.drivers.setdefault(driver_id, {"id": driver_id}))

    def open_session(self, s):
        def do():
            self.sessions[s["id"]] = dict(
                s, ended_at=None, kwh=0.0, euros=0.0, seconds=0, last_seq=0, status="open",
                end_reason=None, ticket_delivered_at=None,
            )
        return self._done(do)

    def save_progress(self, rows):
        def do():
            for kwh, euros, seconds, last_seq, sid in rows:
                if self.sessions[sid]["status"] == "open":
                    self.sessions[sid].update(kwh=kwh, euros=euros, seconds=seconds, last_seq=last_seq)
        return self._done(do)

    def close_session(self, sid, ended_at, kwh, euros, seconds, last_seq, reason):
        def do():
            row = self.sessions.get(sid)
            if row is None or row["status"] != "open":
                return False
            row.update(status="closed", ended_at=ended_at, kwh=kwh, euros=euros, seconds=seconds,
                       last_seq=last_seq, end_reason=reason)
            return True
        return self._done(do)

    def mark_ticket_delivered(self, sid):
        def do():
            if self.sessions[sid]["ticket_delivered_at"] is None:
                self.sessions[sid]["ticket_delivered_at"] = 1.0
        return self._done(do)

    def open_sessions(self):
        return defer.succeed([dict(r) for r in self.sessions.values() if r["status"] == "open"])

    def get_session(self, sid):
        row = self.sessions.get(sid)
        return defer.succeed(dict(row) if row else None)

    def undelivered_tickets(self, driver_id):
        return defer.succeed([
            dict(r) for r in self.sessions.values()
            if r["driver_id"] == driver_id and r["status"] == "closed" and r["origin"] == "driver"
            and r["ticket_delivered_at"] is None
        ])

    def recent_sessions(self, limit=50):
        return defer.succeed(sorted(self.sessions.values(), key=lambda r: -r["started_at"])[:limit])

    def add_event(self, kind, subject, detail, at=None):
        return self._done(lambda: self.events.append((kind, subject, detail)))

    def recent_events(self, limit=100):
        return defer.succeed([
            {"id": i, "at": 0, "kind": k, "subject": s, "detail": d}
            for i, (k, s, d) in reversed(list(enumerate(self.events)))
        ][:limit])


class Peer:
    """
    The far end of a FramedLink whose near end is the code under test:
    C{send} feeds a frame in, C{inbox} collects what the link sent out
    (each frame is ACKed, as a real peer would, unless C{auto_ack} is off).
    """

    _port = 40000

    def __init__(self, handler, clock, *, accepting_side=True, auto_ack=True):
        Peer._port += 1
        self.link = FramedLink(handler, clock, initiator=not accepting_side)
        self.transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", Peer._port))
        self.decoder = framing.FrameDecoder()
        self.auto_ack = auto_ack
        self.inbox = []
        self.controls = []
        self.link.makeConnection(self.transport)
        if accepting_side:
            self.link.dataReceived(ENQ_BYTE)
        else:
            self.link.dataReceived(ACK_BYTE)
        self.pump()

    def pump(self):
        while True:
            data = self.transport.value()
            self.transport.clear()
            if not data:
                return
            for event in self.decoder.feed(data):
                if event.kind is Kind.FRAME:
                    self.inbox.append(decode(event.data))
                    if self.auto_ack:
                        self.link.dataReceived(ACK_BYTE)
                elif event.kind is Kind.CONTROL:
                    self.controls.append(event.control)

    def send(self, msg):
        self.link.dataReceived(frame_of(msg))
        self.pump()

    def take(self, kind=None):
        """Everything received since the last take (only messages of C{kind} if given)."""
        self.pump()
        got, self.inbox = self.inbox, []
        if kind is not None:
            got = [x for x in got if isinstance(x, kind)]
        return got

    def lose(self, why="connection lost"):
        self.link.connectionLost(Failure(ConnectionError(why)))


class RecordingHandler(LinkHandler):
    """A LinkHandler that records the link's events and messages (and refuses with C{refuse})."""

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
    """A FramedLink on a StringTransport: (link, transport, handler, clock)."""
    handler = handler or RecordingHandler()
    clock = clock or Clock()
    link = FramedLink(handler, clock, initiator=initiator, **options)
    transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 5555))
    link.makeConnection(transport)
    return link, transport, handler, clock


def take(transport):
    """The bytes written to C{transport} since last asked."""
    data = transport.value()
    transport.clear()
    return data


def frame_of(msg):
    return encode_frame(msg.to_data())
