"""
The Monitor's commands, typed in its terminal or sent to its control
endpoint (``evctl monitor ENDPOINT reauth|status|help``).  The line
protocol and the console are the Engine's (L{evnet.engine.control}): one
command a line, one answer line, ``OK …`` or ``ERROR …``.

``docs/chargingpoint.md`` ("The Monitor's commands") is the contract.
"""

from __future__ import annotations

from typing import Any

HELP = """\
commands (or their first letter):
  reauth    log in to Central again, with the credentials file read again
            (after Central revoked the key, the Monitor waits for this)
  status    show the CP, its Central link and key, and its Engine's health
  help      this list"""

BANNER = "EV_CP_M: type a command (help lists them)"

_SHORT = {"r": "reauth", "s": "status", "h": "help", "?": "help"}


class CommandError(Exception):
    """A command that cannot be done now; the text says why, for a person."""


def command(monitor: Any, line: str) -> str:
    """Run one command line on C{monitor}; the answer is one line, OK … or ERROR …."""
    words = line.split()
    if not words:
        return "ERROR empty command (try: help)"
    name = _SHORT.get(words[0].lower(), words[0].lower())
    actions = {"reauth": monitor.reauth, "status": monitor.status, "help": lambda: HELP}
    if name not in actions:
        return f"ERROR unknown command {words[0]!r} (try: help)"
    if len(words) > 1:
        return f"ERROR {name} takes no arguments"
    try:
        return "OK " + actions[name]()
    except CommandError as e:
        return f"ERROR {e}"
