"""
``evctl summary`` and ``evctl alerts``: the network's totals
(``GET /api/v1/summary``) and the alerts from every part of it
(``GET /api/v1/alerts``), one line each, or Central's JSON with ``--json``.
"""

from __future__ import annotations

import argparse
import functools
from typing import Callable

from evnet.ctl.cli import CentralApi, _api_options, _print_json


def summary_line(summary: dict) -> str:
    """The body of GET /api/v1/summary as one line."""
    states = ", ".join(f"{n} {state}" for state, n in summary["states"].items())
    today = summary["today"]
    alerts = summary["alerts"]
    return (f"{summary['cps']} CPs: {states} · {summary['power_kw']:g} kW now · today {today['energy_kwh']:.3f} kWh, "
            f"{today['revenue_eur']:.2f} €, {today['sessions']} charge{'s' if today['sessions'] != 1 else ''} · "
            f"{alerts} alert{'s' if alerts != 1 else ''}")


def alert_line(alert: dict) -> str:
    return f"{alert['severity'].upper():<8} {alert['kind']:<13} since {alert['since'][:19]}Z  {alert['message']}"


def _alerts_text(answer: dict) -> str:
    return "\n".join(alert_line(a) for a in answer["alerts"]) if answer["alerts"] else "no alerts"


READS = [  # (subcommand, path, help, description, the answer as text)
    ("summary", "/api/v1/summary", "the network's totals: CPs per state, power now, today's energy",
     "The network's totals from Central: CPs per state, the power delivered now, today's energy, revenue and "
     "charges (since UTC midnight), how many alerts.", summary_line),
    ("alerts", "/api/v1/alerts", "the alerts from every part of the network",
     "The alerts Central holds now (weather, EV_W, a Monitor that lost its Engine, Kafka, the database, failed CP "
     "logins), the critical ones first.", _alerts_text),
]


def add_network(subparsers) -> None:
    """Add ``evctl summary`` and ``evctl alerts`` to evctl's subcommands."""
    for name, path, text, description, show in READS:
        p = subparsers.add_parser(name, help=text, description=description)
        _api_options(p)
        p.set_defaults(run_plain=functools.partial(_run_read, path=path, show=show))


def _run_read(api: CentralApi, args: argparse.Namespace, path: str, show: Callable[[dict], str]) -> int:
    answer = api.call("GET", path)
    if args.json:
        _print_json(answer)
    else:
        print(show(answer))
    return 0
