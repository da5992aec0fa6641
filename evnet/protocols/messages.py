"""
Pure message codec: typed messages to and from frame DATA
(``CODE#field1#field2…``, UTF-8).

Every wire message is declared here once, as a frozen dataclass decorated
with :func:`message`.  A field's annotation says how it travels:

- ``str``: text; never contains ``#`` nor a character below U+0020.
- ``int``: a decimal integer (``-`` allowed).
- ``float``: a decimal number with a dot, written with ``places`` decimals
  (given in the field's metadata, see :func:`dec`); values are rounded to
  that precision when the message is built, so decode(m.to_data()) == m.

Fields with a default are optional at the end of DATA: an older peer may
omit them.  A field declared with :func:`opt` is also left out when it and
every field after it hold their defaults.  No I/O and no Twisted import here.  ``docs/protocol.md`` is the
contract.

Longer than evnet's ~500-line guide on purpose: a reader finds every wire
message in this one file, in the order of the protocol document; the codec
itself is the first 230 lines.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar, Callable

SEP = "#"
_BAD_TEXT = re.compile("[#\x00-\x1f]")
_CONTROL = re.compile("[\x00-\x1f]")
_DECIMAL = re.compile(r"-?[0-9]+(\.[0-9]+)?\Z")
_INTEGER = re.compile(r"-?[0-9]+\Z")


class MessageError(ValueError):
    """
    DATA that is not a valid message, or a field value that cannot be sent.
    The text says which message and which field.
    """


def dec(places: int, default: Any = dataclasses.MISSING) -> Any:
    """A decimal field written with C{places} decimals."""
    if default is dataclasses.MISSING:
        return field(metadata={"places": places})
    return field(default=default, metadata={"places": places})


def opt(default: Any = "") -> Any:
    """An optional field not written while it (and what follows it) holds C{default}."""
    return field(default=default, metadata={"omit": True})


@dataclass(frozen=True)
class _Field:
    name: str
    encode: Callable[[Any], str]
    decode: Callable[[str], Any]
    normalize: Callable[[Any], Any]
    required: bool
    default: Any = None
    omit: bool = False  # left out at the end of DATA while it holds its default


def _text_field(code: str, name: str, required: bool) -> _Field:
    def check(value: Any) -> str:
        if not isinstance(value, str):
            raise MessageError(f"{code}: field {name!r} must be text, not {value!r}")
        if _BAD_TEXT.search(value):
            raise MessageError(
                f"{code}: field {name!r} may not contain '#' nor control "
                f"characters: {value!r}"
            )
        return value

    # On decoding, decode() has already refused control characters in the
    # whole DATA, and '#' separates fields: nothing left to check.
    return _Field(name, check, str, check, required)


def _int_field(code: str, name: str, required: bool) -> _Field:
    def decode(text: str) -> int:
        if not _INTEGER.match(text):
            raise MessageError(f"{code}: field {name!r} is not an integer: {text!r}")
        return int(text)

    def normalize(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise MessageError(f"{code}: field {name!r} must be an integer, not {value!r}")
        return value

    return _Field(name, str, decode, normalize, required)


def _decimal_field(code: str, name: str, places: int, required: bool) -> _Field:
    fmt = f"{{:.{places}f}}"

    def decode(text: str) -> float:
        if not _DECIMAL.match(text):
            raise MessageError(
                f"{code}: field {name!r} is not a decimal number with a dot: {text!r}"
            )
        return round(float(text), places) or 0.0  # no -0.0

    def normalize(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise MessageError(f"{code}: field {name!r} must be a number, not {value!r}")
        if value != value or value in (float("inf"), float("-inf")):
            raise MessageError(f"{code}: field {name!r} must be finite, not {value!r}")
        result = round(float(value), places)
        return 0.0 if result == 0 else result  # no "-0.000" on the wire

    return _Field(name, fmt.format, decode, normalize, required)


class Message:
    """Base of every wire message; see L{message}."""

    code: ClassVar[str]
    _fields: ClassVar[tuple[_Field, ...]]
    _required: ClassVar[int]

    def __post_init__(self) -> None:
        for f in self._fields:
            object.__setattr__(self, f.name, f.normalize(getattr(self, f.name)))
        self._validate()

    def _validate(self) -> None:
        """Checks beyond field types (allowed values); raise L{MessageError}."""

    def to_data(self) -> bytes:
        """The DATA of the frame carrying this message."""
        fields = self._fields
        end = len(fields)
        while end and fields[end - 1].omit and getattr(self, fields[end - 1].name) == fields[end - 1].default:
            end -= 1
        parts = [self.code]
        for f in fields[:end]:
            parts.append(f.encode(getattr(self, f.name)))
        return SEP.join(parts).encode("utf-8")


REGISTRY: dict[str, type[Message]] = {}


def message(code: str) -> Callable[[type], type]:
    """
    Declare a wire message with C{code}: makes the class a frozen dataclass
    and registers it for L{decode}.
    """

    def decorate(cls: type) -> type:
        cls = dataclass(frozen=True)(cls)
        fields: list[_Field] = []
        for f in dataclasses.fields(cls):
            required = (
                f.default is dataclasses.MISSING
                and f.default_factory is dataclasses.MISSING
            )
            kind = f.type if isinstance(f.type, str) else f.type.__name__
            if kind == "str":
                spec = _text_field(code, f.name, required)
            elif kind == "int":
                spec = _int_field(code, f.name, required)
            elif kind == "float":
                spec = _decimal_field(code, f.name, f.metadata["places"], required)
            else:  # pragma: no cover - a programming error in this module
                raise TypeError(f"{code}.{f.name}: unsupported field type {kind}")
            if not required:
                spec = dataclasses.replace(spec, default=spec.normalize(f.default), omit=bool(f.metadata.get("omit")))
            fields.append(spec)
        cls.code = code
        cls._fields = tuple(fields)
        cls._required = sum(1 for f in fields if f.required)
        if code in REGISTRY:  # pragma: no cover
            raise TypeError(f"duplicate message code {code}")
        REGISTRY[code] = cls
        return cls

    return decorate


def decode(data: bytes) -> Message:
    """
    The message in frame DATA, or L{MessageError} saying what is wrong.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise MessageError(f"DATA is not UTF-8 text: {e}") from None
    if _CONTROL.search(text):
        raise MessageError("DATA contains a control character")
    parts = text.split(SEP)
    code = parts[0]
    cls = REGISTRY.get(code)
    if cls is None:
        shown = code if len(code) <= 32 else code[:32] + "…"
        raise MessageError(f"unknown message code {shown!r}")
    return cls._from_parts(parts[1:])


def _from_parts(cls: type[Message], values: list[str]) -> Message:
    fields = cls._fields
    if not cls._required <= len(values) <= len(fields):
        if cls._required == len(fields):
            want = f"{len(fields)}"
        else:
            want = f"{cls._required} to {len(fields)}"
        raise MessageError(f"{cls.code}: expected {want} fields, got {len(values)}")
    # Values decoded here are already in normal form: skip the constructor's
    # normalization (this is the hot path of every received frame).
    msg = object.__new__(cls)
    attrs = msg.__dict__
    for f, v in zip(fields, values):
        attrs[f.name] = f.decode(v)
    for f in fields[len(values) :]:
        attrs[f.name] = f.default
    msg._validate()
    return msg


Message._from_parts = classmethod(_from_parts)  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------
# The messages.  Direction and answer of each: docs/protocol.md.
# M = Monitor, E = Engine, C = Central, D = Driver.
# ---------------------------------------------------------------------------

ENGINE_OK = "OK"
ENGINE_KO = "KO"


def _one_of(code: str, name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise MessageError(f"{code}: field {name!r} must be one of {', '.join(allowed)}: {value!r}")


@message("REG")
class Reg(Message):
    """M → C: register (or update) a CP: its id, location and price in €/kWh."""

    cp_id: str
    location: str
    price: float = dec(3)


@message("AUTH")
class Auth(Message):
    """
    M → C: authenticate the link as the registered CP C{cp_id}, starting a
    challenge–response with a fresh C{nonce} (base64url).  Answered by
    CHALLENGE, or REFUSED#AUTH.
    """

    cp_id: str
    nonce: str = ""


@message("CHALLENGE")
class Challenge(Message):
    """
    C → M or D: prove the credentials of C{cp_id}: the salt and scrypt cost
    of its verifier and Central's fresh nonce (base64url); C{login} is the
    nonce of the AUTH it answers (a peer ignores a CHALLENGE of another
    login).  Answered by PROOF.
    """

    cp_id: str
    salt: str
    cost: int
    nonce: str
    login: str = opt()


@message("PROOF")
class Proof(Message):
    """M → C: the proof for the last CHALLENGE (base64url).  Answered by KEY, or REFUSED#AUTH."""

    cp_id: str
    proof: str


@message("KEY")
class Key(Message):
    """
    C → M: authenticated.  C{state} is the CP's state at Central; the new
    session key C{key_id} comes C{wrapped} under the credentials; C{signature}
    proves Central holds the CP's registration; C{liveness} is how often the
    Monitor sends STATUS, in seconds.  From here on every message on the link
    is sealed (SEC).
    """

    cp_id: str
    state: str
    key_id: str
    wrapped: str
    signature: str
    liveness: float = dec(3, 1.0)


@message("SEC")
class Sec(Message):
    """Either way, after KEY: a message sealed under the session key (see evnet.protocols.security)."""

    key_id: str
    role: str
    nonce: str
    box: str


@message("REAUTH")
class Reauth(Message):
    """C → M (sealed): authenticate again on this link (key rotation)."""

    cp_id: str


@message("REVOKED")
class Revoked(Message):
    """C → M (sealed, the last message under that key): the key is revoked; the link closes."""

    cp_id: str
    reason: str


@message("CPKEY")
class CpKey(Message):
    """M → E over their local link: the session key (base64url) the Engine seals its Kafka records with."""

    cp_id: str
    key_id: str
    key: str


@message("ACCEPTED")
class Accepted(Message):
    """
    C → M or D: the request C{what} (REG, AUTH, DRIVER) about C{subject} is
    accepted; C{detail} is what the requester should know (AUTH: the CP's
    state at Central).
    """

    what: str
    subject: str
    detail: str = ""


@message("REFUSED")
class Refused(Message):
    """
    C → M or D: the request C{what} about C{subject} is refused, with why.
    C{ref}, on a driver's refused login, names the message refused: the
    nonce of its AUTH or the proof of its PROOF (a driver ignores the
    refusal of another login).
    """

    what: str
    subject: str
    reason: str
    ref: str = opt()


@message("STATUS")
class Status(Message):
    """M → C every second: liveness, and the Engine's health (OK or KO)."""

    cp_id: str
    engine: str

    def _validate(self) -> None:
        _one_of(self.code, "engine", self.engine, (ENGINE_OK, ENGINE_KO))


@message("HCK")
class Hck(Message):
    """M → E every second: health check.  Answered by HCK_RESP."""


@message("HCK_RESP")
class HckResp(Message):
    """E → M: OK, or KO while a fault is simulated."""

    result: str

    def _validate(self) -> None:
        _one_of(self.code, "result", self.result, (ENGINE_OK, ENGINE_KO))


@message("CFG")
class Cfg(Message):
    """M → E when the link opens: the CP id and price the Engine serves."""

    cp_id: str
    price: float = dec(3)


@message("AVR")
class Avr(Message):
    """M → C (on the link, or through Kafka's cp.events): the CP has a fault."""

    cp_id: str
    reason: str


@message("RCV")
class Rcv(Message):
    """M → C: the fault is cleared, the Engine answers OK again."""

    cp_id: str


@message("REQ")
class Req(Message):
    """
    D → C (or E → M → C for a charge started at the CP): driver C{driver_id}
    asks for a charge at C{cp_id}, optionally up to C{target_kwh} (0: none).
    """

    driver_id: str
    cp_id: str
    target_kwh: float = dec(3, 0.0)


@message("AUTHORIZED")
class Authorized(Message):
    """C → D: the charge is authorized as session C{session_id}."""

    driver_id: str
    cp_id: str
    session_id: str


@message("DENIED")
class Denied(Message):
    """C → D: the charge is refused, with why."""

    driver_id: str
    cp_id: str
    reason: str


@message("START")
class Start(Message):
    """
    C → M → E: supply session C{session_id} for C{driver_id} once the vehicle
    is plugged in; end by itself after C{target_kwh} or C{target_seconds}
    (0: no target).
    """

    cp_id: str
    session_id: str
    driver_id: str
    price: float = dec(3)
    target_kwh: float = dec(3, 0.0)
    target_seconds: int = 0


@message("TELEM")
class Telem(Message):
    """
    E → M → C every second while supplying, and C → D for the driver of the
    session: cumulative kWh and €, instantaneous kW, seconds elapsed.
    C{seq} counts the records of a session from 1, so a replay is detected.
    """

    cp_id: str
    session_id: str
    seq: int
    kwh: float = dec(3)
    kw: float = dec(2)
    euros: float = dec(2)
    seconds: int = 0


@message("STOP")
class Stop(Message):
    """
    E → M → C: session C{session_id} ended with these totals; C{reason} is
    one of the REASON_* words of L{evnet.protocols.vocabulary} (target,
    unplug, fault, parar, engine-restart, monitor-lost, closed-by-central,
    busy).
    """

    cp_id: str
    session_id: str
    seq: int
    kwh: float = dec(3)
    euros: float = dec(2)
    seconds: int = 0
    reason: str = ""


@message("TICKET")
class Ticket(Message):
    """
    C → D: the final ticket of a charge.  The first four fields are the seed
    format; cp_id, driver_id and how the charge ended follow.
    """

    session_id: str
    kwh: float = dec(3)
    euros: float = dec(2)
    duration_seconds: int = 0
    cp_id: str = ""
    driver_id: str = ""
    reason: str = ""


@message("PARAR")
class Parar(Message):
    """C → M → E: stop the CP (ends any charge) and leave it out of order."""

    cp_id: str


@message("REANUDAR")
class Reanudar(Message):
    """C → M → E: resume a stopped CP."""

    cp_id: str


@message("DRIVER")
class Driver(Message):
    """D → C when the link opens: identify; answered ACCEPTED, then any missed tickets."""

    driver_id: str


@message("LIST")
class ListCps(Message):
    """D → C: which CPs are available now?  Answered by AVAILABLE."""

    driver_id: str


@message("CANCEL")
class Cancel(Message):
    """D → C: end this driver's charge in progress now (it ends with a ticket, like an unplug)."""

    driver_id: str


@message("NOTICE")
class Notice(Message):
    """C → D or M: a human-readable notice about C{subject} (e.g. a fault)."""

    subject: str
    text: str


@dataclass(frozen=True)
class CpInfo:
    cp_id: str
    location: str
    price: float


@message("AVAILABLE")
class Available(Message):
    """
    C → D: the CPs available now, as repeated triples of fields
    ``cpId#location#price`` after the count.  A list too long for one frame
    is sent in parts (L{split_available}): each part ends with two more
    fields, ``part#parts`` (1-based); a list in one frame may omit them.
    """

    count: int

    # The triples are not fixed fields: see to_data and _from_parts below.
    def __init__(self, cps: tuple[CpInfo, ...] | list[CpInfo] = (), part: int = 1, parts: int = 1) -> None:
        cps = tuple(cps)
        object.__setattr__(self, "count", len(cps))
        normalized = []
        for cp in cps:
            reg = Reg(cp.cp_id, cp.location, cp.price)  # validates and rounds
            normalized.append(CpInfo(reg.cp_id, reg.location, reg.price))
        object.__setattr__(self, "cps", tuple(normalized))
        if not 1 <= part <= parts:
            raise MessageError(f"AVAILABLE: part {part} of {parts}: need 1 <= part <= parts")
        object.__setattr__(self, "part", part)
        object.__setattr__(self, "parts", parts)

    @property
    def last(self) -> bool:
        """True on the last (or only) part of a list."""
        return self.part == self.parts

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Available)
            and (self.cps, self.part, self.parts) == (other.cps, other.part, other.parts)
        )

    def __hash__(self) -> int:
        return hash((self.cps, self.part, self.parts))

    def __repr__(self) -> str:
        if self.parts == 1:
            return f"Available(cps={self.cps!r})"
        return f"Available(cps={self.cps!r}, part={self.part}, parts={self.parts})"

    def to_data(self) -> bytes:
        parts = [self.code, str(self.count)]
        for cp in self.cps:
            parts += [cp.cp_id, cp.location, f"{cp.price:.3f}"]
        if self.parts != 1:
            parts += [str(self.part), str(self.parts)]
        return SEP.join(parts).encode("utf-8")

    @classmethod
    def _from_parts(cls, values: list[str]) -> "Available":
        if not values or not _INTEGER.match(values[0]):
            raise MessageError("AVAILABLE: the first field must be the count of CPs")
        count = int(values[0])
        rest = values[1:]
        if count < 0 or len(rest) not in (3 * count, 3 * count + 2):
            raise MessageError(
                f"AVAILABLE: count {count} needs {3 * max(count, 0)} fields "
                f"(+2 for part#parts), got {len(rest)}"
            )
        part = parts = 1
        if len(rest) == 3 * count + 2:
            if not (_INTEGER.match(rest[-2]) and _INTEGER.match(rest[-1])):
                raise MessageError("AVAILABLE: part and parts must be integers")
            part, parts = int(rest[-2]), int(rest[-1])
        cps = []
        for i in range(count):
            cp_id, location, price = rest[3 * i : 3 * i + 3]
            reg = Reg._from_parts([cp_id, location, price])
            cps.append(CpInfo(reg.cp_id, reg.location, reg.price))
        return cls(tuple(cps), part, parts)


# "AVAILABLE#" + count + "#part#parts", with room for six digits each.
_AVAILABLE_HEADER = len("AVAILABLE#") + 3 * (6 + 1)


def split_available(cps: list[CpInfo] | tuple[CpInfo, ...], max_data: int) -> list[Available]:
    """
    The list C{cps} as AVAILABLE messages whose DATA fits in C{max_data}
    bytes each: one message when it fits, else numbered parts, in order.
    A CP whose own fields exceed the budget still gets a part of its own
    (the link will refuse to send it, and say so).
    """
    budget = max_data - _AVAILABLE_HEADER
    groups: list[list[CpInfo]] = [[]]
    used = 0
    for cp in Available(cps).cps:  # normalized
        size = len(cp.cp_id.encode("utf-8")) + len(cp.location.encode("utf-8")) + len(f"{cp.price:.3f}") + 3
        if groups[-1] and used + size > budget:
            groups.append([])
            used = 0
        groups[-1].append(cp)
        used += size
    parts = len(groups)
    return [Available(group, i + 1, parts) for i, group in enumerate(groups)]
