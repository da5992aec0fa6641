"""SealedChannel: what goes out on a link after a login is sealed, and fits its frame."""

import os

import pytest

from evnet.protocols import messages as m
from evnet.protocols import security
from evnet.protocols.framing import ACK_BYTE, ENQ_BYTE, FrameDecoder, Kind
from evnet.protocols.sealed import SealedChannel

from tests.fakes import make_link, take


def open_link(**options):
    link, transport, handler, clock = make_link(False, **options)
    link.dataReceived(ENQ_BYTE)
    assert take(transport) == ACK_BYTE
    return link, transport


def sealed_pair(link):
    key = security.new_key()
    channel = SealedChannel(link, security.Sealer("CP01", "0a1b2c3d", key, security.ROLE_CENTRAL))
    return channel, security.Opener("CP01", "0a1b2c3d", key, (security.ROLE_CENTRAL,))


def frames(data):
    return [e.data for e in FrameDecoder(4096).feed(data) if e.kind is Kind.FRAME]


def test_what_a_sealed_channel_sends_is_sealed_and_opens_for_the_peer():
    link, transport = open_link()
    channel, opener = sealed_pair(link)
    channel.send(m.Parar("CP01"))
    (data,) = frames(take(transport))
    assert data.startswith(b"SEC#0a1b2c3d#C#") and b"PARAR" not in data
    assert security.open_message(opener, m.decode(data)) == m.Parar("CP01")


def test_it_reports_the_link_underneath_and_a_smaller_frame():
    link, _ = open_link()
    channel, _ = sealed_pair(link)
    link.context["cp_id"] = "CP01"
    assert channel.context == {"cp_id": "CP01"} and channel.peer_name == link.peer_name
    assert channel.is_open and channel.confirms_receipt and channel.pending == 0
    assert channel.max_data == security.inner_capacity(link.max_data) < link.max_data


def test_a_list_split_for_a_sealed_channel_fits_every_frame():
    link, transport = open_link()
    channel, opener = sealed_pair(link)
    cps = [m.CpInfo(f"CP{i:04d}", "Alicante, Calle Mayor", 0.35) for i in range(400)]
    parts = m.split_available(cps, channel.max_data)
    seen = []
    for part in parts:
        d = channel.sendMessage(part)
        (data,) = frames(take(transport))
        assert len(data) <= link.max_data
        seen += security.open_message(opener, m.decode(data)).cps
        link.dataReceived(ACK_BYTE)
        assert d.called
    assert len(seen) == 400


def test_a_message_too_long_once_sealed_is_a_failed_deferred():
    link, transport = open_link()
    channel, _ = sealed_pair(link)
    too_long = m.Notice("CP01", "x" * (channel.max_data + 1))
    failures = []
    channel.sendMessage(too_long).addErrback(failures.append)
    assert failures and failures[0].check(m.MessageError)
    assert transport.value() == b""
    channel.send(too_long)  # logged, never raised


@pytest.mark.parametrize("text", ["AB+C", "AB/C", "AB==", "AB=C", "A", "ABCDE", "AB C", "AB\nC", "ABé"])
def test_text_that_is_not_unpadded_base64url_is_refused(text):
    with pytest.raises(security.SecurityError, match="is not base64url text"):
        security.unb64(text, "the box")


def test_base64url_of_every_length_round_trips():
    for n in range(40):
        data = os.urandom(n)
        assert security.unb64(security.b64(data), "the box") == data
