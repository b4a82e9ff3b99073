"""StreamTransport: an asyncio ``Transport`` over one fastp2p stream.

Any asyncio ``Protocol`` or ``BufferedProtocol`` runs on a libp2p stream
unchanged, as go-libp2p's gostream gives Go a ``net.Conn``: the code that
serves a TCP socket through ``loop.create_server`` serves a protocol id
through ``Host.set_protocol_handler``. No task or coroutine runs per stream:
a ``BufferedProtocol``'s own buffer is lent to the receive step (over TCP the
payload is decrypted straight into it), and its callbacks run at the end of
the read that brought the bytes, as an asyncio protocol's ``data_received``
runs inside its transport's read callback (``Stream.start_push``).

Semantics follow asyncio's socket transports:

- ``write`` never blocks: what the stream's send window cannot take now waits
  here, in order, and leaves as the peer grants credit; the protocol's
  ``pause_writing`` is called when that backlog passes the high-water mark or
  the connection's own write buffer is full, ``resume_writing`` once both are
  below (``set_write_buffer_limits``).
- ``pause_reading`` stops the callbacks; what arrives meanwhile waits in the
  stream, and its flow-control credit is not returned, so the peer's writes
  stall within its window (backpressure across the network).
- ``eof_received`` returning a false value closes the transport (a half-close
  from the peer then ends the stream), a true one keeps it open for writing.
- ``close`` stops reading, sends what waits, half-closes and releases the
  stream, then calls ``connection_lost(None)``; ``abort`` resets the stream.
  A reset by the peer, or a failed connection, calls ``connection_lost`` with
  the ``StreamResetError`` / ``ConnectionClosedError``.
- An exception from a protocol callback is logged, the stream is reset
  (``StreamErrorCode.INTERNAL``) and ``connection_lost`` gets the exception.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from typing import TYPE_CHECKING, Any

from fastp2p._typing import ReadableBuffer
from fastp2p.errors import BusyResourceError, P2PError, StreamErrorCode

if TYPE_CHECKING:
    from fastp2p.transport.stream import Stream

__all__ = ["StreamTransport"]

log = logging.getLogger("fastp2p.stream")

#: asyncio's defaults for a transport's write buffer
DEFAULT_HIGH_WATER = 64 * 1024

#: a plain ``Protocol``'s receive buffer (``data_received`` gets bytes copied from it)
DATA_BUFFER = 64 * 1024


class _Writable:
    """The waiter ``Stream.notify_writable`` completes: the backlog is sent in
    the loop's next callback round."""

    __slots__ = ("_t", "_done")

    def __init__(self, t: StreamTransport) -> None:
        self._t: StreamTransport | None = t
        self._done = True

    def done(self) -> bool:
        return self._done

    def set_result(self, _result: object) -> None:
        t = self._t
        if not self._done and t is not None:
            self._done = True
            t._loop.call_soon(t._send_backlog)


class _DataSink:
    """A plain ``asyncio.Protocol`` as a push sink: bytes land in one buffer of
    the transport's and go to ``data_received`` as ``bytes``."""

    __slots__ = ("buf", "data_received")

    def __init__(self, protocol: asyncio.Protocol) -> None:
        self.buf = memoryview(bytearray(DATA_BUFFER))
        self.data_received = protocol.data_received

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.buf

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(self.buf[:nbytes].tobytes())


class _Sink:
    """The transport as ``Stream.start_push`` sees it: a ``BufferedProtocol``'s
    own ``get_buffer``/``buffer_updated`` (nothing runs between the stream and
    them), a plain ``Protocol``'s through a ``_DataSink``."""

    __slots__ = ("t", "get_buffer", "buffer_updated")

    def __init__(self, t: StreamTransport) -> None:
        self.t: Any = t

    def bind(self, protocol: asyncio.BaseProtocol) -> None:
        if isinstance(protocol, asyncio.BufferedProtocol):
            src: Any = protocol
        elif isinstance(protocol, asyncio.Protocol):
            src = _DataSink(protocol)
        else:
            raise TypeError(f"{type(protocol).__name__} is neither an asyncio Protocol nor a BufferedProtocol")
        self.get_buffer = src.get_buffer
        self.buffer_updated = src.buffer_updated

    def unbind(self) -> None:
        """Forget the transport and the protocol (the stream is done with them)."""
        self.t = None
        self.get_buffer = self.buffer_updated = None

    def eof_received(self) -> None:
        self.t._eof_received()

    def push_failed(self, exc: BaseException) -> None:
        self.t._connection_lost(exc)

    def callback_failed(self, exc: Exception) -> None:
        self.t._callback_failed(exc)


class StreamTransport(asyncio.Transport):
    """An asyncio transport carrying ``protocol`` over ``stream``.

    Constructing one attaches it: ``protocol.connection_made(transport)`` is
    called at once, then the stream's bytes go to the protocol's callbacks.
    ``Host.set_protocol_handler`` and ``Host.open_stream_protocol`` make them
    for you. ``get_extra_info`` knows ``"stream"``, ``"connection"``,
    ``"peer_id"``, ``"protocol_id"`` and ``"peername"`` (the remote multiaddr).

    Raises (from the constructor):
        BusyResourceError: a task is reading the stream.
        Exception: whatever ``connection_made`` raised (the stream is reset).
    """

    def __init__(self, stream: Stream, protocol: asyncio.BaseProtocol) -> None:
        if stream.reading:  # (checked before connection_made: the protocol gets nothing)
            raise BusyResourceError("the stream is being read (by a task, or another transport)")
        super().__init__()
        self._stream = stream
        self._loop = stream.conn.loop
        self._protocol: Any = protocol
        self._closing = False
        self._lost = False
        self._eof_wanted = False
        #: bytes the stream's send window did not take yet, in order
        self._backlog: collections.deque[bytes | memoryview] = collections.deque()
        self._backlog_n = 0
        self._writable = _Writable(self)
        self._high = DEFAULT_HIGH_WATER
        self._low = DEFAULT_HIGH_WATER // 4
        self._protocol_paused = False
        self._drain_task: asyncio.Task[None] | None = None
        self._reading = True
        self._sink = _Sink(self)
        self._sink.bind(protocol)
        try:
            protocol.connection_made(self)
        except BaseException:
            self._closing = self._lost = True
            stream.reset(StreamErrorCode.INTERNAL)
            stream.close_nowait()
            raise
        if not self._closing:
            stream.start_push(self._sink)

    # -- asyncio.BaseTransport ---------------------------------------------------

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        s = self._stream
        if name == "stream":
            return s
        if name == "connection":
            return s.conn
        if name == "peer_id":
            return s.conn.remote_peer
        if name == "protocol_id":
            return s.protocol
        if name == "peername":
            return s.conn.remote_addr
        return default

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        """Stop reading; send what waits, half-close and release the stream;
        then ``connection_lost(None)``."""
        if self._closing:
            return
        self._closing = True
        self._stream.pause_push()
        if not self._backlog:
            self._finish_close()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._sink.bind(protocol)  # (the stream calls the new protocol from its next round)
        self._protocol = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._protocol

    # -- asyncio.ReadTransport ---------------------------------------------------

    def is_reading(self) -> bool:
        return self._reading and not self._closing

    def pause_reading(self) -> None:
        self._reading = False
        self._stream.pause_push()

    def resume_reading(self) -> None:
        self._reading = True
        if not self._closing:
            self._stream.resume_push()

    # -- asyncio.WriteTransport --------------------------------------------------

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        if high is None:
            high = DEFAULT_HIGH_WATER if low is None else 4 * low
        if low is None:
            low = high // 4
        if not high >= low >= 0:
            raise ValueError(f"high ({high!r}) must be >= low ({low!r}) must be >= 0")
        self._high, self._low = high, low
        self._check_pause()

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._low, self._high

    def get_write_buffer_size(self) -> int:
        """Bytes waiting for the peer's send credit (the connection's own write
        buffer is shared by its streams and not counted)."""
        return self._backlog_n

    def write(self, data: ReadableBuffer) -> None:
        """Send ``data`` (copied if the send window cannot take it now)."""
        if self._backlog or self._closing or self._eof_wanted:
            self._write_queued(data)
            return
        view = memoryview(data)
        n = view.nbytes
        try:
            k = self._stream.write_nowait(view)
        except P2PError as exc:
            self._connection_lost(exc)
            return
        finally:
            view.release()
        if k < n:
            self._backlog_add(data, k)
            self._wait_writable()
            self._check_pause()
        elif self._protocol_paused or self._stream.conn.pause_state.write_paused:
            self._check_pause()

    def _write_queued(self, data: ReadableBuffer) -> None:
        if self._eof_wanted:
            raise RuntimeError("Cannot call write() after write_eof()")
        if self._closing:
            return  # (asyncio's transports drop writes once closing, too)
        self._backlog_add(data, 0)
        self._check_pause()

    def _backlog_add(self, data: ReadableBuffer, skip: int) -> None:
        view = memoryview(data)
        if view.ndim != 1 or view.format != "B":
            view = view.cast("B")
        rest = view[skip:]
        if not rest.nbytes:
            return
        if type(view.obj) is not bytes:
            # the caller may reuse its buffer once write() returns: a copy waits
            # (bytes cannot change: a bulk writer's bytes wait without one)
            rest = rest.tobytes()  # type: ignore[assignment]
        self._backlog.append(rest)
        self._backlog_n += len(rest)

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self.write(data)

    def write_eof(self) -> None:
        """Half-close once what waits is sent: the peer reads EOF."""
        if self._eof_wanted or self._closing:
            return
        self._eof_wanted = True
        if not self._backlog:
            self._half_close()

    def can_write_eof(self) -> bool:
        return True

    def abort(self) -> None:
        """Reset the stream at once (what waits is dropped); ``connection_lost(None)``."""
        self._end(None, StreamErrorCode.CANCELLED)

    # -- internals -----------------------------------------------------------------

    def _half_close(self) -> None:
        try:
            self._stream.close_write_nowait()
        except P2PError as exc:
            self._connection_lost(exc)

    def _wait_writable(self) -> None:
        w = self._writable
        if w._done:
            w._done = False
            self._stream.notify_writable(w)

    def _send_backlog(self) -> None:
        """The peer granted credit (or the stream failed): send what waits, in order."""
        backlog = self._backlog
        while backlog and not self._lost:
            b = backlog[0]
            try:
                k = self._stream.write_nowait(b)
            except P2PError as exc:
                self._connection_lost(exc)
                return
            self._backlog_n -= k
            if k < len(b):
                backlog[0] = memoryview(b)[k:]  # (no copy of what is left)
                self._wait_writable()
                break
            backlog.popleft()
        if not backlog and not self._lost:
            if self._closing:
                self._finish_close()
                return
            if self._eof_wanted:
                self._half_close()
        self._check_pause()

    def _check_pause(self) -> None:
        if self._lost:
            return
        conn_full = self._stream.conn.pause_state.write_paused
        if not self._protocol_paused:
            if self._backlog_n > self._high or conn_full:
                self._protocol_paused = True
                self._call_protocol("pause_writing")
                if conn_full:
                    self._watch_drain()
        elif self._backlog_n <= self._low and not conn_full:
            self._protocol_paused = False
            self._call_protocol("resume_writing")
        elif conn_full:
            self._watch_drain()

    def _watch_drain(self) -> None:
        # the connection's write buffer is full (rare: a slow network); a task
        # waits for it to drain, then the protocol may resume
        if self._drain_task is None:
            self._drain_task = self._loop.create_task(self._drained())

    async def _drained(self) -> None:
        try:
            await self._stream.drain()
        except P2PError:
            pass  # the stream's failure reaches connection_lost through the reader
        finally:
            self._drain_task = None
        self._check_pause()

    def _call_protocol(self, name: str) -> None:
        try:
            getattr(self._protocol, name)()
        except Exception as exc:
            self._callback_failed(exc)

    def _eof_received(self) -> None:
        keep = self._protocol.eof_received()  # (the reader reports an exception here)
        if not keep:
            self.close()

    def _finish_close(self) -> None:
        self._end(None, None)  # FIN (if not sent), unread bytes dropped, the stream released

    def _callback_failed(self, exc: Exception) -> None:
        if self._lost:
            return
        s = self._stream
        log.error("protocol %s over stream %s failed", type(self._protocol).__name__, s.id,
                  exc_info=exc, extra={"peer": str(s.conn.remote_peer), "protocol": s.protocol})
        self._end(exc, StreamErrorCode.INTERNAL)

    def _connection_lost(self, exc: BaseException) -> None:
        """The stream was reset or its connection failed."""
        self._end(exc, None)

    def _end(self, exc: BaseException | None, reset: int | None) -> None:
        """Drop what waits, release the stream (reset with code ``reset`` first),
        then ``connection_lost(exc)``."""
        if self._lost:
            return
        self._closing = True
        self._backlog.clear()
        self._backlog_n = 0
        s = self._stream
        s.stop_push()
        if reset is not None:
            s.reset(reset)
        s.close_nowait()
        self._call_lost(exc)

    def _call_lost(self, exc: BaseException | None) -> None:
        self._lost = True
        task = self._drain_task
        if task is not None:
            task.cancel()
        self._loop.call_soon(self._lost_cb, exc)

    def _lost_cb(self, exc: BaseException | None) -> None:
        try:
            self._protocol.connection_lost(exc)
        finally:
            # Break the reference cycles (transport -> sink -> protocol -> transport,
            # stream -> write waiter -> transport), as asyncio's transports drop
            # their protocol: a closed stream's objects then go by reference
            # counting. Left to the cyclic collector, 1000 streams made enough
            # garbage for collections of ~1 ms in the middle of round trips.
            self._protocol = None
            self._sink.unbind()
            self._writable._t = None

    def __repr__(self) -> str:
        state = "closed" if self._lost else "closing" if self._closing else "open"
        return f"<StreamTransport {state} {self._stream!r}>"
