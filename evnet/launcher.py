"""
Real evnet processes, for the demo and the end-to-end tests: start evnet
commands, follow what they print, stop them by PID (never by name); and
L{Registry}, one EV_Registry with which they register their CPs.

Plain blocking code with timeouts, for programs that orchestrate processes
(``evnet demo``, tests), never for code on a reactor.
"""

from __future__ import annotations

import os
import random
import re
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

BIN = Path(sys.executable).parent


# Ports handed out for listeners come from below the kernel's ephemeral range
# (32768-60999 on Linux): a port from bind(0) is free now, but the kernel may
# give it to one of the many outgoing connections a network makes before the
# listener binds it, and the listener then fails with "address in use".
_PORTS = list(range(20000, 32000))
random.shuffle(_PORTS)


def free_port() -> int:
    """A port on 127.0.0.1 nothing listens on now, outside the ephemeral range."""
    while _PORTS:
        port = _PORTS.pop()
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port left in 20000-31999")


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


class Registry:
    """
    One ``twistd -n evregistry`` of C{group} on Central's database C{db}
    (its state and admin token in C{directory}), and the CPs enrolled at it
    as an operator does: ``evctl registry enroll CP --token-output F``, and
    the drivers signed up at it (``evctl drivers add D --credentials-file F``).  A
    Monitor started with L{monitor_args} registers its CP there itself the
    first time and keeps the answer in its credentials file.
    """

    def __init__(self, group: ProcGroup, db: str, directory: Path | None = None):
        self.group = group
        self.db = db
        self.dir = Path(directory or group.workdir / "registry")
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self.admin = self.dir / "admin.token"
        if not self.admin.exists():
            fd = os.open(self.admin, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_urlsafe(32) + "\n")
        self.ca_file = self.dir / "state" / "registry-cert.pem"
        self.proc: Proc | None = None
        self.tokens: dict[str, Path] = {}  # CP id -> its enrollment token's file
        self.credentials: dict[str, Path] = {}  # driver id -> its credentials file

    def start(self, timeout: float = 60.0, **kwargs) -> Proc:
        self.proc = self.group.twistd(
            "registry", "evregistry", "--listen", f"tcp:{self.port}:interface=127.0.0.1", "--db", self.db,
            "--state-dir", str(self.dir / "state"), "--admin-token-file", str(self.admin), **kwargs,
        )
        self.proc.wait_for("EV_Registry ready", timeout=timeout)
        return self.proc

    def _evctl_each(self, verb: list[str], ids: tuple[str, ...], output: Any, timeout: float) -> dict[str, Path]:
        """
        ``evctl VERB ID`` with the admin token for each of C{ids}, all at once;
        C{output(id)} is its output option and the file it writes (0600).
        The files by id, or AssertionError naming the first that failed.
        """
        runs = []
        for one in ids:
            option, path = output(one)
            runs.append((one, path, self.group.command(
                f"{verb[-1]}-{one}", "evctl", *verb, one, *self._admin_args(), option, str(path),
            )))
        for one, path, proc in runs:
            code = proc.wait(timeout)
            if code != 0:
                raise AssertionError(f"evctl {' '.join(verb)} {one} failed ({code}): {proc.output()[-2000:]}")
        return {one: path for one, path, _ in runs}

    def _admin_args(self) -> list[str]:
        return ["--registry", self.url, "--ca-file", str(self.ca_file), "--token-file", str(self.admin)]

    def enroll(self, *cp_ids: str, timeout: float = 60.0) -> None:
        """An enrollment token for each CP (0600 files), asked for all at once."""
        self.tokens.update(self._evctl_each(
            ["registry", "enroll"], cp_ids, lambda cp_id: ("--token-output", self.dir / f"{cp_id}.token"), timeout))

    def sign_up(self, *driver_ids: str, timeout: float = 60.0) -> None:
        """
        Each driver signed up as an operator does (``evctl drivers add D
        --credentials-file F``), all at once: its credentials, for
        ``evdriver --credentials-file``, in C{credentials[D]}, a 0600
        ``credentials-D.json`` in the group's directory.
        """
        self.credentials.update(self._evctl_each(
            ["drivers", "add"], driver_ids,
            lambda driver: ("--credentials-file", self.group.workdir / f"credentials-{driver}.json"), timeout))

    def monitor_args(self, cp_id: str, credentials_file: Path) -> list[str]:
        """The Monitor's options to register C{cp_id} (enrolled) here, keeping its credentials in C{credentials_file}."""
        return ["--registry", self.url, "--ca-file", str(self.ca_file),
                "--enrollment-token-file", str(self.tokens[cp_id]), "--credentials-file", str(credentials_file)]

    def add(self, cp_id: str, location: str, price: float, credentials_file: Path, timeout: float = 60.0) -> None:
        """``evctl registry add`` with the admin token, as for a CP with no Monitor (an OCPP CP): its credentials to C{credentials_file}."""
        proc = self.group.command(
            f"add-{cp_id}", "evctl", "registry", "add", cp_id, "--location", location, "--price", f"{price:.2f}",
            *self._admin_args(), "--credentials-file", str(credentials_file),
        )
        code = proc.wait(timeout)
        if code != 0:
            raise AssertionError(f"evctl registry add {cp_id} failed ({code}): {proc.output()[-2000:]}")
