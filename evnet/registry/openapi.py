"""
EV_Registry's OpenAPI document, hand-written: it describes exactly the
routes of L{evnet.registry.api.ROUTES} (tests/test_registry_api.py keeps it
so) and the limits of L{evnet.registry.checks}.
"""

from __future__ import annotations

from evnet.protocols.vocabulary import ID_RULE, MAX_PRICE
from evnet.registry.checks import DEFAULT_TTL, MAX_LOCATION, MAX_TTL, MIN_TTL, PREFIX

_ERR = {"$ref": "#/components/responses/Error"}
_ID = [{"name": "id", "in": "path", "required": True, "description": f"CP id: {ID_RULE}",
        "schema": {"type": "string", "pattern": "^[A-Za-z0-9_.-]{1,32}$"}}]
_DRIVER_ID = [{**_ID[0], "description": f"driver id: {ID_RULE}"}]
_ADMIN = [{"bearer": []}, {}]  # {}: from loopback when the Registry has no admin token file


def _json(schema: dict) -> dict:
    return {"application/json": {"schema": schema}}


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _answer(text: str, schema: str) -> dict:
    return {"description": text, "content": _json(_ref(schema))}


OPENAPI: dict = {
    "openapi": "3.0.3",
    "info": {
        "title": "EV_Registry API",
        "version": "1",
        "description": (
            "Charging points are registered (alta) with their location and price, receive a secret "
            "shown once, and are deregistered (baja). Admin calls need 'Authorization: Bearer TOKEN' "
            "with the admin token when the Registry runs with --admin-token-file, otherwise they are "
            "accepted only from loopback; PUT /api/v1/cps/{id} also accepts an enrollment token issued "
            "for that id (used once). Reading needs the admin token or loopback. Errors are "
            "{\"error\": \"...\"}; every refusal is recorded."
        ),
    },
    "paths": {
        f"{PREFIX}/enrollments": {"post": {
            "summary": "Issue a one-time enrollment token for a CP id (shown only in this answer)",
            "security": _ADMIN,
            "requestBody": {"required": True, "content": _json(_ref("EnrollmentRequest"))},
            "responses": {"201": _answer("the token", "Enrollment"), "400": _ERR, "401": _ERR, "403": _ERR,
                          "413": _ERR, "415": _ERR}}},
        f"{PREFIX}/cps": {"get": {
            "summary": "Every registration (registered and deregistered), by id", "security": _ADMIN,
            "responses": {"200": _answer("the registrations", "RegistrationList"), "401": _ERR, "403": _ERR}}},
        f"{PREFIX}/cps/{{id}}": {
            "get": {"summary": "One registration", "parameters": _ID, "security": _ADMIN,
                    "responses": {"200": _answer("the registration", "Registration"), "400": _ERR,
                                  "401": _ERR, "403": _ERR, "404": _ERR}},
            "put": {"summary": "Register a CP (alta), or register it again: new credentials, the old secret "
                               "stops working. The secret is shown only in this answer.",
                    "parameters": _ID, "security": [{"bearer": []}, {"enrollment": []}, {}],
                    "requestBody": {"required": True, "content": _json(_ref("RegistrationRequest"))},
                    "responses": {"201": _answer("registered (a new CP)", "Credentials"),
                                  "200": _answer("registered again", "Credentials"),
                                  "400": _ERR, "401": _ERR, "403": _ERR, "413": _ERR, "415": _ERR}},
            "delete": {"summary": "Deregister a CP (baja): its credentials stop working", "parameters": _ID,
                       "security": _ADMIN,
                       "responses": {"200": _answer("deregistered", "Deregistered"), "400": _ERR, "401": _ERR,
                                     "403": _ERR, "404": _ERR}},
        },
        f"{PREFIX}/drivers": {"get": {
            "summary": "Every driver account (signed up and removed), by id", "security": _ADMIN,
            "responses": {"200": _answer("the accounts", "DriverList"), "401": _ERR, "403": _ERR}}},
        f"{PREFIX}/drivers/{{id}}": {
            "put": {"summary": "Sign a driver up, or again (new credentials: the old secret stops working). The "
                               "secret is shown only in this answer.", "parameters": _DRIVER_ID, "security": _ADMIN,
                    "responses": {"201": _answer("signed up", "DriverCredentials"),
                                  "200": _answer("signed up again", "DriverCredentials"),
                                  "400": _ERR, "401": _ERR, "403": _ERR, "413": _ERR, "415": _ERR}},
            "delete": {"summary": "Remove a driver's credentials: they stop working", "parameters": _DRIVER_ID,
                       "security": _ADMIN,
                       "responses": {"200": _answer("removed", "Driver"), "400": _ERR, "401": _ERR, "403": _ERR,
                                     "404": _ERR}},
        },
        f"{PREFIX}/openapi.json": {"get": {
            "summary": "This document", "security": [{}],
            "responses": {"200": {"description": "OpenAPI 3", "content": {"application/json": {}}}}}},
    },
    "components": {
        "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer", "description": "the admin token"},
            "enrollment": {"type": "http", "scheme": "bearer",
                           "description": "an enrollment token issued for the path's CP id"},
        },
        "responses": {"Error": {"description": "refused", "content": _json({
            "type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}})}},
        "schemas": {
            "EnrollmentRequest": {"type": "object", "required": ["cp_id"], "additionalProperties": False,
                                  "properties": {
                                      "cp_id": {"type": "string"},
                                      "ttl_seconds": {"type": "integer", "minimum": MIN_TTL, "maximum": MAX_TTL,
                                                      "default": DEFAULT_TTL}}},
            "Enrollment": {"type": "object", "properties": {
                "cp_id": {"type": "string"}, "token": {"type": "string"},
                "expires_at": {"type": "number", "description": "seconds since the epoch"}}},
            "RegistrationRequest": {"type": "object", "required": ["location", "price"],
                                    "additionalProperties": False, "properties": {
                                        "location": {"type": "string", "minLength": 1, "maxLength": MAX_LOCATION},
                                        "price": {"type": "number", "minimum": 0, "maximum": MAX_PRICE,
                                                  "description": "€/kWh"}}},
            "Registration": {"type": "object", "properties": {
                "cp_id": {"type": "string"}, "location": {"type": "string"}, "price": {"type": "number"},
                "status": {"type": "string", "enum": ["registered", "deregistered"]},
                "registered_at": {"type": "number"}, "updated_at": {"type": "number"}}},
            "RegistrationList": {"type": "object", "properties": {
                "cps": {"type": "array", "items": _ref("Registration")}}},
            "Credentials": {"type": "object", "properties": {
                "cp_id": {"type": "string"}, "location": {"type": "string"}, "price": {"type": "number"},
                "secret": {"type": "string", "description": "shown once; the Registry keeps only a verifier"},
                "registered_at": {"type": "number"}, "updated_at": {"type": "number"},
                "status": {"type": "string", "enum": ["registered"]}}},
            "Driver": {"type": "object", "properties": {
                "driver_id": {"type": "string"}, "status": {"type": "string", "enum": ["registered", "deregistered"]},
                "created_at": {"type": "number"}, "updated_at": {"type": "number"}}},
            "DriverList": {"type": "object", "properties": {"drivers": {"type": "array", "items": _ref("Driver")}}},
            "DriverCredentials": {"type": "object", "properties": {
                "driver_id": {"type": "string"}, "status": {"type": "string", "enum": ["registered"]},
                "created_at": {"type": "number"}, "updated_at": {"type": "number"},
                "secret": {"type": "string", "description": "shown once; the Registry keeps only a verifier"}}},
            "Deregistered": {"type": "object", "properties": {
                "cp_id": {"type": "string"}, "status": {"type": "string", "enum": ["deregistered"]}}},
        },
    },
}
