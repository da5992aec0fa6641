"""
Load generator for EV_Central (docs/performance.md).  Not a test: it starts a
real ``twistd -n evcentral`` (SQLite in a temporary directory, no HTTP, free
loopback ports), drives it with simulated charging points and drivers that
speak the real evnet protocol (evnet's own frame and message codecs,
stop-and-wait, every frame ACKed), measures, prints a table and optionally
writes JSON.  Everything it starts is stopped by PID at the end; the load is
bounded in time and count and stops by itself.

Authentication and encryption (issue 13, docs/protocol.md §7): before Central
starts, the N CPs are registered in its SQLite database directly through
RegistryStore (a child process; the verifiers, one scrypt each, made on every
core), as EV_Registry would write them; the secrets reach the workers in a
0600 file.  Each simulated CP logs in (AUTH, CHALLENGE, PROOF with its own
scrypt, KEY) and seals/opens every frame after KEY (role M; with --kafka the
Engines' records are sealed with role E, one sealer per topic as evengine
does).  Central runs with --login-failures 0: every CP logs in from 127.0.0.1.

OCPP mode (--ocpp, benchmarks/loadgen_ocpp.py): the N CPs are OCPP 1.6J
charge points on Central's --ocpp listener (autobahn WebSocket clients with
Basic auth, registered the same way): BootNotification, StatusNotification,
Heartbeat every --ocpp-heartbeat s; a driver's REQ becomes
RemoteStartTransaction -> StartTransaction -> MeterValues every second, and
the last phase ends each with StopTransaction -> the driver's TICKET.
Scenarios idle and charge only.

Scenarios, run in the order given on one Central:

  idle    N CPs connected (logged in), STATUS every second, for --window s.
  charge  K drivers ask for a charge (REQ) at --req-rate per second; each CP
          answers START with TELEM every second; measured for --window s.
  fault   --faults charging CPs report engine KO at once (STATUS KO, or AVR
          with --fault-via avr); each also sends STOP reason fault.  The
          latency is KO sent -> the driver receives Central's NOTICE, which
          Central sends in the same reactor turn as it marks the CP AVERIADO.
  storm   every CP link is cut (RST) at once and reconnects at once (a new
          login each, with a 1 s retry when refused); recovery = until every
          CP has its KEY again (the states it came back in are reported).  Charges in progress are ended by
          Central (ticket "disconnected"); a session is lost if its driver or
          its CP never gets the ticket.
  flood   --flood-links CP links send STATUS back to back (the next on each
          ACK) for --window s: Central's ceiling in frames per second.
  echo    the same, against benchmarks/echo_server.py (a bare Twisted echo of
          the same frames: a sealed STATUS, --echo-frame): the reference ceiling
          (--echo-writes eager: the echo sends at once as evnet's links do).

Example (the targets):

  .venv/bin/python benchmarks/loadgen.py --cps 10000 --charges 2000 --faults 500 \\
      --scenarios idle,charge,fault,storm --workers 2 --json-out /tmp/run.json

The simulated fleet may be spread over --workers processes (each one reactor,
the CPs with index i % W == w and their drivers, so a driver and its CP share
a clock for the latencies).  The master process starts Central and the
workers and steps them through the scenarios over stdin/stdout (JSON lines).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter, deque
from pathlib import Path

from twisted.internet import defer, endpoints, protocol, reactor, stdio, task
from twisted.internet.protocol import Factory, Protocol
from twisted.protocols.basic import LineReceiver

from evnet.launcher import free_port, wait_for_port
from evnet.protocols import messages as m
from evnet.protocols import security
from evnet.protocols.framing import ACK, ACK_BYTE, ENQ_BYTE, EOT, NACK, NACK_BYTE, FrameDecoder, Kind, encode_frame
from evnet.protocols.vocabulary import kafka_prefix

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
now = time.monotonic


# --ocpp mode's figures (benchmarks/loadgen_ocpp.py): the workers' list -> the phase's key (+ "_ms").
OCPP_FIGURES = (("boot_secs", "boot"), ("call_rtt", "ocpp_call_rtt"), ("remote_start_lat", "req_to_remote_start"),
                ("ticket_lat", "stop_to_ticket"))


def frame_of(msg: m.Message) -> bytes:
    return encode_frame(msg.to_data())


def raise_fd_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


# ---------------------------------------------------------------------------
# The worker: simulated CPs and drivers on one reactor.
# ---------------------------------------------------------------------------


class SimLink(Protocol):
    """
    A lean client end of an evnet link: ENQ to open, stop-and-wait for its
    own frames, ACK (or NACK) every frame received.  No timers: a silent
    peer shows in the figures instead.  C{owner} gets link_open, link_msg,
    link_lost, link_refused.
    """

    def __init__(self, owner, sim: "Sim", initiate: bool = True) -> None:
        self.owner = owner
        self.sim = sim
        self.initiate = initiate
        self.decoder = FrameDecoder()
        self.queue: deque = deque()
        self.inflight = False
        self.open = False
        self.gone = False

    def connectionMade(self) -> None:
        self.transport.setTcpNoDelay(True)
        if self.initiate:
            self.transport.write(ENQ_BYTE)
        else:
            self.open = True
            self.owner.link_open(self)

    def send(self, frame: bytes) -> None:
        if self.gone:
            return
        if self.inflight:
            self.queue.append(frame)
            q = len(self.queue)
            if q > self.sim.max_queue:
                self.sim.max_queue = q
        else:
            self.inflight = True
            self.transport.write(frame)
            self.sim.frames_out += 1

    def dataReceived(self, data: bytes) -> None:
        sim = self.sim
        for ev in self.decoder.feed(data):
            if self.gone:
                return
            kind = ev.kind
            if kind is Kind.FRAME:
                try:
                    msg = m.decode(ev.data)
                except m.MessageError as e:
                    sim.error(f"undecodable frame from Central: {e}")
                    self.transport.write(NACK_BYTE)
                    sim.nacks_sent += 1
                    continue
                self.transport.write(ACK_BYTE)
                sim.frames_in += 1
                self.owner.link_msg(self, msg)
            elif kind is Kind.CONTROL:
                c = ev.control
                if c == ACK:
                    if not self.open:
                        self.open = True
                        self.owner.link_open(self)
                    elif self.inflight:
                        sim.frames_acked += 1
                        self.owner.acked(self)
                        if self.queue:
                            self.transport.write(self.queue.popleft())
                            sim.frames_out += 1
                        else:
                            self.inflight = False
                elif c == NACK:
                    sim.nacks_received += 1
                    if not self.open:
                        self.owner.link_refused(self)
                    else:
                        sim.error("Central NACKed a frame")
                elif c == EOT:
                    self.transport.loseConnection()
            else:
                sim.error(f"bad frame from Central: {kind.value}")
                self.transport.write(NACK_BYTE)
                sim.nacks_sent += 1

    def connectionLost(self, reason=None) -> None:
        self.gone = True
        self.owner.link_lost(self, reason)

    def abort(self) -> None:
        self.gone = True
        self.transport.abortConnection()


class EchoLink(Protocol):
    """The client end of a bare echo: frames out, the same frames back, nothing else."""

    def __init__(self, owner, sim) -> None:
        self.owner, self.sim = owner, sim
        self.decoder = FrameDecoder()

    def connectionMade(self) -> None:
        self.transport.setTcpNoDelay(True)
        self.owner.link_open(self)

    def dataReceived(self, data: bytes) -> None:
        for ev in self.decoder.feed(data):
            if ev.kind is Kind.FRAME:
                self.sim.frames_in += 1
                self.owner.link_msg(self, ev.data)
            else:
                self.sim.error(f"echo: unexpected {ev.kind.value}")

    def connectionLost(self, reason=None) -> None:
        self.owner.link_lost(self, reason)


class OwnerFactory(Factory):
    noisy = False

    def __init__(self, owner, sim, initiate=True):
        self.owner, self.sim, self.initiate = owner, sim, initiate

    def buildProtocol(self, addr):
        if self.initiate is None:
            return EchoLink(self.owner, self.sim)
        return SimLink(self.owner, self.sim, self.initiate)


class SimCp:
    """A Monitor + Engine pair as Central sees them."""

    def __init__(self, sim: "Sim", idx: int) -> None:
        self.sim = sim
        self.idx = idx
        self.id = f"CP{idx:05d}"
        self.link: SimLink | None = None
        self.up = False
        self.engine_ok = True
        self.status_ok = m.Status(self.id, m.ENGINE_OK)
        self.status_ko = m.Status(self.id, m.ENGINE_KO)
        self.status_every = 1  # seconds between two STATUS: what Central's KEY says (liveness)
        self.status_due = 1
        self.secret = sim.secrets[self.id]
        self.login: security.ClientLogin | None = None
        self.sealer: security.Sealer | None = None  # the Monitor's (role M), after KEY
        self.opener: security.Opener | None = None  # what Central sealed (role C)
        self.engine_sealers: dict[str, security.Sealer] = {}  # --kafka: the Engine's (role E), one per topic
        self.engine_key: tuple[str, bytes] | None = None  # what CPKEY would hand the Engine
        self.session: str | None = None
        self.seq = 0
        self.kwh = 0.0
        self.await_ticket: str | None = None  # a STOP we sent
        self.t_connect = 0.0
        self.t_up = 0.0
        self.t_ko = 0.0
        self.expect_loss = False
        self.retries = 0
        self.auth_state = ""

    # connection
    def connect(self) -> None:
        self.t_connect = now()
        self.up = False
        d = self.sim.cp_endpoint.connect(OwnerFactory(self, self.sim))
        d.addErrback(self._connect_failed)

    def _connect_failed(self, failure) -> None:
        self.sim.connect_failures += 1
        self.retries += 1
        reactor.callLater(1.0, self.connect)

    def link_open(self, link) -> None:
        self.link = link
        self.sealer = self.opener = None
        self.login = security.ClientLogin(self.id, self.secret)
        link.send(frame_of(self.login.start()))

    def send(self, msg: m.Message) -> None:
        """C{msg} to Central on the link, sealed under the key of the last login (a Monitor's M role)."""
        if self.link is not None and self.sealer is not None:
            self.link.send(frame_of(security.seal_message(self.sealer, msg)))

    def logged_in(self, key: m.Key) -> None:
        """KEY: Central proved itself and issued the key; from here on the link is sealed both ways."""
        sim = self.sim
        t = now()
        try:
            key_id, raw = self.login.accept(key)
        except security.SecurityError as e:
            sim.error(f"{self.id}: KEY refused: {e}")
            return
        sim.login_secs.append(t - self.t_connect)
        self.login = None
        self.sealer = security.Sealer(self.id, key_id, raw, security.ROLE_MONITOR)
        self.status_every = max(1, round(key.liveness))  # ticks (seconds) between two STATUS, as Central said
        self.status_due = 1 + self.idx % self.status_every  # spread over the interval, as Monitors started apart are
        self.opener = security.Opener(self.id, key_id, raw, (security.ROLE_CENTRAL,))
        self.engine_key = (key_id, raw)
        self.engine_sealers = {}
        self.up = True
        self.t_up = now()
        self.auth_state = key.state
        sim.cp_up(self)

    def link_refused(self, link) -> None:
        self.sim.error(f"{self.id}: Central refused the link")

    def acked(self, link) -> None:
        pass

    def prove(self, link, login, challenge) -> None:
        """PROOF for C{challenge} (scrypt: ~50 ms of this worker's CPU, as in a real Monitor)."""
        if link is not self.link or login is not self.login:
            return  # the link went, or a newer login began, while this one waited its turn
        t = now()
        proof = login.answer(challenge)
        self.sim.scrypt_secs += now() - t
        if self.sealer is not None:  # a rotation's login travels sealed under the current key
            self.send(proof)
        else:
            link.send(frame_of(proof))

    def link_msg(self, link, msg) -> None:
        sim = self.sim
        if isinstance(msg, m.Sec):
            if self.opener is None:
                sim.error(f"{self.id}: SEC before KEY")
                return
            try:
                msg = security.open_message(self.opener, msg)
            except (security.SecurityError, m.MessageError) as e:
                sim.error(f"{self.id}: a sealed frame from Central does not open: {e}")
                return
            sim.opened += 1
        elif self.sealer is not None and not isinstance(msg, m.Refused):
            sim.error(f"{self.id}: plain {msg.code} from Central after KEY")
            return
        if isinstance(msg, m.Challenge):
            if self.login is None:
                sim.error(f"{self.id}: CHALLENGE without a login")
                return
            sim.prove_later(self, link, self.login, msg)
        elif isinstance(msg, m.Reauth):
            sim.reauths += 1
            self.t_connect = now()
            self.login = security.ClientLogin(self.id, self.secret)
            self.send(self.login.start())
        elif isinstance(msg, m.Key):
            self.logged_in(msg)
        elif isinstance(msg, m.Refused):
            if msg.what == "AUTH":
                # Central has not yet seen our previous link go: retry, as the Monitor's backoff does.
                self.retries += 1
                sim.auth_refusals += 1
                self.expect_loss = True
                link.transport.loseConnection()
                reactor.callLater(1.0, self.connect)
            else:
                sim.error(f"{self.id}: REFUSED {msg.what}: {msg.reason}")
        elif isinstance(msg, m.Start):
            self.session = msg.session_id
            self.seq = 0
            self.kwh = 0.0
            sim.charging[self.id] = self
        elif isinstance(msg, m.Ticket):
            if msg.session_id == self.await_ticket:
                self.await_ticket = None
                sim.cp_tickets += 1
            sim.cp_ticket_seen(self, msg)
        elif isinstance(msg, m.Parar):
            sim.error(f"{self.id}: unexpected PARAR")
        else:
            sim.other_in += 1

    def link_lost(self, link, reason) -> None:
        if link is not self.link:
            return
        self.link = None
        was_up = self.up
        self.up = False
        if self.expect_loss:
            self.expect_loss = False
            return
        if not self.sim.quitting:
            why = reason.getErrorMessage() if reason else "?"
            self.sim.error(f"{self.id}: link lost unexpectedly ({'up' if was_up else 'opening'}): {why}")

    def tick(self) -> None:
        """Once a second: TELEM while charging; STATUS (the Engine's health) every KEY's liveness seconds."""
        if self.up:
            self.status_due -= 1
            if self.status_due <= 0:
                self.status_due = self.status_every
                self.send(self.status_ok if self.engine_ok else self.status_ko)
            if self.session is not None:
                self.send_telem()

    # engine
    def send_telem(self) -> None:
        self.seq += 1
        self.kwh += 0.003
        sid = self.session
        telem = m.Telem(self.id, sid, self.seq, self.kwh, 11.0, self.kwh * 0.35, self.seq)
        self.sim.telem_sent[(sid, self.seq)] = now()
        self.report(telem)

    def report(self, msg: m.Message) -> None:
        """TELEM or STOP for Central: on the link, or through Kafka (--kafka) as evengine --kafka does."""
        if self.sim.bus is not None:
            topic = "cp.telemetry" if isinstance(msg, m.Telem) else "cp.events"
            sealer = self.engine_sealers.get(topic)
            if sealer is None:  # as evengine does: one sealer (its own epoch) per topic, under the CPKEY
                sealer = self.engine_sealers[topic] = security.Sealer(self.id, *self.engine_key, security.ROLE_ENGINE)
            self.sim.bus.publish(topic, self.id, security.seal_message(sealer, msg)).addErrback(lambda f: self.sim.error(f"{self.id}: Kafka: {f.getErrorMessage()}"))
        else:
            self.send(msg)

    def stop_charge(self, reason: str, send: bool = True) -> None:
        sid = self.session
        self.sim.charging.pop(self.id, None)
        self.session = None
        self.await_ticket = sid
        if send:
            self.report(m.Stop(self.id, sid, self.seq, self.kwh, self.kwh * 0.35, self.seq, reason))
        return sid


class SimDriver:
    def __init__(self, sim: "Sim", idx: int) -> None:
        self.sim = sim
        self.idx = idx
        self.id = f"D{idx:05d}"
        self.cp_id = f"CP{idx:05d}"
        self.link: SimLink | None = None
        self.up = False
        self.t_req = 0.0
        self.session: str | None = None
        self.answered = False

    def connect(self) -> None:
        d = self.sim.driver_endpoint.connect(OwnerFactory(self, self.sim))
        d.addErrback(lambda f: (self.sim.error(f"{self.id}: cannot connect: {f.getErrorMessage()}")))

    def link_open(self, link) -> None:
        self.link = link
        link.send(frame_of(m.Driver(self.id)))

    def link_refused(self, link) -> None:
        self.sim.error(f"{self.id}: Central refused the link")

    def acked(self, link) -> None:
        pass

    def request(self) -> None:
        if self.link is None or not self.up:
            self.answered = True
            self.sim.error(f"{self.id}: not connected, no REQ sent")
            return
        self.t_req = now()
        self.answered = False
        self.link.send(frame_of(m.Req(self.id, self.cp_id, 0.0)))

    def link_msg(self, link, msg) -> None:
        sim = self.sim
        t = now()
        if isinstance(msg, m.Accepted):
            self.up = True
            sim.driver_up(self)
        elif isinstance(msg, m.Authorized):
            self.session = msg.session_id
            if not self.answered:
                self.answered = True
                sim.req_lat.append(t - self.t_req)
                sim.authorized += 1
                sim.session_driver[msg.session_id] = self
        elif isinstance(msg, m.Denied):
            self.answered = True
            sim.denied += 1
            sim.error(f"{self.id}: DENIED {msg.cp_id}: {msg.reason}")
        elif isinstance(msg, m.Telem):
            sim.telem_received(msg, t)
        elif isinstance(msg, m.Notice):
            cp = sim.cps_by_id.get(self.cp_id)
            if cp is not None and cp.t_ko and cp.id in sim.fault_pending:
                sim.fault_pending.discard(cp.id)
                sim.fault_lat.append(t - cp.t_ko)
        elif isinstance(msg, m.Ticket):
            sim.driver_tickets[msg.session_id] = msg.reason
            sim.ticket_received(self, msg, t)
            if msg.session_id == self.session:
                self.session = None
        else:
            sim.other_in += 1

    def link_lost(self, link, reason) -> None:
        self.up = False
        if not self.sim.quitting:
            self.sim.error(f"{self.id}: driver link lost: {reason.getErrorMessage() if reason else '?'}")


class EchoConn:
    """One connection to the echo server: one frame in flight, like the link."""

    def __init__(self, sim, frame):
        self.sim, self.frame = sim, frame
        self.link = None
        self.t = 0.0

    def link_open(self, link):
        self.link = link

    def fire(self):
        self.t = now()
        self.link.transport.write(self.frame)
        self.sim.frames_out += 1

    def link_msg(self, link, msg):
        t = now()
        self.sim.frames_acked += 1
        self.sim.flood_rtt.append(t - self.t)
        if self.sim.flooding:
            self.fire()

    def acked(self, link):
        pass

    def link_refused(self, link):
        pass

    def link_lost(self, link, reason):
        if not self.sim.quitting:
            self.sim.error("echo link lost")


class Sim:
    """One worker process: its share of CPs and drivers, and the commands."""

    cp_class = SimCp

    def __init__(self, cfg: dict) -> None:
        self.cfg = cfg
        w, nw = cfg["worker"], cfg["workers"]
        self.cp_endpoint = endpoints.clientFromString(reactor, f"tcp:host=127.0.0.1:port={cfg['cp_port']}:timeout=30")
        self.driver_endpoint = endpoints.clientFromString(
            reactor, f"tcp:host=127.0.0.1:port={cfg['driver_port']}:timeout=30"
        )
        self.bus = None
        if cfg.get("kafka"):
            from evnet.kafka.bus import KafkaBus

            self.bus = KafkaBus(cfg["kafka"], f"loadgen-w{w}", reactor=reactor, max_pending=100000,
                                prefix=cfg.get("kafka_prefix", ""))
            self.bus.startService()
        with open(cfg["secrets"]) as f:
            self.secrets: dict[str, str] = json.load(f)
        self.login_secs: list[float] = []  # link made -> KEY, per login
        self.scrypt_secs = 0.0  # this worker's time in scrypt (the PROOFs)
        self.opened = 0  # sealed frames from Central opened
        self.reauths = 0
        self.proofs: deque = deque()  # CHALLENGEs waiting for their scrypt, one per reactor turn
        self.proving = False
        self.cps = [self.cp_class(self, i) for i in range(w, cfg["cps"], nw)]
        self.cps_by_id = {cp.id: cp for cp in self.cps}
        self.drivers = [SimDriver(self, i) for i in range(w, cfg["charges"], nw)]
        self.buckets = [[] for _ in range(10)]
        for cp in self.cps:
            self.buckets[cp.idx % 10].append(cp)
        self.charging: dict[str, SimCp] = {}
        self.session_driver: dict[str, SimDriver] = {}
        self.telem_sent: dict = {}
        self.driver_tickets: dict[str, str] = {}
        self.cp_tickets = 0
        self.frames_out = self.frames_in = self.frames_acked = 0
        self.nacks_sent = self.nacks_received = 0
        self.max_queue = 0
        self.errors = 0
        self.error_samples: list[str] = []
        self.connect_failures = 0
        self.auth_refusals = 0
        self.other_in = 0
        self.authorized = self.denied = 0
        self.telem_unknown = 0
        self.req_lat: list[float] = []
        self.telem_lat: list[float] = []
        self.fault_lat: list[float] = []
        self.flood_rtt: list[float] = []
        self.fault_pending: set[str] = set()
        self.flooding = False
        self.quitting = False
        self.tick_no = 0
        self.telem_lost = 0
        self.telem_superseded = 0
        self.ticker = task.LoopingCall(self.tick)
        self.out = None

    def prove_later(self, cp, link, login, challenge) -> None:
        """
        Queue a login's scrypt.  One per reactor turn: done inline for a
        thousand CHALLENGEs arriving together, it would block this worker for
        tens of seconds, its ACKs would be late and Central's links would give
        up on them (5 s).
        """
        self.proofs.append((cp, link, login, challenge))
        if not self.proving:
            self.proving = True
            reactor.callLater(0, self._next_proof)

    def _next_proof(self) -> None:
        if not self.proofs:
            self.proving = False
            return
        cp, link, login, challenge = self.proofs.popleft()
        cp.prove(link, login, challenge)
        reactor.callLater(0, self._next_proof)

    def error(self, text: str) -> None:
        self.errors += 1
        if len(self.error_samples) < 20:
            self.error_samples.append(text)

    # -- periodic traffic: one tick every 0.1 s serves a tenth of the CPs --

    def tick(self) -> None:
        b = self.tick_no % 10
        self.tick_no += 1
        for cp in self.buckets[b]:
            cp.tick()

    def telem_received(self, msg: m.Telem, t: float) -> None:
        """A driver's TELEM: the latency from its CP's TELEM (matched by session and seq)."""
        sent = self.telem_sent.pop((msg.session_id, msg.seq), None)
        if sent is not None:
            self.telem_lat.append(t - sent)
        else:
            self.telem_unknown += 1
        # Central forwards to a driver only the newest reading when the
        # driver's link is still busy: older ones are superseded, not lost.
        earlier = msg.seq - 1
        while self.telem_sent.pop((msg.session_id, earlier), None) is not None:
            self.telem_superseded += 1
            earlier -= 1

    def ticket_received(self, driver: "SimDriver", msg: m.Ticket, t: float) -> None:
        pass

    # -- waiting for a condition ---------------------------------------------

    def wait_until(self, predicate, timeout: float) -> defer.Deferred:
        """
        Fires True once C{predicate()} holds, False after C{timeout} s.  The
        predicate is polled every 50 ms (not on every event: it may be O(N));
        the figures come from per-event timestamps, not from this poll.
        """
        d = defer.Deferred()
        deadline = now() + timeout

        def poll():
            if predicate():
                loop.stop()
                d.callback(True)
            elif now() > deadline:
                loop.stop()
                d.callback(False)

        loop = task.LoopingCall(poll)
        loop.start(0.05, now=True)
        return d

    def cp_up(self, cp) -> None:
        pass

    def driver_up(self, driver) -> None:
        pass

    def cp_ticket_seen(self, cp, msg) -> None:
        pass

    # -- commands -------------------------------------------------------------

    def command(self, cmd: dict) -> defer.Deferred:
        return defer.maybeDeferred(getattr(self, "cmd_" + cmd["cmd"]), cmd)

    @defer.inlineCallbacks
    def cmd_connect(self, cmd):
        t0 = now()
        if not self.ticker.running:  # each CP sends STATUS every second from the moment it is up
            self.ticker.start(0.1, now=False)
        rate = cmd.get("rate", 2000) / self.cfg["workers"]
        batch = max(1, int(rate / 20))
        for i in range(0, len(self.cps), batch):
            for cp in self.cps[i : i + batch]:
                cp.connect()
            yield task.deferLater(reactor, 0.05, lambda: None)
        for drv in self.drivers:
            drv.connect()
        ok = yield self.wait_until(
            lambda: all(cp.up for cp in self.cps) and all(d.up for d in self.drivers), cmd.get("timeout", 120)
        )
        return {
            "ok": ok,
            "secs": now() - t0,
            "cps_up": sum(cp.up for cp in self.cps),
            "drivers_up": sum(d.up for d in self.drivers),
            "not_activado": sum(1 for cp in self.cps if cp.auth_state != "ACTIVADO"),
        }

    def cmd_stats(self, cmd):
        stale = now() - 5.0
        lost_telem = [k for k, t in self.telem_sent.items() if t < stale]
        for k in lost_telem:
            del self.telem_sent[k]
        self.telem_lost += len(lost_telem)
        out = {
            "frames_out": self.frames_out,
            "frames_acked": self.frames_acked,
            "frames_in": self.frames_in,
            "nacks_sent": self.nacks_sent,
            "nacks_received": self.nacks_received,
            "errors": self.errors,
            "error_samples": self.error_samples,
            "max_queue": self.max_queue,
            "telem_lost": self.telem_lost,
            "telem_superseded": self.telem_superseded,
            "telem_unknown": self.telem_unknown,
            "req_lat": self.req_lat,
            "telem_lat": self.telem_lat,
            "fault_lat": self.fault_lat,
            "flood_rtt": self.flood_rtt,
            "login_secs": self.login_secs,
            "scrypt_secs": self.scrypt_secs,
            "sealed_opened": self.opened,
            "reauths": self.reauths,
            "cps_up": sum(cp.up for cp in self.cps),
            "charging": len(self.charging),
        }
        self.req_lat, self.telem_lat, self.fault_lat, self.flood_rtt, self.login_secs = [], [], [], [], []
        self.max_queue = 0
        return out

    @defer.inlineCallbacks
    def cmd_charge(self, cmd):
        rate = cmd["rate"] / self.cfg["workers"]
        t0 = now()
        per_tick = max(1, int(rate / 20))
        for i in range(0, len(self.drivers), per_tick):
            for drv in self.drivers[i : i + per_tick]:
                drv.request()
            yield task.deferLater(reactor, 0.05, lambda: None)
        ok = yield self.wait_until(
            lambda: all(d.answered for d in self.drivers) and len(self.charging) >= self.authorized, 60
        )
        return {"ok": ok, "secs": now() - t0, "authorized": self.authorized, "denied": self.denied,
                "charging": len(self.charging)}

    @defer.inlineCallbacks
    def cmd_fault(self, cmd):
        count = cmd["count"]
        via = cmd.get("via", "status")
        victims = list(self.charging.values())[:count]
        t0 = now()
        for cp in victims:
            cp.engine_ok = False
            cp.t_ko = now()
            self.fault_pending.add(cp.id)
            if via == "avr":
                cp.send(m.Avr(cp.id, "engine KO (load test)"))
            else:
                cp.send(cp.status_ko)
            sid = cp.stop_charge("fault")
            self.fault_sessions = getattr(self, "fault_sessions", []) + [sid]
        sids = [cp.await_ticket for cp in victims]
        ok = yield self.wait_until(
            lambda: not self.fault_pending and all(s in self.driver_tickets for s in sids)
            and all(cp.await_ticket is None for cp in victims),
            60,
        )
        # Recovery: the Engine answers OK again.
        for cp in victims:
            cp.engine_ok = True
            cp.t_ko = 0.0
            if via == "avr":
                cp.send(m.Rcv(cp.id))
        return {
            "ok": ok, "secs": now() - t0, "faulted": len(victims), "notices_missing": len(self.fault_pending),
            "driver_tickets_missing": sum(1 for s in sids if s not in self.driver_tickets),
            "cp_tickets_missing": sum(1 for cp in victims if cp.await_ticket is not None),
            "ticket_reasons": sorted({self.driver_tickets.get(s, "?").split(":")[0] for s in sids}),
        }

    @defer.inlineCallbacks
    def cmd_storm(self, cmd):
        open_sessions = []
        for cp in list(self.charging.values()):
            sid = cp.stop_charge("unplug", send=False)
            open_sessions.append((cp, sid))
        cut = {s for _, s in open_sessions}
        for key in [k for k in self.telem_sent if k[0] in cut]:
            del self.telem_sent[key]
        t0 = now()
        for cp in self.cps:
            cp.auth_state = ""
            cp.retries = 0
            if cp.link is not None:
                cp.expect_loss = True
                link, cp.link = cp.link, None
                cp.up = False
                link.abort()
            cp.connect()

        # After AUTH, an Engine that had a charge reports its end (STOP); Central answers its ticket.
        def cp_up(cp, _orig=self.cp_up):
            if cp.await_ticket is not None and cp.link is not None:
                cp.report(m.Stop(cp.id, cp.await_ticket, cp.seq, cp.kwh, cp.kwh * 0.35, cp.seq, "unplug"))
            _orig(cp)

        self.cp_up = cp_up
        # Recovered = AUTH accepted again.  A CP whose Engine fault Central had not yet seen cleared
        # comes back AVERIADO (then ACTIVADO on its next STATUS OK): the states are reported.
        ok = yield self.wait_until(lambda: all(cp.up for cp in self.cps), cmd.get("timeout", 120))
        recovered_at = max((cp.t_up for cp in self.cps if cp.up), default=t0)
        ok2 = yield self.wait_until(
            lambda: all(s in self.driver_tickets for _, s in open_sessions)
            and all(cp.await_ticket is None for cp, _ in open_sessions),
            30,
        )
        del self.cp_up
        return {
            "ok": ok and ok2,
            "recovery_secs": recovered_at - t0,
            "cps": len(self.cps),
            "not_recovered": sum(1 for cp in self.cps if not cp.up),
            "states": dict(Counter(cp.auth_state or "not authenticated" for cp in self.cps)),
            "auth_refusals": self.auth_refusals,
            "connect_failures": self.connect_failures,
            "sessions_open_before": len(open_sessions),
            "sessions_lost_driver": sum(1 for _, s in open_sessions if s not in self.driver_tickets),
            "sessions_lost_cp": sum(1 for cp, _ in open_sessions if cp.await_ticket is not None),
            "ticket_reasons": sorted({self.driver_tickets.get(s, "?") for _, s in open_sessions}),
        }

    @defer.inlineCallbacks
    def cmd_stop_charges(self, cmd):
        stopping = []
        for cp in list(self.charging.values()):
            stopping.append((cp, cp.stop_charge("unplug")))
        ok = yield self.wait_until(
            lambda: all(s in self.driver_tickets for _, s in stopping) and all(cp.await_ticket is None for cp, _ in stopping),
            60,
        )
        return {"ok": ok, "stopped": len(stopping),
                "driver_tickets_missing": sum(1 for _, s in stopping if s not in self.driver_tickets),
                "cp_tickets_missing": sum(1 for cp, _ in stopping if cp.await_ticket is not None)}

    @defer.inlineCallbacks
    def cmd_flood(self, cmd):
        """Back-to-back STATUS on the first `links` CP links (or echo connections)."""
        secs = cmd["secs"]
        if cmd.get("echo"):
            status = m.Status("CP00000", m.ENGINE_OK)
            if cmd.get("sealed", True):
                # What Central receives in a flood: a STATUS sealed under a CP's key (role M), so the echo
                # moves frames of the same size.  The echo never opens them; one frame, sent again and again.
                sealer = security.Sealer("CP00000", security.new_key_id(), security.new_key(), security.ROLE_MONITOR)
                frame = frame_of(security.seal_message(sealer, status))
            else:
                frame = frame_of(status)
            conns = [EchoConn(self, frame) for _ in range(cmd["links"])]
            ep = endpoints.clientFromString(reactor, f"tcp:host=127.0.0.1:port={cmd['port']}")
            for c in conns:
                yield ep.connect(OwnerFactory(c, self, initiate=None))
            self.flooding = True
            for c in conns:
                c.fire()
            yield task.deferLater(reactor, secs, lambda: None)
            self.flooding = False
            yield task.deferLater(reactor, 0.5, lambda: None)
            self.quitting = True  # the links we close now are not errors
            for c in conns:
                c.link.transport.loseConnection()
            return {"links": len(conns)}
        # Central: a dedicated set of links (already-connected CPs), STATUS back to back.
        links = [cp for cp in self.cps if cp.up][: cmd["links"]]
        if self.ticker.running:
            self.ticker.stop()
        sent = {}

        def acked(link, cp):
            self.flood_rtt.append(now() - sent[cp.id])
            if self.flooding:
                sent[cp.id] = now()
                cp.send(cp.status_ok)

        for cp in links:
            cp.acked = (lambda link, cp=cp: acked(link, cp))
        self.flooding = True
        for cp in links:
            sent[cp.id] = now()
            cp.send(cp.status_ok)
        yield task.deferLater(reactor, secs, lambda: None)
        self.flooding = False
        yield task.deferLater(reactor, 0.5, lambda: None)
        for cp in links:
            del cp.acked
        self.ticker.start(0.1, now=False)
        return {"links": len(links)}

    def cmd_quit(self, cmd):
        self.quitting = True
        if self.ticker.running:
            self.ticker.stop()
        for cp in self.cps:
            cp.expect_loss = True
            if cp.link is not None:
                cp.link.gone = True
                cp.link.transport.loseConnection()
        for d in self.drivers:
            if d.link is not None:
                d.link.gone = True
                d.link.transport.loseConnection()
        if self.bus is not None:
            # The bus's client threads must end, or the process outlives the reactor.
            self.bus.stopService().addBoth(lambda _: reactor.callLater(0.5, reactor.stop))
        else:
            reactor.callLater(0.5, reactor.stop)
        return {"bye": True}


class WorkerControl(LineReceiver):
    """The worker's stdin/stdout: one JSON command per line, one JSON answer per line."""

    delimiter = b"\n"
    MAX_LENGTH = 1 << 30

    def __init__(self, sim: Sim) -> None:
        self.sim = sim

    def lineReceived(self, line: bytes) -> None:
        cmd = json.loads(line)

        def answer(result):
            self.sendLine(json.dumps({"cmd": cmd["cmd"], "result": result}).encode())

        def failed(f):
            self.sendLine(json.dumps({"cmd": cmd["cmd"], "failure": f.getTraceback()}).encode())

        self.sim.command(cmd).addCallbacks(answer, failed)


def run_worker(cfg_json: str) -> None:
    raise_fd_limit()
    cfg = json.loads(cfg_json)
    if cfg.get("ocpp_port"):
        from loadgen_ocpp import OcppSim  # benchmarks/, beside this file

        sim = OcppSim(cfg)
    else:
        sim = Sim(cfg)
    stdio.StandardIO(WorkerControl(sim))
    reactor.run()


# ---------------------------------------------------------------------------
# The fleet's registrations: what EV_Registry would write, straight into
# Central's database through RegistryStore (in a child process, with its own
# reactor, before Central starts).  The verifiers (one scrypt each) are made
# on every core first.
# ---------------------------------------------------------------------------


def _verifier(secret: str, n: int = security.SCRYPT_N) -> str:
    return security.make_verifier(secret, n=n).to_text()


def register_fleet(cfg_json: str) -> None:
    from concurrent.futures import ProcessPoolExecutor

    from evnet.central.store import Store, parse_db_url
    from evnet.registry.store import RegistryStore

    cfg = json.loads(cfg_json)
    with open(cfg["secrets"]) as f:
        secrets = json.load(f)
    t0 = now()
    with ProcessPoolExecutor(os.cpu_count() or 1) as pool:
        n = cfg.get("scrypt_cost", security.SCRYPT_N)
        verifiers = dict(zip(secrets, pool.map(_verifier, secrets.values(), [n] * len(secrets), chunksize=32)))
    t1 = now()

    @defer.inlineCallbacks
    def write(_reactor):
        store = RegistryStore(Store(parse_db_url(cfg["db"])))
        yield store.start()
        at = time.time()
        try:
            yield defer.gatherResults([
                store.register(cp_id, f"Bench street {int(cp_id[2:])}", 0.35, lambda v=v: v, at, "loadgen")
                for cp_id, v in verifiers.items()
            ], consumeErrors=True)
        finally:
            store.close()

    task.react(lambda r: write(r).addCallback(lambda _: print(json.dumps(
        {"verifiers_secs": round(t1 - t0, 2), "write_secs": round(now() - t1, 2), "cps": len(verifiers)}),
        flush=True)))


# ---------------------------------------------------------------------------
# The master: Central, the workers, the scenarios, the report.
# ---------------------------------------------------------------------------


class WorkerProcess(protocol.ProcessProtocol):
    def __init__(self, n: int) -> None:
        self.n = n
        self.buf = b""
        self.waiting: deque = deque()
        self.ended = defer.Deferred()
        self.stderr = b""

    def ask(self, cmd: dict) -> defer.Deferred:
        d = defer.Deferred()
        self.waiting.append(d)
        self.transport.write(json.dumps(cmd).encode() + b"\n")
        return d

    def outReceived(self, data: bytes) -> None:
        self.buf += data
        while b"\n" in self.buf:
            line, self.buf = self.buf.split(b"\n", 1)
            answer = json.loads(line)
            d = self.waiting.popleft()
            if "failure" in answer:
                d.errback(RuntimeError(f"worker {self.n}: {answer['failure']}"))
            else:
                d.callback(answer["result"])

    def errReceived(self, data: bytes) -> None:
        self.stderr += data
        sys.stderr.write(f"[worker {self.n}] " + data.decode(errors="replace"))

    def processEnded(self, reason) -> None:
        while self.waiting:
            self.waiting.popleft().errback(RuntimeError(f"worker {self.n} ended: {reason.getErrorMessage()}"))
        self.ended.callback(None)


def proc_cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime


def proc_status(pid: int) -> dict:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM", "Threads"):
                out[key] = int(value.split()[0])
    return out


def pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    k = min(len(s) - 1, max(0, int(round(p / 100.0 * (len(s) - 1)))))
    return s[k]


def ms(v):
    return None if v is None else round(v * 1000, 2)


def loadavg() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def wait_for_server(port: int, proc: subprocess.Popen, timeout: float, log: Path) -> None:
    try:
        wait_for_port(port, timeout)
    except TimeoutError:
        if proc.poll() is not None:
            raise SystemExit(f"loadgen: the server exited with code {proc.returncode}; its log: {log}")
        raise SystemExit(f"loadgen: nothing listens on 127.0.0.1:{port} after {timeout:g} s; log: {log}")


class Master:
    def __init__(self, args, server_pid: int, cp_port: int, driver_port: int) -> None:
        self.args = args
        self.pid = server_pid
        self.cp_port = cp_port
        self.driver_port = driver_port
        self.workers: list[WorkerProcess] = []
        self.results: dict = {"phases": []}
        self.last_stats = None
        self.ocpp_port = None  # --ocpp: Central's OCPP listener; the workers simulate OCPP CPs

    def start_workers(self) -> None:
        for w in range(self.args.workers):
            cfg = {"worker": w, "workers": self.args.workers, "cps": self.args.cps,
                   "charges": self.args.charges, "cp_port": self.cp_port, "driver_port": self.driver_port,
                   "kafka": self.args.kafka, "kafka_prefix": self.args.kafka_prefix,
                   "secrets": str(self.secrets_file), "ocpp_port": self.ocpp_port}
            wp = WorkerProcess(w)
            reactor.spawnProcess(
                wp, sys.executable, [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(cfg)],
                env=os.environ.copy(), childFDs={0: "w", 1: "r", 2: "r"},
            )
            self.workers.append(wp)

    def ask_all(self, cmd: dict) -> defer.Deferred:
        return defer.gatherResults([w.ask(cmd) for w in self.workers], consumeErrors=True)

    @defer.inlineCallbacks
    def stats(self):
        per = yield self.ask_all({"cmd": "stats"})
        total = {}
        for s in per:
            for k, v in s.items():
                if isinstance(v, list):
                    total.setdefault(k, []).extend(v)
                elif k == "max_queue":
                    total[k] = max(total.get(k, 0), v)
                else:
                    total[k] = total.get(k, 0) + v
        return total

    def sample(self) -> tuple[float, float, float]:
        gen = proc_cpu_seconds(os.getpid()) + sum(proc_cpu_seconds(w.transport.pid) for w in self.workers)
        return now(), proc_cpu_seconds(self.pid), gen

    def server_figures(self, start, end) -> dict:
        (t0, c0, g0), (t1, c1, g1) = start, end
        st = proc_status(self.pid)
        return {
            "secs": round(t1 - t0, 2),
            "central_cpu_pct": round(100 * (c1 - c0) / max(t1 - t0, 1e-9), 1),
            "generator_cpu_pct": round(100 * (g1 - g0) / max(t1 - t0, 1e-9), 1),
            "central_rss_mb": round(st["VmRSS"] / 1024, 1),
            "central_peak_rss_mb": round(st["VmHWM"] / 1024, 1),
            "central_threads": st["Threads"],
            "loadavg": loadavg(),
        }

    @defer.inlineCallbacks
    def phase(self, name: str, action, **extra):
        """Run C{action} (a Deferred-returning callable) and measure around it."""
        print(f"loadgen: {name} ...", flush=True)
        before = yield self.stats()
        s0 = self.sample()
        result = yield action()
        s1 = self.sample()
        after = yield self.stats()
        fig = self.server_figures(s0, s1)
        secs = max(s1[0] - s0[0], 1e-9)
        fig["msgs_in_per_s"] = round((after["frames_acked"] - before["frames_acked"]) / secs, 1)
        fig["msgs_out_per_s"] = round((after["frames_in"] - before["frames_in"]) / secs, 1)
        fig["msgs_per_s"] = round(fig["msgs_in_per_s"] + fig["msgs_out_per_s"], 1)
        # Server CPU time per message it received (an echo or a frame Central ACKed): the efficiency figure.
        if fig["msgs_in_per_s"]:
            fig["central_cpu_us_per_msg_in"] = round(fig["central_cpu_pct"] * 1e4 / fig["msgs_in_per_s"], 1)
        fig["nacks"] = (after["nacks_sent"] - before["nacks_sent"]) + (after["nacks_received"] - before["nacks_received"])
        fig["errors"] = after["errors"] - before["errors"]
        fig["error_samples"] = [e for e in after["error_samples"] if e not in before["error_samples"]][:10]
        fig["telem_lost"] = after["telem_lost"] - before["telem_lost"]
        fig["telem_superseded"] = after["telem_superseded"] - before["telem_superseded"]
        fig["max_link_queue"] = after["max_queue"]
        # The generator's scrypt (one per login, the PROOF): CPU seconds it spent, and per login.
        fig["generator_scrypt_secs"] = round(after["scrypt_secs"] - before["scrypt_secs"], 2)
        for key, label in (("req_lat", "req_to_authorized"), ("telem_lat", "telemetry"), ("fault_lat", "fault_detection"),
                           ("flood_rtt", "round_trip"), ("login_secs", "login"), *OCPP_FIGURES):
            vals = after.get(key)
            if vals:
                fig[label + "_ms"] = {"n": len(vals), "p50": ms(pct(vals, 50)), "p95": ms(pct(vals, 95)),
                                      "p99": ms(pct(vals, 99)), "max": ms(max(vals))}
        if isinstance(result, list):  # one result per worker
            fig["workers"] = result
        fig.update(extra)
        fig["phase"] = name
        self.results["phases"].append(fig)
        print(f"loadgen: {name}: {json.dumps({k: v for k, v in fig.items() if k != 'workers'})}", flush=True)
        return fig

    def window(self, secs: float):
        return lambda: task.deferLater(reactor, secs, lambda: None)

    @defer.inlineCallbacks
    def run(self):
        a = self.args
        self.start_workers()
        try:
            yield self.phase("connect", lambda: self.ask_all({"cmd": "connect", "rate": a.connect_rate}),
                             cps=a.cps, drivers=a.charges)
            if a.settle:
                yield self.phase("settle", self.window(a.settle), cps=a.cps)
            for sc in a.scenarios:
                if sc == "idle":
                    yield task.deferLater(reactor, 2, lambda: None)
                    yield self.phase("idle", self.window(a.window), cps=a.cps)
                elif sc == "charge":
                    yield self.phase("charge-ramp", lambda: self.ask_all({"cmd": "charge", "rate": a.req_rate}),
                                     charges=a.charges, req_rate=a.req_rate)
                    yield task.deferLater(reactor, 2, lambda: None)
                    yield self.phase("charging", self.window(a.window), cps=a.cps, charges=a.charges)
                elif sc == "fault":
                    per = a.faults // a.workers
                    yield self.phase("fault-storm",
                                     lambda: self.ask_all({"cmd": "fault", "count": per, "via": a.fault_via}),
                                     faults=per * a.workers, via=a.fault_via)
                    yield task.deferLater(reactor, 3, lambda: None)
                elif sc == "storm":
                    yield self.phase("reconnect-storm", lambda: self.ask_all({"cmd": "storm"}), cps=a.cps)
                    yield task.deferLater(reactor, 2, lambda: None)
                    yield self.phase("after-storm", self.window(min(a.window, 10)), cps=a.cps)
                elif sc == "flood":
                    per = max(1, a.flood_links // a.workers)
                    yield self.phase("flood-central",
                                     lambda: self.ask_all({"cmd": "flood", "links": per, "secs": a.window}),
                                     links=per * a.workers)
            if a.ocpp:  # measured: StopTransaction -> the driver's TICKET
                fig = yield self.phase("stop-charges", lambda: self.ask_all({"cmd": "stop_charges"}))
                stopped = fig.get("workers")
            else:
                stopped = yield self.ask_all({"cmd": "stop_charges"})
            self.results["final_stop"] = stopped
            final = yield self.stats()
            self.results["final"] = {k: v for k, v in final.items() if not isinstance(v, list) or k == "error_samples"}
        finally:
            yield self.quit_workers()

    @defer.inlineCallbacks
    def quit_workers(self):
        for w in self.workers:
            try:
                w.ask({"cmd": "quit"}).addErrback(lambda f: None)
            except Exception:
                pass
        yield defer.DeferredList([w.ended for w in self.workers])


class EchoMaster(Master):
    @defer.inlineCallbacks
    def run(self):
        a = self.args
        # The workers hold no CPs here (--cps 0): only echo connections.
        self.start_workers()
        try:
            per = max(1, a.flood_links // a.workers)
            yield self.phase("flood-echo",
                             lambda: self.ask_all({"cmd": "flood", "echo": True, "links": per, "secs": a.window,
                                                   "port": self.cp_port, "sealed": a.echo_frame == "sealed"}),
                             links=per * a.workers)
        finally:
            yield self.quit_workers()


def start_server(argv: list[str], cwd: Path, log: Path) -> subprocess.Popen:
    f = open(log, "wb")
    return subprocess.Popen(argv, cwd=cwd, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)


def stop_server(proc: subprocess.Popen) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    return proc.returncode


def scan_log(log: Path) -> dict:
    text = log.read_text(errors="replace")
    return {
        "tracebacks": text.count("Traceback"),
        "unhandled": text.count("Unhandled"),
        "database_errors": text.count("database error"),
        "nack_lines": text.count("NACK:"),
        "dropped_links": text.count("dropping the link"),
        "lines": text.count("\n"),
    }


def table(results: dict) -> str:
    rows = []
    header = ("phase", "s", "CPU%", "gen CPU%", "RSS MB", "msg/s", "REQ p50/p95/p99 ms", "TELEM p50/p99 ms",
              "fault p50/p99 ms", "RTT p50/p99 ms", "recovery s", "errors", "load")
    for ph in results["phases"]:
        def lat(key, three=False):
            v = ph.get(key)
            if not v:
                return "-"
            return f"{v['p50']}/{v['p95']}/{v['p99']}" if three else f"{v['p50']}/{v['p99']}"

        rec = "-"
        if ph["phase"] == "reconnect-storm" and ph.get("workers"):
            rec = f"{max(w['recovery_secs'] for w in ph['workers']):.2f}"
        errs = ph["errors"] + ph["nacks"] + ph["telem_lost"]
        rtt = lat("round_trip_ms") if ph.get("round_trip_ms") else lat("ocpp_call_rtt_ms")  # --ocpp: every CP CALL
        rows.append((ph["phase"], f"{ph['secs']:.1f}", f"{ph['central_cpu_pct']:.0f}", f"{ph['generator_cpu_pct']:.0f}", f"{ph['central_rss_mb']:.0f}",
                     f"{ph['msgs_per_s']:.0f}", lat("req_to_authorized_ms", True), lat("telemetry_ms"),
                     lat("fault_detection_ms"), rtt, rec, str(errs), ph["loadavg"].split()[0]))
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(header, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)) for r in rows]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description="Load generator for EV_Central: starts a real Central, simulates CPs and drivers over "
        "loopback, prints a table of figures (docs/performance.md).",
        epilog=__doc__.split("Example (the targets):")[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--cps", type=int, default=100, help="simulated charging points (N) [100]")
    parser.add_argument("--charges", type=int, default=20, help="concurrent charges / drivers (K <= N) [20]")
    parser.add_argument("--faults", type=int, default=10, help="charging CPs that report KO at once [10]")
    parser.add_argument("--fault-via", choices=("status", "avr"), default="status",
                        help="how the Engine's KO reaches Central: STATUS#cp#KO or AVR [status]")
    parser.add_argument("--scenarios", default="idle,charge,fault,storm",
                        help="comma-separated, in order: idle, charge, fault, storm, flood; or echo alone "
                        "[idle,charge,fault,storm]")
    parser.add_argument("--window", type=float, default=20.0, help="seconds each measuring window lasts [20]")
    parser.add_argument("--workers", type=int, default=1, help="generator processes [1]")
    parser.add_argument("--connect-rate", type=float, default=2000, help="new CP connections per second at start [2000]")
    parser.add_argument("--req-rate", type=float, default=200, help="REQs per second while charges start [200]")
    parser.add_argument("--settle", type=float, default=0,
                        help="seconds to wait (measured) after connecting, before the scenarios [0]")
    parser.add_argument("--flood-links", type=int, default=100, help="links used by flood/echo [100]")
    parser.add_argument("--echo-frame", choices=("sealed", "plain"), default="sealed",
                        help="echo: the frame sent, a sealed STATUS (the bytes a flood sends Central) or the "
                        "plain 16-byte STATUS of the runs before issue 13 [sealed]")
    parser.add_argument("--echo-writes", choices=("twisted", "eager"), default="twisted",
                        help="echo: how the echo server writes, through Twisted's transport.write (the bare "
                        "reference) or sent at once like evnet's links (evnet.protocols.eager) [twisted]")
    parser.add_argument("--liveness-interval", type=float, default=1.0,
                        help="Central's --liveness-interval: told to each CP in its KEY, which the simulated CPs "
                        "honour (one STATUS every that many seconds; a fault's KO still goes at once) [1]")
    parser.add_argument("--liveness-timeout", type=float, default=None,
                        help="Central's --liveness-timeout [the larger of 10 and 3 x --liveness-interval]")
    parser.add_argument("--scrypt-cost", type=int, default=security.SCRYPT_N,
                        help="the scrypt cost (N) of the fleet's verifiers, registered by the generator only: a "
                        "lower one makes 10,000 logins feasible on one machine (each CP still logs in with the full "
                        "protocol; Central takes the cost from the stored verifier). Never a setting for real CPs: "
                        f"EV_Registry always uses {security.SCRYPT_N} [{security.SCRYPT_N}]")
    parser.add_argument("--backlog", type=int, default=0, help="listen backlog of Central's CP endpoint (0: Twisted's default, 50)")
    parser.add_argument("--kafka", metavar="BOOTSTRAP",
                        help="run Central with --kafka and send the simulated Engines' TELEM and STOP through "
                        "Kafka (as evengine --kafka does); drivers stay in-band, so the telemetry latency is "
                        "Engine -> Kafka -> Central -> driver")
    parser.add_argument("--kafka-prefix", type=kafka_prefix, default="", metavar="PREFIX",
                        help="Central's and the simulated Engines' --kafka-prefix (topics and consumer groups "
                        "under PREFIX., to share a cluster with other networks) [none]")
    parser.add_argument("--ocpp", action="store_true",
                        help="the CPs are OCPP 1.6J charge points on Central's --ocpp listener (WebSocket, Basic "
                        "auth; benchmarks/loadgen_ocpp.py) instead of evnet Monitors; scenarios idle and charge")
    parser.add_argument("--ocpp-heartbeat", type=int, default=1, metavar="SECONDS",
                        help="--ocpp: Central's --ocpp-heartbeat, the interval the CPs send Heartbeat at [1]")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (Central's log and DB)")
    parser.add_argument("--json-out", help="write the results as JSON to this file")
    parser.add_argument("--py-spy", metavar="FILE",
                        help="record Central with py-spy during the run (FILE.svg: a flame graph; any other name: "
                        "py-spy's raw collapsed stacks); needs py-spy in the venv")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--register", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        run_worker(args.worker)
        return 0
    if args.register:
        register_fleet(args.register)
        return 0
    if args.liveness_timeout is None:
        args.liveness_timeout = max(10.0, 3 * args.liveness_interval)
    args.scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    known = {"idle", "charge", "fault", "storm", "flood", "echo"}
    bad = [s for s in args.scenarios if s not in known]
    if bad:
        parser.error(f"unknown scenario(s) {', '.join(bad)}; choose from {', '.join(sorted(known))}")
    if "echo" in args.scenarios and len(args.scenarios) > 1:
        parser.error("echo runs alone (it starts the echo server, not Central)")
    if args.charges > args.cps:
        parser.error("--charges cannot exceed --cps (each charge needs its own CP)")
    if args.faults > args.charges and "fault" in args.scenarios:
        parser.error("--faults cannot exceed --charges (the faulted CPs are charging ones)")
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    if args.ocpp and set(args.scenarios) - {"idle", "charge"}:
        parser.error("--ocpp runs the scenarios idle and charge only")
    if args.ocpp and args.kafka:
        parser.error("--ocpp and --kafka do not go together (an OCPP CP has no Engine on Kafka)")
    limit = raise_fd_limit()
    need = args.cps + args.charges + 200
    if limit < need:
        parser.error(f"the open-files hard limit is {limit}; {need} are needed (ulimit -Hn)")

    tmp = Path(tempfile.mkdtemp(prefix="evnet-loadgen-"))
    log = tmp / "server.log"
    cp_port, driver_port = free_port(), free_port()
    ocpp_port = free_port() if args.ocpp else None
    echo = args.scenarios == ["echo"]
    backlog = f":backlog={args.backlog}" if args.backlog else ""
    if echo:
        argv_server = [sys.executable, str(HERE / "echo_server.py"), "--listen", f"tcp:{cp_port}:interface=127.0.0.1{backlog}"]
        if args.echo_writes == "eager":
            argv_server.append("--eager")
        args.cps = args.charges = 0
    else:
        argv_server = [
            str(BIN / "twistd"), "-n", "--pidfile=", "--logfile=-", "evcentral",
            "--listen", f"tcp:{cp_port}:interface=127.0.0.1{backlog}",
            "--drivers", f"tcp:{driver_port}:interface=127.0.0.1{backlog}",
            "--db", f"sqlite:{tmp / 'evcentral.db'}", "--http", "none",
            "--liveness-interval", f"{args.liveness_interval:g}",
            "--liveness-timeout", f"{args.liveness_timeout:g}",
            # Every simulated CP logs in from 127.0.0.1: the per-address lockout would lock them all out.
            "--login-failures", "0",
        ]
        if args.ocpp:
            argv_server += ["--ocpp", f"tcp:{ocpp_port}:interface=127.0.0.1{backlog}",
                            "--ocpp-heartbeat", str(args.ocpp_heartbeat)]
        if args.kafka:
            argv_server += ["--kafka", args.kafka, "--kafka-group", f"loadgen-{int(time.time())}",
                            "--kafka-prefix", args.kafka_prefix]
    secrets_file = tmp / "secrets.json"
    fd = os.open(secrets_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({f"CP{i:05d}": security.new_secret() for i in range(args.cps)}, f)
    registration = None
    if args.cps:
        print(f"loadgen: registering {args.cps} CPs in {tmp / 'evcentral.db'} (RegistryStore) ...", flush=True)
        t0 = now()
        out = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), "--register",
             json.dumps({"db": f"sqlite:{tmp / 'evcentral.db'}", "secrets": str(secrets_file),
                         "scrypt_cost": args.scrypt_cost})],
            check=True, stdout=subprocess.PIPE, text=True,
        ).stdout
        registration = json.loads(out.strip().splitlines()[-1])
        registration["secs"] = round(now() - t0, 2)
        print(f"loadgen: registered: {json.dumps(registration)}", flush=True)
    print(f"loadgen: starting {' '.join(argv_server)}", flush=True)
    server = start_server(argv_server, tmp, log)
    spy = None
    results = None
    try:
        wait_for_server(cp_port, server, 30, log)
        if not echo:
            wait_for_server(driver_port, server, 30, log)
        if ocpp_port:
            wait_for_server(ocpp_port, server, 30, log)
        if args.py_spy:
            fmt = ["--format", "raw"] if not args.py_spy.endswith(".svg") else []
            spy = subprocess.Popen([str(BIN / "py-spy"), "record", "--pid", str(server.pid), "-o", args.py_spy,
                                    "--rate", "50", "--nonblocking", "--threads", *fmt],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        master = (EchoMaster if echo else Master)(args, server.pid, cp_port, driver_port)
        master.results["config"] = {k: v for k, v in vars(args).items() if k != "worker"}
        master.results["server_argv"] = argv_server
        master.results["registration"] = registration
        master.secrets_file = secrets_file
        master.ocpp_port = ocpp_port
        master.results["machine"] = {"nproc": os.cpu_count(), "loadavg_start": loadavg()}
        outcome = {}

        def done(_):
            outcome["ok"] = True

        def failed(f):
            outcome["failure"] = f.getTraceback()

        reactor.callWhenRunning(lambda: master.run().addCallbacks(done, failed).addBoth(lambda _: reactor.stop()))
        reactor.run()
        results = master.results
        if "failure" in outcome:
            print(outcome["failure"], file=sys.stderr)
            results["failure"] = outcome["failure"]
    finally:
        if spy is not None and spy.poll() is None:
            spy.send_signal(signal.SIGINT)
            try:
                spy.wait(60)
            except subprocess.TimeoutExpired:
                spy.kill()
        code = stop_server(server)
        if results is not None:
            results["server_exit"] = code
            results["server_log"] = scan_log(log)
            results["machine"]["loadavg_end"] = loadavg()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"loadgen: kept {tmp}")
    print()
    print(table(results))
    print(f"server log: {json.dumps(results['server_log'])}")
    if results.get("registration"):
        print(f"registration: {json.dumps(results['registration'])}")
    for ph in results["phases"]:
        if ph.get("login_ms"):
            print(f"{ph['phase']}: logins (link made -> KEY) ms {json.dumps(ph['login_ms'])}, "
                  f"generator scrypt {ph['generator_scrypt_secs']} s")
        for _, label in OCPP_FIGURES:
            if ph.get(label + "_ms"):
                print(f"{ph['phase']}: OCPP {label} ms {json.dumps(ph[label + '_ms'])}")
    for ph in results["phases"]:
        if ph.get("workers") and ph["phase"] not in ("connect",):
            print(f"{ph['phase']}: " + json.dumps(ph["workers"]))
        if ph["error_samples"]:
            print(f"{ph['phase']} errors: {ph['error_samples']}")
    if "final_stop" in results:
        print("final stop: " + json.dumps(results["final_stop"]))
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(results, f, indent=1)
        print(f"loadgen: results written to {args.json_out}")
    return 1 if "failure" in results else 0


if __name__ == "__main__":
    sys.exit(main())
