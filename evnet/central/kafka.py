"""
Central's side of the Kafka bus: a thin adapter over the same rules as the
framed links (L{evnet.central.rules}), reached through topics instead.

- ``cp.telemetry`` and ``cp.events`` (TELEM, STOP, AVR, RCV, REQ from CPs),
  each sealed (SEC) under its CP's key by the Engine or the Monitor, are
  opened by the rules' trust (anything else is refused and recorded) and go
  to the rules' one CP-report dispatch, as a Monitor's link does; the
  record's key names the CP.
- ``driver.requests`` (DRIVER, REQ, LIST, ACCEPTED#TICKET) go to the
  rules' driver dispatch, as a driver's link does; the answers, the
  forwarded telemetry and the tickets go to ``driver.notifications`` keyed
  by driver (L{KafkaDriverChannel}).
- ``network.status`` gets the list of available CPs (in parts, each within
  a frame) whenever a CP changes.

Control (the login, STATUS, START, PARAR, REANUDAR, TICKET to the CP) stays
on the Monitors' links.  This module does not import kafka-python: the bus
is given.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

from twisted.application import service
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from evnet.protocols import framing
from evnet.protocols import messages as m
from evnet.protocols.channel import IChannel
from evnet.protocols.vocabulary import (
    STATUS_KEY,
    TOPIC_CP_EVENTS,
    TOPIC_CP_TELEMETRY,
    TOPIC_DRIVER_NOTIFICATIONS,
    TOPIC_DRIVER_REQUESTS,
    TOPIC_NETWORK_STATUS,
)
from evnet.kafka.errors import BusError
from evnet.central.rules import Central

if TYPE_CHECKING:  # pragma: no cover
    from evnet.kafka.bus import KafkaBus

# A restarted Central waits for its consumer to get its partitions back (up
# to the bus's session timeout after a crash) and for the Engine's next STOP
# resend before it may decide that a CP lost a charge: in Kafka mode the
# rules get this reconcile timeout instead of 15 s.
KAFKA_RECONCILE_TIMEOUT = 60.0


@implementer(IChannel)
class KafkaDriverChannel:
    """
    A driver reached through ``driver.notifications``.  Kafka's
    acknowledgement only says the broker has the message, so this channel
    does not confirm receipt: the driver confirms a ticket itself.  A
    message is at most a frame's DATA (the record value is that DATA).
    """

    log = Logger()
    confirms_receipt = False
    is_open = True
    pending = 0  # the bus buffers; a reading is never superseded here
    max_data = framing.DEFAULT_MAX_DATA

    def __init__(self, bus: "KafkaBus", driver_id: str) -> None:
        self.bus = bus
        self.driver_id = driver_id
        self.context: dict[str, Any] = {"driver_id": driver_id}
        self.peer_name = f"Kafka ({bus.bootstrap})"

    def sendMessage(self, msg: m.Message) -> defer.Deferred:
        try:
            data = msg.to_data()
        except m.MessageError as e:
            return defer.fail(e)
        if len(data) > self.max_data:
            return defer.fail(m.MessageError(
                f"{msg.code}: DATA of {len(data)} bytes is longer than the {self.max_data} a record may carry"
            ))
        return self.bus.publish(TOPIC_DRIVER_NOTIFICATIONS, self.driver_id, msg)

    def send(self, msg: m.Message) -> None:
        self.sendMessage(msg).addErrback(self._not_sent, msg)

    def _not_sent(self, failure: Failure, msg: m.Message) -> None:
        failure.trap(BusError, m.MessageError)
        self.log.warn(
            "{code} for driver {driver} not sent to Kafka: {why}",
            code=msg.code, driver=self.driver_id, why=failure.getErrorMessage(),
        )

    def close(self) -> None:
        pass


class CentralBus(service.Service):
    """
    The Kafka adapter of one L{Central}: a child of Central's service, so it
    hears the rules' events only while running.  The tap also hands the
    rules L{channel} (L{Central.reach_drivers_by}) and the longer
    L{KAFKA_RECONCILE_TIMEOUT}.
    """

    log = Logger()
    STATUS_DELAY = 0.5  # coalesce network.status updates
    RECONCILE_TIMEOUT = KAFKA_RECONCILE_TIMEOUT

    def __init__(self, central: Central, bus: "KafkaBus", group_id: str = "evcentral") -> None:
        self.central = central
        self.bus = bus
        self.group_id = group_id
        self.channels: dict[str, KafkaDriverChannel] = {}
        self._status_call: Optional[Any] = None
        # One consumer (one group member) for every topic Central reads: a
        # restart means one rebalance, not one per consumer.  A new group
        # starts at the end: what was published before this Central's group
        # ever existed is not for it.
        bus.subscribe(
            [TOPIC_CP_TELEMETRY, TOPIC_CP_EVENTS, TOPIC_DRIVER_REQUESTS], group_id, self.record, offset_reset="latest"
        )

    def startService(self) -> None:
        super().startService()
        self.central.observers.append(self.changed)
        self.bus.add_status_observer(self._bus_status)

    def _bus_status(self, up: bool, reason: str) -> None:
        """Kafka unreachable, or back: the alert of that name (docs/panel.md)."""
        if self.running:
            self.central.alerts.kafka(up, reason, self.bus.bootstrap)

    def stopService(self) -> None:
        super().stopService()
        if self.changed in self.central.observers:
            self.central.observers.remove(self.changed)
        call, self._status_call = self._status_call, None
        if call is not None and call.active():
            call.cancel()

    def record(self, topic: str, key: str, msg: m.Message) -> None:
        if topic == TOPIC_DRIVER_REQUESTS:
            # The drivers' trust logs the driver in and opens its sealed requests (docs/protocol.md §7).
            self.central.drivers.record(self.channel(key), key, msg)
            return
        inner = self.central.trust.open_record(topic, key, msg)  # refused and recorded unless sealed by the CP
        if inner is None:
            return
        why = self.central.cp_report(key, inner)
        if why is not None:
            self.log.warn("{topic}: {code} from CP {cp} ignored: {why}", topic=topic, code=msg.code, cp=key, why=why)

    def channel(self, driver_id: str) -> KafkaDriverChannel:
        """The channel to a driver through Kafka (one per driver, kept)."""
        channel = self.channels.get(driver_id)
        if channel is None:
            channel = self.channels[driver_id] = KafkaDriverChannel(self.bus, driver_id)
        return channel

    # -- network.status ------------------------------------------------------

    def changed(self, event: dict) -> None:
        if event.get("type") != "cp" or self._status_call is not None:
            return
        self._status_call = self.central.clock.callLater(self.STATUS_DELAY, self.publish_status)

    def publish_status(self) -> defer.Deferred:
        self._status_call = None
        parts = self.central.available_parts(KafkaDriverChannel.max_data)
        return defer.gatherResults([
            self.bus.publish(TOPIC_NETWORK_STATUS, STATUS_KEY, part).addErrback(self._status_not_sent) for part in parts
        ])

    def _status_not_sent(self, failure: Failure) -> None:
        self.log.warn("network.status not sent: {why}", why=failure.getErrorMessage())
