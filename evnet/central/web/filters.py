"""
The query parameters of the API's lists, read exactly as the OpenAPI
document declares them (schemathesis checks both ways): a page size, a
page cursor, a CP or driver id, a time.  A bad one is an L{ApiError} 400
with one sentence saying what is expected.  Pure: no Twisted here.
"""

from __future__ import annotations

import calendar
import re
import time
from typing import Any, Optional

from evnet.central import audit
from evnet.httpapi import ApiError
from evnet.protocols.vocabulary import ID_RULE, valid_id

# A page's cursor, the 'next' of the page before: "TIME:ID" (the last row's time, Unix seconds, and its id).
CURSOR_PATTERN = r"^[0-9]{1,12}(\.[0-9]{1,17})?:[A-Za-z0-9_.-]{1,32}$"
_CURSOR = re.compile(CURSOR_PATTERN)
ID_PATTERN = r"^[A-Za-z0-9_.-]{1,32}$"


def arg(request: Any, name: str) -> Optional[str]:
    """The query parameter C{name} (its first value) as text, or None; an empty one is a 400."""
    raw = request.args.get(name.encode("ascii"))
    if not raw:
        return None
    text = raw[0].decode("utf-8", "replace")
    if not text:
        raise ApiError(400, f"{name} is empty: leave it out to not filter by it")
    return text


def limit(request: Any, default: int, maximum: int) -> int:
    raw = request.args.get(b"limit", [str(default).encode()])[0]
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, f"limit must be a whole number, not {raw.decode('utf-8', 'replace')!r}") from None
    if not 1 <= value <= maximum:
        raise ApiError(400, f"limit must be between 1 and {maximum}")
    return value


def final_newline_off(text: str) -> str:
    """As a pattern's C{$} allows it (the document's patterns are read so): one final newline is dropped."""
    return text[:-1] if text.endswith("\n") else text


def an_id(request: Any, name: str, what: str) -> Optional[str]:
    text = arg(request, name)
    text = None if text is None else final_newline_off(text)
    if text is not None and not valid_id(text):
        raise ApiError(400, f"{name} must be a {what} id ({ID_RULE}), not {text[:40]!r}")
    return text


def seconds(request: Any, name: str) -> Optional[float]:
    """A time: Unix seconds, or YYYY-MM-DDTHH:MM:SS[.ffffff][Z] (UTC), as the audit trail's filters read it."""
    text = arg(request, name)
    if text is None:
        return None
    try:
        canonical = audit.parse_time(text)  # 2025-03-01T10:20:30.123456Z
    except audit.AuditError as e:
        raise ApiError(400, f"{name}: {e}") from None
    whole = calendar.timegm(time.strptime(canonical[:19], "%Y-%m-%dT%H:%M:%S"))
    return whole + int(canonical[20:26]) / 1_000_000


def cursor(request: Any) -> Optional[tuple[float, str]]:
    """C{before}: the 'next' of the page before, as (time, id)."""
    text = arg(request, "before")
    if text is None:
        return None
    if not _CURSOR.match(text):
        raise ApiError(400, f"before must be the 'next' of a page (TIME:ID), not {text[:60]!r}")
    at, _, row_id = final_newline_off(text).partition(":")
    return float(at), row_id


def cursor_text(at: Any, row_id: str) -> str:
    """The cursor of a row (its time and id): what C{before} takes back."""
    return f"{float(at)!r}:{row_id}"


def next_cursor(rows: list[dict], size: int, time_key: str, id_key: str) -> Optional[str]:
    """The 'next' of a page of C{size} asked for: the last row's cursor, or None when this is the last page."""
    return cursor_text(rows[-1][time_key], rows[-1][id_key]) if rows and len(rows) == size else None
