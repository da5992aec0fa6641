"""
``evctl monitor ENDPOINT reauth|status|help``: one command to a charging
point's Monitor through its control endpoint (``twistd evmonitor --control``),
the same line protocol as ``evctl engine``.

- ``reauth``: log in to Central again (after Central revoked the CP's key the
  Monitor waits for this), reading the credentials file again.
- ``status``: the CP, its Central link and key, its Engine's health.

Exit codes: 0 OK, 1 the Monitor answered ERROR, 2 it could not be reached or
the command line is wrong.
"""

from __future__ import annotations

import argparse

from evnet.ctl.cli import DEFAULT_TIMEOUT, ask, show_answer

MONITOR_ACTIONS = ("reauth", "status", "help")


def add_monitor(subparsers) -> None:
    """Add ``evctl monitor …`` to evctl's subcommands."""
    p = subparsers.add_parser(
        "monitor",
        help="drive a charging point's Monitor through its control endpoint",
        description="Send one command to a Monitor (twistd evmonitor --control ENDPOINT) and print its answer.",
    )
    p.add_argument("endpoint", help="the Monitor's --control endpoint, e.g. tcp:host=127.0.0.1:port=7102 (or just 7102)")
    p.add_argument("action", choices=MONITOR_ACTIONS, help="what to do")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds to wait (default %(default)s)")
    p.set_defaults(run=_run_monitor)


async def _run_monitor(reactor, args: argparse.Namespace) -> int:
    return show_answer(await ask(reactor, args.endpoint, args.action, args.timeout))
