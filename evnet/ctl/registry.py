"""
``evctl registry add|remove|show|list|enroll``: EV_Registry's API from the
terminal, over HTTPS (``--registry URL``, default https://127.0.0.1:7443,
``--ca-file`` the Registry's certificate, ``--token-file`` the admin token).

- ``add CP --location TEXT --price EUR [--enrollment-token-file F] [--credentials-file F]``:
  registers the CP (or registers it again: new credentials) and prints its
  secret once, or writes it to a 0600 credentials file instead.
- ``remove CP``: deregisters it (baja).  ``show CP``, ``list``: what the Registry keeps.
- ``enroll CP [--ttl SECONDS] [--token-output F]``: a one-time enrollment token for CP.

Tokens and secrets are read from files, never from the command line.
Exit codes: 0 done, 1 the Registry refused, 2 a mistake or the Registry could
not be reached.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import datetime
from typing import Any, Callable, Optional

from evnet.ctl.cli import DEFAULT_TIMEOUT, UserError

DEFAULT_REGISTRY = "https://127.0.0.1:7443"
SECRET_WARNING = (
    "This secret is shown only now: the Registry keeps only a verifier of it. Give it to the CP's "
    "Monitor (a credentials file, mode 0600); to issue another, register the CP again."
)


def _hand_over_secret(args: Any, answer: dict, summary: str, save: Callable[[str], None], warning: str) -> int:
    """
    The secret of a new registration: into C{--credentials-file} (C{save}),
    or, without one or when it cannot be written, printed once with C{warning}.
    """
    from evnet.registry.credentials import CredentialsError

    if args.credentials_file:
        try:
            save(args.credentials_file)
        except CredentialsError as e:
            print(f"evctl: {e}; the secret is printed instead", file=sys.stderr)
        else:
            shown = {k: v for k, v in answer.items() if k != "secret"}
            _emit(args, {**shown, "credentials_file": args.credentials_file},
                  f"{summary}\ncredentials written to {args.credentials_file} (mode 0600)")
            return 0
    _emit(args, answer, f"{summary}\nsecret: {answer['secret']}")
    print(f"evctl: {warning}", file=sys.stderr)
    return 0


def add_drivers(subparsers, common) -> None:
    """``evctl drivers add|remove|list``: drivers' accounts at EV_Registry (issue 14)."""
    p = subparsers.add_parser("drivers", help="sign drivers up, remove and list them at EV_Registry",
                              description="Drivers' accounts at EV_Registry over HTTPS: add (sign up: its secret "
                              "once), remove (its credentials stop working), list.")
    actions = p.add_subparsers(dest="drivers_action", metavar="ACTION", required=True)
    add = actions.add_parser("add", parents=[common], help="sign a driver up, or again (new credentials)",
                             description="Sign a driver up; prints its secret once, or writes the driver's "
                             "credentials file (for evdriver --credentials-file) with --credentials-file.")
    add.add_argument("driver", help="the driver id")
    add.add_argument("--credentials-file", metavar="PATH",
                     help="write the credentials here (JSON, mode 0600) instead of printing the secret")
    add.set_defaults(run=_run, action=_add_driver)
    remove = actions.add_parser("remove", parents=[common], help="remove a driver: its credentials stop working",
                                description="Remove a driver's credentials: they stop working at once.")
    remove.add_argument("driver", help="the driver id")
    remove.set_defaults(run=_run, action=_remove_driver)
    listing = actions.add_parser("list", parents=[common], help="every driver account",
                                 description="Every driver account the Registry keeps.")
    listing.set_defaults(run=_run, action=_list_drivers)


async def _add_driver(client, args: argparse.Namespace) -> int:
    from urllib.parse import quote

    from evnet.registry.credentials import DriverCredentials, save_driver_credentials

    if args.credentials_file:
        _writable("credentials-file", args.credentials_file)
    status, answer = await client.request("PUT", f"/api/v1/drivers/{quote(args.driver, safe='')}", {})
    summary = f"driver {answer['driver_id']} " + ("signed up" if status == 201 else
                                                   "signed up again: its old secret no longer works")
    return _hand_over_secret(
        args, answer, summary,
        lambda path: save_driver_credentials(path, DriverCredentials(answer["driver_id"], answer["secret"])),
        "this secret is shown only now: the Registry keeps only a verifier of it. Give it to the "
        "driver (a credentials file, mode 0600); to issue another, add the driver again.")


async def _remove_driver(client, args: argparse.Namespace) -> int:
    from urllib.parse import quote

    answer = await client.call("DELETE", f"/api/v1/drivers/{quote(args.driver, safe='')}")
    _emit(args, answer, f"driver {answer['driver_id']} removed: its credentials no longer work")
    return 0


async def _list_drivers(client, args: argparse.Namespace) -> int:
    rows = (await client.call("GET", "/api/v1/drivers"))["drivers"]
    text = "\n".join(f"{r['driver_id']:<12} {r['status']:<13} (signed up {_when(r['created_at'])}, updated "
                     f"{_when(r['updated_at'])})" for r in rows)
    _emit(args, rows, text or "no driver is signed up")
    return 0


def add_registry(subparsers) -> None:
    """Add ``evctl registry …`` (and ``evctl drivers …``) to evctl's subcommands."""
    p = subparsers.add_parser(
        "registry", help="register, deregister and list charging points at EV_Registry",
        description="EV_Registry's API over HTTPS: add (alta), remove (baja), show, list, enroll.",
    )
    actions = p.add_subparsers(dest="registry_action", metavar="ACTION", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--registry", default=DEFAULT_REGISTRY, metavar="URL",
                        help="the Registry's HTTPS API (default %(default)s)")
    common.add_argument("--ca-file", metavar="PATH",
                        help="the certificate to trust for the Registry (its registry-cert.pem, or its CA)")
    common.add_argument("--token-file", metavar="PATH",
                        help="file holding the admin token (when the Registry runs with --admin-token-file)")
    common.add_argument("--json", action="store_true", help="print the Registry's JSON answer, for scripts")
    common.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                        help="seconds to wait (default %(default)s)")

    add_drivers(subparsers, common)
    add = actions.add_parser("add", parents=[common], help="register a CP (alta), or register it again",
                             description="Register a CP with its location and price; prints its secret once "
                             "(or writes it to --credentials-file). Registering again resets its credentials.")
    add.add_argument("cp", help="the CP id")
    add.add_argument("--location", required=True, help="where the CP is")
    add.add_argument("--price", required=True, type=float, help="price in EUR per kWh, e.g. 0.35")
    add.add_argument("--enrollment-token-file", metavar="PATH",
                     help="file holding an enrollment token issued for this CP (instead of the admin token)")
    add.add_argument("--credentials-file", metavar="PATH",
                     help="write the credentials here (JSON, mode 0600) instead of printing the secret")
    add.set_defaults(run=_run, action=_add)

    for name, text, action in (("remove", "deregister a CP (baja): its credentials stop working", _remove),
                               ("show", "one CP's registration", _show)):
        q = actions.add_parser(name, parents=[common], help=text, description=text[0].upper() + text[1:] + ".")
        q.add_argument("cp", help="the CP id")
        q.set_defaults(run=_run, action=action)

    listing = actions.add_parser("list", parents=[common], help="every registration",
                                 description="Every CP the Registry knows, registered or deregistered.")
    listing.set_defaults(run=_run, action=_list)

    enroll = actions.add_parser("enroll", parents=[common], help="issue a one-time enrollment token for a CP",
                                description="Issue an enrollment token that lets CP register itself once "
                                "(evctl registry add CP --enrollment-token-file F) before it expires.")
    enroll.add_argument("cp", help="the CP id")
    enroll.add_argument("--ttl", type=int, default=86400, metavar="SECONDS",
                        help="how long the token is valid (default %(default)s)")
    enroll.add_argument("--token-output", metavar="PATH",
                        help="write the token to this file (mode 0600) instead of printing it")
    enroll.set_defaults(run=_run, action=_enroll)


def read_token_file(option: str, path: str) -> str:
    """A token: the file's content without surrounding whitespace."""
    try:
        with open(path, encoding="utf-8") as f:
            token = f.read().strip()
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"--{option} {path}: cannot read it: {getattr(e, 'strerror', None) or e}") from None
    if not token or any(c.isspace() for c in token):
        raise UserError(f"--{option} {path}: the file must hold one token, on one line")
    return token


def _writable(option: str, path: str) -> None:
    """Fail before calling the Registry, not after, when C{path} cannot be written."""
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory) or not os.access(directory, os.W_OK):
        raise UserError(f"--{option} {path}: cannot write in {directory}")


def _when(seconds: Optional[float]) -> str:
    return datetime.fromtimestamp(seconds).strftime("%Y-%m-%d %H:%M:%S") if seconds else "-"


def registration_line(row: dict) -> str:
    return (f"{row['cp_id']:<10} {row['status']:<13} {row['price']:.3f} €/kWh  {row['location']}  "
            f"(registered {_when(row['registered_at'])}, updated {_when(row['updated_at'])})")


async def _run(reactor, args: argparse.Namespace) -> int:
    from evnet.registry.client import RegistryClient, RegistryError, RegistryRefused

    token = read_token_file("token-file", args.token_file) if args.token_file else None
    try:
        client = RegistryClient(reactor, args.registry, args.ca_file, token, timeout=args.timeout)
        return await args.action(client, args)
    except RegistryRefused as e:
        print(f"evctl: {e}", file=sys.stderr)
        return 1
    except RegistryError as e:
        raise UserError(str(e)) from None


def _emit(args: argparse.Namespace, value: Any, text: str) -> None:
    """The Registry's JSON answer with --json, else the text for a person."""
    print(json.dumps(value, indent=2, ensure_ascii=False) if args.json else text)


async def _add(client, args: argparse.Namespace) -> int:
    from evnet.registry.credentials import Credentials, save_credentials

    token = None
    if args.enrollment_token_file:
        token = read_token_file("enrollment-token-file", args.enrollment_token_file)
    if args.credentials_file:
        _writable("credentials-file", args.credentials_file)
    created, answer = await client.put_cp(args.cp, args.location, args.price, token)
    what = "registered (alta)" if created else "registered again: its old secret no longer works"
    summary = f"{answer['cp_id']} {what}: {answer['location']}, {answer['price']:.3f} €/kWh"
    return _hand_over_secret(
        args, answer, summary,
        lambda path: save_credentials(path, Credentials(answer["cp_id"], answer["secret"], client.url)),
        SECRET_WARNING)


async def _remove(client, args: argparse.Namespace) -> int:
    answer = await client.deregister(args.cp)
    _emit(args, answer, f"{answer['cp_id']} deregistered (baja): its credentials no longer work")
    return 0


async def _show(client, args: argparse.Namespace) -> int:
    answer = await client.show(args.cp)
    _emit(args, answer, registration_line(answer))
    return 0


async def _list(client, args: argparse.Namespace) -> int:
    rows = await client.list()
    _emit(args, rows, "\n".join(registration_line(row) for row in rows) or "no charging point is registered")
    return 0


async def _enroll(client, args: argparse.Namespace) -> int:
    from evnet.registry.credentials import write_private_file

    if args.token_output:
        _writable("token-output", args.token_output)
    answer = await client.enroll(args.cp, args.ttl)
    until = _when(answer["expires_at"])
    if args.token_output:
        try:
            write_private_file(args.token_output, (answer["token"] + "\n").encode("ascii"))
        except OSError as e:
            print(f"evctl: cannot write {args.token_output}: {e.strerror or e}; the token is printed instead",
                  file=sys.stderr)
        else:
            shown = {k: v for k, v in answer.items() if k != "token"}
            _emit(args, {**shown, "token_file": args.token_output},
                  f"enrollment token for {answer['cp_id']} written to {args.token_output} (mode 0600); "
                  f"valid once, until {until}")
            return 0
    _emit(args, answer, f"enrollment token for {answer['cp_id']} (valid once, until {until}):\n{answer['token']}")
    return 0
