"""
The statement's program names as commands: ``EV_Central``, ``EV_CP_E``,
``EV_CP_M``, ``EV_Registry``, ``EV_W`` and ``EV_Driver``.

Each is a thin console entry point over what already exists: the first five
run their twistd plugin in the foreground (``EV_Central ARGS`` is
``twistd -n --pidfile= evcentral ARGS``: the same options, logging to
stdout, no pid file), ``EV_Driver`` is ``evdriver``'s main.  ``--help`` shows
the plugin's options under the program's own name.
"""

from __future__ import annotations

import sys
from typing import Any, Callable, Optional

#: program name -> twistd plugin (tapname).
TWISTD_PROGRAMS = {
    "EV_Central": "evcentral",
    "EV_CP_E": "evengine",
    "EV_CP_M": "evmonitor",
    "EV_Registry": "evregistry",
    "EV_W": "evweather",
}

#: What every twistd program is given before its plugin's arguments.
TWISTD_FOREGROUND = ["--nodaemon", "--pidfile="]


def twistd_arguments(plugin: str, args: list[str]) -> list[str]:
    """twistd's arguments for C{plugin ARGS} in the foreground."""
    return [*TWISTD_FOREGROUND, plugin, *args]


def server_options(program: str, plugin: str) -> Any:
    """
    twistd's options knowing only C{plugin}, whose usage says C{program}
    (``Usage: EV_Central [--listen ENDPOINT]…``), not ``twistd [options] evcentral``.
    """
    from twisted.scripts.twistd import ServerOptions

    class ProgramOptions(ServerOptions):
        @property
        def subCommands(self):
            for name, short, make, description in super().subCommands:
                if name == plugin:
                    yield name, short, lambda make=make: _named(make(), program, plugin), description

    return ProgramOptions()


def _named(options: Any, program: str, plugin: str) -> Any:
    own = (getattr(options, "synopsis", None) or "[options]").rstrip()
    options.getSynopsis = lambda: f"Usage: {program} {own}"
    note = f"{program} ARGS is twistd -n --pidfile= {plugin} ARGS (in the foreground, logging to stdout)."
    longdesc = getattr(options, "longdesc", "")
    options.longdesc = f"{longdesc}\n\n{note}" if longdesc else note
    return options


def run_twistd(program: str, argv: Optional[list[str]] = None) -> None:
    """Run C{program}'s twistd plugin with C{argv} (default: the command line) in the foreground."""
    from twisted.python import usage
    from twisted.scripts.twistd import runApp

    plugin = TWISTD_PROGRAMS[program]
    args = sys.argv[1:] if argv is None else argv
    config = server_options(program, plugin)
    try:
        config.parseOptions(twistd_arguments(plugin, args))
    except usage.UsageError as e:
        sys.stderr.write(f"{program}: {e}\n{program} --help lists the options.\n")
        sys.exit(1)  # as twistd does
    runApp(config)


def _twistd_main(program: str) -> Callable[[], None]:
    def main() -> None:
        run_twistd(program)

    main.__name__ = main.__qualname__ = program.lower()
    main.__doc__ = f"``{program} ARGS``: ``twistd -n --pidfile= {TWISTD_PROGRAMS[program]} ARGS``."
    return main


ev_central = _twistd_main("EV_Central")
ev_cp_e = _twistd_main("EV_CP_E")
ev_cp_m = _twistd_main("EV_CP_M")
ev_registry = _twistd_main("EV_Registry")
ev_w = _twistd_main("EV_W")


def ev_driver() -> None:
    """``EV_Driver ARGS``: ``evdriver ARGS``."""
    from evnet.driver.cli import main

    main(prog="EV_Driver")
