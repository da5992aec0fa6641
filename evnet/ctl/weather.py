"""
``evctl weather add|remove|list ENDPOINT [CITY]``: EV_W's city list through
its control endpoint (``twistd evweather --control ENDPOINT``).

- ``add ENDPOINT CITY``: watch CITY too (names may have spaces: the rest of
  the line is the name).
- ``remove ENDPOINT CITY``: stop watching a city added before.
- ``list ENDPOINT [--json]``: the cities watched, their temperature, state
  and alerts.

ENDPOINT is a Twisted client endpoint string, or a bare port on 127.0.0.1.
Exit codes: 0 done, 1 EV_W refused, 2 a mistake or EV_W could not be reached.
"""

from __future__ import annotations

import argparse
import json
import sys

from evnet.ctl.cli import DEFAULT_TIMEOUT, UserError, ask

ACTIONS = ("add", "remove", "list")


def add_weather(subparsers) -> None:
    """Add ``evctl weather …`` to evctl's subcommands."""
    p = subparsers.add_parser(
        "weather", help="add, remove or list the cities EV_W watches",
        description="Change EV_W's city list through its control endpoint (twistd evweather --control).",
    )
    p.add_argument("action", choices=ACTIONS, help="what to do")
    p.add_argument("endpoint", help="EV_W's --control endpoint, e.g. tcp:host=127.0.0.1:port=7301 (or just 7301)")
    p.add_argument("city", nargs="*", help="add, remove: the city's name")
    p.add_argument("--json", action="store_true", help="list: EV_W's answer as JSON, for scripts")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds to wait (default %(default)s)")
    p.set_defaults(run=run_weather)


async def run_weather(reactor, args: argparse.Namespace) -> int:
    city = " ".join(args.city)
    if args.action == "list":
        if city:
            raise UserError("list takes no city")
        line = "list --json" if args.json else "list"
    else:
        if not city:
            raise UserError(f"usage: evctl weather {args.action} ENDPOINT CITY")
        line = f"{args.action} {city}"
    answer = await ask(reactor, args.endpoint, line, args.timeout)
    if answer.startswith("OK"):
        text = answer[3:]
        if args.json:
            print(json.dumps(json.loads(text), indent=2, ensure_ascii=False))
        else:
            print(text.replace(" | ", "\n") if text else "OK")
        return 0
    print(answer.removeprefix("ERROR "), file=sys.stderr)
    return 1
