"""The security codecs: credentials, login, key wrap, sealed messages (evnet.protocols.security)."""

import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evnet.protocols import messages as m
from evnet.protocols import security as s

DOC = (Path(__file__).parent.parent / "docs" / "protocol.md").read_text(encoding="utf-8")
SECRET = "Zm9yIHRoZSB3b3JrZWQgZXhhbXBsZSBvbmx5"
FAST = 2**4  # scrypt cost for tests that are not about the cost


def login(secret="right", stored="right", cp_id="CP01", n=FAST):
    verifier = s.make_verifier(stored, n=n)
    client = s.ClientLogin(cp_id, secret)
    server = s.ServerLogin(m.decode(client.start().to_data()), verifier, b"decoy")
    proof = client.answer(m.decode(server.challenge().to_data()))
    return client, server, m.decode(proof.to_data())


def doc_line(prefix):
    match = re.search(rf"^{re.escape(prefix)}\s+(\S+)$", DOC, re.M)
    assert match, f"docs/protocol.md has no line starting {prefix!r}"
    return match.group(1)


def test_the_worked_example_of_the_protocol_doc():
    verifier = s.make_verifier(SECRET, salt=bytes(range(16)))
    assert doc_line("verifier") == verifier.to_text()
    client = s.ClientLogin("CP01", SECRET, nonce="Y2xpZW50LW5vbmNlLTAx")
    assert f"M → C     {client.start().to_data().decode()}" in DOC
    server = s.ServerLogin(client.start(), s.Verifier.from_text(doc_line("verifier")), b"x", nonce="c2VydmVyLW5vbmNlLTAx")
    challenge = server.challenge()
    assert f"C → M     {challenge.to_data().decode()}" in DOC
    proof = client.answer(challenge)
    assert f"M → C     {proof.to_data().decode()}" in DOC
    key = bytes(range(32, 64))
    answer, key_id, _ = server.check(proof, "ACTIVADO", 1.0, key=key, key_id="0a1b2c3d", wrap_nonce=bytes(12))
    assert f"C → M     {answer.to_data().decode()}" in DOC
    assert client.accept(answer) == ("0a1b2c3d", key)
    sealer = s.Sealer("CP01", key_id, key, s.ROLE_MONITOR, epoch=bytes.fromhex("a1b2c3d4"))
    sealed = s.seal_message(sealer, m.Status("CP01", "OK"))
    assert f"M → C     {sealed.to_data().decode()}" in DOC
    opener = s.Opener("CP01", key_id, key, (s.ROLE_MONITOR,))
    assert s.open_message(opener, m.decode(sealed.to_data())) == m.Status("CP01", "OK")


def test_the_stored_verifier_holds_neither_the_secret_nor_a_proof():
    verifier = s.make_verifier("correct horse", n=FAST)
    text = verifier.to_text()
    assert "correct horse" not in text and s.b64(b"correct horse") not in text
    assert s.Verifier.from_text(text) == verifier
    # The stored key cannot stand in for ClientKey: a proof built from it fails.
    client, server, _ = login(n=FAST)
    forged = m.Proof("CP01", s.b64(verifier.stored_key))
    with pytest.raises(s.SecurityError, match="wrong credentials"):
        server.check(forged, "ACTIVADO")


def test_a_right_secret_logs_in_and_both_sides_hold_the_same_key():
    client, server, proof = login()
    answer, key_id, key = server.check(proof, "ACTIVADO", 2.0)
    assert client.accept(m.decode(answer.to_data())) == (key_id, key)
    assert len(key) == 32 and re.fullmatch("[0-9a-f]{8}", key_id)
    assert answer.liveness == 2.0 and answer.state == "ACTIVADO"
    assert s.b64(key) not in answer.to_data().decode()


def test_a_wrong_secret_is_refused():
    _, server, proof = login(secret="wrong")
    with pytest.raises(s.SecurityError, match="wrong credentials"):
        server.check(proof, "ACTIVADO")


def test_an_unknown_id_looks_like_a_wrong_secret_with_a_stable_decoy_salt():
    client = s.ClientLogin("NOPE", "whatever")
    first = s.ServerLogin(client.start(), None, b"central-secret")
    again = s.ServerLogin(s.ClientLogin("NOPE", "x").start(), None, b"central-secret")
    other = s.ServerLogin(s.ClientLogin("ALSO-NOPE", "x").start(), None, b"central-secret")
    assert first.challenge().salt == again.challenge().salt != other.challenge().salt
    assert first.challenge().cost == s.SCRYPT_N  # the same cost as a real verifier
    with pytest.raises(s.SecurityError, match="wrong credentials"):
        first.check(m.Proof("NOPE", s.b64(bytes(32))), "ACTIVADO")


def test_a_proof_is_good_for_one_login_only():
    client, server, proof = login()
    server.check(proof, "ACTIVADO")
    # A captured proof replayed against a new login (fresh server nonce) fails.
    replay_server = s.ServerLogin(client.start(), server.verifier, b"decoy")
    replay_server.challenge()
    with pytest.raises(s.SecurityError):
        replay_server.check(proof, "ACTIVADO")


def test_a_fake_central_without_the_verifier_is_found_out_by_the_cp():
    client, server, proof = login()
    answer, _, _ = server.check(proof, "ACTIVADO")
    forged = m.Key(answer.cp_id, answer.state, answer.key_id, answer.wrapped, s.b64(bytes(32)))
    with pytest.raises(s.SecurityError, match="signature"):
        client.accept(forged)


def test_a_wrapped_key_opens_only_for_its_login():
    client, server, proof = login()
    answer, _, _ = server.check(proof, "ACTIVADO")
    other_client, other_server, other_proof = login()
    other_answer, _, _ = other_server.check(other_proof, "ACTIVADO")
    spliced = m.Key(answer.cp_id, answer.state, answer.key_id, other_answer.wrapped, answer.signature)
    with pytest.raises(s.SecurityError, match="does not open"):
        client.accept(spliced)


def test_a_hostile_challenge_cost_is_refused_before_any_work():
    client = s.ClientLogin("CP01", "x")
    client.start()
    with pytest.raises(s.SecurityError, match="cost"):
        client.answer(m.Challenge("CP01", s.b64(bytes(16)), 2**30, "bm9uY2U", client.nonce))


def test_only_the_first_challenge_of_this_login_is_answered():
    client = s.ClientLogin("CP01", SECRET)
    server = s.ServerLogin(client.start(), s.make_verifier(SECRET, n=1024), b"central-secret")
    other = s.ServerLogin(s.ClientLogin("CP01", "x").start(), None, b"central-secret")  # another login of the id
    with pytest.raises(s.SecurityError, match="another login"):
        client.answer(m.decode(other.challenge().to_data()))
    stale = m.Challenge("CP01", s.b64(bytes(16)), 1024, "bm9uY2U")  # no login named: an older Central's, or forged
    with pytest.raises(s.SecurityError, match="another login"):
        client.answer(stale)
    proof = client.answer(m.decode(server.challenge().to_data()))
    with pytest.raises(s.SecurityError, match="second CHALLENGE"):
        client.answer(server.challenge())
    server.check(proof, "ACTIVADO")  # the first answer stands


def test_a_refusal_is_this_logins_only_when_it_names_its_auth_or_its_proof():
    client = s.ClientLogin("D1", SECRET)
    auth = client.start()
    server = s.ServerLogin(auth, s.make_verifier(SECRET, n=1024), b"central-secret")
    assert client.refuses(m.Refused("AUTH", "D1", "locked out", auth.nonce))
    assert not client.refuses(m.Refused("AUTH", "D1", "wrong credentials"))  # names no login
    assert not client.refuses(m.Refused("AUTH", "D1", "wrong credentials", "c29tZW9uZS1lbHNl"))
    proof = client.answer(server.challenge())
    assert client.refuses(m.Refused("AUTH", "D1", "wrong credentials", proof.proof))
    assert not client.refuses(m.Refused("AUTH", "D1", "wrong credentials", s.b64(bytes(32))))


def pair(cp_id="CP01", role=s.ROLE_MONITOR, accept=(s.ROLE_MONITOR, s.ROLE_ENGINE)):
    key = s.new_key()
    return s.Sealer(cp_id, "0a1b2c3d", key, role), s.Opener(cp_id, "0a1b2c3d", key, accept), key


def test_sealed_messages_hide_the_text_and_open_in_order():
    sealer, opener, _ = pair()
    msgs = [m.Telem("CP01", "Sabc", i, 0.5 * i, 11.0, 0.1 * i, i) for i in range(1, 6)]
    sealed = [s.seal_message(sealer, msg) for msg in msgs]
    for msg, sec in zip(msgs, sealed):
        wire = sec.to_data()
        assert b"TELEM" not in wire and b"Sabc" not in wire and b"CP01" not in wire
        assert s.open_message(opener, m.decode(wire)) == msg


@pytest.mark.parametrize("attack", ["replay", "reorder", "tamper", "other-cp", "other-key", "reflect"])
def test_what_a_receiver_refuses(attack):
    sealer, opener, key = pair()
    first = s.seal_message(sealer, m.Status("CP01", "OK"))
    second = s.seal_message(sealer, m.Status("CP01", "KO"))
    if attack == "replay":
        s.open_message(opener, first)
        bad = first
    elif attack == "reorder":
        s.open_message(opener, second)
        bad = first
    elif attack == "tamper":
        box = bytearray(s.unb64(first.box, "box"))
        box[0] ^= 1
        bad = m.Sec(first.key_id, first.role, first.nonce, s.b64(bytes(box)))
    elif attack == "other-cp":
        opener = s.Opener("CP02", "0a1b2c3d", key, (s.ROLE_MONITOR,))
        bad = first
    elif attack == "other-key":
        opener = s.Opener("CP01", "0a1b2c3d", s.new_key(), (s.ROLE_MONITOR,))
        bad = first
    else:  # Central's own message sent back to Central
        central = s.Sealer("CP01", "0a1b2c3d", key, s.ROLE_CENTRAL)
        bad = s.seal_message(central, m.Parar("CP01"))
    with pytest.raises(s.SecurityError):
        s.open_message(opener, bad)
    if attack not in ("other-cp", "other-key"):  # a refusal does not stop the next good message
        assert s.open_message(opener, s.seal_message(sealer, m.Status("CP01", "OK"))) == m.Status("CP01", "OK")


def test_a_revoked_or_rotated_key_id_is_refused():
    sealer, _, key = pair()
    opener = s.Opener("CP01", "99999999", key, (s.ROLE_MONITOR,))
    with pytest.raises(s.SecurityError, match="not the current key"):
        s.open_message(opener, s.seal_message(sealer, m.Status("CP01", "OK")))


def test_two_senders_under_one_key_have_separate_counters():
    key = s.new_key()
    monitor = s.Sealer("CP01", "0a1b2c3d", key, s.ROLE_MONITOR)
    engine = s.Sealer("CP01", "0a1b2c3d", key, s.ROLE_ENGINE)
    restarted_engine = s.Sealer("CP01", "0a1b2c3d", key, s.ROLE_ENGINE)
    opener = s.Opener("CP01", "0a1b2c3d", key, (s.ROLE_MONITOR, s.ROLE_ENGINE))
    for sealer in (monitor, engine, monitor, restarted_engine, engine):
        s.open_message(opener, s.seal_message(sealer, m.Status("CP01", "OK")))


@pytest.mark.parametrize(
    "fields",
    [("0a1b2c3", "M", "AAAAAAAAAAAAAAAA", "AAAAAAAAAAAAAAAAAAAAAA"),
     ("0a1b2c3d", "X", "AAAAAAAAAAAAAAAA", "AAAAAAAAAAAAAAAAAAAAAA"),
     ("0a1b2c3d", "M", "AAAA", "AAAAAAAAAAAAAAAAAAAAAA"),
     ("0a1b2c3d", "M", "AAAAAAAAAAAAAAAA", "AAAA"),
     ("0a1b2c3d", "M", "AAAAAAAAAAAAAA!A", "AAAAAAAAAAAAAAAAAAAAAA")],
)
def test_malformed_sealed_fields_are_refused_with_a_reason(fields):
    with pytest.raises(s.SecurityError):
        s.parse_sealed(*fields)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200), st.binary(max_size=40))
def test_garbage_never_opens_and_never_crashes(box, nonce):
    _, opener, _ = pair()
    try:
        s.open_message(opener, m.Sec("0a1b2c3d", "M", s.b64(nonce), s.b64(box)))
    except s.SecurityError:
        pass
    else:  # pragma: no cover
        raise AssertionError("garbage opened")


def test_inner_capacity_is_what_fits_in_a_frame():
    sealer, _, _ = pair()
    capacity = s.inner_capacity(4096)
    sealed = sealer.seal(b"x" * capacity)
    wire = m.Sec(sealed.key_id, sealed.role, s.b64(sealed.nonce), s.b64(sealed.box)).to_data()
    assert len(wire) <= 4096
    assert len(m.Sec(sealed.key_id, sealed.role, s.b64(sealed.nonce), s.b64(sealer.seal(b"x" * (capacity + 4)).box)).to_data()) > 4096


# -- check_secret: a secret presented in clear (OCPP's HTTP Basic auth) ------------


def test_check_secret_accepts_the_secret_of_the_verifier_only():
    verifier = s.make_verifier("correct horse", n=FAST)
    assert s.check_secret(verifier, "correct horse")
    assert not s.check_secret(verifier, "correct horsE")
    assert not s.check_secret(verifier, "")
    # The same secret under another salt is another verifier.
    assert not s.check_secret(s.make_verifier("other", n=FAST), "correct horse")


def test_check_secret_works_from_the_stored_text_and_with_the_default_cost():
    verifier = s.Verifier.from_text(s.make_verifier(SECRET, salt=bytes(range(16))).to_text())
    assert s.check_secret(verifier, SECRET)
    assert not s.check_secret(verifier, SECRET[:-1])


def test_check_secret_refuses_a_stored_cost_it_would_not_derive_with():
    verifier = s.make_verifier("x", n=FAST)
    hostile = s.Verifier(verifier.salt, verifier.stored_key, verifier.server_key, 3)  # not a power of two
    assert not s.check_secret(hostile, "x")
