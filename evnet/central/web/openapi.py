"""
The OpenAPI 3 document served at C{/api/openapi.json}.  Hand-written, so
that it says what a reader needs; tests/test_web.py keeps it true to the
route table (L{evnet.central.web.api.ROUTES}): the same paths and methods,
each answered with a documented status.
"""

from __future__ import annotations

from evnet.central.web.sse import KEEPALIVE_SECONDS
from evnet.central.web.views import DEFAULT_LIMIT, MAX_LIMIT

_ERR = {"$ref": "#/components/responses/Error"}
_ID = [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}, "description": "CP id"}]
_LIMIT = [{"name": "limit", "in": "query", "required": False,
           "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT}}]
_STRING = {"type": "string"}
_NUMBER = {"type": "number"}
_INTEGER = {"type": "integer"}
_BOOLEAN = {"type": "boolean"}


def _ref(schema: str) -> dict:
    return {"$ref": f"#/components/schemas/{schema}"}


def _array(items: dict) -> dict:
    return {"type": "array", "items": items}


def _object(**properties: dict) -> dict:
    return {"type": "object", "properties": properties}


def _nullable(schema: dict) -> dict:
    return {**schema, "nullable": True}


def _ok(schema: str, text: str) -> dict:
    return {"200": {"description": text, "content": {"application/json": {"schema": _ref(schema)}}}}


def _errors(*codes: str) -> dict:
    return {code: _ERR for code in codes}


def _get(summary: str, responses: dict, parameters: list | None = None) -> dict:
    operation: dict = {"summary": summary}
    if parameters:
        operation["parameters"] = parameters
    return {"get": {**operation, "responses": responses}}


def _write(summary: str, ok: dict, *errors: str, parameters: list | None = None) -> dict:
    """A POST guarded by the admin token (or loopback): it may always answer 401 and 403."""
    operation: dict = {"summary": summary}
    if parameters:
        operation["parameters"] = parameters
    operation["security"] = [{"bearer": []}, {}]
    return {"post": {**operation, "responses": {**ok, **_errors("401", "403", *errors)}}}


_CP = _object(
    id=_STRING, location=_STRING, price=_NUMBER,
    state={"type": "string", "enum": ["ACTIVADO", "PARADO", "SUMINISTRANDO", "AVERIADO", "DESCONECTADO"]},
    stopped=_BOOLEAN, engine_ok=_BOOLEAN, driver_id=_nullable(_STRING), session_id=_nullable(_STRING),
    kw=_nullable(_NUMBER), kwh=_nullable(_NUMBER), euros=_nullable(_NUMBER), seconds=_nullable(_INTEGER),
    registration={"type": "string", "enum": ["registered", "deregistered", "unknown"],
                  "description": "the CP's registration at EV_Registry, as Central last read it"},
    key={"type": "string", "enum": ["none", "active", "revoked"], "description": "the CP's session key (never shown)"},
    key_id=_nullable(_STRING), key_issued_at=_nullable(_NUMBER),
    key_revoked_by=_nullable({"type": "string", "description": "who revoked the key, while it is revoked"}),
)
_RESULT = {"ok": _BOOLEAN, "message": _STRING}

OPENAPI: dict = {
    "openapi": "3.0.3",
    "info": {
        "title": "EV_Central panel API",
        "version": "1",
        "description": (
            "Charging points, charges and application messages of EV_Central, and the operator's "
            "stop/resume/revoke commands. Write calls (POST) need 'Authorization: Bearer TOKEN' when Central "
            "runs with --admin-token-file; otherwise they are accepted only from loopback. "
            "Errors are {\"error\": \"...\"}."
        ),
    },
    "paths": {
        "/api/cps": _get("Every charging point", _ok("CpList", "the CPs, by id")),
        "/api/cps/{id}": _get("One charging point", {**_ok("Cp", "the CP"), **_errors("404")}, _ID),
        "/api/cps/{id}/stop": _write("Stop a CP (PARAR): ends its charge, leaves it PARADO (Out of Order)",
                                     _ok("CommandResult", "stopped (or already stopped)"), "404", parameters=_ID),
        "/api/cps/{id}/resume": _write("Resume a stopped CP (REANUDAR)", _ok("CommandResult", "resumed"),
                                       "404", "409", parameters=_ID),
        "/api/cps/{id}/revoke": _write(
            "Revoke a CP's key: REVOKED to its Monitor, its link closed, its charge ended with a ticket; it is out of "
            "service (DESCONECTADO, key revoked) until its Monitor logs in again",
            _ok("CommandResult", "revoked (or already revoked)"), "404", "409", parameters=_ID),
        "/api/cps/stop": _write("Stop every CP", _ok("AllResult", "one result per CP")),
        "/api/cps/resume": _write("Resume every stopped CP", _ok("AllResult", "one result per stopped CP")),
        "/api/drivers": _get("The drivers' accounts at EV_Registry (signed up or removed), each with whether it is "
                             "connected now and its charge in progress", _ok("Drivers", "the accounts, by id")),
        "/api/drivers/{id}/cancel": _write(
            "Cancel a driver's charge in progress: it ends now with a ticket (reason 'cancelled by the driver')",
            _ok("CancelResult", "cancelled"), "409",
            parameters=[{**_ID[0], "description": "driver id"}]),
        "/api/sessions": _get("Charges in progress and recent charges with their tickets",
                              {**_ok("Sessions", "ongoing and recent"), **_errors("400")}, _LIMIT),
        "/api/events": _get("Recent application messages, newest first",
                            {**_ok("Events", "the messages"), **_errors("400")}, _LIMIT),
        "/api/stream": _get(
            "Server-Sent Events: 'snapshot' first (cps, sessions, messages), then one event per "
            "change: 'cp', 'telemetry' (data.cp), 'session' (data.session), 'message' (at, kind, "
            f"subject, text); a ': keep-alive' comment every {KEEPALIVE_SECONDS:g} s",
            {"200": {"description": "the event stream", "content": {"text/event-stream": {"schema": _STRING}}}}),
        "/api/openapi.json": _get("This document",
                                  {"200": {"description": "OpenAPI 3", "content": {"application/json": {}}}}),
    },
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "responses": {"Error": {"description": "refused", "content": {"application/json": {"schema": {
            "type": "object", "required": ["error"], "properties": {"error": _STRING}}}}}},
        "schemas": {
            "Cp": _CP,
            "CpList": _object(cps=_array(_ref("Cp"))),
            "CommandResult": _object(**_RESULT, cp=_ref("Cp")),
            "Drivers": _object(driver_auth={"type": "string", "enum": ["required", "optional"]}, drivers=_array(_object(
                driver_id=_STRING, status={"type": "string", "enum": ["registered", "deregistered"]},
                created_at=_NUMBER, updated_at=_NUMBER, connected=_BOOLEAN, session_id=_nullable(_STRING)))),
            "CancelResult": _object(**_RESULT, session_id=_STRING),
            "AllResult": _object(results=_array(_object(**_RESULT)), cps=_array(_ref("Cp"))),
            "Session": _object(
                id=_STRING, cp_id=_STRING, driver_id=_STRING, origin=_STRING, state=_STRING, started_at=_NUMBER,
                kwh=_NUMBER, kw=_NUMBER, euros=_NUMBER, seconds=_INTEGER),
            "StoredSession": _object(
                id=_STRING, cp_id=_STRING, driver_id=_STRING, origin=_STRING,
                status={"type": "string", "enum": ["open", "closed"]}, price=_NUMBER, target_kwh=_NUMBER,
                started_at=_NUMBER, ended_at=_nullable(_NUMBER), kwh=_NUMBER, euros=_NUMBER, seconds=_INTEGER,
                end_reason=_nullable(_STRING), ticket_delivered=_BOOLEAN),
            "Sessions": _object(ongoing=_array(_ref("Session")), recent=_array(_ref("StoredSession"))),
            "Events": _object(events=_array(_object(
                id=_INTEGER, at=_NUMBER, kind=_STRING, subject=_STRING, text=_STRING))),
        },
    },
}
