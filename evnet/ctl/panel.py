"""
The terminal panel (``evctl panel``): the dashboard's state rebuilt from
Central's Server-Sent Events, drawn with rich.

Everything here is pure (no I/O, no Twisted): L{SseParser} turns the
stream's bytes into events, L{PanelState} applies them, L{render} and
L{tile} draw the state; L{summary} counts it (the web page's summary bar)
and a L{CpFilter} (``--state``, ``--search``) chooses the tiles shown.  Reading the stream (twisted.web's Agent,
reconnecting) is L{evnet.ctl.stream}; the command is L{evnet.ctl.cli}.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Iterable, Optional

from rich.columns import Columns
from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

TITLE = "EV CHARGING — MONITORING PANEL"
MAX_MESSAGES = 200
SHOWN_MESSAGES = 12
MAX_LINE = 8 * 1024 * 1024  # bytes of one line not ended yet (a snapshot's data is one line)

STATES = ("ACTIVADO", "SUMINISTRANDO", "PARADO", "AVERIADO", "DESCONECTADO")
STATE_STYLE = {
    "ACTIVADO": "bold white on green4",
    "SUMINISTRANDO": "bold white on green4",
    "PARADO": "bold black on dark_orange",
    "AVERIADO": "bold white on red3",
    "DESCONECTADO": "bold white on grey50",
}
BORDER_STYLE = {
    "ACTIVADO": "green4",
    "SUMINISTRANDO": "green4",
    "PARADO": "dark_orange",
    "AVERIADO": "red3",
    "DESCONECTADO": "grey50",
}


class LineTooLong(ValueError):
    """The stream sent more than L{MAX_LINE} bytes without ending a line."""


class SseParser:
    """
    Server-Sent Events: L{feed} takes the body's bytes as they come, in any
    chunking; L{feed_line} takes one line (without its line ending).
    """

    def __init__(self, max_line: int = MAX_LINE) -> None:
        self.event = ""
        self.data: list[str] = []
        self.max_line = max_line
        self._pending = bytearray()

    def feed(self, data: bytes) -> list[tuple[str, str]]:
        """The (event, data) pairs that C{data} completes, in order."""
        self._pending += data
        events = []
        start = 0
        while (end := self._pending.find(b"\n", start)) >= 0:
            line = bytes(self._pending[start:end]).rstrip(b"\r").decode("utf-8", "replace")
            start = end + 1
            event = self.feed_line(line)
            if event is not None:
                events.append(event)
        del self._pending[:start]
        if len(self._pending) > self.max_line:
            raise LineTooLong(f"a line longer than {self.max_line} bytes")
        return events

    def feed_line(self, line: str) -> Optional[tuple[str, str]]:
        """Return (event, data) when C{line} ends an event, else None."""
        if line == "":
            event, data = self.event or "message", self.data
            self.event, self.data = "", []
            return (event, "\n".join(data)) if data else None
        if line.startswith(":"):
            return None  # a comment (keep-alive)
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "event":
            self.event = value
        elif name == "data":
            self.data.append(value)
        return None


@dataclass
class PanelState:
    """What the panel shows, kept up to date by L{apply}."""

    cps: dict = field(default_factory=dict)
    sessions: dict = field(default_factory=dict)
    messages: list = field(default_factory=list)
    live: bool = False
    status: str = "connecting…"

    def apply(self, event: str, data: str) -> None:
        payload = json.loads(data)
        if event == "snapshot":
            self.cps = {cp["id"]: cp for cp in payload["cps"]}
            self.sessions = {s["id"]: s for s in payload["sessions"]}
            self.messages = list(payload["messages"])[-MAX_MESSAGES:]
            self.live, self.status = True, "live"
        elif event in ("cp", "telemetry"):
            self.cps[payload["cp"]["id"]] = payload["cp"]
        elif event == "session":
            session = payload["session"]
            if session["state"] == "closed":
                self.sessions.pop(session["id"], None)
            else:
                self.sessions[session["id"]] = session
        elif event == "message":
            self.messages.append(payload)
            del self.messages[:-MAX_MESSAGES]

    def disconnected(self, why: str) -> None:
        self.live, self.status = False, why


@dataclass(frozen=True)
class CpFilter:
    """The CPs shown: in one of C{states} (all when empty), with C{search} in the id or the location."""

    states: frozenset = frozenset()
    search: str = ""

    @classmethod
    def parse(cls, states: Iterable[str] = (), search: str = "") -> "CpFilter":
        """From ``--state`` values (repeated or comma-separated, any case) and ``--search``; ValueError if a state is unknown."""
        chosen = set()
        for value in states:
            for name in filter(None, (part.strip().upper() for part in value.split(","))):
                if name not in STATES:
                    raise ValueError(f"--state must be one of {', '.join(STATES)}, not {name!r}")
                chosen.add(name)
        return cls(frozenset(chosen), search.strip().lower())

    @property
    def active(self) -> bool:
        return bool(self.states or self.search)

    def matches(self, cp: dict) -> bool:
        if self.states and cp["state"] not in self.states:
            return False
        return not self.search or self.search in cp["id"].lower() or self.search in str(cp.get("location", "")).lower()

    def describe(self) -> str:
        parts = [" or ".join(s for s in STATES if s in self.states)] if self.states else []
        if self.search:
            parts.append(f"matching {self.search!r}")
        return ", ".join(parts)


def summary(cps: Iterable[dict]) -> dict:
    """The network at a glance: CPs, the count per state, the power delivered now (kW), the charges."""
    counts = dict.fromkeys(STATES, 0)
    power, n = 0.0, 0
    for cp in cps:
        n += 1
        counts[cp["state"]] = counts.get(cp["state"], 0) + 1
        if cp["state"] == "SUMINISTRANDO":
            power += cp.get("kw") or 0.0
    return {"cps": n, "states": counts, "power_kw": power, "charging": counts["SUMINISTRANDO"]}


def summary_line(cps: Iterable[dict]) -> Text:
    """One line: the counts per state in their colours, the power now, the charges."""
    s = summary(cps)
    line = Text(f"{s['cps']} CPs ", style="bold")
    for name in STATES:
        line.append(f" {name} {s['states'][name]} ", style=STATE_STYLE[name])
        line.append(" ")
    line.append(f" {s['power_kw']:.1f} kW now · {s['charging']} charging", style="bold")
    return line


def _when(seconds: float, fmt: str) -> str:
    return datetime.fromtimestamp(seconds).strftime(fmt)


def tile(cp: dict) -> Panel:
    state = cp["state"]
    body = Text()
    body.append(f"{cp['location']}\n")
    body.append(f"{cp['price']:.3f} €/kWh\n")
    body.append(f" {'Out of Order' if state == 'PARADO' else state} ", style=STATE_STYLE.get(state, "bold"))
    if cp.get("driver_id"):
        if state == "SUMINISTRANDO":
            body.append(f"\nDriver {cp['driver_id']}\n{cp['kw'] or 0:.1f} kW  {cp['kwh'] or 0:.3f} kWh\n{cp['euros'] or 0:.2f} €")
        else:
            body.append(f"\nDriver {cp['driver_id']} (authorized)")
    return Panel(body, title=Text(cp["id"], style="bold"), border_style=BORDER_STYLE.get(state, "white"), width=26)


def render(state: PanelState, source: str = "", cp_filter: CpFilter = CpFilter()) -> RenderableType:
    header = Text(TITLE, style="bold white on dark_blue", justify="center")
    status = Text(f"{source}  " if source else "", style="dim")
    status.append(state.status, style="green" if state.live else "yellow")
    shown = [state.cps[k] for k in sorted(state.cps) if cp_filter.matches(state.cps[k])]
    tiles: RenderableType
    if shown:
        tiles = Columns([tile(cp) for cp in shown])
    elif state.cps:
        tiles = Text("No charging point matches the filter.", style="dim")
    else:
        tiles = Text("No charging point has registered yet.", style="dim")
    shown_line = Text(f"showing {len(shown)} of {len(state.cps)}: {cp_filter.describe()}" if cp_filter.active else "",
                      style="dim")
    requests = Table(title="ON-GOING DRIVERS REQUESTS", title_style="bold", expand=True)
    for column in ("DATE", "START TIME", "User ID", "CP"):
        requests.add_column(column)
    for s in sorted(state.sessions.values(), key=lambda s: s["started_at"]):
        requests.add_row(_when(s["started_at"], "%d/%m/%Y"), _when(s["started_at"], "%H:%M:%S"), s["driver_id"], s["cp_id"])
    messages = Table(title="APPLICATION MESSAGES", title_style="bold", expand=True, show_header=False)
    messages.add_column("at", style="dim", no_wrap=True)
    messages.add_column("text")
    if not state.messages:
        messages.add_row("", Text("no messages yet", style="dim"))
    for msg in reversed(state.messages[-SHOWN_MESSAGES:]):
        style = "red" if msg.get("kind") in ("fault", "disconnect", "refused") else None
        messages.add_row(_when(msg["at"], "%d/%m %H:%M:%S"), Text(msg["text"], style=style or ""))
    return Group(header, status, summary_line(state.cps.values()), shown_line, tiles, requests, messages)
