"""OCPP-J frames and their validation against the ocpp package's OCPP 1.6 schemas (evnet.central.ocpp.codec, mapping)."""

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from evnet.central.ocpp import codec, mapping
from evnet.central.ocpp.codec import OcppError


def error_of(fn, *args):
    with pytest.raises(OcppError) as e:
        fn(*args)
    return e.value


def test_frames_round_trip():
    assert codec.parse(codec.encode_call("1", "Heartbeat", {})) == codec.Call("1", "Heartbeat", {})
    assert codec.parse(codec.encode_result("1", {"currentTime": "x"})) == codec.CallResult("1", {"currentTime": "x"})
    error = codec.parse(codec.encode_error("9", codec.GENERIC_ERROR, "no", {"a": 1}))
    assert error == codec.CallError("9", "GenericError", "no", {"a": 1})


@pytest.mark.parametrize("text, unique_id", [
    ("not json", "-1"),
    (b"\xff\xfe", "-1"),
    ("{}", "-1"),
    ("[]", "-1"),
    ('[2, 5, "Heartbeat", {}]', "-1"),  # the UniqueId is not a string
    ('[7, "a", "Heartbeat", {}]', "a"),  # no such MessageTypeId
    ('[true, "a", "Heartbeat", {}]', "a"),
    ('[2, "a", "Heartbeat"]', "a"),
    ('[2, "a", "Heartbeat", []]', "a"),
    ('[2, "a", 3, {}]', "a"),
    ('[2, "' + "x" * 37 + '", "Heartbeat", {}]', "-1"),  # longer than 36
    ('[2, "", "Heartbeat", {}]', "-1"),
    ('[3, "a"]', "a"),
    ('[4, "a", "GenericError"]', "a"),
    ('[2, "a", "Heartbeat", {"x": NaN}]', "-1"),
])
def test_a_malformed_frame_is_a_formation_violation_answering_its_id(text, unique_id):
    e = error_of(codec.parse, text)
    assert (e.code, e.unique_id) == (codec.FORMATION_VIOLATION, unique_id)
    frame = json.loads(e.frame())
    assert frame[:3] == [4, unique_id, "FormationViolation"] and frame[4] == {}


@given(st.binary(max_size=200))
def test_garbage_never_escapes_as_anything_but_an_ocpp_error(data):
    try:
        codec.parse(data)
    except OcppError as e:
        assert e.code in codec.ERROR_CODES
        json.loads(e.frame())


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                    lambda kids: st.lists(kids, max_size=5) | st.dictionaries(st.text(max_size=5), kids, max_size=4)))
def test_any_json_is_a_frame_or_an_ocpp_error(value):
    try:
        frame = codec.parse(json.dumps(value))
    except OcppError as e:
        assert e.code == codec.FORMATION_VIOLATION
    else:
        assert isinstance(frame, (codec.Call, codec.CallResult, codec.CallError))


def test_the_schemas_are_the_ocpp_packages():
    assert {"BootNotification", "StartTransaction", "RemoteStartTransaction", "DataTransfer"} <= codec.actions()
    assert "BootNotificationResponse" not in codec.actions()
    assert codec.schema_dir().endswith("ocpp/v16/schemas")


BOOT = {"chargePointVendor": "V", "chargePointModel": "M"}


@pytest.mark.parametrize("payload, code", [
    ({"chargePointVendor": "V"}, codec.PROTOCOL_ERROR),  # required field missing
    ({"chargePointVendor": 3, "chargePointModel": "M"}, codec.TYPE_CONSTRAINT),
    ({**BOOT, "chargePointVendor": "V" * 21}, codec.TYPE_CONSTRAINT),  # CiString20Type
    ({**BOOT, "extra": 1}, codec.FORMATION_VIOLATION),
])
def test_a_bad_boot_notification_gets_the_code_that_says_why(payload, code):
    e = error_of(codec.validate_request, "BootNotification", payload, "u1")
    assert (e.code, e.unique_id) == (code, "u1")


def test_enum_and_occurrence_violations():
    status = {"connectorId": 1, "errorCode": "NoError", "status": "Exploded"}
    assert error_of(codec.validate_request, "StatusNotification", status).code == codec.PROPERTY_CONSTRAINT
    meter = {"connectorId": 1, "meterValue": []}
    assert error_of(codec.validate_request, "MeterValues", meter).code == codec.OCCURENCE_CONSTRAINT


def test_an_unknown_action_is_not_implemented_and_responses_are_checked_too():
    assert error_of(codec.validate_request, "MakeCoffee", {}).code == codec.NOT_IMPLEMENTED
    codec.validate_response("RemoteStartTransaction", {"status": "Accepted"})
    assert error_of(codec.validate_response, "RemoteStartTransaction", {"status": "Maybe"}).code == codec.PROPERTY_CONSTRAINT


# -- mapping ------------------------------------------------------------------------


def test_timestamps():
    assert mapping.timestamp("2026-01-01T10:00:00Z", "u", "t") == 1767261600.0
    assert mapping.timestamp("2026-01-01T11:00:00+01:00", "u", "t") == 1767261600.0
    assert mapping.timestamp("2026-01-01T10:00:00", "u", "t") == 1767261600.0  # UTC when unsaid
    assert error_of(mapping.timestamp, "yesterday", "u", "t").code == codec.PROPERTY_CONSTRAINT
    assert mapping.now_text(1767261600.25) == "2026-01-01T10:00:00.250Z"


def test_a_reading_takes_the_energy_register_and_the_power_in_any_unit():
    mv = {"timestamp": "2026-01-01T10:00:00Z", "sampledValue": [
        {"value": "12.5", "unit": "kWh", "measurand": "Energy.Active.Import.Register"},
        {"value": "7.2", "unit": "kW", "measurand": "Power.Active.Import"},
        {"value": "230", "unit": "V", "measurand": "Voltage"},
    ]}
    assert mapping.reading(mv, "u") == mapping.Reading(1767261600.0, 12500.0, 7200.0)
    # No measurand is the energy register, in Wh; phases add up when there is no total.
    mv = {"timestamp": "2026-01-01T10:00:00Z", "sampledValue": [{"value": "100"}]}
    assert mapping.reading(mv, "u").wh == 100.0
    mv = {"timestamp": "2026-01-01T10:00:00Z", "sampledValue": [
        {"value": "10", "phase": "L1"}, {"value": "20", "phase": "L2"}]}
    assert mapping.reading(mv, "u").wh == 30.0
    bad = {"timestamp": "2026-01-01T10:00:00Z", "sampledValue": [{"value": "lots"}]}
    assert error_of(mapping.reading, bad, "u").code == codec.PROPERTY_CONSTRAINT


def test_stop_reasons_and_faults():
    assert mapping.stop_reason("EVDisconnected", None) == "unplug"
    assert mapping.stop_reason("Remote", "parar") == "parar"
    assert mapping.stop_reason("PowerLoss", None) == "engine-restart"
    assert mapping.stop_reason(None, None) == "stop"
    assert mapping.is_fault("Faulted", False) and mapping.is_fault("Unavailable", False)
    assert not mapping.is_fault("Unavailable", True) and not mapping.is_fault("Charging", False)
    reason = mapping.fault_reason({"status": "Faulted", "errorCode": "GroundFailure", "info": "a#b\n"})
    assert reason == "OCPP Faulted: GroundFailure: a b "
