"""
``twistd evweather``: options and service wiring for EV_W, the weather
office.  ``docs/weather.md`` describes every option.

No secret is taken on the command line: the OpenWeather API key comes from
``--api-key-file`` or the environment variable ``OPENWEATHER_API_KEY``,
Central's token from ``--central-token-file``.  Since getopt accepts any
unambiguous prefix of a long option (``--api-key X`` would be read as
``--api-key-file X``), only whole option names are accepted here, and an
error about a secret file never repeats what was given for it.
"""

from __future__ import annotations

import math
import os
import stat
import sys
from typing import Optional

from twisted.application import service
from twisted.logger import Logger
from twisted.python import usage

from evnet.endpoints import Listener, check_server_endpoint, stop_process
from evnet.weather import central as central_api
from evnet.weather import openweather
from evnet.weather.cities import parse_locations
from evnet.weather.state import StateError, StateFile

DEFAULT_STATE_DIR = "evweather-state"
EXAMPLE_CONTROL = "tcp:7301:interface=127.0.0.1"
API_KEY_ENV = "OPENWEATHER_API_KEY"

log = Logger(namespace="evnet.weather.tap")


def read_secret(option: str, path: str) -> str:
    """The one-line secret in the file given to C{--option}; the error names neither the file nor its content."""
    try:
        with open(path, encoding="utf-8") as f:
            mode = os.fstat(f.fileno()).st_mode
            secret = f.read().strip()
    except (OSError, UnicodeDecodeError) as e:
        raise usage.UsageError(f"--{option}: cannot read that file ({getattr(e, 'strerror', None) or 'not text'})") from None
    if not secret:
        raise usage.UsageError(f"--{option}: the file is empty")
    if any(c.isspace() for c in secret) or not secret.isprintable():
        raise usage.UsageError(f"--{option}: the file must hold one line without spaces")
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warn("--{option}: others may read this file (mode {mode:04o}); chmod 600 it",
                 option=option, mode=stat.S_IMODE(mode))
    return secret


def _number(options: usage.Options, name: str, ok, rule: str) -> float:
    try:
        value = float(options[name])
    except (TypeError, ValueError):
        value = math.nan
    if not (math.isfinite(value) and ok(value)):
        raise usage.UsageError(f"--{name} must be {rule}, not {options[name]!r}")
    return value


class Options(usage.Options):
    synopsis = ("[--central URL] [--central-token-file F] [--locations-file F] "
                "[--local-weather F | --api-key-file F] [--interval S] [--threshold C] [--control ENDPOINT] "
                "[--state-dir DIR] [--stdin]")
    longdesc = (
        "EV_W: the weather office. Every --interval seconds it reads the temperature of each city it "
        "watches (the cities of Central's CP locations, plus the ones its operator adds) from OpenWeather "
        "or a local file, and tells Central to raise a frost alert for a city's CP locations below "
        "--threshold °C and to clear it when the city thaws. Edit the city list with commands typed in its "
        "terminal or 'evctl weather add|remove|list CONTROL-ENDPOINT'. See docs/weather.md."
    )
    optParameters = [
        ["central", None, central_api.DEFAULT_URL, "Central's web panel and API (its --http endpoint), as a URL."],
        ["central-token-file", None, None, "File holding EV_W's token for Central (one line), sent as "
         "'Authorization: Bearer TOKEN'."],
        ["ca-file", None, None, "Certificates to trust for an https --central (its certificate or CA)."],
        ["locations-file", None, None, "File of 'location = City name' lines mapping Central's CP locations "
         "to the city whose weather counts (a location not in it is its own city name)."],
        ["local-weather", None, None, "Read the weather from this file of 'City = temperature' lines, read "
         "again at each poll, instead of OpenWeather (demos, tests)."],
        ["openweather-url", None, openweather.DEFAULT_URL, "OpenWeather's base URL."],
        ["api-key-file", None, None, f"File holding the OpenWeather API key (else the environment variable {API_KEY_ENV})."],
        ["interval", "i", "4", "Seconds between two polls of each city."],
        ["threshold", None, "0", "Frost below this temperature, in °C."],
        ["timeout", None, "5", "Seconds before a request to the weather source or to Central is given up."],
        ["refresh-every", None, "15", "Polls between two refreshes of the active alerts at Central."],
        ["state-dir", "d", DEFAULT_STATE_DIR, "Directory of the state file (the cities added, the alerts sent)."],
        ["control", "c", "none", f"Endpoint of the local control command (evctl weather), e.g. {EXAMPLE_CONTROL}; "
         "'none' for none."],
    ]
    optFlags = [
        ["stdin", None, "Read commands from stdin even when it is not a terminal."],
    ]

    def parseOptions(self, options: Optional[list[str]] = None) -> None:
        known = {name.rstrip("=") for name in self.longOpt}
        for arg in sys.argv[1:] if options is None else options:
            if arg == "--":
                break
            name = arg[2:].partition("=")[0] if arg.startswith("--") else None
            if name and name not in known:
                raise usage.UsageError(f"unknown option --{name} (secrets are read from files: "
                                       "--api-key-file, --central-token-file)")
        super().parseOptions(options)

    def postOptions(self) -> None:
        self["interval"] = _number(self, "interval", lambda v: v > 0, "a number of seconds above 0")
        self["threshold"] = _number(self, "threshold", lambda v: True, "a temperature in °C")
        self["timeout"] = _number(self, "timeout", lambda v: v > 0, "a number of seconds above 0")
        refresh = _number(self, "refresh-every", lambda v: v >= 1 and v == int(v), "a whole number of polls >= 1")
        self["refresh-every"] = int(refresh)
        for name, check in (("central", central_api.check_url), ("openweather-url", openweather.check_base_url)):
            try:
                self[name] = check(self[name])
            except ValueError as e:
                raise usage.UsageError(f"--{name}: {e}") from None
        self.token = read_secret("central-token-file", self["central-token-file"]) if self["central-token-file"] else None
        if self["ca-file"] is not None:
            from evnet.tls import TlsError, trust_root

            try:
                trust_root(self["ca-file"])
            except TlsError as e:
                raise usage.UsageError(str(e)) from None
        self.mapping = self._mapping()
        self.api_key = None
        if self["local-weather"] is not None:
            if not os.path.isfile(self["local-weather"]):
                raise usage.UsageError(f"--local-weather {self['local-weather']}: no such file")
        elif self["api-key-file"] is not None:
            self.api_key = read_secret("api-key-file", self["api-key-file"])
        elif os.environ.get(API_KEY_ENV, "").strip():
            self.api_key = os.environ[API_KEY_ENV].strip()
        else:
            raise usage.UsageError(f"OpenWeather needs an API key: --api-key-file FILE or the environment variable "
                                   f"{API_KEY_ENV} (or --local-weather FILE for a local source)")
        if self["control"].lower() != "none":
            check_server_endpoint("control", self["control"], EXAMPLE_CONTROL)
        self.store, self.saved = self._state()

    def _mapping(self) -> dict[str, str]:
        path = self["locations-file"]
        if path is None:
            return {}
        try:
            with open(path, encoding="utf-8") as f:
                mapping, problems = parse_locations(f.read())
        except (OSError, UnicodeDecodeError) as e:
            raise usage.UsageError(f"--locations-file {path}: cannot read it: {getattr(e, 'strerror', None) or e}") from None
        if problems:
            raise usage.UsageError(f"--locations-file {problems[0].told(path)}")
        return mapping

    def _state(self):
        state_dir = self["state-dir"]
        try:
            os.makedirs(state_dir, exist_ok=True)
        except OSError as e:
            raise usage.UsageError(f"cannot use --state-dir {state_dir!r}: {e.strerror}") from None
        if not os.path.isdir(state_dir) or not os.access(state_dir, os.W_OK | os.X_OK):
            raise usage.UsageError(f"cannot write in --state-dir {state_dir!r}")
        store = StateFile(state_dir)
        try:
            return store, store.load()
        except StateError as e:
            raise usage.UsageError(f"{e}; move it away to start afresh") from None


def makeService(options: Options) -> service.MultiService:
    from twisted.internet import reactor

    from evnet.linecontrol import ConsoleService, ControlFactory
    from evnet.weather.control import command
    from evnet.weather.office import WeatherOffice
    from evnet.weather.sources import LocalSource

    if options["local-weather"] is not None:
        source = LocalSource(options["local-weather"])
    else:
        source = openweather.OpenWeatherSource(reactor, options.api_key, options["openweather-url"], options["timeout"])
    central = central_api.CentralClient(reactor, options["central"], options.token, timeout=options["timeout"],
                                        ca_file=options["ca-file"])
    office = WeatherOffice(source, central, reactor, options.store, interval=options["interval"],
                           threshold=options["threshold"], refresh_every=options["refresh-every"],
                           mapping=options.mapping, saved=options.saved)
    top = service.MultiService()
    office.setServiceParent(top)

    def run(line: str) -> str:
        return command(office, line)

    fail = stop_process(reactor, "evweather")
    if options["control"].lower() != "none":
        Listener("control", options["control"], ControlFactory(run), reactor, fail).setServiceParent(top)
    if options["stdin"] or (sys.stdin is not None and sys.stdin.isatty()):
        ConsoleService(run, fail, "EV_W: type a command (help lists them)").setServiceParent(top)
    return top
