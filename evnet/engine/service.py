"""
EV_CP_E, the Engine of a charging point: the service that wires the
L{Charger} (``charger.py``, the charge rules) to the world.

L{EngineService} serves its one Monitor link (a L{LinkHandler}), runs the
commands (``control.py``), ticks every second, saves the Charger's snapshot
in the state file (``statefile.py``) on its own thread (L{StateWriter}),
then, once it is on disk, sends what the Charger emitted.
With a Kafka bus (``--kafka``), TELEM goes to ``cp.telemetry`` and STOP/REQ
to ``cp.events`` (key: the CP id) instead of the Monitor link;
START/PARAR/REANUDAR/TICKET still come from the Monitor.  Every record is
sealed (role E) under the key the Monitor hands over with CPKEY after each
login; until there is one nothing is published in the clear: a STOP stays
pending, a TELEM is skipped.  The key lives only in memory.

``docs/chargingpoint.md`` describes the commands and the state file.
"""

from __future__ import annotations

import re
from typing import Any, Optional

from twisted.application import service
from twisted.internet import defer, task
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from evnet.engine.charger import Charger
from evnet.engine.control import command
from evnet.engine.statefile import StateFile, StateWriter, read_snapshot
from evnet.kafka.errors import BusError
from evnet.protocols import messages as m
from evnet.protocols import security
from evnet.protocols.link import FramedLink, LinkError, LinkHandler
from evnet.protocols.vocabulary import TOPIC_CP_EVENTS, TOPIC_CP_TELEMETRY

#: Where each message for Central goes with a Kafka bus (key: the CP id).
KAFKA_TOPICS = {m.Telem: TOPIC_CP_TELEMETRY, m.Stop: TOPIC_CP_EVENTS, m.Req: TOPIC_CP_EVENTS}

KEY_ID = re.compile(r"[0-9a-f]{8}\Z")
TICK_SECONDS = 1.0
STOP_RESEND_SECONDS = 5.0


class EngineService(service.Service, LinkHandler):
    """
    The Engine: serves one Monitor link at a time (a second one is
    refused), answers HCK, applies CFG/START/PARAR/REANUDAR/TICKET, runs
    the commands, ticks every second.  Each change is saved to the state
    file before any message about it is sent: the snapshot goes to
    C{writer} (a L{StateWriter}: its own thread, started and stopped with
    this service), and what the change emitted waits until it is on disk,
    in the order emitted.  A snapshot asked for while one is being written
    waits for it (only the newest waiting one is written).  If a write
    fails the error is logged, the next tick tries again, TELEMs still go
    and a STOP waits until a snapshot holding it is on disk.

    With C{bus} (a L{evnet.kafka.bus.KafkaBus}, or anything with its
    C{publish(topic, key, msg)}), TELEM, STOP and REQ are published to
    Kafka (L{KAFKA_TOPICS}) instead of going through the Monitor link.  A
    STOP is still re-sent every 5 s until its TICKET comes back on the
    Monitor link, which makes a Kafka outage lossless for it; a TELEM that
    Kafka refuses is logged (the state file and the STOP keep the totals).
    Records are sealed under the Monitor's CPKEY, one L{security.Sealer} per
    topic (Central reads each topic on its own, so each is its own counter
    sequence); none is published before the first CPKEY.
    """

    log = Logger()

    def __init__(
        self,
        store: StateFile,
        clock: IReactorTime,
        *,
        power_kw: float = 11.0,
        auto_plug: bool = False,
        restored: Optional[dict[str, Any]] = None,
        bus: Any = None,
        writer: Any = None,
    ) -> None:
        self.store = store
        self.writer = writer if writer is not None else StateWriter(store, clock)
        self._writing = False  # a snapshot is being written
        self._next: Optional[dict[str, Any]] = None  # the newest snapshot waiting for that write
        self._in_write: list[m.Message] = []  # sent once the snapshot being written is on disk
        self._held: list[m.Message] = []  # sent once _next (or, if None, the one being written) is
        self._saved_stops: set[str] = set()  # sessions whose STOP is in a snapshot on disk
        self._drained: list[Any] = []  # stopService's Deferreds, fired when nothing is left to write
        self.clock = clock
        self.bus = bus
        self.monitor: Optional[FramedLink] = None
        self._stops_in_flight: set[str] = set()  # STOPs published, not yet acknowledged by Kafka
        self._telem_failures = 0  # TELEMs Kafka refused since the last one it took
        self.key_id: Optional[str] = None  # the CP's session key, from the Monitor's CPKEY (memory only)
        self._key = b""
        self._sealers: dict[str, security.Sealer] = {}  # topic -> its sealer under the current key
        self._no_key_said = False
        self._outbox: list[m.Message] = []
        self.charger = Charger(
            clock, power_kw, self._outbox.append, auto_plug=auto_plug, log=Logger(namespace="evnet.engine.charger")
        )
        if restored is not None:
            self.charger.restore(read_snapshot(restored))
            self._saved_stops = set(self.charger.pending)  # they come from the disk
        self._ticker = task.LoopingCall(self.tick)
        self._ticker.clock = clock
        self._resender = task.LoopingCall(self.resend_stops)
        self._resender.clock = clock

    # -- service -----------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self.writer.start()
        self._commit()
        self._ticker.start(TICK_SECONDS, now=False)
        self._resender.start(STOP_RESEND_SECONDS, now=False)

    def stopService(self) -> None:
        for loop in (self._ticker, self._resender):
            if loop.running:
                loop.stop()
        self._commit()
        d = defer.Deferred()
        if self._writing:
            self._drained.append(d)
        else:
            d.callback(None)
        d.addCallback(lambda _: self.writer.stop())
        d.addCallback(lambda _: service.Service.stopService(self))
        return d

    def tick(self) -> None:
        self.charger.tick()
        self._commit()

    def resend_stops(self) -> None:
        """Send the STOPs whose TICKET has not come back (the TICKET comes on the Monitor link)."""
        if self.monitor is not None and self.charger.pending:
            for stop in list(self.charger.pending.values()):
                if stop.session_id in self._saved_stops:  # (one still on its way to disk goes once it is there)
                    self._send(stop)

    # -- the state file, then the messages -----------------------------------

    def _commit(self) -> None:
        """Save the snapshot if it changed; what the Charger emitted is sent once it is on disk."""
        outbox, self._outbox[:] = list(self._outbox), []
        if self.charger.dirty:
            self._next = self.charger.snapshot()
            self._held += outbox
        elif self._writing:
            self._held += outbox  # behind what waits for the disk: the order is kept
        else:
            self._deliver(outbox)
        self._write_next()

    def _write_next(self) -> None:
        if self._writing or self._next is None:
            return
        data, self._next = self._next, None
        self._in_write, self._held = self._held, []
        self._writing = True
        self.writer.save(data).addCallbacks(self._saved, self._not_saved, callbackArgs=(data,))

    def _saved(self, _: Any, data: dict[str, Any]) -> None:
        self._saved_stops = {stop["session_id"] for stop in data["pending_stops"]}
        self._write_done(lambda msg: True)

    def _not_saved(self, failure: Failure) -> None:
        self.charger.dirty = True  # the next tick tries again
        self.log.error("Cannot save the state file {path}: {why}", path=self.store.path, why=failure.getErrorMessage())
        # Telemetry still goes (the next one is cumulative); a STOP waits for a snapshot that holds it.
        self._write_done(lambda msg: not isinstance(msg, m.Stop) or msg.session_id in self._saved_stops)

    def _write_done(self, may_send: Any) -> None:
        self._writing = False
        ready, self._in_write = self._in_write, []
        if self._next is None:  # nothing newer to wait for: what was held needed only this write
            ready, self._held = ready + self._held, []
        self._deliver([msg for msg in ready if may_send(msg)])
        self._write_next()
        if not self._writing:
            drained, self._drained = self._drained, []
            for d in drained:
                d.callback(None)

    def _deliver(self, outbox: list[m.Message]) -> None:
        for msg in outbox:
            if self.bus is not None or self.monitor is not None:
                self._send(msg)
            elif isinstance(msg, m.Stop):
                self.log.info("No Monitor connected: STOP for {session} kept until one is", session=msg.session_id)
            else:
                self.log.info("No Monitor connected: {code} not sent", code=msg.code)

    # -- sending: the Monitor link, or Kafka -------------------------------

    def _send(self, msg: m.Message) -> None:
        """One message for Central: through Kafka with a bus (sealed), else on the Monitor link."""
        if self.bus is None:
            self.monitor.sendMessage(msg).addErrback(self._not_sent, msg, "the Monitor")
        elif self.key_id is None:
            self._withheld(msg)
        elif isinstance(msg, m.Stop):
            self._publish_stop(msg)
        else:
            d = self._publish(KAFKA_TOPICS[type(msg)], msg)
            if isinstance(msg, m.Telem):
                d.addCallbacks(self._telem_published, self._telem_not_published, errbackArgs=(msg,))
            else:
                d.addErrback(self._not_sent, msg, "Kafka")

    def _publish(self, topic: str, msg: m.Message):
        """Publish C{msg} sealed under the current key, by the sealer of C{topic}."""
        sealer = self._sealers.get(topic)
        if sealer is None:
            sealer = self._sealers[topic] = security.Sealer(
                msg.cp_id, self.key_id, self._key, security.ROLE_ENGINE
            )
        return self.bus.publish(topic, msg.cp_id, security.seal_message(sealer, msg))

    def _withheld(self, msg: m.Message) -> None:
        """No key yet: nothing goes to Kafka in the clear (said once)."""
        if not self._no_key_said:
            self._no_key_said = True
            self.log.warn(
                "No key from the Monitor yet: nothing is published to Kafka in the clear "
                "(STOPs are kept until a key comes, TELEMs skipped: the next one is cumulative)"
            )
        if not isinstance(msg, m.Stop):
            self.log.debug("{code} not published: no key yet", code=msg.code)

    def take_key(self, msg: m.CpKey) -> None:
        """CPKEY: the key Central issued at the Monitor's last login; Kafka records are sealed with it."""
        if self.charger.cp_id is not None and msg.cp_id != self.charger.cp_id:
            self.log.warn("Ignored a key for CP {other}: this Engine serves {cp_id}",
                          other=msg.cp_id, cp_id=self.charger.cp_id)
            return
        try:
            key = security.unb64(msg.key, "the key")
            if len(key) != security.KEY_BYTES:
                raise security.SecurityError(f"the key must be {security.KEY_BYTES} bytes")
            if not KEY_ID.match(msg.key_id):
                raise security.SecurityError("the key id must be 8 hex digits")
        except security.SecurityError as e:
            self.log.warn("Ignored a key from the Monitor: {why}", why=str(e))
            return
        first = self.key_id is None
        if msg.key_id != self.key_id:
            self.log.info("Key {key_id} from the Monitor: Kafka records are sealed with it", key_id=msg.key_id)
        self.key_id, self._key, self._sealers = msg.key_id, key, {}
        self._no_key_said = False
        if first:
            self.resend_stops()

    def _publish_stop(self, stop: m.Stop) -> None:
        if stop.session_id in self._stops_in_flight:
            return  # the last copy still waits for Kafka: one is enough
        self._stops_in_flight.add(stop.session_id)
        d = self._publish(TOPIC_CP_EVENTS, stop)
        d.addErrback(self._not_sent, stop, "Kafka")
        d.addBoth(lambda _: self._stops_in_flight.discard(stop.session_id))

    def _telem_published(self, _: Any) -> None:
        if self._telem_failures:
            self.log.info(
                "Kafka takes telemetry again; {count} TELEM records could not be sent meanwhile "
                "(the state file and the STOP keep the totals)",
                count=self._telem_failures,
            )
            self._telem_failures = 0

    def _telem_not_published(self, failure: Failure, msg: m.Telem) -> None:
        failure.trap(BusError)
        self._telem_failures += 1
        if self._telem_failures == 1:
            self.log.warn(
                "TELEM {seq} of session {session} not sent to Kafka: {why}. Central misses this update; "
                "the state file and the STOP keep the totals. Further failures are counted until Kafka takes one",
                seq=msg.seq,
                session=msg.session_id,
                why=failure.getErrorMessage(),
            )

    def _not_sent(self, failure: Failure, msg: m.Message, where: str) -> None:
        """A message Kafka or the Monitor link did not take (never raised: a failed Deferred)."""
        failure.trap(BusError, LinkError, m.MessageError)
        if isinstance(msg, m.Stop):
            again = f"in {STOP_RESEND_SECONDS:g} s" if where == "Kafka" else "once a Monitor is connected"
            self.log.warn(
                "STOP for session {session} not sent to {where}: {why}; it is sent again {again}",
                session=msg.session_id,
                where=where,
                why=failure.getErrorMessage(),
                again=again,
            )
        else:
            self.log.warn("{code} not sent to {where}: {why}", code=msg.code, where=where, why=failure.getErrorMessage())

    # -- the Monitor link --------------------------------------------------

    def linkRequested(self, link: FramedLink) -> Optional[str]:
        if self.monitor is not None:
            reason = f"already serving a Monitor from {self.monitor.peer_name}"
            self.log.warn("Refused a second Monitor from {peer}: {reason}", peer=link.peer_name, reason=reason)
            return reason
        return None

    def linkOpened(self, link: FramedLink) -> None:
        self.monitor = link
        self.log.info("Monitor connected from {peer}", peer=link.peer_name)
        self.resend_stops()

    def linkLost(self, link: FramedLink, reason: Failure) -> None:
        if link is self.monitor:
            self.monitor = None
            self.log.warn("Monitor link from {peer} lost: {why}", peer=link.peer_name, why=reason.getErrorMessage())
            self.charger.monitor_lost()
            self._commit()

    def messageReceived(self, link: FramedLink, msg: m.Message) -> None:
        if link is not self.monitor:
            return
        charger = self.charger
        if isinstance(msg, m.Hck):
            link.send(m.HckResp(charger.health))
        elif isinstance(msg, m.Cfg):
            charger.configure(msg.cp_id, msg.price)
        elif isinstance(msg, m.CpKey):
            self.take_key(msg)
        elif isinstance(msg, m.Start):
            charger.start(msg)
        elif isinstance(msg, m.Parar):
            charger.parar()
        elif isinstance(msg, m.Reanudar):
            charger.reanudar()
        elif isinstance(msg, m.Ticket):
            charger.ticket(msg)
        elif isinstance(msg, m.Authorized):
            self.log.info(
                "Central authorized the charge for {driver}: session {session}",
                driver=msg.driver_id,
                session=msg.session_id,
            )
        elif isinstance(msg, m.Denied):
            self.log.warn("The charge for {driver} was denied: {reason}", driver=msg.driver_id, reason=msg.reason)
        elif isinstance(msg, m.Notice):
            self.log.info("Notice about {subject}: {text}", subject=msg.subject, text=msg.text)
        else:
            self.log.info("Ignored {code} from the Monitor", code=msg.code)
        self._commit()

    # -- commands ----------------------------------------------------------

    def command(self, line: str) -> str:
        """Run one command line (L{evnet.engine.control.command}); save, then send what it caused."""
        try:
            return command(self, line)
        finally:
            self._commit()

    def status(self) -> str:
        """The Charger's status line, with the Monitor link and the Kafka bus."""
        monitor = f"monitor={self.monitor.peer_name}" if self.monitor else "monitor=none"
        kafka = f" kafka={self.bus.bootstrap} key={self.key_id or 'none'}" if self.bus is not None else ""
        return f"{self.charger.status()} {monitor}{kafka}"
