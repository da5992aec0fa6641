"""
The OCPP-J WebSocket server (autobahn on Twisted) and its service.

L{OcppProtocol} is a thin shell: the handshake asks the
L{evnet.central.ocpp.auth.Authenticator} (HTTP 401 when refused) and agrees
on the subprotocol ``ocpp1.6``; then every text message goes to the
connection's L{evnet.central.ocpp.station.Station}, and so do pongs and the
connection's end.  A second connection of the same CP replaces the first
(the CP knows better than Central that the old one is dead).

L{OcppService} owns the listener (L{evnet.endpoints.Listener}: a taken port
is one line), the thread the slow secret checks run on, the tables it
needs, and the loop that pings every CP once a liveness interval.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny
from twisted.application import service
from twisted.internet import defer, task, threads
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from evnet.central import audit
from evnet.central.ocpp import auth, codec
from evnet.central.ocpp.station import HEARTBEAT_INTERVAL, Station
from evnet.central.ocpp.transactions import TransactionStore
from evnet.endpoints import Listener

MAX_MESSAGE = 65536  # bytes: larger OCPP messages are refused (WebSocket close 1009)
CLOSE_NORMAL, CLOSE_PROTOCOL_ERROR = 1000, 1002
UNAUTHORIZED = 401


_log = Logger()


class OcppProtocol(WebSocketServerProtocol):
    # autobahn's own logger stays (``log``): its debug lines are not ours to print.
    station: Optional[Station] = None
    row: Optional[dict] = None

    def onConnect(self, request: Any) -> defer.Deferred:
        peer = self.transport.getPeer()
        self.peer_name = f"{getattr(peer, 'host', peer)}:{getattr(peer, 'port', '')}"
        d = self.factory.authenticator.authenticate(request.path, request.headers.get("authorization"), self.peer_name)

        def accepted(row: dict) -> Optional[str]:
            self.row = row
            self.factory.central.audit.record("cp", row["cp_id"], self.peer_name, "ocpp.login", audit.OK)
            return codec.SUBPROTOCOL if codec.SUBPROTOCOL in request.protocols else None

        def refused(failure: Any) -> None:
            failure.trap(auth.Refused)
            raise ConnectionDeny(UNAUTHORIZED, "Unauthorized")

        return d.addCallbacks(accepted, refused)

    def failHandshake(self, reason: str, code: int = 400, responseHeaders: Any = None) -> None:
        if code == UNAUTHORIZED and not responseHeaders:
            responseHeaders = [("WWW-Authenticate", 'Basic realm="EV_Central OCPP"')]
        super().failHandshake(reason, code, responseHeaders)

    def onOpen(self) -> None:
        if self.websocket_protocol_in_use != codec.SUBPROTOCOL:
            # OCPP-J 1.6 §3.1.2: complete the handshake without the header, then close.
            _log.warn("OCPP connection from {peer} did not offer {sub}: closed", peer=self.peer_name,
                          sub=codec.SUBPROTOCOL)
            self.sendCloseFrame(CLOSE_PROTOCOL_ERROR, f"the subprotocol {codec.SUBPROTOCOL} is required".encode())
            return
        self.station = self.factory.station_for(self.row, self, self.peer_name)
        self.station.opened()

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if self.station is not None:
            self.station.text_received(payload)

    def onPong(self, payload: bytes) -> None:
        if self.station is not None:
            self.station.pong()

    def onClose(self, wasClean: bool, code: Optional[int], reason: Optional[str]) -> None:
        station, self.station = self.station, None
        if station is not None:
            self.factory.forget(station)
            station.connection_lost(reason or (f"WebSocket closed ({code})" if code else "connection lost"))

    # -- what the station needs of its connection ---------------------------------

    def send_text(self, text: str) -> None:
        self.sendMessage(text.encode("utf-8"), isBinary=False)

    def send_ping(self) -> None:
        self.sendPing()

    def close(self, reason: str) -> None:
        self.sendClose(CLOSE_NORMAL, reason[:100])


class OcppFactory(WebSocketServerFactory):
    protocol = OcppProtocol

    def __init__(self, central: Any, authenticator: auth.Authenticator, transactions: Any, clock: Any, *,
                 heartbeat: int = HEARTBEAT_INTERVAL, open_timeout: float = 10.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.central = central
        self.authenticator = authenticator
        self.transactions = transactions
        self.clock = clock
        self.heartbeat = heartbeat
        self.server = "EV_Central"
        self.noisy = False
        self.stations: dict[str, Station] = {}
        self.setProtocolOptions(maxMessagePayloadSize=MAX_MESSAGE, maxFramePayloadSize=MAX_MESSAGE,
                                openHandshakeTimeout=open_timeout, closeHandshakeTimeout=open_timeout and 1.0,
                                webStatus=False)

    def station_for(self, row: dict, connection: OcppProtocol, peer_name: str) -> Station:
        cp_id = row["cp_id"]
        old = self.stations.pop(cp_id, None)
        if old is not None:
            old.connection_lost(f"replaced by a new connection from {peer_name}")
            old.connection.close("replaced by a new connection")
        station = Station(self.central, row, self.transactions, connection, self.clock, peer_name,
                          heartbeat=self.heartbeat)
        self.stations[cp_id] = station
        return station

    def forget(self, station: Station) -> None:
        if self.stations.get(station.cp_id) is station:
            del self.stations[station.cp_id]

    def tick(self) -> None:
        for station in list(self.stations.values()):
            station.tick()


class OcppService(service.MultiService):
    """``--ocpp``: the WebSocket listener, the secret checks' thread, the tables, the pings."""

    log = Logger()

    def __init__(self, central: Any, store: Any, endpoint: str, reactor: Any,
                 on_failure: Optional[Callable[[str], None]] = None, *, heartbeat: int = HEARTBEAT_INTERVAL) -> None:
        super().__init__()
        import txaio

        from evnet.registry.store import RegistryStore

        txaio.set_global_log_level("warn")  # autobahn's start-up dump of its options is not for the operator

        self.reactor = reactor
        self.store = store
        self.pool = ThreadPool(minthreads=0, maxthreads=2, name="evcentral-ocpp-auth")
        self.transactions = TransactionStore(store)
        registry = RegistryStore(store)
        authenticator = auth.Authenticator(registry.registration, self._slow_check, self._refused(central))
        self.factory = OcppFactory(central, authenticator, self.transactions, reactor, heartbeat=heartbeat,
                                   reactor=reactor)
        self.ping_interval = max(0.1, central.liveness_timeout / 3)
        self._pings = task.LoopingCall(self.factory.tick)
        self._pings.clock = reactor
        Listener("ocpp", endpoint, self.factory, reactor, on_failure).setServiceParent(self)

    @staticmethod
    def _refused(central: Any) -> Callable[[str, str, str, str], None]:
        def record(cp_id: str, text: str, peer: str, why: str) -> None:
            # One journal message and audit row per address and reason a minute.
            central.trust.refusals.record("refused", cp_id, text, (audit.split_address(peer)[0], "ocpp", why),
                                          audit.Note("cp", cp_id, peer, "ocpp.login", audit.REFUSED, {"reason": why}))

        return record

    def _slow_check(self, verifier: Optional[str], secret: str) -> defer.Deferred:
        return threads.deferToThreadPool(self.reactor, self.pool, auth.check, verifier, secret)

    def startService(self) -> None:
        from evnet.registry import schema

        self.pool.start()
        # Queued before any handshake's query: the Registry's tables (where Central runs without
        # EV_Registry on its database yet) and the transactions table.
        self.store.run(schema.create_tables).addErrback(self._db_error, "creating the Registry's tables")
        self.transactions.start().addErrback(self._db_error, "creating the OCPP transactions table")
        self._pings.start(self.ping_interval, now=False)
        super().startService()

    def _db_error(self, failure: Any, doing: str) -> None:
        self.log.error("database error while {doing}: {why}", doing=doing, why=failure.getErrorMessage())

    @defer.inlineCallbacks
    def stopService(self):
        if self._pings.running:
            self._pings.stop()
        yield super().stopService()
        for station in list(self.factory.stations.values()):
            station.close()
        self.pool.stop()
