"""
The Engine's commands: the parser (L{command}) and the two ways to reach it,
the control endpoint (L{ControlFactory}, used by ``evctl engine``) and the
terminal (L{ConsoleProtocol}, read by L{ConsoleService}).  Each command line gets one answer line,
``OK …`` or ``ERROR …``.

The three line classes serve any C{target} with a C{command(line) -> str}
method: the Monitor's console and control endpoint (``evctl monitor``) are
the same classes over L{evnet.monitor.control}.

``docs/chargingpoint.md`` ("Commands") is the contract.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from twisted.application import service
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.protocols.basic import LineOnlyReceiver, LineReceiver

from evnet.engine.charger import CommandError

if TYPE_CHECKING:
    from evnet.engine.service import EngineService

HELP = """\
commands (or their first letter):
  plug                      plug the vehicle in (needs an authorized charge)
  unplug                    unplug it; a charge in progress ends
  fault                     simulate a fault: health checks answer KO, a charge ends
  recover                   clear the simulated fault
  status                    show the CP, its charge and its state
  request DRIVER [KWH]      ask Central for a charge at this CP (optional kWh target)
  help                      this list"""

_SHORT = {"p": "plug", "u": "unplug", "f": "fault", "r": "recover", "s": "status", "h": "help", "?": "help"}


def command(engine: "EngineService", line: str) -> str:
    """Run one command line on C{engine}; the answer is one line, OK … or ERROR …."""
    words = line.split()
    if not words:
        return "ERROR empty command (try: help)"
    name = _SHORT.get(words[0].lower(), words[0].lower())
    args = words[1:]
    charger = engine.charger
    actions = {
        "plug": charger.plug,
        "unplug": charger.unplug,
        "fault": charger.set_fault,
        "recover": charger.recover,
        "status": engine.status,
    }
    try:
        if name == "help":
            return "OK " + HELP
        if name == "request":
            return "OK " + _request(engine, args)
        if name not in actions:
            return f"ERROR unknown command {words[0]!r} (try: help)"
        if args:
            return f"ERROR {name} takes no arguments"
        return "OK " + actions[name]()
    except CommandError as e:
        return f"ERROR {e}"


def _request(engine: "EngineService", args: list[str]) -> str:
    if not 1 <= len(args) <= 2:
        raise CommandError("usage: request DRIVER [KWH]")
    try:
        kwh = float(args[1]) if len(args) == 2 else 0.0
    except ValueError:
        raise CommandError(f"bad target {args[1]!r}: kWh must be a number >= 0") from None
    if engine.monitor is None:
        raise CommandError("no Monitor connected: Central cannot be asked")
    if engine.bus is not None and engine.key_id is None:
        raise CommandError("no key from the Monitor yet: nothing goes to Kafka in the clear (try again after its login)")
    req = engine.charger.request(args[0], kwh)
    target = f" up to {req.target_kwh:.3f} kWh" if req.target_kwh else ""
    return f"asked Central for a charge for {req.driver_id}{target}; its answer shows in the log"


class ControlProtocol(LineOnlyReceiver):
    """The control endpoint: one command a line, one answer line."""

    delimiter = b"\n"
    MAX_LENGTH = 1024

    def lineReceived(self, line: bytes) -> None:
        text = line.decode("utf-8", "replace").strip()
        if not text:
            return
        self.sendLine(self.factory.target.command(text).replace("\n", " | ").encode("utf-8"))

    def lineLengthExceeded(self, line: bytes) -> None:
        self.sendLine(b"ERROR line too long")
        self.transport.loseConnection()


class ControlFactory(Factory):
    """The control endpoint of C{target} (the Engine, or the Monitor)."""

    protocol = ControlProtocol
    noisy = False

    def __init__(self, target: Any) -> None:
        self.target = target


ENGINE_BANNER = "EV_CP_E: type a command (help lists them)"


class ConsoleProtocol(LineReceiver):
    """The same commands typed in the terminal (the Engine's keys: p u f r s h)."""

    delimiter = b"\n"

    def __init__(self, target: Any, banner: str = ENGINE_BANNER) -> None:
        self.target = target
        self.banner = banner

    def connectionMade(self) -> None:
        self.transport.write(self.banner.encode("utf-8") + b"\n")

    def lineReceived(self, line: bytes) -> None:
        text = line.decode("utf-8", "replace").strip()
        if text:
            self.transport.write(self.target.command(text).encode("utf-8") + b"\n")


class ConsoleService(service.Service):
    """
    Reads commands for C{target} from stdin for as long as it runs.  A stdin that
    cannot be read (closed, say) is said in one line and passed to
    C{on_failure}.  C{stdio} makes the reader (L{twisted.internet.stdio.StandardIO}).
    """

    log = Logger()

    def __init__(self, target: Any, on_failure: Callable[[str], None], stdio: Any = None,
                 banner: str = ENGINE_BANNER) -> None:
        self.target = target
        self.on_failure = on_failure
        self.stdio = stdio
        self.banner = banner

    def startService(self) -> None:
        super().startService()
        if self.stdio is None:
            from twisted.internet.stdio import StandardIO

            self.stdio = StandardIO
        try:
            self.stdio(ConsoleProtocol(self.target, self.banner))
        except OSError as e:
            text = f"cannot read commands from stdin: {e.strerror or e}"
            self.log.error("{text}", text=text)
            self.on_failure(text)
