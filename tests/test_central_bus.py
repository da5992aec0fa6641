"""Central's Kafka side on a fake bus: same rules, same dispatch as the framed links."""

import pytest
from twisted.internet import defer
from twisted.internet.testing import MemoryReactorClock
from zope.interface.verify import verifyObject

from evnet.protocols import framing
from evnet.protocols import messages as m
from evnet.protocols import security
from evnet.protocols.channel import IChannel
from evnet.central.kafka import KAFKA_RECONCILE_TIMEOUT, CentralBus, KafkaDriverChannel
from evnet.central.rules import RECONCILE_TIMEOUT
from evnet.central.states import CpState
from evnet.central.tap import Options, wire

from tests.fakes import MemoryStore
from tests.test_central import World


class FakeBus:
    bootstrap = "fake:9092"

    def __init__(self):
        self.published = []
        self.handlers = {}
        self.status_observers = []

    def add_status_observer(self, observer):
        self.status_observers.append(observer)

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
        bus.feed("cp.telemetry", "CP1", cp.record(m.Telem("CP1", auth.session_id, seq, 0.1 * seq, 36, 0.03 * seq, seq)))
    assert [msg.seq for _, msg in bus.take(kind=m.Telem)] == [1, 2]
    assert w.central.sessions[auth.session_id].kwh == 0.2
    bus.feed("cp.events", "CP1", cp.record(m.Stop("CP1", auth.session_id, 3, 0.3, 0.09, 3, "target")))
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
    bus.feed("cp.events", "CP1", cp.record(m.Stop("CP1", auth.session_id, 1, 0.1, 0.03, 1, "unplug")))
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
    cp = w.cp()
    bus.feed("cp.events", "CP1", cp.record(m.Avr("CP1", "engine KO"), role=security.ROLE_MONITOR))
    assert w.state() is CpState.AVERIADO
    bus.feed("cp.events", "CP1", cp.record(m.Rcv("CP1"), role=security.ROLE_MONITOR))
    assert w.state() is CpState.ACTIVADO


def test_events_of_unknown_or_disconnected_cps_are_ignored():
    w, bus = kafka_world()
    bus.feed("cp.events", "CP9", m.Avr("CP9", "x"))
    cp = w.cp()
    cp.lose()
    bus.feed("cp.events", "CP1", cp.record(m.Avr("CP1", "old news")))  # its key is still good: the CP is not connected
    assert w.state() is CpState.DESCONECTADO
    assert not w.central.cps["CP1"].machine.stopped
    assert not any(kind == "fault" for kind, _, _ in w.store.events)  # no "AVERIADO" said of it either


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
    cp = w2.cp()
    bus2.feed("cp.telemetry", "CP1", cp.record(m.Telem("CP1", sid, 1, 0.1, 36, 0.03, 1)))
    assert [key for key, _ in bus2.take(kind=m.Telem)] == ["D1"]
    bus2.feed("cp.events", "CP1", cp.record(m.Stop("CP1", sid, 2, 0.2, 0.06, 2, "target")))
    assert [(key, t.kwh) for key, t in bus2.take(kind=m.Ticket)] == [("D1", 0.2)]


def test_in_kafka_mode_a_reconnected_cp_has_a_minute_to_report_an_open_charge():
    w2, _, sid = restarted_with_an_open_charge()
    cp = w2.cp()
    w2.alive(cp, 30)  # the consumer may need a session timeout and a rebalance
    assert w2.store.sessions[sid]["status"] == "open"
    w2.alive(cp, 31)
    assert w2.store.sessions[sid]["status"] == "closed"


# -- one CP-report dispatch: the same behaviour by the link and by Kafka -----------------


def reporter(w, bus, cp, via):
    """How a CP's report reaches Central: on its Monitor's link, or through cp.events."""
    if via == "link":
        return cp.send
    return lambda msg: bus.feed("cp.events", "CP1", cp.record(msg))


@pytest.mark.parametrize("via", ["link", "kafka"])
def test_a_fault_or_recovery_report_is_a_sign_of_life_by_either_transport(via):
    w, bus = kafka_world()
    cp = w.cp()
    report = reporter(w, bus, cp, via)
    w.clock.advance(2.5)
    report(m.Avr("CP1", "engine KO"))
    w.clock.advance(2.5)  # 5 s since the last STATUS, 2.5 s since the AVR
    assert w.state() is CpState.AVERIADO
    report(m.Rcv("CP1"))
    w.clock.advance(2.5)
    assert w.state() is CpState.ACTIVADO
    w.clock.advance(1.0)  # 3.5 s of silence
    assert w.state() is CpState.DESCONECTADO


@pytest.mark.parametrize("via", ["link", "kafka"])
def test_a_cp_asking_a_charge_for_another_cp_is_denied_by_either_transport(via):
    w, bus = kafka_world()
    cp = w.cp()
    w.cp("CP2")
    reporter(w, bus, cp, via)(m.Req("LOCAL", "CP2"))
    [denied] = cp.take(m.Denied)
    assert denied.cp_id == "CP2" and "only request charges for itself" in denied.reason
    assert w.central.sessions == {}


@pytest.mark.parametrize("via", ["link", "kafka"])
def test_a_charge_asked_for_at_the_cp_is_answered_on_its_link_by_either_transport(via):
    w, bus = kafka_world()
    cp = w.cp()
    reporter(w, bus, cp, via)(m.Req("LOCAL", "CP1", 0.5))
    got = cp.take()
    [auth] = [x for x in got if isinstance(x, m.Authorized)]
    [start] = [x for x in got if isinstance(x, m.Start)]
    assert start.session_id == auth.session_id


def test_a_record_about_another_cp_than_its_key_is_ignored():
    w, bus = kafka_world()
    cp1 = w.cp("CP1")
    w.cp("CP2")
    bus.feed("cp.events", "CP1", cp1.record(m.Avr("CP2", "not CP1's to say")))
    assert w.state("CP2") is CpState.ACTIVADO


def test_after_a_restart_a_stop_under_the_old_key_waits_for_the_cp_to_log_in_again():
    # Keys live in Central's memory: a record sealed before the restart is refused (and recorded); the
    # Engine sends its STOP again until it has the ticket, and once its Monitor logged in that one counts.
    w, bus = kafka_world()
    cp = w.cp()
    bus.feed("driver.requests", "D1", m.Req("D1", "CP1"))
    [(_, auth)] = bus.take(kind=m.Authorized)
    stop = m.Stop("CP1", auth.session_id, 2, 0.2, 0.06, 2, "target")
    w2, bus2 = kafka_world(w.store)
    bus2.feed("cp.events", "CP1", cp.record(stop))
    assert w2.store.sessions[auth.session_id]["status"] == "open"
    assert any(kind == "kafka-refused" and "not the CP's key" in text for kind, _, text in w2.store.events)
    again = w2.monitor()
    again.login()
    bus2.feed("cp.events", "CP1", again.record(stop))
    assert w2.store.sessions[auth.session_id]["status"] == "closed"
    assert [(key, t.kwh) for key, t in bus2.take(kind=m.Ticket)] == [("D1", 0.2)]


# -- lists longer than a frame ------------------------------------------------------------


def many_cps(w, n=320):
    names = [f"CP{i:03d}" for i in range(n)]
    for name in names:
        w.cp(name, "Avenida de la Constitución 1", 0.35)
    return names


def assert_parts(parts, names):
    assert len(parts) > 1
    assert [(p.part, p.parts) for p in parts] == [(i, len(parts)) for i in range(1, len(parts) + 1)]
    assert all(len(p.to_data()) <= framing.DEFAULT_MAX_DATA for p in parts)
    assert [cp.cp_id for p in parts for cp in p.cps] == names


def test_list_through_kafka_with_hundreds_of_cps_is_answered_in_parts():
    w, bus = kafka_world()
    names = many_cps(w)
    bus.take("network.status")
    bus.feed("driver.requests", "D7", m.ListCps("D7"))
    got = bus.take(kind=m.Available)
    assert {key for key, _ in got} == {"D7"}
    assert_parts([part for _, part in got], names)


def test_network_status_with_hundreds_of_cps_is_published_in_parts():
    w, bus = kafka_world()
    names = many_cps(w)
    w.clock.advance(0.6)
    got = bus.take("network.status")
    assert {key for key, _ in got} == {"all"}
    assert_parts([part for _, part in got], names)


def test_the_kafka_driver_channel_is_an_ichannel_that_refuses_what_a_record_cannot_carry():
    channel = KafkaDriverChannel(FakeBus(), "D1")
    assert verifyObject(IChannel, channel)
    assert (channel.max_data, channel.pending, channel.confirms_receipt) == (framing.DEFAULT_MAX_DATA, 0, False)
    too_long = m.Available([m.CpInfo(f"CP{i:03d}", "Avenida de la Constitución 1", 0.35) for i in range(300)])
    failed = []
    channel.sendMessage(too_long).addErrback(failed.append)
    assert failed[0].check(m.MessageError)
    assert channel.bus.published == []


# -- wiring: explicit, and the adapter lives and dies with Central's service ---------------


def test_stopping_central_cancels_the_pending_network_status_and_stops_listening():
    w, bus = kafka_world()
    w.cp()
    assert w.clock.getDelayedCalls()  # network.status coalesced for 0.5 s
    w.service.stopService()
    assert w.clock.getDelayedCalls() == []
    w.clock.advance(1)
    assert bus.take("network.status") == []
    [adapter] = [child for child in w.service if isinstance(child, CentralBus)]
    assert adapter.changed not in w.central.observers


def tap_options(*args):
    options = Options()
    options.parseOptions(["--http", "none", "--db", "sqlite:unused.db", *args])
    return options


def test_the_tap_wires_kafka_into_central_explicitly():
    top = wire(tap_options("--kafka", "127.0.0.1:9092"), MemoryStore(), MemoryReactorClock())
    central = top.central
    [adapter] = [child for child in top if isinstance(child, CentralBus)]
    assert central.reconcile_timeout == KAFKA_RECONCILE_TIMEOUT
    assert central.driver_channel("D1") is adapter.channel("D1")
    assert [getattr(child, "option", None) for child in top][:2] == ["listen", "drivers"]


def test_without_kafka_the_tap_gives_central_no_driver_channel():
    top = wire(tap_options(), MemoryStore(), MemoryReactorClock())
    assert top.central.reconcile_timeout == RECONCILE_TIMEOUT
    assert top.central.driver_channel("D1") is None
    assert not any(isinstance(child, CentralBus) for child in top)
