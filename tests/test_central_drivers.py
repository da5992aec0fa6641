"""Drivers' accounts at Central (evnet/central/drivers.py) on fake links, a fake bus and an in-memory store."""

import pytest

from evnet.protocols import messages as m
from evnet.protocols import security
from evnet.central.states import CpState

from tests.fakes import Peer, verifier_of
from tests.test_central import World
from tests.test_central_bus import FakeBus
from evnet.central.kafka import CentralBus


def signed_up(w, driver_id="D1", secret="s3cret-of-D1"):
    w.store.sign_up_driver(driver_id, verifier_of(secret))
    return secret


class Driver(Peer):
    """A driver on a fake link that logs in with its secret, then speaks sealed."""

    def __init__(self, w, driver_id="D1", secret="s3cret-of-D1"):
        super().__init__(w.driver_links, w.clock)
        self.driver_id, self.secret = driver_id, secret
        self.sealer = self.opener = None

    def login(self):
        client = self.client = security.ClientLogin(self.driver_id, self.secret)
        self.send(client.start())
        [challenge] = self.take()
        assert isinstance(challenge, m.Challenge), challenge
        self.send(client.answer(challenge))
        got = self.take()
        if not isinstance(got[0], m.Key):
            return got
        key_id, key = client.accept(got[0])
        self.sealer = security.Sealer(self.driver_id, key_id, key, security.ROLE_DRIVER)
        self.opener = security.Opener(self.driver_id, key_id, key, (security.ROLE_CENTRAL,))
        return [security.open_message(self.opener, x) if isinstance(x, m.Sec) else x for x in got[1:]]

    def say(self, msg):
        self.send(security.seal_message(self.sealer, msg))

    def heard(self):
        return [security.open_message(self.opener, x) if isinstance(x, m.Sec) and self.opener else x for x in self.take()]


def test_a_signed_up_driver_logs_in_without_its_secret_on_the_wire_and_its_link_is_sealed():
    w = World()
    signed_up(w)
    cp, d = w.cp(), Driver(w)
    assert d.login() == [m.Accepted("DRIVER", "D1")]
    assert not any(b"s3cret" in frame for frame in d.frames)
    cp.take()
    d.say(m.Req("D1", "CP1"))
    [auth] = [x for x in d.heard() if isinstance(x, m.Authorized)]
    assert all(frame.startswith(b"SEC#") for frame in d.frames[-1:])
    d.say(m.Cancel("D1"))
    got = d.heard()
    assert any(isinstance(x, m.Ticket) and x.session_id == auth.session_id for x in got)
    assert any(kind == "driver-auth" and "authenticated" in text for kind, _, text in w.store.events)


def test_a_client_claiming_a_signed_up_id_without_credentials_gets_nothing_and_is_recorded():
    w = World()
    signed_up(w)
    cp, d = w.cp(), Driver(w)
    d.login()
    d.say(m.Req("D1", "CP1"))
    sid = [x for x in d.heard() if isinstance(x, m.Authorized)][0].session_id
    thief = Peer(w.driver_links, w.clock, host="10.9.8.7")
    thief.send(m.Driver("D1"))
    thief.send(m.Req("D1", "CP1"))
    thief.send(m.Cancel("D1"))
    answers = thief.take()
    assert answers and all(isinstance(x, m.Refused) for x in answers)
    assert "has credentials" in answers[0].reason
    cp.send(m.Telem("CP1", sid, 1, 0.1, 36, 0.03, 1))
    cp.send(m.Stop("CP1", sid, 2, 0.2, 0.06, 2, "target"))
    assert thief.take() == []  # no telemetry, no ticket
    assert any(isinstance(x, m.Ticket) for x in d.heard())  # they went to the driver, sealed
    w.central.trust.sweep(True)
    assert any(kind == "driver-refused" and "10.9.8.7" in text for kind, _, text in w.store.events)
    assert w.store.sessions[sid]["driver_id"] == "D1"
    from tests.test_audit import central_rows

    w.clock.advance(5)
    refused = [r for r in central_rows(w) if r["actor_kind"] == "driver" and r["outcome"] == "refused"]
    assert refused and all(r["address"] == "10.9.8.7" for r in refused)
    assert {r["actor_id"] for r in refused} == {"D1"}
    assert any(r["action"] == "driver.login" and r["outcome"] == "ok" for r in central_rows(w))


def test_a_wrong_secret_is_wrong_credentials_and_does_not_replace_the_drivers_link():
    w = World()
    signed_up(w)
    w.cp()
    d = Driver(w)
    d.login()
    other = Driver(w, secret="guess")
    [refused] = other.login()
    assert refused == m.Refused("AUTH", "D1", "wrong credentials", other.client.proof)  # names the PROOF refused
    assert w.central.driver_links["D1"].inner is d.link
    unknown = Driver(w, driver_id="NOBODY")
    [refused] = unknown.login()
    assert refused == m.Refused("AUTH", "NOBODY", "wrong credentials", unknown.client.proof)  # like a wrong secret
    w.central.trust.sweep(True)
    texts = [text for kind, _, text in w.store.events if kind == "driver-refused"]
    assert any("wrong secret" in t for t in texts) and any("not signed up" in t for t in texts)


def test_a_second_login_as_the_driver_replaces_the_first_link():
    w = World()
    signed_up(w)
    first, second = Driver(w), Driver(w)
    first.login()
    second.login()
    assert w.central.driver_links["D1"].inner is second.link
    assert first.transport.disconnecting


def test_a_sealed_request_for_another_driver_is_refused():
    w = World()
    signed_up(w)
    w.cp()
    d = Driver(w)
    d.login()
    d.say(m.Req("D2", "CP1"))
    [refused] = d.heard()
    assert isinstance(refused, m.Refused) and "D1's key" in refused.reason
    assert w.state() is CpState.ACTIVADO


def test_required_mode_refuses_plain_drivers_even_without_an_account():
    w = World(driver_auth="required")
    w.cp()
    plain = Peer(w.driver_links, w.clock)
    plain.send(m.Req("D9", "CP1"))
    [refused] = plain.take()
    assert refused.what == "REQ" and "requires driver credentials" in refused.reason
    assert w.state() is CpState.ACTIVADO


def test_optional_mode_still_serves_a_plain_driver_without_an_account():
    w = World()
    cp, driver = w.cp(), w.driver("D5")
    assert driver.take() == [m.Accepted("DRIVER", "D5")]
    driver.send(m.Req("D5", "CP1"))
    assert [type(x) for x in driver.take()] == [m.Authorized]


# -- Kafka -----------------------------------------------------------------------


def kafka(mode="optional"):
    w = World(driver_auth=mode)
    bus = FakeBus()
    adapter = CentralBus(w.central, bus)
    adapter.setServiceParent(w.service)
    w.central.reach_drivers_by(adapter.channel)
    return w, bus


def kafka_login(w, bus, driver_id="D1", secret="s3cret-of-D1"):
    client = security.ClientLogin(driver_id, secret)
    bus.feed("driver.requests", driver_id, client.start())
    [(_, challenge)] = bus.take()
    bus.feed("driver.requests", driver_id, client.answer(challenge))
    [(_, key)] = bus.take()
    key_id, k = client.accept(key)
    return (security.Sealer(driver_id, key_id, k, security.ROLE_DRIVER),
            security.Opener(driver_id, key_id, k, (security.ROLE_CENTRAL,)))


def test_through_kafka_requests_are_sealed_by_the_driver_and_its_notifications_for_it():
    w, bus = kafka()
    signed_up(w)
    cp = w.cp()
    sealer, opener = kafka_login(w, bus)
    bus.feed("driver.requests", "D1", security.seal_message(sealer, m.Req("D1", "CP1")))
    got = bus.take()
    assert got and all(isinstance(x, m.Sec) for _, x in got)
    [auth] = [security.open_message(opener, x) for _, x in got]
    cp.send(m.Telem("CP1", auth.session_id, 1, 0.1, 36, 0.03, 1))
    cp.send(m.Stop("CP1", auth.session_id, 2, 0.2, 0.06, 2, "target"))
    inner = [security.open_message(opener, x) for _, x in bus.take()]
    assert [type(x) for x in inner] == [m.Telem, m.Ticket]


def test_through_kafka_a_strangers_attempts_with_the_id_do_not_break_the_owners_login():
    w, bus = kafka()
    signed_up(w)
    w.cp()
    owner = security.ClientLogin("D1", "s3cret-of-D1")
    stranger = security.ClientLogin("D1", "a guess")
    bus.feed("driver.requests", "D1", owner.start())
    bus.feed("driver.requests", "D1", stranger.start())  # after the owner's AUTH: the newer login
    challenges = [x for _, x in bus.take()]
    assert [c.login for c in challenges] == [owner.nonce, stranger.nonce]
    # Each answers only the CHALLENGE naming its own AUTH; the other one is refused by the client.
    with pytest.raises(security.SecurityError, match="another login"):
        owner.answer(challenges[1])
    bad = stranger.answer(challenges[1])
    proof = owner.answer(challenges[0])
    bus.feed("driver.requests", "D1", bad)
    [(_, refused)] = bus.take()
    assert refused.ref == bad.proof and stranger.refuses(refused) and not owner.refuses(refused)
    bus.feed("driver.requests", "D1", proof)  # the wrong PROOF ended no login: the owner's still stands
    [(_, key)] = bus.take()
    assert isinstance(key, m.Key)
    owner.accept(key)
    w.central.trust.sweep(True)
    assert any(kind == "driver-refused" and "wrong secret" in text for kind, _, text in w.store.events)


def test_through_kafka_at_most_four_logins_of_an_id_are_under_way():
    w, bus = kafka()
    signed_up(w)
    first = security.ClientLogin("D1", "s3cret-of-D1")
    bus.feed("driver.requests", "D1", first.start())
    [(_, challenge)] = bus.take()
    for _ in range(4):  # four newer AUTHs: the first login is dropped
        bus.feed("driver.requests", "D1", security.ClientLogin("D1", "x").start())
    bus.take()
    bus.feed("driver.requests", "D1", first.answer(challenge))
    [(_, refused)] = bus.take()
    assert refused.reason == "wrong credentials" and first.refuses(refused)


def test_through_kafka_logins_under_way_are_bounded_across_ids(monkeypatch):
    from evnet.central import drivers

    monkeypatch.setattr(drivers, "MAX_KAFKA_LOGIN_IDS", 3)
    w, bus = kafka()
    signed_up(w)
    owner = security.ClientLogin("D1", "s3cret-of-D1")
    bus.feed("driver.requests", "D1", owner.start())
    [(_, challenge)] = bus.take()
    for i in range(3):  # AUTHs for three other ids (unknown ones: decoy CHALLENGEs)
        bus.feed("driver.requests", f"X{i}", security.ClientLogin(f"X{i}", "x").start())
    assert len(bus.take()) == 3
    assert list(w.central.drivers._kafka_logins) == ["X0", "X1", "X2"]  # D1's, the longest waiting, dropped
    bus.feed("driver.requests", "D1", owner.answer(challenge))
    [(_, refused)] = bus.take()
    assert refused.reason == "wrong credentials" and owner.refuses(refused)


def test_through_kafka_a_plain_record_for_a_signed_up_driver_gets_nothing_and_is_recorded():
    w, bus = kafka()
    signed_up(w)
    w.cp()
    kafka_login(w, bus)
    for msg in (m.Driver("D1"), m.Req("D1", "CP1"), m.ListCps("D1")):
        bus.feed("driver.requests", "D1", msg)
    assert bus.take() == []  # nothing answered: a stranger cannot make D1's notifications say anything
    assert w.state() is CpState.ACTIVADO
    w.central.trust.sweep(True)
    assert any(kind == "driver-refused" and "has credentials" in text for kind, _, text in w.store.events)


def test_through_kafka_in_required_mode_a_plain_driver_gets_nothing():
    w, bus = kafka("required")
    w.cp()
    bus.feed("driver.requests", "D9", m.Req("D9", "CP1"))
    assert bus.take() == [] and w.state() is CpState.ACTIVADO
