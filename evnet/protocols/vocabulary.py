"""
The words of the evnet wire that are not message codes: Kafka topics and
their keys, the C{what} of ACCEPTED/REFUSED, the reasons a charge ends, and
the rules for ids and prices.  Every module names them from here, so a
reader finds each word once.  Pure: no I/O, no Twisted.

``docs/protocol.md`` and ``docs/kafka.md`` are the contract for each word.
"""

from __future__ import annotations

import re

# -- Kafka topics ----------------------------------------------------------

TOPIC_CP_TELEMETRY = "cp.telemetry"  # key cpId: TELEM
TOPIC_CP_EVENTS = "cp.events"  # key cpId: STOP, AVR, RCV, REQ (a charge asked for at the CP)
TOPIC_DRIVER_REQUESTS = "driver.requests"  # key driverId: DRIVER, REQ, LIST, CANCEL, ACCEPTED#TICKET#sessionId
# key driverId: ACCEPTED, REFUSED, AUTHORIZED, DENIED, TELEM, TICKET, NOTICE, AVAILABLE
TOPIC_DRIVER_NOTIFICATIONS = "driver.notifications"
TOPIC_NETWORK_STATUS = "network.status"  # key STATUS_KEY: AVAILABLE

#: Topic name -> number of partitions, created at start when missing.
TOPICS: dict[str, int] = {
    TOPIC_CP_TELEMETRY: 6,
    TOPIC_CP_EVENTS: 3,
    TOPIC_DRIVER_REQUESTS: 3,
    TOPIC_DRIVER_NOTIFICATIONS: 6,
    TOPIC_NETWORK_STATUS: 1,
}

KAFKA_PREFIX_PATTERN = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}\Z")
KAFKA_PREFIX_RULE = "1 to 100 letters, digits, '_', '-' or '.' (not first)"


class Topics:
    """
    The Kafka names of one network: its topics and consumer groups under
    C{prefix}, so that several networks share one cluster.  No prefix (the
    default) keeps the names above; prefix ``siteA`` gives ``siteA.cp.telemetry``
    and consumer group ``siteA.evcentral``.  Components speak of the topics by
    the names above; only the bus uses these.
    """

    def __init__(self, prefix: str = "") -> None:
        self.prefix = kafka_prefix(prefix)
        self._head = f"{prefix}." if prefix else ""

    def __repr__(self) -> str:
        return f"Topics({self.prefix!r})"

    def topic(self, name: str) -> str:
        """The topic C{name} (e.g. L{TOPIC_CP_EVENTS}) as this network's Kafka calls it."""
        return self._head + name

    def group(self, group_id: str) -> str:
        """The consumer group C{group_id} as this network's Kafka calls it."""
        return self._head + group_id

    def name(self, topic: str) -> str:
        """The inverse of L{topic}: the name the components know C{topic} by."""
        if not topic.startswith(self._head):
            raise ValueError(f"topic {topic!r} is not under the Kafka prefix {self.prefix!r}")
        return topic[len(self._head):]


def kafka_prefix(text: str) -> str:
    """The ``--kafka-prefix`` option's check: C{text} itself, or ValueError saying the rule."""
    if text and not KAFKA_PREFIX_PATTERN.match(text):
        raise ValueError(f"Kafka prefix {text!r}: use {KAFKA_PREFIX_RULE}, or nothing")
    return text


kafka_prefix.coerceDoc = f"{KAFKA_PREFIX_RULE}."  # type: ignore[attr-defined]  # shown by twistd --help


#: The key of every ``network.status`` record.
STATUS_KEY = "all"

# -- the "what" of ACCEPTED#what#subject and REFUSED#what#subject#reason ----

WHAT_REG = "REG"
WHAT_AUTH = "AUTH"
WHAT_DRIVER = "DRIVER"
WHAT_TICKET = "TICKET"  # Kafka mode: the driver confirms a ticket
WHAT_CANCEL = "CANCEL"  # a driver cancels its charge

# -- why a charge ended (STOP#…#reason and TICKET#…#reason) -----------------

REASON_TARGET = "target"  # the kWh target was reached
REASON_UNPLUG = "unplug"  # the vehicle was unplugged
REASON_FAULT = "fault"  # the Engine failed
REASON_PARAR = "parar"  # the operator stopped the CP
REASON_ENGINE_RESTART = "engine-restart"  # the Engine restarted without the vehicle
REASON_MONITOR_LOST = "monitor-lost"  # the Engine lost its Monitor
REASON_CLOSED = "closed-by-central"  # Central closed the session first
REASON_BUSY = "busy"  # the Engine could not take a START
REASON_DISCONNECTED = "disconnected"  # Central lost the CP
REASON_NOT_REPORTED = "not reported after reconnection"  # Central reconciled a lost charge
REASON_KEY_REVOKED = "key revoked"  # the operator revoked the CP's key: it is out of service
REASON_WEATHER = "weather alert"  # EV_W reported frost at the CP's location: it is out of service
REASON_NOT_PLUGGED = "not plugged in"  # authorized, but no vehicle plugged in within Central's --plug-timeout
REASON_CANCELLED = "cancelled by the driver"  # CANCEL from the driver (or the operator for it)

# How an AVR's reason begins when the Monitor lost its Engine (rather than the Engine answering KO):
# Central shows such a CP as an "engine-lost" alert (docs/panel.md).
AVR_ENGINE_LINK_LOST = "lost the link to the Engine"
AVR_NO_ENGINE_LINK = "no link to the Engine"
AVR_ENGINE_SILENT = "the Engine did not answer"
AVR_ENGINE_LOST = (AVR_ENGINE_LINK_LOST, AVR_NO_ENGINE_LINK, AVR_ENGINE_SILENT)


def engine_lost(reason: str) -> bool:
    """Whether an AVR's C{reason} says that the Monitor lost its Engine."""
    return reason.startswith(AVR_ENGINE_LOST)

# -- ids and prices ----------------------------------------------------------

ID_PATTERN = re.compile(r"[A-Za-z0-9_.-]{1,32}\Z")
ID_RULE = "1 to 32 letters, digits, '_', '.' or '-'"
MAX_PRICE = 100.0  # €/kWh


def valid_id(text: str) -> bool:
    """A CP or driver id: L{ID_RULE}."""
    return bool(ID_PATTERN.match(text))
