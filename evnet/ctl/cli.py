"""
``evctl``: small local control commands for evnet processes.

Each subcommand registers itself in L{SUBCOMMANDS} (a function that adds
its parser to the argparse subparsers and sets ``run``, a coroutine
function taking the reactor and the parsed arguments and returning the
exit code, or ``run_plain``, below).  Adding one is adding one such
function to the list.

- ``evctl engine ENDPOINT plug|unplug|fault|recover|status|help``
- ``evctl engine ENDPOINT request DRIVER [KWH]``
- ``evctl weather add|remove|list ENDPOINT [CITY]``: EV_W's cities (L{evnet.ctl.weather}).
- ``evctl monitor ENDPOINT reauth|status|help`` (``evnet/ctl/monitor.py``)
- ``evctl audit verify|tail|export``: the audit trail, from the database (L{evnet.ctl.audit}).
- ``evctl cps``, ``evctl stop CP|all``, ``evctl resume CP|all``, ``evctl sessions``,
  ``evctl keys revoke CP`` (L{evnet.ctl.keys}) and ``evctl panel``: Central's HTTP API (``--http URL``, default
  http://127.0.0.1:8080; ``--token-file`` for write calls; ``--json``).

The one-shot API subcommands (cps, stop, resume, sessions) are plain
blocking programs (one urllib request, no reactor): they set ``run_plain``,
a function taking a L{CentralApi} and the parsed arguments and returning
the exit code, instead of ``run``.  ``engine`` and ``panel`` run on the
reactor.  Every failure a user can cause is an L{EvctlError}: one line on
stderr and a non-zero exit status (L{evnet.ctl.errors}).

ENDPOINT is the Engine's control endpoint as a Twisted client endpoint
string (``tcp:host=127.0.0.1:port=7101``); a bare port number means that
port on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import functools
import http.client
import json
import sys
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime
from typing import Any, Callable, Optional

from twisted.internet import defer, endpoints, error, task
from twisted.protocols.basic import LineOnlyReceiver

from evnet.ctl.errors import CentralRefused, EvctlError, UserError

DEFAULT_TIMEOUT = 10.0
ENGINE_ACTIONS = ("plug", "unplug", "fault", "recover", "status", "request", "help")


class LineExchange(LineOnlyReceiver):
    """Send one command line, fire L{answer} with the one answer line."""

    delimiter = b"\n"

    def __init__(self, line: str) -> None:
        self.line = line
        self.answer: defer.Deferred = defer.Deferred()

    def connectionMade(self) -> None:
        self.sendLine(self.line.encode("utf-8"))

    def lineReceived(self, line: bytes) -> None:
        if not self.answer.called:
            self.answer.callback(line.decode("utf-8", "replace").rstrip("\r"))
        self.transport.loseConnection()

    def connectionLost(self, reason=None) -> None:
        if not self.answer.called:
            self.answer.errback(error.ConnectionDone("the connection closed before an answer"))


def client_endpoint_string(text: str) -> str:
    """A bare port number means 127.0.0.1; anything else is an endpoint string."""
    return f"tcp:host=127.0.0.1:port={text}" if text.isdigit() else text


async def ask(reactor, endpoint: str, line: str, timeout: float = DEFAULT_TIMEOUT) -> str:
    """Connect to C{endpoint}, send C{line}, return the answer line."""
    try:
        ep = endpoints.clientFromString(reactor, client_endpoint_string(endpoint))
    except (ValueError, TypeError, KeyError) as e:
        raise UserError(f"{endpoint!r} is not a client endpoint string (e.g. tcp:host=127.0.0.1:port=7101): {e}") from None
    exchange = LineExchange(line)
    connecting = endpoints.connectProtocol(ep, exchange)
    connecting.addTimeout(timeout, reactor)
    try:
        await connecting
    except (error.ConnectError, defer.TimeoutError, OSError, OverflowError) as e:  # OverflowError: a port over 65535
        raise UserError(f"cannot reach the control endpoint {endpoint}: {e}") from None
    exchange.answer.addTimeout(timeout, reactor)
    try:
        return await exchange.answer
    except defer.TimeoutError:
        raise UserError(f"no answer from {endpoint} within {timeout:g} s") from None
    except error.ConnectionDone as e:
        raise UserError(f"{endpoint}: {e}") from None


# -- evctl engine ---------------------------------------------------------


def _add_engine(subparsers) -> None:
    p = subparsers.add_parser(
        "engine",
        help="drive a charging point's Engine through its control endpoint",
        description="Send one command to an Engine (twistd evengine) and print its answer.",
    )
    p.add_argument("endpoint", help="the Engine's --control endpoint, e.g. tcp:host=127.0.0.1:port=7101 (or just 7101)")
    p.add_argument("action", choices=ENGINE_ACTIONS, help="what to do")
    p.add_argument("args", nargs="*", help="request: DRIVER [KWH]")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds to wait (default %(default)s)")
    p.set_defaults(run=_run_engine)


async def _run_engine(reactor, args: argparse.Namespace) -> int:
    if args.action == "request":
        if not 1 <= len(args.args) <= 2:
            raise UserError("usage: evctl engine ENDPOINT request DRIVER [KWH]")
    elif args.args:
        raise UserError(f"{args.action} takes no arguments")
    return show_answer(await ask(reactor, args.endpoint, " ".join([args.action, *args.args]), args.timeout))


def show_answer(answer: str) -> int:
    """Print a control endpoint's answer line (OK: stdout, exit 0; ERROR: stderr, exit 1)."""
    if answer.startswith("OK"):
        print(answer[3:].replace(" | ", "\n") if len(answer) > 3 else "OK")
        return 0
    print(answer.removeprefix("ERROR ").replace(" | ", "\n"), file=sys.stderr)
    return 1


# -- Central's API: evctl cps | stop | resume | sessions | panel -------------

DEFAULT_HTTP = "http://127.0.0.1:8080"


def _api_options(p, json_option: bool = True) -> None:
    p.add_argument("--http", default=DEFAULT_HTTP, metavar="URL",
                   help="Central's web panel and API (default %(default)s)")
    p.add_argument("--token-file", metavar="PATH",
                   help="file holding the admin token (when Central runs with --admin-token-file)")
    if json_option:
        p.add_argument("--json", action="store_true", help="print Central's JSON answer, for scripts")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds to wait (default %(default)s)")


def base_url(text: str) -> str:
    """C{text} without its trailing slash, or a UserError unless it is an http(s) URL with a host."""
    wrong = f"--http must be a URL like {DEFAULT_HTTP}, not {text!r}"
    if not text.startswith(("http://", "https://")) or any(c.isspace() or not c.isprintable() for c in text):
        raise UserError(wrong)
    try:
        parts = urllib.parse.urlsplit(text)
        host, _ = parts.hostname, parts.port  # .port raises ValueError unless a number in 0-65535
    except ValueError as e:
        raise UserError(f"{wrong} ({e})") from None
    if not host:
        raise UserError(wrong)
    return text.rstrip("/")


def read_token(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            token = f.read().strip()
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"--token-file {path}: cannot read it: {getattr(e, 'strerror', None) or e}") from None
    if not token:
        raise UserError(f"--token-file {path}: the file is empty")
    return token


class CentralApi:
    """
    Central's HTTP API as one evctl command names it (C{--http},
    C{--token-file}, C{--timeout}): L{call} returns Central's JSON answer,
    or raises CentralRefused (an HTTP error) or UserError.  HTTP proxies
    from the environment are not used.
    """

    def __init__(self, args: argparse.Namespace, opener: Optional[urllib.request.OpenerDirector] = None) -> None:
        self.url = base_url(args.http)
        self.token_file = args.token_file
        self.timeout = args.timeout
        self.opener = opener or urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def call(self, method: str, path: str) -> Any:
        headers = {"Accept": "application/json"}
        if self.token_file:
            headers["Authorization"] = f"Bearer {read_token(self.token_file)}"
        data = None
        if method == "POST":
            data = b"{}"
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with self.opener.open(request, timeout=self.timeout) as response:
                body = response.read()
        except urllib.error.HTTPError as e:
            raise CentralRefused(_error_of(e)) from None
        except (urllib.error.URLError, OSError) as e:
            raise UserError(f"cannot reach Central at {self.url}: {getattr(e, 'reason', e)}") from None
        except http.client.HTTPException:
            raise UserError(f"{self.url} did not answer HTTP: is it Central's --http endpoint?") from None
        try:
            return json.loads(body)
        except ValueError:
            raise UserError(f"{self.url} did not answer JSON: is it Central's --http endpoint?") from None


def _error_of(e: urllib.error.HTTPError) -> str:
    """Central's sentence for an HTTP error (its JSON C{error}), else the status."""
    try:
        return json.loads(e.read())["error"]
    except (ValueError, KeyError, TypeError, OSError, http.client.HTTPException):
        return f"{e.code} {e.reason}"


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False))


def _when(seconds: Optional[float]) -> str:
    return datetime.fromtimestamp(seconds).strftime("%Y-%m-%d %H:%M:%S") if seconds else "-"


def cp_line(cp: dict) -> str:
    state = "PARADO (Out of Order)" if cp["state"] == "PARADO" else cp["state"]
    line = f"{cp['id']:<10} {state:<22} {cp['price']:.3f} €/kWh  {cp['location']}"
    if cp.get("driver_id"):
        line += (f"  | driver {cp['driver_id']}: {cp['kw'] or 0:.1f} kW, {cp['kwh'] or 0:.3f} kWh, "
                 f"{cp['euros'] or 0:.2f} €")
    return line


def _add_cps(subparsers) -> None:
    p = subparsers.add_parser("cps", help="list the charging points known to Central, with their state",
                              description="Every charging point Central knows: id, state, price, location, "
                              "and the charge in progress.")
    _api_options(p)
    p.set_defaults(run_plain=_run_cps)


def _run_cps(api: CentralApi, args: argparse.Namespace) -> int:
    cps = api.call("GET", "/api/v1/cps")["cps"]
    if args.json:
        _print_json(cps)
    elif not cps:
        print("no charging point has registered yet")
    else:
        for cp in cps:
            print(cp_line(cp))
    return 0


def _add_command(subparsers, name: str, text: str) -> None:
    p = subparsers.add_parser(name, help=f"{text} one charging point, or all",
                              description=f"{text.capitalize()} a charging point through Central (write call: "
                              "from this host, or with --token-file when Central has an admin token).")
    p.add_argument("cp", metavar="CP|all", help="a CP id, or 'all' for every CP")
    _api_options(p)
    p.set_defaults(run_plain=_run_command, verb=name)


def _run_command(api: CentralApi, args: argparse.Namespace) -> int:
    which = "" if args.cp == "all" else "/" + urllib.parse.quote(args.cp, safe="")
    answer = api.call("POST", f"/api/v1/cps{which}/{args.verb}")
    if args.json:
        _print_json(answer)
    elif "results" in answer:
        for result in answer["results"]:
            print(result["message"])
        if not answer["results"]:
            print("no charging point is stopped" if args.verb == "resume" else "no charging point known")
    else:
        print(answer["message"])
    return 0


def _add_sessions(subparsers) -> None:
    p = subparsers.add_parser("sessions", help="charges in progress and recent charges with their tickets",
                              description="Charges in progress, then the most recent charges and their tickets.")
    _api_options(p)
    p.add_argument("--limit", type=int, default=20, help="how many recent charges (default %(default)s)")
    for name, metavar, text in (
            ("cp", "CP", "only this CP's charges"), ("driver", "DRIVER", "only this driver's charges"),
            ("since", "TIME", "charges started at or after TIME (Unix seconds or YYYY-MM-DDTHH:MM:SSZ, UTC)"),
            ("until", "TIME", "charges started before TIME"), ("before", "NEXT", "the page after the one that said NEXT")):
        p.add_argument(f"--{name}", metavar=metavar, help=text)
    p.set_defaults(run_plain=_run_sessions)


def _run_sessions(api: CentralApi, args: argparse.Namespace) -> int:
    query = {"limit": args.limit, **{name: getattr(args, name) for name in ("cp", "driver", "since", "until", "before")
                                     if getattr(args, name) is not None}}
    answer = api.call("GET", f"/api/v1/sessions?{urllib.parse.urlencode(query)}")
    if args.json:
        _print_json(answer)
        return 0
    print("In progress:" if answer["ongoing"] else "In progress: none")
    for s in answer["ongoing"]:
        print(f"  {s['id']}  driver {s['driver_id']} at {s['cp_id']} since {_when(s['started_at'])}: "
              f"{s['kwh']:.3f} kWh, {s['euros']:.2f} € ({s['state']})")
    closed = [s for s in answer["recent"] if s["status"] == "closed"]
    print("Recent tickets:" if closed else "Recent tickets: none")
    for s in closed:
        print(f"  {s['id']}  driver {s['driver_id']} at {s['cp_id']} {_when(s['started_at'])}: {s['kwh']:.3f} kWh, "
              f"{s['euros']:.2f} €, {s['seconds']} s ({s['end_reason'] or '-'})")
    if answer.get("next"):
        print(f"More: evctl sessions --before {answer['next']}")
    return 0


def _add_panel(subparsers) -> None:
    p = subparsers.add_parser("panel", help="Central's monitoring panel, live in the terminal",
                              description="Follow Central's event stream and draw the panel (Ctrl+C to quit). "
                              "Reconnects by itself when Central restarts.")
    _api_options(p, json_option=False)
    p.add_argument("--once", action="store_true", help="draw the current panel once and exit")
    p.add_argument("--state", action="append", default=[], metavar="STATE",
                   help="show only the CPs in this state (ACTIVADO, SUMINISTRANDO, PARADO, AVERIADO, DESCONECTADO; "
                        "repeat it or separate with commas); the summary line still counts every CP")
    p.add_argument("--search", default="", metavar="TEXT", help="show only the CPs whose id or location contains TEXT")
    p.set_defaults(run=_run_panel)


async def _run_panel(reactor, args: argparse.Namespace) -> int:
    from rich.console import Console
    from twisted.web.client import Agent

    from evnet.ctl import panel, stream, terminal

    url = base_url(args.http)
    try:
        cp_filter = panel.CpFilter.parse(args.state, args.search)
    except ValueError as e:
        raise UserError(str(e)) from None
    agent, console = Agent(reactor), Console()
    if args.once:
        return await terminal.panel_once(agent, reactor, url, console, args.timeout, cp_filter)
    return await terminal.panel_live(agent, reactor, url, console, until=_before_shutdown(reactor),
                                     idle_timeout=max(args.timeout, stream.IDLE_TIMEOUT), cp_filter=cp_filter)


def _before_shutdown(reactor) -> defer.Deferred:
    """Fires when the reactor is asked to stop (Ctrl+C), before it does."""
    d: defer.Deferred = defer.Deferred()
    reactor.addSystemEventTrigger("before", "shutdown", d.callback, None)
    return d


SUBCOMMANDS: list[Callable] = [
    _add_engine,
    _add_cps,
    functools.partial(_add_command, name="stop", text="stop (PARAR: Out of Order)"),
    functools.partial(_add_command, name="resume", text="resume (REANUDAR)"),
    _add_sessions,
    _add_panel,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="evctl", description="Control commands for evnet processes.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in SUBCOMMANDS:
        add(subparsers)
    from evnet.ctl.keys import add_keys  # evctl keys … (imports this module)
    from evnet.ctl.monitor import add_monitor  # evctl monitor … (imports this module)
    from evnet.ctl.registry import add_registry  # evctl registry … (imports this module)

    from evnet.ctl.network import add_network  # evctl summary | alerts (imports this module)

    add_registry(subparsers)
    add_keys(subparsers)
    add_network(subparsers)
    from evnet.ctl.weather import add_weather  # evctl weather … (imports this module)

    add_weather(subparsers)
    add_monitor(subparsers)
    from evnet.ctl.audit import add_audit  # evctl audit … (reads the database, not the API)

    add_audit(subparsers)
    return parser


def _report(e: EvctlError) -> int:
    print(e.line(), file=sys.stderr)
    return e.exit_code


def run_plain(args: argparse.Namespace, opener: Optional[urllib.request.OpenerDirector] = None) -> int:
    """Run a plain subcommand; its exit code."""
    try:
        return args.run_plain(CentralApi(args, opener), args)
    except EvctlError as e:
        return _report(e)
    except KeyboardInterrupt:
        return 0


async def run_on_reactor(reactor, args: argparse.Namespace) -> int:
    """Run a reactor subcommand; its exit code."""
    try:
        return await args.run(reactor, args)
    except EvctlError as e:
        return _report(e)


def run_local(args: argparse.Namespace) -> int:
    """Run a subcommand that needs neither the API nor the reactor (evctl audit); its exit code."""
    try:
        return args.run_local(args)
    except EvctlError as e:
        return _report(e)
    except BrokenPipeError:  # (evctl audit export | head)
        return 0


def main(argv: Optional[list[str]] = None) -> None:
    args = build_parser().parse_args(argv)
    if getattr(args, "run_local", None) is not None:
        raise SystemExit(run_local(args))
    if getattr(args, "run_plain", None) is not None:
        raise SystemExit(run_plain(args))

    async def run(reactor) -> None:
        raise SystemExit(await run_on_reactor(reactor, args))

    task.react(lambda reactor: defer.ensureDeferred(run(reactor)))
