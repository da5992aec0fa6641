"""``evnet``: the umbrella command (``evnet demo``, ``evnet ocpp-cp``)."""

from __future__ import annotations

import argparse
import sys

from evnet import __version__


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="evnet",
        description="evnet, an EV charging network. The components run as "
        "'twistd evcentral', 'twistd evmonitor', 'twistd evengine', 'twistd evregistry', 'twistd evweather' "
        "and 'evdriver'; "
        "'evctl' steers them.",
    )
    parser.add_argument("--version", action="version", version=f"evnet {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = commands.add_parser(
        "demo",
        help="run the whole network on this machine with no human",
        description="Starts one Central, 10 charging points, one OCPP 1.6J charge point and 3 drivers "
        "(10 requests each, and one at the OCPP CP) as real "
        "processes on 127.0.0.1; simulates a fault, stops and resumes a CP and restarts a Monitor; "
        "shows the live panel; prints every ticket and a verdict; stops every process it started.",
    )
    demo.add_argument("--cps", type=int, default=10, help="how many charging points (default 10)")
    demo.add_argument("--kafka", metavar="BOOTSTRAP", help="run the streams through this Kafka broker (host:port)")
    demo.add_argument("--db", metavar="URL", help="Central's database (default: SQLite in the working directory); "
                      "e.g. mysql://user:password@127.0.0.1:3306/evnet")
    demo.add_argument("--workdir", metavar="DIR", help="where logs, database and Engine state go (default: a new temp dir)")
    demo.add_argument("--wait", type=float, default=4.0, help="drivers' pause between requests, seconds (default 4)")
    demo.add_argument("--http-port", type=int, default=0, help="the web panel's port (default: a free one)")
    panel = demo.add_mutually_exclusive_group()
    panel.add_argument("--panel", dest="panel", action="store_true", default=None, help="live panel even when not a terminal")
    panel.add_argument("--no-panel", dest="panel", action="store_false", help="plain event lines, no live panel")
    ocpp_cp = commands.add_parser(
        "ocpp-cp",
        help="a simulated OCPP 1.6J charge point (the mobilityhouse ocpp library)",
        description="Connects to Central's --ocpp endpoint with HTTP Basic auth, boots, answers Central's "
        "calls (RemoteStart/RemoteStop, ChangeAvailability, Reset, TriggerMessage), charges with MeterValues "
        "and prints one JSON object per event. Lines on stdin: fault, ok, unplug, heartbeat, quit.",
    )
    from evnet.ocppcp import add_arguments

    add_arguments(ocpp_cp)
    args = parser.parse_args(argv)
    if args.command == "ocpp-cp":
        from evnet import ocppcp

        return ocppcp.main(args)
    if args.command != "demo":
        parser.print_help()
        return 2
    if not 3 <= args.cps <= 50:
        parser.error("--cps must be between 3 and 50")
    from evnet.demo import DemoOptions, run_demo

    return run_demo(DemoOptions(cps=args.cps, kafka=args.kafka, db=args.db, workdir=args.workdir,
                                wait=args.wait, http_port=args.http_port, panel=args.panel))


if __name__ == "__main__":
    sys.exit(main())
