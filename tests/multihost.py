"""
Several computers on this one machine, for the multi-host test: one network
namespace per computer, each with one address in a private test subnet that
exists only inside these namespaces (10.77.0.0/24), wired to a bridge that
lives in a namespace of its own (the "switch"), so no interface, address or
route is added to the machine's own network.

Each computer is a L{Host}: processes are started in it with ``ip netns exec
NAME …`` (``ip`` execs the program: the PID is the program's) and bind to
its address.  L{Lab.unplug} takes a computer's cable out of the switch
(``ip link set … down`` on its switch port: a partition, its processes keep
running) and L{Lab.plug} puts it back.  L{Lab.close} stops what still runs in
the namespaces (by PID, ``ip netns pids``) and deletes them and their links;
the test calls it even on failure.

Also what the guide's operator does with ``openssl`` (docs/deploy.md): a CA
and the certificates it issues (L{Certificates}), and the backing services
of scripts/services.sh started inside a host (L{HostServices}).

Needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN); without it L{Lab.open} fails
with L{LabError} saying so: the test fails, it never skips.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.procs import BIN, Proc, ProcGroup

SUBNET = "10.77.0"
PREFIX_LEN = 24
REPO = Path(__file__).resolve().parent.parent
SERVICES = REPO / "scripts" / "services.sh"


class LabError(AssertionError):
    """The namespaces could not be made (or unmade); the text says why and what the test needs."""


def ip(*args: str, timeout: float = 20) -> str:
    """``ip ARGS``; its output, or LabError with ip's own message."""
    try:
        out = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise LabError("the multi-host test needs the 'ip' command (Debian package iproute2)") from None
    if out.returncode != 0:
        raise LabError(f"ip {' '.join(args)}: {out.stderr.strip() or out.stdout.strip()} (exit {out.returncode})")
    return out.stdout


@dataclass
class Host:
    """One computer: its namespace, its address, its port on the switch."""

    name: str  # e.g. "pc2"
    role: str  # what runs there, for messages
    number: int  # its address is SUBNET.number
    ns: str = ""
    port: str = ""

    @property
    def address(self) -> str:
        return f"{SUBNET}.{self.number}"

    def argv(self, *argv: str) -> list[str]:
        """C{argv} run on this host."""
        return ["ip", "netns", "exec", self.ns, *argv]

    def run(self, *argv: str, timeout: float = 60, env: dict | None = None, check: bool = True,
            cwd: str | None = None) -> subprocess.CompletedProcess:
        """Run C{argv} on this host to its end (bounded); with C{check}, fail with its output if it fails."""
        out = subprocess.run(self.argv(*argv), capture_output=True, text=True, timeout=timeout,
                             env=None if env is None else dict(os.environ, **env), cwd=cwd)
        if check and out.returncode != 0:
            raise AssertionError(f"on {self.name} ({self.role}): {' '.join(argv)} exited {out.returncode}\n"
                                 f"{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
        return out

    def twistd(self, procs: ProcGroup, name: str, plugin: str, *args: str) -> Proc:
        """``twistd -n --pidfile= PLUGIN ARGS`` on this host, logging to stdout (as ProcGroup.twistd)."""
        return procs.start(name, self.argv(str(BIN / "twistd"), "-n", "--pidfile=", "--logfile=-", plugin, *args))

    def command(self, procs: ProcGroup, name: str, script: str, *args: str, **kwargs) -> Proc:
        """One of evnet's console scripts on this host."""
        return procs.start(name, self.argv(str(BIN / script), *args), **kwargs)

    def wait_for_port(self, port: int, timeout: float = 30) -> None:
        """Until something listens on this host's address:PORT (asked from inside the host)."""
        code = ("import socket, sys, time\n"
                "deadline = time.monotonic() + float(sys.argv[3])\n"
                "while time.monotonic() < deadline:\n"
                "    with socket.socket() as s:\n"
                "        s.settimeout(1)\n"
                "        if s.connect_ex((sys.argv[1], int(sys.argv[2]))) == 0: sys.exit(0)\n"
                "    time.sleep(0.1)\n"
                "sys.exit(1)\n")
        out = self.run(sys.executable, "-c", code, self.address, str(port), str(timeout), timeout=timeout + 10,
                       check=False)
        if out.returncode != 0:
            raise AssertionError(f"nothing listens on {self.address}:{port} ({self.name}, {self.role}) "
                                 f"after {timeout} s")


@dataclass
class Lab:
    """The computers, their switch, and what it takes to undo them."""

    hosts: dict[str, Host]
    tag: str = field(default_factory=lambda: secrets.token_hex(3))
    switch: str = ""
    made: list[str] = field(default_factory=list)  # namespaces made, to delete

    @classmethod
    def of(cls, *hosts: Host) -> "Lab":
        return cls({h.name: h for h in hosts})

    def open(self) -> "Lab":
        """Make the switch and one namespace per host, each host cabled to the switch."""
        if os.geteuid() != 0:
            raise LabError("the multi-host test must run as root: it creates network namespaces "
                           f"(ip netns add), and this is uid {os.geteuid()}")
        self.switch = f"evmh-{self.tag}-switch"
        self._netns(self.switch)
        ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        ip("-n", self.switch, "link", "set", "br0", "up")
        for host in self.hosts.values():
            host.ns, host.port = f"evmh-{self.tag}-{host.name}", host.name
            self._netns(host.ns)
            # The cable: eth0 in the host, its other end a port of the switch's bridge.
            ip("link", "add", "eth0", "netns", host.ns, "type", "veth", "peer", "name", host.port,
               "netns", self.switch)
            ip("-n", self.switch, "link", "set", host.port, "master", "br0", "up")
            ip("-n", host.ns, "addr", "add", f"{host.address}/{PREFIX_LEN}", "dev", "eth0")
            ip("-n", host.ns, "link", "set", "eth0", "up")
            ip("-n", host.ns, "link", "set", "lo", "up")
        return self

    def _netns(self, name: str) -> None:
        try:
            ip("netns", "add", name)
        except LabError as e:
            raise LabError(f"cannot create network namespaces, which the multi-host test needs "
                           f"(root with CAP_SYS_ADMIN and CAP_NET_ADMIN): {e}") from None
        self.made.append(name)

    def unplug(self, host: Host) -> None:
        """Take C{host}'s cable out of the switch: a partition (its processes keep running)."""
        ip("-n", self.switch, "link", "set", host.port, "down")

    def plug(self, host: Host) -> None:
        ip("-n", self.switch, "link", "set", host.port, "up")

    def close(self) -> None:
        """
        Stop every process still in the namespaces (SIGTERM, then SIGKILL, by
        PID), then delete the namespaces (their links go with them).
        """
        problems = []
        for name in reversed(self.made):
            try:
                stop_pids([int(p) for p in ip("netns", "pids", name).split()])
            except (LabError, ValueError) as e:
                problems.append(str(e))
        for name in reversed(self.made):
            try:
                ip("netns", "del", name)
            except LabError as e:
                problems.append(str(e))
        self.made.clear()
        if problems:
            raise LabError("could not clean the namespaces up: " + "; ".join(problems))


def stop_pids(pids: list[int], timeout: float = 10) -> None:
    """SIGTERM to C{pids}, SIGKILL to those alive after C{timeout}."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + timeout
        while pids and time.monotonic() < deadline:
            pids = [p for p in pids if _alive(p)]
            time.sleep(0.1)  # polling; the deadline decides
        if not pids:
            return


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie of ours (a child not reaped yet) is gone for this purpose
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


class Certificates:
    """
    What the operator makes with ``openssl`` (docs/deploy.md §Certificates):
    a CA, and server certificates it signs for an address.  C{dir} also
    serves as a trust directory (``tls:…:trustRoots=DIR`` holds only the CA).
    """

    def __init__(self, workdir: Path):
        self.dir = workdir / "pki"
        self.trust = workdir / "trust"
        self.dir.mkdir(parents=True)
        self.trust.mkdir()
        self.ca = self.dir / "ca.pem"
        self._openssl("req", "-x509", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                      "-keyout", str(self.dir / "ca-key.pem"), "-out", str(self.ca), "-days", "30",
                      "-subj", "/O=evnet test/CN=evnet test CA",
                      "-addext", "basicConstraints=critical,CA:TRUE",
                      "-addext", "keyUsage=critical,keyCertSign,cRLSign")
        (self.trust / "ca.pem").write_bytes(self.ca.read_bytes())

    def issue(self, name: str, address: str) -> tuple[Path, Path]:
        """A certificate for IP C{address} signed by the CA: (certificate, key)."""
        key, csr, cert = (self.dir / f"{name}-key.pem", self.dir / f"{name}.csr", self.dir / f"{name}-cert.pem")
        ext = self.dir / f"{name}.ext"
        ext.write_text(f"subjectAltName=IP:{address}\nextendedKeyUsage=serverAuth\n"
                       "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n")
        self._openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                      "-keyout", str(key), "-out", str(csr), "-subj", f"/O=evnet test/CN={name}")
        self._openssl("x509", "-req", "-in", str(csr), "-CA", str(self.ca), "-CAkey", str(self.dir / "ca-key.pem"),
                      "-CAcreateserial", "-days", "30", "-extfile", str(ext), "-out", str(cert))
        os.chmod(key, 0o600)
        return cert, key

    def server(self, port: int, host: Host, name: str) -> str:
        """An ``ssl:`` server endpoint on C{host}'s address with a certificate issued for it."""
        cert, key = self.issue(name, host.address)
        return f"ssl:{port}:interface={host.address}:privateKey={key}:certKey={cert}"

    def client(self, host: Host, port: int) -> str:
        """A ``tls:`` client endpoint to C{host}:C{port} that trusts only the CA."""
        return f"tls:host={host.address}:port={port}:trustRoots={self.trust}"

    @staticmethod
    def _openssl(*args: str) -> None:
        out = subprocess.run(["openssl", *args], capture_output=True, text=True, timeout=30)
        if out.returncode != 0:
            raise AssertionError(f"openssl {' '.join(args)}: {out.stderr}")


class HostServices:
    """
    MariaDB and a Kafka broker of scripts/services.sh, dedicated to C{host}:
    run inside it, bound to its address (EVNET_BIND_ADDRESS), in their own
    state dir, on the guide's ports (3306, 9092; the namespace has its own
    ports).  The Kafka jars are shared with the test suite's state dir when it
    has them.  Stopped by PID (services.sh down).
    """

    MYSQL_PORT = 3306
    KAFKA_PORT = 9092

    def __init__(self, host: Host, state: Path):
        self.host = host
        self.state = state
        self.env = {
            "EVNET_SERVICES_DIR": str(state),
            "EVNET_BIND_ADDRESS": host.address,
            "EVNET_MYSQL_PORT": str(self.MYSQL_PORT),
            "EVNET_KAFKA_PORT": str(self.KAFKA_PORT),
            "EVNET_KAFKA_HEAP": "384m",
            "EVNET_PYTHON": sys.executable,
        }
        shared = Path(os.environ.get("EVNET_SERVICES_DIR", "/tmp/evnet-services")) / "kafka-libs"
        if (shared / ".stamp").exists():
            self.env["EVNET_KAFKA_LIBS"] = str(shared)
        self.started = False

    @property
    def mysql_url(self) -> str:
        return f"mysql://evnet:evnet@{self.host.address}:{self.MYSQL_PORT}/evnet"

    @property
    def kafka(self) -> str:
        return f"{self.host.address}:{self.KAFKA_PORT}"

    def up(self, timeout: float = 300) -> None:
        self.started = True
        self.host.run("bash", str(SERVICES), "up", "mysql", "kafka", timeout=timeout, env=self.env)

    def down(self) -> None:
        if self.started:
            self.host.run("bash", str(SERVICES), "down", "mysql", "kafka", timeout=120, env=self.env)
            self.started = False

    def sql(self, statement: str) -> list[dict]:
        """Rows of C{statement} on this host's database, asked from inside the host."""
        code = ("import json, sys, MySQLdb, MySQLdb.cursors\n"
                "c = MySQLdb.connect(host=sys.argv[1], port=int(sys.argv[2]), user='evnet', passwd='evnet',"
                " db='evnet', cursorclass=MySQLdb.cursors.DictCursor)\n"
                "cur = c.cursor(); cur.execute(sys.argv[3]); print(json.dumps(list(cur.fetchall()), default=str))\n")

        out = self.host.run(sys.executable, "-c", code, self.host.address, str(self.MYSQL_PORT), statement,
                            timeout=30)
        return json.loads(out.stdout)
