"""
Real evnet processes, for the demo and the end-to-end tests: start evnet
commands, follow what they print, stop them by PID (never by name).

Plain blocking code with timeouts, for programs that orchestrate processes
(``evnet demo``, tests), never for code on a reactor.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)  # the polling interval: the deadline decides
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


class Proc:
    """One child process; its stdout and stderr are merged and kept."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        env: dict | None = None,
        cwd: str | None = None,
        stdin: bool = False,
        log_path: str | None = None,
        on_line=None,
    ):
        self.name = name
        self.argv = argv
        self.lines: list[str] = []
        self.log = open(log_path, "a", encoding="utf-8") if log_path else None
        self.on_line = on_line
        self._cond = threading.Condition()
        full_env = dict(os.environ, PYTHONUNBUFFERED="1")
        full_env.update(env or {})
        self.popen = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            env=full_env,
            cwd=cwd,
            text=True,
            bufsize=1,
        )
        self.pid = self.popen.pid
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.popen.stdout:
            line = line.rstrip("\n")
            if self.log is not None:
                self.log.write(line + "\n")
                self.log.flush()
            with self._cond:
                self.lines.append(line)
                self._cond.notify_all()
            if self.on_line is not None:
                self.on_line(self, line)
        with self._cond:
            self._cond.notify_all()
        if self.log is not None:
            self.log.close()

    def output(self) -> str:
        with self._cond:
            return "\n".join(self.lines)

    def wait_for(self, pattern: str, timeout: float = 15.0, start: int = 0) -> re.Match:
        """
        Wait until a line (from index C{start}) matches the regex C{pattern};
        return the match.  Fails with the process's output on timeout.
        """
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            index = start
            while True:
                while index < len(self.lines):
                    match = regex.search(self.lines[index])
                    if match:
                        return match
                    index += 1
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                if self.popen.poll() is not None and index >= len(self.lines):
                    self._cond.wait(0.1)
                    if index >= len(self.lines):
                        break
                self._cond.wait(min(remaining, 0.2))
        raise AssertionError(
            f"{self.name}: no line matching {pattern!r} within {timeout} s "
            f"(exit code {self.popen.poll()}); output:\n{self.output()[-6000:]}"
        )

    def count(self, pattern: str) -> int:
        regex = re.compile(pattern)
        with self._cond:
            return sum(1 for line in self.lines if regex.search(line))

    def mark(self) -> int:
        """The index of the next line, to wait for lines printed after now."""
        with self._cond:
            return len(self.lines)

    def send_line(self, text: str) -> None:
        self.popen.stdin.write(text + "\n")
        self.popen.stdin.flush()

    @property
    def running(self) -> bool:
        return self.popen.poll() is None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.popen.poll() is None:
            os.kill(self.pid, sig)

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM, then SIGKILL after C{timeout}; returns the exit code."""
        if self.popen.poll() is None:
            os.kill(self.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.popen.wait(timeout)
        self._reader.join(2)
        return self.popen.returncode

    def wait(self, timeout: float) -> int:
        return self.popen.wait(timeout)


class ProcGroup:
    """Starts evnet processes in one scratch directory; stops them all."""

    def __init__(self, workdir: str | None = None):
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="evnet-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.procs: list[Proc] = []

    def start(self, name: str, argv: list[str], **kwargs) -> Proc:
        kwargs.setdefault("cwd", str(self.workdir))
        proc = Proc(name, argv, **kwargs)
        self.procs.append(proc)
        return proc

    def twistd(self, name: str, plugin: str, *args: str, **kwargs) -> Proc:
        """``twistd -n --pidfile= PLUGIN ARGS`` in the foreground, logging to stdout."""
        argv = [str(BIN / "twistd"), "-n", "--pidfile=", "--logfile=-", plugin, *args]
        return self.start(name, argv, **kwargs)

    def command(self, name: str, script: str, *args: str, **kwargs) -> Proc:
        """One of evnet's console scripts (evdriver, evctl, evnet)."""
        return self.start(name, [str(BIN / script), *args], **kwargs)

    def stop_all(self) -> None:
        """Stop every process still running, newest first: SIGTERM to all, then SIGKILL."""
        running = [p for p in reversed(self.procs) if p.running]
        for proc in running:
            proc.kill(signal.SIGTERM)
        deadline = time.monotonic() + 10
        for proc in running:
            try:
                proc.popen.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill(signal.SIGKILL)
                proc.popen.wait(5)
        for proc in self.procs:
            proc._reader.join(2)
