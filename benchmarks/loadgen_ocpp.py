"""
``loadgen.py --ocpp``: the simulated CPs are OCPP 1.6J charge points on
Central's ``--ocpp`` listener (docs/ocpp.md) instead of evnet Monitors.  The
drivers, the registration (RegistryStore: OCPP's Basic auth checks the same
verifiers), the workers, the phases and the table are loadgen.py's.

Each CP is a plain autobahn WebSocket client on the worker's one reactor
(subprotocol ``ocpp1.6``, ``Authorization: Basic`` with its secret) speaking
OCPP-J frames itself (json, one CALL in flight, as OCPP-J requires): no
asyncio loop, no ``ocpp`` library per CP, so a thousand fit in a process.
It sends BootNotification, then StatusNotification Available, Heartbeat at
the interval the boot's answer gave, answers Central's CALLs, and for a
driver's REQ: RemoteStartTransaction (Accepted) -> StatusNotification
Preparing -> StartTransaction -> Charging -> MeterValues every second;
``stop_charges`` ends each with StopTransaction (and Finishing, Available),
after which the driver gets its TICKET.

Figures on top of loadgen.py's: boot (TCP connect -> BootNotification
accepted: the WebSocket handshake with Central's scrypt check, then the
boot), the round trip of every CALL the CPs make (the table's RTT column),
REQ -> RemoteStartTransaction at the CP, StopTransaction -> the driver's
TICKET; the telemetry latency is MeterValues (or StartTransaction) sent ->
the driver's TELEM.
"""

from __future__ import annotations

import base64
import json
import time
from collections import deque

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet import reactor

import loadgen as lg
from evnet.protocols import messages as m

CALL, CALLRESULT, CALLERROR = 2, 3, 4
POWER_W = 11000.0


def stamp(t: float) -> tuple[str, int]:
    """OCPP's timestamp of wall-clock C{t} (milliseconds), and those milliseconds."""
    ms = int(t * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}Z", ms


class OcppLink(WebSocketClientProtocol):
    """The WebSocket of one simulated CP: text messages to and from its L{OcppCp}."""

    gone = False

    def onOpen(self) -> None:
        self.factory.cp.ws_open(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if not self.gone:
            self.factory.cp.ws_message(self, payload)

    def onClose(self, wasClean: bool, code, reason) -> None:
        self.gone = True
        self.factory.cp.ws_closed(self, code, reason)


class OcppCp:
    """One OCPP charge point as Central sees it (the part of L{lg.SimCp} the Sim's commands use)."""

    def __init__(self, sim: "OcppSim", idx: int) -> None:
        self.sim = sim
        self.idx = idx
        self.id = f"CP{idx:05d}"
        token = base64.b64encode(f"{self.id}:{sim.secrets[self.id]}".encode()).decode()
        self.factory = WebSocketClientFactory(f"ws://127.0.0.1:{sim.cfg['ocpp_port']}/ocpp/{self.id}",
                                              protocols=["ocpp1.6"], headers={"Authorization": f"Basic {token}"})
        self.factory.protocol = OcppLink
        self.factory.cp = self
        self.factory.noisy = False
        self.factory.setProtocolOptions(openHandshakeTimeout=120, closeHandshakeTimeout=1, utf8validateIncoming=False,
                                        autoPingInterval=0)
        self.link: OcppLink | None = None
        self.up = False
        self.boot_status = ""
        self.auth_state = ""
        self.interval = 60
        self.next_heartbeat = 0.0
        self.uid = 0
        self.inflight: tuple | None = None  # (uid, action, sent at, on_result)
        self.queue: deque = deque()
        self.tx: int | None = None
        self.session: str | None = None  # the driver's session (for the Sim's bookkeeping)
        self.id_tag: str | None = None
        self.wh = 1000.0
        self.start_ms = 0
        self.await_ticket: str | None = None  # a StopTransaction not yet answered
        self.t_connect = 0.0
        self.t_stop = 0.0
        self.expect_loss = False
        self.retries = 0

    # -- the connection ------------------------------------------------------------

    def connect(self) -> None:
        self.t_connect = lg.now()
        self.up = False
        d = self.sim.ocpp_endpoint.connect(self.factory)
        d.addErrback(self._connect_failed)

    def _connect_failed(self, failure) -> None:
        self.sim.connect_failures += 1
        self.retries += 1
        reactor.callLater(1.0, self.connect)

    def ws_open(self, link: OcppLink) -> None:
        self.link = link
        self.inflight, self.queue = None, deque()
        self.call("BootNotification", {"chargePointVendor": "evnet-loadgen", "chargePointModel": "Sim-OCPP"},
                  self.booted)

    def booted(self, result: dict) -> None:
        self.boot_status = result.get("status", "?")
        if self.boot_status != "Accepted":
            self.sim.error(f"{self.id}: BootNotification {self.boot_status}")
            return
        self.interval = int(result["interval"])
        self.next_heartbeat = lg.now() + self.interval - 0.1
        self.sim.boot_secs.append(lg.now() - self.t_connect)
        self.status("Available")
        self.up = True
        self.auth_state = "ACTIVADO"  # what an Available CP is at Central

    def ws_closed(self, link: OcppLink, code, reason) -> None:
        if link is not self.link and self.link is not None:
            return
        opened, self.link = self.link is not None, None
        self.up = False
        if self.expect_loss or self.sim.quitting:
            return
        if not opened:  # refused at the handshake (or it timed out): as a CP would, try again
            self.sim.handshake_failures += 1
            self.retries += 1
            if len(self.sim.error_samples) < 20:
                self.sim.error_samples.append(f"{self.id}: handshake failed ({code}): {reason}")
            reactor.callLater(1.0, self.connect)
            return
        self.sim.error(f"{self.id}: OCPP connection lost ({code}): {reason}")

    # -- OCPP-J frames ---------------------------------------------------------------

    def send_text(self, text: str) -> None:
        if self.link is not None and not self.link.gone:
            self.link.sendMessage(text.encode(), isBinary=False)

    def call(self, action: str, payload: dict, on_result=None, seq: int = 0) -> None:
        """
        A CALL to Central: sent now, or once the one in flight is answered
        (OCPP-J: one at a time).  C{seq}: the TELEM seq Central gives a
        reading of StartTransaction or MeterValues.
        """
        self.uid += 1
        item = (str(self.uid), action, payload, on_result, seq)
        if self.inflight is None:
            self._send_call(item)
        else:
            self.queue.append(item)
            if len(self.queue) > self.sim.max_queue:
                self.sim.max_queue = len(self.queue)

    def _send_call(self, item) -> None:
        uid, action, payload, on_result, seq = item
        self.inflight = (uid, action, lg.now(), on_result)
        self.send_text(json.dumps([CALL, uid, action, payload]))
        self.sim.frames_out += 1
        if seq:  # the driver's TELEM answers it
            self.sim.meter_sent.setdefault(self.id, deque()).append((seq, lg.now()))

    def ws_message(self, link: OcppLink, payload: bytes) -> None:
        sim = self.sim
        try:
            frame = json.loads(payload)
            kind = frame[0]
        except (ValueError, IndexError, KeyError, TypeError):
            sim.error(f"{self.id}: not an OCPP-J frame from Central: {payload[:80]!r}")
            return
        if kind == CALL:
            sim.frames_in += 1
            self.answer(frame[1], frame[2], frame[3])
            return
        if self.inflight is None or frame[1] != self.inflight[0]:
            sim.error(f"{self.id}: an answer to no CALL of ours: {payload[:80]!r}")
            return
        uid, action, sent, on_result = self.inflight
        self.inflight = None
        sim.frames_acked += 1
        sim.call_rtt.append(lg.now() - sent)
        if kind == CALLRESULT:
            if on_result is not None:
                on_result(frame[2])
        else:
            sim.error(f"{self.id}: {action}: CALLERROR {frame[2]}: {frame[3]}")
        if self.queue and self.inflight is None:
            self._send_call(self.queue.popleft())

    def answer(self, uid: str, action: str, payload: dict) -> None:
        """Central's CALL: its CALLRESULT (and what the CP does next)."""
        then = None
        if action == "RemoteStartTransaction":
            ok = self.up and self.tx is None and self.id_tag is None
            result = {"status": "Accepted" if ok else "Rejected"}
            if ok:
                self.id_tag = payload["idTag"]
                driver = self.sim.drivers_by_id.get(self.id_tag)
                if driver is not None and driver.t_req:
                    self.sim.remote_start_lat.append(lg.now() - driver.t_req)
                then = self.start_transaction
            else:
                self.sim.error(f"{self.id}: RemoteStartTransaction refused (busy)")
        elif action == "RemoteStopTransaction":
            ok = payload.get("transactionId") == self.tx
            result = {"status": "Accepted" if ok else "Rejected"}
            if ok:
                self.sim.remote_stops += 1
                then = lambda: self.stop_charge("Remote")  # noqa: E731
        elif action == "TriggerMessage":
            result = {"status": "Accepted"}
            if payload["requestedMessage"] == "StatusNotification":
                then = lambda: self.status("Charging" if self.tx else "Available")  # noqa: E731
        elif action in ("ChangeAvailability", "Reset"):
            result = {"status": "Accepted"}
            self.sim.other_in += 1
        else:
            self.send_text(json.dumps([CALLERROR, uid, "NotImplemented", f"{action} is not simulated", {}]))
            return
        self.send_text(json.dumps([CALLRESULT, uid, result]))
        if then is not None:
            then()

    # -- what the CP does ---------------------------------------------------------------

    def status(self, status: str) -> None:
        self.call("StatusNotification", {"connectorId": 1, "errorCode": "NoError", "status": status})

    def tick(self) -> None:
        """Once a second: Heartbeat when its interval is due; MeterValues while charging."""
        if not self.up:
            return
        t = lg.now()
        if t >= self.next_heartbeat:
            self.next_heartbeat = t + self.interval - 0.1  # the ticks are a second apart, give or take a little
            self.sim.heartbeats += 1
            self.call("Heartbeat", {})
        if self.tx is not None:
            self.wh += POWER_W / 3600.0
            at, ms = stamp(time.time())
            seq = ms - self.start_ms + 1  # Central's seq: milliseconds since the start + 1
            self.call("MeterValues", {"connectorId": 1, "transactionId": self.tx, "meterValue": [{
                "timestamp": at, "sampledValue": [
                    {"value": f"{self.wh:.1f}", "measurand": "Energy.Active.Import.Register", "unit": "Wh"},
                    {"value": f"{POWER_W:.0f}", "measurand": "Power.Active.Import", "unit": "W"}]}]}, seq=seq)

    def start_transaction(self) -> None:
        self.status("Preparing")
        at, self.start_ms = stamp(time.time())
        self.call("StartTransaction", {"connectorId": 1, "idTag": self.id_tag, "meterStart": int(self.wh),
                                       "timestamp": at}, self.started, seq=1)

    def started(self, result: dict) -> None:
        if result["idTagInfo"]["status"] != "Accepted":
            self.sim.error(f"{self.id}: StartTransaction {result['idTagInfo']['status']}")
            self.id_tag = None
            return
        self.tx = result["transactionId"]
        driver = self.sim.drivers_by_id.get(self.id_tag)
        self.session = driver.session if driver is not None else None
        self.sim.charging[self.id] = self
        self.status("Charging")

    def stop_charge(self, reason: str = "EVDisconnected", send: bool = True):
        """StopTransaction (the Sim's stop_charges); the session it ends, for the driver's TICKET."""
        if reason == "unplug":
            reason = "EVDisconnected"
        tx, self.tx = self.tx, None
        self.sim.charging.pop(self.id, None)
        driver = self.sim.drivers_by_id.get(self.id_tag)
        sid = driver.session if driver is not None else self.session
        self.session, self.id_tag = None, None
        if tx is None:
            return sid
        self.await_ticket = sid
        self.t_stop = lg.now()
        at, _ = stamp(time.time())
        self.wh += 1.0
        self.call("StopTransaction", {"transactionId": tx, "meterStop": int(self.wh), "timestamp": at,
                                      "reason": reason}, self.stopped)
        self.status("Finishing")
        self.status("Available")
        return sid

    def stopped(self, result: dict) -> None:
        self.await_ticket = None
        self.sim.cp_tickets += 1


class OcppSim(lg.Sim):
    """A worker whose CPs are L{OcppCp}s; the drivers are loadgen's, on Central's driver port."""

    cp_class = OcppCp

    def __init__(self, cfg: dict) -> None:
        self.ocpp_endpoint = lg.endpoints.clientFromString(
            reactor, f"tcp:host=127.0.0.1:port={cfg['ocpp_port']}:timeout=30")
        self.boot_secs: list[float] = []
        self.call_rtt: list[float] = []
        self.remote_start_lat: list[float] = []
        self.ticket_lat: list[float] = []
        self.meter_sent: dict[str, deque] = {}  # CP id -> (seq Central will give it, sent at), oldest first
        self.heartbeats = self.remote_stops = self.handshake_failures = 0
        super().__init__(cfg)
        self.drivers_by_id = {d.id: d for d in self.drivers}

    def telem_received(self, msg: m.Telem, t: float) -> None:
        """The driver's TELEM: the latency from the MeterValues whose seq it carries (older ones: superseded)."""
        sent = self.meter_sent.get(msg.cp_id)
        matched = None
        while sent and sent[0][0] <= msg.seq + 1:  # +1: Central's float milliseconds may round down
            if matched is not None:
                self.telem_superseded += 1
            matched = sent.popleft()
        if matched is None:
            self.telem_unknown += 1
        else:
            self.telem_lat.append(t - matched[1])

    def ticket_received(self, driver, msg: m.Ticket, t: float) -> None:
        cp = self.cps_by_id.get(driver.cp_id)
        if cp is not None and cp.t_stop:
            self.ticket_lat.append(t - cp.t_stop)
            cp.t_stop = 0.0

    def cmd_connect(self, cmd):
        def figures(result: dict) -> dict:
            result.pop("not_activado", None)
            result["not_accepted"] = sum(1 for cp in self.cps if cp.boot_status != "Accepted")
            result["handshake_failures"] = self.handshake_failures
            return result

        return super().cmd_connect(cmd).addCallback(figures)

    def cmd_stats(self, cmd):
        stale = lg.now() - 5.0
        for queue in self.meter_sent.values():
            while queue and queue[0][1] < stale:
                queue.popleft()
                self.telem_lost += 1
        out = super().cmd_stats(cmd)
        out.update(boot_secs=self.boot_secs, call_rtt=self.call_rtt, remote_start_lat=self.remote_start_lat,
                   ticket_lat=self.ticket_lat, heartbeats=self.heartbeats, remote_stops=self.remote_stops,
                   handshake_failures=self.handshake_failures)
        self.boot_secs, self.call_rtt, self.remote_start_lat, self.ticket_lat = [], [], [], []
        return out

    def cmd_quit(self, cmd):
        self.quitting = True
        for cp in self.cps:
            cp.expect_loss = True
            if cp.link is not None:
                cp.link.gone = True
                cp.link.dropConnection(abort=True)
                cp.link = None
        return super().cmd_quit(cmd)
