"""
``evctl keys revoke CP``: revoke a charging point's session key through
Central's API (``POST /api/v1/cps/{id}/revoke``, a write call), with the same
options as ``evctl stop`` (``--http``, ``--token-file``, ``--json``,
``--timeout``).  Central deletes the key at once, tells the CP's Monitor
(REVOKED), closes its link and ends its charge with a ticket; the CP is out
of service until its Monitor logs in again.
"""

from __future__ import annotations

import argparse
import urllib.parse

from evnet.ctl.cli import CentralApi, _api_options, _print_json


def add_keys(subparsers) -> None:
    """Add ``evctl keys …`` to evctl's subcommands."""
    p = subparsers.add_parser("keys", help="charging points' session keys at Central (revoke)",
                              description="Charging points' session keys at Central.")
    actions = p.add_subparsers(dest="keys_action", metavar="ACTION", required=True)
    revoke = actions.add_parser(
        "revoke", help="revoke a CP's key: it is out of service until its Monitor logs in again",
        description="Revoke a CP's session key through Central (write call: from this host, or with "
        "--token-file when Central has an admin token). Its Monitor is told, its link closed, its charge "
        "ended with a ticket; a new login of its Monitor brings it back.")
    revoke.add_argument("cp", metavar="CP", help="the CP id")
    _api_options(revoke)
    revoke.set_defaults(run_plain=_run_revoke)


def _run_revoke(api: CentralApi, args: argparse.Namespace) -> int:
    answer = api.call("POST", f"/api/v1/cps/{urllib.parse.quote(args.cp, safe='')}/revoke")
    if args.json:
        _print_json(answer)
    else:
        print(answer["message"])
    return 0
