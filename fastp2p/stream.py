"""Stream: one bidirectional, flow-controlled byte stream multiplexed on a Connection.

Semantics follow trio's ``SendStream``/``ReceiveStream`` and go-libp2p's
``network.Stream``: ``readinto`` returns 0 at end of stream (never raises for
EOF), ``close_write`` half-closes (the peer sees EOF), ``reset`` aborts both
directions, and concurrent use of one direction raises ``BusyResourceError``.
"""

from __future__ import annotations

import asyncio
import collections
from typing import TYPE_CHECKING, Any

from fastp2p._typing import ReadableBuffer, WritableBuffer
from fastp2p.errors import (
    BusyResourceError,
    ClosedResourceError,
    ConnectionClosedError,
    StreamErrorCode,
    StreamResetError,
)

if TYPE_CHECKING:
    from fastp2p.peer import PeerID
    from fastp2p.transport.conn import Connection

__all__ = ["Stream", "ConflictDetector"]


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

    def __init__(self, conn: Connection, stream_id: int, *, inbound: bool) -> None:
        self.conn = conn
        self.id = stream_id
        self.inbound = inbound
        self.protocol: str | None = None
        self._chunks: collections.deque[memoryview] = collections.deque()
        self._buffered = 0
        # Bytes in ``_chunks`` that never counted against the peer's send window
        # (multistream leftovers pushed back by ``_unread``): no credit to return.
        self._uncredited = 0
        self._eof = False
        self._write_closed = False
        self._reset: BaseException | None = None
        self._closed = False
        self._read_waiter: asyncio.Future[None] | None = None
        self._write_waiter: asyncio.Future[None] | None = None
        self._read_guard = ConflictDetector("another task is already reading from this stream")
        self._write_guard = ConflictDetector("another task is already writing to this stream")

    # -- identity -------------------------------------------------------------

    @property
    def peer(self) -> PeerID:
        """The remote peer."""
        return self.conn.remote_peer

    def __repr__(self) -> str:
        return f"<Stream id={self.id} protocol={self.protocol!r} peer={self.conn.remote_peer}>"

    # -- fed by the Connection (synchronous, from the receive path) -----------

    def _feed_data(self, data: memoryview) -> None:
        if self._closed or self._reset is not None:
            # Data for a stream the application abandoned: return the credit at once.
            self.conn._acknowledge(self.id, len(data))
            return
        self._chunks.append(data)
        self._buffered += len(data)
        if self._buffered > self.conn._recv_soft_limit:
            self.conn._reader_too_slow(self)
        self._wake_reader()

    def _feed_eof(self) -> None:
        self._eof = True
        self._wake_reader()

    def _set_reset(self, exc: BaseException) -> None:
        if self._reset is None:
            self._reset = exc
        self._wake_reader()
        self._wake_writer()

    def _window_updated(self) -> None:
        self._wake_writer()

    def _wake_reader(self) -> None:
        w = self._read_waiter
        if w is not None and not w.done():
            w.set_result(None)

    def _wake_writer(self) -> None:
        w = self._write_waiter
        if w is not None and not w.done():
            w.set_result(None)

    def _unread(self, data: bytes) -> None:
        """Push bytes back in front of the receive buffer (multistream leftovers)."""
        if data:
            self._chunks.appendleft(memoryview(data))
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
            fut = self.conn._loop.create_future()
            self._read_waiter = fut
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
            self.conn._acknowledge(self.id, n)

    async def readinto(self, buf: WritableBuffer) -> int:
        """Read available bytes into ``buf``; returns the count, 0 at end of stream.

        Raises:
            StreamResetError: the stream was reset.
            ClosedResourceError: this side closed the stream with ``aclose``.
            BusyResourceError: another task is reading.

        Cancellation: nothing is consumed; the data stays buffered for the next read.
        """
        with self._read_guard, memoryview(buf) as raw, raw.cast("B") as out:
            # The views are released on every exit path, so a caller's mmap can be
            # closed right after an exception (a traceback must not pin it).
            want = len(out)
            if want == 0:
                return 0
            await self._wait_readable()
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
        with self._read_guard:
            if max_bytes == 0:
                return b""
            await self._wait_readable()
            parts2: list[memoryview] = []
            got = 0
            chunks = self._chunks
            while chunks and got < max_bytes:
                c = chunks[0]
                room = max_bytes - got
                if len(c) <= room:
                    parts2.append(chunks.popleft())
                    got += len(c)
                else:
                    parts2.append(c[:room])
                    chunks[0] = c[room:]
                    got = max_bytes
            data = b"".join(parts2)
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
        with self._write_guard:
            view = memoryview(data)
            if view.ndim != 1 or view.itemsize != 1:
                view = view.cast("B")
            conn = self.conn
            sent = 0
            total = len(view)
            while True:
                self._check_writable()
                n = conn._send_data(self.id, view[sent:] if sent else view)
                sent += n
                if sent >= total:
                    break
                if n == 0:
                    fut = conn._loop.create_future()
                    self._write_waiter = fut
                    try:
                        await fut
                    finally:
                        self._write_waiter = None
            if conn._raw.write_paused:  # type: ignore[attr-defined]
                await conn._drain(self)
                # A reset or aclose while the transport drained fails the write
                # (go-libp2p ErrReset): the caller must not assume delivery.
                self._check_writable()

    def _check_writable(self) -> None:
        if self._reset is not None:
            raise self._reset
        if self._closed:
            raise ClosedResourceError("stream is closed")
        if self._write_closed:
            raise ClosedResourceError("write side of the stream is closed")

    async def drain(self) -> None:
        """Wait until the transport's write buffer is below its high-water mark."""
        await self.conn._drain()

    async def close_write(self) -> None:
        """Half-close: the peer reads EOF; reading from this side continues.

        Idempotent. Raises StreamResetError if the stream was reset.
        """
        if self._write_closed:
            return
        if self._reset is not None:
            raise self._reset
        self._write_closed = True
        self.conn._close_stream(self.id)

    def reset(self, code: int = StreamErrorCode.NONE) -> None:
        """Abort both directions; the peer sees ``StreamResetError``. Idempotent."""
        if self._reset is None:
            self._reset = StreamResetError("stream reset locally", code=code, remote=False)
            self.conn._reset_stream(self.id, code)
        self._drop_buffers()
        self._wake_reader()
        self._wake_writer()

    async def aclose(self) -> None:
        """Close the write side and stop reading; unread data is discarded.

        Never raises for an already reset or closed stream.
        """
        if self._closed:
            return
        if self._reset is None and not self._write_closed:
            try:
                await self.close_write()
            except (StreamResetError, ConnectionClosedError):
                pass
        self._closed = True
        self._drop_buffers()
        self._wake_reader()
        self._wake_writer()
        self.conn._stream_closed_by_app(self)

    def _drop_buffers(self) -> None:
        if self._buffered:
            n = self._buffered
            self._chunks.clear()
            self._buffered = 0
            unc = self._uncredited
            self._uncredited = 0
            if n - unc > 0:
                self.conn._acknowledge(self.id, n - unc)

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
            self.conn._stream_closed_by_app(self)
        else:
            await self.aclose()
