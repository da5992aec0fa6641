"""
``evnet demo``: the whole network as real processes on loopback, with no
human: one EV_Registry, one Central, ten charging points (Engine + Monitor
each; the demo enrolls every CP at the Registry and each Monitor registers
its CP there with its token), one OCPP 1.6J charge point (``evnet ocpp-cp``,
registered at the Registry, on Central's ``--ocpp`` listener), three drivers
with ten requests each (D2 also charges once at the OCPP CP), each signed up
at the Registry (``evctl drivers add``) and logging in with its credentials
file to a Central that requires it (``--driver-auth required``).  Along
the way it simulates a fault, stops and resumes a CP, revokes a CP's key and
has its Monitor log in again, and restarts a Monitor, so every CP state
appears; EV_W watches the weather (local source) and Alicante freezes and
thaws, taking its CPs out of service and back.  It shows
what happens as it happens, prints every driver's tickets and a verdict, and
leaves no process behind (also on Ctrl+C).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import sqlite3
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Callable, Optional

from evnet.launcher import Proc, ProcGroup, Registry, free_port, wait_for_port

STATES = ("ACTIVADO", "SUMINISTRANDO", "AVERIADO", "PARADO", "DESCONECTADO")
LOCATIONS = [
    "Alicante Centro", "Playa San Juan", "Universidad", "Puerto", "Estación ADIF",
    "Benalúa", "Carolinas", "Albufereta", "Vistahermosa", "Aeropuerto",
]
PRICES = [0.30, 0.32, 0.35, 0.28, 0.40, 0.33, 0.36, 0.31, 0.38, 0.29]
DRIVERS = ("D1", "D2", "D3")
FROZEN_CITY, FROZEN_LOCATIONS = "Alicante", ("Alicante Centro", "Playa San Juan")  # EV_W's city of these CPs
OCPP_CP, OCPP_LOCATION, OCPP_PRICE = "OCPP01", "Mercado Central (OCPP)", 0.45  # D2.txt asks for a charge there

# What Central prints that a person following the demo wants to see.
_CENTRAL_EVENT = re.compile(
    r"\] (CP \S+ (registered|authenticated|AVERIADO|recovered|stopped|resumed|DESCONECTADO|out of service).*"
    r"|driver \S+: login from .*|REQ .*|TICKET .*|weather alert .*)$"
)
_WEATHER = re.compile(r"weather alert at .+? \(.+?\)( over)?: (CP[\w, ]+?) (out of service|back in service)")
_TRANSITION = re.compile(r"CP (\S+): (\w+) -> (\w+)")
_REVOKED = re.compile(r"CP (\S+) out of service: its key was revoked")
_AUTHENTICATED = re.compile(r"CP (\S+) authenticated from")


@dataclass
class DemoOptions:
    cps: int = 10
    kafka: Optional[str] = None
    db: Optional[str] = None
    workdir: Optional[str] = None
    wait: float = 4.0
    power_kw: float = 36.0
    http_port: int = 0
    panel: Optional[bool] = None  # None: live panel when stdout is a terminal
    timeout: float = 600.0


@dataclass
class DriverResult:
    driver: str
    exit_code: Optional[int] = None
    tickets: list = field(default_factory=list)
    refused: list = field(default_factory=list)
    unfinished: list = field(default_factory=list)


class Demo:
    def __init__(self, options: DemoOptions, out: Callable[[str], None] = print):
        self.o = options
        self.out_raw = out
        self.group = ProcGroup(options.workdir)
        self.workdir = self.group.workdir
        self.t0 = time.monotonic()
        self.lock = threading.Lock()
        self.seen_states: set[str] = set()
        self.events: list[str] = []
        self.results = {d: DriverResult(d) for d in DRIVERS}
        self.monitors: dict[str, Proc] = {}
        self.ports: dict[str, int] = {}
        self.revoked: dict[str, bool] = {}  # CP -> whether it logged in again since Central revoked its key
        self.weather: dict[str, set[str]] = {"out of service": set(), "back in service": set()}  # CPs, as Central says
        self.registry: Optional[Registry] = None
        self.stopping = threading.Event()
        self.panel = None
        self.ocpp_seen: dict[str, list[dict]] = {}  # the OCPP CP's events by type

    # -- output ------------------------------------------------------------

    def say(self, source: str, text: str) -> None:
        line = f"{time.monotonic() - self.t0:6.1f}s  {source:<9} {text}"
        with self.lock:
            self.events.append(line)
            del self.events[:-200]
        if self.panel is None:
            self.out_raw(line)

    # -- processes ---------------------------------------------------------

    def _central_line(self, proc: Proc, line: str) -> None:
        for cp, _before, after in _TRANSITION.findall(line):
            with self.lock:
                self.seen_states.add(after)
        with self.lock:
            for cp in _REVOKED.findall(line):
                self.revoked[cp] = False
            for cp in _AUTHENTICATED.findall(line):
                if cp in self.revoked:
                    self.revoked[cp] = True
        for _over, cps, what in _WEATHER.findall(line):
            with self.lock:
                self.weather[what].update(cp.strip() for cp in cps.split(","))
        match = _CENTRAL_EVENT.search(line)
        if match and not self.stopping.is_set():
            self.say("central", match.group(1))

    def _driver_line(self, driver: str) -> Callable[[Proc, str], None]:
        def handle(proc: Proc, line: str) -> None:
            try:
                event = json.loads(line)
            except ValueError:
                return
            kind = event.get("type")
            cp = event.get("cp", "")
            if kind == "request":
                target = event.get("target_kwh") or 0
                self.say(driver, f"[{event['n']}/{event['total']}] asks for a charge at {cp}"
                         + (f" ({target:g} kWh)" if target else ""))
            elif kind == "authorized":
                self.say(driver, f"{cp}: AUTHORIZED, session {event['session']}")
            elif kind == "denied":
                self.say(driver, f"{cp}: DENIED: {event['reason']}")
            elif kind == "notice":
                self.say(driver, f"notice: {event['text']}")
            elif kind == "ticket":
                self.say(driver, f"{cp}: TICKET {event['kwh']:.3f} kWh, {event['euros']:.2f} €, "
                                 f"{event['seconds']} s ({event['reason']})")
            elif kind == "unreachable":
                self.say(driver, f"cannot reach Central: {event.get('reason', '')}")
            elif kind == "summary":
                result = self.results[driver]
                result.tickets = event.get("tickets", [])
                result.refused = event.get("refused", [])
                result.unfinished = event.get("unfinished", [])
        return handle

    def _ocpp_line(self, proc: Proc, line: str) -> None:
        try:
            event = json.loads(line)
        except ValueError:
            return
        kind = event.pop("type", "")
        with self.lock:
            self.ocpp_seen.setdefault(kind, []).append(event)
        text = {"boot": "BootNotification: {status}, heartbeat every {interval} s",
                "remote_start": "RemoteStartTransaction for {id_tag}: accepted={accepted}",
                "transaction": "StartTransaction: transaction {id} {status}",
                "stopped": "StopTransaction: transaction {transaction_id} ({reason}), meter {wh} Wh"}.get(kind)
        if text and not self.stopping.is_set():
            try:
                self.say(OCPP_CP, text.format(**event))
            except (KeyError, IndexError):  # a line of another shape: shown as it is
                self.say(OCPP_CP, line)

    @property
    def db(self) -> str:
        return self.o.db or f"sqlite:{self.workdir / 'evcentral.db'}"

    def start_registry(self) -> Registry:
        """EV_Registry on Central's database, an enrollment token for every CP, every driver signed up."""
        self.registry = Registry(self.group, self.db, self.workdir / "registry")
        self.registry.start(log_path=str(self.workdir / "registry.log"))
        self.registry.enroll(*(self.cp_id(i) for i in range(self.o.cps)))
        self.say("demo", f"signing up drivers {', '.join(DRIVERS)} at EV_Registry (evctl drivers add D… "
                         "--credentials-file credentials-D….json, mode 0600)")
        self.registry.sign_up(*DRIVERS)
        return self.registry

    def start_central(self) -> Proc:
        args = [
            "--listen", f"tcp:{self.ports['cp']}:interface=127.0.0.1",
            "--drivers", f"tcp:{self.ports['drivers']}:interface=127.0.0.1",
            "--http", f"tcp:{self.ports['http']}:interface=127.0.0.1",
            "--db", self.db, "--weather-token-file", str(self.weather_token()),
            "--ocpp", f"tcp:{self.ports['ocpp']}:interface=127.0.0.1", "--ocpp-heartbeat", "10",
            "--driver-auth", "required",  # a driver without its credentials gets nothing
        ]
        if self.o.kafka:
            # A consumer group of its own: records left on the cluster by an
            # earlier demo are not this run's.
            args += ["--kafka", self.o.kafka, "--kafka-group", f"evcentral-demo-{int(time.time())}"]
        proc = self.group.twistd("central", "evcentral", *args, log_path=str(self.workdir / "central.log"),
                                 on_line=self._central_line)
        proc.wait_for("EV_Central ready", timeout=60)
        return proc

    def weather_token(self) -> Path:
        """EV_W's token for Central, in a 0600 file (made once)."""
        path = self.workdir / "evw-token"
        if not path.exists():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_urlsafe(24) + "\n")
        return path

    def set_weather(self, frozen: bool) -> None:
        """The local weather file EV_W reads, replaced by a rename: the frozen city at -3 °C or 12 °C."""
        lines = [f"{FROZEN_CITY} = {-3 if frozen else 12}"] + [f"{loc} = 15" for loc in (*LOCATIONS, OCPP_LOCATION) if loc not in FROZEN_LOCATIONS]
        new = self.workdir / "weather.txt.new"
        new.write_text("\n".join(lines) + "\n")
        new.replace(self.workdir / "weather.txt")

    def start_weather(self) -> Proc:
        """EV_W on the local weather source, polling every second."""
        self.set_weather(False)
        locations = self.workdir / "locations.txt"
        locations.write_text("".join(f"{loc} = {FROZEN_CITY}\n" for loc in FROZEN_LOCATIONS))
        args = ["--central", f"http://127.0.0.1:{self.ports['http']}", "--central-token-file", str(self.weather_token()),
                "--locations-file", str(locations), "--local-weather", str(self.workdir / "weather.txt"),
                "--interval", "1", "--state-dir", str(self.workdir / "evweather-state")]
        return self.group.twistd("evweather", "evweather", *args, log_path=str(self.workdir / "evweather.log"))

    def start_engine(self, i: int) -> Proc:
        cp = self.cp_id(i)
        args = [
            "--listen", f"tcp:{self.ports[f'engine{i}']}:interface=127.0.0.1",
            "--control", f"tcp:{self.ports[f'control{i}']}:interface=127.0.0.1",
            "--state-dir", str(self.workdir / f"engine-{cp}"),
            "--power-kw", f"{self.o.power_kw:g}",
            "--auto-plug",
        ]
        if self.o.kafka:
            args += ["--kafka", self.o.kafka]
        return self.group.twistd(f"engine-{cp}", "evengine", *args, log_path=str(self.workdir / f"engine-{cp}.log"))

    def start_monitor(self, i: int) -> Proc:
        cp = self.cp_id(i)
        args = [
            "--cp-id", cp, "--location", LOCATIONS[i % len(LOCATIONS)], "--price", f"{PRICES[i % len(PRICES)]:.2f}",
            "--engine", f"tcp:host=127.0.0.1:port={self.ports[f'engine{i}']}",
            "--central", f"tcp:host=127.0.0.1:port={self.ports['cp']}",
            "--control", f"tcp:{self.ports[f'monitor{i}']}:interface=127.0.0.1",
            *self.registry.monitor_args(cp, self.workdir / f"credentials-{cp}.json"),
        ]
        if self.o.kafka:
            args += ["--kafka", self.o.kafka]
        proc = self.group.twistd(f"monitor-{cp}", "evmonitor", *args, log_path=str(self.workdir / f"monitor-{cp}.log"))
        self.monitors[cp] = proc
        return proc

    def start_ocpp_cp(self) -> Proc:
        """The OCPP CP: registered at the Registry (evctl registry add), then ``evnet ocpp-cp`` until it booted."""
        credentials = self.workdir / f"credentials-{OCPP_CP}.json"
        self.registry.add(OCPP_CP, OCPP_LOCATION, OCPP_PRICE, credentials)
        proc = self.group.command(
            f"ocpp-{OCPP_CP}", "evnet", "ocpp-cp", "--url", f"ws://127.0.0.1:{self.ports['ocpp']}/ocpp/{OCPP_CP}",
            "--cp-id", OCPP_CP, "--credentials-file", str(credentials), "--power-w", f"{self.o.power_kw * 1000:g}",
            log_path=str(self.workdir / f"ocpp-{OCPP_CP}.log"), on_line=self._ocpp_line)
        proc.wait_for(r'"type": "boot", "status": "Accepted"', timeout=60)
        return proc

    def start_driver(self, driver: str) -> Proc:
        requests_file = resources.files("evnet") / "examples" / "demo" / f"{driver}.txt"
        target = self.workdir / f"requests-{driver}.txt"
        target.write_text(requests_file.read_text())
        args = ["--driver-id", driver, "--credentials-file", str(self.registry.credentials[driver]),
                "--requests-file", str(target), "--wait", f"{self.o.wait:g}", "--json"]
        args += ["--kafka", self.o.kafka] if self.o.kafka else ["--central", f"tcp:host=127.0.0.1:port={self.ports['drivers']}"]
        return self.group.command(f"driver-{driver}", "evdriver", *args, log_path=str(self.workdir / f"driver-{driver}.log"),
                                  on_line=self._driver_line(driver))

    def cp_id(self, i: int) -> str:
        return f"CP{i + 1:02d}"

    # -- the operator's actions ------------------------------------------------

    def api(self, method: str, path: str) -> object:
        request = urllib.request.Request(f"http://127.0.0.1:{self.ports['http']}{path}", method=method)
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.loads(response.read() or b"null")

    def evctl(self, name: str, *args: str) -> str:
        """One evctl command; its output, or RuntimeError if it did not succeed."""
        proc = self.group.command(name, "evctl", *args)
        code = proc.wait(15)
        if code != 0:
            raise RuntimeError(f"evctl {' '.join(args[:2])} exited with {code}: {proc.output().strip()}")
        return proc.output().strip()

    def engine_command(self, i: int, command: str) -> str:
        return self.evctl(f"evctl-{i}", "engine", f"tcp:host=127.0.0.1:port={self.ports[f'control{i}']}", command)

    def script(self) -> None:
        """Inject one fault, one stop/resume and one Monitor restart while the drivers work."""
        n = self.o.cps
        fault_i, stop_i, restart_i, revoke_i = 4 % n, 7 % n, 9 % n, 2 % n
        revoked = self.cp_id(revoke_i)
        steps = [
            (14, f"the operator revokes the key of {revoked} (evctl keys revoke {revoked})",
             lambda: self.evctl("revoke", "keys", "revoke", revoked, "--http", f"http://127.0.0.1:{self.ports['http']}")),
            (22, f"{revoked}'s Monitor logs in again (evctl monitor … reauth)",
             lambda: self.evctl("reauth", "monitor", f"tcp:host=127.0.0.1:port={self.ports[f'monitor{revoke_i}']}",
                                "reauth")),
            (10, f"simulating a fault at {self.cp_id(fault_i)} (evctl engine … fault)",
             lambda: self.engine_command(fault_i, "fault")),
            (18, f"the fault at {self.cp_id(fault_i)} is repaired (evctl engine … recover)",
             lambda: self.engine_command(fault_i, "recover")),
            (26, f"the operator stops {self.cp_id(stop_i)} (POST /api/v1/cps/{self.cp_id(stop_i)}/stop)",
             lambda: self.api("POST", f"/api/v1/cps/{self.cp_id(stop_i)}/stop")),
            (36, f"the operator resumes {self.cp_id(stop_i)} (POST /api/v1/cps/{self.cp_id(stop_i)}/resume)",
             lambda: self.api("POST", f"/api/v1/cps/{self.cp_id(stop_i)}/resume")),
            (44, f"the Monitor of {self.cp_id(restart_i)} is killed (SIGKILL)",
             lambda: self.monitors[self.cp_id(restart_i)].kill()),
            (50, f"the Monitor of {self.cp_id(restart_i)} is started again",
             lambda: self.start_monitor(restart_i)),
            (12, f"{FROZEN_CITY} freezes (-3 °C in EV_W's weather file): its CPs go out of service",
             lambda: self.set_weather(True)),
            (24, f"{FROZEN_CITY} thaws (12 °C): its CPs come back", lambda: self.set_weather(False)),
        ]
        steps.sort(key=lambda step: step[0])
        start = time.monotonic()
        for at, text, action in steps:
            if self.stopping.wait(max(0.0, start + at - time.monotonic())):
                return
            self.say("demo", text)
            try:
                action()
            except Exception as e:  # a demo step failing is reported, not fatal
                self.say("demo", f"that step failed: {e}")

    # -- the live panel ----------------------------------------------------

    def fetch_cps(self) -> list[dict]:
        try:
            data = self.api("GET", "/api/v1/cps")
        except (OSError, ValueError, urllib.error.URLError):
            return []
        if isinstance(data, dict):
            data = data.get("cps", [])
        return data if isinstance(data, list) else []

    def render(self):
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        colours = {"ACTIVADO": "green", "SUMINISTRANDO": "bold green", "PARADO": "dark_orange",
                   "AVERIADO": "bold red", "DESCONECTADO": "grey50"}
        table = Table(title="EV CHARGING — MONITORING PANEL", expand=True)
        for column in ("CP", "location", "€/kWh", "state", "driver", "kW", "kWh", "€"):
            table.add_column(column)
        for cp in self.fetch_cps():
            state = cp.get("state", "?")
            label = "Out of service (weather)" if cp.get("weather_alert") and state == "PARADO" else (
                "Out of Order" if state == "PARADO" else state)
            charging = cp.get("driver_id")
            table.add_row(
                cp.get("id", "?"), cp.get("location", ""), f"{cp.get('price', 0):.2f}",
                Text(label, style=colours.get(state, "")),
                charging or "", f"{cp['kw']:.1f}" if charging and cp.get("kw") is not None else "",
                f"{cp['kwh']:.3f}" if charging and cp.get("kwh") is not None else "",
                f"{cp['euros']:.2f}" if charging and cp.get("euros") is not None else "",
            )
        with self.lock:
            recent = self.events[-14:]
        footer = Text(f"web panel: http://127.0.0.1:{self.ports['http']}/   logs: {self.workdir}", style="cyan")
        return Group(table, footer, Text("\n".join(recent)))

    # -- the whole run -------------------------------------------------------

    def run(self) -> int:
        n = self.o.cps
        for name in ("cp", "drivers", "ocpp"):
            self.ports[name] = free_port()
        self.ports["http"] = self.o.http_port or free_port()
        for i in range(n):
            for port in ("engine", "control", "monitor"):
                self.ports[f"{port}{i}"] = free_port()
        self.say("demo", f"working directory (logs, database, state): {self.workdir}")
        self.say("demo", f"starting EV_Registry and enrolling {n} charging points (evctl registry enroll)")
        self.start_registry()
        backend = "Kafka at " + self.o.kafka if self.o.kafka else "in-band (no Kafka)"
        self.say("demo", f"starting EV_Central ({self.o.db or 'SQLite'}, {backend}; drivers must log in: --driver-auth required)")
        self.start_central()
        self.say("demo", f"web panel: http://127.0.0.1:{self.ports['http']}/")
        self.say("demo", f"starting EV_W, the weather office (local weather file; {FROZEN_CITY} at 12 °C)")
        self.start_weather()
        self.say("demo", f"starting {n} charging points (an Engine and a Monitor each; "
                         "each Monitor registers its CP at the Registry)")
        for i in range(n):
            self.start_engine(i)
        for i in range(n):
            wait_for_port(self.ports[f"engine{i}"], timeout=30)
            self.start_monitor(i)
        central = next(p for p in self.group.procs if p.name == "central")
        for i in range(n):
            central.wait_for(rf"CP {self.cp_id(i)} authenticated", timeout=60)
        self.say("demo", f"starting the OCPP 1.6J charge point {OCPP_CP} (evctl registry add, then evnet ocpp-cp)")
        self.start_ocpp_cp()
        self.say("demo", f"all {n} charging points and {OCPP_CP} are connected; starting drivers {', '.join(DRIVERS)} "
                         "(evdriver --credentials-file: each logs in without sending its secret)")
        use_panel = self.o.panel if self.o.panel is not None else sys.stdout.isatty()
        live = None
        if use_panel:
            from rich.live import Live

            self.panel = True
            live = Live(self.render(), refresh_per_second=2, screen=False)
            live.start()
        drivers = {d: self.start_driver(d) for d in DRIVERS}
        scripter = threading.Thread(target=self.script, daemon=True)
        scripter.start()
        deadline = time.monotonic() + self.o.timeout
        try:
            while any(p.running for p in drivers.values()) and time.monotonic() < deadline:
                if live is not None:
                    live.update(self.render())
                time.sleep(0.5)  # the panel's refresh; the loop ends when every driver has exited
        finally:
            if live is not None:
                live.update(self.render())
                live.stop()
                self.panel = None
        for d, proc in drivers.items():
            self.results[d].exit_code = proc.popen.poll()
        self.stopping.set()
        scripter.join(timeout=20)
        self.say("demo", "every driver is done; stopping the network")
        self.group.stop_all()
        return self.report()

    def report(self) -> int:
        out = self.out_raw
        out("")
        out("=" * 72)
        total_tickets = 0
        for d in DRIVERS:
            r = self.results[d]
            total_tickets += len(r.tickets)
            out(f"driver {d}: {len(r.tickets)} tickets, {len(r.refused)} refused, {len(r.unfinished)} unfinished"
                f" (exit code {r.exit_code})")
            for t in r.tickets:
                out(f"  ticket  {t.get('cp', '?'):<5} {t.get('kwh', 0):7.3f} kWh {t.get('euros', 0):6.2f} €"
                    f" {t.get('seconds', 0):4d} s  {t.get('reason', '')}")
            for x in r.refused:
                out(f"  refused {x.get('cp', '?'):<5} {x.get('reason', '')}")
        problems = []
        for d in DRIVERS:
            r = self.results[d]
            if r.exit_code != 0:
                problems.append(f"driver {d} exited with {r.exit_code}")
            if r.unfinished:
                problems.append(f"driver {d} has {len(r.unfinished)} unfinished requests")
        missing = [s for s in STATES if s not in self.seen_states]
        if missing:
            problems.append("states never seen: " + ", ".join(missing))
        if not self.revoked:
            problems.append("no CP's key was revoked")
        frozen = {self.cp_id(i) for i in range(self.o.cps) if LOCATIONS[i % len(LOCATIONS)] in FROZEN_LOCATIONS}
        for what in ("out of service", "back in service"):
            if not frozen <= self.weather[what]:
                problems.append(f"the weather alert did not take {', '.join(sorted(frozen - self.weather[what]))} {what}")
        for cp, back in self.revoked.items():
            if not back:
                problems.append(f"{cp} did not log in again after its key was revoked")
        sessions = [t.get("session") for d in DRIVERS for t in self.results[d].tickets]
        if len(set(sessions)) != len(sessions):
            problems.append("a ticket was received twice")
        closed, still_open = self.count_sessions()
        if still_open:
            problems.append(f"{still_open} charges are still open in the database")
        if closed != total_tickets:
            problems.append(f"{closed} charges in the database but {total_tickets} tickets received")
        problems += self.ocpp_problems()
        problems += self.login_problems()
        try:  # the audit trail's hash chains, re-computed (docs/audit.md)
            self.evctl("audit", "audit", "verify", "--db", self.db)
        except RuntimeError as e:
            problems.append(f"the audit trail does not verify: {e}")
        out("-" * 72)
        if problems:
            out("VERDICT: FAILED — " + "; ".join(problems))
            out(f"logs: {self.workdir}")
            return 1
        db_note = f", {closed} sessions in the database, each ticketed once"
        revoked = ", ".join(self.revoked)
        out(f"VERDICT: OK — {total_tickets} charges ticketed for {len(DRIVERS)} drivers{db_note}; "
            f"every state seen ({', '.join(STATES)}); {revoked} out of service with its key revoked and back "
            f"after its Monitor's new login; {', '.join(sorted(frozen))} out of service in the frost and back; "
            f"{OCPP_CP} (OCPP) charged and ticketed; every driver logged in with its credentials (in the audit trail); "
            f"the audit trail verifies; no process left running")
        return 0

    def ocpp_problems(self) -> list[str]:
        """The OCPP CP's charge: remote start, StartTransaction, MeterValues, StopTransaction, the driver's ticket."""
        with self.lock:
            seen = {kind: list(events) for kind, events in self.ocpp_seen.items()}
        tickets = [t for d in DRIVERS for t in self.results[d].tickets if t.get("cp") == OCPP_CP]
        missing = [what for what, ok in (
            ("RemoteStartTransaction", any(e.get("accepted") for e in seen.get("remote_start", []))),
            ("StartTransaction", any(e.get("status") == "Accepted" for e in seen.get("transaction", []))),
            ("MeterValues", len(seen.get("meter", [])) >= 1),
            ("StopTransaction", len(seen.get("stopped", [])) >= 1),
            ("the driver's ticket", any(t.get("kwh", 0) > 0 for t in tickets)),
        ) if not ok]
        return [f"the OCPP CP {OCPP_CP}'s charge is missing: {', '.join(missing)}"] if missing else []

    def count_sessions(self) -> tuple[int, int]:
        """(closed, open) drivers' charges in Central's database."""
        (closed, open_), = self.query(
            "SELECT SUM(CASE WHEN status = 'closed' THEN 1 ELSE 0 END), "
            "SUM(CASE WHEN status = 'open' THEN 1 ELSE 0 END) FROM sessions WHERE origin = 'driver'")
        return int(closed or 0), int(open_ or 0)

    def login_problems(self) -> list[str]:
        """The drivers the audit trail holds no successful login of, said as a problem."""
        logged_in = self.logged_in_drivers()
        no_login = [d for d in DRIVERS if d not in logged_in]
        return [f"the audit trail holds no successful login of driver {', '.join(no_login)}"] if no_login else []

    def logged_in_drivers(self) -> set[str]:
        """The drivers the audit trail holds a successful login of (``driver.login``, ``ok``: docs/audit.md)."""
        return {driver for driver, in self.query(
            "SELECT DISTINCT actor_id FROM audit WHERE actor_kind = 'driver' AND action = 'driver.login' "
            "AND outcome = 'ok'")}

    def query(self, sql: str) -> list[tuple]:
        """The rows of C{sql} in Central's database, SQLite or MySQL."""
        if self.o.db and self.o.db.startswith("mysql://"):
            import MySQLdb

            from evnet.central.store import parse_db_url

            url = parse_db_url(self.o.db)
            conn = MySQLdb.connect(host=url.host, port=url.port, user=url.user, passwd=url.password, db=url.database)
            try:
                cursor = conn.cursor()
                cursor.execute(sql)
                return list(cursor.fetchall())
            finally:
                conn.close()
        path = self.o.db[len("sqlite:"):] if self.o.db else str(self.workdir / "evcentral.db")
        with sqlite3.connect(path) as db:
            return db.execute(sql).fetchall()


def run_demo(options: DemoOptions) -> int:
    demo = Demo(options)

    def interrupted(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupted)
    try:
        return demo.run()
    except KeyboardInterrupt:
        demo.stopping.set()
        print("\ninterrupted: stopping every process of the demo …", file=sys.stderr)
        demo.group.stop_all()
        return 130
    except (AssertionError, TimeoutError) as e:
        demo.stopping.set()
        demo.group.stop_all()
        print(f"evnet demo: the network did not come up: {str(e).splitlines()[0]}", file=sys.stderr)
        print(f"logs: {demo.workdir}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)
        demo.group.stop_all()

