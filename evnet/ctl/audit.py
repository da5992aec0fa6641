"""
``evctl audit verify|tail|export``: the audit trail (docs/audit.md), read
from Central's database directly (``--db``, the same URL as Central's),
not through Central's API: verification must not trust the process whose
record it checks, and it works while Central is down.  ``verify`` needs the
audit key file (``--audit-key-file``, the same as Central's); the readers
need only the database.

- ``verify``: re-computes every chain; exit 0 if intact, 1 naming the first
  row edited, deleted or reordered (and what is wrong with it).
- ``tail [-n N] [filters]``: the last rows, one line each, oldest first.
- ``export --jsonl [filters]``: every matching row as one JSON object a
  line, oldest first (what a SIEM ingests).
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
from typing import Any, Callable

from evnet.central import audit, audittrail
from evnet.central.store import DbUrl, parse_db_url
from evnet.ctl.errors import EvctlError, UserError

EXPORT_BATCH = 1000


class TrailBroken(EvctlError):
    """The trail does not verify: exit code 1, the first bad row named."""

    exit_code = 1


def connect(url: DbUrl) -> Any:
    """A plain blocking DB-API connection (evctl runs no reactor), read-only for SQLite."""
    if url.backend == "sqlite":
        try:
            return sqlite3.connect(f"file:{url.path}?mode=ro", uri=True, timeout=10)
        except sqlite3.Error as e:
            raise UserError(f"cannot open {url.display()}: {e}") from None
    try:
        import MySQLdb
    except ImportError:
        raise UserError("the mysql backend needs mysqlclient: pip install 'evnet[mysql]'") from None
    try:
        return MySQLdb.connect(host=url.host, port=url.port, user=url.user, passwd=url.password, db=url.database,
                               charset="utf8mb4", connect_timeout=10)
    except MySQLdb.Error as e:
        raise UserError(f"cannot open {url.display()}: {e}") from None


def run_txn(url: DbUrl, txn: Callable[..., Any], *args: Any) -> Any:
    connection = connect(url)
    try:
        cursor = connection.cursor()
        try:
            return txn(cursor, url.backend == "mysql", *args)
        except Exception as e:  # the driver's errors: no such table, lost connection...
            if type(e).__module__.split(".")[0] in ("sqlite3", "MySQLdb", "_mysql"):
                hint = " (has Central started on it? it makes the audit table)" if "audit" in str(e) else ""
                raise UserError(f"{url.display()}: {e}{hint}") from None
            raise
    finally:
        connection.close()


def _db(args: argparse.Namespace) -> DbUrl:
    try:
        return parse_db_url(args.db)
    except ValueError as e:
        raise UserError(f"--db: {e}") from None


def _filters(args: argparse.Namespace) -> dict:
    filters = {name: getattr(args, name) for name in ("actor", "action", "outcome", "address", "since", "until",
                                                         "chain") if getattr(args, name, None)}
    try:
        audittrail.where(filters)
    except audit.AuditError as e:
        raise UserError(str(e)) from None
    return filters


def line(row: dict) -> str:
    """One row for a person: time, chain:seq, actor, from where, action, outcome, detail."""
    where = row["address"] + (f":{row['port']}" if row["port"] is not None else "")
    return (f"{row['at']} {row['chain']}:{row['seq']} {row['actor_kind']}:{row['actor_id'] or '-'} "
            f"from {where or '-'} {row['action']} {row['outcome']} {json.dumps(row['detail'], sort_keys=True)}")


# -- the subcommands --------------------------------------------------------------------


def _run_verify(args: argparse.Namespace) -> int:
    url = _db(args)
    path = args.audit_key_file or audittrail.default_key_path(url)
    try:
        key = audittrail.load_key(path, create=False)
    except audittrail.KeyError_ as e:
        raise UserError(str(e)) from None
    reports = audit.verify(key, run_txn(url, audittrail.chain_txn))
    if args.json:
        print(json.dumps({"intact": all(r.intact for r in reports), "chains": [
            {"chain": r.chain, "rows": r.rows, "head": list(r.head) if r.head else None,
             "problem": None if r.problem is None else {"seq": r.problem.seq, "id": r.problem.row_id,
                                                         "what": r.problem.what, "text": r.problem.text}}
            for r in reports]}, sort_keys=True))
    else:
        for r in reports:
            state = "intact" if r.intact else "BROKEN"
            head = f", head seq {r.head[0]} {r.head[1][:16]}…" if r.head else ""
            print(f"chain {r.chain}: {r.rows} rows, {state}{head}")
        if not reports:
            print("the audit trail is empty")
    broken = [r.problem for r in reports if r.problem is not None]
    if broken:
        raise TrailBroken(broken[0].line())
    return 0


def _run_tail(args: argparse.Namespace) -> int:
    if not 1 <= args.n <= audittrail.MAX_PAGE:
        raise UserError(f"-n must be between 1 and {audittrail.MAX_PAGE}")
    rows = run_txn(_db(args), audittrail.select_txn, _filters(args), args.n, True)
    for row in reversed(rows):
        shown = audittrail.shown(row)
        print(json.dumps(shown, sort_keys=True) if args.json else line(shown))
    return 0


def _run_export(args: argparse.Namespace) -> int:
    if not args.jsonl:
        raise UserError("export writes JSON lines: give --jsonl")
    url = _db(args)
    filters = _filters(args)
    after = None
    out = sys.stdout
    while True:
        page = dict(filters, **({"after": after} if after is not None else {}))
        rows = run_txn(url, audittrail.select_txn, page, EXPORT_BATCH, False)
        for row in rows:
            out.write(json.dumps(audittrail.shown(row), sort_keys=True) + "\n")
        if len(rows) < EXPORT_BATCH:
            return 0
        after = int(rows[-1]["id"])


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", default="sqlite:evcentral.db",
                   help="Central's database, as its --db (default %(default)s)")


def _filter_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--actor", help=f"KIND or KIND:ID ({', '.join(audit.ACTOR_KINDS)})")
    p.add_argument("--action", help="an action, or a prefix ending in * (key.*)")
    p.add_argument("--outcome", choices=audit.OUTCOMES)
    p.add_argument("--address", help="the source host")
    p.add_argument("--since", help="from this time (seconds since the epoch, or YYYY-MM-DDTHH:MM:SS[.ffffff]Z)")
    p.add_argument("--until", help="before this time")
    p.add_argument("--chain", help="one writer's chain: central or registry")


def add_audit(subparsers) -> None:
    """Add ``evctl audit …`` to evctl's subcommands."""
    p = subparsers.add_parser("audit", help="the audit trail: verify its hash chains, tail it, export it",
                              description="The audit trail in Central's database (docs/audit.md), read directly.")
    actions = p.add_subparsers(dest="audit_action", metavar="ACTION", required=True)
    verify = actions.add_parser("verify", help="re-compute the hash chains: exit 0 if intact, 1 naming the first bad row",
                                description="Re-compute every chain of the trail under the audit key.")
    _common(verify)
    verify.add_argument("--audit-key-file", help="the audit key file, as Central's --audit-key-file (default: "
                        "PATH.audit-key next to a SQLite database, else evnet-audit.key)")
    verify.add_argument("--json", action="store_true", help="print the result as JSON")
    verify.set_defaults(run_local=_run_verify)
    tail = actions.add_parser("tail", help="the last rows, one line each", description="The last rows of the trail.")
    _common(tail)
    tail.add_argument("-n", type=int, default=20, help="how many rows (default %(default)s)")
    tail.add_argument("--json", action="store_true", help="one JSON object a line")
    _filter_options(tail)
    tail.set_defaults(run_local=_run_tail)
    export = actions.add_parser("export", help="every matching row as JSON lines, oldest first",
                                description="Export the trail as JSON lines (one row a line, oldest first).")
    _common(export)
    export.add_argument("--jsonl", action="store_true", help="JSON lines (the one format)")
    _filter_options(export)
    export.set_defaults(run_local=_run_export)
