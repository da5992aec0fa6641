"""
What Central says to an OCPP charge point, as OCPP CALLs: the evnet side
of L{evnet.central.ocpp.station.Station} (a mixin: it uses the station's
state).

- START: RemoteStartTransaction on connector 1 with the driver's id as
  idTag (a START that answers the CP's own StartTransaction needs none);
  refused, the session ends (``busy``).
- PARAR: RemoteStopTransaction of a running transaction, then
  ChangeAvailability Inoperative for the whole CP (connector 0).
- REANUDAR: ChangeAvailability Operative.
- TICKET: the session is closed at Central; a transaction still running
  for it is stopped (RemoteStopTransaction).
- What has no OCPP counterpart (ACCEPTED, AUTHORIZED, DENIED, NOTICE…)
  is nothing to do for the CP.

Plus the operator's OCPP-only commands: Reset and TriggerMessage.
"""

from __future__ import annotations

from typing import Any, Optional

from twisted.internet import defer
from twisted.python.failure import Failure

from evnet.protocols import messages as m
from evnet.protocols.vocabulary import REASON_BUSY, REASON_CLOSED, REASON_PARAR

# Messages with no OCPP counterpart: what they tell, the CP does not need.
NOTHING_TO_SAY = (m.Accepted, m.Refused, m.Authorized, m.Denied, m.Notice)
CONNECTOR = 1  # an evnet CP is one connector: remote starts go to connector 1


class Commands:
    """Central -> CP.  Needs the station's C{calls}, C{cp_id}, C{starts}, C{running}, C{stop_asked}..."""

    def sendMessage(self, msg: Any) -> defer.Deferred:
        """Say C{msg} to the CP; fires once the CP answered the CALL(s) it became."""
        if not self.is_open:
            return defer.fail(ConnectionError(f"the OCPP connection of CP {self.cp_id} is closed"))
        if isinstance(msg, m.Start):
            return self._start(msg)
        if isinstance(msg, m.Parar):
            self.out_of_order = True
            stops = [self.remote_stop(tx, REASON_PARAR) for tx in list(self.running.values())]
            return defer.gatherResults(stops + [self._availability("Inoperative")], consumeErrors=True)
        if isinstance(msg, m.Reanudar):
            self.out_of_order = False
            return self._availability("Operative")
        if isinstance(msg, m.Ticket):
            return self._session_closed(msg.session_id)
        if not isinstance(msg, NOTHING_TO_SAY):
            self.log.warn("CP {cp}: {code} has no OCPP counterpart: not sent", cp=self.cp_id, code=msg.code)
        return defer.succeed(None)

    def send(self, msg: Any) -> None:
        self.sendMessage(msg).addErrback(self._not_sent, msg.code)

    def _not_sent(self, failure: Failure, what: str) -> None:
        if isinstance(failure.value, defer.FirstError):
            failure = failure.value.subFailure
        self.log.warn("CP {cp}: {what} not done: {why}", cp=self.cp_id, what=what, why=failure.getErrorMessage())

    def call(self, action: str, payload: dict) -> defer.Deferred:
        """One CALL to the CP (queued behind the one it has not answered yet)."""
        return self.calls.call(action, payload)

    # -- START -------------------------------------------------------------------

    def _start(self, start: m.Start) -> defer.Deferred:
        self.starts[start.driver_id] = start
        if start.driver_id == self.local_start:
            return defer.succeed(None)  # the CP asked (StartTransaction): it answers that
        d = self.call("RemoteStartTransaction", {"connectorId": CONNECTOR, "idTag": start.driver_id})

        def answered(result: dict) -> None:
            if result["status"] != "Accepted":
                raise ConnectionRefusedError(f"the CP answered {result['status']}")
            self.log.info("CP {cp}: remote start of session {sid} accepted", cp=self.cp_id, sid=start.session_id)

        def refused(failure: Failure) -> Failure:
            if self.starts.get(start.driver_id) is start:
                del self.starts[start.driver_id]
                self.log.warn("CP {cp}: remote start of session {sid} failed ({why}): it ends", cp=self.cp_id,
                              sid=start.session_id, why=failure.getErrorMessage())
                self.central.cp_report(self.cp_id, m.Stop(self.cp_id, start.session_id, 0, 0.0, 0.0, 0, REASON_BUSY))
            return failure

        return d.addCallback(answered).addErrback(refused)

    # -- stopping ------------------------------------------------------------------

    def remote_stop(self, tx: Any, reason: str) -> defer.Deferred:
        """Ask the CP to stop transaction C{tx}, because of C{reason} (evnet's word, kept for its STOP)."""
        if tx.transaction_id in self.stop_asked:
            return defer.succeed(None)
        self.stop_asked[tx.transaction_id] = reason
        d = self.call("RemoteStopTransaction", {"transactionId": tx.transaction_id})

        def answered(result: dict) -> None:
            if result["status"] != "Accepted":
                self.stop_asked.pop(tx.transaction_id, None)
                raise ConnectionRefusedError(f"RemoteStopTransaction {tx.transaction_id}: the CP answered {result['status']}")

        return d.addCallback(answered)

    def _session_closed(self, session_id: str) -> defer.Deferred:
        self.ended.add(session_id)
        for driver_id, start in list(self.starts.items()):
            if start.session_id == session_id:
                del self.starts[driver_id]  # it ended before the vehicle came
        running = [tx for tx in self.running.values() if tx.session_id == session_id]
        return self.remote_stop(running[0], REASON_CLOSED) if running else defer.succeed(None)

    def _availability(self, kind: str) -> defer.Deferred:
        d = self.call("ChangeAvailability", {"connectorId": 0, "type": kind})

        def answered(result: dict) -> None:
            self.log.info("CP {cp}: ChangeAvailability {kind}: {status}", cp=self.cp_id, kind=kind,
                          status=result["status"])
            if result["status"] == "Rejected":
                raise ConnectionRefusedError(f"ChangeAvailability {kind}: the CP answered Rejected")

        return d.addCallback(answered)

    # -- the operator's OCPP commands ---------------------------------------------

    def reset(self, kind: str = "Soft") -> defer.Deferred:
        """Reset the CP (Soft or Hard); fires with its answer's status."""
        return self.call("Reset", {"type": kind}).addCallback(lambda result: result["status"])

    def trigger(self, message: str, connector: Optional[int] = None) -> defer.Deferred:
        """TriggerMessage C{message} (BootNotification, Heartbeat, MeterValues, StatusNotification…)."""
        payload: dict = {"requestedMessage": message}
        if connector is not None:
            payload["connectorId"] = connector
        return self.call("TriggerMessage", payload).addCallback(lambda result: result["status"])
