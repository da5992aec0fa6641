"""
Central's side of the Kafka bus: the same rules as the framed links
(L{evnet.central.rules}), reached through topics instead.

- ``cp.telemetry`` and ``cp.events`` (TELEM, STOP, AVR, RCV, REQ from CPs)
  are handled like the same messages on a Monitor's link.
- ``driver.requests`` (DRIVER, REQ, LIST, ACCEPTED#TICKET) are handled like
  the same messages on a driver's link; the answers, the forwarded
  telemetry and the tickets go to ``driver.notifications`` keyed by driver.
- ``network.status`` gets the list of available CPs whenever a CP changes.

Control (REG, AUTH, STATUS, START, PARAR, REANUDAR, TICKET to the CP) stays
on the Monitors' links.
"""

from __future__ import annotations

from typing import Any, Optional

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from evnet.protocols import messages as m
from evnet.kafka.errors import BusError
from evnet.kafka.bus import KafkaBus


class KafkaDriverChannel:
    """
    A driver reached through ``driver.notifications``: the send API of a
    L{evnet.protocols.link.FramedLink}, so Central's rules need not know.
    Kafka's acknowledgement only says the broker has the message, so this
    channel does not confirm receipt: the driver confirms a ticket itself.
    """

    log = Logger()
    confirms_receipt = False
    is_open = True

    def __init__(self, bus: KafkaBus, driver_id: str) -> None:
        self.bus = bus
        self.driver_id = driver_id
        self.context: dict[str, Any] = {"driver_id": driver_id}
        self.peer_name = f"Kafka ({bus.bootstrap})"

    def sendMessage(self, msg: m.Message) -> defer.Deferred:
        return self.bus.publish("driver.notifications", self.driver_id, msg)

    def send(self, msg: m.Message) -> None:
        self.sendMessage(msg).addErrback(self._not_sent, msg)

    def _not_sent(self, failure: Failure, msg: m.Message) -> None:
        failure.trap(BusError)
        self.log.warn(
            "{code} for driver {driver} not sent to Kafka: {why}",
            code=msg.code, driver=self.driver_id, why=failure.getErrorMessage(),
        )

    def close(self) -> None:
        pass


class CentralBus:
    """Wires a L{Central} to a L{KafkaBus}."""

    log = Logger()
    STATUS_DELAY = 0.5  # coalesce network.status updates
    # A restarted Central waits for its consumer to get its partitions back
    # (up to the bus's session timeout after a crash) and for the Engine's
    # next STOP resend before it may decide that a CP lost a charge.
    RECONCILE_TIMEOUT = 60.0

    def __init__(self, central: Any, bus: KafkaBus, group_id: str = "evcentral") -> None:
        self.central = central
        self.bus = bus
        self.group_id = group_id
        self.channels: dict[str, KafkaDriverChannel] = {}
        self._status_call: Optional[Any] = None
        # One consumer (one group member) for every topic Central reads: a
        # restart means one rebalance, not one per consumer.  A new group
        # starts at the end: what was published before this Central's group
        # ever existed is not for it.
        bus.subscribe(["cp.telemetry", "cp.events", "driver.requests"], group_id, self.record, offset_reset="latest")
        central.observers.append(self.changed)
        central.driver_channel = self.channel
        central.reconcile_timeout = max(central.reconcile_timeout, self.RECONCILE_TIMEOUT)

    def record(self, topic: str, key: str, msg: m.Message) -> None:
        if topic == "driver.requests":
            self.driver_record(topic, key, msg)
        else:
            self.cp_record(topic, key, msg)

    # -- CPs ---------------------------------------------------------------

    def cp_record(self, topic: str, key: str, msg: m.Message) -> None:
        central = self.central
        cp_id = key if isinstance(msg, m.Req) else getattr(msg, "cp_id", key)
        cp = central.cps.get(cp_id)
        if cp is None:
            self.log.warn("{topic}: {code} for unknown CP {cp}: ignored", topic=topic, code=msg.code, cp=cp_id)
            return
        if isinstance(msg, m.Telem):
            central.telemetry(cp, msg)
        elif isinstance(msg, m.Stop):
            central.charge_stopped(cp, msg)
        elif isinstance(msg, (m.Avr, m.Rcv)):
            if cp.link is None:
                self.log.info("{topic}: {code} from CP {cp}, which is not connected: ignored",
                              topic=topic, code=msg.code, cp=cp_id)
            elif isinstance(msg, m.Avr):
                central.cp_fault(cp, msg.reason)
            else:
                central.cp_recovered(cp)
        elif isinstance(msg, m.Req):
            d = central.request(msg.driver_id, cp.id, msg.target_kwh, "cp")
            d.addCallback(lambda answer: cp.link.send(answer) if cp.link is not None else None)
        else:
            self.log.warn("{topic}: {code} is not expected from a CP: ignored", topic=topic, code=msg.code)

    # -- drivers -----------------------------------------------------------

    def channel(self, driver_id: str) -> KafkaDriverChannel:
        channel = self.channels.get(driver_id)
        if channel is None:
            channel = self.channels[driver_id] = KafkaDriverChannel(self.bus, driver_id)
        return channel

    def driver_record(self, topic: str, key: str, msg: m.Message) -> None:
        channel = self.channel(key)
        # The link-level hello is implicit: every record names its driver by key.
        self.central.driver_links.setdefault(key, channel)
        self.central.driver_message(channel, msg)

    # -- network.status ------------------------------------------------------

    def changed(self, event: dict) -> None:
        if event.get("type") != "cp" or self._status_call is not None:
            return
        self._status_call = self.central.clock.callLater(self.STATUS_DELAY, self.publish_status)

    def publish_status(self) -> defer.Deferred:
        self._status_call = None
        d = self.bus.publish("network.status", "all", self.central.available())
        return d.addErrback(lambda f: self.log.warn("network.status not sent: {why}", why=f.getErrorMessage()))
