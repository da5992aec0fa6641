"""
``evctl``: small local control commands for evnet processes.

Each subcommand registers itself in L{SUBCOMMANDS} (a function that adds
its parser to the argparse subparsers and sets ``run``, a coroutine
function taking the reactor and the parsed arguments and returning the
exit code).  Adding one is adding one such function to the list.

- ``evctl engine ENDPOINT plug|unplug|fault|recover|status|help``
- ``evctl engine ENDPOINT request DRIVER [KWH]``

ENDPOINT is the Engine's control endpoint as a Twisted client endpoint
string (``tcp:host=127.0.0.1:port=7101``); a bare port number means that
port on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable, Optional

from twisted.internet import defer, endpoints, error, task
from twisted.protocols.basic import LineOnlyReceiver

DEFAULT_TIMEOUT = 10.0
ENGINE_ACTIONS = ("plug", "unplug", "fault", "recover", "status", "request", "help")


class UserError(Exception):
    """A mistake of the person running evctl: printed, exit code 2."""


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


SUBCOMMANDS: list[Callable] = [_add_engine]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="evctl", description="Control commands for evnet processes.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in SUBCOMMANDS:
        add(subparsers)
    return parser


def main(argv: Optional[list[str]] = None) -> None:
    args = build_parser().parse_args(argv)

    async def run(reactor) -> None:
        try:
            code = await args.run(reactor, args)
        except UserError as e:
            print(f"evctl: {e}", file=sys.stderr)
            code = 2
        raise SystemExit(code)

    task.react(lambda reactor: defer.ensureDeferred(run(reactor)))
