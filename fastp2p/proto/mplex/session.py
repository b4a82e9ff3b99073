"""Sans-IO mplex session (``/mplex/6.7.0``): the same interface as the yamux session.

Rules
-----
libp2p mplex spec: a frame is ``uvarint(id << 3 | flag) uvarint(len) data``.
"Both parties can open a substream with the same ID", so a stream is named by
``(id, who initiated it)``. This session exposes one int per stream, the
**stream key**::

    key = id * 2 + 1    stream we initiated      (peer addresses it with *_RECEIVER flags)
    key = id * 2        stream the peer initiated (peer addresses it with *_INITIATOR flags)

All events and API calls use the key. Ids we allocate start at 0 and increase.

=========================  ======================================================
Received                   Action
=========================  ======================================================
NewStream, fresh id        StreamOpened(key) (the name payload is ignored)
NewStream, id in use       protocol error (go-mplex: "double open")
NewStream beyond limit     ResetReceiver for it, no event (not a session error)
Message                    DataReceived (zero-copy chunk of the input)
Message, unknown stream    ignored (spec: late frames after a reset)
Message after peer Close   reset the stream (spec: writing after close is a violation)
Close                      StreamEnded (once); half close
Reset                      StreamReset(key, 0); stream removed
too much unread data       we reset the stream, StreamReset(key, RESOURCE_LIMIT)
=========================  ======================================================

Theory of operation
-------------------
mplex has no flow control (spec "Deprecation Notice"). ``send_window`` is a large
constant and ``send_data`` always takes everything, split into messages of at most
``max_message_size`` ("up to 1MiB per message"). To bound memory against a
sender that ignores a slow reader (spec "Implementation notes": "Resetting the
offending stream"), bytes delivered but not yet ``acknowledge_received`` are
counted per stream; past ``config.max_buffered_per_stream`` the stream is reset.

mplex has neither ping nor GoAway: ``ping`` raises LocalProtocolError
(``supports_ping`` is False) and ``go_away`` just ends the session locally
(``ConnectionTerminated(code, remote=False)``); the driver then closes the
connection, which the peer sees as every stream ending. Decoder errors (varint,
oversized frame, flag 7) emit ``ConnectionTerminated`` and are raised from
``receive_data``; there is nothing to queue for the peer.

Implementation
--------------
Headers come from the injected ``mplex_encode_header``; payloads are memoryview
slices of the caller's buffers (not copied: leave them untouched until the
``data_to_send()`` list holding them is written). ``DataReceived.data`` views
the buffer given to ``receive_data``.

With kernels that have an ``MplexDemux`` (the pure twin and the native one), an
attached stream (:meth:`MplexSession.attach`) gets its messages from the demux
without an event each, as with yamux; the buffering limit is its credit.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from fastp2p._typing import ReadableBuffer
from fastp2p.config import MplexConfig
from fastp2p.errors import (
    GoAwayCode,
    LocalProtocolError,
    ProtocolError,
    RemoteProtocolError,
    ResourceLimitExceededError,
    StreamErrorCode,
)
from fastp2p.proto._demux import DemuxSession
from fastp2p.proto._history import StreamHistory, StreamTable
from fastp2p.proto.mplex.frame import (
    CLOSE_INITIATOR,
    CLOSE_RECEIVER,
    MAX_STREAM_ID,
    MESSAGE_INITIATOR,
    MESSAGE_RECEIVER,
    NEW_STREAM,
    RESET_INITIATOR,
    RESET_RECEIVER,
    message_key,
)
from fastp2p.proto.muxer import (
    ConnectionTerminated,
    DataReceived,
    MuxerEvent,
    StreamEnded,
    StreamOpened,
    StreamReset,
)

__all__ = ["PROTOCOL_ID", "MplexSession"]

PROTOCOL_ID = "/mplex/6.7.0"

HISTORY_SIZE = 4096


def _default_kernels() -> Any:
    from fastp2p.proto.mplex import frame

    return frame


class _Stream:
    __slots__ = ("key", "mplex_id", "initiator", "local_closed", "remote_closed", "buffered")

    def __init__(self, key: int, mplex_id: int, initiator: bool) -> None:
        self.key = key
        self.mplex_id = mplex_id
        self.initiator = initiator  # we opened it
        self.local_closed = False
        self.remote_closed = False
        self.buffered = 0  # delivered, not yet acknowledged


class MplexSession(DemuxSession, StreamTable[_Stream]):
    """An mplex session (see the module docstring for stream keys).

    Args:
        is_client: True on the dialer side (mplex itself does not care).
        config: message size and limits.
        kernels: codec provider with ``mplex_encode_header`` and ``MplexDecoder``
            (and optionally ``MplexDemux``); defaults to the pure
            ``fastp2p.proto.mplex.frame``.

    Attributes:
        stats: ``bytes_in``/``bytes_out`` (wire bytes: received, and queued for
            sending), ``frames_in`` (decoded records),
            ``frames_out``, ``streams_opened``, ``streams_accepted``,
            ``streams_rejected``, ``streams_overflowed``.
        rtt: always None (mplex has no ping).
    """

    MUXER_NAME = "mplex"

    supports_ping = False
    rtt: float | None = None


    def limit_receive_window(self, n: int) -> None:
        """mplex has no flow-control windows: nothing to limit."""

    def __init__(
        self,
        *,
        is_client: bool,
        config: MplexConfig | None = None,
        kernels: Any | None = None,
    ) -> None:
        self.config = config if config is not None else MplexConfig()
        if kernels is None:
            kernels = _default_kernels()
        self._encode = kernels.mplex_encode_header
        # The demux is the decoder plus a table of streams whose messages it
        # delivers itself (``attach``); kernels without one decode only.
        demux = getattr(kernels, "MplexDemux", None)
        self._demux: Any = demux(self.config.max_message_size) if demux is not None else None
        self._decoder: Any = (self._demux if demux is not None
                              else kernels.MplexDecoder(self.config.max_message_size))
        self.is_client = is_client
        #: unread bytes of one stream at which the driver should stop reading the
        #: socket (TCP backpressure), well before the hard limit resets the stream.
        #: The demux's fast way stops there too, so past it every message goes
        #: through the driver, which sees the stream fill up and pauses.
        self.recv_soft_limit = self.config.max_buffered_per_stream // 2
        self._next_id = 0
        self._streams: dict[int, _Stream] = {}
        self._history = StreamHistory(HISTORY_SIZE)
        self._n_inbound = 0
        self._n_outbound = 0
        self._events: deque[MuxerEvent] = deque()
        self._out: list[ReadableBuffer] = []
        self._terminated: tuple[int, bool] | None = None
        self._tx_step: Any = None
        self._stats = {
            "bytes_in": 0,
            "bytes_out": 0,
            "frames_in": 0,
            "frames_out": 0,
            "streams_opened": 0,
            "streams_accepted": 0,
            "streams_rejected": 0,
            "streams_overflowed": 0,
        }

    # -- driver interface ------------------------------------------------------

    def receive_data(self, data: ReadableBuffer, now: float) -> None:
        """Process bytes from the peer.

        Raises:
            RemoteProtocolError: malformed frame or duplicate NewStream; the session
                is terminated (``ConnectionTerminated`` queued).
        """
        if self._terminated is not None:
            return
        try:
            records = self._decode(data)
            self._on_records(records)
        except RemoteProtocolError as exc:
            self._fail(exc)
            raise

    def _on_records(self, records: Any) -> None:
        for flag, mid, payload in records:
            if flag == MESSAGE_INITIATOR or flag == MESSAGE_RECEIVER:
                self._on_message(message_key(flag, mid), payload)
            elif flag == NEW_STREAM:
                self._on_new_stream(mid)
            elif flag == CLOSE_INITIATOR or flag == CLOSE_RECEIVER:
                self._on_close(mid * 2 + (flag == CLOSE_RECEIVER))
            else:
                self._on_reset(mid * 2 + (flag == RESET_RECEIVER))

    def take_records(self, records: Any, now: float) -> bool:
        """Take the records a :meth:`sealed_step` handed over (those the demux's
        fast way did not take). Returns True when they reached the session (the
        driver then drains events and sends); False once it is terminated."""
        if self._terminated is not None:
            return False
        try:
            self._on_records(records)
        except RemoteProtocolError as exc:
            self._fail(exc)
            raise
        return True

    def attach(self, stream_id: int, deliver: Any) -> bool:
        """Deliver the stream's message payloads by calling ``deliver(payload)``.

        From now on a Message for ``stream_id`` that stays within
        ``config.max_buffered_per_stream`` is counted as buffered and handed to
        ``deliver`` inside :meth:`receive_data` (by the kernel's demux: in C with
        the native kernels) instead of becoming a ``DataReceived`` event; the
        payload views the input buffer. Every other frame, and every frame
        after it in the same batch, takes the normal path, so events keep their
        order. Buffered bytes still drop only through :meth:`acknowledge_received`.
        Ends when the stream is removed, the peer closes it, or :meth:`detach`.
        Returns False (nothing attached) for kernels without a demux or a
        stream that cannot receive.
        """
        demux = self._demux
        stream = self._streams.get(stream_id)
        if demux is None or stream is None or stream.remote_closed or self._terminated is not None:
            return False
        self._sync(stream)  # (a second attach must not drop what the first delivered)
        demux.attach(stream_id, deliver, self._fast_credit(stream.buffered))
        return True

    def _fast_credit(self, buffered: int) -> int:
        # what the demux may deliver to a stream holding ``buffered`` bytes: up to
        # the soft limit (past it messages come through the driver, see recv_soft_limit)
        return max(0, self.recv_soft_limit - buffered)

    def detach(self, stream_id: int) -> None:
        """Stop :meth:`attach`'s delivery: ``DataReceived`` events again."""
        if self._demux is None:
            return
        stream = self._streams.get(stream_id)
        if stream is not None:
            self._sync(stream)
        self._demux.detach(stream_id)

    def _sync(self, stream: _Stream) -> None:
        """Count what the demux delivered to ``stream`` as buffered."""
        n = self._demux.take(stream.key)
        if n:
            stream.buffered += n

    def next_event(self) -> MuxerEvent | None:
        """Pop the next event, or None."""
        return self._events.popleft() if self._events else None

    def data_to_send(self) -> list[ReadableBuffer]:
        """Take everything queued for the wire (one iovec)."""
        out = self._out
        if out:
            self._out = []
        return out

    def get_timer(self) -> float | None:
        """mplex has no timers: always None."""
        return None

    def handle_timer(self, now: float) -> None:
        """Nothing to do (mplex has no timers)."""

    # -- API user --------------------------------------------------------------

    def open_stream(self) -> int:
        """Open a stream (NewStream named ``str(id)``); returns its key (odd).

        Raises:
            ConnectionClosedError: the session is terminated.
            ResourceLimitExceededError: ``max_streams`` outbound streams open, or
                the 60-bit id space is exhausted.
        """
        self._check_open()
        if self._n_outbound >= self.config.max_streams:
            raise ResourceLimitExceededError(
                f"{self._n_outbound} outbound streams open (max_streams)"
            )
        mid = self._next_id
        if mid > MAX_STREAM_ID:
            raise ResourceLimitExceededError("mplex stream ids exhausted")
        self._next_id = mid + 1
        key = mid * 2 + 1
        self._streams[key] = _Stream(key, mid, True)
        self._n_outbound += 1
        self._stats["streams_opened"] += 1
        # libp2p mplex spec: "the data of the message set to the name of the stream".
        name = str(mid).encode()
        self._emit(self._encode(mid, NEW_STREAM, len(name)))
        self._out.append(name)
        self._stats["bytes_out"] += len(name)
        return key

    def _send_plan(self) -> tuple[bool, int]:
        return False, self.config.max_message_size

    def send_data(self, stream_id: int, data: ReadableBuffer) -> int:
        """Queue all of ``data`` as messages of at most ``max_message_size``; returns len(data).

        Raises:
            ConnectionClosedError: the session is terminated.
            StreamResetError: the stream was reset.
            ClosedResourceError: we closed it for writing.
            LocalProtocolError: unknown stream key.
        """
        # _writable's usual case inlined (one call fewer per write); it raises the rest
        stream = self._streams.get(stream_id) if self._terminated is None else None
        if stream is None or stream.local_closed:
            stream = self._writable(stream_id)
        mv = data if type(data) is memoryview else memoryview(data)
        if mv.ndim != 1 or mv.format != "B":
            mv = mv.cast("B")
        n = len(mv)
        if n == 0:
            return 0
        flag = MESSAGE_INITIATOR if stream.initiator else MESSAGE_RECEIVER
        mid = stream.mplex_id
        out = self._out
        encode = self._encode
        max_msg = self.config.max_message_size
        off = 0
        frames = 0
        header_bytes = 0
        while off < n:
            size = n - off
            if size > max_msg:
                size = max_msg
            header = encode(mid, flag, size)
            out.append(header)
            out.append(mv if size == n else mv[off : off + size])
            header_bytes += len(header)
            off += size
            frames += 1
        stats = self._stats
        stats["frames_out"] += frames
        stats["bytes_out"] += n + header_bytes
        return n

    def send_window(self, stream_id: int) -> int:
        """A large constant (``max_message_size * 8``): mplex has no flow control."""
        self._writable(stream_id)
        return self.config.max_message_size * 8

    def close_stream(self, stream_id: int) -> None:
        """Half-close (Close*); idempotent; no-op on removed streams or a dead session.

        Raises:
            LocalProtocolError: unknown stream key.
        """
        if self._terminated is not None:
            return
        stream = self._streams.get(stream_id)
        if stream is None:
            self._check_known(stream_id)
            return
        if stream.local_closed:
            return
        stream.local_closed = True
        self._control(stream, CLOSE_INITIATOR if stream.initiator else CLOSE_RECEIVER)
        if stream.remote_closed:
            self._remove(stream, False, 0, False)

    def reset_stream(self, stream_id: int, code: int = 0) -> None:
        """Reset both directions (Reset*); mplex carries no code. No-op if removed.

        Raises:
            LocalProtocolError: unknown stream key.
        """
        if self._terminated is not None:
            return
        stream = self._streams.get(stream_id)
        if stream is None:
            self._check_known(stream_id)
            return
        self._control(stream, RESET_INITIATOR if stream.initiator else RESET_RECEIVER)
        self._remove(stream, True, code, False)

    def acknowledge_received(self, stream_id: int, n: int, now: float = 0.0) -> None:
        """The application consumed ``n`` bytes (only bounds buffering; nothing is sent).

        Raises:
            LocalProtocolError: more than delivered and unacknowledged.
        """
        stream = self._streams.get(stream_id)
        if stream is None:
            return
        demux = self._demux
        if demux is not None:
            self._sync(stream)
        if n < 0 or n > stream.buffered:
            raise LocalProtocolError(
                f"acknowledged {n} bytes but only {stream.buffered} are unacknowledged"
            )
        stream.buffered -= n
        if demux is not None:
            demux.set_credit(stream_id, self._fast_credit(stream.buffered))

    def ping(self, now: float) -> int:
        """mplex has no ping.

        Raises:
            LocalProtocolError: always (check ``supports_ping``).
        """
        raise LocalProtocolError("mplex has no ping; use the libp2p ping protocol")

    def go_away(self, code: int = GoAwayCode.NORMAL) -> None:
        """End the session locally: ``ConnectionTerminated(code, remote=False)``.

        mplex has no GoAway frame; the driver closes the connection next.
        """
        self._terminate(int(code), remote=False, reason="local close")

    # -- frame handlers ----------------------------------------------------------

    def _on_new_stream(self, mid: int) -> None:
        key = mid * 2
        if key in self._streams:
            raise RemoteProtocolError(f"NewStream for mplex id {mid}, which is open")
        if self._n_inbound >= self.config.max_streams:
            # go-mplex: refuse by resetting, the connection stays up.
            self._emit(self._encode(mid, RESET_RECEIVER, 0))
            self._stats["streams_rejected"] += 1
            self._history.remember(key, True, int(StreamErrorCode.RESOURCE_LIMIT), False)
            return
        # libp2p mplex spec: "Reusing a stream ID after closing a stream may result
        # in undefined behaviour": we accept it as a new stream (go-mplex does).
        self._history.forget(key)
        self._streams[key] = _Stream(key, mid, False)
        self._n_inbound += 1
        self._stats["streams_accepted"] += 1
        self._events.append(StreamOpened(key))

    def _on_message(self, key: int, payload: Any) -> None:
        stream = self._streams.get(key)
        if stream is None:
            return  # unknown or reset stream: ignore (the peer may not know yet)
        n = len(payload)
        if stream.remote_closed:
            if n:
                # libp2p mplex spec: "Writing to a stream after it has been closed is
                # a protocol violation": contain it to the stream.
                self._control(stream, RESET_INITIATOR if stream.initiator else RESET_RECEIVER)
                self._remove(stream, True, int(StreamErrorCode.PROTOCOL), False)
                self._events.append(StreamReset(key, int(StreamErrorCode.PROTOCOL)))
            return
        if not n:
            return
        demux = self._demux
        if demux is not None:
            self._sync(stream)
        limit = self.config.max_buffered_per_stream
        buffered = stream.buffered + n
        if buffered > limit:
            # libp2p mplex spec, Implementation notes: handle slow readers by
            # "Resetting the offending stream".
            self._stats["streams_overflowed"] += 1
            code = int(StreamErrorCode.RESOURCE_LIMIT)
            self._control(stream, RESET_INITIATOR if stream.initiator else RESET_RECEIVER)
            self._remove(stream, True, code, False)
            self._events.append(StreamReset(key, code))
            return
        stream.buffered = buffered
        if demux is not None:
            demux.set_credit(key, self._fast_credit(buffered))
        if type(payload) is not memoryview:
            payload = memoryview(payload)
        self._events.append(DataReceived(key, payload))

    def _on_close(self, key: int) -> None:
        stream = self._streams.get(key)
        if stream is None or stream.remote_closed:
            return
        stream.remote_closed = True
        if self._demux is not None:
            # a message after the peer's Close resets the stream: the slow path does that
            self._sync(stream)
            self._demux.detach(key)
        self._events.append(StreamEnded(key))
        if stream.local_closed:
            self._remove(stream, False, 0, True)

    def _on_reset(self, key: int) -> None:
        stream = self._streams.get(key)
        if stream is None:
            return
        self._remove(stream, True, 0, True)
        self._events.append(StreamReset(key, 0))

    # -- helpers -------------------------------------------------------------------

    def _emit(self, header: bytes) -> None:
        self._out.append(header)
        stats = self._stats
        stats["frames_out"] += 1
        stats["bytes_out"] += len(header)

    def _control(self, stream: _Stream, flag: int) -> None:
        self._emit(self._encode(stream.mplex_id, flag, 0))

    def _remove(self, stream: _Stream, reset: bool, code: int, remote: bool) -> None:
        del self._streams[stream.key]
        if self._demux is not None:
            self._demux.detach(stream.key)
        self._history.remember(stream.key, reset, code, remote)
        if stream.initiator:
            self._n_outbound -= 1
        else:
            self._n_inbound -= 1

    def _check_known(self, key: int) -> None:
        if key in self._history:
            return
        if key & 1 and key >= 0 and key // 2 < self._next_id:
            return
        if not key & 1 and key >= 0:
            return  # peer-initiated: any id may have existed
        raise LocalProtocolError(f"stream {key} was never opened")

    def _terminate(self, code: int, *, remote: bool, reason: str) -> None:
        if self._terminated is not None:
            return
        self._terminated = (code, remote)
        for key in list(self._streams):
            self._history.remember(key, True, int(StreamErrorCode.NONE), remote)
        self._streams.clear()
        if self._demux is not None:
            self._demux.clear()
        self._n_inbound = self._n_outbound = 0
        self._events.append(ConnectionTerminated(code, remote, reason))

    def _fail(self, exc: ProtocolError) -> None:
        code = int(getattr(exc, "error_code", GoAwayCode.PROTOCOL_ERROR))
        self._terminate(code, remote=False, reason=str(exc))
