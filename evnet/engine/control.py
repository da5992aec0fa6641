"""
The Engine's commands: the parser (L{command}), which the control endpoint
(``evctl engine``) and the terminal reach through L{evnet.linecontrol}
(the same line classes serve the Monitor's and EV_W's commands).  Each
command line gets one answer line, ``OK …`` or ``ERROR …``.

``docs/chargingpoint.md`` ("Commands") is the contract.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

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


ENGINE_BANNER = "EV_CP_E: type a command (help lists them)"
