"""
What the API and the event stream say about Central: its CPs, charges,
stored sessions and messages as plain JSON values, and a request's peer as
text for the log.  Pure functions over Central's public attributes; no
Twisted resource here.
"""

from __future__ import annotations

from typing import Any

DEFAULT_LIMIT = 50  # rows of a list answer (and messages of a snapshot) when none is asked for
MAX_LIMIT = 500


def all_cps(central: Any) -> list[dict]:
    """Every CP, ordered by id."""
    return [central.cps[k].as_dict() for k in sorted(central.cps)]


def ongoing_sessions(central: Any) -> list[dict]:
    """The charges open now, oldest first."""
    return [s.as_dict() for s in sorted(central.sessions.values(), key=lambda s: s.started_at)]


def session_row(row: dict) -> dict:
    """A stored session (and, once closed, its ticket) as plain JSON."""
    return {
        "id": row["id"],
        "cp_id": row["cp_id"],
        "driver_id": row["driver_id"],
        "origin": row["origin"],
        "status": row["status"],
        "price": float(row["price"]),
        "target_kwh": float(row["target_kwh"] or 0),
        "started_at": float(row["started_at"]),
        "ended_at": None if row.get("ended_at") is None else float(row["ended_at"]),
        "kwh": float(row["kwh"] or 0),
        "euros": float(row["euros"] or 0),
        "seconds": int(row["seconds"] or 0),
        "end_reason": row.get("end_reason"),
        "ticket_delivered": row.get("ticket_delivered_at") is not None,
    }


def event_row(row: dict) -> dict:
    """A stored application message as plain JSON."""
    return {"id": row["id"], "at": float(row["at"] or 0), "kind": row["kind"], "subject": row["subject"],
            "text": row["detail"]}


def peer(request: Any) -> str:
    """The client of C{request} as C{host:port} (or the address's text for a UNIX socket)."""
    address = request.getClientAddress()
    host = getattr(address, "host", None)
    return f"{host}:{address.port}" if host is not None else str(address)
