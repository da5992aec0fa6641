"""
Pure framing codec for the evnet link: ``STX DATA ETX LRC`` plus the link
control bytes ENQ, ACK, NACK and EOT.

No I/O and no Twisted here: :class:`FrameDecoder` turns an arbitrary stream
of byte chunks into a list of :class:`Event` values, and :func:`encode_frame`
turns DATA into the bytes of one frame.  ``docs/protocol.md`` is the contract
this module implements.

DATA never contains a byte below 0x20 (the message codec enforces it), so the
first ETX after an STX always ends the frame and the byte after that ETX is
the LRC, whatever its value.  The decoder relies on ``bytes.find`` for that,
never on a per-byte Python loop.
"""

from __future__ import annotations

import re
from enum import Enum

STX = 0x02
ETX = 0x03
EOT = 0x04
ENQ = 0x05
ACK = 0x06
NACK = 0x15

EOT_BYTE = b"\x04"
ENQ_BYTE = b"\x05"
ACK_BYTE = b"\x06"
NACK_BYTE = b"\x15"

CONTROL_BYTES = frozenset({EOT, ENQ, ACK, NACK})

DEFAULT_MAX_DATA = 4096


def lrc(data: bytes) -> int:
    """
    The LRC of a frame holding C{data}: the XOR of every byte of DATA and of
    the ETX byte.

    The bytes are read as one integer and folded in halves down to eight
    bytes, then by fixed shifts to one: a handful of C-level operations
    instead of a Python loop per byte.
    """
    value = int.from_bytes(data, "little")
    width = len(data)
    while width > 8:
        half = (width + 1) >> 1
        shift = half << 3
        value = (value >> shift) ^ (value & ((1 << shift) - 1))
        width = half
    value ^= value >> 32
    value ^= value >> 16
    value ^= value >> 8
    return (value & 0xFF) ^ ETX


def encode_frame(data: bytes) -> bytes:
    """
    The bytes of one frame carrying C{data}.  The caller (the message codec)
    guarantees that C{data} holds no byte below 0x20.
    """
    return b"\x02" + data + b"\x03" + bytes((lrc(data),))


class Kind(Enum):
    FRAME = "frame"  # a well-formed frame; .data holds DATA
    BAD_LRC = "bad-lrc"  # a complete frame whose LRC is wrong; .data holds DATA
    CONTROL = "control"  # a control byte outside frames; .control holds it
    OVERSIZE = "oversize"  # a frame longer than the limit; the link must drop


class Event:
    """One thing found in the stream (a plain slotted class: it is made once per frame)."""

    __slots__ = ("kind", "data", "control")

    def __init__(self, kind: Kind, data: bytes = b"", control: int = 0) -> None:
        self.kind = kind
        self.data = data
        self.control = control

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Event)
            and (self.kind, self.data, self.control) == (other.kind, other.data, other.control)
        )

    def __repr__(self) -> str:
        return f"Event({self.kind}, data={self.data!r}, control={self.control})"


class FrameDecoder:
    """
    Incremental decoder: feed it chunks, get back events in stream order.

    Bytes outside frames that are neither STX nor a control byte are
    discarded and counted in L{garbage}.  After an L{Kind.OVERSIZE} event the
    decoder stops: it drops everything it is fed, since the link is to be
    dropped.
    """

    def __init__(self, max_data: int = DEFAULT_MAX_DATA) -> None:
        self.max_data = max_data
        self.garbage = 0
        self.broken = False
        self._buffer = b""

    def feed(self, chunk: bytes) -> list[Event]:
        if self.broken:
            return []
        buf = self._buffer + chunk if self._buffer else chunk
        events: list[Event] = []
        append = events.append
        pos = 0
        end = len(buf)
        limit = self.max_data
        while pos < end:
            first = buf[pos]
            if first == STX:
                etx = buf.find(b"\x03", pos + 1, pos + limit + 2)
                if etx < 0:
                    if end - pos - 1 > limit:
                        append(Event(Kind.OVERSIZE))
                        self.broken = True
                        self._buffer = b""
                        return events
                    break  # incomplete frame: wait for more bytes
                if etx + 1 >= end:
                    break  # the LRC byte has not arrived yet
                data = buf[pos + 1 : etx]
                if buf[etx + 1] == lrc(data):
                    append(Event(Kind.FRAME, data))
                else:
                    append(Event(Kind.BAD_LRC, data))
                pos = etx + 2
            elif first in CONTROL_BYTES:
                append(Event(Kind.CONTROL, control=first))
                pos += 1
            else:
                # Garbage: skip to the next byte that could matter.
                nxt = _next_interesting(buf, pos + 1, end)
                self.garbage += nxt - pos
                pos = nxt
        self._buffer = buf[pos:] if pos < end else b""
        return events


_INTERESTING = re.compile(b"[\x02\x04\x05\x06\x15]")


def _next_interesting(buf: bytes, start: int, end: int) -> int:
    """
    The index of the first STX or control byte at or after C{start}, or
    C{end} when there is none.
    """
    match = _INTERESTING.search(buf, start, end)
    return match.start() if match else end
