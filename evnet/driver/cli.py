"""
``evdriver``: the driver's command.  Parses options, reads the request file,
picks the output (rich in a terminal, plain lines otherwise, JSON lines with
``--json``) and runs L{evnet.driver.core.DriverService} on the reactor,
reaching Central on a framed link (``--central``) or through Kafka
(``--kafka``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Optional, TextIO

from evnet.driver.core import (
    DEFAULT_CHARGE_TIMEOUT,
    DEFAULT_WAIT,
    EXIT_INTERRUPTED,
    EXIT_NO_LIST,
    EXIT_OK,
    EXIT_REFUSED,
    Event,
)
from evnet.driver.requests import RequestsFileError, read_requests
from evnet.driver.view import DriverView, describe_reason, fmt_duration
from evnet.protocols.vocabulary import kafka_prefix, valid_id

EXIT_USAGE = 2  # a bad option or an unreadable request file (argparse's code too)

DESCRIPTION = """\
EV_Driver: ask Central for a charge at each charging point listed in a request
file, one after the other, and follow each charge to its ticket.

The request file has one request per line: a CP id, optionally followed by a
target in kWh (e.g. "CP03 0.05"). Blank lines and "#" comments are ignored; a
malformed line is reported with its line number and skipped."""

EPILOG = f"""\
examples:
  evdriver --driver-id D1 --requests-file driver1.txt --central tcp:host=127.0.0.1:port=7001
  evdriver --driver-id D1 --list --central tcp:host=127.0.0.1:port=7001
  evdriver --driver-id D1 --requests-file driver1.txt --central tcp:host=127.0.0.1:port=7001 --json
  evdriver --driver-id D1 --requests-file driver1.txt --kafka 127.0.0.1:9092

exit codes: {EXIT_OK} done (whatever the outcome of each charge), {EXIT_REFUSED} Central refused the
driver id, {EXIT_USAGE} bad option or unreadable request file, {EXIT_NO_LIST} no list from Central
within --charge-timeout (--list), {EXIT_INTERRUPTED} interrupted.
Example request files: evnet/examples/driver1.txt ... driver3.txt."""


def build_parser(prog: str = "evdriver") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--driver-id", required=True, metavar="ID", help="this driver's id ([A-Za-z0-9_.-], up to 32 characters)")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--requests-file", metavar="FILE", help="the requests to work through, one per line: CP_ID [TARGET_KWH]")
    what.add_argument("--list", action="store_true", help="show the charging points available now (id, location, price) and exit")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument(
        "--central",
        metavar="ENDPOINT",
        help="Central's drivers endpoint, a Twisted client endpoint string, e.g. tcp:host=127.0.0.1:port=7001",
    )
    parser.add_argument(
        "--credentials-file",
        metavar="FILE",
        help="this driver's credentials (JSON driver_id and secret, mode 0600, as 'evctl drivers add "
        "--credentials-file' writes it): the driver logs in without sending its secret and everything "
        "it exchanges with Central is sealed (docs/protocol.md §7)",
    )
    parser.add_argument(
        "--ca-file",
        metavar="FILE",
        help="the CA (PEM) to verify Central's certificate with, when --central is tls:host=H:port=P",
    )
    where.add_argument(
        "--kafka",
        metavar="BOOTSTRAP",
        help="reach Central through Kafka instead (Central must run with --kafka): "
        "the bootstrap servers, host:port[,host:port]",
    )
    parser.add_argument(
        "--kafka-prefix", type=kafka_prefix, default="", metavar="PREFIX",
        help="the prefix of the network's Kafka topics and consumer groups, as Central's --kafka-prefix "
        "(none by default)",
    )
    parser.add_argument(
        "--wait",
        type=_non_negative,
        default=DEFAULT_WAIT,
        metavar="SECONDS",
        help=f"pause after each request's outcome before the next one (default {DEFAULT_WAIT:g})",
    )
    parser.add_argument(
        "--charge-timeout",
        type=_positive,
        default=DEFAULT_CHARGE_TIMEOUT,
        metavar="SECONDS",
        help="give up on a request when Central says nothing about it for this long; with --list, "
        f"give up on the list, and exit with code {EXIT_NO_LIST} (default {DEFAULT_CHARGE_TIMEOUT:g})",
    )
    parser.add_argument(
        "--progress-file",
        metavar="FILE",
        help="where this driver remembers how far it got in its request file, so that, killed and "
        "started again, it goes on with the file instead of starting it over "
        "(default: .evdriver-ID.progress in the current directory; removed when the file is done)",
    )
    parser.add_argument(
        "--from-start", action="store_true", help="ignore the progress file: start with the first request"
    )
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print one JSON object per event (for scripts)")
    output.add_argument("--plain", action="store_true", help="plain lines even in a terminal (no colours)")
    return parser


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}")
    return value


def _non_negative(text: str) -> float:
    value = _number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text!r}")
    return value


def _positive(text: str) -> float:
    value = _number(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, got {text!r}")
    return value


# ---------------------------------------------------------------------------
# Outputs: each takes events from the service and writes them somewhere.
# ---------------------------------------------------------------------------


class PlainOutput:
    """The view's lines, without colours; one line per TELEM."""

    def __init__(self, stream: TextIO, view: Optional[DriverView] = None) -> None:
        self.stream = stream
        self.view = view or DriverView()

    def __call__(self, event: Event) -> None:
        for line in self.view.text(event):
            self.stream.write(line + "\n")
        self.stream.flush()


class JsonOutput:
    """One JSON object per event."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def __call__(self, event: Event) -> None:
        self.stream.write(json.dumps(event, ensure_ascii=False) + "\n")
        self.stream.flush()


class RichOutput:
    """Coloured lines in a terminal, TELEM as one live progress line."""

    def __init__(self, console: Any, view: Optional[DriverView] = None) -> None:
        self.console = console
        self.view = view or DriverView()
        self.live: Any = None

    def __call__(self, event: Event) -> None:
        from rich.text import Text

        if event["type"] == "charging":
            text, style = self.view.lines(event)[0]
            line = Text(text, style=style)
            if self.live is None:
                from rich.live import Live

                self.live = Live(line, console=self.console, auto_refresh=False, transient=True)
                self.live.start()
            self.live.update(line, refresh=True)
            return
        if self.live is not None and event["type"] in ("ticket", "timeout", "link_lost", "interrupted", "summary"):
            last = self.live.renderable
            self.live.stop()
            self.live = None
            self.console.print(last)  # keep the last progress line on screen
        if event["type"] == "summary":
            self._summary(event)
            return
        for text, style in self.view.lines(event):
            self.console.print(Text(text, style=style))

    def _summary(self, event: Event) -> None:
        from rich.table import Table
        from rich.text import Text

        header = self.view.lines(event)[0][0]
        self.console.print(Text(header, style="bold"))
        if not (event["tickets"] or event["refused"] or event["unfinished"]):
            return
        table = Table(show_edge=False, header_style="bold")
        for name, justify in (("", "left"), ("CP", "left"), ("kWh", "right"), ("€", "right"), ("duration", "right"), ("how it ended", "left")):
            table.add_column(name, justify=justify)
        for t in event["tickets"]:
            how = describe_reason(t["reason"]) + (" (earlier run)" if t.get("recovered") else "")
            table.add_row("ticket", t["cp"], f"{t['kwh']:.3f}", f"{t['euros']:.2f}", fmt_duration(t["seconds"]), how)
        for r in event["refused"]:
            table.add_row(Text("refused", style="red"), r["cp"], "", "", "", r["reason"])
        for u in event["unfinished"]:
            table.add_row(Text("no result", style="red"), u["cp"], "", "", "", u["reason"])
        self.console.print(table)


def choose_output(args: argparse.Namespace, stream: TextIO) -> Any:
    if args.json:
        return JsonOutput(stream)
    if not args.plain and stream.isatty():
        from rich.console import Console

        return RichOutput(Console(file=stream))
    return PlainOutput(stream)


# ---------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------


def _error(message: str) -> int:
    sys.stderr.write(f"evdriver: error: {message}\n")
    return EXIT_USAGE


def main(argv: Optional[list[str]] = None, prog: str = "evdriver") -> None:
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    if not valid_id(args.driver_id):
        sys.exit(_error(f"--driver-id must be 1 to 32 of A-Z a-z 0-9 _ . -, got {args.driver_id!r}"))
    args.credentials = None
    if args.credentials_file is not None:
        from evnet.registry.credentials import CredentialsError, load_driver_credentials

        try:
            args.credentials = load_driver_credentials(args.credentials_file)
        except CredentialsError as e:
            sys.exit(_error(str(e)))
        if args.credentials.driver_id != args.driver_id:
            sys.exit(_error(f"--credentials-file {args.credentials_file} is driver {args.credentials.driver_id}'s, "
                            f"not {args.driver_id}'s"))
    requests, problems = [], []
    if not args.list:
        try:
            requests, problems = read_requests(args.requests_file)
        except RequestsFileError as e:
            sys.exit(_error(str(e)))

    from twisted.internet import endpoints, reactor, task

    endpoint = None
    if args.kafka is not None:
        from evnet.kafka.errors import BusError, parse_bootstrap

        try:
            parse_bootstrap(args.kafka)
        except BusError as e:
            sys.exit(_error(f"--kafka: {e}"))
    else:
        if args.ca_file is not None and args.central.startswith("tls:"):
            from twisted.python import usage

            from evnet.endpoints import client_endpoint

            try:
                endpoint = client_endpoint("central", args.central, "tls:host=H:port=7001", ca_file=args.ca_file)
            except usage.UsageError as e:
                sys.exit(_error(str(e)))
        else:
            try:
                endpoint = endpoints.clientFromString(reactor, args.central)
            except Exception as e:  # clientFromString raises several kinds, all the user's mistake
                sys.exit(_error(f"--central {args.central!r} is not a client endpoint string ({e}); e.g. tcp:host=127.0.0.1:port=7001"))
    output = choose_output(args, sys.stdout)
    task.react(_run, (args, endpoint, requests, problems, output))


def make_transport(reactor: Any, args: argparse.Namespace, endpoint: Any) -> Any:
    """The way to Central: a framed link (--central), or Kafka (--kafka)."""
    from evnet.driver.transports import KafkaTransport, LinkTransport
    from evnet.kafka.bus import KafkaBus

    if args.kafka is None:
        return LinkTransport(endpoint, args.central, reactor, credentials=getattr(args, "credentials", None))
    bus = KafkaBus(args.kafka, f"evdriver-{args.driver_id}", reactor=reactor, prefix=args.kafka_prefix)
    return KafkaTransport(bus, args.driver_id, reactor, credentials=getattr(args, "credentials", None))


async def _run(reactor: Any, args: argparse.Namespace, endpoint: Any, requests: list, problems: list, output: Any) -> None:
    from evnet.driver.core import DriverService
    from evnet.driver.requests import Progress

    progress = None
    if not args.list:
        progress = Progress(
            args.progress_file or f".evdriver-{args.driver_id}.progress",
            args.requests_file,
            Path(args.requests_file).read_text(encoding="utf-8"),
        )
        if args.from_start:
            progress.clear()
    driver = DriverService(
        args.driver_id,
        requests,
        make_transport(reactor, args, endpoint),
        output,
        reactor,
        wait=args.wait,
        charge_timeout=args.charge_timeout,
        list_only=args.list,
        progress=progress,
    )
    for problem in problems:
        driver.emit("bad_line", line=problem.line, message=problem.message)
    # (After the end, the interrupt of the shutdown is an input the driver ignores.)
    reactor.addSystemEventTrigger("before", "shutdown", driver.interrupt)
    driver.startService()
    try:
        code = await driver.done
    finally:
        await driver.stopService()
    if code:
        raise SystemExit(code)
