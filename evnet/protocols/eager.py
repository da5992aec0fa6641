"""
Writing a link's small outputs straight to the socket.

Twisted's TCP transport never sends in C{write()}: it buffers the bytes, asks
the reactor to watch the socket for writability (an C{epoll_ctl}), sends them
when the reactor next reports the socket writable (one more event through
the reactor's dispatch and its logging-context wrappers), then stops watching
(another C{epoll_ctl}).  A link answers every frame with an ACK byte, so that
is two syscalls and one reactor event per frame on top of the C{send()}
itself: at the load generator's STATUS flood it was ≈ 26 % of Central's CPU
per frame (docs/performance.md, issue 18).

L{write} is how a link writes on a transport for which L{sends_eagerly} is
true (Twisted's own TCP connections): when nothing is waiting in the
transport's buffer, it sends at once and hands only what the kernel did not take to
C{transport.write} (all of it on C{EAGAIN} or on an error, which the
transport then reports and handles as it always does); while anything is
buffered, every write goes through C{transport.write}, so the order of the
bytes is kept.  On any other transport (TLS, the tests' string transports)
the link writes with C{transport.write}.  (Plain functions: nothing is made
per link, 10,000 links would be 10,000 closures for the garbage collector
to scan.)

It reads attributes of L{twisted.internet.abstract.FileDescriptor} that are
not part of Twisted's interfaces (C{dataBuffer}, C{offset}, C{_tempDataLen},
C{_writeDisconnected}, and C{TLS}, true once C{startTLS} was called: then
nothing is sent around TLS): on a Twisted whose connections lack one of them it
is not used (L{sends_eagerly} is false), never guesses.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import tcp

#: What the eager path reads to know that the transport holds no bytes.
BUFFER_ATTRIBUTES = ("dataBuffer", "offset", "_tempDataLen", "_writeDisconnected", "socket", "TLS")


def sends_eagerly(transport: Any) -> bool:
    """True if L{write} may send at once on C{transport}: one of Twisted's TCP connections."""
    return isinstance(transport, tcp.Connection) and all(hasattr(transport, a) for a in BUFFER_ATTRIBUTES)


def write(transport: Any, data: bytes) -> None:
    """
    Write C{data} on C{transport} (one for which L{sends_eagerly} is true):
    at once if nothing is buffered, else (and whatever the kernel did not
    take) through C{transport.write}.
    """
    if (
        transport.connected
        and not transport.TLS  # (after startTLS every byte goes through TLS)
        and not transport.disconnecting
        and not transport._writeDisconnected
        and not transport._tempDataLen
        and transport.offset == len(transport.dataBuffer)
    ):
        try:
            sent = transport.socket.send(data)
        except OSError:
            # EAGAIN: the kernel's buffer is full; anything else is an error
            # the transport's own send reports (connectionLost).
            sent = 0
        if sent == len(data):
            return
        data = data[sent:]
    transport.write(data)
