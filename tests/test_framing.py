"""The pure frame codec: exact bytes, every split, garbage, oversize."""

from hypothesis import given, strategies as st

from evnet.protocols import framing
from evnet.protocols.framing import Event, FrameDecoder, Kind, encode_frame, lrc


def reference_lrc(data: bytes) -> int:
    value = framing.ETX
    for b in data:
        value ^= b
    return value


def test_worked_example_from_the_protocol_doc():
    # docs/protocol.md: DATA "HCK" -> 02 48 43 4B 03 43
    assert encode_frame(b"HCK") == bytes([0x02, 0x48, 0x43, 0x4B, 0x03, 0x43])
    assert lrc(b"HCK") == 0x48 ^ 0x43 ^ 0x4B ^ 0x03


@given(st.binary(max_size=5000))
def test_lrc_matches_the_bytewise_definition(data):
    assert lrc(data) == reference_lrc(data)


def test_empty_data_lrc_is_etx():
    assert lrc(b"") == framing.ETX


def frame_events(*datas):
    return [Event(Kind.FRAME, d) for d in datas]


def test_two_frames_in_one_chunk():
    d = FrameDecoder()
    assert d.feed(encode_frame(b"A#1") + encode_frame(b"B#2")) == frame_events(b"A#1", b"B#2")


def test_every_byte_boundary_split():
    stream = b"\x05" + encode_frame(b"TELEM#CP1#s#1#0.100#7.00#0.04#1") + b"\x06" + encode_frame(b"HCK") + b"\x04"
    whole = FrameDecoder().feed(stream)
    assert [e.kind for e in whole] == [Kind.CONTROL, Kind.FRAME, Kind.CONTROL, Kind.FRAME, Kind.CONTROL]
    for cut in range(len(stream) + 1):
        d = FrameDecoder()
        assert d.feed(stream[:cut]) + d.feed(stream[cut:]) == whole, cut
    d = FrameDecoder()
    one_by_one = []
    for i in range(len(stream)):
        one_by_one += d.feed(stream[i : i + 1])
    assert one_by_one == whole


def test_lrc_byte_may_equal_any_control_value():
    # Find DATA whose LRC is STX, ETX, ENQ...: the byte after ETX is always the LRC.
    wanted = {framing.STX, framing.ETX, framing.ENQ, framing.ACK, framing.NACK, framing.EOT}
    found = set()
    for data in (bytes([a, b]) for a in range(0x20, 0x7F) for b in range(0x20, 0x7F)):
        if lrc(data) in wanted and lrc(data) not in found:
            found.add(lrc(data))
            d = FrameDecoder()
            events = []
            for b in encode_frame(data) + encode_frame(b"HCK"):
                events += d.feed(bytes([b]))
            assert events == frame_events(data, b"HCK")
    assert found == wanted


def test_bad_lrc_is_reported_with_its_data():
    frame = bytearray(encode_frame(b"HCK"))
    frame[-1] ^= 0xFF
    assert FrameDecoder().feed(bytes(frame)) == [Event(Kind.BAD_LRC, b"HCK")]


def test_garbage_between_frames_is_discarded_and_counted():
    d = FrameDecoder()
    events = d.feed(b"junk" + encode_frame(b"HCK") + b"\xff\xfe more" + encode_frame(b"RCV#CP1"))
    assert events == frame_events(b"HCK", b"RCV#CP1")
    assert d.garbage == 4 + 7


def test_control_bytes_outside_frames():
    d = FrameDecoder()
    assert d.feed(b"\x05\x06\x15\x04") == [Event(Kind.CONTROL, control=c) for c in (5, 6, 0x15, 4)]


def test_oversize_without_etx_breaks_the_decoder():
    d = FrameDecoder(max_data=10)
    assert d.feed(b"\x02" + b"A" * 10) == []  # could still end properly
    assert d.feed(b"A") == [Event(Kind.OVERSIZE)]
    assert d.broken
    assert d.feed(encode_frame(b"HCK")) == []


def test_oversize_complete_frame():
    d = FrameDecoder(max_data=10)
    assert d.feed(encode_frame(b"A" * 11)) == [Event(Kind.OVERSIZE)]


def test_frame_at_the_limit_is_fine():
    d = FrameDecoder(max_data=10)
    assert d.feed(encode_frame(b"A" * 10)) == frame_events(b"A" * 10)


@given(st.lists(st.binary(min_size=0, max_size=300), max_size=20))
def test_arbitrary_byte_streams_never_raise(chunks):
    d = FrameDecoder(max_data=64)
    for chunk in chunks:
        for event in d.feed(chunk):
            assert isinstance(event, Event)


@given(
    st.lists(st.binary(max_size=200).map(lambda b: bytes(x | 0x20 for x in b)), min_size=1, max_size=10),
    st.data(),
)
def test_arbitrary_chunking_yields_the_same_frames(datas, draw):
    stream = b"".join(encode_frame(x) for x in datas)
    cuts = sorted(draw.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    d = FrameDecoder()
    events = []
    prev = 0
    for cut in cuts + [len(stream)]:
        events += d.feed(stream[prev:cut])
        prev = cut
    assert events == frame_events(*datas)


def test_second_worked_example_from_the_protocol_doc():
    assert encode_frame(b"STATUS#CP1#OK").hex(" ") == "02 53 54 41 54 55 53 23 43 50 31 23 4f 4b 03 31"
