"""
``evctl panel``: Central's stream (L{evnet.ctl.stream}) applied to a
L{PanelState} and drawn with rich, once (L{panel_once}) or live
(L{panel_live}, redrawn from the reactor on every event).
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer

from evnet.ctl.errors import CentralRefused, UserError
from evnet.ctl.panel import CpFilter, PanelState, render
from evnet.ctl.stream import EventStream, Follower, Refused, Unreachable, Unreadable


async def panel_once(agent: Any, clock: Any, url: str, console: Any, timeout: float,
                     cp_filter: CpFilter = CpFilter()) -> int:
    """Print the panel of the stream's first snapshot; exit code 0, or an EvctlError."""
    state = PanelState()

    def apply(event: str, data: str) -> None:
        state.apply(event, data)
        if event == "snapshot":
            stream.stop()

    stream = EventStream(agent, url, apply, clock, idle_timeout=timeout)
    try:
        await stream.start()
    except Refused as e:
        raise CentralRefused(str(e)) from None
    except Unreachable as e:
        raise UserError(f"cannot reach Central at {url}: {e.reason}") from None
    except Unreadable as e:
        raise UserError(f"{url} did not send Central's event stream ({e.reason}): is it Central's --http endpoint?") from None
    if not state.live:
        raise UserError(f"{url} closed the stream before its snapshot")
    console.print(render(state, url, cp_filter))
    return 0


async def panel_live(agent: Any, clock: Any, url: str, console: Any, until: defer.Deferred, idle_timeout: float,
                     cp_filter: CpFilter = CpFilter()) -> int:
    """
    Follow the stream and redraw the panel on every event and every lost
    connection, until C{until} fires (Ctrl+C); exit code 0.  Drawn on the
    terminal's alternate screen; when stdout is not a terminal, the last
    panel is printed once at the end.
    """
    from rich.live import Live

    state = PanelState()
    with Live(render(state, url, cp_filter), console=console, auto_refresh=False, screen=console.is_terminal) as live:

        def redraw() -> None:
            live.update(render(state, url, cp_filter), refresh=True)

        def apply(event: str, data: str) -> None:
            state.apply(event, data)
            redraw()

        def lost(why: str) -> None:
            state.disconnected(why)
            redraw()

        follower = Follower(agent, url, apply, lost, clock, idle_timeout=idle_timeout)
        follower.startService()
        try:
            await until
        finally:
            follower.stopService()
    return 0
