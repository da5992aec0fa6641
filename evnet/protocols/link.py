"""
The evnet link: a thin Twisted protocol over the pure codecs in
L{evnet.protocols.framing} and L{evnet.protocols.messages}.

A link is opened by the connecting side (ENQ, answered ACK or NACK), carries
typed messages in frames that the receiver answers ACK or NACK one at a time
(stop-and-wait), retransmits a NACKed frame at most three times, and closes
with EOT.  The link's own state is an explicit table machine (L{LINK_TABLE}); its
timeouts run on an injected clock.

Behaviour lives in a L{LinkHandler} (a service), never here: the protocol
only carries bytes and reports events.
"""

from __future__ import annotations

from collections import deque
from enum import Enum
from typing import Any, Optional

from twisted.internet import defer, error
from twisted.internet.interfaces import IReactorTime, ITCPTransport
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from evnet.protocols import eager, framing
from evnet.protocols.channel import IChannel
from evnet.protocols.machine import Machine
from evnet.protocols.framing import ACK_BYTE, ENQ_BYTE, EOT_BYTE, NACK_BYTE, Kind
from evnet.protocols.messages import Message, MessageError, decode

DEFAULT_ENQ_TIMEOUT = 5.0
DEFAULT_ACK_TIMEOUT = 5.0
MAX_RETRANSMISSIONS = 3


class LinkError(Exception):
    """The link failed; the text says why."""


class LinkClosed(LinkError):
    """The link closed before the message was acknowledged."""


class LinkState(Enum):
    WAITING_ENQ = "waiting-enq"  # accepting side: connected, no ENQ yet
    OPENING = "opening"  # connecting side: ENQ sent, waiting for ACK/NACK
    OPEN = "open"  # nothing in flight
    AWAITING_ACK = "awaiting-ack"  # one frame sent, waiting for its ACK
    RETRANSMITTING = "retransmitting"  # a NACKed frame was sent again
    CLOSING = "closing"  # EOT sent or the link is being dropped
    CLOSED = "closed"


class LinkInput(Enum):
    OPENED = "opened"  # ENQ accepted (accepting side) or ACKed (connecting side)
    SENT = "sent"  # a frame went out and waits for its ACK
    ACKED = "acked"  # the peer ACKed the frame in flight
    NACKED = "nacked"  # the peer NACKed it: it goes out again
    CLOSE = "close"  # EOT either way, a refusal, or a drop
    LOST = "lost"  # the connection is gone


_S, _I = LinkState, LinkInput
_UP_OR_OPENING = (_S.WAITING_ENQ, _S.OPENING, _S.OPEN, _S.AWAITING_ACK, _S.RETRANSMITTING)
#: The link's machine (evnet.protocols.machine): every move it may make.
LINK_TABLE: dict[tuple[LinkState, LinkInput], LinkState] = {
    (_S.WAITING_ENQ, _I.OPENED): _S.OPEN,
    (_S.OPENING, _I.OPENED): _S.OPEN,
    (_S.OPEN, _I.SENT): _S.AWAITING_ACK,
    (_S.AWAITING_ACK, _I.ACKED): _S.OPEN,
    (_S.RETRANSMITTING, _I.ACKED): _S.OPEN,
    (_S.AWAITING_ACK, _I.NACKED): _S.RETRANSMITTING,
    (_S.RETRANSMITTING, _I.NACKED): _S.RETRANSMITTING,
    **{(state, _I.CLOSE): _S.CLOSING for state in _UP_OR_OPENING},
    **{(state, _I.LOST): _S.CLOSED for state in _UP_OR_OPENING + (_S.CLOSING,)},
}

_LINK_UP = (LinkState.OPEN, LinkState.AWAITING_ACK, LinkState.RETRANSMITTING)


class LinkHandler:
    """
    What a service implements to use links.  One handler may serve many
    links; each call names the link.
    """

    def linkRequested(self, link: "FramedLink") -> Optional[str]:
        """
        Accepting side: a peer sent ENQ.  Return None to accept (ACK), or a
        reason to refuse (NACK, then the link closes).
        """
        return None

    def linkOpened(self, link: "FramedLink") -> None:
        """The link is open: messages may flow."""

    def linkRefused(self, link: "FramedLink") -> None:
        """Connecting side: the peer answered our ENQ with NACK."""

    def messageReceived(self, link: "FramedLink", msg: Message) -> None:
        """A message arrived (already ACKed)."""

    def frameRejected(self, link: "FramedLink", why: str) -> None:
        """The peer sent input that is not a frame or not a message (NACKed): C{why} says which."""

    def linkLost(self, link: "FramedLink", reason: Failure) -> None:
        """The connection is gone."""


@implementer(IChannel)
class FramedLink(Protocol):
    """
    One end of an evnet link.  C{initiator} is true on the connecting side,
    which sends ENQ.  It is an L{IChannel}: an ACK means the peer has the
    message.
    """

    log = Logger()
    confirms_receipt = True

    def __init__(
        self,
        handler: LinkHandler,
        clock: IReactorTime,
        *,
        initiator: bool,
        max_data: int = framing.DEFAULT_MAX_DATA,
        enq_timeout: float = DEFAULT_ENQ_TIMEOUT,
        ack_timeout: float = DEFAULT_ACK_TIMEOUT,
        max_retransmissions: int = MAX_RETRANSMISSIONS,
    ) -> None:
        self.handler = handler
        self.clock = clock
        self.initiator = initiator
        self.max_data = max_data
        self.enq_timeout = enq_timeout
        self.ack_timeout = ack_timeout
        self.max_retransmissions = max_retransmissions
        self._machine = Machine("link", LINK_TABLE, LinkState.OPENING if initiator else LinkState.WAITING_ENQ)
        self.decoder = framing.FrameDecoder(max_data)
        self.peer_name = "?"
        # Whatever the handler wants to remember about this link (a CP id...).
        self.context: dict[str, Any] = {}
        self._queue: deque[tuple[bytes, Message, defer.Deferred]] = deque()
        self._retries = 0
        self._timer = None
        self._lost_reason: Optional[str] = None
        self._open_waiters: list[defer.Deferred] = []
        # Output written while one input chunk is handled (the ACK, an answer
        # the handler sends at once...) leaves as one transport.write when
        # the chunk is done: one send() and one segment instead of several.
        self._out: Optional[list[bytes]] = None
        # On a TCP socket with nothing buffered, output is sent at once
        # (evnet.protocols.eager); otherwise through transport.write.
        self._eager = False

    # -- the state machine -------------------------------------------------

    @property
    def state(self) -> LinkState:
        return self._machine.state

    def _goto(self, event: LinkInput) -> None:
        # An input the table does not allow is logged and ignored, never a crash.
        self._machine.attempt(event, self.log)

    @property
    def is_open(self) -> bool:
        return self.state in _LINK_UP

    @property
    def opened(self) -> defer.Deferred:
        """
        A new Deferred that fires with this link once it is open (at once if
        it is), or fails with L{LinkClosed} if the connection goes first.
        """
        if self.is_open:
            return defer.succeed(self)
        if self.state is LinkState.CLOSED:
            return defer.fail(LinkClosed("link closed"))
        d: defer.Deferred = defer.Deferred()
        self._open_waiters.append(d)
        return d

    def _link_up(self) -> None:
        self._goto(LinkInput.OPENED)
        waiters, self._open_waiters = self._open_waiters, []
        for d in waiters:
            d.callback(self)
        self.handler.linkOpened(self)
        self._send_next()

    # -- connection events -------------------------------------------------

    def connectionMade(self) -> None:
        self._eager = eager.sends_eagerly(self.transport)
        if ITCPTransport.providedBy(self.transport):
            # Frames are small and answered one at a time: without this,
            # Nagle's algorithm holds an answer written after the ACK byte
            # until the peer's delayed ACK (~40 ms a frame).
            self.transport.setTcpNoDelay(True)
        peer = self.transport.getPeer()
        self.peer_name = f"{getattr(peer, 'host', peer)}:{getattr(peer, 'port', '')}"
        if self.initiator:
            self._write(ENQ_BYTE)
            self._start_timer(self.enq_timeout, "no answer to ENQ")
        else:
            self._start_timer(self.enq_timeout, "no ENQ from the peer")

    def dataReceived(self, data: bytes) -> None:
        if self._out is not None:  # re-entered (a handler fed us input): its output joins ours
            self._receive(data)
            return
        self._out = []
        try:
            self._receive(data)
        finally:
            self._flush()

    def _receive(self, data: bytes) -> None:
        for event in self.decoder.feed(data):
            if self.state in (LinkState.CLOSING, LinkState.CLOSED) or self.transport.disconnecting:
                return
            try:
                if event.kind is Kind.FRAME:
                    self._frame_received(event.data)
                elif event.kind is Kind.CONTROL:
                    self._control_received(event.control)
                elif event.kind is Kind.BAD_LRC:
                    self._nack(f"bad LRC on a frame of {len(event.data)} bytes")
                else:
                    self._nack(f"frame longer than {self.max_data} bytes")
                    self.drop(f"oversized frame (limit {self.max_data} bytes)")
            except Exception:
                self.log.failure("evnet link {peer}: error handling input", peer=self.peer_name)

    # -- output coalescing ---------------------------------------------------

    def _write(self, data: bytes) -> None:
        """Write C{data}: at once, or with the rest of the chunk being handled."""
        if self._out is None:
            self._send(data)
        else:
            self._out.append(data)

    def _flush(self) -> None:
        out, self._out = self._out, None
        if out:
            self._send(out[0] if len(out) == 1 else b"".join(out))

    def _send(self, data: bytes) -> None:
        if self._eager:
            eager.write(self.transport, data)
        else:
            self.transport.write(data)

    def _lose_connection(self) -> None:
        # What was coalesced so far goes out first (loseConnection sends what
        # the transport holds, then closes); later output is collected again.
        collecting = self._out is not None
        self._flush()
        self.transport.loseConnection()
        if collecting:
            self._out = []

    def connectionLost(self, reason: Failure = error.ConnectionDone()) -> None:
        self._cancel_timer()
        if self.state is not LinkState.CLOSED:
            self._goto(LinkInput.LOST)
        why = self._lost_reason or reason.getErrorMessage()
        pending, self._queue = self._queue, deque()
        for _, _, d in pending:
            d.errback(Failure(LinkClosed(f"link closed before ACK: {why}")))
        waiters, self._open_waiters = self._open_waiters, []
        for d in waiters:
            d.errback(Failure(LinkClosed(f"link did not open: {why}")))
        self.handler.linkLost(self, reason)

    # -- input -------------------------------------------------------------

    def _control_received(self, byte: int) -> None:
        if byte == framing.ENQ:
            if self.state is LinkState.WAITING_ENQ:
                self._cancel_timer()
                reason = self.handler.linkRequested(self)
                if reason is None:
                    self._write(ACK_BYTE)
                    self._link_up()
                else:
                    self.log.info("evnet link {peer}: refused: {reason}", peer=self.peer_name, reason=reason)
                    self._write(NACK_BYTE)
                    self._lost_reason = f"refused: {reason}"
                    self._goto(LinkInput.CLOSE)
                    self._lose_connection()
            else:
                self.log.debug("evnet link {peer}: stray ENQ ignored", peer=self.peer_name)
        elif byte == framing.ACK:
            if self.state is LinkState.OPENING:
                self._cancel_timer()
                self._link_up()
            elif self.state in (LinkState.AWAITING_ACK, LinkState.RETRANSMITTING):
                self._cancel_timer()
                _, _, d = self._queue.popleft()
                self._retries = 0
                self._goto(LinkInput.ACKED)
                d.callback(None)
                self._send_next()
            else:
                self.log.debug("evnet link {peer}: stray ACK ignored", peer=self.peer_name)
        elif byte == framing.NACK:
            if self.state is LinkState.OPENING:
                self._cancel_timer()
                self._lost_reason = "the peer refused the link (NACK to ENQ)"
                self._goto(LinkInput.CLOSE)
                self.handler.linkRefused(self)
                self._lose_connection()
            elif self.state in (LinkState.AWAITING_ACK, LinkState.RETRANSMITTING):
                if self._retries >= self.max_retransmissions:
                    msg = self._queue[0][1]
                    self.drop(f"{msg.code} frame NACKed {self._retries + 1} times")
                else:
                    self._retries += 1
                    self._goto(LinkInput.NACKED)
                    self._transmit()
            else:
                self.log.debug("evnet link {peer}: stray NACK ignored", peer=self.peer_name)
        elif byte == framing.EOT:
            self._lost_reason = "the peer closed the link (EOT)"
            self._goto(LinkInput.CLOSE)
            self._lose_connection()

    def _frame_received(self, data: bytes) -> None:
        if self.state not in _LINK_UP:
            self._nack("frame received before the link was opened with ENQ")
            return
        try:
            msg = decode(data)
        except MessageError as e:
            self._nack(str(e))
            return
        self._write(ACK_BYTE)
        self.handler.messageReceived(self, msg)

    def _nack(self, why: str) -> None:
        self.log.warn("evnet link {peer}: NACK: {why}", peer=self.peer_name, why=why)
        self._write(NACK_BYTE)
        rejected = getattr(self.handler, "frameRejected", None)  # (handlers that are not LinkHandlers lack it)
        if rejected is not None:
            rejected(self, why)

    # -- output ------------------------------------------------------------

    def sendMessage(self, msg: Message) -> defer.Deferred:
        """
        Queue C{msg}; the Deferred fires when the peer ACKs it, or fails with
        L{LinkClosed} if the link goes first, or with L{MessageError} at
        once if C{msg} cannot be encoded or is longer than a frame.  It never
        raises.
        """
        try:
            data = msg.to_data()
        except MessageError as e:
            return defer.fail(e)
        if len(data) > self.max_data:
            return defer.fail(MessageError(f"{msg.code}: DATA of {len(data)} bytes is longer than the {self.max_data} a frame may carry"))
        frame = framing.encode_frame(data)
        if self.state in (LinkState.CLOSING, LinkState.CLOSED):
            return defer.fail(LinkClosed(f"cannot send {msg.code}: link {self.state.value}"))
        d: defer.Deferred = defer.Deferred()
        self._queue.append((frame, msg, d))
        if self.state is LinkState.OPEN:
            self._send_next()
        return d

    def send(self, msg: Message) -> None:
        """Send C{msg}, logging (not raising) if it is never acknowledged."""
        self.sendMessage(msg).addErrback(self._log_unsent, msg)

    def _log_unsent(self, failure: Failure, msg: Message) -> None:
        failure.trap(LinkError, MessageError)
        self.log.info(
            "evnet link {peer}: {code} not delivered: {why}",
            peer=self.peer_name,
            code=msg.code,
            why=failure.getErrorMessage(),
        )

    @property
    def pending(self) -> int:
        """Messages queued or in flight."""
        return len(self._queue)

    def _send_next(self) -> None:
        if self.state is LinkState.OPEN and self._queue:
            self._retries = 0
            self._goto(LinkInput.SENT)
            self._transmit()

    def _transmit(self) -> None:
        frame, msg, _ = self._queue[0]
        self._write(frame)
        self._start_timer(self.ack_timeout, f"no ACK for {msg.code} within {self.ack_timeout:g} s")

    # -- closing -----------------------------------------------------------

    def close(self) -> None:
        """Close cleanly: EOT, then the connection."""
        if self.state in (LinkState.CLOSING, LinkState.CLOSED):
            return
        self._lost_reason = "closed by us (EOT)"
        self._goto(LinkInput.CLOSE)
        self._cancel_timer()
        self._write(EOT_BYTE)
        self._lose_connection()

    def drop(self, why: str) -> None:
        """Drop the link at once because of C{why} (logged)."""
        if self.state in (LinkState.CLOSING, LinkState.CLOSED):
            return
        self.log.warn("evnet link {peer}: dropping the link: {why}", peer=self.peer_name, why=why)
        self._lost_reason = why
        self._goto(LinkInput.CLOSE)
        self._cancel_timer()
        self._lose_connection()

    # -- timers ------------------------------------------------------------

    def _start_timer(self, seconds: float, why: str) -> None:
        self._cancel_timer()
        self._timer = self.clock.callLater(seconds, self._timed_out, why)

    def _cancel_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _timed_out(self, why: str) -> None:
        self._timer = None
        self.drop(why)


class LinkFactory(Factory):
    """
    Builds L{FramedLink}s that all report to one C{handler}.  Use
    C{initiator=True} for the connecting side.
    """

    protocol = FramedLink
    noisy = False

    def __init__(self, handler: LinkHandler, *, initiator: bool, clock: Optional[IReactorTime] = None, **options: Any) -> None:
        if clock is None:
            from twisted.internet import reactor as clock  # type: ignore[no-redef]
        self.handler = handler
        self.initiator = initiator
        self.clock = clock
        self.options = options

    def buildProtocol(self, addr: Any) -> FramedLink:
        link = FramedLink(self.handler, self.clock, initiator=self.initiator, **self.options)
        link.factory = self
        return link
