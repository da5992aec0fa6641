"""
The OpenAPI 3 document of API_Central v1, served at
C{/api/v1/openapi.json}.  Hand-written, so that it says what a reader
needs; tests/test_web.py keeps it true to the route table
(L{evnet.central.web.routes.ROUTES}): the same paths and methods, each
answered with a documented status.  The old C{/api/...} paths (308
redirects to their v1 path) are not in it.
"""

from __future__ import annotations

import re

from evnet.central.alerts import CP_AUTH_WINDOW, KINDS as ALERT_KINDS, SEVERITIES
from evnet.central.audit import ACTOR_KINDS, CHAIN_CENTRAL, CHAIN_REGISTRY, OUTCOMES
from evnet.central.audittrail import DEFAULT_PAGE, MAX_PAGE
from evnet.central.web.filters import CURSOR_PATTERN, ID_PATTERN
from evnet.central.web.routes import PREFIX
from evnet.central.web.sse import KEEPALIVE_SECONDS, TICK_SECONDS
from evnet.central.web.summary import STATES
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
    stopped={"type": "boolean", "description": "the operator's activation: true from a stop (PARAR) to its resume "
             "(REANUDAR), across disconnections and restarts"},
    engine_ok=_BOOLEAN,
    available={"type": "boolean", "description": "a driver may charge here now: connected, ACTIVADO (in service, "
               "idle, its Engine healthy)"},
    weather_alert={"type": "boolean", "description": "a weather alert holds the CP's location: out of service "
                   "(PARADO) until it clears, whatever the operator's stop/resume"}, driver_id=_nullable(_STRING), session_id=_nullable(_STRING),
    kw=_nullable(_NUMBER), kwh=_nullable(_NUMBER), euros=_nullable(_NUMBER), seconds=_nullable(_INTEGER),
    registration={"type": "string", "enum": ["registered", "deregistered", "unknown"],
                  "description": "the CP's registration at EV_Registry, as Central last read it"},
    key={"type": "string", "enum": ["none", "active", "revoked"], "description": "the CP's session key (never shown)"},
    key_id=_nullable(_STRING), key_issued_at=_nullable(_NUMBER),
    key_revoked_by=_nullable({"type": "string", "description": "who revoked the key, while it is revoked"}),
)
_RESULT = {"ok": _BOOLEAN, "message": _STRING}
# The events of /api/v1/stream, each with its data's schema and how its JSON begins.
_SSE_DATA = {
    "snapshot": ("Snapshot", '{"type":"snapshot"'), "cp": ("CpEvent", '{"type":"cp"'),
    "telemetry": ("CpEvent", '{"type":"telemetry"'), "session": ("SessionEvent", '{"type":"session"'),
    "message": ("MessageEvent", '{"type":"message"'), "weather": ("WeatherEvent", '{"type":"weather"'),
    "alerts": ("Alerts", '{"alerts":'), "summary": ("Summary", '{"cps":'),
}


def _sse_event(name: str, schema: str, begins: str) -> dict:
    """One Server-Sent Event (OpenAPI 3.0 has no itemSchema: the schema is an event's): name, id, data."""
    return {
        "type": "object", "required": ["event", "data"],
        "properties": {
            "event": {"type": "string", "enum": [name]},
            "id": {"type": "string", "pattern": "^[0-9]+$"},
            "retry": _INTEGER,
            "data": {"type": "string", "pattern": "^" + re.escape(begins),
                     "description": f"one line of JSON: a {schema} (#/components/schemas/{schema})"},
        },
        "x-data-schema": _ref(schema),
    }


_SSE_EVENT = {"oneOf": [_sse_event(name, schema, begins) for name, (schema, begins) in _SSE_DATA.items()]}


def _weather(method: str, summary: str, ok: dict, body: str | None = None, parameters: list | None = None) -> dict:
    """One of EV_W's calls: EV_W's token only (401 without it or with a wrong one, 403 with the admin token)."""
    operation: dict = {"summary": summary, "security": [{"weather": []}]}
    if parameters:
        operation["parameters"] = parameters
    errors = ("401", "403")
    if body is not None:
        operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": _ref(body)}}}
        errors = ("400", *errors)
    return {method: {**operation, "responses": {**ok, **_errors(*errors)}}}


_LOCATION = [{"name": "location", "in": "path", "required": True, "schema": _STRING,
              "description": "a CP location, URL-encoded (Alicante%20Centro)"}]


def _query(name: str, text: str, schema: dict = _STRING) -> dict:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": text}


# Each filter exactly as the server reads it (schemathesis checks both ways): a time is whole or
# decimal seconds since the epoch, or ISO UTC; an action prefix ending in '*' holds no % _ or \\.
MAX_ROW_ID = 2**63 - 1  # a row id is a signed 64-bit integer in both databases
_TIME = {"type": "string", "minLength": 1,
         "pattern": r"^([0-9]{1,11}(\.[0-9]{1,6})?|[1-9][0-9]{3}-(0[1-9]|1[0-2])-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}"
                    r"(\.[0-9]{1,6})?Z?)$"}
_AUDIT_PARAMETERS = [
    _query("actor", f"KIND or KIND:ID; KIND one of {', '.join(ACTOR_KINDS)}",
           {"type": "string", "minLength": 1, "pattern": f"^({'|'.join(ACTOR_KINDS)})(:[\\s\\S]*)?$"}),
    _query("action", "an action (docs/audit.md), or a prefix ending in '*' (key.*)",
           {"type": "string", "minLength": 1, "pattern": r"^([\s\S]*[^*]|[^%_\\]*\*)$"}),
    _query("outcome", "the outcome", {"type": "string", "enum": list(OUTCOMES)}),
    _query("address", "the source host (without the port)", {"type": "string", "minLength": 1}),
    _query("since", "rows at or after this time: seconds since the epoch or YYYY-MM-DDTHH:MM:SS[.ffffff]Z (UTC)", _TIME),
    _query("until", "rows before this time (same forms)", _TIME),
    _query("chain", "one writer's chain", {"type": "string", "enum": [CHAIN_CENTRAL, CHAIN_REGISTRY]}),
    _query("before", "the 'next' of the page before: rows with a smaller id", {"type": "integer", "minimum": 0, "maximum": MAX_ROW_ID}),
    {"name": "limit", "in": "query", "required": False,
     "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE, "default": DEFAULT_PAGE}},
]
_BEFORE = _query("before", "the 'next' of the page before (TIME:ID): the rows before it",
                 {"type": "string", "pattern": CURSOR_PATTERN})
_SESSION_FILTERS = [
    _query("cp", "only this CP's charges", {"type": "string", "pattern": ID_PATTERN}),
    _query("driver", "only this driver's charges", {"type": "string", "pattern": ID_PATTERN}),
    _query("since", "charges started at or after this time: seconds since the epoch or "
           "YYYY-MM-DDTHH:MM:SS[.ffffff]Z (UTC)", _TIME),
    _query("until", "charges started before this time (same forms)", _TIME),
]
_ALERT = {**_object(
    id={"type": "string", "description": "KIND:SUBJECT, stable while the alert holds"},
    kind={"type": "string", "enum": list(ALERT_KINDS), "description": (
        "weather: an EV_W alert on a location; weather-stale: EV_W's heartbeats stopped; engine-lost: a CP "
        "AVERIADO because its Monitor lost its Engine; kafka: Kafka unreachable (Central runs --kafka); "
        f"database: the store failing; cp-auth: a CP whose login failed within the last {CP_AUTH_WINDOW:g} s")},
    subject={"type": "string", "description": "the location, CP id, 'EV_W', 'database' or the Kafka servers"},
    since={"type": "string", "description": "when it began, UTC: 2025-03-01T10:20:30.123456Z"},
    message=_STRING, severity={"type": "string", "enum": list(SEVERITIES)}),
    "required": ["id", "kind", "subject", "since", "message", "severity"]}
_SUMMARY = {**_object(
    cps={"type": "integer", "minimum": 0},
    states={**_object(**{state: {"type": "integer", "minimum": 0} for state in STATES}), "required": STATES},
    power_kw={"type": "number", "description": "the power of the charges in progress now"},
    today={**_object(energy_kwh=_NUMBER, revenue_eur=_NUMBER, sessions={"type": "integer", "minimum": 0}),
           "description": "since UTC midnight: the charges closed today plus those in progress",
           "required": ["energy_kwh", "revenue_eur", "sessions"]},
    alerts={"type": "integer", "minimum": 0, "description": "how many alerts hold (GET /api/v1/alerts)"},
    at={"type": "string", "description": "when it was computed, UTC: 2025-03-01T10:20:30.123456Z"}),
    "required": ["cps", "states", "power_kw", "today", "alerts", "at"]}
_SESSION = dict(id=_STRING, cp_id=_STRING, driver_id=_STRING, origin=_STRING, state=_STRING, started_at=_NUMBER,
                kwh=_NUMBER, kw=_NUMBER, euros=_NUMBER, seconds=_INTEGER)
_NEXT = _nullable({"type": "string", "description": "the 'before' of the next page; null on the last page"})

_AUDIT_ROW = _object(
    id=_INTEGER, chain=_STRING, seq=_INTEGER,
    at={"type": "string", "description": "UTC with microseconds: 2025-03-01T10:20:30.123456Z"},
    actor_kind={"type": "string", "enum": list(ACTOR_KINDS)}, actor_id=_STRING,
    address={"type": "string", "description": "source host ('' when none)"}, port=_nullable(_INTEGER),
    action=_STRING, outcome={"type": "string", "enum": list(OUTCOMES)},
    detail={"type": "object", "description": "what the action says (docs/audit.md)"},
    prev={"type": "string", "description": "hash of the row before it in its chain"},
    hash={"type": "string", "description": "HMAC-SHA256 of this row and prev, under the audit key"},
)

OPENAPI: dict = {
    "openapi": "3.0.3",
    "info": {
        "title": "API_Central v1: EV_Central's panel API",
        "version": "1",
        "description": (
            "Charging points, drivers, charges, application messages, alerts and the network's totals of EV_Central, "
            "the operator's stop/resume/revoke commands, and the audit trail, all under /api/v1. The paths before v1 "
            "(/api/cps, /api/stream, ...) answer 308 Permanent Redirect to their /api/v1 path (the query kept). Write calls (POST) and the audit trail need 'Authorization: Bearer TOKEN' when Central "
            "runs with --admin-token-file; otherwise they are accepted only from loopback. "
            "EV_W's calls under /api/v1/weather (docs/weather.md) need EV_W's own token "
            "(--weather-token-file); the admin token is refused there (403) and EV_W's token opens nothing else. "
            "Errors are {\"error\": \"...\"}."
        ),
    },
    "paths": {PREFIX + path: operations for path, operations in {
        "/cps": _get("Every charging point", _ok("CpList", "the CPs, by id")),
        "/cps/{id}": _get("One charging point", {**_ok("Cp", "the CP"), **_errors("404")}, _ID),
        "/cps/{id}/stop": _write("Stop a CP (PARAR): ends its charge, leaves it PARADO (Out of Order)",
                                     _ok("CommandResult", "stopped (or already stopped)"), "404", parameters=_ID),
        "/cps/{id}/resume": _write("Resume a stopped CP (REANUDAR)", _ok("CommandResult", "resumed"),
                                       "404", "409", parameters=_ID),
        "/cps/{id}/revoke": _write(
            "Revoke a CP's key: REVOKED to its Monitor, its link closed, its charge ended with a ticket; it is out of "
            "service (DESCONECTADO, key revoked) until its Monitor logs in again",
            _ok("CommandResult", "revoked (or already revoked)"), "404", "409", parameters=_ID),
        "/cps/stop": _write("Stop every CP", _ok("AllResult", "one result per CP")),
        "/cps/resume": _write("Resume every stopped CP", _ok("AllResult", "one result per stopped CP")),
        "/drivers": _get("The drivers' accounts at EV_Registry (signed up or removed), newest first and paged, each "
                         "with whether it is connected now and its charge in progress",
                         {**_ok("Drivers", "a page of accounts; 'next' is the 'before' of the next page, or null"),
                          **_errors("400")}, _LIMIT + [_BEFORE]),
        "/drivers/{id}/cancel": _write(
            "Cancel a driver's charge in progress: it ends now with a ticket (reason 'cancelled by the driver')",
            _ok("CancelResult", "cancelled"), "409",
            parameters=[{**_ID[0], "description": "driver id"}]),
        "/sessions": _get("Charges in progress and a page of the stored charges with their tickets, newest first, "
                          "filtered by CP, driver and start time",
                          {**_ok("Sessions", "ongoing, and a page of recent; 'next' is the 'before' of the next page, "
                                 "or null"), **_errors("400")}, _SESSION_FILTERS + _LIMIT + [_BEFORE]),
        "/alerts": _get("The alerts from every part of the network now, the critical ones first",
                        _ok("Alerts", "every alert that holds")),
        "/summary": _get("The network's totals: CPs per state, power now, today's energy, revenue and charges "
                         "(since UTC midnight), alerts", _ok("Summary", "the totals now")),
        "/events": _get("Recent application messages, newest first",
                            {**_ok("Events", "the messages"), **_errors("400")}, _LIMIT),
        "/stream": _get(
            "Server-Sent Events: 'snapshot' first (cps, sessions, messages, weather), then the last 'alerts' and "
            "'summary', then one event per change: 'cp', 'telemetry' (data.cp), 'session' (data.session), "
            "'message' (at, kind, subject, text), 'weather'; 'alerts' when the alert list changes and 'summary' "
            f"(at most every {TICK_SECONDS:g} s) when anything changed; a ': keep-alive' comment every "
            f"{KEEPALIVE_SECONDS:g} s. Each event's data is one line of JSON: its schema is the event's x-data-schema",
            {"200": {"description": "the event stream", "content": {"text/event-stream": {"schema": _SSE_EVENT}}}}),
        "/audit": {"get": {
            "summary": "The audit trail, newest first, filtered and paged (admin token, or loopback without one)",
            "parameters": _AUDIT_PARAMETERS, "security": [{"bearer": []}, {}],
            "responses": {**_ok("AuditPage", "a page of rows; 'next' is the 'before' of the next page, or null"),
                          **_errors("400", "401", "403")}}},
        "/openapi.json": _get("This document",
                                  {"200": {"description": "OpenAPI 3", "content": {"application/json": {}}}}),
        "/weather": _get("The weather alerts Central holds and EV_W's health",
                                _ok("Weather", "alerts by location, EV_W's health")),
        "/weather/alerts": _weather(
            "post", "Raise (or refresh) a weather alert: every CP of that location goes out of service "
            "(reason 'weather alert') until it is cleared; a second call updates the temperature and time",
            _ok("WeatherRaised", "the alert is held; the CPs of its location"), "WeatherAlertBody"),
        "/weather/alerts/{location}": _weather(
            "delete", "Clear a weather alert: its CPs return to service unless the operator stopped them",
            _ok("WeatherCleared", "cleared: false when there was none"), parameters=_LOCATION),
        "/weather/health": _weather(
            "put", "EV_W's heartbeat, every poll", _ok("Ok", "taken"), "Heartbeat"),
    }.items()},
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"},
                            "weather": {"type": "http", "scheme": "bearer",
                                        "description": "EV_W's token (evcentral --weather-token-file)"}},
        "responses": {"Error": {"description": "refused", "content": {"application/json": {"schema": {
            "type": "object", "required": ["error"], "properties": {"error": _STRING}}}}}},
        "schemas": {
            "Cp": _CP,
            "CpList": _object(cps=_array(_ref("Cp"))),
            "CommandResult": _object(**_RESULT, cp=_ref("Cp")),
            "Drivers": _object(driver_auth={"type": "string", "enum": ["required", "optional"]}, drivers=_array(_object(
                driver_id=_STRING, status={"type": "string", "enum": ["registered", "deregistered"]},
                created_at=_NUMBER, updated_at=_NUMBER, connected=_BOOLEAN, session_id=_nullable(_STRING))),
                next=_NEXT),
            "CancelResult": _object(**_RESULT, session_id=_STRING),
            "AllResult": _object(results=_array(_object(**_RESULT)), cps=_array(_ref("Cp"))),
            "Session": _object(**_SESSION),
            "StoredSession": _object(
                id=_STRING, cp_id=_STRING, driver_id=_STRING, origin=_STRING,
                status={"type": "string", "enum": ["open", "closed"]}, price=_NUMBER, target_kwh=_NUMBER,
                started_at=_NUMBER, ended_at=_nullable(_NUMBER), kwh=_NUMBER, euros=_NUMBER, seconds=_INTEGER,
                end_reason=_nullable(_STRING), ticket_delivered=_BOOLEAN),
            "Sessions": _object(ongoing=_array(_ref("Session")), recent=_array(_ref("StoredSession")), next=_NEXT),
            "Alert": _ALERT,
            "Alerts": {**_object(alerts=_array(_ref("Alert"))), "required": ["alerts"]},
            "Summary": _SUMMARY,
            "Message": _object(at=_NUMBER, kind=_STRING, subject=_STRING, text=_STRING),
            "Snapshot": _object(type={"type": "string", "enum": ["snapshot"]}, cps=_array(_ref("Cp")),
                                sessions=_array(_ref("Session")), messages=_array(_ref("Message")),
                                weather=_ref("Weather")),
            "CpEvent": _object(type={"type": "string", "enum": ["cp", "telemetry"]}, cp=_ref("Cp")),
            "SessionEvent": _object(type={"type": "string", "enum": ["session"]}, session=_object(
                **{**_SESSION, "reason": {"type": "string", "description": "why it ended (state closed)"}})),
            "MessageEvent": _object(type={"type": "string", "enum": ["message"]}, at=_NUMBER, kind=_STRING,
                                    subject=_STRING, text=_STRING),
            "WeatherEvent": _object(type={"type": "string", "enum": ["weather"]}, weather=_ref("Weather")),
            "AuditRow": _AUDIT_ROW,
            "AuditPage": _object(rows=_array(_ref("AuditRow")), next=_nullable(_INTEGER)),
            "Events": _object(events=_array(_object(
                id=_INTEGER, at=_NUMBER, kind=_STRING, subject=_STRING, text=_STRING))),
            "WeatherAlertBody": {**_object(
                location={"type": "string", "maxLength": 255, "description": "a CP location as /api/cps lists it"},
                city={"type": "string", "maxLength": 80}, temperature={"type": "number", "description": "°C"},
                observed_at={"type": "number", "description": "Unix time EV_W read it"}),
                "required": ["location", "city", "temperature", "observed_at"]},
            "WeatherRaised": _object(ok=_BOOLEAN, location=_STRING, cps=_array(_STRING)),
            "WeatherCleared": _object(ok=_BOOLEAN, cleared=_BOOLEAN),
            "Heartbeat": {**_object(
                at={"type": "number", "description": "EV_W's clock, Unix time"},
                interval={"type": "number", "description": "EV_W's --interval, seconds"},
                cities={"type": "integer", "minimum": 0}, failing=_array(_STRING)),
                "required": ["at", "interval", "cities"]},
            "Ok": _object(ok=_BOOLEAN),
            "Weather": _object(
                alerts=_array(_object(location=_STRING, city=_STRING, temperature=_NUMBER, observed_at=_NUMBER,
                                      raised_at=_NUMBER, updated_at=_NUMBER, cps=_array(_STRING))),
                health=_object(
                    state={"type": "string", "enum": ["not heard from", "healthy", "unhealthy"],
                           "description": "unhealthy: no heartbeat for 3 x its interval"},
                    last_heartbeat=_nullable(_NUMBER), silent_for=_nullable(_NUMBER), interval=_nullable(_NUMBER),
                    unhealthy_after=_nullable(_NUMBER), cities=_nullable(_INTEGER), failing=_array(_STRING),
                    at=_nullable(_NUMBER)),
                stale_after={"type": "number", "description": "seconds of EV_W's silence before Central clears "
                             "every alert (--weather-stale)"}),
        },
    },
}
