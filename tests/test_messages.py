"""The pure message codec: seed formats, refusals, round trips."""

import dataclasses

import pytest
from hypothesis import given, strategies as st

from evnet.protocols import messages as m
from evnet.protocols.messages import MessageError, decode


def test_seed_formats():
    assert m.Req("D1", "CP1").to_data() == b"REQ#D1#CP1#0.000"
    assert decode(b"REQ#D1#CP1") == m.Req("D1", "CP1")
    assert m.Avr("CP1", "engine KO").to_data() == b"AVR#CP1#engine KO"
    assert m.Hck().to_data() == b"HCK"
    assert decode(b"HCK_RESP#OK") == m.HckResp("OK")
    assert decode(b"HCK_RESP#KO") == m.HckResp("KO")
    assert decode(b"TICKET#s-1#12.500#4.38#90") == m.Ticket("s-1", 12.5, 4.38, 90)


def test_decimals_are_written_with_a_dot_and_fixed_places():
    assert m.Telem("CP1", "s", 3, 1.23456, 7.2, 0.4321, 12).to_data() == b"TELEM#CP1#s#3#1.235#7.20#0.43#12"


def test_utf8_text_round_trips():
    msg = m.Reg("CP-Ñ1", "Alacant — Plaça dels Estels", 0.42)
    assert decode(msg.to_data()) == msg


@pytest.mark.parametrize(
    "value",
    ["a#b", "line\nbreak", "nul\x00", "\x1f"],
)
def test_encoder_refuses_bad_text_naming_the_field(value):
    with pytest.raises(MessageError, match="REG: field 'location'"):
        m.Reg("CP1", value, 0.3)


@pytest.mark.parametrize(
    "data, error",
    [
        (b"NOPE#1", "unknown message code 'NOPE'"),
        (b"", "unknown message code ''"),
        (b"REG#CP1", "REG: expected 3 fields, got 1"),
        (b"REG#CP1#x#0.3#extra", "REG: expected 3 fields, got 4"),
        (b"REG#CP1#x#cheap", "REG: field 'price' is not a decimal number"),
        (b"REG#CP1#x#1e5", "REG: field 'price' is not a decimal number"),
        (b"TELEM#CP1#s#one#1#1#1#1", "TELEM: field 'seq' is not an integer"),
        (b"HCK_RESP#MAYBE", "HCK_RESP: field 'result' must be one of OK, KO"),
        (b"REQ#\xff#CP1", "not UTF-8"),
        (b"AVAILABLE#2#CP1#x#0.3", r"AVAILABLE: count 2 needs 6 fields \(\+2 for part#parts\), got 3"),
        (b"AVAILABLE", "AVAILABLE: the first field must be the count"),
    ],
)
def test_decoder_says_what_is_wrong(data, error):
    with pytest.raises(MessageError, match=error):
        decode(data)


def test_optional_trailing_fields():
    assert decode(b"TICKET#s#1.000#0.30#60#CP1#D1#target") == m.Ticket("s", 1.0, 0.3, 60, "CP1", "D1", "target")
    assert decode(b"REQ#D1#CP1#5.5").target_kwh == 5.5


def test_available_round_trip():
    msg = m.Available([m.CpInfo("CP1", "Centro", 0.3), m.CpInfo("CP2", "Playa", 0.35)])
    assert msg.to_data() == b"AVAILABLE#2#CP1#Centro#0.300#CP2#Playa#0.350"
    assert decode(msg.to_data()) == msg
    assert decode(b"AVAILABLE#0") == m.Available()


def test_every_code_of_the_contract_exists():
    for code in ["REG", "AUTH", "HCK", "HCK_RESP", "AVR", "RCV", "START", "STOP", "STATUS", "TELEM",
                 "TICKET", "REQ", "AUTHORIZED", "DENIED", "PARAR", "REANUDAR"]:
        assert code in m.REGISTRY


text = st.text(st.characters(blacklist_characters="#", min_codepoint=0x20, blacklist_categories=("Cs",)), max_size=40)
numbers = st.floats(min_value=-1e9, max_value=1e9, allow_nan=False)
ints = st.integers(-(10**12), 10**12)


def strategy_for(cls):
    if cls is m.Available:
        return st.lists(st.builds(m.CpInfo, text, text, numbers), max_size=5).map(m.Available)
    kinds = {"str": text, "int": ints, "float": numbers}
    kwargs = {f.name: kinds[f.type] for f in dataclasses.fields(cls)}
    if cls is m.Status:
        kwargs["engine"] = st.sampled_from(["OK", "KO"])
    if cls is m.HckResp:
        kwargs["result"] = st.sampled_from(["OK", "KO"])
    return st.builds(cls, **kwargs)


all_messages = st.one_of(*[strategy_for(cls) for cls in m.REGISTRY.values()])


@given(all_messages)
def test_every_message_round_trips(msg):
    assert decode(msg.to_data()) == msg
    assert decode(msg.to_data()).to_data() == msg.to_data()


@given(st.binary(max_size=200))
def test_decoding_garbage_raises_only_message_error(data):
    try:
        decode(data)
    except MessageError:
        pass


def test_a_long_list_of_cps_splits_into_numbered_parts_that_each_fit():
    cps = [m.CpInfo(f"CP{i:04d}", "Alicante, Calle Mayor ñ", 0.35) for i in range(600)]
    parts = m.split_available(cps, 4096)
    assert len(parts) > 1
    assert [p.part for p in parts] == list(range(1, len(parts) + 1))
    assert {p.parts for p in parts} == {len(parts)}
    assert all(len(p.to_data()) <= 4096 for p in parts)
    assert [cp for p in parts for cp in decode(p.to_data()).cps] == [
        m.CpInfo(c.cp_id, c.location, c.price) for c in cps
    ]
    assert parts[-1].last and not parts[0].last


def test_a_short_list_is_one_message_without_part_fields():
    (only,) = m.split_available([m.CpInfo("CP1", "Centro", 0.3)], 4096)
    assert only.to_data() == b"AVAILABLE#1#CP1#Centro#0.300"
    assert m.split_available([], 4096) == [m.Available()]


@pytest.mark.parametrize("data", [b"AVAILABLE#0#2#1", b"AVAILABLE#0#0#0", b"AVAILABLE#0#x#1"])
def test_bad_part_numbers_are_refused(data):
    with pytest.raises(MessageError):
        decode(data)


def test_an_opt_field_is_left_out_while_it_holds_its_default():
    assert m.Refused("AUTH", "D1", "wrong credentials").to_data() == b"REFUSED#AUTH#D1#wrong credentials"
    with_ref = m.Refused("AUTH", "D1", "wrong credentials", "bm9uY2U")
    assert with_ref.to_data() == b"REFUSED#AUTH#D1#wrong credentials#bm9uY2U"
    assert m.decode(with_ref.to_data()) == with_ref
    assert m.decode(b"REFUSED#AUTH#D1#wrong credentials").ref == ""
    assert m.Challenge("CP01", "c2FsdA", 1024, "bm9uY2U").to_data() == b"CHALLENGE#CP01#c2FsdA#1024#bm9uY2U"
