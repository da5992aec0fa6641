"""
The panel's per-second work at Central (API_Central v1): the alert list
and the network's totals the stream computes every second, over N CPs with
a share of them charging, faulted or under a weather alert; the store's one
query is left out (it is a single aggregate on an index).  Not a test: it
prints figures (docs/performance.md).

    .venv/bin/python benchmarks/panel_bench.py [--cps N] [--runs R]
"""

import argparse
import os
import platform
import sys

from twisted.internet.task import Clock

from evnet.central.model import ChargingPoint, Session
from evnet.central.rules import Central
from evnet.central.states import CpMachine, CpState
from evnet.central.web.summary import in_progress, totals
from evnet.httpapi import json_bytes

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from codec_bench import best_of  # noqa: E402 (the benchmarks' one timer)


class NoStore:
    """Central's rules need a store only to write; nothing is written here."""


def network(cps: int) -> Central:
    central = Central(NoStore(), Clock(), wall_clock=lambda: 1_733_130_000.0)
    for n in range(cps):
        state = (CpState.SUMINISTRANDO if n % 4 == 0 else CpState.AVERIADO if n % 50 == 1 else CpState.ACTIVADO)
        cp = ChargingPoint(f"CP{n:05d}", f"City {n % 40}", 0.3, CpMachine(state, engine_ok=state is not CpState.AVERIADO))
        if state is CpState.AVERIADO:
            cp.fault, cp.fault_at = "lost the link to the Engine (connection refused)", 1_733_129_000.0
        if state is CpState.SUMINISTRANDO:
            session = Session(f"S{n:09d}", cp.id, f"D{n}", "driver", 0.3, 0.0, 1_733_129_000.0, kw=11.0, kwh=2.5, euros=0.75)
            cp.session = central.sessions[session.id] = session
        central.cps[cp.id] = cp
    return central


def main():
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--cps", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    return measure(args.cps, args.runs)


def measure(cps: int, runs: int) -> None:
    central = network(cps)
    closed = {"energy_kwh": 1234.5, "revenue_eur": 370.35, "sessions": 987}

    def tick():
        alerts = {"alerts": central.alerts.view()}
        body = totals(central, closed, in_progress(central), len(alerts["alerts"]), central.now())
        return json_bytes(alerts), json_bytes(body)

    alerts_json, summary_json = tick()
    seconds = best_of(runs, tick)
    print(f"{platform.python_implementation()} {platform.python_version()}, {cps} CPs "
          f"({len(central.sessions)} charging, {len(central.alerts.view())} alerts)")
    print(f"one tick (alerts + summary, JSON): {seconds * 1000:.2f} ms "
          f"= {seconds * 100:.3f} % of a core at 1 tick/s; alerts {len(alerts_json)} B, summary {len(summary_json)} B")


if __name__ == "__main__":
    main()
