"""Central's rules and lifecycle on fake links, a fake clock and an in-memory store."""

import gc
from contextlib import contextmanager

import pytest
import twisted.internet
from twisted.application import strports
from twisted.internet import defer
from twisted.internet.protocol import Factory
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import globalLogPublisher

from evnet.endpoints import Listener
from evnet.protocols import framing
from evnet.protocols import messages as m
from evnet.protocols import security
from evnet.central.links import CpLinks, DriverLinks
from evnet.central.rules import RECONCILE_TIMEOUT, Central
from evnet.central.service import CentralService
from evnet.central.states import CpState
from evnet.central.trust import REG_REFUSED

from tests.fakes import FAST_COST, MemoryStore, Monitor, Peer, secret_of, verifier_of


class World:
    """Central's rules and service on a fake clock and store, with its link handlers for fake peers."""

    def __init__(self, store=None, liveness=3.0, reconcile_timeout=RECONCILE_TIMEOUT, **options):
        self.clock = Clock()
        self.store = store or MemoryStore(now=self.clock.seconds)
        self.central = Central(
            self.store, self.clock, liveness_timeout=liveness, reconcile_timeout=reconcile_timeout,
            wall_clock=self.clock.seconds, **options,
        )
        self.service = CentralService(self.central)
        self.cp_links = CpLinks(self.central)
        self.driver_links = DriverLinks(self.central)
        self.service.startService()
        assert self.service.ready.called

    def register(self, cp_id="CP1", location="Centro", price=0.3):
        """CP C{cp_id} registered at EV_Registry (as EV_Registry writes it in the shared database)."""
        self.store.register_cp(cp_id, location, price, verifier_of(secret_of(cp_id)))

    def monitor(self, cp_id="CP1", **options):
        """A Monitor of C{cp_id} on a new link, not logged in yet."""
        return Monitor(self.cp_links, self.clock, cp_id, **options)

    def cp(self, cp_id="CP1", location="Centro", price=0.3, engine="OK"):
        """A registered, logged-in CP: its Monitor, which has sent its first STATUS."""
        row = self.store.registrations.get(cp_id)
        if row is None or (row["location"], row["price"], row["status"]) != (location, price, "registered"):
            self.register(cp_id, location, price)
        peer = self.monitor(cp_id)
        peer.login()
        peer.send(m.Status(cp_id, engine))
        return peer

    def driver(self, driver_id="D1"):
        peer = Peer(self.driver_links, self.clock)
        peer.send(m.Driver(driver_id))
        return peer

    def alive(self, cp, seconds, cp_id="CP1"):
        """Let C{seconds} pass, the Monitor sending its STATUS every second."""
        for _ in range(seconds):
            self.clock.advance(1)
            cp.send(m.Status(cp_id, "OK"))

    def state(self, cp_id="CP1"):
        return self.central.cps[cp_id].state

    def charging(self):
        """CP1 connected and driver D1 charging there: (cp, driver, session id)."""
        cp, driver = self.cp(), self.driver()
        return cp, driver, self.charge(cp, driver)

    def charge(self, cp, driver, cp_id="CP1", driver_id="D1"):
        driver.take()
        cp.take()
        driver.send(m.Req(driver_id, cp_id))
        auth = driver.take(m.Authorized)[0]
        start = cp.take(m.Start)[0]
        assert start.session_id == auth.session_id
        return auth.session_id


def test_a_registered_cp_logs_in_and_takes_its_location_and_price_from_the_registry():
    w = World()
    w.register("CP1", "Centro", 0.3)
    cp = w.monitor()
    client = security.ClientLogin("CP1", secret_of("CP1"))
    cp.send(client.start())
    [challenge] = cp.take()
    assert isinstance(challenge, m.Challenge) and challenge.cost == FAST_COST
    assert "CP1" not in w.central.cps  # nothing changes before the proof
    cp.send(client.answer(challenge))
    [key] = cp.take()
    assert isinstance(key, m.Key) and (key.cp_id, key.state, key.liveness) == ("CP1", "ACTIVADO", 1.0)
    key_id, _ = client.accept(key)  # Central proved it holds the registration
    assert w.state() is CpState.ACTIVADO
    assert w.store.cps["CP1"]["location"] == "Centro" and w.store.cps["CP1"]["price"] == 0.3
    assert w.store.cps["CP1"]["state"] == "ACTIVADO"
    shown = w.central.cps["CP1"].as_dict()
    assert (shown["registration"], shown["key"], shown["key_id"]) == ("registered", "active", key_id)
    assert shown["key_issued_at"] == w.clock.seconds() and shown["key_revoked_by"] is None
    assert any(kind == "connect" and "CP CP1 authenticated from 127.0.0.1:" in text for kind, _, text in w.store.events)


def test_a_new_registration_at_the_registry_shows_at_the_next_login():
    w = World()
    cp = w.cp("CP1", "Centro", 0.3)
    cp.lose()
    w.register("CP1", "Playa", 0.45)
    w.cp("CP1", "Playa", 0.45)
    assert (w.central.cps["CP1"].location, w.central.cps["CP1"].price) == ("Playa", 0.45)
    assert (w.store.cps["CP1"]["location"], w.store.cps["CP1"]["price"]) == ("Playa", 0.45)
    assert any(kind == "register" and "registration updated: Playa" in text for kind, _, text in w.store.events)


@pytest.mark.parametrize("logged_in", [False, True])
def test_reg_on_a_link_is_refused_recorded_and_changes_nothing(logged_in):
    w = World()
    cp = w.cp() if logged_in else w.monitor()
    cp.take()
    cp.send(m.Reg("CP1", "Elsewhere", 0.01))
    [refused] = cp.take()
    assert refused == m.Refused("REG", "CP1", REG_REFUSED)
    assert ("CP1" in w.central.cps) is logged_in
    if logged_in:
        assert (w.central.cps["CP1"].location, w.central.cps["CP1"].price) == ("Centro", 0.3)
    [row] = [text for kind, _, text in w.store.events if kind == "refused"]
    assert row.startswith(f"REG from {cp.link.peer_name} refused: register this CP at EV_Registry")


def test_a_second_link_that_logs_in_replaces_the_first():
    w = World()
    first = w.cp()
    first_key = first.key_id
    second = w.monitor()
    second.send_plain(m.Reg("CP1", "Elsewhere", 0.1))  # an unauthenticated link changes nothing...
    second.send_plain(m.Auth("CP1", security.new_nonce()))
    assert isinstance(second.next(m.Challenge), m.Challenge)
    assert w.central.cps["CP1"].link is not None and not first.transport.disconnecting  # ...nor does a login under way
    second.take()
    second.login()
    assert first.transport.disconnecting  # the old link is closed
    assert second.key_id != first_key and w.central.cps["CP1"].key.key_id == second.key_id
    first.send(m.Status("CP1", "KO"))  # what still comes on the old link is refused
    assert w.state() is CpState.ACTIVADO
    second.send(m.Status("CP1", "OK"))
    first.lose()  # the old link's end does not take the CP down
    assert w.state() is CpState.ACTIVADO
    assert w.central.cps["CP1"].location == "Centro"


def test_an_unknown_id_gets_a_challenge_and_then_wrong_credentials_like_a_wrong_secret():
    w = World()
    w.register("CP1")
    answers = {}
    for cp_id, secret in (("CP9", "a guess"), ("CP1", "a guess")):
        peer = w.monitor(cp_id, secret=secret)
        client = security.ClientLogin(cp_id, secret)
        peer.send(client.start())
        [challenge] = peer.take()
        assert isinstance(challenge, m.Challenge)
        peer.send(client.answer(challenge))
        answers[cp_id] = peer.take()
    assert answers == {"CP9": [m.Refused("AUTH", "CP9", "wrong credentials")],
                       "CP1": [m.Refused("AUTH", "CP1", "wrong credentials")]}
    refused = [text for kind, _, text in w.store.events if kind == "auth-refused"]
    assert "unknown CP id (not registered at EV_Registry) (the peer was told: wrong credentials)" in refused[0]
    assert "wrong secret" in refused[1] and "from 127.0.0.1:" in refused[1]
    assert "CP9" not in w.central.cps and "CP1" not in w.central.cps  # a failed login touches no CP


def test_messages_before_auth_are_refused():
    w = World()
    cp = Peer(w.cp_links, w.clock)
    cp.send(m.Status("CP1", "OK"))
    assert cp.take() == [m.Refused("STATUS", "CP1", "link not authenticated")]
    assert [kind for kind, _, _ in w.store.events] == ["refused"]


def test_engine_ko_means_averiado_and_ok_means_activado():
    w = World()
    cp = w.cp(engine="KO")
    assert w.state() is CpState.AVERIADO
    cp.send(m.Status("CP1", "OK"))
    assert w.state() is CpState.ACTIVADO
    cp.send(m.Avr("CP1", "engine does not answer"))
    assert w.state() is CpState.AVERIADO
    cp.send(m.Rcv("CP1"))
    assert w.state() is CpState.ACTIVADO


def test_no_liveness_for_three_seconds_means_desconectado():
    w = World()
    cp = w.cp()
    w.alive(cp, 5)
    assert w.state() is CpState.ACTIVADO
    w.clock.advance(3.0)
    assert w.state() is CpState.ACTIVADO
    w.clock.advance(0.6)
    assert w.state() is CpState.DESCONECTADO
    assert cp.transport.disconnecting


def test_link_lost_means_desconectado_and_the_cp_can_come_back():
    w = World()
    cp = w.cp()
    cp.lose()
    assert w.state() is CpState.DESCONECTADO
    w.cp()
    assert w.state() is CpState.ACTIVADO


def test_full_charge_lifecycle():
    w = World()
    cp, driver = w.cp(price=0.5), w.driver()
    sid = w.charge(cp, driver)
    assert w.state() is CpState.SUMINISTRANDO
    assert w.store.sessions[sid]["status"] == "open"
    for seq in (1, 2, 3):
        cp.send(m.Telem("CP1", sid, seq, 0.1 * seq, 36.0, 0.05 * seq, seq))
        driver.pump()  # the driver ACKs each
    telems = driver.take(m.Telem)
    assert [t.seq for t in telems] == [1, 2, 3]
    cp.send(m.Stop("CP1", sid, 4, 0.4, 0.2, 4, "target"))
    assert w.state() is CpState.ACTIVADO
    [ticket] = driver.take(m.Ticket)
    assert ticket == m.Ticket(sid, 0.4, 0.2, 4, "CP1", "D1", "target")
    assert cp.take(m.Ticket) == [ticket]  # the CP's end-to-end confirmation
    row = w.store.sessions[sid]
    assert (row["status"], row["kwh"], row["euros"], row["seconds"]) == ("closed", 0.4, 0.2, 4)
    assert row["ticket_delivered_at"] is not None


def test_telemetry_goes_to_that_driver_only():
    w = World()
    cp1, cp2 = w.cp("CP1"), w.cp("CP2")
    d1, d2 = w.driver("D1"), w.driver("D2")
    s1 = w.charge(cp1, d1, "CP1", "D1")
    w.charge(cp2, d2, "CP2", "D2")
    cp1.send(m.Telem("CP1", s1, 1, 0.1, 7, 0.03, 1))
    assert len(d1.take(m.Telem)) == 1
    assert d2.take(m.Telem) == []


def test_telemetry_for_a_driver_whose_link_is_busy_is_superseded_by_the_next():
    w = World()
    cp, driver, sid = w.charging()
    driver.auto_ack = False
    for seq in (1, 2, 3):
        cp.send(m.Telem("CP1", sid, seq, 0.1 * seq, 36.0, 0.05 * seq, seq))
        driver.pump()
    assert [t.seq for t in driver.take(m.Telem)] == [1]  # 2 and 3 came while 1 awaited its ACK
    driver.auto_ack = True
    driver.link.dataReceived(b"\x06")
    cp.send(m.Telem("CP1", sid, 4, 0.4, 36.0, 0.2, 4))
    assert [t.seq for t in driver.take(m.Telem)] == [4]
    assert w.central.sessions[sid].kwh == 0.4  # Central's own state saw every record


def test_replayed_telemetry_is_not_counted_twice():
    w = World()
    cp, driver, sid = w.charging()
    for seq, kwh in ((1, 0.1), (2, 0.2), (1, 0.1)):
        cp.send(m.Telem("CP1", sid, seq, kwh, 7, 0.3 * kwh, seq))
        driver.pump()
    assert w.central.sessions[sid].kwh == 0.2
    assert [t.seq for t in driver.take(m.Telem)] == [1, 2]


@pytest.mark.parametrize(
    "setup, reason",
    [
        (lambda w: None, "unknown CP CP7"),
    ],
)
def test_unknown_cp_is_denied(setup, reason):
    w = World()
    driver = w.driver()
    driver.send(m.Req("D1", "CP7"))
    assert driver.take(m.Denied) == [m.Denied("D1", "CP7", reason)]


def test_denied_when_cp_busy_faulty_stopped_or_disconnected():
    w = World()
    cp, d1, d2 = w.cp(), w.driver("D1"), w.driver("D2")
    w.charge(cp, d1)
    d2.send(m.Req("D2", "CP1"))
    assert "busy" in d2.take(m.Denied)[0].reason
    d1.send(m.Req("D1", "CP1"))
    assert "already has a charge in progress" in d1.take(m.Denied)[0].reason

    w.cp("CP2", engine="KO")
    d2.send(m.Req("D2", "CP2"))
    assert "AVERIADO" in d2.take(m.Denied)[0].reason

    w.cp("CP3")
    w.central.stop_cp("CP3")
    d2.send(m.Req("D2", "CP3"))
    assert "Out of Order" in d2.take(m.Denied)[0].reason

    w.cp("CP4").lose()
    d2.send(m.Req("D2", "CP4"))
    assert "DESCONECTADO" in d2.take(m.Denied)[0].reason


def test_fault_during_a_charge_ends_it_with_a_ticket_and_tells_the_driver():
    w = World()
    cp, driver, sid = w.charging()
    cp.send(m.Telem("CP1", sid, 1, 0.25, 9, 0.08, 1))
    cp.send(m.Avr("CP1", "engine KO"))
    got = [x for x in driver.take() if not isinstance(x, m.Telem)]
    assert isinstance(got[0], m.Notice) and "fault" in got[0].text
    assert got[1] == m.Ticket(sid, 0.25, 0.08, 1, "CP1", "D1", "fault: engine KO")
    assert w.state() is CpState.AVERIADO
    # The Engine's own STOP for the same session comes later: nothing is counted twice.
    cp.take()
    cp.send(m.Stop("CP1", sid, 2, 0.26, 0.08, 2, "fault"))
    assert cp.take(m.Ticket) == [got[1]]
    assert driver.take(m.Ticket) == []
    assert w.store.sessions[sid]["kwh"] == 0.25
    cp.send(m.Rcv("CP1"))
    assert w.state() is CpState.ACTIVADO


def test_monitor_lost_during_a_charge_ends_it():
    w = World()
    cp, driver, sid = w.charging()
    cp.send(m.Telem("CP1", sid, 1, 0.1, 9, 0.03, 1))
    cp.lose()
    assert w.state() is CpState.DESCONECTADO
    [ticket] = driver.take(m.Ticket)
    assert ticket.reason == "disconnected" and ticket.kwh == 0.1


def test_parar_and_reanudar_one_cp():
    w = World()
    cp, driver, sid = w.charging()
    cp.send(m.Telem("CP1", sid, 1, 0.1, 9, 0.03, 1))
    ok, text = w.central.stop_cp("CP1")
    assert ok
    assert w.state() is CpState.PARADO
    assert driver.take(m.Ticket)[0].reason == "parar"
    assert m.Parar("CP1") in cp.take()
    ok, text = w.central.resume_cp("CP1")
    assert ok and w.state() is CpState.ACTIVADO
    assert cp.take(m.Reanudar) == [m.Reanudar("CP1")]
    assert w.central.resume_cp("CP1") == (False, "CP CP1 is not stopped (ACTIVADO)")
    assert w.central.stop_cp("CP9") == (False, "unknown CP CP9")


def test_parar_and_reanudar_all():
    w = World()
    peers = [w.cp(f"CP{i}") for i in range(1, 4)]
    w.central.stop_all()
    assert all(w.state(f"CP{i}") is CpState.PARADO for i in range(1, 4))
    assert all(p.take(m.Parar) for p in peers)
    w.central.resume_all()
    assert all(w.state(f"CP{i}") is CpState.ACTIVADO for i in range(1, 4))


def test_stopped_stays_stopped_across_reconnection():
    w = World()
    cp = w.cp()
    w.central.stop_cp("CP1")
    cp.lose()
    again = w.monitor()
    assert again.login().state == "PARADO"
    assert again.take() == [m.Parar("CP1")]


def test_ticket_is_stored_before_it_is_sent():
    w = World()
    cp, driver, sid = w.charging()
    w.store.hold = True
    cp.send(m.Stop("CP1", sid, 1, 0.1, 0.03, 1, "unplug"))
    assert driver.take(m.Ticket) == []
    assert w.store.sessions[sid]["status"] == "open"
    w.store.hold = False
    w.store.release()
    assert driver.take(m.Ticket)[0].session_id == sid
    assert w.store.sessions[sid]["status"] == "closed"


def test_driver_that_reconnects_gets_the_ticket_it_missed_once():
    w = World()
    cp, driver, sid = w.charging()
    driver.lose()
    cp.send(m.Stop("CP1", sid, 1, 0.1, 0.03, 1, "target"))
    assert w.store.sessions[sid]["ticket_delivered_at"] is None
    again = w.driver()
    assert again.take(m.Ticket) == [m.Ticket(sid, 0.1, 0.03, 1, "CP1", "D1", "target")]
    assert w.store.sessions[sid]["ticket_delivered_at"] is not None
    third = w.driver()
    assert third.take(m.Ticket) == []


def test_driver_that_reconnects_mid_charge_is_told_its_session():
    w = World()
    cp, driver, sid = w.charging()
    driver.lose()
    again = w.driver()
    assert again.take(m.Authorized) == [m.Authorized("D1", "CP1", sid)]


def test_list_shows_available_cps():
    w = World()
    w.cp("CP1", "Centro", 0.3)
    w.cp("CP2", "Playa", 0.4, engine="KO")
    w.cp("CP3", "Puerto", 0.5)
    driver = w.driver()
    driver.send(m.ListCps("D1"))
    assert driver.take(m.Available) == [m.Available([m.CpInfo("CP1", "Centro", 0.3), m.CpInfo("CP3", "Puerto", 0.5)])]


def test_restart_rebuilds_state_and_reconciles_the_open_charge():
    store = MemoryStore()
    w = World(store)
    cp, driver, sid = w.charging()
    cp.send(m.Telem("CP1", sid, 1, 0.1, 9, 0.03, 1))
    w.clock.advance(2.1)  # progress is flushed in batches
    assert store.sessions[sid]["kwh"] == 0.1
    # Central dies (no clean stop); a new one starts on the same database.
    w2 = World(store)
    assert w2.state() is CpState.DESCONECTADO
    assert sid in w2.central.sessions
    cp2 = w2.monitor()
    cp2.login()
    assert w2.state() is CpState.SUMINISTRANDO
    cp2.send(m.Telem("CP1", sid, 1, 0.1, 9, 0.03, 1))  # a replay
    cp2.send(m.Telem("CP1", sid, 2, 0.2, 9, 0.06, 2))
    cp2.send(m.Stop("CP1", sid, 3, 0.3, 0.09, 3, "target"))
    d2 = Peer(w2.driver_links, w2.clock)
    d2.send(m.Driver("D1"))
    assert d2.take(m.Ticket) == [m.Ticket(sid, 0.3, 0.09, 3, "CP1", "D1", "target")]
    cp2.send(m.Stop("CP1", sid, 3, 0.3, 0.09, 3, "target"))  # the Engine repeats it
    assert store.sessions[sid]["kwh"] == 0.3
    assert d2.take(m.Ticket) == []
    assert w2.state() is CpState.ACTIVADO


def test_charge_started_at_the_cp_itself():
    w = World()
    cp = w.cp()
    cp.send(m.Req("LOCAL", "CP1", 0.5))
    got = cp.take()
    auth = [x for x in got if isinstance(x, m.Authorized)][0]
    start = [x for x in got if isinstance(x, m.Start)][0]
    assert start.session_id == auth.session_id and start.target_kwh == 0.5
    cp.send(m.Stop("CP1", auth.session_id, 1, 0.5, 0.15, 60, "target"))
    assert cp.take(m.Ticket)[0].kwh == 0.5


def test_cp_cannot_request_for_another_cp():
    w = World()
    cp = w.cp()
    w.cp("CP2")
    cp.send(m.Req("LOCAL", "CP2"))
    assert "only request charges for itself" in cp.take(m.Denied)[0].reason


def test_illegal_transition_is_logged_not_raised():
    w = World()
    w.cp()
    from evnet.central.states import CpInput
    assert w.central._fire(w.central.cps["CP1"], CpInput.CHARGE_END) is False
    assert w.state() is CpState.ACTIVADO


def test_a_charge_the_cp_no_longer_knows_is_closed_after_reconnection():
    store = MemoryStore()
    w = World(store)
    cp, driver, sid = w.charging()
    cp.send(m.Telem("CP1", sid, 1, 0.1, 9, 0.03, 1))
    w.clock.advance(2.1)
    w2 = World(store)  # Central restarted; the Engine lost its state meanwhile
    cp2 = w2.cp()
    assert w2.state() is CpState.SUMINISTRANDO
    w2.alive(cp2, 14)
    assert w2.state() is CpState.SUMINISTRANDO
    w2.clock.advance(1.1)
    assert w2.state() is CpState.ACTIVADO
    assert store.sessions[sid]["status"] == "closed"
    assert store.sessions[sid]["end_reason"] == "not reported after reconnection"
    assert store.sessions[sid]["kwh"] == 0.1


def test_a_charge_the_cp_still_reports_is_not_closed_after_reconnection():
    store = MemoryStore()
    w = World(store)
    cp, driver, sid = w.charging()
    w2 = World(store)
    cp2 = w2.cp()
    for seq in range(1, 20):
        w2.clock.advance(1)
        cp2.send(m.Status("CP1", "OK"))
        cp2.send(m.Telem("CP1", sid, seq, 0.01 * seq, 36, 0.003 * seq, seq))
    assert w2.state() is CpState.SUMINISTRANDO
    assert store.sessions[sid]["status"] == "open"


def test_a_cp_still_supplying_a_closed_session_is_sent_its_ticket():
    w = World()
    cp, driver, sid = w.charging()
    cp.send(m.Telem("CP1", sid, 1, 0.1, 36, 0.03, 1))
    cp.lose()  # Central ends the charge ("disconnected")
    again = w.cp()
    again.send(m.Telem("CP1", sid, 2, 0.2, 36, 0.06, 2))
    again.send(m.Telem("CP1", sid, 3, 0.3, 36, 0.09, 3))  # within 5 s: not answered twice
    assert again.take(m.Ticket) == [m.Ticket(sid, 0.1, 0.03, 1, "CP1", "D1", "disconnected")]
    assert w.store.sessions[sid]["kwh"] == 0.1  # nothing counted after the close


# -- Central's lifecycle: stopped early, failed load, pending calls ---------------------------


class SlowStore(MemoryStore):
    """A MemoryStore whose start() (opening the database) answers only when the test says."""

    def __init__(self):
        super().__init__()
        self.opening = defer.Deferred()

    def start(self):
        self.started += 1
        return self.opening


class FailingStore(MemoryStore):
    """
    A MemoryStore whose close_session fails while C{failing} is set (tests/fakes.py has
    only a hold mode; this failing mode is local to these tests).
    """

    failing = False

    def close_session(self, *args):
        if self.failing:
            return defer.fail(RuntimeError("database is locked"))
        return super().close_session(*args)


@contextmanager
def logged_failures():
    """The failures logged meanwhile, unhandled Deferred errors included (collected at the end)."""
    failures = []

    def observe(event):
        if "log_failure" in event:
            failures.append(event["log_failure"])

    globalLogPublisher.addObserver(observe)
    try:
        yield failures
        gc.collect()  # "Unhandled error in Deferred" is logged when the Deferred is collected
    finally:
        globalLogPublisher.removeObserver(observe)


class NoReactorStop:
    """Stands in for the global reactor: a service must never stop it."""

    running = True
    stopped = False

    def stop(self):
        self.stopped = True

    def callWhenRunning(self, f, *args):
        f(*args)


def listening_service(store, reactor, on_failure=None):
    """Central's service with children like the tap's: the two Listeners and a strports service (as in the panel)."""
    central = Central(store, reactor)
    top = CentralService(central, on_failure=on_failure)
    for option in ("listen", "drivers"):
        Listener(option, "tcp:7000:interface=127.0.0.1", Factory(), reactor, on_failure).setServiceParent(top)
    strports.service("tcp:8080:interface=127.0.0.1", Factory(), reactor=reactor).setServiceParent(top)
    return top


def test_stopping_central_before_its_database_loaded_is_clean_and_listens_nowhere(monkeypatch):
    fake = NoReactorStop()
    monkeypatch.setattr(twisted.internet, "reactor", fake)
    store, reactor = SlowStore(), MemoryReactorClock()
    top = listening_service(store, reactor)
    ready = top.ready
    with logged_failures() as failures:
        top.startService()
        assert reactor.tcpServers == []  # nothing listens before the state is loaded
        stopped = top.stopService()
        assert stopped.called and stopped.result is None
        store.opening.callback(None)  # the database answers after all: too late
        assert not any(child.running for child in top)
    assert failures == []
    assert reactor.tcpServers == []
    assert store.closed and not fake.stopped
    assert ready.called and isinstance(ready.result.value, defer.CancelledError)
    ready.addErrback(lambda f: None)


def test_a_failed_load_is_reported_once_not_by_stopping_the_reactor_and_stop_is_clean(monkeypatch):
    fake = NoReactorStop()
    monkeypatch.setattr(twisted.internet, "reactor", fake)
    store, reactor = SlowStore(), MemoryReactorClock()
    reported = []
    top = listening_service(store, reactor, reported.append)
    with logged_failures() as failures:
        top.startService()
        store.opening.errback(RuntimeError("disk gone"))
        assert reported == ["EV_Central cannot start: database SlowStore: disk gone"]
        assert not fake.stopped
        assert reactor.tcpServers == []
        top.stopService()
    assert failures == []  # one line, no traceback
    assert store.closed
    failed = []
    top.ready.addErrback(failed.append)
    assert failed[0].check(RuntimeError)


@pytest.mark.parametrize("option", ["listen", "drivers"])
def test_a_listen_address_that_is_not_an_endpoint_is_refused_before_anything_starts(option):
    from twisted.python import usage
    from evnet.central.tap import Options

    with pytest.raises(usage.UsageError, match=f"--{option} 'bogus:1' is not a server endpoint string"):
        Options().parseOptions([f"--{option}", "bogus:1"])


def test_the_evcentral_process_sets_its_garbage_collector_thresholds_and_wire_leaves_them(monkeypatch, tmp_path):
    from evnet.central import tap

    class Collector:
        thresholds = None

        def set_threshold(self, *thresholds):
            self.thresholds = thresholds

    collector = Collector()
    tap.tune_gc(collector)
    assert collector.thresholds == tap.GC_THRESHOLDS
    assert tap.GC_THRESHOLDS[0] > gc.get_threshold()[0]  # rarer young collections than Python's

    tuned = []
    monkeypatch.setattr(tap, "tune_gc", lambda: tuned.append("makeService"))
    options = tap.Options()
    options.parseOptions(["--http", "none", "--db", f"sqlite:{tmp_path / 'central.db'}"])
    tap.wire(options, MemoryStore(), MemoryReactorClock())
    assert tuned == []  # the tests' process (and any other wiring) keeps its own
    tap.makeService(options)
    assert tuned == ["makeService"]


def test_a_part_that_cannot_start_is_reported_and_central_stops_cleanly():
    class Broken(Listener):
        def startService(self):
            raise RuntimeError("a bug")

    reported = []
    top = listening_service(MemoryStore(), MemoryReactorClock(), reported.append)
    Broken("http", "tcp:8081", Factory(), MemoryReactorClock()).setServiceParent(top)
    with logged_failures() as failures:
        top.startService()
        top.stopService()
    assert len(reported) == 1 and reported[0].endswith(": a bug")
    assert [f.value.args for f in failures] == [("a bug",)]
    assert top.ready.addErrback(lambda f: f.value.args).result == ("a bug",)


def test_once_loaded_the_listeners_start_and_stop_with_central():
    reactor = MemoryReactorClock()
    top = listening_service(MemoryStore(), reactor)
    top.startService()
    assert [port for port, *_ in reactor.tcpServers] == [7000, 7000, 8080]
    top.stopService()
    assert not any(child.running for child in top)


def test_stopping_central_cancels_the_reconciliation_it_scheduled():
    store = MemoryStore()
    w = World(store)
    cp, driver = w.cp(), w.driver()
    w.charge(cp, driver)
    w2 = World(store)  # restarted with the charge open
    w2.cp()  # AUTH schedules the reconciliation of that charge
    assert w2.clock.getDelayedCalls()
    w2.service.stopService()
    assert w2.clock.getDelayedCalls() == []


# -- a close the store failed to write ------------------------------------------------------


def test_a_close_the_store_failed_to_write_is_kept_retried_and_only_then_ticketed():
    store = FailingStore()
    w = World(store)
    cp, driver, sid = w.charging()
    cp.send(m.Telem("CP1", sid, 1, 0.1, 9, 0.03, 1))
    driver.take()
    store.failing = True
    cp.send(m.Stop("CP1", sid, 2, 0.2, 0.06, 2, "target"))
    assert w.state() is CpState.ACTIVADO  # the CP and the driver are free at once
    assert driver.take(m.Ticket) == [] and cp.take(m.Ticket) == []  # no ticket before it is stored
    cp.send(m.Stop("CP1", sid, 2, 0.2, 0.06, 2, "target"))  # the Engine repeats its STOP meanwhile
    assert cp.take(m.Ticket) == []  # not a ticket made of the stale stored row
    w.alive(cp, 3)  # a flush tries again, and fails again
    assert store.sessions[sid]["status"] == "open"
    store.failing = False
    w.alive(cp, 2)  # the next flush writes it
    row = store.sessions[sid]
    assert (row["status"], row["kwh"], row["end_reason"]) == ("closed", 0.2, "target")
    ticket = m.Ticket(sid, 0.2, 0.06, 2, "CP1", "D1", "target")
    assert driver.take(m.Ticket) == [ticket]
    assert cp.take(m.Ticket) == [ticket]
    w.alive(cp, 3)
    assert driver.take(m.Ticket) == []  # written once, ticketed once


def test_a_close_still_unwritten_is_tried_once_more_when_central_stops():
    store = FailingStore()
    w = World(store)
    cp, driver, sid = w.charging()
    store.failing = True
    w.central.stop_cp("CP1")
    assert store.sessions[sid]["status"] == "open"
    store.failing = False
    w.service.stopService()
    assert (store.sessions[sid]["status"], store.sessions[sid]["end_reason"]) == ("closed", "parar")


# -- LIST with more CPs than a frame holds --------------------------------------------------


def test_list_with_hundreds_of_cps_is_answered_in_parts_each_within_a_frame():
    w = World()
    names = [f"CP{i:03d}" for i in range(320)]
    for name in names:
        w.cp(name, "Avenida de la Constitución 1", 0.35)
    driver = w.driver()
    driver.send(m.ListCps("D1"))
    parts = driver.take(m.Available)
    assert len(parts) > 1
    assert [(p.part, p.parts) for p in parts] == [(i, len(parts)) for i in range(1, len(parts) + 1)]
    assert all(len(p.to_data()) <= framing.DEFAULT_MAX_DATA for p in parts)
    assert [cp.cp_id for p in parts for cp in p.cps] == names


def test_an_authorized_charge_never_plugged_in_is_released_with_a_0_kwh_ticket():
    w = World(plug_timeout=120)
    cp, driver = w.cp(), w.driver()
    sid = w.charge(cp, driver)
    w.alive(cp, 119)
    assert w.state() is CpState.SUMINISTRANDO  # still waiting for the vehicle
    w.alive(cp, 1)
    assert w.state() is CpState.ACTIVADO
    got = driver.take()
    [notice] = [x for x in got if isinstance(x, m.Notice)]
    assert "within 120 s" in notice.text
    [ticket] = [x for x in got if isinstance(x, m.Ticket)]
    assert (ticket.session_id, ticket.kwh, ticket.euros, ticket.reason) == (sid, 0.0, 0.0, "not plugged in within 120 s")
    assert cp.take(m.Ticket) == [ticket]  # the Engine, told, forgets the authorization
    assert any(kind == "not-plugged" for kind, _, _ in w.store.events)


def test_a_charge_that_was_plugged_in_is_not_released_by_the_plug_timeout():
    w = World(plug_timeout=10)
    cp, driver = w.cp(), w.driver()
    sid = w.charge(cp, driver)
    cp.send(m.Telem("CP1", sid, 1, 0.01, 36.0, 0.01, 1))
    w.alive(cp, 20)
    assert w.state() is CpState.SUMINISTRANDO
    assert driver.take(m.Ticket) == []


def test_plug_timeout_0_never_releases_and_stopping_central_cancels_the_wait():
    w = World(plug_timeout=0)
    cp, driver = w.cp(), w.driver()
    w.charge(cp, driver)
    w.alive(cp, 600)
    assert w.state() is CpState.SUMINISTRANDO
    w2 = World(plug_timeout=50)
    cp2, driver2 = w2.cp(), w2.driver()
    w2.charge(cp2, driver2)
    w2.central.cancel_pending()
    assert not [c for c in w2.clock.getDelayedCalls() if c.func == w2.central._not_plugged]


def test_a_driver_cancels_its_own_charge_and_gets_its_ticket():
    w = World()
    cp, driver = w.cp(), w.driver()
    sid = w.charge(cp, driver)
    cp.send(m.Telem("CP1", sid, 1, 0.05, 36.0, 0.02, 5))
    driver.take()
    driver.send(m.Cancel("D1"))
    got = driver.take()
    assert m.Accepted("CANCEL", "D1", sid) in got
    [ticket] = [x for x in got if isinstance(x, m.Ticket)]
    assert (ticket.kwh, ticket.reason) == (0.05, "cancelled by the driver")
    assert w.state() is CpState.ACTIVADO
    assert cp.take(m.Ticket) == [ticket]
    driver.send(m.Cancel("D1"))
    assert driver.take() == [m.Refused("CANCEL", "D1", "driver D1 has no charge in progress")]


def test_a_driver_cannot_cancel_another_drivers_charge():
    w = World()
    cp, d1 = w.cp(), w.driver("D1")
    w.charge(cp, d1)
    d2 = w.driver("D2")
    d2.take()
    d2.send(m.Cancel("D2"))
    assert d2.take() == [m.Refused("CANCEL", "D2", "driver D2 has no charge in progress")]
    assert w.state() is CpState.SUMINISTRANDO
