"""
Fakes for the OCPP adapter's unit tests: a WebSocket connection that keeps
what the station sends, the transactions table in memory, and a World of
Central's rules (MemoryStore, task.Clock) with OCPP stations and evnet
drivers on fake links.
"""

from __future__ import annotations

import itertools
import json

from twisted.internet import defer
from twisted.internet.task import Clock

from evnet.central.ocpp.station import Station
from evnet.central.ocpp.transactions import Transaction
from evnet.central.rules import Central
from evnet.central.service import CentralService
from evnet.central.links import DriverLinks
from tests.fakes import MemoryStore, Peer

START = "2026-01-01T10:00:00Z"


def at(seconds: float) -> str:
    """START + C{seconds}, as OCPP's dateTime."""
    whole = int(seconds)
    ms = int(round((seconds - whole) * 1000))
    return f"2026-01-01T10:{whole // 60:02d}:{whole % 60:02d}.{ms:03d}Z"


class FakeConnection:
    def __init__(self):
        self.sent = []  # decoded JSON frames
        self.pings = 0
        self.closed = None

    def send_text(self, text):
        self.sent.append(json.loads(text))

    def send_ping(self):
        self.pings += 1

    def close(self, reason):
        self.closed = reason

    def take(self):
        got, self.sent = self.sent, []
        return got


class MemoryTransactions:
    """The TransactionStore's interface over a dict (held like MemoryStore when C{fail})."""

    def __init__(self):
        self.rows: dict[int, Transaction] = {}
        self.fail = False

    def _result(self, value):
        return defer.fail(RuntimeError("database down")) if self.fail else defer.succeed(value)

    def open(self, cp_id, session_id, meter_start, started_at, price, target_kwh):
        for tx in self.rows.values():
            if session_id is not None and tx.session_id == session_id:
                return self._result(tx)
        tid = max(self.rows, default=0) + 1
        tx = Transaction(tid, cp_id, session_id, meter_start, started_at, price, target_kwh)
        if not self.fail:
            self.rows[tid] = tx
        return self._result(tx)

    def get(self, transaction_id):
        return self._result(self.rows.get(transaction_id))

    def of_session(self, session_id):
        return self._result(next((t for t in self.rows.values() if t.session_id == session_id), None))

    def stopped(self, transaction_id, when):
        if transaction_id in self.rows and self.rows[transaction_id].stopped_at is None:
            self.rows[transaction_id].stopped_at = when
        return self._result(None)


class Cp:
    """One OCPP charge point on a fake connection: C{call} sends a CALL and returns the answer frame."""

    _ids = itertools.count(1)

    def __init__(self, world, cp_id="CP01", location="Calle OCPP", price=0.4):
        self.world = world
        self.cp_id = cp_id
        self.connection = FakeConnection()
        registration = {"cp_id": cp_id, "location": location, "price": price, "verifier": "v", "status": "registered"}
        self.station = Station(world.central, registration, world.transactions, self.connection, world.clock,
                               "127.0.0.1:5555", heartbeat=30, wall_clock=world.clock.seconds)
        self.held = []  # frames from Central that a call() read past
        self.station.opened()

    def raw(self, text):
        self.station.text_received(text)
        return self.connection.take()

    def call(self, action, payload):
        uid = f"u{next(self._ids)}"
        frames = self.raw(json.dumps([2, uid, action, payload]))
        answers = [f for f in frames if f[0] != 2 and f[1] == uid]
        self.held += [f for f in frames if f not in answers]
        assert len(answers) == 1, answers
        return answers[0]

    def ok(self, action, payload):
        frame = self.call(action, payload)
        assert frame[0] == 3, frame
        return frame[2]

    def calls(self, action=None):
        """CALLs Central sent, not answered yet (taken)."""
        got, self.held = [f for f in self.held + self.connection.take() if f[0] == 2], []
        return [f for f in got if action is None or f[2] == action]

    def answer(self, frame, payload):
        self.station.text_received(json.dumps([3, frame[1], payload]))

    def boot(self):
        return self.ok("BootNotification", {"chargePointVendor": "V", "chargePointModel": "M"})

    def status(self, status, connector=1, error="NoError"):
        return self.ok("StatusNotification", {"connectorId": connector, "errorCode": error, "status": status})

    def start(self, id_tag="D1", meter=1000, when=START):
        return self.call("StartTransaction", {"connectorId": 1, "idTag": id_tag, "meterStart": meter, "timestamp": when})

    def meter(self, tid, wh, seconds, w=11000):
        sample = {"timestamp": at(seconds), "sampledValue": [
            {"value": str(wh), "measurand": "Energy.Active.Import.Register", "unit": "Wh"},
            {"value": str(w), "measurand": "Power.Active.Import", "unit": "W"}]}
        return self.ok("MeterValues", {"connectorId": 1, "transactionId": tid, "meterValue": [sample]})

    def stop(self, tid, wh, seconds, reason=None, **more):
        payload = {"meterStop": wh, "timestamp": at(seconds), "transactionId": tid, **more}
        if reason:
            payload["reason"] = reason
        return self.ok("StopTransaction", payload)

    def lose(self, why="connection lost"):
        self.station.connection_lost(why)


class World:
    """Central's rules and service on a fake clock and store, with OCPP CPs and evnet drivers."""

    def __init__(self, store=None):
        self.clock = Clock()
        self.clock.advance(1767261600)  # START, so the wall clock and the CPs' times agree
        self.store = store or MemoryStore(now=self.clock.seconds)
        self.central = Central(self.store, self.clock, wall_clock=self.clock.seconds)
        self.service = CentralService(self.central)
        self.service.startService()
        self.transactions = MemoryTransactions()
        self.driver_links = DriverLinks(self.central)

    def cp(self, cp_id="CP01", boot=True, **kwargs):
        cp = Cp(self, cp_id, **kwargs)
        if boot:
            cp.boot()
            cp.status("Available")
        return cp

    def driver(self, driver_id="D1"):
        from evnet.protocols import messages as m

        peer = Peer(self.driver_links, self.clock)
        peer.send(m.Driver(driver_id))
        peer.take()
        return peer

    def state(self, cp_id="CP01"):
        return self.central.cps[cp_id].state.value
