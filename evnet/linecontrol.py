"""
A process's operator commands as lines, whatever the commands are: the
control endpoint (L{ControlFactory}: one command a line, one answer line,
the lines of a multi-line answer joined with `` | ``) and the terminal
(L{ConsoleService} on stdin).  Each takes C{run(line) -> answer}.

The Engine, the Monitor and EV_W use it.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.application import service
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.protocols.basic import LineOnlyReceiver, LineReceiver


class ControlProtocol(LineOnlyReceiver):
    """The control endpoint: one command a line, one answer line."""

    delimiter = b"\n"
    MAX_LENGTH = 1024

    def lineReceived(self, line: bytes) -> None:
        text = line.decode("utf-8", "replace").strip()
        if text:
            self.sendLine(self.factory.run(text).replace("\n", " | ").encode("utf-8"))

    def lineLengthExceeded(self, line: bytes) -> None:
        self.sendLine(b"ERROR line too long")
        self.transport.loseConnection()


class ControlFactory(Factory):
    """C{run(line)}: the answer to one command line."""

    protocol = ControlProtocol
    noisy = False

    def __init__(self, run: Callable[[str], str]) -> None:
        self.run = run


class ConsoleProtocol(LineReceiver):
    """The same commands typed in the process's terminal, after a C{greeting} line."""

    delimiter = b"\n"

    def __init__(self, run: Callable[[str], str], greeting: str) -> None:
        self.run = run
        self.greeting = greeting

    def connectionMade(self) -> None:
        self.transport.write(self.greeting.encode("utf-8") + b"\n")

    def lineReceived(self, line: bytes) -> None:
        text = line.decode("utf-8", "replace").strip()
        if text:
            self.transport.write(self.run(text).encode("utf-8") + b"\n")


class ConsoleService(service.Service):
    """
    Reads commands from stdin while the process runs; a stdin that cannot be read
    is said in one line and passed to C{on_failure}.  C{stdio} makes the
    reader (L{twisted.internet.stdio.StandardIO}).
    """

    log = Logger()

    def __init__(self, run: Callable[[str], str], on_failure: Callable[[str], None], greeting: str,
                 stdio: Any = None) -> None:
        self.run = run
        self.greeting = greeting
        self.on_failure = on_failure
        self.stdio = stdio

    def startService(self) -> None:
        super().startService()
        if self.stdio is None:
            from twisted.internet.stdio import StandardIO

            self.stdio = StandardIO
        try:
            self.stdio(ConsoleProtocol(self.run, self.greeting))
        except OSError as e:
            text = f"cannot read commands from stdin: {e.strerror or e}"
            self.log.error("{text}", text=text)
            self.on_failure(text)
