"""
The driver's view, pure: an event of L{evnet.driver.core.DriverService} to
the lines a person reads, each with a ``rich`` style name.  Used by the
command's outputs (L{evnet.driver.cli}); no I/O.
"""

from __future__ import annotations

from evnet.driver.core import Event
from evnet.protocols import vocabulary as v

REASONS = {
    v.REASON_TARGET: "target reached",
    v.REASON_UNPLUG: "vehicle unplugged",
    v.REASON_FAULT: "charging point fault",
    v.REASON_PARAR: "charging point stopped by Central",
    v.REASON_DISCONNECTED: "charging point disconnected",
    v.REASON_ENGINE_RESTART: "charging point restarted",
}


def describe_reason(reason: str) -> str:
    return REASONS.get(reason, reason or "ended")


def fmt_duration(seconds: float) -> str:
    """C{0:07}, C{12:30}, C{1:02:03}."""
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}:{minutes:02d}:{secs:02d}"
    return f"{minutes}:{secs:02d}"


def fmt_target(kwh: float) -> str:
    return f"target {kwh:.3f} kWh" if kwh else "no target"


class DriverView:
    """
    Turns events into the lines a person reads: C{lines(event)} is a list
    of C{(text, style)} pairs, the style a ``rich`` style name ("" for
    none).  No I/O.
    """

    def lines(self, event: Event) -> list[tuple[str, str]]:
        method = getattr(self, "_" + event["type"], None)
        if method is None:
            return [(f"{event['type']}: {event}", "")]
        return method(event)

    def text(self, event: Event) -> list[str]:
        """The lines without styles, as printed when stdout is not a terminal."""
        return [text for text, _ in self.lines(event)]

    # -- one method per event type ---------------------------------------

    @staticmethod
    def _who(event: Event) -> str:
        if event.get("recovered"):
            return f"{event['cp']} (earlier run)"
        if "n" in event:
            return f"[{event['n']}/{event['total']}] {event['cp']}"
        return event["cp"]

    def _bad_line(self, e: Event) -> list[tuple[str, str]]:
        return [(f"skipped {e['message']}", "yellow")]

    @staticmethod
    def _at(e: Event) -> str:
        """Where Central is: on a link, or through Kafka."""
        if e.get("via") == "kafka":
            return f"through Kafka at {e['central']}"
        return f"at {e['central']}"

    def _connected(self, e: Event) -> list[tuple[str, str]]:
        verb = "reconnected" if e.get("again") else "connected"
        return [(f"{verb} to Central {self._at(e)} as driver {e['driver']}", "green")]

    def _no_answer(self, e: Event) -> list[tuple[str, str]]:
        return [
            (
                f"Central does not answer through Kafka at {e['central']} "
                f"(is it running with --kafka?), still waiting",
                "bold red",
            )
        ]

    def _kafka_unreachable(self, e: Event) -> list[tuple[str, str]]:
        return [(f"cannot reach Kafka at {e['kafka']} ({e['reason']}), retrying", "bold red")]

    def _kafka_back(self, e: Event) -> list[tuple[str, str]]:
        return [(f"reached Kafka at {e['kafka']} again", "green")]

    def _not_sent(self, e: Event) -> list[tuple[str, str]]:
        return [(f"could not send {e['code']} through Kafka at {e['kafka']}: {e['reason']}", "bold red")]

    def _unreachable(self, e: Event) -> list[tuple[str, str]]:
        return [(f"cannot reach Central at {e['central']} ({e['reason']}), retrying", "bold red")]

    def _link_lost(self, e: Event) -> list[tuple[str, str]]:
        return [(f"lost the link to Central at {e['central']}, reconnecting", "bold red")]

    def _refused(self, e: Event) -> list[tuple[str, str]]:
        return [(f"Central refused driver {e['driver']}: {e['reason']}", "bold red")]

    def _request(self, e: Event) -> list[tuple[str, str]]:
        return [(f"{self._who(e)}: requesting a charge ({fmt_target(e['target_kwh'])})", "bold")]

    def _authorized(self, e: Event) -> list[tuple[str, str]]:
        return [
            (f"{self._who(e)}: AUTHORIZED, session {e['session']}", "green"),
            (f"{self._who(e)}: waiting for the vehicle to be plugged in", "dim"),
        ]

    def _resumed(self, e: Event) -> list[tuple[str, str]]:
        where = f"going on with request {e['n']} of {e['total']}"
        if e.get("session"):
            why = f"its charge (session {e['session']}) was in progress when this driver stopped"
        else:
            why = f"an earlier run of this driver did the first {e['n'] - 1}"
        return [(f"{where}: {why} (--from-start to start over)", "cyan")]

    def _recovered_charge(self, e: Event) -> list[tuple[str, str]]:
        return [
            (
                f"{e['cp']}: following a charge started in an earlier run, session {e['session']}",
                "cyan",
            )
        ]

    def _denied(self, e: Event) -> list[tuple[str, str]]:
        return [(f"{self._who(e)}: DENIED: {e['reason']}", "bold red")]

    def _charging(self, e: Event) -> list[tuple[str, str]]:
        return [
            (
                f"{self._who(e)}: charging {e['kwh']:.3f} kWh  {e['kw']:.2f} kW  "
                f"{e['euros']:.2f} €  {fmt_duration(e['seconds'])}",
                "cyan",
            )
        ]

    def _notice(self, e: Event) -> list[tuple[str, str]]:
        return [(f"NOTICE {e['subject']}: {e['text']}", "bold yellow")]

    def _ticket(self, e: Event) -> list[tuple[str, str]]:
        style = "bold green" if e["reason"] in (v.REASON_TARGET, v.REASON_UNPLUG) else "bold yellow"
        prefix = "recovered TICKET" if e.get("recovered") else "TICKET"
        return [
            (
                f"{self._who(e)}: {prefix} {e['kwh']:.3f} kWh  {e['euros']:.2f} €  "
                f"{fmt_duration(e['seconds'])}  ({describe_reason(e['reason'])}), session {e['session']}",
                style,
            )
        ]

    def _timeout(self, e: Event) -> list[tuple[str, str]]:
        what = "no answer" if e.get("session") is None else "no news of the charge"
        return [
            (f"{self._who(e)}: {what} for {e['seconds']:g} s, giving up on it", "bold red")
        ]

    def _list_timeout(self, e: Event) -> list[tuple[str, str]]:
        if e["part"]:
            what = f"the list from Central {self._at(e)} stopped at part {e['part']} of {e['parts']}:"
            return [(f"{what} no news for {e['seconds']:g} s, giving up", "bold red")]
        return [(f"no list from Central {self._at(e)} for {e['seconds']:g} s, giving up", "bold red")]

    def _wait(self, e: Event) -> list[tuple[str, str]]:
        return [(f"next request in {e['seconds']:g} s", "dim")]

    def _interrupted(self, e: Event) -> list[tuple[str, str]]:
        return [("interrupted", "bold red")]

    def _available(self, e: Event) -> list[tuple[str, str]]:
        cps = e["cps"]
        if not cps:
            return [("no charging point is available now", "yellow")]
        out = [(f"{len(cps)} charging point{'s' if len(cps) != 1 else ''} available now:", "bold")]
        for cp in cps:
            out.append((f"  {cp['cp']:<10} {cp['location']:<24} {cp['price']:.3f} €/kWh", ""))
        return out

    def _summary(self, e: Event) -> list[tuple[str, str]]:
        tickets, refused, unfinished = e["tickets"], e["refused"], e["unfinished"]
        kwh = sum(t["kwh"] for t in tickets)
        euros = sum(t["euros"] for t in tickets)
        out = [
            (
                f"summary for driver {e['driver']}: {len(tickets)} ticket{'s' if len(tickets) != 1 else ''} "
                f"({kwh:.3f} kWh, {euros:.2f} €), {len(refused)} refused, {len(unfinished)} unfinished",
                "bold",
            )
        ]
        for t in tickets:
            note = "  recovered from an earlier run" if t.get("recovered") else ""
            out.append(
                (
                    f"  ticket   {t['cp']:<8} {t['kwh']:8.3f} kWh {t['euros']:8.2f} €  "
                    f"{fmt_duration(t['seconds']):>8}  {describe_reason(t['reason'])}{note}",
                    "",
                )
            )
        for r in refused:
            out.append((f"  refused  {r['cp']:<8} {r['reason']}", "red"))
        for u in unfinished:
            out.append((f"  no result {u['cp']:<7} {u['reason']}", "red"))
        return out
