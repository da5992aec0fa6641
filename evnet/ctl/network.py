"""
``evctl summary`` and ``evctl alerts``: the network's totals
(``GET /api/v1/summary``) and the alerts from every part of it
(``GET /api/v1/alerts``), one line each, or Central's JSON with ``--json``.
"""

from __future__ import annotations

import argparse

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


def add_network(subparsers) -> None:
    """Add ``evctl summary`` and ``evctl alerts`` to evctl's subcommands."""
    p = subparsers.add_parser("summary", help="the network's totals: CPs per state, power now, today's energy",
                              description="The network's totals from Central: CPs per state, the power delivered "
                              "now, today's energy, revenue and charges (since UTC midnight), how many alerts.")
    _api_options(p)
    p.set_defaults(run_plain=_run_summary)
    p = subparsers.add_parser("alerts", help="the alerts from every part of the network",
                              description="The alerts Central holds now (weather, EV_W, a Monitor that lost its "
                              "Engine, Kafka, the database, failed CP logins), the critical ones first.")
    _api_options(p)
    p.set_defaults(run_plain=_run_alerts)


def _run_summary(api: CentralApi, args: argparse.Namespace) -> int:
    answer = api.call("GET", "/api/v1/summary")
    if args.json:
        _print_json(answer)
    else:
        print(summary_line(answer))
    return 0


def _run_alerts(api: CentralApi, args: argparse.Namespace) -> int:
    answer = api.call("GET", "/api/v1/alerts")
    if args.json:
        _print_json(answer)
        return 0
    print("\n".join(alert_line(a) for a in answer["alerts"]) if answer["alerts"] else "no alerts")
    return 0
