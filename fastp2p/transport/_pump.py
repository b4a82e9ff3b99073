"""Pure twins of the native pumps (fastp2p._native.frame): ``ReadPump``, the read
half of the TCP transport's asyncio ``BufferedProtocol``; ``WritePump``, its write
half's pass state; ``SendStep``, a stream's write from the writer to the socket."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from fastp2p.proto.mplex import frame as mplex_frame
from fastp2p.proto.yamux import frame as yamux_frame


class ReadPump:
    """The event loop calls ``get_buffer``/``buffer_updated`` once per socket read.
    Each read goes to ``_on_data(view)`` (the connection's receive step) or, before
    that is set, to the subclass's ``_read_early(nbytes)``."""

    _rxv: memoryview
    _rxv_now: memoryview
    _on_data: Callable[[memoryview], None] | None
    bytes_received: int

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._rxv_now

    def buffer_updated(self, nbytes: int) -> None:
        self.bytes_received += nbytes
        cb = self._on_data
        if cb is not None:
            cb(self._rxv[:nbytes])
            return
        self._read_early(nbytes)

    def _read_early(self, nbytes: int) -> None:  # pragma: no cover - the subclass's
        raise NotImplementedError


class WritePump:
    """The write half's loop-pass state of the TCP connection (which derives from
    it), read and set by ``SendStep``: ``in_pass`` (a write was made in this loop
    pass), ``_closed``, ``_pend`` (the pass's later writes, or None), the
    transport, ``loop.call_soon``, the end-of-pass marker ``_end_cb`` and its
    context ``_ctx``."""

    in_pass: bool
    _closed: bool
    _pend: list[Any] | None
    _transport: Any
    _call_soon: Callable[..., Any]
    _end_cb: Callable[[], None]
    _ctx: Any


class SendStep:
    """``stream_send`` of a connection sealing with Noise over TCP, in one call:
    ``step(stream_id, data) -> bytes taken``. Pure twin of the native one (see
    its docstring): a loop pass's first write to an open stream with send window
    is framed, sealed and written here; every other case goes to
    ``fallback(stream_id, data)``, untouched."""

    def __init__(self, session: Any, streams: dict[int, Any], yamux: bool, max_frame: int,
                 cipher: Any, pump: WritePump, fallback: Callable[[int, Any], int]) -> None:
        if max_frame <= 0:
            raise ValueError("max_frame must be > 0")
        self.session = session
        self.streams = streams
        self.yamux = yamux
        self.max_frame = max_frame
        self.cipher = cipher
        self.pump = pump
        self.fallback = fallback
        self.live = True
        self.frames_out = 0
        self.bytes_out = 0
        self.wire_out = 0

    def __call__(self, stream_id: int, data: Any) -> int:
        n = self._send(stream_id, data)
        if n < 0:
            return self.fallback(stream_id, data)
        return n

    def _send(self, stream_id: int, data: Any) -> int:
        pump = self.pump
        if not self.live or pump.in_pass or pump._closed or pump._pend is not None:
            return -1
        if self.session._out:  # (frames the session queued go first: the general way)
            return -1
        st = self.streams.get(stream_id)
        if st is None or st.local_closed:
            return -1
        if self.yamux:
            if st.state == 0:  # SYN not sent yet (the session's _PENDING_SYN)
                return -1
            window = st.send_window
            if window <= 0:
                return -1
        else:
            window = sys.maxsize
        mv = memoryview(data).cast("B")
        total = len(mv)
        if total == 0:
            return -1
        n = min(total, window)
        k = -(-n // self.max_frame)
        if k > _STEP_FRAMES:
            return -1
        bufs: list[Any] = []
        hlen = 0
        for off in range(0, n, self.max_frame):
            size = min(n - off, self.max_frame)
            if self.yamux:
                head = yamux_frame.encode_header(yamux_frame.TYPE_DATA, 0, stream_id, size)
            else:  # key = id * 2 + 1: a stream we opened (MESSAGE_INITIATOR)
                flag = mplex_frame.MESSAGE_INITIATOR if stream_id & 1 else mplex_frame.MESSAGE_RECEIVER
                head = mplex_frame.mplex_encode_header(stream_id >> 1, flag, size)
            bufs.append(head)
            bufs.append(mv[off : off + size])
            hlen += len(head)
        block = self.cipher.seal_frames(bufs)
        if self.yamux:
            st.send_window = window - n
        pump.in_pass = True
        pump._call_soon(pump._end_cb, context=pump._ctx)
        pump._transport.write(memoryview(block))
        self.frames_out += k
        self.bytes_out += n + hlen
        self.wire_out += len(block)
        return n


#: most muxer frames one step seals (more: the general path)
_STEP_FRAMES = 16
