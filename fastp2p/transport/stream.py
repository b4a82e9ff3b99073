"""Stream: one bidirectional, flow-controlled byte stream multiplexed on a Connection.

Semantics follow trio's ``SendStream``/``ReceiveStream`` and go-libp2p's
``network.Stream``: ``readinto`` returns 0 at end of stream (never raises for
EOF), ``close_write`` half-closes (the peer sees EOF), ``reset`` aborts both
directions, and concurrent use of one direction raises ``BusyResourceError``.
"""

from __future__ import annotations

import asyncio
import collections
from typing import TYPE_CHECKING, Any, Protocol, cast

from fastp2p._typing import ReadableBuffer, WritableBuffer
from fastp2p.errors import (
    BusyResourceError,
    ClosedResourceError,
    ConnectionClosedError,
    NegotiationError,
    StreamErrorCode,
    StreamResetError,
)

if TYPE_CHECKING:
    from fastp2p.peer import PeerID
    from fastp2p.transport.conn import Connection

__all__ = ["Stream", "StreamDriver", "ConflictDetector", "PushSink"]


class StreamDriver(Protocol):
    """What a :class:`Stream` needs from the connection that carries it.

    ``Connection`` implements it; a stream never touches anything else of its
    connection, so data paths (TCP, shared memory, RDMA) change below this line
    without touching ``Stream``. The connection in turn drives a stream only
    through ``Stream.feed_data``, ``feed_eof``, ``set_reset``, ``window_updated``
    and ``buffered``.
    """

    loop: asyncio.AbstractEventLoop
    remote_peer: PeerID
    #: unread bytes per stream above which the connection is told (mplex backpressure)
    recv_soft_limit: int
    #: consumed bytes a stream may hold back before ``stream_ack`` (0: ack every read);
    #: must stay well below half the smallest receive window, or a reader could
    #: keep the credit a blocked sender waits for
    ack_batch: int

    def check_open(self) -> None:
        """Raise the connection's ``ConnectionClosedError`` if it is closed."""

    def stream_send(self, stream_id: int, data: memoryview) -> int:
        """Queue as much of ``data`` as the send window allows; returns the count."""

    def stream_lend(self, stream_id: int, buf: memoryview, waiter: asyncio.Future[None]) -> Any:
        """Lend a waiting reader's buffer to the receive step (None: not taken)."""
        ...

    def stream_ack(self, stream_id: int, n: int) -> None:
        """The application consumed ``n`` bytes: return flow-control credit."""

    def stream_close_write(self, stream_id: int) -> None:
        """Half-close (FIN)."""

    def stream_reset(self, stream_id: int, code: int) -> None:
        """Reset the stream on the wire."""

    def stream_released(self, stream: Stream) -> None:
        """The application is done with ``stream`` (forget it)."""

    def stream_overfull(self, stream: Stream) -> None:
        """``stream`` holds more than ``recv_soft_limit`` unread bytes."""

    @property
    def write_paused(self) -> bool:
        """True while the data path's write buffer is above its high-water mark."""

    #: an object whose ``write_paused`` is the sending path's (read per message)
    pause_state: Any
    #: kicked when a read starts waiting (``BusyPoller``), or None: no busy polling
    busy_poll: Any

    async def wait_drained(self, interrupt: asyncio.Future[None] | None = None) -> None:
        """Wait until the data path drained (or ``interrupt`` completes)."""


#: a stream's receive queue until it needs one (falsy; never appended to: see _chunk_queue)
_NO_CHUNKS: collections.deque[memoryview] = cast("collections.deque[memoryview]", ())

_BUSY_READING = "another task is already reading from this stream"
_BUSY_WRITING = "another task is already writing to this stream"


class ConflictDetector:
    """Raise ``BusyResourceError`` when two tasks enter the same section (trio)."""

    __slots__ = ("_held", "_msg")

    def __init__(self, msg: str) -> None:
        self._held = False
        self._msg = msg

    def __enter__(self) -> None:
        if self._held:
            raise BusyResourceError(self._msg)
        self._held = True

    def __exit__(self, *exc: object) -> None:
        self._held = False


class Stream:
    """A multiplexed stream to one peer, speaking one negotiated protocol.

    Obtain streams from ``Host.open_stream`` or in a handler set with
    ``Host.set_handler``; never construct one directly.

    Attributes:
        id: the muxer's stream id (int).
        protocol: the negotiated protocol id, or None before negotiation.
        conn: the owning ``Connection``.
        peer: the remote ``PeerID``.
    """

    # Slots: a stream's attributes in a fixed layout instead of an instance dict
    # (idle streams are many); ``__dict__`` stays for attributes set from outside.
    __slots__ = ("conn", "id", "inbound", "protocol", "_chunks", "_buffered", "_uncredited",
                 "_unacked", "_ack_batch", "_eof", "_write_closed", "_reset", "_closed",
                 "_read_waiter", "_read_into", "_read_got", "_loan", "_write_waiter", "_reading",
                 "_writing", "_push", "__dict__", "__weakref__")

    def __init__(self, conn: StreamDriver, stream_id: int, *, inbound: bool) -> None:
        # Typed as the public Connection for users; the stream itself only uses
        # the StreamDriver methods.
        self.conn: Connection = conn  # type: ignore[assignment]
        self.id = stream_id
        self.inbound = inbound
        self.protocol: str | None = None
        # made on first need (_chunk_queue), dropped when a reader waits: an empty
        # deque costs a 64-slot block (~0.75 KiB a stream)
        self._chunks: collections.deque[memoryview] = _NO_CHUNKS
        self._buffered = 0
        # Bytes in ``_chunks`` that never counted against the peer's send window
        # (multistream leftovers pushed back by ``unread``): no credit to return.
        self._uncredited = 0
        # Consumed bytes not yet acknowledged (credit is returned in batches).
        self._unacked = 0
        self._ack_batch: int = getattr(conn, "ack_batch", 0)
        self._eof = False
        self._write_closed = False
        self._reset: BaseException | None = None
        self._closed = False
        # a read's future, or the push reader (start_push): both done()/set_result()
        self._read_waiter: asyncio.Future[None] | _PushReader | None = None
        # A reader waiting in ``readinto`` lends its buffer here, so arriving data
        # is copied once, straight into it (``feed_data``), instead of queued.
        self._read_into: memoryview | None = None
        self._read_got = 0
        # Or the driver's receive step copies into it, natively (StreamDriver.stream_lend).
        self._loan: Any = None
        self._write_waiter: asyncio.Future[None] | None = None
        # A task is in a read / a write (ConflictDetector's check, as two flags: two
        # objects fewer per stream for the garbage collector to walk).
        self._reading = False
        self._writing = False
        # The reader of a stream in push mode (start_push), or None.
        self._push: _PushReader | None = None

    # -- identity -------------------------------------------------------------

    @property
    def peer(self) -> PeerID:
        """The remote peer."""
        return self.conn.remote_peer

    def __repr__(self) -> str:
        return f"<Stream id={self.id} protocol={self.protocol!r} peer={self.conn.remote_peer}>"

    # -- fed by the Connection (synchronous, from the receive path) -----------

    @property
    def buffered(self) -> int:
        """Bytes received and not yet read by the application."""
        return self._buffered

    def feed_data(self, data: memoryview, transient: bool = False) -> None:
        """Data for this stream arrived (``transient``: copy it if it is kept)."""
        if self._closed or self._reset is not None:
            # Data for a stream the application abandoned: return the credit at once.
            self.conn.stream_ack(self.id, len(data))
            return
        n = len(data)
        into = self._read_into
        if into is not None and not self._chunks:
            # The lent buffer stays lent until the reader runs again: every frame
            # of this receive batch fills it (one wake-up, one read call per batch).
            w = self._read_waiter
            if w is not None and not w.cancelled():
                got = self._read_got
                k = min(n, len(into) - got)
                if k:
                    into[got : got + k] = data[:k]
                    self._read_got = got + k
                    self._buffered += k
                    if not w.done():
                        w.set_result(None)
                    if k == n:
                        return
                    data = data[k:]
                    n -= k
        unread = self._buffered + n
        loan = self._loan
        if loan is not None:
            # bytes after these must not land in the lent buffer, ahead of them
            loan.spill()
            unread += loan.got  # not acknowledged either until the reader runs
        chunks = self._chunks
        if chunks is _NO_CHUNKS:  # (_chunk_queue inlined: once per message)
            chunks = self._chunks = collections.deque()
        chunks.append(memoryview(bytes(data)) if transient else data)
        self._buffered += n
        if unread > self.conn.recv_soft_limit:
            self.conn.stream_overfull(self)
        self._wake_reader()

    def feed_eof(self) -> None:
        """The peer half-closed."""
        self._eof = True
        self._wake_reader()

    def set_reset(self, exc: BaseException) -> None:
        """The stream or its connection failed with ``exc``."""
        if self._reset is None:
            self._reset = exc
        self._wake_reader()
        self._wake_writer()
        if self._push is not None:
            self._push.wake()  # (also while paused or between loans: a failure is always told)

    def window_updated(self) -> None:
        """The peer granted send credit."""
        self._wake_writer()

    def _wake_reader(self) -> None:
        w = self._read_waiter
        if w is not None and not w.done():
            w.set_result(None)

    def _wake_writer(self) -> None:
        w = self._write_waiter
        if w is not None and not w.done():
            w.set_result(None)

    def _chunk_queue(self) -> collections.deque[memoryview]:
        chunks = self._chunks
        if chunks is _NO_CHUNKS:
            chunks = self._chunks = collections.deque()
        return chunks

    def _unread_credited(self, data: bytes) -> None:
        self._chunk_queue().appendleft(memoryview(data))
        self._buffered += len(data)

    def unread(self, data: bytes) -> None:
        """Push bytes back in front of the receive buffer (multistream leftovers)."""
        if data:
            self._chunk_queue().appendleft(memoryview(data))
            self._buffered += len(data)
            self._uncredited += len(data)

    # -- reading ----------------------------------------------------------------

    async def _wait_readable(self) -> None:
        if self._closed:
            raise ClosedResourceError("stream is closed")
        while not self._chunks:
            if self._reset is not None:
                raise self._reset
            if self._closed:
                raise ClosedResourceError("stream is closed")
            if self._eof:
                return
            self._chunks = _NO_CHUNKS  # (empty) a waiting stream holds no queue
            conn = self.conn
            fut = conn.loop.create_future()
            self._read_waiter = fut
            if conn.busy_poll is not None:
                conn.busy_poll.kick()
            try:
                await fut
            finally:
                self._read_waiter = None

    def _consume(self, n: int) -> None:
        self._buffered -= n
        unc = self._uncredited
        if unc:
            take = min(unc, n)
            self._uncredited = unc - take
            n -= take
        if n:
            n += self._unacked
            if n < self._ack_batch:
                # The window update is sent only once half the window is consumed
                # anyway: ack every read would cost a session call per message.
                self._unacked = n
                return
            self._unacked = 0
            self.conn.stream_ack(self.id, n)

    async def readinto(self, buf: WritableBuffer) -> int:
        """Read available bytes into ``buf``; returns the count, 0 at end of stream.

        Raises:
            StreamResetError: the stream was reset.
            ClosedResourceError: this side closed the stream with ``aclose``.
            BusyResourceError: another task is reading.

        Cancellation: nothing is consumed; the data stays buffered for the next read.
        """
        # The per-message path: the guard and the wait are written out here, not
        # called (each call is a frame, and a coroutine one more).
        if self._reading:
            raise BusyResourceError(_BUSY_READING)
        self._reading = True
        raw = out = None
        try:
            # The views are released on every exit path, so a caller's mmap can be
            # closed right after an exception (a traceback must not pin it).
            raw = memoryview(buf)
            out = raw if raw.format == "B" and raw.ndim == 1 and raw.c_contiguous else raw.cast("B")
            if len(out) == 0:
                return 0
            if not self._chunks and not self._eof and self._reset is None and not self._closed:
                # Wait with ``out`` lent to the driver's receive step (or, for a
                # driver that takes no loans, to ``feed_data``). A waiting stream
                # holds no (empty) queue: an idle one costs less, and what comes
                # while it waits goes to ``out`` first.
                self._chunks = _NO_CHUNKS
                conn = self.conn
                fut = conn.loop.create_future()
                # (raises for a read-only buffer, before anything is set)
                loan = conn.stream_lend(self.id, out, fut)
                self._read_waiter = fut
                if loan is None:
                    self._read_into = out
                    self._read_got = 0
                else:
                    self._loan = loan
                if conn.busy_poll is not None:
                    conn.busy_poll.kick()
                try:
                    await fut
                except BaseException:
                    self._keep_landed(loan, out)
                    raise
                finally:
                    self._read_waiter = None
                    self._read_into = None
                    self._loan = None
                if loan is not None:
                    got = loan.unlend()
                    if got and not self._uncredited:
                        # _consume inlined for a loan's usual case (feed_data
                        # counted the other way's bytes in _buffered; these never were)
                        n = got + self._unacked
                        if n < self._ack_batch:
                            self._unacked = n
                        else:
                            self._unacked = 0
                            conn.stream_ack(self.id, n)
                        return got
                    self._buffered += got
                else:
                    got = self._read_got
                    self._read_got = 0
                if got:
                    self._consume(got)
                    return got
            await self._wait_readable()
            return self._take_into(out)
        finally:
            if out is not None and out is not raw:
                out.release()
            if raw is not None:
                raw.release()
            self._reading = False

    def _take_into(self, out: memoryview) -> int:
        """Copy buffered chunks into ``out``; the bytes taken (consumed)."""
        want = len(out)
        got = 0
        chunks = self._chunks
        while chunks and got < want:
            c = chunks[0]
            n = len(c)
            room = want - got
            if n <= room:
                out[got : got + n] = c
                got += n
                chunks.popleft()
            else:
                out[got:want] = c[:room]
                chunks[0] = c[room:]
                got = want
        self._consume(got)
        return got

    def _keep_landed(self, loan: Any, out: memoryview) -> None:
        """A read's wait ended by an exception (cancelled): bytes that already
        landed in the caller's buffer stay buffered for the next read (nothing
        is lost, as documented)."""
        if loan is not None:
            got = loan.unlend()
        else:
            got = self._read_got
            self._read_got = 0
            self._buffered -= got
        if got:
            self._unread_credited(bytes(out[:got]))

    async def read(self, max_bytes: int | None = -1) -> bytes:
        """Read up to ``max_bytes`` (all until EOF when -1/None); b"" at end of stream.

        Raises:
            StreamResetError, ClosedResourceError, BusyResourceError: as ``readinto``.

        Cancellation: with ``max_bytes`` set nothing is consumed; reading to EOF
        may have consumed some data, which is lost.
        """
        if max_bytes is None or max_bytes < 0:
            parts: list[bytes] = []
            while True:
                chunk = await self.read(1 << 20)
                if not chunk:
                    return b"".join(parts)
                parts.append(chunk)
        if self._reading:
            raise BusyResourceError(_BUSY_READING)
        self._reading = True
        try:
            if max_bytes == 0:
                return b""
            await self._wait_readable()
            return self._take(max_bytes)
        finally:
            self._reading = False

    def read_nowait(self, max_bytes: int) -> bytes:
        """Up to ``max_bytes`` of what is already buffered; never waits.

        b"" means nothing is buffered now (not end of stream: ``read`` tells
        that, and raises for a reset or closed stream).

        Raises:
            BusyResourceError: another task is reading.
        """
        if not self._chunks or self._closed or self._reset is not None or max_bytes <= 0:
            return b""
        if self._reading:
            raise BusyResourceError(_BUSY_READING)
        return self._take(max_bytes)  # (synchronous: no other task can enter meanwhile)

    def _take(self, max_bytes: int) -> bytes:
        parts: list[memoryview] = []
        got = 0
        chunks = self._chunks
        while chunks and got < max_bytes:
            c = chunks[0]
            room = max_bytes - got
            if len(c) <= room:
                parts.append(chunks.popleft())
                got += len(c)
            else:
                parts.append(c[:room])
                chunks[0] = c[room:]
                got = max_bytes
        data = b"".join(parts)
        self._consume(got)
        return data

    async def readexactly(self, n: int) -> bytes:
        """Read exactly ``n`` bytes.

        Raises:
            asyncio.IncompleteReadError: EOF came first (``.partial`` holds what arrived).
            StreamResetError, ClosedResourceError, BusyResourceError: as ``readinto``.

        Cancellation: bytes read so far are lost.
        """
        buf = bytearray(n)
        view = memoryview(buf)
        got = 0
        while got < n:
            k = await self.readinto(view[got:])
            if k == 0:
                raise asyncio.IncompleteReadError(bytes(buf[:got]), n)
            got += k
        return bytes(buf)

    read_exactly = readexactly

    # -- push mode (callbacks instead of reads) ---------------------------------

    @property
    def reading(self) -> bool:
        """True while a task is in a read, or the stream pushes to a sink."""
        return self._reading

    def start_push(self, sink: PushSink) -> None:
        """Hand what arrives to ``sink``'s callbacks from now on, instead of
        returning it from reads (asyncio's BufferedProtocol contract): the
        stream lends ``sink.get_buffer(-1)`` to its receive step, and once
        bytes landed there, calls ``sink.buffer_updated(n)``: at the end of
        that read's native receive step (every frame of it demultiplexed), or
        in the loop's next callback round where Python delivered them. What
        is buffered already goes to the sink within this call.

        ``StreamTransport`` is the usual way to use it. Reads raise
        ``BusyResourceError`` while the stream pushes.

        Raises:
            BusyResourceError: a read is in progress, or the stream already pushes.
        """
        if self._reading or self._push is not None:
            raise BusyResourceError(_BUSY_READING)
        self._reading = True  # (reads and the push reader exclude each other)
        push = self._push = _PushReader(self, sink)
        # at once, not scheduled: a stream that arrived with its first bytes (a
        # lazy proposal and the request) is answered in the same pass (open +
        # 1-byte echo through a BufferedProtocol server: 115 -> 101 us)
        push.scheduled = True
        push._run()

    def pause_push(self) -> None:
        """Stop calling the sink (asyncio's ``pause_reading``): what arrives stays
        buffered and its flow-control credit is not returned, so the peer's
        writes stall within its window. Bytes that already landed in the lent
        buffer are still handed over. A failure is reported even while paused."""
        if self._push is not None:
            self._push.pause()

    def resume_push(self) -> None:
        """Undo ``pause_push``: buffered bytes go to the sink first."""
        if self._push is not None:
            self._push.resume()

    def stop_push(self) -> None:
        """End push mode: the sink is called no more (bytes that landed in its
        buffer are consumed); reads work again."""
        if self._push is not None:
            self._push.stop()

    def notify_writable(self, waiter: Any) -> None:
        """Complete ``waiter`` (anything with ``done()`` and ``set_result()``) when
        the peer grants send credit or the stream fails: the wake-up a callback
        writer waits for after ``write_nowait`` took less than it was given."""
        self._write_waiter = waiter

    # -- writing ----------------------------------------------------------------

    async def write(self, data: ReadableBuffer) -> None:
        """Send ``data`` (any buffer-protocol object) without copying it in Python.

        Returns once every byte was handed to the muxer within the send window and
        sealed for the wire; the caller may reuse ``data`` afterwards. Waits for
        flow-control credit and for the transport to drain (backpressure).

        Raises:
            ClosedResourceError: ``close_write``/``aclose`` was called.
            StreamResetError: the stream was reset (by either side).
            ConnectionClosedError: the connection is gone.
            BusyResourceError: another task is writing.

        Cancellation: some, all or none of ``data`` may have been sent.
        """
        if self._writing:
            raise BusyResourceError(_BUSY_WRITING)
        self._writing = True
        try:
            view = memoryview(data)  # byte_view inlined: once per write
            if view.ndim != 1 or view.format != "B":
                view = view.cast("B")
            conn = self.conn
            sent = 0
            total = len(view)
            while True:
                if self._reset is not None or self._closed or self._write_closed:
                    self._check_writable()
                n = conn.stream_send(self.id, view[sent:] if sent else view)
                sent += n
                if sent >= total:
                    break
                if n == 0:
                    fut = conn.loop.create_future()
                    self._write_waiter = fut
                    try:
                        await fut
                    finally:
                        self._write_waiter = None
            if conn.pause_state.write_paused:
                # A reset or aclose of this stream also ends the wait: its writer
                # must not stay blocked behind other streams' bytes.
                fut = conn.loop.create_future()
                self._write_waiter = fut
                try:
                    await conn.wait_drained(fut)
                finally:
                    self._write_waiter = None
                # A reset or aclose while the transport drained fails the write
                # (go-libp2p ErrReset): the caller must not assume delivery.
                self._check_writable()
        finally:
            self._writing = False

    def write_nowait(self, data: ReadableBuffer) -> int:
        """Hand what the send window allows of ``data`` to the muxer now; never waits.

        Returns the bytes accepted (like ``socket.send``), 0 when the window is
        shut. No backpressure: the caller's next ``write`` waits for the drain.

        Raises:
            ClosedResourceError, StreamResetError, ConnectionClosedError,
            BusyResourceError: as ``write``.
        """
        if self._writing:
            raise BusyResourceError(_BUSY_WRITING)
        if self._reset is not None or self._closed or self._write_closed:
            self._check_writable()
        view = memoryview(data)  # (byte_view inlined: once per message of a callback writer)
        if view.ndim != 1 or view.format != "B":
            view = view.cast("B")
        return self.conn.stream_send(self.id, view)  # (synchronous: no task can enter meanwhile)

    def _check_writable(self) -> None:
        if self._reset is not None:
            raise self._reset
        if self._closed:
            raise ClosedResourceError("stream is closed")
        if self._write_closed:
            raise ClosedResourceError("write side of the stream is closed")

    async def drain(self) -> None:
        """Wait until the transport's write buffer is below its high-water mark."""
        await self.conn.wait_drained()

    async def close_write(self) -> None:
        """Half-close: the peer reads EOF; reading from this side continues.

        Idempotent. Raises StreamResetError if the stream was reset.
        """
        self.close_write_nowait()

    def close_write_nowait(self) -> None:
        """``close_write`` for callback-style code (it never waits either)."""
        if self._write_closed:
            return
        if self._reset is not None:
            raise self._reset
        self._write_closed = True
        self.conn.stream_close_write(self.id)

    def reset(self, code: int = StreamErrorCode.NONE) -> None:
        """Abort both directions; the peer sees ``StreamResetError``. Idempotent."""
        if self._reset is None:
            self._reset = StreamResetError("stream reset locally", code=code, remote=False)
            self.conn.stream_reset(self.id, code)
        self._drop_buffers()
        self._wake_reader()
        self._wake_writer()
        if self._push is not None:
            self._push.wake()

    async def aclose(self) -> None:
        """Close the write side and stop reading; unread data is discarded.

        Never raises for an already reset or closed stream.
        """
        self.close_nowait()

    def close_nowait(self) -> None:
        """``aclose`` for callback-style code (it never waits either)."""
        if self._closed:
            return
        if self._reset is None and not self._write_closed:
            try:
                self.close_write_nowait()
            except (StreamResetError, ConnectionClosedError):
                pass
        push = self._push
        if push is not None:
            push.stop()
        self._closed = True
        self._drop_buffers()
        self._wake_reader()
        self._wake_writer()
        self.conn.stream_released(self)

    def _drop_buffers(self) -> None:
        n = self._unacked
        self._unacked = 0
        if self._buffered:
            self._chunks = _NO_CHUNKS
            unc = self._uncredited
            self._uncredited = 0
            n += self._buffered - unc
            self._buffered = 0
        if n > 0:
            self.conn.stream_ack(self.id, n)

    @property
    def is_closed(self) -> bool:
        """True after ``aclose`` or a reset."""
        return self._closed or self._reset is not None

    async def __aenter__(self) -> Stream:
        return self

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None and not issubclass(exc_type, (StreamResetError,)):
            self.reset(StreamErrorCode.CANCELLED)
            self._closed = True
            self.conn.stream_released(self)
        else:
            await self.aclose()


class PushSink(Protocol):
    """Where a stream in push mode (``Stream.start_push``) hands what arrives.

    ``get_buffer`` and ``buffer_updated`` are asyncio's ``BufferedProtocol``
    contract; the stream calls nothing else while a call is in progress.
    """

    def get_buffer(self, sizehint: int) -> WritableBuffer:
        """A writable, non-empty buffer for the next bytes (``sizehint``: bytes
        buffered, or -1)."""
        ...

    def buffer_updated(self, nbytes: int) -> None:
        """``nbytes`` landed at the start of the last buffer given."""

    def eof_received(self) -> None:
        """The peer half-closed (after every byte was handed over)."""

    def push_failed(self, exc: BaseException) -> None:
        """The stream was reset or its connection failed; nothing more comes."""

    def callback_failed(self, exc: Exception) -> None:
        """One of the calls above raised ``exc``; the stream pushes nothing more."""


class _PushReader:
    """The reader of a stream in push mode.

    It is the waiter the stream's Python paths complete (``done``,
    ``cancelled`` and ``set_result``, what ``Stream.feed_data`` and a wake-up
    expect of a future): completed, it runs ``_run`` once, in the loop's next
    callback round, so no user code runs inside the connection's event
    processing. A native loan gets ``_FeedEndWaiter`` instead, which runs
    ``_run`` at the end of the read's receive step. No task, no coroutine.
    """

    __slots__ = ("stream", "sink", "view", "armed", "scheduled", "paused", "eof_sent", "_call_soon",
                 "_at_feed_end")

    def __init__(self, stream: Stream, sink: PushSink) -> None:
        self.stream = stream
        self.sink: PushSink | None = sink
        #: the buffer lent to the receive step (released when the loan ends)
        self.view: memoryview | None = None
        #: lent and waiting: the receive path has not completed us yet
        self.armed = False
        self.scheduled = False
        self.paused = False
        self.eof_sent = False
        self._call_soon = stream.conn.loop.call_soon
        self._at_feed_end = _FeedEndWaiter(self)

    # the waiter's side (called by the receive path)
    def done(self) -> bool:
        return not self.armed

    def cancelled(self) -> bool:
        return False

    def set_result(self, _result: object) -> None:
        self.armed = False
        if not self.scheduled:
            self.scheduled = True
            self._call_soon(self._run)

    def wake(self) -> None:
        """Run soon, loan or not (start, resume, a failure)."""
        if not self.scheduled and self.sink is not None:
            self.scheduled = True
            self._call_soon(self._run)

    def pause(self) -> None:
        self.paused = True
        if self.armed:
            # nothing landed yet (else the receive path had completed us): end the loan
            self.armed = False
            self._collect()

    def resume(self) -> None:
        if self.paused:
            self.paused = False
            self.wake()

    def stop(self) -> None:
        """Push nothing more (the transport closed); bytes that landed are consumed."""
        self.sink = None
        self.armed = False
        self._collect()
        s = self.stream
        s._push = None
        s._reading = False
        self._at_feed_end.r = None  # (a cycle less for the collector: see StreamTransport._lost_cb)

    def _collect(self) -> int:
        """End the loan (or lent buffer) in progress; the bytes that landed in it,
        consumed (credit returned as ``readinto`` returns it)."""
        s = self.stream
        s._read_waiter = None
        view = self.view
        if view is not None:
            self.view = None
        loan = s._loan
        if loan is not None:
            s._loan = None
            got = loan.unlend()  # (releases the loan's export of the view)
            if view is not None:
                view.release()
            if got:
                if s._uncredited:
                    s._buffered += got  # (never counted: a loan's bytes bypass feed_data)
                    s._consume(got)
                else:  # (_consume inlined for a loan's usual case, as in readinto)
                    n = got + s._unacked
                    if n < s._ack_batch:
                        s._unacked = n
                    else:
                        s._unacked = 0
                        s.conn.stream_ack(s.id, n)
            return got
        if view is not None:
            view.release()
        if s._read_into is not None:
            s._read_into = None
            got = s._read_got
            s._read_got = 0
            if got:
                s._consume(got)
            return got
        return 0

    def _run(self) -> None:
        self.scheduled = False
        sink = self.sink
        if sink is None:
            return
        self.armed = False  # (woken while lent by a failure or a resume: nothing landed)
        try:
            got = self._collect()
            if got:
                sink.buffer_updated(got)
                if self.sink is not sink:
                    return
            self._next(sink)
        except Exception as exc:  # a sink's callback raised: it gets nothing more
            self.stop()
            sink.callback_failed(exc)

    def _next(self, sink: PushSink) -> None:
        """Hand over what is buffered, then lend the sink's next buffer and wait."""
        s = self.stream
        while True:
            if s._reset is not None:
                exc = s._reset
                self.stop()
                sink.push_failed(exc)
                return
            if s._closed or self.paused:
                return
            if type(s) is not Stream and not self._settled(sink):
                return
            if s._chunks:
                view = _writable_view(sink.get_buffer(s._buffered))
                try:
                    n = s._take_into(view)
                finally:
                    view.release()
                sink.buffer_updated(n)
                if self.sink is not sink:
                    return
                continue
            if s._eof:
                if not self.eof_sent:
                    self.eof_sent = True
                    sink.eof_received()
                return
            break
        # lend the sink's next buffer (readinto's wait, without the task)
        buf = sink.get_buffer(-1)
        view = memoryview(buf)
        if view.format != "B" or view.ndim != 1 or not view.nbytes:
            view.release()
            view = _writable_view(buf)
        s._chunks = _NO_CHUNKS  # (as readinto: a waiting stream holds no queue)
        conn = s.conn
        loan = conn.stream_lend(s.id, view, self._at_feed_end)  # (raises for a read-only buffer)
        if loan is None:
            if view.readonly:
                view.release()
                raise ValueError("get_buffer() must return a writable buffer")
            s._read_into = view
            s._read_got = 0
        else:
            s._loan = loan
        self.view = view
        s._read_waiter = self
        self.armed = True
        if conn.busy_poll is not None:
            conn.busy_poll.kick()

    def _settled(self, sink: PushSink) -> bool:
        """A lazily proposed stream (``_LazyStream``): the listener's answer is
        taken off first. False while it is incomplete (then it waits for more,
        lending nothing) or when it was a refusal (told to the sink)."""
        s = self.stream
        settle = getattr(s, "_settle_now", None)
        if settle is None:
            return True
        s._reading = False  # (its settling reads through read_nowait)
        try:
            ok = settle()
            if not ok and s._eof:
                s.reset(StreamErrorCode.PROTOCOL)
                raise NegotiationError(f"the stream ended before the peer answered {s.protocol!r}")
        except NegotiationError as exc:  # (the stream is reset)
            s._reading = True
            self.stop()
            sink.push_failed(exc)
            return False
        s._reading = True
        if ok:
            return True
        s._read_waiter = self
        self.armed = True
        return False


class _FeedEndWaiter:
    """The waiter a push reader lends with its sink's buffer to the native receive
    step. That step completes its waiters at the very end of a read's feed (every
    frame demultiplexed, the connection's records still to come, and guarded
    against a connection the sink closes), so the sink runs right there, as an
    asyncio protocol's ``data_received`` runs inside its transport's read
    callback. Scheduled instead (``_PushReader.set_result``), the sink's own
    wake-ups (a future a task awaits) would wait one more turn of the loop: a
    64-byte round trip through ``StreamTransport`` took 96 us instead of 84 on
    the dev VM. The Python paths (``feed_data``, an EOF, a reset) still
    schedule: they run inside the connection's event processing."""

    __slots__ = ("r",)

    def __init__(self, reader: _PushReader) -> None:
        self.r: _PushReader | None = reader

    def done(self) -> bool:
        r = self.r
        return r is None or not r.armed

    def cancelled(self) -> bool:
        return False

    def set_result(self, _result: object) -> None:
        r = self.r
        if r is None:
            return
        r.armed = False
        if not r.scheduled:
            r.scheduled = True
            r._run()


def _writable_view(buf: WritableBuffer) -> memoryview:
    view = memoryview(buf)
    if view.readonly or not view.nbytes:
        view.release()
        raise ValueError("get_buffer() must return a writable, non-empty buffer")
    if view.format != "B" or view.ndim != 1 or not view.c_contiguous:
        flat = view.cast("B")
        view.release()
        return flat
    return view
