"""Connection: the asyncio driver of one secured, multiplexed connection.

It owns the raw transport, the two Noise transport ciphers (one per direction,
native AEAD when built) and the muxer session (sans-IO). Like aioquic's
``QuicConnectionProtocol`` it does exactly three things:

- on bytes from the socket: open every complete Noise frame in one call,
  feed the plaintext to the muxer session, drain its events into streams;
- ``_transmit()``: seal everything the session queued (one AEAD call over the
  whole iovec) and write it; re-arm the single timer from ``get_timer()``;
- translate terminal states into exceptions on the streams.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fastp2p.errors import (
    ConnectionClosedError,
    GoAwayCode,
    P2PError,
    RemoteProtocolError,
    SecurityError,
    StreamErrorCode,
    StreamResetError,
)
from fastp2p.proto.muxer import (
    ConnectionTerminated,
    DataReceived,
    GoAwayReceived,
    MuxerSession,
    PingAcknowledged,
    StreamEnded,
    StreamOpened,
    StreamReset,
    WindowUpdated,
)
from fastp2p.stream import Stream

if TYPE_CHECKING:
    from fastp2p.multiaddr import Multiaddr
    from fastp2p.peer import PeerID, PublicKey
    from fastp2p.transport.base import RawConnection

__all__ = ["Connection", "ConnectionStats"]

log = logging.getLogger("fastp2p.conn")

_now = time.monotonic


class ConnectionStats:
    """Per-connection counters (bytes are on-the-wire, i.e. ciphertext)."""

    __slots__ = (
        "bytes_sent",
        "bytes_received",
        "streams_opened",
        "streams_accepted",
        "opened_at",
        "rtt",
    )

    def __init__(self) -> None:
        self.bytes_sent = 0
        self.bytes_received = 0
        self.streams_opened = 0
        self.streams_accepted = 0
        self.opened_at = time.time()
        self.rtt: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__slots__}


class Connection:
    """A secured, multiplexed connection to one peer.

    Created by the upgrader; use ``Host.open_stream`` rather than
    ``open_stream`` here unless you already hold the connection.
    """

    def __init__(
        self,
        *,
        raw: RawConnection,
        session: MuxerSession,
        send_cipher: Any,
        recv_cipher: Any,
        remote_peer: PeerID,
        remote_public_key: PublicKey | None,
        muxer: str,
        outbound: bool,
        on_inbound_stream: Callable[[Stream], None],
        on_closed: Callable[[Connection], None],
        recv_soft_limit: int | None = None,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._raw = raw
        self._session = session
        self._send = send_cipher
        self._recv = recv_cipher
        self.remote_peer = remote_peer
        self.remote_public_key = remote_public_key
        self.muxer = muxer
        self.outbound = outbound
        self.local_addr: Multiaddr | None = raw.local_addr
        self.remote_addr: Multiaddr | None = raw.remote_addr
        self.streams: dict[int, Stream] = {}
        self.stats = ConnectionStats()
        self._on_inbound_stream = on_inbound_stream
        self._on_closed = on_closed
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._pings: dict[int, asyncio.Future[float]] = {}
        self._closed = False
        self._close_exc: ConnectionClosedError | None = None
        self.closed = self._loop.create_future()
        self.goaway_received = False
        # Muxers without flow control (mplex): when one stream holds this many unread
        # bytes, stop reading the socket (TCP backpressure) until it drains; a reader
        # that stays stuck for ``slow_reader_timeout`` gets its stream reset (go-mplex).
        self._recv_soft_limit = recv_soft_limit or sys.maxsize
        self.slow_reader_timeout = 5.0
        self._blocked_on: Stream | None = None
        self._slow_timer: asyncio.TimerHandle | None = None

    # -- lifecycle ---------------------------------------------------------------

    def start(self, plaintext_leftover: bytes = b"") -> None:
        """Switch the raw connection to push mode and process pending bytes."""
        left = self._raw.start_push(self._on_data, self._on_lost)
        try:
            if plaintext_leftover:
                self._session.receive_data(plaintext_leftover, _now())
            if left:
                self._on_data(memoryview(left))
                return
            self._process_events()
            self._transmit()
        except P2PError as exc:
            self._fail(exc)

    @property
    def is_closed(self) -> bool:
        return self._closed

    def __repr__(self) -> str:
        d = "out" if self.outbound else "in"
        return f"<Connection {d} {self.remote_peer} via {self.remote_addr} {self.muxer}>"

    async def aclose(self, code: int = GoAwayCode.NORMAL) -> None:
        """Send GoAway, close the socket and fail every open stream. Idempotent."""
        if self._closed:
            return
        with contextlib.suppress(Exception):
            self._session.go_away(code)
            self._transmit()
        self._terminate(ConnectionClosedError("connection closed locally", code=code, remote=False))
        self._raw.close()

    # -- receive path ------------------------------------------------------------

    def _on_data(self, view: memoryview) -> None:
        if self._closed:
            return
        self.stats.bytes_received += len(view)
        try:
            plain = self._recv.open_frames(view)
            if plain:
                self._session.receive_data(plain, _now())
            self._process_events()
            self._transmit()
        except P2PError as exc:
            self._fail(exc)

    def _fail(self, exc: P2PError) -> None:
        """A peer violation or security failure: flush the GoAway, then drop."""
        if self._closed:
            return
        if isinstance(exc, RemoteProtocolError):
            log.info("protocol error from %s: %s", self.remote_peer, exc)
            # The session queued its GoAway before raising: flush it, but do not
            # drain events, whose ConnectionTerminated would drop the typed cause.
            with contextlib.suppress(Exception):
                self._transmit()
            code = int(getattr(exc, "error_code", GoAwayCode.PROTOCOL_ERROR))
        elif isinstance(exc, SecurityError):
            log.warning("security failure on connection to %s: %s", self.remote_peer, exc)
            code = GoAwayCode.PROTOCOL_ERROR
        else:
            log.info("connection to %s failed: %s", self.remote_peer, exc)
            code = GoAwayCode.INTERNAL_ERROR
        err = ConnectionClosedError(f"connection failed: {exc}", code=code, remote=True)
        err.__cause__ = exc
        self._terminate(err)
        self._raw.close()

    def _on_lost(self, exc: BaseException | None) -> None:
        if self._closed:
            return
        err = ConnectionClosedError("connection closed by peer", remote=True)
        if exc is not None:
            err.__cause__ = exc
        self._terminate(err)
        self._raw.close()

    def _process_events(self) -> None:
        session = self._session
        streams = self.streams
        while (ev := session.next_event()) is not None:
            t = type(ev)
            if t is DataReceived:
                st = streams.get(ev.stream_id)  # type: ignore[union-attr]
                if st is not None:
                    st._feed_data(ev.data)  # type: ignore[union-attr]
                else:
                    session.acknowledge_received(ev.stream_id, len(ev.data), _now())  # type: ignore[union-attr]
            elif t is WindowUpdated:
                st = streams.get(ev.stream_id)  # type: ignore[union-attr]
                if st is not None:
                    st._window_updated()
            elif t is StreamOpened:
                st = Stream(self, ev.stream_id, inbound=True)  # type: ignore[union-attr]
                streams[st.id] = st
                self.stats.streams_accepted += 1
                self._on_inbound_stream(st)
            elif t is StreamEnded:
                st = streams.get(ev.stream_id)  # type: ignore[union-attr]
                if st is not None:
                    st._feed_eof()
            elif t is StreamReset:
                st = streams.get(ev.stream_id)  # type: ignore[union-attr]
                if st is not None:
                    st._set_reset(
                        StreamResetError("stream reset by peer", code=ev.code, remote=True)  # type: ignore[union-attr]
                    )
            elif t is PingAcknowledged:
                self.stats.rtt = ev.rtt  # type: ignore[union-attr]
                fut = self._pings.pop(ev.opaque, None)  # type: ignore[union-attr]
                if fut is not None and not fut.done():
                    fut.set_result(ev.rtt)  # type: ignore[union-attr]
            elif t is GoAwayReceived:
                self.goaway_received = True
            elif t is ConnectionTerminated:
                err = ConnectionClosedError(
                    f"connection terminated: {ev.reason or ev.code}",  # type: ignore[union-attr]
                    code=ev.code,  # type: ignore[union-attr]
                    remote=ev.remote,  # type: ignore[union-attr]
                )
                self._transmit()
                self._terminate(err)
                self._raw.close()
                return

    # -- send path ---------------------------------------------------------------

    def _transmit(self) -> None:
        if self._closed:
            return
        bufs = self._session.data_to_send()
        if bufs:
            out = self._send.seal_frames(bufs)
            self.stats.bytes_sent += len(out)
            self._raw.write(out)
        when = self._session.get_timer()
        if when != self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._timer_at = when
            if when is not None:
                # uvloop's loop.time() has millisecond resolution; the session runs
                # on time.monotonic() (RTTs on loopback are microseconds).
                self._timer = self._loop.call_later(max(0.0, when - _now()), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        if self._closed:
            return
        try:
            self._session.handle_timer(_now())
            self._process_events()
            self._transmit()
        except P2PError as exc:
            self._fail(exc)

    # -- used by Stream ------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            assert self._close_exc is not None
            raise self._close_exc

    def _send_data(self, stream_id: int, view: memoryview) -> int:
        self._check_open()
        n = self._session.send_data(stream_id, view)
        if n:
            self._transmit()
        return n

    async def _drain(self, stream: Stream | None = None) -> None:
        """Wait for the transport's write buffer to drain.

        With ``stream``, a reset or close of that stream also ends the wait
        (its writer must not stay blocked behind other streams' bytes).
        """
        self._check_open()
        if not self._raw.write_paused:  # type: ignore[attr-defined]
            return
        drain = self._loop.create_task(self._raw.drain())
        try:
            if stream is None:
                await drain
            else:
                woken = self._loop.create_future()
                stream._write_waiter = woken
                try:
                    await asyncio.wait((drain, woken), return_when=asyncio.FIRST_COMPLETED)
                finally:
                    stream._write_waiter = None
                    if not woken.done():
                        woken.cancel()
            if drain.done():
                drain.result()
        except P2PError:
            self._check_open()
            raise
        finally:
            if not drain.done():
                drain.cancel()

    def _acknowledge(self, stream_id: int, n: int) -> None:
        if self._closed:
            return
        self._session.acknowledge_received(stream_id, n, _now())
        self._transmit()
        blocked = self._blocked_on
        if blocked is not None and blocked._buffered <= self._recv_soft_limit // 2:
            self._unblock()

    def _reader_too_slow(self, stream: Stream) -> None:
        if self._blocked_on is not None or self._closed:
            return
        self._blocked_on = stream
        self._raw.pause_reading()  # type: ignore[attr-defined]
        self._slow_timer = self._loop.call_later(self.slow_reader_timeout, self._slow_expired)

    def _slow_expired(self) -> None:
        stream = self._blocked_on
        self._slow_timer = None
        if stream is not None:
            log.info("resetting stream %s: reader stalled with %d bytes unread", stream.id, stream._buffered)
            stream.reset(StreamErrorCode.RESOURCE_LIMIT)
        self._unblock()

    def _unblock(self) -> None:
        self._blocked_on = None
        if self._slow_timer is not None:
            self._slow_timer.cancel()
            self._slow_timer = None
        if not self._closed:
            self._raw.resume_reading()  # type: ignore[attr-defined]

    def _close_stream(self, stream_id: int) -> None:
        self._check_open()
        self._session.close_stream(stream_id)
        self._transmit()

    def _reset_stream(self, stream_id: int, code: int) -> None:
        if self._closed:
            return
        with contextlib.suppress(P2PError):
            self._session.reset_stream(stream_id, code)
            self._transmit()

    def _stream_closed_by_app(self, stream: Stream) -> None:
        self.streams.pop(stream.id, None)
        if self._blocked_on is stream:
            self._unblock()

    # -- public ---------------------------------------------------------------------

    def statistics(self) -> dict[str, Any]:
        """Wire bytes, muxer frames and bytes, streams, and the last measured RTT."""
        out = self.stats.as_dict()
        out["open_streams"] = len(self.streams)
        out["muxer"] = self.muxer
        out["muxer_stats"] = dict(getattr(self._session, "stats", {}))
        rtt = getattr(self._session, "rtt", None)
        if out["rtt"] is None and rtt is not None:
            out["rtt"] = rtt
        return out

    def open_stream(self) -> Stream:
        """Open a new outbound stream (no protocol negotiated yet).

        Raises:
            ConnectionClosedError: the connection is closed or the peer sent GoAway.
            ResourceLimitExceededError: the stream limit is reached.
        """
        self._check_open()
        sid = self._session.open_stream()
        st = Stream(self, sid, inbound=False)
        self.streams[sid] = st
        self.stats.streams_opened += 1
        self._transmit()
        return st

    async def ping(self) -> float:
        """Round trip of a muxer-level ping (yamux), in seconds.

        Raises:
            ConnectionClosedError: the connection closed first.
            LocalProtocolError: the muxer has no ping (mplex).

        Cancellation: the ping stays outstanding; its answer is ignored.
        """
        self._check_open()
        opaque = self._session.ping(_now())
        fut: asyncio.Future[float] = self._loop.create_future()
        self._pings[opaque] = fut
        self._transmit()
        try:
            return await fut
        finally:
            self._pings.pop(opaque, None)

    # -- teardown ----------------------------------------------------------------------

    def _terminate(self, err: ConnectionClosedError) -> None:
        if self._closed:
            return
        self._closed = True
        self._close_exc = err
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._slow_timer is not None:
            self._slow_timer.cancel()
            self._slow_timer = None
        self._blocked_on = None
        for st in list(self.streams.values()):
            st._set_reset(err)
        self.streams.clear()
        for fut in self._pings.values():
            if not fut.done():
                fut.set_exception(err)
        self._pings.clear()
        if not self.closed.done():
            self.closed.set_result(None)
        self._on_closed(self)
