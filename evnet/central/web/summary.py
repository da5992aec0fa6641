"""
The network's totals (C{GET /api/v1/summary}, the stream's C{summary}
event): CPs per state, the power delivered now, today's energy, revenue
and charges (since UTC midnight: the store's closed charges plus the ones
in progress), and how many alerts hold.  L{totals} is pure; L{network_summary}
asks the store for the day's closed charges.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer

from evnet.central.audit import utc_text
from evnet.central.states import CpState

DAY = 86400.0
STATES = [state.value for state in CpState]


def utc_midnight(now: float) -> float:
    """The UTC midnight that began the day of C{now} (Unix time has no leap seconds)."""
    return now - now % DAY


def in_progress(central: Any) -> list:
    """The charges not in the store's closed rows yet: open, or closed and still being written."""
    return [*central.sessions.values(), *central.charges.closing.values()]


def totals(central: Any, closed: dict, going: list, alerts: int, now: float) -> dict:
    """
    The summary body, from C{closed} (the store's closed charges today but
    those in C{going}) and C{going} (the charges in progress when the store was asked).
    """
    states = dict.fromkeys(STATES, 0)
    for cp in central.cps.values():
        states[cp.state.value] += 1
    return {
        "cps": len(central.cps),
        "states": states,
        "power_kw": round(sum(s.kw for s in central.sessions.values() if s.open), 3),
        "today": {
            "energy_kwh": round(closed["energy_kwh"] + sum(s.kwh for s in going), 3),
            "revenue_eur": round(closed["revenue_eur"] + sum(s.euros for s in going), 2),
            "sessions": closed["sessions"] + len(going),
        },
        "alerts": alerts,
        "at": utc_text(now),
    }


def network_summary(central: Any) -> defer.Deferred:
    """The summary now (one query of the store)."""
    now = central.now()
    going = in_progress(central)  # taken with the query: a charge closed meanwhile is counted once
    d = central.store.closed_since(utc_midnight(now), [s.id for s in central.charges.closing.values()])
    return d.addCallback(lambda closed: totals(central, closed, going, len(central.alerts.view()), now))
