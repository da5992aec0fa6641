"""
Trust for charging points, Central's side (evnet.central.trust): logins,
sealed links, refusals and their rows, the lockout, keys, rotation,
revocation and sealed Kafka records.  On fakes: StringTransport links, a
task.Clock, the MemoryStore, security.ClientLogin as the honest CP.
"""

import json

import pytest
from twisted.internet import defer
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import capturedLogs, formatEvent

from evnet.protocols import messages as m
from evnet.protocols import security
from evnet.protocols.framing import ACK_BYTE
from evnet.central.states import CpState
from evnet.central.tap import Options, wire
from evnet.central.trust import KEY_GRACE, NO_NONCE, REAUTH_TIMEOUT

from tests.fakes import MemoryStore, secret_of
from tests.test_central import World
from tests.test_central_bus import kafka_world

INTRUDER = "10.9.8.7"


def rows(w, kind=None):
    return [(k, subject, text) for k, subject, text in w.store.events if kind is None or k == kind]


def texts(w, kind):
    return [text for _, _, text in rows(w, kind)]


def bad_proof(cp_id="CP1"):
    return m.Proof(cp_id, security.b64(bytes(32)))


def charging(w):
    """CP1 logged in and driver D1 charging there: (cp, driver, session id)."""
    cp, driver = w.cp(), w.driver()
    return cp, driver, w.charge(cp, driver)


# -- the takeover the issue describes --------------------------------------------------------


def test_the_panel_hears_of_every_new_key():
    w = World(key_rotation=100)
    seen = []
    w.central.observers.append(lambda event: seen.append(event["cp"]["key_id"]) if event["type"] == "cp" else None)
    first = w.cp()
    second = w.monitor()
    second.login()  # replaces the first link; the CP stays ACTIVADO
    replaced = second.key_id
    w.alive(second, 100)
    second.login()  # a rotation
    assert {first.key_id, replaced, second.key_id} <= set(seen) and seen[-1] == second.key_id


def test_a_client_knowing_only_the_id_cannot_take_over_a_cp_whose_monitor_went_away():
    w = World()
    cp = w.cp("CP1", "Centro", 0.3)
    cp.lose()
    assert w.state() is CpState.DESCONECTADO
    intruder = w.monitor("CP1", secret="a guess", host=INTRUDER)
    intruder.send(m.Reg("CP1", "Elsewhere", 0.01))
    intruder.send(m.Auth("CP1"))  # a Release-1 AUTH
    intruder.send(m.Auth("CP1", security.new_nonce()))
    assert isinstance(intruder.next(m.Challenge), m.Challenge)
    intruder.send(bad_proof())
    for msg in (m.Status("CP1", "OK"), m.Telem("CP1", "S1", 1, 1.0, 11, 0.3, 1), m.Stop("CP1", "S1", 2, 2.0, 0.6, 2, "unplug")):
        intruder.send(msg)
    intruder.send(m.Sec("0a1b2c3d", "M", security.b64(bytes(12)), security.b64(bytes(40))))
    answers = intruder.take()
    assert [(a.what, a.reason.split(";")[0]) for a in answers] == [
        ("REG", "register this CP at EV_Registry"), ("AUTH", NO_NONCE.split(";")[0]), ("AUTH", "wrong credentials"),
        ("STATUS", "link not authenticated"), ("TELEM", "link not authenticated"), ("STOP", "link not authenticated"),
        ("SEC", "link not authenticated")]
    assert all(isinstance(a, m.Refused) for a in answers)
    cp1 = w.central.cps["CP1"]
    assert (cp1.location, cp1.price, cp1.state, cp1.link) == ("Centro", 0.3, CpState.DESCONECTADO, None)
    assert (w.store.cps["CP1"]["location"], w.store.cps["CP1"]["price"]) == ("Centro", 0.3)
    driver = w.driver()
    driver.send(m.Req("D1", "CP1"))
    assert "not available" in driver.take(m.Denied)[0].reason
    assert intruder.take() == [] and not w.central.sessions
    refused = [text for kind, _, text in rows(w) if kind in ("refused", "auth-refused")]
    assert len(refused) == 7 and all(f"from {INTRUDER}:" in text for text in refused)
    assert any("wrong secret (the peer was told: wrong credentials)" in text for text in refused)


def test_a_monitor_without_credentials_is_told_to_register_at_the_registry():
    w = World()
    w.register("CP1")
    old = w.monitor()
    old.send(m.Auth("CP1"))
    [refused] = old.take()
    assert refused.what == "AUTH" and "must be registered at EV_Registry and log in with its credentials" in refused.reason
    assert texts(w, "auth-refused")[0].startswith(f"login of CP CP1 from {old.link.peer_name} refused: this CP must")


@pytest.mark.parametrize("nonce", ["not base64!", "AAAA", "A" * 100])
def test_an_auth_whose_nonce_is_not_fresh_random_bytes_is_refused(nonce):
    w = World()
    w.register("CP1")
    peer = w.monitor()
    peer.send(m.Auth("CP1", nonce))
    assert peer.take() == [m.Refused("AUTH", "CP1", "the nonce must be 8 to 64 random bytes in base64url")]


def test_a_deregistered_cp_cannot_log_in_and_is_shown_deregistered():
    w = World()
    w.cp().lose()
    w.store.deregister_cp("CP1")
    peer = w.monitor()
    peer.send(m.Auth("CP1", security.new_nonce()))
    challenge = peer.next(m.Challenge)
    assert challenge.cp_id == "CP1"
    peer.send(bad_proof())
    assert peer.take() == [m.Refused("AUTH", "CP1", "wrong credentials")]
    assert "deregistered at EV_Registry (the peer was told: wrong credentials)" in texts(w, "auth-refused")[0]
    assert w.central.cps["CP1"].as_dict()["registration"] == "deregistered"


def test_the_right_secret_of_a_deregistered_cp_fails_like_a_wrong_one():
    w = World()
    w.cp().lose()
    w.store.deregister_cp("CP1")
    peer = w.monitor()
    with pytest.raises(AssertionError, match="got no KEY"):
        peer.login()
    assert peer.take() == [m.Refused("AUTH", "CP1", "wrong credentials")]
    assert w.state() is CpState.DESCONECTADO


def test_a_proof_without_a_challenge_is_refused_and_counts_as_a_failure():
    w = World(login_failures=1)
    w.register("CP1")
    peer = w.monitor()
    peer.send(bad_proof())
    assert peer.take() == [m.Refused("AUTH", "CP1", "wrong credentials")]
    assert "PROOF without a CHALLENGE" in texts(w, "auth-refused")[0]
    peer.send(m.Auth("CP1", security.new_nonce()))
    assert "too many failed logins" in peer.take()[0].reason


def test_a_database_that_cannot_read_the_registration_refuses_the_login_without_counting_it(monkeypatch):
    w = World(login_failures=1)
    w.register("CP1")
    monkeypatch.setattr(w.store, "registration", lambda cp_id: defer.fail(RuntimeError("disk gone")))
    peer = w.monitor()
    peer.send(m.Auth("CP1", security.new_nonce()))
    assert peer.take() == [m.Refused("AUTH", "CP1", "Central cannot check credentials now; try again")]
    assert "database error" in texts(w, "auth-refused")[0]
    monkeypatch.undo()
    peer.login()  # not locked out
    assert w.state() is CpState.ACTIVADO


# -- a sealed link -----------------------------------------------------------------------------


def test_after_key_nothing_central_sends_on_the_link_is_in_clear_text_and_a_charge_works():
    cp_id, driver_id = "CP-CLEARTEXT-1", "DRIVER-CLEARTEXT"  # long: not found in base64 by chance
    w = World()
    w.register(cp_id)
    cp = w.monitor(cp_id)
    key = cp.login()
    w.central.stop_cp(cp_id)
    w.central.resume_cp(cp_id)
    cp.send(m.Status(cp_id, "OK"))
    driver = w.driver(driver_id)
    sid = w.charge(cp, driver, cp_id, driver_id)
    for seq in (1, 2):
        cp.send(m.Telem(cp_id, sid, seq, 0.1 * seq, 11, 0.03 * seq, seq))
    cp.send(m.Stop(cp_id, sid, 3, 0.3, 0.09, 3, "target"))
    cp.send(m.Req("LOCAL-DRIVER", cp_id))
    assert driver.take(m.Ticket)[0].kwh == 0.3
    after_key = cp.frames[cp.frames.index(key.to_data()) + 1:]
    assert len(after_key) >= 6  # PARAR, REANUDAR, START, TICKET, AUTHORIZED, START
    assert all(frame.startswith(f"SEC#{cp.key_id}#C#".encode()) for frame in after_key), after_key
    for word in (b"PARAR", b"REANUDAR", b"START", b"TICKET", b"AUTHORIZED", cp_id.encode(), driver_id.encode(),
                 b"LOCAL-DRIVER", sid.encode()):
        assert not any(word in frame for frame in after_key), word
    assert w.state(cp_id) is CpState.SUMINISTRANDO  # the charge asked for at the CP
    assert not rows(w, "refused")


def test_a_plain_message_after_key_is_refused_plainly_and_recorded():
    w = World()
    cp = w.cp()
    cp.take()
    cp.send_plain(m.Status("CP1", "KO"))
    [refused] = cp.take()
    assert refused == m.Refused("STATUS", "CP1", "this link is sealed since KEY: a plain STATUS is refused")
    assert w.state() is CpState.ACTIVADO
    assert texts(w, "refused") == [f"STATUS from {cp.link.peer_name} refused: {refused.reason}"]


@pytest.mark.parametrize("attack", ["replay", "tamper", "reflect", "other-key", "garbage"])
def test_a_sec_that_does_not_open_is_refused_and_recorded_and_changes_nothing(attack):
    w = World()
    cp = w.cp()
    cp.take()
    good = security.seal_message(cp.sealer, m.Status("CP1", "KO"))
    if attack == "replay":
        cp.send_plain(good)
        cp.send_plain(security.seal_message(cp.sealer, m.Status("CP1", "OK")))
        assert w.state() is CpState.ACTIVADO
        bad = good
    elif attack == "tamper":
        box = bytearray(security.unb64(good.box, "box"))
        box[-1] ^= 1
        bad = m.Sec(good.key_id, good.role, good.nonce, security.b64(bytes(box)))
    elif attack == "reflect":
        bad = security.seal_message(security.Sealer("CP1", cp.key_id, cp.key, security.ROLE_CENTRAL), m.Status("CP1", "KO"))
    elif attack == "other-key":
        bad = security.seal_message(security.Sealer("CP1", cp.key_id, security.new_key(), security.ROLE_MONITOR),
                                    m.Status("CP1", "KO"))
    else:
        bad = m.Sec(cp.key_id, "M", "!!", "AAAA")
    cp.take()
    cp.send_plain(bad)
    [refused] = cp.take()
    assert (refused.what, refused.subject) == ("SEC", "CP1") and refused.reason.startswith("not opened: ")
    assert w.state() is CpState.ACTIVADO and w.central.cps["CP1"].machine.engine_ok
    [row] = texts(w, "refused")
    assert row.startswith(f"SEC from {cp.link.peer_name} refused: not opened: ")


def test_a_flood_of_bad_input_is_summarized_not_a_row_each():
    w = World()
    peer = w.monitor(host=INTRUDER)
    for _ in range(500):
        peer.send(m.Status("CP1", "OK"))
    for _ in range(10):
        peer.send(m.Telem("CP1", "S1", 1, 1.0, 11, 0.3, 1))
    assert len(peer.take()) == 510  # each one is refused
    assert [t.split(" refused")[0] for t in texts(w, "refused")] == [
        f"STATUS from {peer.link.peer_name}", f"TELEM from {peer.link.peer_name}"]
    w.clock.advance(60)  # the service sweeps the summaries every few seconds
    summaries = texts(w, "refused")[2:]
    assert summaries == [f"499 more like this within 60 s: STATUS from {peer.link.peer_name} refused: link not authenticated",
                         f"9 more like this within 60 s: TELEM from {peer.link.peer_name} refused: link not authenticated"]
    w.clock.advance(600)
    assert len(rows(w, "refused")) == 4


def test_no_secret_or_key_in_a_log_line_a_row_or_what_the_panel_shows():
    w = World()
    with capturedLogs() as events:
        cp, driver, sid = charging(w)
        w.central.revoke_key("CP1", "the operator")
        w.monitor("CP1", secret="wrong").send(m.Auth("CP1", security.new_nonce()))
    secret, key = secret_of("CP1"), cp.key
    said = " ".join(formatEvent(e) for e in events) + json.dumps(rows(w)) + json.dumps(w.central.cps["CP1"].as_dict())
    for hidden in (secret, security.b64(key), key.hex(), w.store.registrations["CP1"]["verifier"]):
        assert hidden not in said
    assert "<CpKey" not in said and secret not in repr(w.central.cps["CP1"])


# -- lockout after failed logins ----------------------------------------------------------------


def test_five_failed_logins_lock_an_address_out_for_a_minute_without_any_login_work():
    w = World()
    w.register("CP1")
    lookups = []
    registration = w.store.registration
    w.store.registration = lambda cp_id: lookups.append(cp_id) or registration(cp_id)
    guesser = w.monitor(host=INTRUDER)
    for _ in range(5):
        w.clock.advance(5)
        guesser.send(m.Auth("CP1", security.new_nonce()))
        guesser.send(bad_proof())
    assert len(lookups) == 5
    assert [r.reason for r in guesser.take(m.Refused)] == ["wrong credentials"] * 5
    before = len(rows(w))
    for _ in range(20):
        guesser.send(m.Auth("CP1", security.new_nonce()))
    answers = guesser.take()
    assert answers[0] == m.Refused("AUTH", "CP1", "too many failed logins from this address; try again in 60 s")
    assert len(answers) == 20 and not any(isinstance(a, m.Challenge) for a in answers)
    assert len(lookups) == 5  # no registration read, no challenge
    [lockout] = texts(w, "auth-refused")[-1:]
    assert lockout == f"5 failed logins from {INTRUDER} within 60 s: its logins are refused for 60 s (without a row each)"
    assert len(rows(w)) == before  # recorded once, when the lockout began
    w.clock.advance(30)
    guesser.send(m.Auth("CP1", security.new_nonce()))
    assert guesser.take()[0].reason.endswith("try again in 30 s")
    honest = w.monitor()  # another address is not locked out
    honest.login()
    assert w.state() is CpState.ACTIVADO
    w.clock.advance(30)
    again = w.monitor("CP1", host=INTRUDER)
    again.login()  # the minute is over
    assert w.central.cps["CP1"].link.peer_name == again.link.peer_name


def test_failures_spread_beyond_the_window_do_not_lock_out():
    w = World()
    w.register("CP1")
    guesser = w.monitor(host=INTRUDER)
    for _ in range(12):
        guesser.send(m.Auth("CP1", security.new_nonce()))
        guesser.send(bad_proof())
        w.clock.advance(16)
    assert {r.reason for r in guesser.take(m.Refused)} == {"wrong credentials"}


def test_logins_left_half_way_count_as_failures():
    w = World(login_failures=3)
    w.register("CP1")
    prober = w.monitor(host=INTRUDER)
    prober.send(m.Auth("CP1", security.new_nonce()))
    prober.send(m.Auth("CP1", security.new_nonce()))  # the first one abandoned: 1
    assert prober.take(m.Refused) == [m.Refused("AUTH", "CP1", "wrong credentials")]
    assert "a new AUTH before the PROOF of the last one" in texts(w, "auth-refused")[0]
    prober.lose()  # with a login under way: 2
    other = w.monitor(host=INTRUDER)
    other.send(m.Auth("CP1", security.new_nonce()))
    other.lose()  # 3: locked out
    late = w.monitor(host=INTRUDER)
    late.send(m.Auth("CP1", security.new_nonce()))
    assert "too many failed logins" in late.take()[0].reason


def test_a_logged_in_cp_logs_in_again_while_its_address_is_locked_out():
    w = World(key_rotation=100)
    cp = w.cp()
    guesser = w.monitor("CP1", host="127.0.0.1")
    for _ in range(5):
        guesser.send(m.Auth("CP1", security.new_nonce()))
        guesser.send(bad_proof())
    w.alive(cp, 100)
    assert cp.take(m.Reauth) == [m.Reauth("CP1")]
    old = cp.key_id
    cp.login()  # sealed: it proved itself already
    assert cp.key_id != old and w.state() is CpState.ACTIVADO


# -- keys: rotation -------------------------------------------------------------------------------


def test_rotation_sends_reauth_and_the_monitor_logs_in_again_sealed_on_the_same_link():
    w = World(key_rotation=100)
    cp = w.cp()
    first = cp.key_id
    w.alive(cp, 99)
    assert cp.take(m.Reauth) == []
    w.alive(cp, 1)
    assert cp.take(m.Reauth) == [m.Reauth("CP1")]
    mark = len(cp.frames)
    key = cp.login()
    assert key.state == "ACTIVADO" and cp.key_id != first
    login_frames = cp.frames[mark:]
    assert login_frames and all(frame.startswith(f"SEC#{first}#C#".encode()) for frame in login_frames)
    assert w.central.cps["CP1"].as_dict()["key_id"] == cp.key_id
    assert w.central.cps["CP1"].link.peer_name == cp.link.peer_name
    w.alive(cp, 120)  # and again 100 s later
    assert cp.take(m.Reauth) == [m.Reauth("CP1")]
    assert not rows(w, "refused") and not rows(w, "key")


def test_after_a_rotation_the_link_takes_the_old_key_until_the_monitor_uses_the_new_one():
    w = World(key_rotation=100)
    cp = w.cp()
    w.alive(cp, 100)
    old_sealer = cp.sealer
    cp.login()
    cp.take()
    cp.send_plain(security.seal_message(old_sealer, m.Status("CP1", "OK")))  # sent before it had the KEY
    assert cp.take() == []
    cp.send(m.Status("CP1", "OK"))
    cp.send_plain(security.seal_message(old_sealer, m.Status("CP1", "KO")))
    [refused] = cp.take()
    assert refused.what == "SEC" and "not the current key" in refused.reason
    assert w.central.cps["CP1"].machine.engine_ok


def test_a_cp_that_does_not_answer_reauth_loses_its_key_and_its_link():
    w = World(key_rotation=100)
    cp = w.cp()
    w.alive(cp, 100)
    assert cp.take(m.Reauth)
    w.alive(cp, int(REAUTH_TIMEOUT) - 1)
    assert w.state() is CpState.ACTIVADO
    w.alive(cp, 1)
    assert w.state() is CpState.DESCONECTADO and cp.transport.disconnecting
    assert w.central.cps["CP1"].as_dict()["key"] == "none"
    assert "did not log in again within 30 s of REAUTH" in texts(w, "key")[0]


def test_a_key_with_no_link_to_rotate_it_on_expires():
    w = World(key_rotation=100)
    cp = w.cp()
    cp.lose()
    w.clock.advance(100)
    assert w.central.cps["CP1"].key is None and w.central.cps["CP1"].as_dict()["key"] == "none"
    assert "its key expired" in texts(w, "key")[0]


def test_a_cp_deregistered_meanwhile_fails_its_rotation_and_loses_its_key():
    w = World(key_rotation=100)
    cp, driver, sid = charging(w)
    w.store.deregister_cp("CP1")
    w.alive(cp, 100)
    cp.take(m.Reauth)
    with pytest.raises(AssertionError, match="got no KEY"):
        cp.login()
    assert w.state() is CpState.DESCONECTADO and cp.transport.disconnecting
    assert w.central.cps["CP1"].key is None
    assert driver.take(m.Ticket)[0].session_id == sid


def test_without_rotation_no_reauth_ever_comes():
    w = World(key_rotation=0)
    cp = w.cp()
    w.alive(cp, 10000)
    assert cp.take(m.Reauth) == [] and w.central.cps["CP1"].key.key_id == cp.key_id


# -- keys: revocation ------------------------------------------------------------------------------


def test_revoking_a_key_puts_the_cp_out_of_service_at_once():
    w = World()
    cp, driver, sid = charging(w)
    cp.send(m.Telem("CP1", sid, 1, 0.2, 11, 0.06, 60))
    cp.take()
    driver.take()
    cp.auto_ack = False  # Central closes the link once REVOKED is acknowledged
    ok, text = w.central.revoke_key("CP1", "the operator at the panel")
    assert ok and text == "CP CP1's key revoked: it is out of service until it logs in again"
    # At once, on the clock that never moved:
    one = w.central.cps["CP1"].as_dict()
    assert (one["state"], one["key"], one["key_id"]) == ("DESCONECTADO", "revoked", None)
    assert one["key_revoked_by"] == "the operator at the panel"
    assert w.central.cps["CP1"].link is None
    notice, ticket = driver.take()
    assert "out of service" in notice.text and (ticket.session_id, ticket.reason) == (sid, "key revoked")
    assert w.store.sessions[sid]["end_reason"] == "key revoked"
    assert texts(w, "revoke") == ["CP CP1 out of service: its key was revoked by the operator at the panel"]
    # REVOKED is the last message under that key, then the link closes.
    assert cp.take() == [m.Revoked("CP1", "its key was revoked by the operator at the panel")]
    assert cp.frames[-1].startswith(f"SEC#{cp.key_id}#C#".encode())
    # Nothing under the old key counts any more.
    cp.send(m.Status("CP1", "OK"))
    assert w.state() is CpState.DESCONECTADO
    assert texts(w, "refused") == [f"SEC from {cp.link.peer_name} refused: its key was revoked by the operator at the panel"]
    assert not cp.transport.disconnecting
    cp.link.dataReceived(ACK_BYTE)
    assert cp.transport.disconnecting
    driver.send(m.Req("D1", "CP1"))
    assert driver.take(m.Denied)


def test_records_under_a_revoked_key_are_refused_even_within_a_rotation_grace():
    w, bus = kafka_world()
    w.central.trust.key_rotation = 100
    cp = w.cp()
    w.alive(cp, 100)
    old = cp.record(m.Avr("CP1", "sealed under the key before"))
    cp.login()
    w.central.revoke_key("CP1", "the operator")
    bus.feed("cp.events", "CP1", old)
    bus.feed("cp.events", "CP1", cp.record(m.Rcv("CP1")))
    assert w.central.cps["CP1"].machine.engine_ok
    assert len(texts(w, "kafka-refused")) == 1  # two alike: one row, summarized later
    assert "(revoked)" in texts(w, "kafka-refused")[0]


def test_a_new_login_brings_a_revoked_cp_back():
    w = World()
    w.cp()
    w.central.revoke_key("CP1", "the operator")
    again = w.monitor()
    assert again.login().state == "ACTIVADO"
    one = w.central.cps["CP1"].as_dict()
    assert (one["state"], one["key"], one["key_revoked_by"]) == ("ACTIVADO", "active", None)


def test_what_revoke_answers_for_an_unknown_cp_one_without_a_key_and_one_already_revoked():
    w = World()
    assert w.central.revoke_key("CP9", "x") == (False, "unknown CP CP9")
    w.cp()
    assert w.central.revoke_key("CP1", "x")[0]
    assert w.central.revoke_key("CP1", "x") == (True, "CP CP1's key is already revoked")
    store = w.store
    w2 = World(store)  # a restarted Central holds no key
    assert w2.central.revoke_key("CP1", "x") == (False, "CP CP1 has no key to revoke: it has not logged in")


# -- Kafka records ------------------------------------------------------------------------------


@pytest.mark.parametrize("role", [security.ROLE_ENGINE, security.ROLE_MONITOR])
def test_a_record_sealed_by_the_engine_or_the_monitor_is_taken(role):
    w, bus = kafka_world()
    cp = w.cp()
    bus.feed("cp.events", "CP1", cp.record(m.Avr("CP1", "engine KO"), role=role))
    assert w.state() is CpState.AVERIADO
    assert not rows(w, "kafka-refused")


def test_records_that_are_plain_reflected_replayed_or_for_another_cp_are_refused_and_recorded():
    w, bus = kafka_world()
    cp1, cp2 = w.cp("CP1"), w.cp("CP2")
    replayed = cp1.record(m.Avr("CP1", "once"))
    bus.feed("cp.events", "CP1", replayed)
    bus.feed("cp.events", "CP1", cp1.record(m.Rcv("CP1")))
    assert w.state("CP1") is CpState.ACTIVADO
    bad = [
        ("plain", m.Avr("CP1", "plain")),
        ("replay", replayed),
        ("reflect", security.seal_message(security.Sealer("CP1", cp1.key_id, cp1.key, security.ROLE_CENTRAL),
                                          m.Avr("CP1", "reflected"))),
        ("another CP's key", cp2.record(m.Avr("CP1", "CP2's key"))),
        ("unknown", cp1.record(m.Avr("CP1", "for nobody"))),
    ]
    for what, record in bad:
        bus.feed("cp.events", "CP7" if what == "unknown" else "CP1", record)
    assert w.state("CP1") is CpState.ACTIVADO and w.state("CP2") is CpState.ACTIVADO
    refused = texts(w, "kafka-refused")
    assert [t.split(": ", 2)[2].split(" ")[0:2] for t in refused] == [
        ["a", "plain"], ["not", "opened:"], ["sealed", "under"], ["unknown", "CP"]]
    assert "replayed or reordered" in refused[1]


def test_many_plain_records_are_one_row_and_one_summary():
    w, bus = kafka_world()
    w.cp()
    for seq in range(1, 201):
        bus.feed("cp.telemetry", "CP1", m.Telem("CP1", "S1", seq, 0.1, 11, 0.03, seq))
    assert len(texts(w, "kafka-refused")) == 1
    w.clock.advance(60)
    assert texts(w, "kafka-refused")[1].startswith("199 more like this within 60 s: cp.telemetry: ")


def test_the_key_a_rotation_replaced_is_good_for_records_for_a_grace_then_refused():
    w, bus = kafka_world()
    w.central.trust.key_rotation = 100
    cp = w.cp()
    w.alive(cp, 100)
    engine_before = cp.engine  # the Engine gets the new key from its Monitor a little later
    cp.login()
    bus.feed("cp.events", "CP1", security.seal_message(engine_before, m.Avr("CP1", "under the old key")))
    assert w.state() is CpState.AVERIADO
    w.alive(cp, int(KEY_GRACE))  # its STATUS OK: ACTIVADO again
    bus.feed("cp.events", "CP1", security.seal_message(engine_before, m.Avr("CP1", "too late")))
    assert w.state() is CpState.ACTIVADO
    assert "not the CP's key" in texts(w, "kafka-refused")[0]
    bus.feed("cp.events", "CP1", cp.record(m.Avr("CP1", "under the new key")))
    assert w.state() is CpState.AVERIADO


# -- the liveness interval --------------------------------------------------------------------------


def test_key_tells_the_liveness_interval_and_the_timeout_is_three_times_it_by_default():
    w = World(liveness=None, liveness_interval=2.0)
    cp = w.monitor()
    w.register("CP1")
    assert cp.login().liveness == 2.0
    assert w.central.liveness_timeout == 6.0
    w.clock.advance(5.9)
    assert w.state() is CpState.ACTIVADO
    w.clock.advance(0.6)
    assert w.state() is CpState.DESCONECTADO


def tap_options(*args):
    options = Options()
    options.parseOptions(["--http", "none", "--db", "sqlite:unused.db", *args])
    return options


@pytest.mark.parametrize("args, interval, timeout", [([], 1.0, 3.0), (["--liveness-interval", "2"], 2.0, 6.0),
                                                     (["--liveness-interval", "2", "--liveness-timeout", "5"], 2.0, 5.0)])
def test_the_liveness_options(args, interval, timeout):
    central = wire(tap_options(*args), MemoryStore(), MemoryReactorClock()).central
    assert (central.liveness_interval, central.liveness_timeout) == (interval, timeout)


def test_the_key_and_lockout_options():
    trust = wire(tap_options("--key-rotation", "600", "--login-failures", "3", "--login-window", "30"),
                 MemoryStore(), MemoryReactorClock()).central.trust
    assert (trust.key_rotation, trust.throttle.max_failures, trust.throttle.window) == (600, 3, 30)
    defaults = wire(tap_options(), MemoryStore(), MemoryReactorClock()).central.trust
    assert (defaults.key_rotation, defaults.throttle.max_failures, defaults.throttle.window) == (3600, 5, 60)
    assert wire(tap_options("--login-failures", "0"), MemoryStore(), MemoryReactorClock()).central.trust.throttle is None


@pytest.mark.parametrize("args, message", [(["--key-rotation", "5"], "--key-rotation must be 0"),
                                           (["--liveness-interval", "0"], "--liveness-interval must be at least"),
                                           (["--login-failures", "x"], "--login-failures must be a number")])
def test_bad_trust_options_are_one_clear_line(args, message):
    from twisted.python import usage

    with pytest.raises(usage.UsageError, match=message):
        tap_options(*args)
