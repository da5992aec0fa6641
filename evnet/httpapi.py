"""
What evnet's HTTP APIs (Central's panel, EV_Registry) share: the JSON
error they answer with, the JSON encoding, and whether a peer is on this
host.  Pure helpers; no resource here.
"""

from __future__ import annotations

import ipaddress
import json
from typing import Any, Optional

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress


class ApiError(Exception):
    """An error answered as C{{"error": text}} with an HTTP status."""

    def __init__(self, status: int, text: str, headers: Optional[dict[str, str]] = None) -> None:
        super().__init__(text)
        self.status = status
        self.text = text
        self.headers = headers or {}


def json_bytes(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def is_loopback(address: Any) -> bool:
    """True for 127.0.0.0/8, ::1 (also IPv4-mapped) and local UNIX sockets."""
    if isinstance(address, UNIXAddress):
        return True
    if isinstance(address, (IPv4Address, IPv6Address)):
        try:
            ip = ipaddress.ip_address(address.host.split("%")[0])
        except ValueError:
            return False
        mapped = getattr(ip, "ipv4_mapped", None)
        return ip.is_loopback or bool(mapped and mapped.is_loopback)
    return False
