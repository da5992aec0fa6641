"""
One OCPP 1.6J charge point's conversation with Central.

L{Station} is an L{evnet.protocols.channel.IChannel}: Central sends it evnet
messages as to any CP (START, PARAR, REANUDAR, TICKET…) and it makes them
OCPP CALLs (L{evnet.central.ocpp.commands}); the CP's CALLs become evnet
reports for the rules' one dispatch, C{Central.cp_report} (STATUS, AVR,
RCV, TELEM, STOP), or a request, C{Central.request}.  The rules never learn
that the CP speaks OCPP.

The conversation's states: CONNECTED (authenticated at the handshake; only
BootNotification is accepted from a CP Central has never seen), ATTACHED
(Central's channel of the CP: every call handled), CLOSED.  A CP Central
already knows is attached as soon as its WebSocket opens (OCPP CPs do not
boot again when they reconnect) and asked for its status.

Every CALL gets an answer: its CALLRESULT, or the CALLERROR that says what
is wrong with it (L{evnet.central.ocpp.codec}); a handler that fails
unexpectedly answers InternalError and is logged, never crashes the link.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Optional

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from evnet.central.model import ORIGIN_CP
from evnet.central.ocpp import codec, mapping
from evnet.central.ocpp.calls import OutgoingCalls
from evnet.central.ocpp.commands import CONNECTOR, Commands
from evnet.central.ocpp.transactions import Transaction
from evnet.protocols import messages as m
from evnet.protocols.channel import IChannel
from evnet.protocols.vocabulary import REASON_CLOSED, REASON_TARGET, REASON_UNPLUG, valid_id

HEARTBEAT_INTERVAL = 60  # seconds, told to the CP in BootNotification's answer
ACKNOWLEDGED = ("DiagnosticsStatusNotification", "FirmwareStatusNotification")  # answered {} and logged


class IConnection:
    """What a Station needs of its WebSocket (the server's protocol, or a test's fake)."""

    def send_text(self, text: str) -> None: ...

    def send_ping(self) -> None: ...

    def close(self, reason: str) -> None: ...


@implementer(IChannel)
class Station(Commands):
    log = Logger()
    confirms_receipt = True  # sendMessage fires once the CP answered the CALL the message became
    max_data = 65536

    def __init__(
        self,
        central: Any,
        registration: dict,
        transactions: Any,
        connection: IConnection,
        clock: IReactorTime,
        peer_name: str,
        *,
        heartbeat: int = HEARTBEAT_INTERVAL,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.central = central
        self.registration = registration
        self.cp_id: str = registration["cp_id"]
        self.store = transactions
        self.connection = connection
        self.clock = clock
        self.peer_name = f"OCPP {peer_name}"
        self.heartbeat = heartbeat
        self.now = wall_clock
        self.context: dict = {"cp_id": self.cp_id, "ocpp": True}
        self.is_open = True
        self.attached = False
        self.calls = OutgoingCalls(connection.send_text, clock, self.cp_id)
        self.faults: dict[int, str] = {}  # connector -> why it is out of use (Faulted, or Unavailable unasked)
        self.out_of_order = False  # Central stopped the CP (PARAR): Unavailable is expected
        self.starts: dict[str, m.Start] = {}  # driver id -> START not yet a transaction
        self.preparing: set[str] = set()  # drivers whose remote start the CP took up (Preparing)
        self.running: dict[int, Transaction] = {}  # transactions the CP has not stopped
        self.stop_asked: dict[int, str] = {}  # transaction -> why Central asked RemoteStopTransaction
        self.ended: set[str] = set()  # sessions Central has closed (their TICKET came)
        self.local_start: Optional[str] = None  # idTag of a StartTransaction Central is deciding on

    @property
    def pending(self) -> int:
        return self.calls.pending

    # -- the connection ----------------------------------------------------------

    def opened(self) -> None:
        """The WebSocket is open: a CP Central knows is attached now (a reconnection)."""
        if self.cp_id in self.central.cps and self.attach():
            self.trigger("StatusNotification").addErrback(self._not_sent, "TriggerMessage StatusNotification")

    def attach(self) -> bool:
        """Become Central's channel of the CP, with the Registry's location and price."""
        if self.attached:
            return True
        cp = self.central.cp_registered(self.registration)
        if cp.link is not None and cp.link is not self:
            self.log.warn("CP {cp}: already connected from {peer}: this OCPP connection is not used",
                          cp=self.cp_id, peer=cp.link.peer_name)
            return False
        if not cp.machine.engine_ok:
            self.faults[0] = "a fault reported before"  # until a status says otherwise
        self.attached = True
        self.central.cp_logged_in(cp, self, lambda state: None)
        if cp.session is not None:
            self._resume(cp.session)
        return True

    def _resume(self, session: Any) -> None:
        """A charge open at Central when the CP comes back: its transaction, or the start it waits for."""

        def found(tx: Optional[Transaction]) -> None:
            if tx is None:
                self.starts[session.driver_id] = m.Start(
                    self.cp_id, session.id, session.driver_id, session.price, session.target_kwh)
            elif tx.stopped_at is None:
                self.running[tx.transaction_id] = tx
                self.trigger("MeterValues", CONNECTOR).addErrback(self._not_sent, "TriggerMessage MeterValues")

        self.store.of_session(session.id).addCallbacks(found, self._db_error, errbackArgs=("finding a transaction",))

    def text_received(self, text: Any) -> None:
        """One WebSocket message from the CP."""
        try:
            frame = codec.parse(text)
        except codec.OcppError as e:
            self.log.warn("CP {cp}: {why}: answered {code}", cp=self.cp_id, why=e.description, code=e.code)
            self.connection.send_text(e.frame())
            return
        if isinstance(frame, codec.Call):
            self._answer(frame)
        else:
            self.alive()
            self.calls.answered(frame)

    def pong(self) -> None:
        self.alive()

    def tick(self) -> None:
        """Called every liveness interval: ask the CP for a sign of life (a WebSocket ping)."""
        if self.is_open:
            self.connection.send_ping()

    def alive(self) -> None:
        """A sign of life from the CP: Central hears STATUS (KO while a connector is out of use)."""
        if self.attached and self.is_open:
            self.central.cp_report(self.cp_id, m.Status(self.cp_id, m.ENGINE_KO if self.faults else m.ENGINE_OK))

    def connection_lost(self, why: str) -> None:
        self.is_open = False
        self.calls.close(why)
        if self.attached:
            self.attached = False
            cp = self.central.cps.get(self.cp_id)
            if cp is not None and cp.link is self:
                self.central.cp_offline(cp, f"CP {cp.id} DESCONECTADO: OCPP connection lost ({why})")

    def close(self) -> None:
        if self.is_open:
            self.connection.close("closed by Central")

    # -- the CP's calls --------------------------------------------------------

    def _answer(self, call: codec.Call) -> None:
        d = defer.maybeDeferred(self._handle, call)
        d.addCallback(self._result, call)
        d.addErrback(self._error, call)

    def _handle(self, call: codec.Call) -> Any:
        handler = HANDLERS.get(call.action)
        if handler is None and call.action not in ACKNOWLEDGED:
            if call.action in codec.actions():  # an OCPP 1.6 action, not one a CP sends to Central here
                raise codec.OcppError(codec.NOT_SUPPORTED, f"{call.action} is not supported by EV_Central", call.unique_id)
            shown = call.action if len(call.action) <= 40 else call.action[:40] + "…"
            raise codec.OcppError(codec.NOT_IMPLEMENTED, f"{shown!r} is not an OCPP 1.6 action", call.unique_id)
        codec.validate_request(call.action, call.payload, call.unique_id)
        if not self.attached and call.action != "BootNotification":
            raise codec.OcppError(codec.SECURITY_ERROR, "BootNotification first: the CP is not accepted yet",
                                  call.unique_id)
        self.alive()
        if handler is None:
            self.log.info("CP {cp}: {action}: {payload}", cp=self.cp_id, action=call.action, payload=call.payload)
            return {}
        return handler(self, call.payload, call.unique_id)

    def _result(self, payload: dict, call: codec.Call) -> None:
        codec.validate_response(call.action, payload, call.unique_id)  # ours: a failure is a bug, InternalError
        if self.is_open:
            self.connection.send_text(codec.encode_result(call.unique_id, payload))

    def _error(self, failure: Failure, call: codec.Call) -> None:
        if failure.check(codec.OcppError):
            error = failure.value
            self.log.warn("CP {cp}: {action}: {why}: answered {code}", cp=self.cp_id, action=call.action,
                          why=error.description, code=error.code)
        else:
            self.log.failure("CP {cp}: {action} failed", failure, cp=self.cp_id, action=call.action)
            error = codec.OcppError(codec.INTERNAL_ERROR, f"{call.action} could not be handled", call.unique_id)
        if self.is_open:
            self.connection.send_text(codec.encode_error(call.unique_id, error.code, error.description, error.details))

    def on_boot(self, payload: dict, uid: str) -> dict:
        accepted = self.attach()
        self.log.info("CP {cp}: BootNotification ({vendor} {model}): {status}", cp=self.cp_id,
                      vendor=payload["chargePointVendor"], model=payload["chargePointModel"],
                      status="Accepted" if accepted else "Rejected")
        return {"status": "Accepted" if accepted else "Rejected", "currentTime": mapping.now_text(self.now()),
                "interval": self.heartbeat}

    def on_heartbeat(self, payload: dict, uid: str) -> dict:
        return {"currentTime": mapping.now_text(self.now())}

    def on_status(self, payload: dict, uid: str) -> dict:
        connector, status = payload["connectorId"], payload["status"]
        was_faulted = bool(self.faults)
        if mapping.is_fault(status, self.out_of_order):
            self.faults[connector] = mapping.fault_reason(payload)
        else:
            self.faults.pop(connector, None)
            if connector == 0:
                self.faults.clear()  # the whole CP is fine
        if self.faults and not was_faulted:
            self.central.cp_report(self.cp_id, m.Avr(self.cp_id, self.faults[connector]))
        elif was_faulted and not self.faults:
            self.central.cp_report(self.cp_id, m.Rcv(self.cp_id))
        if status == mapping.PREPARING:
            self.preparing.update(self.starts)
        elif status == mapping.AVAILABLE and connector != 0:
            self._abandoned_starts()
        return {}

    def _abandoned_starts(self) -> None:
        """Available again after Preparing, no transaction: the vehicle never came (the CP's ConnectionTimeOut)."""
        for driver_id in [d for d in self.starts if d in self.preparing]:
            start = self.starts.pop(driver_id)
            self.preparing.discard(driver_id)
            self.log.info("CP {cp}: no vehicle for session {sid}: it ends", cp=self.cp_id, sid=start.session_id)
            self.central.cp_report(self.cp_id, m.Stop(self.cp_id, start.session_id, 0, 0.0, 0.0, 0, REASON_UNPLUG))

    def _id_status(self, id_tag: str) -> str:
        if not valid_id(id_tag):
            return "Invalid"
        session = self.central.driver_sessions.get(id_tag)
        return "ConcurrentTx" if session is not None and session.cp_id != self.cp_id else "Accepted"

    def on_authorize(self, payload: dict, uid: str) -> dict:
        return {"idTagInfo": {"status": self._id_status(payload["idTag"])}}

    def on_start(self, payload: dict, uid: str) -> Any:
        at = mapping.timestamp(payload["timestamp"], uid, "timestamp")
        id_tag, meter = payload["idTag"], float(payload["meterStart"])
        start = self.starts.pop(id_tag, None)
        if start is not None:
            return self._open(start, meter, at, uid)
        if not valid_id(id_tag) or self.local_start is not None:
            return self._refuse_start(meter, at, "Invalid" if not valid_id(id_tag) else "Blocked")
        self.local_start = id_tag  # the START Central sends now answers this, it needs no remote start

        def decided(answer: m.Message) -> Any:
            self.local_start = None
            start = self.starts.pop(id_tag, None)
            if isinstance(answer, m.Authorized) and start is not None:
                return self._open(start, meter, at, uid)
            self.log.info("CP {cp}: StartTransaction for {tag} refused: {why}", cp=self.cp_id, tag=id_tag,
                          why=getattr(answer, "reason", "no START"))
            status = self._id_status(id_tag)
            return self._refuse_start(meter, at, "Blocked" if status == "Accepted" else status)

        return self.central.request(id_tag, self.cp_id, 0.0, ORIGIN_CP).addCallback(decided)

    def _open(self, start: m.Start, meter: float, at: float, uid: str) -> defer.Deferred:
        self.preparing.discard(start.driver_id)

        def opened(tx: Transaction) -> dict:
            self.running[tx.transaction_id] = tx
            self._telemetry(tx, mapping.Reading(at, meter, 0.0))
            if start.session_id in self.ended:
                self.remote_stop(tx, REASON_CLOSED).addErrback(self._not_sent, "RemoteStopTransaction")
            return {"transactionId": tx.transaction_id, "idTagInfo": {"status": "Accepted"}}

        def not_stored(failure: Failure) -> None:
            self.starts.setdefault(start.driver_id, start)
            self._db_error(failure, "recording a transaction")
            raise codec.OcppError(codec.INTERNAL_ERROR, "Central could not record the transaction; try again", uid)

        d = self.store.open(self.cp_id, start.session_id, meter, at, start.price, start.target_kwh)
        return d.addCallbacks(opened, not_stored)

    def _refuse_start(self, meter: float, at: float, status: str) -> defer.Deferred:
        d = self.store.open(self.cp_id, None, meter, at, 0.0, 0.0)
        return d.addCallback(lambda tx: {"transactionId": tx.transaction_id, "idTagInfo": {"status": status}})

    def _transaction(self, transaction_id: int) -> defer.Deferred:
        """The CP's transaction (from memory, or the store after a restart), or None."""
        tx = self.running.get(transaction_id)
        if tx is not None:
            return defer.succeed(tx)

        def found(tx: Optional[Transaction]) -> Optional[Transaction]:
            if tx is None or tx.cp_id != self.cp_id:
                self.log.warn("CP {cp}: transaction {tid} is unknown here", cp=self.cp_id, tid=transaction_id)
                return None
            if tx.stopped_at is None:
                self.running[tx.transaction_id] = tx
            return tx

        return self.store.get(transaction_id).addCallback(found)

    def _telemetry(self, tx: Transaction, reading: mapping.Reading) -> None:
        if tx.session_id is None or reading.wh is None:
            return
        figures = mapping.figures(tx, reading.at, reading.wh)
        kw = max(0.0, (reading.w or 0.0) / 1000.0)
        self.central.cp_report(self.cp_id, m.Telem(self.cp_id, tx.session_id, figures.seq, figures.kwh, kw,
                                                   figures.euros, figures.seconds))
        if tx.target_kwh and figures.kwh >= tx.target_kwh and tx.transaction_id not in self.stop_asked:
            self.remote_stop(tx, REASON_TARGET).addErrback(self._not_sent, "RemoteStopTransaction")

    def on_meter_values(self, payload: dict, uid: str) -> Any:
        readings = [mapping.reading(mv, uid) for mv in payload["meterValue"]]
        if "transactionId" not in payload:
            return {}

        def report(tx: Optional[Transaction]) -> dict:
            for reading in readings if tx is not None else ():
                self._telemetry(tx, reading)
            return {}

        return self._transaction(payload["transactionId"]).addCallback(report)

    def on_stop(self, payload: dict, uid: str) -> Any:
        at = mapping.timestamp(payload["timestamp"], uid, "timestamp")
        readings = [mapping.reading(mv, uid) for mv in payload.get("transactionData", ())]
        tid, meter = payload["transactionId"], float(payload["meterStop"])
        answer = {"idTagInfo": {"status": "Accepted"}} if "idTag" in payload else {}

        def report(tx: Optional[Transaction]) -> dict:
            if tx is None:
                return answer
            for reading in readings:
                self._telemetry(tx, reading)
            self.running.pop(tid, None)
            reason = mapping.stop_reason(payload.get("reason"), self.stop_asked.pop(tid, None))
            if tx.session_id is not None:
                f = mapping.figures(tx, at, meter)
                self.central.cp_report(self.cp_id, m.Stop(self.cp_id, tx.session_id, f.seq, f.kwh, f.euros,
                                                          f.seconds, reason))
            self.store.stopped(tid, at).addErrback(self._db_error, "recording the end of a transaction")
            return answer

        return self._transaction(tid).addCallback(report)

    def on_data_transfer(self, payload: dict, uid: str) -> dict:
        self.log.info("CP {cp}: DataTransfer from vendor {vendor!r}: Rejected", cp=self.cp_id, vendor=payload["vendorId"])
        return {"status": "Rejected"}

    def _db_error(self, failure: Failure, doing: str) -> None:
        self.log.error("CP {cp}: database error while {doing}: {why}", cp=self.cp_id, doing=doing,
                       why=failure.getErrorMessage())


HANDLERS: dict[str, Callable[[Station, dict, str], Any]] = {
    "BootNotification": Station.on_boot,
    "Heartbeat": Station.on_heartbeat,
    "StatusNotification": Station.on_status,
    "Authorize": Station.on_authorize,
    "StartTransaction": Station.on_start,
    "MeterValues": Station.on_meter_values,
    "StopTransaction": Station.on_stop,
    "DataTransfer": Station.on_data_transfer,
}
