"""
OCPP-J 1.6 frames: CALL ``[2, id, action, payload]``, CALLRESULT
``[3, id, payload]`` and CALLERROR ``[4, id, code, description, details]``,
and every payload checked against the official OCPP 1.6 JSON schemas that
the ``ocpp`` package ships (read from its ``v16/schemas`` directory, checked
with ``jsonschema``'s Draft 4 validator, as the schemas declare).

Pure: no I/O beyond reading the schema files once, no Twisted.  What is
wrong with a frame is an L{OcppError} carrying the CALLERROR code of
OCPP-J 1.6 §4.2.3 and the unique id it answers ("-1" when the frame does
not say one, as OCPP 2.0.1 prescribes and 1.6 leaves open).
"""

from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Optional, Union

from jsonschema import Draft4Validator
from jsonschema.exceptions import best_match

CALL, CALLRESULT, CALLERROR = 2, 3, 4
SUBPROTOCOL = "ocpp1.6"
MAX_UNIQUE_ID = 36  # OCPP-J 1.6 §4.1.3
UNKNOWN_ID = "-1"

# The CALLERROR codes of OCPP-J 1.6 §4.2.3, spelled as 1.6 spells them.
NOT_IMPLEMENTED = "NotImplemented"  # the action is not known
NOT_SUPPORTED = "NotSupported"  # the action is known but not supported here
INTERNAL_ERROR = "InternalError"
PROTOCOL_ERROR = "ProtocolError"  # the payload is incomplete
SECURITY_ERROR = "SecurityError"
FORMATION_VIOLATION = "FormationViolation"  # syntactically wrong, or not the PDU's structure
PROPERTY_CONSTRAINT = "PropertyConstraintViolation"  # a field holds a value it may not
OCCURENCE_CONSTRAINT = "OccurenceConstraintViolation"  # too few or too many of something
TYPE_CONSTRAINT = "TypeConstraintViolation"  # a field of the wrong type
GENERIC_ERROR = "GenericError"
ERROR_CODES = (
    NOT_IMPLEMENTED, NOT_SUPPORTED, INTERNAL_ERROR, PROTOCOL_ERROR, SECURITY_ERROR, FORMATION_VIOLATION,
    PROPERTY_CONSTRAINT, OCCURENCE_CONSTRAINT, TYPE_CONSTRAINT, GENERIC_ERROR,
)

# jsonschema's failed keyword -> the CALLERROR code that says it.
_SCHEMA_ERRORS = {
    "required": PROTOCOL_ERROR,
    "type": TYPE_CONSTRAINT,
    "maxLength": TYPE_CONSTRAINT,  # CiString20Type and kin are types of bounded length
    "enum": PROPERTY_CONSTRAINT,
    "minimum": PROPERTY_CONSTRAINT,
    "maximum": PROPERTY_CONSTRAINT,
    "multipleOf": PROPERTY_CONSTRAINT,
    "format": PROPERTY_CONSTRAINT,
    "minItems": OCCURENCE_CONSTRAINT,
    "maxItems": OCCURENCE_CONSTRAINT,
    "additionalProperties": FORMATION_VIOLATION,
}


class OcppError(Exception):
    """A frame or payload refused: answer C{unique_id} with CALLERROR C{code}."""

    def __init__(self, code: str, description: str, unique_id: str = UNKNOWN_ID, details: Optional[dict] = None):
        super().__init__(f"{code}: {description}")
        self.code = code
        self.description = description
        self.unique_id = unique_id
        self.details = details or {}

    def frame(self) -> str:
        return encode_error(self.unique_id, self.code, self.description, self.details)


@dataclass(frozen=True)
class Call:
    unique_id: str
    action: str
    payload: dict


@dataclass(frozen=True)
class CallResult:
    unique_id: str
    payload: dict


@dataclass(frozen=True)
class CallError:
    unique_id: str
    code: str
    description: str
    details: dict = field(default_factory=dict)


Frame = Union[Call, CallResult, CallError]


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse(text: Union[str, bytes]) -> Frame:
    """The frame in one WebSocket text message, or L{OcppError} (FormationViolation) saying why not."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise OcppError(FORMATION_VIOLATION, "the message is not UTF-8 text") from None
    try:
        frame = json.loads(text, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        raise OcppError(FORMATION_VIOLATION, "the message is not JSON") from None
    if not isinstance(frame, list) or not frame:
        raise OcppError(FORMATION_VIOLATION, "an OCPP-J message is a JSON array [MessageTypeId, UniqueId, ...]")
    kind = frame[0]
    unique_id = frame[1] if len(frame) > 1 and isinstance(frame[1], str) else None
    answer = unique_id if unique_id and len(unique_id) <= MAX_UNIQUE_ID else UNKNOWN_ID

    def wrong(why: str) -> OcppError:
        return OcppError(FORMATION_VIOLATION, why, answer)

    if isinstance(kind, bool) or kind not in (CALL, CALLRESULT, CALLERROR):
        raise wrong(f"MessageTypeId {kind!r} is not 2 (CALL), 3 (CALLRESULT) nor 4 (CALLERROR)")
    if unique_id is None:
        raise wrong("the UniqueId must be a string")
    if not unique_id or len(unique_id) > MAX_UNIQUE_ID:
        raise wrong(f"the UniqueId must be 1 to {MAX_UNIQUE_ID} characters")
    if kind == CALL:
        if len(frame) != 4:
            raise wrong("a CALL is [2, UniqueId, Action, Payload]")
        _, _, action, payload = frame
        if not isinstance(action, str) or not action:
            raise wrong("the Action must be a non-empty string")
        if not isinstance(payload, dict):
            raise wrong("the Payload of a CALL must be a JSON object")
        return Call(unique_id, action, payload)
    if kind == CALLRESULT:
        if len(frame) != 3 or not isinstance(frame[2], dict):
            raise wrong("a CALLRESULT is [3, UniqueId, Payload] with an object as Payload")
        return CallResult(unique_id, frame[2])
    if len(frame) != 5 or not all(isinstance(x, str) for x in frame[2:4]) or not isinstance(frame[4], dict):
        raise wrong("a CALLERROR is [4, UniqueId, ErrorCode, ErrorDescription, ErrorDetails]")
    return CallError(unique_id, frame[2], frame[3], frame[4])


def _dump(frame: list) -> str:
    return json.dumps(frame, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def encode_call(unique_id: str, action: str, payload: dict) -> str:
    return _dump([CALL, unique_id, action, payload])


def encode_result(unique_id: str, payload: dict) -> str:
    return _dump([CALLRESULT, unique_id, payload])


def encode_error(unique_id: str, code: str, description: str, details: Optional[dict] = None) -> str:
    return _dump([CALLERROR, unique_id, code, description[:255], details or {}])


# -- the schemas -----------------------------------------------------------------


def schema_dir() -> str:
    """The OCPP 1.6 JSON schemas of the installed ``ocpp`` package."""
    spec = importlib.util.find_spec("ocpp")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the 'ocpp' package (its OCPP 1.6 JSON schemas) is not installed")
    return os.path.join(list(spec.submodule_search_locations)[0], "v16", "schemas")


@lru_cache(maxsize=None)
def actions() -> frozenset[str]:
    """Every action OCPP 1.6 defines a schema for (Core, the other profiles, the security extension)."""
    names = os.listdir(schema_dir())
    return frozenset(n[: -len(".json")] for n in names if n.endswith(".json") and not n.endswith("Response.json"))


@lru_cache(maxsize=None)
def _validator(name: str) -> Draft4Validator:
    with open(os.path.join(schema_dir(), name + ".json"), encoding="utf-8-sig") as f:
        schema = json.load(f)
    Draft4Validator.check_schema(schema)
    return Draft4Validator(schema)


def _check(name: str, payload: dict, unique_id: str) -> None:
    error = best_match(_validator(name).iter_errors(payload))
    if error is None:
        return
    where = "/".join(str(p) for p in error.absolute_path) or "the payload"
    code = _SCHEMA_ERRORS.get(str(error.validator), FORMATION_VIOLATION)
    raise OcppError(code, f"{name}: {where}: {error.message}"[:255], unique_id)


def validate_request(action: str, payload: dict, unique_id: str = UNKNOWN_ID) -> None:
    """C{payload} is a valid CALL of C{action}, or L{OcppError} (NotImplemented for an unknown action)."""
    if action not in actions():
        shown = action if len(action) <= 40 else action[:40] + "…"
        raise OcppError(NOT_IMPLEMENTED, f"action {shown!r} is not an OCPP 1.6 action", unique_id)
    _check(action, payload, unique_id)


def validate_response(action: str, payload: dict, unique_id: str = UNKNOWN_ID) -> None:
    """C{payload} is a valid CALLRESULT of C{action}, or L{OcppError}."""
    _check(action + "Response", payload, unique_id)
