"""
The terminal panel (``evctl panel``): the dashboard's state rebuilt from
Central's Server-Sent Events, drawn with rich.

L{SseParser}, L{PanelState} and L{render} are pure (no I/O).  L{follow} is
the blocking client used by the short-lived ``evctl`` process (not a
reactor program): it reads the stream with urllib, and reconnects after a
pause whenever Central goes away.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime
from typing import Callable, Optional

from rich.columns import Columns
from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

TITLE = "EV CHARGING — MONITORING PANEL"
MAX_MESSAGES = 200
SHOWN_MESSAGES = 12

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


class SseParser:
    """Server-Sent Events, one line at a time (without its line ending)."""

    def __init__(self) -> None:
        self.event = ""
        self.data: list[str] = []

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


def render(state: PanelState, source: str = "") -> RenderableType:
    header = Text(TITLE, style="bold white on dark_blue", justify="center")
    status = Text(f"{source}  " if source else "", style="dim")
    status.append(state.status, style="green" if state.live else "yellow")
    tiles: RenderableType
    if state.cps:
        tiles = Columns([tile(state.cps[k]) for k in sorted(state.cps)])
    else:
        tiles = Text("No charging point has registered yet.", style="dim")
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
    return Group(header, status, tiles, requests, messages)


def stream_request(base_url: str) -> urllib.request.Request:
    return urllib.request.Request(base_url.rstrip("/") + "/api/stream", headers={"Accept": "text/event-stream"})


def read_events(response, on_event: Callable[[str, str], None]) -> None:
    """Feed the events of an open stream to C{on_event} until it ends."""
    parser = SseParser()
    for raw in response:
        event = parser.feed_line(raw.decode("utf-8", "replace").rstrip("\r\n"))
        if event is not None:
            on_event(*event)


def follow(
    base_url: str,
    on_event: Callable[[str, str], None],
    on_lost: Callable[[str], None],
    *,
    opener: Optional[urllib.request.OpenerDirector] = None,
    timeout: float = 40.0,
    retry: float = 2.0,
    sleep: Callable[[float], None] = time.sleep,
    rounds: Optional[int] = None,
) -> None:
    """
    Follow the stream for ever (or C{rounds} connections): C{on_event} for
    each event, C{on_lost(why)} when the connection fails or ends, then
    reconnect after C{retry} seconds.  C{timeout} bounds the silence on the
    connection (Central sends a keep-alive every 15 s).
    """
    opener = opener or urllib.request.build_opener(urllib.request.ProxyHandler({}))
    count = 0
    while rounds is None or count < rounds:
        count += 1
        try:
            with opener.open(stream_request(base_url), timeout=timeout) as response:
                read_events(response, on_event)
            why = "Central closed the stream; reconnecting…"
        except urllib.error.HTTPError as e:
            why = f"Central answered {e.code} {e.reason}; retrying…"
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            why = f"cannot reach Central at {base_url} ({reason}); retrying…"
        on_lost(why)
        sleep(retry)
