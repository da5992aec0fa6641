"""``twistd evengine``: options and service wiring for EV_CP_E, the Engine."""

from __future__ import annotations

import math
import os
import sys

from twisted.application import service
from twisted.python import usage

from evnet.endpoints import Listener, check_server_endpoint, stop_process
from evnet.protocols.link import LinkFactory
from evnet.engine.control import ENGINE_BANNER
from evnet.linecontrol import ConsoleService, ControlFactory
from evnet.engine.service import EngineService
from evnet.engine.statefile import StateError, StateFile, StateWriter
from evnet.protocols.vocabulary import kafka_prefix

DEFAULT_LISTEN = "tcp:7100:interface=127.0.0.1"
DEFAULT_CONTROL = "tcp:7101:interface=127.0.0.1"
DEFAULT_STATE_DIR = "evengine-state"


class Options(usage.Options):
    synopsis = (
        "[--listen ENDPOINT] [--control ENDPOINT] [--state-dir DIR] [--power-kw KW] [--auto-plug] [--stdin] "
        "[--kafka BOOTSTRAP]"
    )
    longdesc = (
        "EV_CP_E: a charging point's Engine, the charger itself. It serves one Monitor, "
        "supplies the charges Central authorizes and keeps each charge's progress in its "
        "state directory. Drive it by typing commands in its terminal, or with "
        "'evctl engine CONTROL-ENDPOINT plug|unplug|fault|recover|status|request DRIVER [KWH]'. "
        "Addresses are Twisted endpoint strings, e.g. tcp:7100:interface=127.0.0.1."
    )
    optParameters = [
        ["listen", "l", DEFAULT_LISTEN, "Endpoint where the Monitor connects."],
        ["control", "c", DEFAULT_CONTROL, "Endpoint of the local control command (evctl engine); 'none' for no control endpoint."],
        ["state-dir", "d", DEFAULT_STATE_DIR, "Directory of the state file (created if missing)."],
        ["power-kw", "p", "11", "Power supplied while charging, in kW."],
        ["kafka", "k", None,
         "Kafka bootstrap servers (host:port[,host:port]): telemetry goes to cp.telemetry and "
         "STOP/REQ to cp.events. Without it they go through the Monitor."],
        ["kafka-prefix", None, "", "Prefix of this network's Kafka topics and consumer groups (PREFIX.cp.telemetry...), so that several networks share one cluster; none by default.", kafka_prefix],
    ]
    optFlags = [
        ["auto-plug", None, "Plug a vehicle in as soon as a charge is authorized (unattended scenarios)."],
        ["stdin", None, "Read commands from stdin even when it is not a terminal."],
    ]

    def postOptions(self) -> None:
        try:
            power = float(self["power-kw"])
        except ValueError:
            power = math.nan
        if not (power > 0 and math.isfinite(power)):
            raise usage.UsageError(f"--power-kw must be a number of kW above 0, not {self['power-kw']!r}")
        self["power-kw"] = power
        if self["kafka"] is not None:
            from evnet.kafka.errors import BusError, parse_bootstrap

            try:
                parse_bootstrap(self["kafka"])
            except BusError as e:
                raise usage.UsageError(f"--kafka: {e}") from None
        for name in ("listen", "control"):
            if name == "control" and self[name].lower() == "none":
                continue
            check_server_endpoint(name, self[name], DEFAULT_LISTEN)
        state_dir = self["state-dir"]
        if os.path.exists(state_dir) and not os.path.isdir(state_dir):
            raise usage.UsageError(f"--state-dir {state_dir!r} is not a directory")
        try:
            os.makedirs(state_dir, exist_ok=True)
        except OSError as e:
            raise usage.UsageError(f"cannot use --state-dir {state_dir!r}: {e.strerror}") from None
        if not os.access(state_dir, os.W_OK | os.X_OK):
            raise usage.UsageError(f"cannot write in --state-dir {state_dir!r}")
        self.store = StateFile(state_dir)
        try:
            self.restored = self.store.load()
        except StateError as e:
            raise usage.UsageError(f"{e}; move it away to start afresh") from None


def makeService(options: Options) -> service.MultiService:
    from twisted.internet import reactor

    top = service.MultiService()
    bus = None
    if options["kafka"] is not None:
        from evnet.kafka.bus import KafkaBus

        # Added first: started before the Engine (which may publish a STOP
        # at once) and stopped after it (flushing what it published last).
        bus = KafkaBus(options["kafka"], f"evengine-{os.getpid()}", reactor=reactor, prefix=options["kafka-prefix"])
        bus.setServiceParent(top)
    engine = EngineService(
        options.store,
        reactor,
        power_kw=options["power-kw"],
        auto_plug=options["auto-plug"],
        restored=options.restored,
        bus=bus,
        writer=StateWriter(options.store, reactor),  # the state file's own thread, started and stopped with the Engine
    )
    engine.setServiceParent(top)
    fail = stop_process(reactor, "evengine")
    Listener("listen", options["listen"], LinkFactory(engine, initiator=False, clock=reactor), reactor, fail).setServiceParent(top)
    if options["control"].lower() != "none":
        Listener("control", options["control"], ControlFactory(engine.command), reactor, fail).setServiceParent(top)
    if options["stdin"] or (sys.stdin is not None and sys.stdin.isatty()):
        ConsoleService(engine.command, fail, ENGINE_BANNER).setServiceParent(top)
    return top
