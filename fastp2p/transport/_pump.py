"""Pure twins of the native pumps (fastp2p._native.frame): ``ReadPump``, the read
half of the TCP transport's asyncio ``BufferedProtocol``; ``WritePump``, the TCP
connection's write half; ``SealState``, ``NoisePath``'s pass state; ``SendStep``,
a stream's write from the writer to the socket in one call."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from fastp2p.errors import ClosedResourceError
from fastp2p.proto.mplex import frame as mplex_frame
from fastp2p.proto.yamux import frame as yamux_frame

#: a write of at most this many bytes after the first of a loop pass is copied
#: into the pass's buffer (many streams answering in one pass: one writev, not
#: a syscall each); larger ones are queued by reference
COALESCE_MAX = 16 * 1024
#: queued bytes that leave at once instead of waiting for the end of the pass.
#: 1 MiB, not 256 KiB: a writer looping over 16-256 KiB writes (sealed, queued by
#: reference) then makes a quarter of the writev calls, and the writer's core is
#: what bounds one stream: AES-GCM bulk +10-25% at 16-256 KiB, 1-4 MiB writes
#: unchanged (each fills the queue alone either way); 2 MiB was worse at 1 MiB
QUEUE_MAX = 1024 * 1024


class ReadPump:
    """The event loop calls ``get_buffer``/``buffer_updated`` once per socket read.
    Each read goes to ``_on_data(view)`` (the connection's receive step) or, before
    that is set, to the subclass's ``_read_early(nbytes)``."""

    _rxv: memoryview
    _rxv_now: memoryview
    _on_data: Callable[[memoryview], None] | None
    bytes_received: int
    #: the connection's write half, whose pass end marker a push-mode read makes
    #: (see WritePump._mark_after_read); None: none
    _writer: WritePump | None = None

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._rxv_now

    def buffer_updated(self, nbytes: int) -> None:
        self.bytes_received += nbytes
        cb = self._on_data
        if cb is not None:
            cb(self._rxv[:nbytes])
            w = self._writer
            if w is not None:
                w._mark_after_read()
            return
        self._read_early(nbytes)

    def _read_early(self, nbytes: int) -> None:  # pragma: no cover - the subclass's
        raise NotImplementedError




class WritePump:
    """The write half of the TCP connection (which derives from it): ``write``
    and its loop-pass state (``in_pass``: a write was made in this pass;
    ``_closed``; ``_pend``, ``_pend_tail``, ``_pend_n``: the pass's later writes;
    ``_at_end``: called at the pass's end; the transport, ``loop.call_soon``,
    the end-of-pass marker ``_end_cb`` and its context ``_ctx``; the protocol
    ``_p``, whose ``lost`` flag drops queued bytes)."""

    in_pass: bool
    _closed: bool
    _pend: list[Any] | None
    _pend_tail: bytearray | None
    _pend_n: int
    _at_end: Callable[[], None] | None
    _again: int  # 1: the pass's end waits one more turn of the loop, 2: it did (hold_past_tasks)
    _marked: bool  # the end-of-pass marker is scheduled (by the pass's first write or a read)
    _transport: Any
    _call_soon: Callable[..., Any]
    _end_cb: Callable[[], None]
    _ctx: Any
    _p: Any

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closed:
            raise ClosedResourceError("connection closed")
        pend = self._pend
        if pend is None:
            if not self.in_pass:
                # The first write of a loop pass leaves at once (no added latency);
                # a marker at the end of the pass sends what follows it.
                self.in_pass = True
                try:
                    # Transports accept only bytes-like builtins; a memoryview keeps a
                    # recycled FrameBlock alive until the loop has sent it.
                    self._transport.write(data if type(data) is bytes else memoryview(data))
                finally:
                    # The marker is made after the write: the message does not wait
                    # for the handle (and the write cannot leave the pass unmarked).
                    # A read's marker, made already, ends this pass too.
                    self._mark()
                return
            self._pend = pend = []
        n = data.nbytes if type(data) is memoryview else len(data)
        if n <= COALESCE_MAX:
            tail = self._pend_tail
            if tail is None:
                self._pend_tail = tail = bytearray(data)
                pend.append(tail)
            else:
                tail += data
                if len(tail) > COALESCE_MAX:
                    # Small writes leave per 16 KiB, as soon as that much is held:
                    # the peer starts on the first answers while the rest are made
                    # (NoisePath sends its batches of small sends on at once too).
                    self._send_pending()
                    return
        else:
            pend.append(data if type(data) is bytes else memoryview(data))
            self._pend_tail = None
        n += self._pend_n
        if n >= QUEUE_MAX:
            self._send_pending()
        else:
            self._pend_n = n

    def _mark(self) -> None:
        """Schedule the pass's end marker, unless it is already."""
        if not self._marked:
            self._marked = True
            self._call_soon(self._end_cb, context=self._ctx)

    def _mark_after_read(self) -> None:
        """A read came: make the pass's end marker now.

        A task woken by a read runs in the loop's next batch of callbacks. Were
        the end marker made by its answer (the pass's first write), the marker
        would run in a batch of its own after that one: one more turn of the
        loop, with one more poll of the sockets, per message. Made here, in the
        read's callback, it runs in the woken tasks' batch, after them. The first
        answer still leaves at once (and sealed on its own: what follows it in
        the pass is held and sealed together, as before).
        """
        if not self._closed:
            self._mark()

    def defer_to_pass_end(self, cb: Callable[[], None]) -> bool:
        if not self.in_pass or self._closed:
            return False
        at_end = self._at_end
        if at_end is None:
            self._at_end = cb
            return True
        return at_end == cb

    def flush(self) -> None:
        self._send_pending()

    def hold_flush(self) -> None:
        """Queue every write from now to the end of this loop pass, then send them
        in one go (as if a write had already left in this pass).

        For the upgrade's step boundaries: the listener's multistream answer
        leaves with Noise message 2, the new connection's first frames (the
        identify request among them) leave together.
        """
        if not self.in_pass:
            self.in_pass = True
            if self._marked and self._again == 0:
                # A read's marker, due in this batch: the end waits one turn more,
                # as a marker made now would (the holder's tasks run in the next).
                self._again = 1
            self._mark()

    def hold_past_tasks(self) -> None:
        if not self.in_pass:
            self.hold_flush()
        elif self._again == 0 and not self._closed:
            # The end already waits in the loop's queue, ahead of the tasks made
            # since: it goes round once more when it comes (see _end_pass). Once
            # per pass: streams opening on every turn must not hold writes forever.
            self._again = 1

    def _end_pass(self) -> None:
        if self._again == 1:
            self._again = 2
            self._call_soon(self._end_cb, context=self._ctx)
            return
        self._again = 0
        self._marked = False
        at_end = self._at_end
        if at_end is not None:
            self._at_end = None
            try:
                at_end()  # its writes join this pass's queued bytes
            finally:  # a failing callback must not hold later writes back
                self.in_pass = False
                self._send_pending()
            return
        self.in_pass = False
        if self._pend is not None:
            self._send_pending()

    def _send_pending(self) -> None:
        pend = self._pend
        if pend is not None:
            self._pend = None
            self._pend_tail = None
            self._pend_n = 0
            if not self._closed and not self._p.lost:
                if len(pend) == 1:
                    self._transport.write(pend[0])
                else:
                    self._transport.writelines(pend)  # one writev (uvloop)


class SealState:
    """``NoisePath``'s pass state (it derives from this): the raw connection, the
    send cipher ``_send``, the plaintext held for one seal at the pass's end
    (``_pend``), when that batch began (``_batch_t0``), whether a batch left
    early in this pass (``_early``) and the path's end-of-pass callback
    ``_end_cb``."""

    raw: Any
    _send: Any
    _pend: bytearray | None
    _batch_t0: float
    _early: bool
    _end_cb: Callable[[], None]


class SendStep:
    """``stream_send`` of a connection sealing with Noise over TCP, in one call:
    ``step(stream_id, data) -> bytes taken``. Pure twin of the native one (see
    its docstring): a write to an open stream with send window is framed here
    and handed to the path's ``send`` (the native step writes that out); every
    other case goes to ``fallback(stream_id, data)``, untouched."""

    def __init__(self, session: Any, streams: dict[int, Any], yamux: bool, max_frame: int,
                 path: Any, fallback: Callable[[int, Any], int]) -> None:
        if max_frame <= 0:
            raise ValueError("max_frame must be > 0")
        self.session = session
        self.streams = streams
        self.yamux = yamux
        self.max_frame = max_frame
        self.path = path
        self.pump = path.raw
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
        if not self.live or self.pump._closed:
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
        self.wire_out += self.path.send(bufs)
        if self.yamux:
            st.send_window = window - n
        self.frames_out += k
        self.bytes_out += n + hlen
        return n


#: most muxer frames one step seals (more: the general path)
_STEP_FRAMES = 16
