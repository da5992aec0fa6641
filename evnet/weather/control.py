"""
EV_W's operator commands: the parser (L{command}) and the two ways to
reach it, the control endpoint and the terminal (L{evnet.linecontrol}:
``evctl weather`` and the lines typed in EV_W's terminal).  Each command line gets
one answer line, ``OK …`` or ``ERROR …`` (a multi-line answer has its lines
joined with `` | `` on the control endpoint).

``docs/weather.md`` ("Commands") is the contract.
"""

from __future__ import annotations

import json
from datetime import datetime

from evnet.weather.office import CommandError, WeatherOffice

HELP = """\
commands:
  add CITY         watch CITY too (kept across restarts)
  remove CITY      stop watching a city you added
  list             the cities watched: temperature, state, alerts
  list --json      the same as one JSON line, for scripts
  help             this list"""


def row_line(row: dict) -> str:
    """One city of C{list}, for a person."""
    if row["temperature"] is None:
        reading = "no reading yet"
    else:
        reading = f"{row['temperature']:.1f} °C at {datetime.fromtimestamp(row['at']).strftime('%H:%M:%S')}"
    why = [f"CPs at {', '.join(row['locations'])}"] if row["locations"] else []
    if row["added"]:
        why.append("added")
    line = f"{row['city']}: {row['state']}, {reading} ({'; '.join(why)})"
    if row["alerts"]:
        line += f"; alert at Central for {', '.join(row['alerts'])}"
    if row["failing"]:
        line += f"; cannot read the weather: {row['failing']}"
    return line


def command(office: WeatherOffice, line: str) -> str:
    """Run one command line on C{office}; the answer is OK … or ERROR …."""
    name, _, rest = line.strip().partition(" ")
    name, rest = name.lower(), rest.strip()
    try:
        if name == "help":
            return "OK " + HELP
        if name == "list":
            if rest == "--json":
                return "OK " + json.dumps(office.rows(), ensure_ascii=False)
            if rest:
                return "ERROR usage: list [--json]"
            rows = office.rows()
            return "OK " + ("\n".join(row_line(row) for row in rows) if rows else "no city is watched")
        if name in ("add", "remove"):
            if not rest:
                return f"ERROR usage: {name} CITY"
            return "OK " + (office.add(rest) if name == "add" else office.remove(rest))
    except CommandError as e:
        return f"ERROR {e}"
    return f"ERROR unknown command {name!r} (try: help)" if name else "ERROR empty command (try: help)"
