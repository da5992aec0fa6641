"""
The audit trail's pure part (docs/audit.md): what a row holds, its
canonical encoding, the keyed hash chain, and the verification that names
the first row edited, deleted or reordered.  No I/O and no Twisted here:
the writer is L{evnet.central.audittrail}, the tables are in the store.

A row belongs to one I{chain} (one per writing process: ``central``,
``registry``), has a C{seq} (1, 2, ... within its chain), and carries
C{prev}, the hash of the row before it in its chain (the chain's
I{genesis} value for seq 1), and C{hash}:

    hash = HMAC-SHA256(key, canonical(chain, row, prev))

C{seq} is not hashed: the order is what the C{prev} links say, and the
verifier checks that the seq order agrees with them, which is how a
reordered row (seqs swapped) is told from an edited one.
"""

from __future__ import annotations

import calendar
import hashlib
import hmac
import json
import math
import re
import time
from dataclasses import dataclass, replace
from typing import Any, Iterable, Mapping, Optional

VERSION = 1  # of the canonical encoding, hashed with every row

ACTOR_KINDS = ("cp", "driver", "operator", "registry", "weather", "system")
OK = "ok"
REFUSED = "refused"
FAILED = "failed"
OUTCOMES = (OK, REFUSED, FAILED)

CHAIN_CENTRAL = "central"
CHAIN_REGISTRY = "registry"

# Field sizes: what is hashed is what the columns hold (cut before hashing).
MAX_ID = 64
MAX_ADDRESS = 64
MAX_ACTION = 32
MAX_DETAIL = 4000
MAX_DETAIL_TEXT = 512  # characters of one text value inside the detail

_CONTROL = re.compile("[\x00-\x1f\x7f]")
_TIME = re.compile(r"\A(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d{1,6}))?Z?\Z")


class AuditError(ValueError):
    """A value that cannot be an audit row (a caller's mistake), or a time that cannot be read."""


# -- time -------------------------------------------------------------------------


def utc_text(seconds: float) -> str:
    """C{seconds} since the epoch as UTC with microseconds: C{2025-03-01T10:20:30.123456Z} (fixed width)."""
    micros = int(round(seconds * 1_000_000))
    whole, fraction = divmod(micros, 1_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{fraction:06d}Z"


def parse_time(text: str) -> str:
    """
    A time a reader gives (a filter): seconds since the epoch, or ISO UTC
    (C{2025-03-01T10:20:30[.ffffff][Z]}), as the canonical text rows
    carry, so that it compares with them as text.
    """
    text = text.strip()
    try:
        seconds = float(text)
    except ValueError:
        match = _TIME.match(text)
        if match is None:
            raise AuditError(f"{text!r} is not a time: give seconds since the epoch or YYYY-MM-DDTHH:MM:SS[.ffffff]Z (UTC)")
        year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
        try:
            whole = calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0))
            time.gmtime(whole)
        except (ValueError, OverflowError):
            raise AuditError(f"{text!r} is not a valid time") from None
        return utc_text(whole) if match.group(7) is None else utc_text(whole)[:20] + match.group(7).ljust(6, "0") + "Z"
    if not math.isfinite(seconds) or not 0 <= seconds < 253402300800:
        raise AuditError(f"{text!r} is not a time: seconds since the epoch, from 0")
    return utc_text(seconds)


# -- rows -------------------------------------------------------------------------


def _text(value: Any, limit: int) -> str:
    return _CONTROL.sub(" ", str(value))[:limit]


def _plain(value: Any, depth: int = 0) -> Any:
    """C{value} as JSON may hold it, every text cut to L{MAX_DETAIL_TEXT} (a peer's input stays bounded)."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, str):
        return value[:MAX_DETAIL_TEXT]
    if depth < 3 and isinstance(value, Mapping):
        return {str(k)[:MAX_ACTION]: _plain(v, depth + 1) for k, v in list(value.items())[:32]}
    if depth < 3 and isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value, key=str) if isinstance(value, (set, frozenset)) else list(value)
        return [_plain(v, depth + 1) for v in items[:32]]
    return str(value)[:MAX_DETAIL_TEXT]


def encode_detail(detail: Mapping[str, Any]) -> str:
    """The detail as canonical JSON text (sorted keys, no spaces, ASCII), at most L{MAX_DETAIL} characters."""
    value = _plain(dict(detail))
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    if len(text) > MAX_DETAIL:
        text = json.dumps({"truncated": text[: MAX_DETAIL - 40]}, separators=(",", ":"), ensure_ascii=True)
    return text


@dataclass(frozen=True)
class Entry:
    """One row's content, as hashed and stored (built by L{entry}, which bounds and checks it)."""

    at: str  # L{utc_text}
    actor_kind: str
    actor_id: str
    address: str  # the source host ("" when there is none: a timer, Central itself)
    port: Optional[int]
    action: str
    outcome: str
    detail: str  # L{encode_detail}

    def as_dict(self) -> dict:
        return {"at": self.at, "actor_kind": self.actor_kind, "actor_id": self.actor_id, "address": self.address,
                "port": self.port, "action": self.action, "outcome": self.outcome,
                "detail": json.loads(self.detail)}


def split_address(address: Optional[str]) -> tuple[str, Optional[int]]:
    """
    C{host:port} (as links and HTTP requests name their peer: the port
    after the last colon) as (host, port); a bare host as (host, None).
    """
    if not address:
        return "", None
    host, sep, port = str(address).rpartition(":")
    if sep and port.isdigit() and host and not host.endswith(":") and len(port) <= 5:
        return host.strip("[]"), int(port)
    return str(address), None


def entry(seconds: float, actor_kind: str, actor_id: str, address: Optional[str], action: str, outcome: str,
          detail: Optional[Mapping[str, Any]] = None, *, port: Any = ...) -> Entry:
    """
    A row's content.  C{address} is C{host:port} or a host; pass C{port}
    (an int, or None) to say the port apart from the host.
    """
    if actor_kind not in ACTOR_KINDS:
        raise AuditError(f"actor kind {actor_kind!r}: one of {', '.join(ACTOR_KINDS)}")
    if outcome not in OUTCOMES:
        raise AuditError(f"outcome {outcome!r}: one of {', '.join(OUTCOMES)}")
    if not action or len(action) > MAX_ACTION or _CONTROL.search(action):
        raise AuditError(f"action {action!r}: 1 to {MAX_ACTION} printable characters")
    if port is ...:
        host, port = split_address(address)
    else:
        host = address or ""
    if port is not None and not (isinstance(port, int) and 0 <= port <= 65535):
        raise AuditError(f"port {port!r}: 0 to 65535, or None")
    return Entry(utc_text(seconds), actor_kind, _text(actor_id or "", MAX_ID), _text(host, MAX_ADDRESS), port,
                 action, outcome, encode_detail(detail or {}))


def canonical(chain: str, e: Entry, prev: str) -> bytes:
    """The bytes hashed for one row: every field but seq, in a fixed order, as compact ASCII JSON."""
    fields = [VERSION, chain, e.at, e.actor_kind, e.actor_id, e.address, e.port, e.action, e.outcome, e.detail, prev]
    return json.dumps(fields, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def row_hash(key: bytes, chain: str, e: Entry, prev: str) -> str:
    return hmac.new(key, canonical(chain, e, prev), hashlib.sha256).hexdigest()


def genesis(key: bytes, chain: str) -> str:
    """The C{prev} of a chain's first row."""
    return hmac.new(key, b"evnet-audit-genesis\x00" + chain.encode("utf-8"), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Linked:
    """A row ready to store: its content, its place in its chain, and its two hashes."""

    chain: str
    seq: int
    entry: Entry
    prev: str
    hash: str

    def as_row(self) -> dict:
        return {"chain": self.chain, "seq": self.seq, **self.entry.as_dict(), "detail": self.entry.detail,
                "prev": self.prev, "hash": self.hash}


def link(key: bytes, chain: str, head: Optional[tuple[int, str]], entries: Iterable[Entry]) -> list[Linked]:
    """C{entries} chained after C{head} (the chain's last (seq, hash), None for an empty chain)."""
    seq, prev = head if head is not None else (0, genesis(key, chain))
    out = []
    for e in entries:
        seq += 1
        h = row_hash(key, chain, e, prev)
        out.append(Linked(chain, seq, e, prev, h))
        prev = h
    return out


def entry_of(row: Mapping[str, Any]) -> Entry:
    """The content of a stored row (a dict of its columns), as it was hashed."""
    port = row.get("port")
    return Entry(str(row["at"]), str(row["actor_kind"]), str(row["actor_id"]), str(row["address"]),
                 None if port is None else int(port), str(row["action"]), str(row["outcome"]), str(row["detail"]))


# -- verification -----------------------------------------------------------------------


EDITED = "edited"
DELETED = "deleted"
REORDERED = "reordered"


@dataclass(frozen=True)
class Problem:
    """The first row of a chain that is not as it was written."""

    chain: str
    seq: int
    row_id: Any  # the row's id column (its place in the table), for the reader
    what: str  # EDITED, DELETED or REORDERED
    text: str

    def line(self) -> str:
        return f"chain {self.chain}: row seq {self.seq} (id {self.row_id}): {self.what}: {self.text}"


@dataclass(frozen=True)
class ChainReport:
    chain: str
    rows: int
    head: Optional[tuple[int, str]]  # (seq, hash) of the last row (a reader may keep it, see docs/audit.md)
    problem: Optional[Problem]

    @property
    def intact(self) -> bool:
        return self.problem is None


def verify_chain(key: bytes, chain: str, rows: list[Mapping[str, Any]]) -> ChainReport:
    """
    Check one chain's rows (dicts with the columns, in any order): each
    row's hash matches its content and the row before it, and the seq order
    is the chain's order.  Reports the first row (by seq) that is not.
    """
    rows = sorted(rows, key=lambda r: int(r["seq"]))
    by_hash = {str(r["hash"]): int(r["seq"]) for r in rows}
    expected_prev, expected_seq = genesis(key, chain), 1
    last: Optional[tuple[int, str]] = None
    for row in rows:
        seq, prev, stored = int(row["seq"]), str(row["prev"]), str(row["hash"])

        def problem(what: str, text: str) -> ChainReport:
            return ChainReport(chain, len(rows), last, Problem(chain, seq, row.get("id"), what, text))

        if last is not None and seq == last[0]:
            return problem(REORDERED, f"seq {seq} appears twice")
        if not hmac.compare_digest(row_hash(key, chain, entry_of(row), prev), stored):
            return problem(EDITED, "its hash does not match its content (a field was changed, or the hash, "
                                   "or the trail was written under another key)")
        if not hmac.compare_digest(prev, expected_prev):
            follows = by_hash.get(prev)
            if follows is not None:
                return problem(REORDERED, f"it follows the row now at seq {follows} in the chain, not the row before it")
            if seq > expected_seq:
                missing = f"seq {expected_seq}" if seq == expected_seq + 1 else f"seqs {expected_seq} to {seq - 1}"
                return problem(DELETED, f"the row(s) before it ({missing}) are missing")
            return problem(DELETED, "the row it follows is missing (deleted, and the seqs renumbered)")
        if seq != expected_seq:
            return problem(EDITED, f"its seq was changed (it is the chain's row {expected_seq})")
        expected_prev, expected_seq, last = stored, seq + 1, (seq, stored)
    return ChainReport(chain, len(rows), last, None)


def verify(key: bytes, rows: Iterable[Mapping[str, Any]]) -> list[ChainReport]:
    """Every chain in C{rows}, by name."""
    chains: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        chains.setdefault(str(row["chain"]), []).append(row)
    return [verify_chain(key, name, chains[name]) for name in sorted(chains)]


# -- a refusal and its summary ---------------------------------------------------------------


@dataclass(frozen=True)
class Note:
    """What to write about one event, before its time is known (a refusal waiting to be summarized)."""

    actor_kind: str
    actor_id: str
    address: Optional[str]
    action: str
    outcome: str = REFUSED
    detail: Mapping[str, Any] = None  # type: ignore[assignment]

    def summary(self, more: int, window: float, others: list[str]) -> "Note":
        """The row saying how many more like this one came within C{window} seconds (and about which ids)."""
        detail = {**(self.detail or {}), "repeats": more, "window_seconds": window}
        if others:
            detail["also_about"] = others
        return replace(self, detail=detail)


def summary_detail(counts: Mapping[str, int], window: float) -> dict:
    """The detail of a row standing for rows not written (a flood): how many, of which actions."""
    return {"rows_not_written": sum(counts.values()), "by_action": dict(sorted(counts.items())),
            "window_seconds": window}
