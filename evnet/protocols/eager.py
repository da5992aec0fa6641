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

L{eager_writer} returns the write function a link uses on its transport.  On
Twisted's own TCP connections, when nothing is waiting in the transport's
buffer, it sends at once and hands only what the kernel did not take to
C{transport.write} (all of it on C{EAGAIN} or on an error, which the
transport then reports and handles as it always does); while anything is
buffered, every write goes through C{transport.write}, so the order of the
bytes is kept.  On any other transport (TLS, the tests' string transports)
L{eager_writer} returns None: the link writes with C{transport.write}.

It reads attributes of L{twisted.internet.abstract.FileDescriptor} that are
not part of Twisted's interfaces (C{dataBuffer}, C{offset}, C{_tempDataLen},
C{_writeDisconnected}): on a Twisted whose connections lack one of them it
falls back to C{transport.write}, never guesses.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from twisted.internet import tcp

#: What the eager path reads to know that the transport holds no bytes.
BUFFER_ATTRIBUTES = ("dataBuffer", "offset", "_tempDataLen", "_writeDisconnected", "socket")


def eager_writer(transport: Any) -> Optional[Callable[[bytes], None]]:
    """
    A function that writes bytes on C{transport}, sending them at once when
    nothing is buffered; None when C{transport} is not one of Twisted's TCP
    connections (write with C{transport.write}).
    """
    if not isinstance(transport, tcp.Connection) or not all(hasattr(transport, a) for a in BUFFER_ATTRIBUTES):
        return None
    sock = transport.socket
    buffered = transport.write

    def write(data: bytes) -> None:
        if (
            transport.connected
            and not transport.disconnecting
            and not transport._writeDisconnected
            and not transport._tempDataLen
            and transport.offset == len(transport.dataBuffer)
        ):
            try:
                sent = sock.send(data)
            except OSError:
                # EAGAIN: the kernel's buffer is full; anything else is an
                # error the transport's own send reports (connectionLost).
                sent = 0
            if sent == len(data):
                return
            data = data[sent:]
        buffered(data)

    return write
