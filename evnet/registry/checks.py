"""
What EV_Registry's API accepts from a caller: its limits, the checks of
each field (a CP id, a location, a price, a token's lifetime, a body's
fields) and L{Refused}, the error those checks raise (an answer and the
audit row that says more).  Shared by the API (L{evnet.registry.api}) and
its OpenAPI document (L{evnet.registry.openapi}), which states the same
limits.
"""

from __future__ import annotations

import math
import re
from typing import Any, Optional

from evnet.httpapi import ApiError
from evnet.protocols.vocabulary import ID_RULE, MAX_PRICE, valid_id

PREFIX = "/api/v1"
DEFAULT_TTL = 86400
MIN_TTL = 60
MAX_TTL = 30 * 86400
MAX_LOCATION = 255
TOKEN_BYTES = 32  # enrollment tokens: 256 random bits
MAX_BODY = 16 * 1024  # bytes: a registration is a few dozen
_BAD_TEXT = re.compile("[#\x00-\x1f\x7f]")  # what a location cannot hold on the wire (docs/protocol.md)


class Refused(ApiError):
    """An L{ApiError} whose audit row says more than the answer (C{audit})."""

    def __init__(self, status: int, text: str, audit: Optional[str] = None,
                 headers: Optional[dict[str, str]] = None) -> None:
        super().__init__(status, text, headers)
        self.audit = audit or text



def check_cp_id(value: Any, field: str = "cp_id") -> str:
    if not isinstance(value, str) or not valid_id(value):
        raise Refused(400, f"{field}: a CP id is {ID_RULE}")
    return value


def check_fields(body: Any, required: tuple[str, ...], optional: tuple[str, ...] = ()) -> dict:
    if not isinstance(body, dict):
        raise Refused(400, "the body must be a JSON object")
    for name in required:
        if name not in body:
            raise Refused(400, f"{name}: missing")
    unknown = sorted(set(body) - set(required) - set(optional))
    if unknown:
        raise Refused(400, f"{unknown[0]}: unknown field (expected {', '.join(required + optional)})")
    return body


def check_location(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise Refused(400, "location: a non-empty text")
    value = value.strip()
    if len(value) > MAX_LOCATION or _BAD_TEXT.search(value):
        raise Refused(400, f"location: at most {MAX_LOCATION} characters, without '#' nor control characters")
    return value


def check_price(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not 0 <= value <= MAX_PRICE:
        raise Refused(400, f"price: a number of €/kWh from 0 to {MAX_PRICE:g}")
    return round(float(value), 3)


def check_ttl(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not MIN_TTL <= value <= MAX_TTL:
        raise Refused(400, f"ttl_seconds: a whole number of seconds from {MIN_TTL} to {MAX_TTL}")
    return value
