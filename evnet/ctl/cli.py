"""
``evctl``: small local control commands for evnet processes.

Each subcommand registers itself in L{SUBCOMMANDS} (a function that adds
its parser to the argparse subparsers and sets ``run``, a coroutine
function taking the reactor and the parsed arguments and returning the
exit code).  Adding one is adding one such function to the list.

- ``evctl engine ENDPOINT plug|unplug|fault|recover|status|help``
- ``evctl engine ENDPOINT request DRIVER [KWH]``
- ``evctl cps``, ``evctl stop CP|all``, ``evctl resume CP|all``, ``evctl sessions``
  and ``evctl panel``: Central's HTTP API (``--http URL``, default
  http://127.0.0.1:8080; ``--token-file`` for write calls; ``--json``).

The API subcommands are plain blocking programs (urllib; no reactor): they
set ``run_plain``, a function taking the parsed arguments and returning the
exit code, instead of ``run``.

ENDPOINT is the Engine's control endpoint as a Twisted client endpoint
string (``tcp:host=127.0.0.1:port=7101``); a bare port number means that
port on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime
from typing import Any, Callable, Optional

from twisted.internet import defer, endpoints, error, task
from twisted.protocols.basic import LineOnlyReceiver

DEFAULT_TIMEOUT = 10.0
ENGINE_ACTIONS = ("plug", "unplug", "fault", "recover", "status", "request", "help")


class UserError(Exception):
    """A mistake of the person running evctl: printed, exit code 2."""


class CentralRefused(Exception):
    """Central answered an API call with an error: printed, exit code 1."""


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
    except (error.ConnectError, defer.TimeoutError, OSError) as e:
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
    answer = await ask(reactor, args.endpoint, " ".join([args.action, *args.args]), args.timeout)
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
    if not text.startswith(("http://", "https://")):
        raise UserError(f"--http must be a URL like {DEFAULT_HTTP}, not {text!r}")
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


def call_api(args: argparse.Namespace, method: str, path: str) -> Any:
    """One API call; Central's JSON answer, or CentralRefused / UserError."""
    url = base_url(args.http)
    headers = {"Accept": "application/json"}
    if args.token_file:
        headers["Authorization"] = f"Bearer {read_token(args.token_file)}"
    data = b"{}" if method == "POST" else None
    if data is not None:
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(url + path, data=data, method=method, headers=headers)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=args.timeout) as response:
            body = response.read()
    except urllib.error.HTTPError as e:
        try:
            why = json.loads(e.read())["error"]
        except (ValueError, KeyError, TypeError, OSError):
            why = f"{e.code} {e.reason}"
        raise CentralRefused(why) from None
    except (urllib.error.URLError, OSError) as e:
        raise UserError(f"cannot reach Central at {url}: {getattr(e, 'reason', e)}") from None
    try:
        return json.loads(body)
    except ValueError:
        raise UserError(f"{url} did not answer JSON: is it Central's --http endpoint?") from None


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


def _run_cps(args: argparse.Namespace) -> int:
    cps = call_api(args, "GET", "/api/cps")["cps"]
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


def _run_command(args: argparse.Namespace) -> int:
    path = f"/api/cps/{args.verb}" if args.cp == "all" else f"/api/cps/{urllib.parse.quote(args.cp, safe='')}/{args.verb}"
    answer = call_api(args, "POST", path)
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


def _add_stop(subparsers) -> None:
    _add_command(subparsers, "stop", "stop (PARAR: Out of Order)")


def _add_resume(subparsers) -> None:
    _add_command(subparsers, "resume", "resume (REANUDAR)")


def _add_sessions(subparsers) -> None:
    p = subparsers.add_parser("sessions", help="charges in progress and recent charges with their tickets",
                              description="Charges in progress, then the most recent charges and their tickets.")
    _api_options(p)
    p.add_argument("--limit", type=int, default=20, help="how many recent charges (default %(default)s)")
    p.set_defaults(run_plain=_run_sessions)


def _run_sessions(args: argparse.Namespace) -> int:
    answer = call_api(args, "GET", f"/api/sessions?limit={args.limit}")
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
    return 0


def _add_panel(subparsers) -> None:
    p = subparsers.add_parser("panel", help="Central's monitoring panel, live in the terminal",
                              description="Follow Central's event stream and draw the panel (Ctrl+C to quit). "
                              "Reconnects by itself when Central restarts.")
    _api_options(p, json_option=False)
    p.add_argument("--once", action="store_true", help="draw the current panel once and exit")
    p.set_defaults(run_plain=_run_panel)


def _run_panel(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.live import Live

    from evnet.services import panel

    url = base_url(args.http)
    state = panel.PanelState()
    console = Console()
    if args.once:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

        class Got(Exception):
            pass

        def first(event: str, data: str) -> None:
            state.apply(event, data)
            if event == "snapshot":
                raise Got()

        try:
            with opener.open(panel.stream_request(url), timeout=args.timeout) as response:
                panel.read_events(response, first)
        except Got:
            console.print(panel.render(state, url))
            return 0
        except urllib.error.HTTPError as e:
            raise CentralRefused(f"{e.code} {e.reason}") from None
        except (urllib.error.URLError, OSError) as e:
            raise UserError(f"cannot reach Central at {url}: {getattr(e, 'reason', e)}") from None
        raise UserError(f"{url} closed the stream before its snapshot")
    with Live(panel.render(state, url), console=console, auto_refresh=False, screen=console.is_terminal) as live:

        def event(name: str, data: str) -> None:
            state.apply(name, data)
            live.update(panel.render(state, url), refresh=True)

        def lost(why: str) -> None:
            state.disconnected(why)
            live.update(panel.render(state, url), refresh=True)

        panel.follow(url, event, lost, timeout=max(args.timeout, 40.0))
    return 0  # pragma: no cover - follow() returns only on Ctrl+C


SUBCOMMANDS: list[Callable] = [_add_engine, _add_cps, _add_stop, _add_resume, _add_sessions, _add_panel]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="evctl", description="Control commands for evnet processes.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in SUBCOMMANDS:
        add(subparsers)
    from evnet.ctl.registry import add_registry  # evctl registry … (imports this module)

    add_registry(subparsers)
    return parser


def run_plain(args: argparse.Namespace) -> int:
    try:
        return args.run_plain(args)
    except UserError as e:
        print(f"evctl: {e}", file=sys.stderr)
        return 2
    except CentralRefused as e:
        print(f"evctl: Central refused: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0


def main(argv: Optional[list[str]] = None) -> None:
    args = build_parser().parse_args(argv)
    if getattr(args, "run_plain", None) is not None:
        raise SystemExit(run_plain(args))

    async def run(reactor) -> None:
        try:
            code = await args.run(reactor, args)
        except UserError as e:
            print(f"evctl: {e}", file=sys.stderr)
            code = 2
        raise SystemExit(code)

    task.react(lambda reactor: defer.ensureDeferred(run(reactor)))
