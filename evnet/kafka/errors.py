"""
What the rest of evnet needs to know about Kafka without loading
kafka-python (≈250 ms): its errors and the bootstrap address parser.
Pure: no kafka import, no Twisted.
"""

from __future__ import annotations


class BusError(Exception):
    """A message could not go through Kafka; the text says why."""


class BusFull(BusError):
    """Too many messages are already waiting for Kafka: new work is refused."""


def parse_bootstrap(text: str) -> list[str]:
    """
    ``host:port[,host:port…]`` (or one Twisted client endpoint string
    ``tcp:host=H:port=P``) to kafka-python's list of ``host:port``.
    """
    text = text.strip()
    if text.startswith("tcp:"):
        params = dict(part.split("=", 1) for part in text[4:].split(":") if "=" in part)
        if "host" not in params or "port" not in params:
            raise BusError(f"Kafka address {text!r}: expected tcp:host=HOST:port=PORT")
        text = f"{params['host']}:{params['port']}"
    servers = [s.strip() for s in text.split(",") if s.strip()]
    if not servers:
        raise BusError("no Kafka address given: expected HOST:PORT[,HOST:PORT…]")
    for server in servers:
        host, sep, port = server.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise BusError(f"Kafka address {server!r}: expected HOST:PORT, e.g. 127.0.0.1:9092")
    return servers
