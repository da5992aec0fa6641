"""
What OCPP 1.6's values mean in evnet's model: a timestamp, a meter value
(the energy register and the power), a StopTransaction reason, a
connector status.  Pure: no I/O, no Twisted.  docs/ocpp.md has the tables.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Optional

from evnet.central.ocpp.codec import PROPERTY_CONSTRAINT, OcppError
from evnet.protocols.vocabulary import (
    REASON_ENGINE_RESTART,
    REASON_FAULT,
    REASON_UNPLUG,
)

ENERGY = "Energy.Active.Import.Register"  # the default measurand of a sampled value
POWER = "Power.Active.Import"
STOP_REASON_LOCAL = "stop"  # a charge ended at the CP (Local, Other, no reason): as evnet's STOP without one

# StopTransaction.reason -> evnet's STOP reason ("Remote": the reason Central asked with).
STOP_REASONS = {
    "EVDisconnected": REASON_UNPLUG,
    "UnlockCommand": REASON_UNPLUG,
    "EmergencyStop": REASON_FAULT,
    "HardReset": REASON_ENGINE_RESTART,
    "SoftReset": REASON_ENGINE_RESTART,
    "Reboot": REASON_ENGINE_RESTART,
    "PowerLoss": REASON_ENGINE_RESTART,
    "Local": STOP_REASON_LOCAL,
    "Other": STOP_REASON_LOCAL,
}

# Connector statuses.
AVAILABLE, PREPARING, FAULTED, UNAVAILABLE = "Available", "Preparing", "Faulted", "Unavailable"


def timestamp(text: str, unique_id: str, what: str) -> float:
    """An OCPP dateTime (RFC 3339) as POSIX seconds, or PropertyConstraintViolation."""
    try:
        when = datetime.fromisoformat(text)
    except (TypeError, ValueError):
        raise OcppError(PROPERTY_CONSTRAINT, f"{what} is not an RFC 3339 date-time: {text[:40]!r}", unique_id) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)  # OCPP times are UTC
    return when.timestamp()


def now_text(seconds: float) -> str:
    """POSIX seconds as OCPP's dateTime (UTC, milliseconds, 'Z')."""
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@dataclass(frozen=True)
class Reading:
    """One meterValue: when (the CP's clock), the energy register in Wh (None if absent), the power in W."""

    at: float
    wh: Optional[float]
    w: Optional[float]


_WH = {"Wh": 1.0, "kWh": 1000.0}
_W = {"W": 1.0, "kW": 1000.0}


def reading(meter_value: dict, unique_id: str) -> Reading:
    """
    The energy register (Energy.Active.Import.Register, the default measurand,
    summed over phases only when no total is given) and the active power of
    one meterValue.  A value that is not a number is PropertyConstraintViolation.
    """
    at = timestamp(meter_value["timestamp"], unique_id, "meterValue.timestamp")
    totals: dict[str, float] = {}
    phases: dict[str, float] = {}
    for sample in meter_value["sampledValue"]:
        measurand = sample.get("measurand", ENERGY)
        if measurand not in (ENERGY, POWER) or sample.get("format") == "SignedData":
            continue
        scales = _WH if measurand == ENERGY else _W
        unit = sample.get("unit", "Wh" if measurand == ENERGY else "W")
        if unit not in scales:
            raise OcppError(PROPERTY_CONSTRAINT, f"{measurand} in {unit!r}: expected one of {', '.join(scales)}", unique_id)
        try:
            value = float(sample["value"]) * scales[unit]
        except ValueError:
            raise OcppError(PROPERTY_CONSTRAINT, f"{measurand} value {sample['value'][:20]!r} is not a number", unique_id) from None
        if value != value or value in (float("inf"), float("-inf")):
            raise OcppError(PROPERTY_CONSTRAINT, f"{measurand} value must be finite", unique_id)
        target = phases if sample.get("phase") else totals
        target[measurand] = target.get(measurand, 0.0) + value
    for measurand, value in phases.items():
        totals.setdefault(measurand, value)
    return Reading(at, totals.get(ENERGY), totals.get(POWER))


@dataclass(frozen=True)
class Figures:
    """A transaction's figures for TELEM or STOP at one meter reading."""

    seq: int  # milliseconds since the transaction's start + 1 (the CP's clock): a replay is not counted twice
    kwh: float
    euros: float
    seconds: int


def figures(tx: Any, at: float, wh: float) -> Figures:
    """What the meter register C{wh} at C{at} (the CP's clock) means for transaction C{tx}."""
    elapsed = max(0.0, at - tx.started_at)
    kwh = max(0.0, (wh - tx.meter_start) / 1000.0)
    return Figures(int(elapsed * 1000) + 1, kwh, kwh * tx.price, int(elapsed))


def stop_reason(ocpp_reason: Optional[str], asked: Optional[str]) -> str:
    """evnet's reason for a StopTransaction: C{asked} (why Central stopped it) for 'Remote'."""
    if ocpp_reason == "Remote":
        return asked or STOP_REASON_LOCAL
    return STOP_REASONS.get(ocpp_reason or "Local", STOP_REASON_LOCAL)


def is_fault(status: str, out_of_order: bool) -> bool:
    """
    A connector status that makes the CP AVERIADO: Faulted; and Unavailable
    unless the operator stopped the CP (then Unavailable is what PARAR asked).
    """
    return status == FAULTED or (status == UNAVAILABLE and not out_of_order)


def fault_reason(payload: dict) -> str:
    """The text of a fault from a StatusNotification."""
    parts = [f"OCPP {payload['status']}"]
    if payload.get("errorCode", "NoError") != "NoError":
        parts.append(payload["errorCode"])
    for name in ("info", "vendorErrorCode"):
        if payload.get(name):
            parts.append(str(payload[name]))
    text = ": ".join(parts)
    return "".join(c if c.isprintable() and c != "#" else " " for c in text)[:120]
