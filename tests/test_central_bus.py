"""Central's Kafka side on a fake bus: same rules as the framed links."""

from twisted.internet import defer

from evnet.protocols import messages as m
from evnet.central.kafka import KAFKA_RECONCILE_TIMEOUT, CentralBus
from evnet.central.states import CpState

from tests.test_central import World


class FakeBus:
    bootstrap = "fake:9092"

    def __init__(self):
        self.published = []
        self.handlers = {}

    def publish(self, topic, key, msg):
        self.published.append((topic, key, msg))
        return defer.succeed(None)

    def subscribe(self, topics, group_id, handler, offset_reset="earliest"):
        for topic in topics:
            self.handlers[topic] = handler

    def feed(self, topic, key, msg):
        self.handlers[topic](topic, key, msg)

    def take(self, topic="driver.notifications", kind=None):
        got = [(k, msg) for t, k, msg in self.published if t == topic and (kind is None or isinstance(msg, kind))]
        self.published = [p for p in self.published if p[0] != topic]
        return got


def kafka_world(store=None):
    """Central wired to a fake bus as the tap wires it to Kafka."""
    w = World(store, reconcile_timeout=KAFKA_RECONCILE_TIMEOUT)
    bus = FakeBus()
    adapter = CentralBus(w.central, bus)
    adapter.setServiceParent(w.service)  # started at once: Central's state is loaded
    w.central.reach_drivers_by(adapter.channel)
    return w, bus


def test_driver_request_and_telemetry_through_kafka():
    w, bus = kafka_world()
    cp = w.cp()
    bus.feed("driver.requests", "D1", m.Driver("D1"))
    assert bus.take() == [("D1", m.Accepted("DRIVER", "D1"))]
    bus.feed("driver.requests", "D1", m.Req("D1", "CP1", 0.5))
    [(key, auth)] = bus.take(kind=m.Authorized)
    assert key == "D1" and auth.cp_id == "CP1"
    [start] = cp.take(m.Start)
    assert start.session_id == auth.session_id and start.target_kwh == 0.5
    # The Engine's telemetry arrives through cp.telemetry; a replay counts nothing.
    for seq in (1, 2, 2):
        bus.feed("cp.telemetry", "CP1", m.Telem("CP1", auth.session_id, seq, 0.1 * seq, 36, 0.03 * seq, seq))
    assert [msg.seq for _, msg in bus.take(kind=m.Telem)] == [1, 2]
    assert w.central.sessions[auth.session_id].kwh == 0.2
    bus.feed("cp.events", "CP1", m.Stop("CP1", auth.session_id, 3, 0.3, 0.09, 3, "target"))
    [(key, ticket)] = bus.take(kind=m.Ticket)
    assert key == "D1" and ticket.kwh == 0.3
    assert cp.take(m.Ticket) == [ticket]  # the CP's confirmation stays on its link
    assert w.state() is CpState.ACTIVADO


def test_ticket_counts_as_delivered_only_when_the_driver_confirms():
    w, bus = kafka_world()
    cp = w.cp()
    bus.feed("driver.requests", "D1", m.Driver("D1"))
    bus.feed("driver.requests", "D1", m.Req("D1", "CP1"))
    [(_, auth)] = bus.take(kind=m.Authorized)
    bus.feed("cp.events", "CP1", m.Stop("CP1", auth.session_id, 1, 0.1, 0.03, 1, "unplug"))
    assert bus.take(kind=m.Ticket)
    assert w.store.sessions[auth.session_id]["ticket_delivered_at"] is None
    # A driver that comes back before confirming gets the ticket again...
    bus.feed("driver.requests", "D1", m.Driver("D1"))
    assert [t.session_id for _, t in bus.take(kind=m.Ticket)] == [auth.session_id]
    # ...and once it confirms, never again.
    bus.feed("driver.requests", "D1", m.Accepted("TICKET", auth.session_id))
    assert w.store.sessions[auth.session_id]["ticket_delivered_at"] is not None
    bus.feed("driver.requests", "D1", m.Driver("D1"))
    assert bus.take(kind=m.Ticket) == []
    cp.take()


def test_faults_through_cp_events():
    w, bus = kafka_world()
    w.cp()
    bus.feed("cp.events", "CP1", m.Avr("CP1", "engine KO"))
    assert w.state() is CpState.AVERIADO
    bus.feed("cp.events", "CP1", m.Rcv("CP1"))
    assert w.state() is CpState.ACTIVADO


def test_events_of_unknown_or_disconnected_cps_are_ignored():
    w, bus = kafka_world()
    bus.feed("cp.events", "CP9", m.Avr("CP9", "x"))
    w.cp().lose()
    bus.feed("cp.events", "CP1", m.Avr("CP1", "old news"))
    assert w.state() is CpState.DESCONECTADO
    assert not w.central.cps["CP1"].machine.stopped


def test_network_status_publishes_the_available_cps_coalesced():
    w, bus = kafka_world()
    w.cp("CP1")
    w.cp("CP2")
    assert bus.take("network.status") == []
    w.clock.advance(0.6)
    [(key, available)] = bus.take("network.status")
    assert key == "all"
    assert [cp.cp_id for cp in available.cps] == ["CP1", "CP2"]


def test_list_through_kafka():
    w, bus = kafka_world()
    w.cp("CP1", "Centro", 0.3)
    bus.feed("driver.requests", "D7", m.ListCps("D7"))
    assert bus.take(kind=m.Available) == [("D7", m.Available([m.CpInfo("CP1", "Centro", 0.3)]))]


def restarted_with_an_open_charge():
    """A charge authorized through Kafka, then Central restarted on the same database."""
    w, bus = kafka_world()
    w.cp()
    bus.feed("driver.requests", "D1", m.Req("D1", "CP1"))
    [(_, auth)] = bus.take(kind=m.Authorized)
    w2, bus2 = kafka_world(w.store)
    return w2, bus2, auth.session_id


def test_after_a_restart_kafka_drivers_are_reached_before_they_speak():
    w2, bus2, sid = restarted_with_an_open_charge()  # the driver says nothing after the restart
    w2.cp()
    bus2.feed("cp.telemetry", "CP1", m.Telem("CP1", sid, 1, 0.1, 36, 0.03, 1))
    assert [key for key, _ in bus2.take(kind=m.Telem)] == ["D1"]
    bus2.feed("cp.events", "CP1", m.Stop("CP1", sid, 2, 0.2, 0.06, 2, "target"))
    assert [(key, t.kwh) for key, t in bus2.take(kind=m.Ticket)] == [("D1", 0.2)]


def test_in_kafka_mode_a_reconnected_cp_has_a_minute_to_report_an_open_charge():
    w2, _, sid = restarted_with_an_open_charge()
    cp = w2.cp()
    w2.alive(cp, 30)  # the consumer may need a session timeout and a rebalance
    assert w2.store.sessions[sid]["status"] == "open"
    w2.alive(cp, 31)
    assert w2.store.sessions[sid]["status"] == "closed"
