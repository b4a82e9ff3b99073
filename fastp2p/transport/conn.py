"""Connection: the asyncio driver of one secured, multiplexed connection.

It owns the muxer session (sans-IO) and the *data paths* that carry the
session's frames: at first ``NoisePath`` (the two Noise transport ciphers over
the raw TCP connection), later possibly a shared-memory ring or an RDMA queue
pair after an in-band upgrade (``switch_tx``/``switch_rx``). Like aioquic's
``QuicConnectionProtocol`` it does exactly three things:

- on plaintext from the receiving path: feed it to the muxer session, drain
  its events into streams;
- ``_transmit()``: hand everything the session queued to the sending path in
  one call (for TCP: one AEAD call over the whole iovec, one socket write);
  re-arm the single timer from ``get_timer()``;
- translate terminal states into exceptions on the streams.

Streams reach the connection only through the ``StreamDriver`` methods
(``stream_send``, ``stream_ack``, ...); the connection drives streams only
through ``Stream.feed_data``/``feed_eof``/``set_reset``/``window_updated``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import sys
import time
from collections.abc import Callable
from time import monotonic as _monotonic
from typing import TYPE_CHECKING, Any

from fastp2p import _accel
from fastp2p.errors import (
    BrokenResourceError,
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
from fastp2p.transport.base import DataPath
from fastp2p.transport.stream import Stream

if TYPE_CHECKING:
    from fastp2p.multiaddr import Multiaddr
    from fastp2p.peer import PeerID, PublicKey
    from fastp2p.transport.base import RawConnection
    from fastp2p.transport.busypoll import BusyPoller

__all__ = ["Connection", "ConnectionStats", "NoisePath"]

log = logging.getLogger("fastp2p.conn")

_now = time.monotonic
# Credit a yamux stream returns per session call, at most (Stream._consume).
ACK_BATCH = 16 * 1024
# Connection ids: unique within the process, in log records and metrics.
_conn_ids = itertools.count(1)


class ConnectionStats:
    """Per-connection counters (bytes are on-the-wire, i.e. ciphertext)."""

    FIELDS = ("bytes_sent", "bytes_received", "streams_opened", "streams_accepted", "opened_at",
              "rtt")

    __slots__ = ("_bytes_sent", "bytes_received", "streams_opened", "streams_accepted",
                 "opened_at", "rtt", "tx_step")

    def __init__(self) -> None:
        self._bytes_sent = 0
        self.bytes_received = 0
        self.streams_opened = 0
        self.streams_accepted = 0
        self.opened_at = time.time()
        self.rtt: float | None = None
        #: the connection's send step, whose writes it counts itself (or None)
        self.tx_step: Any = None

    @property
    def bytes_sent(self) -> int:
        step = self.tx_step
        return self._bytes_sent + (step.wire_out if step is not None else 0)

    @bytes_sent.setter
    def bytes_sent(self, value: int) -> None:
        step = self.tx_step
        self._bytes_sent = value - (step.wire_out if step is not None else 0)

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.FIELDS}


#: plaintext held for one seal at the end of a loop pass (NoisePath.send); more
#: is sealed at once, without a copy
DEFER_MAX = 16 * 1024
#: a batch of small sends that took this long to make (its first send to the one
#: that filled it) leaves at once, not with the pass's write queue: the peer's
#: wait outweighs the send call (see NoisePath._send_in_pass)
EARLY_FLUSH_S = 0.0002


class NoisePath(_accel.SealState, DataPath):
    """Muxer frames sealed with the Noise transport ciphers over the raw connection.

    The first send of a loop pass is sealed and written at once (no added
    latency). Small sends after it in the same pass (many streams answering
    in one pass) are copied and sealed together at the pass's end: one AEAD
    call and one Noise frame for all of them instead of one each.
    """

    name = "tcp"

    def __init__(self, raw: RawConnection, send_cipher: Any, recv_cipher: Any) -> None:
        self.raw = raw
        self._send = send_cipher
        self._recv = recv_cipher
        #: plaintext waiting for the end of the pass (see send)
        self._pend: bytearray | None = None
        #: when the batch in _pend began; whether a batch left early in this pass
        #: (see _send_in_pass)
        self._batch_t0 = 0.0
        self._early = False
        self._end_cb = self._end_pass  # bound once (a cycle: the collector takes it)
        #: where bytes sealed at the end of a pass are counted (the connection's stats)
        self.stats: ConnectionStats | None = None
        self._deliver: Callable[[Any, bool], None] | None = None
        self._on_failed: Callable[[P2PError], None] | None = None
        self._fused: Callable[[memoryview], None] | None = None

    def start(
        self,
        deliver: Callable[[Any, bool], None],
        on_lost: Callable[[BaseException | None], None],
        on_failed: Callable[[P2PError], None],
    ) -> bytes:
        """Push received plaintext to ``deliver``; returns ciphertext read before.

        A frame that fails authentication goes to ``on_failed``.
        """
        self._deliver = deliver
        self._on_failed = on_failed
        left = self.raw.start_push(self._on_wire, on_lost)
        if self._fused is not None:
            self.raw.redirect_push(self._fused)  # (reads go straight to it from here on)
        return left

    @property
    def fused(self) -> Callable[[memoryview], None] | None:
        """When set, each read goes whole to this callable (the connection's
        one-call native receive step: open, demultiplex, deliver), called by
        the raw connection itself where it can (``redirect_push``: one Python
        frame fewer per read)."""
        return self._fused

    @fused.setter
    def fused(self, fn: Callable[[memoryview], None] | None) -> None:
        self._fused = fn
        if self._deliver is not None:  # started: the raw connection pushes reads
            self.raw.redirect_push(fn if fn is not None else self._on_wire)

    def _on_wire(self, view: memoryview) -> None:
        fused = self._fused
        if fused is not None:  # (a raw connection that cannot redirect its reads)
            fused(view)
            return
        # receive_wire inlined: this runs once per socket read
        try:
            plain = self._recv.open_frames(view)
            if plain:
                self._deliver(plain, False)  # type: ignore[misc]
        except P2PError as exc:
            assert self._on_failed is not None
            self._on_failed(exc)

    def receive_wire(self, view: memoryview) -> None:
        """Open every complete Noise frame in ``view`` and deliver the plaintext."""
        plain = self._recv.open_frames(view)
        if plain:
            assert self._deliver is not None
            self._deliver(plain, False)

    @property
    def ciphers(self) -> tuple[Any, Any]:
        """The (send, receive) Noise transport ciphers; a sealed shm path reuses them."""
        return self._send, self._recv

    def send(self, bufs: list[memoryview]) -> int:
        if self._pend is None and not self.raw.in_pass:
            # the first send of the pass (a round trip's only one): at once
            out = self._send.seal_frames(bufs)
            self.raw.write(out)
            return len(out)
        return self._send_in_pass(bufs)

    def hold(self) -> None:
        self.raw.hold_flush()

    def hold_past_tasks(self) -> None:
        self.raw.hold_past_tasks()

    def _send_in_pass(self, bufs: list[memoryview]) -> int:
        pend = self._pend
        n = 0
        for b in bufs:
            n += b.nbytes if type(b) is memoryview else len(b)
        if n > DEFER_MAX:
            if pend is not None:
                self.flush()  # first what came before
        elif pend is not None:
            for b in bufs:
                pend += b
            if len(pend) > DEFER_MAX:
                self.flush()
                if not self._early or _monotonic() - self._batch_t0 >= EARLY_FLUSH_S:
                    # The pass's first batch of small sends leaves at once (the peer
                    # starts on it), and so does every slowly made one (many streams
                    # answering in one pass: each answer costs its handler ~20 us, so
                    # 16 KiB of them is milliseconds the peer would wait); quickly
                    # made ones (one stream's 1-4 KiB writes) share the queue's writev.
                    # 1000 mplex streams: 61-67 ms (106 when no batch left early, 68-80
                    # when only the first did); every batch at once cost a 1 GiB
                    # upload in 4 KiB writes a third of its speed (740 -> 500 MB/s).
                    self._early = True
                    self.raw.flush()
            return 0
        elif self.raw.defer_to_pass_end(self._end_cb):
            self._batch_t0 = _monotonic()
            # Copied: the caller may reuse its buffers once this returns.
            self._pend = pend = bytearray()
            for b in bufs:
                pend += b
            return 0
        out = self._send.seal_frames(bufs)
        self.raw.write(out)
        return len(out)

    def _end_pass(self) -> None:
        self._early = False
        self.flush()

    def flush(self) -> None:
        """Seal and write what :meth:`send` held for the end of the pass."""
        pend = self._pend
        if pend is None:
            return
        self._pend = None
        if getattr(self.raw, "is_closed", False):
            return  # dropped, as the raw connection drops its unsent bytes
        out = self._send.seal_frames([pend])
        self.raw.write(out)
        if self.stats is not None:
            self.stats.bytes_sent += len(out)

    @property
    def write_paused(self) -> bool:
        return self.raw.write_paused

    @property
    def pause_state(self) -> Any:
        return self.raw.pause_state

    async def drain(self) -> None:
        await self.raw.drain()

    def pause_reading(self) -> None:
        self.raw.pause_reading()

    def resume_reading(self) -> None:
        self.raw.resume_reading()

    def close(self) -> None:
        self.raw.close()


def _no_loans(stream_id: int, buf: Any, waiter: Any) -> None:
    """``Connection.stream_lend`` without a native receive step: readers' buffers
    are filled by ``Stream.feed_data`` instead."""
    return None


class Connection:
    """A secured, multiplexed connection to one peer.

    Created by the upgrader; use ``Host.open_stream`` rather than
    ``open_stream`` here unless you already hold the connection.
    """

    # Slots: over 30 attributes an instance dict stops sharing its keys and costs
    # ~1.5 KiB per connection. ``__dict__`` stays for attributes set from outside.
    __slots__ = ('loop', '_raw', '_session', '_base', '_tx', '_rx', '_rx_transient',
                 'data_path_reason', '_tasks', 'remote_peer', 'id', '_log_extra',
                 'remote_public_key', 'muxer', 'outbound', 'local_addr', 'remote_addr',
                 'streams', 'stats', '_on_inbound_stream', '_on_closed', '_timer', '_timer_at',
                 '_pings', '_closed', '_close_exc', 'closed', 'goaway_received',
                 'recv_soft_limit', 'slow_reader_timeout', '_blocked_on', '_slow_timer',
                 '_attach', 'ack_batch', 'stream_lend', '_read_yielded', 'busy_poll', '__dict__',
                 '__weakref__')

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
        self.loop = asyncio.get_running_loop()
        self._raw = raw
        self._session = session
        self._base = NoisePath(raw, send_cipher, recv_cipher)
        # The paths frames are sent on and received from (see switch_tx/switch_rx).
        self._tx: DataPath = self._base
        self._rx: DataPath = self._base
        #: the sending path's ``pause_state`` (``Stream.write`` reads its flag per message)
        self.pause_state: Any = self._base.pause_state
        self._rx_transient = False
        self.data_path_reason: str | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.remote_peer = remote_peer
        #: Process-unique id of this connection (log records carry it as ``conn_id``).
        self.id = next(_conn_ids)
        self._log_extra: dict[str, Any] | None = None  # (made on first use: see log_extra)
        self.remote_public_key = remote_public_key
        self.muxer = muxer
        self.outbound = outbound
        self.local_addr: Multiaddr | None = raw.local_addr
        self.remote_addr: Multiaddr | None = raw.remote_addr
        self.streams: dict[int, Stream] = {}
        self.stats = ConnectionStats()
        self._base.stats = self.stats  # bytes sealed at the end of a pass count here
        self._on_inbound_stream = on_inbound_stream
        self._on_closed = on_closed
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._pings: dict[int, asyncio.Future[float]] = {}
        self._closed = False
        self._close_exc: ConnectionClosedError | None = None
        self.closed = self.loop.create_future()
        self.goaway_received = False
        # Muxers without flow control (mplex): when one stream holds this many unread
        # bytes, stop reading the socket (TCP backpressure) until it drains; a reader
        # that stays stuck for ``slow_reader_timeout`` gets its stream reset (go-mplex).
        self.recv_soft_limit = recv_soft_limit or sys.maxsize
        if recv_soft_limit:
            # one read may bring a stream up to the limit before the pause acts:
            # no more than that, so it stays under the reset at twice the limit
            raw.cap_reads(recv_soft_limit)
        self._read_yielded = False  # reading paused until the next loop pass (_loan_full)
        self.slow_reader_timeout = 5.0
        self._blocked_on: Stream | None = None
        self._slow_timer: asyncio.TimerHandle | None = None
        # yamux: plain DATA frames go from the session's demux straight to the
        # stream (``Stream.feed_data``), in C with the native kernels, without an
        # event each. Off for transient paths (shared rings: payloads must be copied).
        self._attach: Callable[[int, Any], bool] | None = getattr(session, "attach", None)
        #: consumed bytes a stream holds back before acknowledging (StreamDriver): yamux
        #: sends a window update only once half the window (>= 128 KiB) is consumed
        self.ack_batch = ACK_BATCH if self._attach is not None else 0
        #: StreamDriver.busy_poll: the host's BusyPoller (HostConfig.busy_poll_us), or None
        self.busy_poll: BusyPoller | None = None
        # With a demultiplexer (yamux or mplex; native, or its pure twin) the whole
        # receive step of a TCP read is one call (Noise open, demultiplex, copy
        # into lent reader buffers: the session's feed_sealed) and readers lend
        # their buffers (stream_lend).
        #: StreamDriver.stream_lend: lend a waiting reader's buffer to the receive
        #: step; the token's ``unlend()`` ends the loan and returns the bytes placed
        #: in it, ``spill()`` stops further copies. The session's native lender
        #: itself where there is one (a read's loan is then one call), else no loans.
        self.stream_lend: Callable[[int, Any, Any], Any] = _no_loans
        #: the receive step of one TCP read (the session's sealed_step), if any
        self._step: Any = None
        if self._attach is not None and getattr(session, "can_feed_sealed", False):
            self.stream_lend = session.lender  # type: ignore[attr-defined]
            # each read goes from the raw connection straight to it: no Python
            # runs for a read whose frames all went the demux's fast way
            self._step = session.sealed_step(  # type: ignore[attr-defined]
                recv_cipher, self._records_in, self._wire_failed
            )
            self._base.fused = self._step
            # a large loan sizes the socket reads; a full or overflowed one stops them
            session.on_loan_full(self._loan_full)  # type: ignore[attr-defined]
            session.on_read_hint(raw.limit_reads)  # type: ignore[attr-defined]
            # and the bytes certain to come, so the socket wakes the loop less often.
            # Only under AES-GCM: a reader that opens ChaCha20-Poly1305 (~4 GB/s a
            # core) is busy enough that holding its wake-ups back bunches its work,
            # and one stream measured 10-13% slower with it (AES-GCM: 10-25% faster)
            if getattr(recv_cipher, "cipher", None) == "AESGCM":
                session.on_wake_hint(raw.wake_after)  # type: ignore[attr-defined]
        #: a stream write's one-call path over TCP (the session's send_step): a write
        #: to an open stream is framed, sealed (or held for the pass's seal) and
        #: written in C with the native kernels. It is this connection's ``stream_send``
        #: (Stream.write calls it directly); it hands every other write to the
        #: general path, ``_stream_send``. Off once frames leave another way.
        self._tx_step: Any = None
        if isinstance(raw, _accel.WritePump) and hasattr(session, "send_step"):
            self._tx_step = session.send_step(_accel.SendStep, self._base, self._stream_send)
            self.stream_send = self._tx_step  # type: ignore[method-assign]
            self.stats.tx_step = self._tx_step
        if hasattr(session, "pong_gate"):
            # yamux: while the transport takes no more bytes, PINGs go unanswered
            # instead of queueing a PING|ACK for each (a flooding peer that never reads)
            session.pong_gate = self._tx_paused

    # -- lifecycle ---------------------------------------------------------------

    def start(self, plaintext_leftover: bytes = b"") -> None:
        """Switch the raw connection to push mode and process pending bytes."""
        left = self._base.start(self._deliver_base, self._on_lost, self._fail)
        try:
            now = _now()
            when = self._session.get_timer()
            if when is not None and when <= now:
                # Due at once (yamux's RTT probe): it joins the connection's first
                # frames instead of leaving alone from a timer in the next pass.
                self._session.handle_timer(now)
            if plaintext_leftover:
                self._session.receive_data(plaintext_leftover, _now())
            if left:
                self._on_data(memoryview(left))
                return
            self._process_events()
            self._transmit()
        except P2PError as exc:
            self._fail(exc)

    # -- data paths ----------------------------------------------------------------

    @property
    def data_path(self) -> str:
        """``"tcp"``, ``"shm"`` or ``"rdma"``: the path both directions use."""
        if self._tx.name == self._rx.name:
            return self._tx.name
        return self._base.name

    @property
    def write_paused(self) -> bool:
        """True while the sending path holds more than its high-water mark."""
        return self._tx.write_paused

    @property
    def base_path(self) -> NoisePath:
        """The Noise-over-TCP path the connection started on."""
        return self._base

    def switch_tx(self, stream_id: int, marker: bytes, path: DataPath) -> None:
        """Send ``marker`` on ``stream_id`` over the current path, then every
        later frame through ``path``.

        Both happen in one synchronous step, so no other frame can slip onto
        the old path after the marker: the peer, which starts reading the new
        path once it has read the marker, sees every frame exactly once and in
        order.
        """
        self.check_open()
        n = self._session.send_data(stream_id, memoryview(marker))
        if n != len(marker):
            raise BrokenResourceError("no send window for the data-path switch marker")
        self._transmit()
        if self._tx is self._base:
            # the marker leaves now: a sealed path that reuses the Noise send
            # cipher takes the next nonces
            self._base.flush()
        self._tx = path
        self.pause_state = path.pause_state
        if self._tx_step is not None:
            self._tx_step.live = False  # frames leave through ``path`` now

    def switch_rx(self, path: Any, *, transient: bool) -> None:
        """Receive frames from ``path`` from now on (the peer sent its marker).

        ``path`` must have ``start(deliver, on_failed)``; ``transient`` says its
        bytes are reused after each delivery (shared rings), so streams copy.
        """
        self.check_open()
        self._rx = path
        self._rx_transient = transient
        # TCP reads take the checked way again (frames after the marker are an error)
        self._base.fused = None
        if self.stream_lend is not _no_loans:
            self.stream_lend = _no_loans
            self._session.on_read_hint(None)  # type: ignore[attr-defined]
            self._session.on_wake_hint(None)  # type: ignore[attr-defined]
            self._raw.limit_reads(0)
            self._raw.wake_after(0)
        if transient and self._attach is not None:
            self._attach = None
            for sid in self.streams:
                self._session.detach(sid)  # type: ignore[attr-defined]
        hint = getattr(path, "window_hint", None)
        if hint:
            self._session.limit_receive_window(hint)
        path.start(self._deliver_alt, self._path_failed)

    @property
    def peer_process(self) -> int | None:
        """The peer's pid when both run on this host (shared-memory path), else None.

        It is the pid the kernel reported for the peer's end of the hand-off
        socket (SO_PEERCRED), not one the peer claimed.
        """
        if self.data_path != "shm":
            return None
        return getattr(self._tx, "peer_pid", None)

    def track_task(self, task: asyncio.Task[Any]) -> None:
        """Keep an in-flight operation's task (and its leases) alive until it ends."""
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: the awaiting caller (if any) got it too

    async def put(
        self, region: Any, token: bytes, *, offset: int = 0, length: int | None = None, local_offset: int = 0
    ) -> int:
        """Write local bytes into a region the peer granted us.

        Copies ``region[local_offset : local_offset + length]`` (to the end when
        ``length`` is None) to ``offset`` within the peer's granted range.
        Works on every data path; on shared memory the peer copies once,
        directly from our buffer. Returns the byte count.

        Raises:
            AccessDeniedError: the token is forged, revoked, expired, for another
                peer, or lacks the write right (checked by the owner).
            RegionBoundsError: the range is outside the grant or the local region.
            ConnectionClosedError: the connection ended first.

        Cancellation: the operation continues in the background until the owner
        answers; ``region`` stays leased (cannot be freed) until then.
        """
        from fastp2p.transport import regions

        return await regions.put(self, region, token, offset=offset, length=length, local_offset=local_offset)

    async def get(
        self, region: Any, token: bytes, *, offset: int = 0, length: int | None = None, local_offset: int = 0
    ) -> int:
        """Read bytes from a region the peer granted us into ``region``.

        The mirror of :meth:`put` (needs the read right). Returns the byte count.

        Raises:
            AccessDeniedError, RegionBoundsError, ConnectionClosedError: as ``put``.

        Cancellation: as ``put``; the bytes may or may not have landed.
        """
        from fastp2p.transport import regions

        return await regions.get(self, region, token, offset=offset, length=length, local_offset=local_offset)

    @property
    def tx_path(self) -> DataPath:
        """The path frames are sent on now (an ``RdmaPath`` also carries one-sided ops)."""
        return self._tx

    async def atomic_cas(self, token: bytes, offset: int, compare: int, swap: int) -> int:
        """Compare-and-swap the 8-byte slot at ``offset`` of a region the peer granted us.

        The slot holds an unsigned 64-bit integer in the owner's byte order; if it
        equals ``compare`` it becomes ``swap``. Returns the old value. Needs the
        read and write rights and an 8-byte aligned slot; runs as an RDMA atomic
        on the NIC (atomic against other RDMA atomics on the slot).

        Raises:
            AccessDeniedError, RegionBoundsError: refused by the owner.
            TransportUnavailableError: the connection is not on the RDMA path.
            RDMAError subclasses: the operation failed on the NIC.

        Cancellation: the operation continues until its completion.
        """
        from fastp2p.transport import regions

        return await regions.atomic(self, "cas", token, offset, compare, swap)

    async def atomic_fetch_add(self, token: bytes, offset: int, add: int) -> int:
        """Add ``add`` (mod 2**64) to the granted 8-byte slot at ``offset``; returns the old value.

        Raises and cancellation: as :meth:`atomic_cas`.
        """
        from fastp2p.transport import regions

        return await regions.atomic(self, "faa", token, offset, 0, add)

    def uses_path(self, path: object) -> bool:
        """True if ``path`` is the sending or the receiving path."""
        return path is self._tx or path is self._rx

    def _path_failed(self, exc: BaseException) -> None:
        if isinstance(exc, P2PError):
            self._fail(exc)
        else:
            self._on_lost(exc)

    @property
    def is_closed(self) -> bool:
        return self._closed

    @property
    def close_error(self) -> ConnectionClosedError | None:
        """Why the connection closed (its ``__cause__`` is the failure, if any); None while open."""
        return self._close_exc

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
        """Ciphertext read before push mode started (handshake leftovers)."""
        if self._closed:
            return
        try:
            self._base.receive_wire(view)
        except P2PError as exc:
            self._fail(exc)

    def _records_in(self, records: Any) -> None:
        """Records of a TCP read that the receive step's fast way did not take."""
        if self._closed:
            return
        try:
            if self._session.take_records(records, _now()):  # type: ignore[attr-defined]
                self._process_events()
                self._transmit()
        except P2PError as exc:
            self._fail(exc)

    def _wire_failed(self, exc: P2PError) -> None:
        """The receive step met a forged frame or a protocol violation."""
        if self._closed:
            return
        self._session.feed_failed(exc)  # type: ignore[attr-defined]
        self._fail(exc)

    def _loan_full(self) -> None:
        """A reader's lent buffer can take no more (a large one is full, or one of
        64 KiB or more overflowed): stop reading until the loop's next pass, so
        that the reader (woken in this pass) lends its next buffer first. Otherwise the event loop goes on reading the socket (libuv
        reads up to 32 times per pass) into the stream's queue, and every later
        read is a copy out of it; the kernel's socket buffer holds the bytes for
        free meanwhile."""
        if self._read_yielded or self._closed:
            return
        self._read_yielded = True
        self._base.pause_reading()
        self.loop.call_soon(self._end_read_yield)

    def _end_read_yield(self) -> None:
        self._read_yielded = False
        if not self._closed and (self._blocked_on is None or self._rx is not self._base):
            self._base.resume_reading()

    def _deliver_base(self, plain: Any, transient: bool) -> None:
        if self._closed:
            return
        self.stats.bytes_received += len(plain)
        if self._rx is not self._base:
            # After the peer's switch marker nothing may come over TCP.
            self._fail(RemoteProtocolError("peer sent muxer frames over TCP after switching data path"))
            return
        # _receive inlined: this runs once per socket read
        try:
            self._session.receive_data(plain, _now())
            self._process_events()
            self._transmit()
        except P2PError as exc:
            self._fail(exc)

    def _tx_paused(self) -> bool:
        return self._tx.write_paused

    def _deliver_alt(self, data: Any, transient: bool) -> None:
        if self._closed:
            return
        self.stats.bytes_received += len(data)
        self._receive(data, transient)

    def _receive(self, plain: Any, transient: bool) -> None:
        try:
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
            log.info("protocol error from %s: %s", self.remote_peer, exc, extra=self.log_extra)
            # The session queued its GoAway before raising: flush it, but do not
            # drain events, whose ConnectionTerminated would drop the typed cause.
            with contextlib.suppress(Exception):
                self._transmit()
            code = int(getattr(exc, "error_code", GoAwayCode.PROTOCOL_ERROR))
        elif isinstance(exc, SecurityError):
            log.warning("security failure on connection to %s: %s", self.remote_peer, exc,
                        extra=self.log_extra)
            code = GoAwayCode.PROTOCOL_ERROR
        else:
            log.info("connection to %s failed: %s", self.remote_peer, exc, extra=self.log_extra)
            code = GoAwayCode.INTERNAL_ERROR
        err = ConnectionClosedError(f"connection failed: {exc}", code=code, remote=True)
        err.__cause__ = exc
        self._terminate(err)
        self._raw.close()

    def _on_lost(self, exc: BaseException | None) -> None:
        if self._closed:
            return
        if self._rx is not self._base:
            # The peer's last frames (its GoAway) may sit in the ring still.
            with contextlib.suppress(Exception):
                self._rx.resume_reading()
                poll = getattr(self._rx, "poll", None)
                if poll is not None:
                    poll()
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
        transient = self._rx_transient
        while (ev := session.next_event()) is not None:
            # isinstance on final event classes: as fast as a type() table, and typed.
            if isinstance(ev, DataReceived):
                st = streams.get(ev.stream_id)
                if st is not None:
                    st.feed_data(ev.data, transient)
                else:
                    session.acknowledge_received(ev.stream_id, len(ev.data), _now())
            elif isinstance(ev, WindowUpdated):
                st = streams.get(ev.stream_id)
                if st is not None:
                    st.window_updated()
            elif isinstance(ev, StreamOpened):
                st = Stream(self, ev.stream_id, inbound=True)
                streams[st.id] = st
                if self._attach is not None:
                    self._attach(st.id, st.feed_data)
                self.stats.streams_accepted += 1
                self._on_inbound_stream(st)
                # The acknowledgment waits for the end of the pass, which comes
                # after the handler task's first step: a handler that answers at
                # once (multistream, then its first write) sends it all in one
                # write, not the ACK alone and its answer a syscall later. A pass
                # whose end was already scheduled (a write earlier in it, or the
                # upgrade's hold) lets it wait one turn of the loop, once per pass
                # however many streams open in it (moving it behind each new task
                # cost 1000 concurrent streams 7% more instructions each).
                self._tx.hold_past_tasks()
            elif isinstance(ev, StreamEnded):
                st = streams.get(ev.stream_id)
                if st is not None:
                    st.feed_eof()
            elif isinstance(ev, StreamReset):
                st = streams.get(ev.stream_id)
                if st is not None:
                    st.set_reset(StreamResetError("stream reset by peer", code=ev.code, remote=True))
            elif isinstance(ev, PingAcknowledged):
                self.stats.rtt = ev.rtt
                fut = self._pings.pop(ev.opaque, None)
                if fut is not None and not fut.done():
                    fut.set_result(ev.rtt)
            elif isinstance(ev, GoAwayReceived):
                self.goaway_received = True
            elif isinstance(ev, ConnectionTerminated):
                err = ConnectionClosedError(
                    f"connection terminated: {ev.reason or ev.code}", code=ev.code, remote=ev.remote
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
            sent = self._tx.send(bufs)  # (first: a flush inside it counts its own bytes)
            self.stats.bytes_sent += sent
        when = self._session.get_timer()
        if when != self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._timer_at = when
            if when is not None:
                # uvloop's loop.time() has millisecond resolution; the session runs
                # on time.monotonic() (RTTs on loopback are microseconds).
                self._timer = self.loop.call_later(max(0.0, when - _now()), self._on_timer)

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

    @property
    def log_extra(self) -> dict[str, Any]:
        """``extra=`` for log records about this connection: ``peer`` and ``conn_id``."""
        # Made when a record first needs it, not per connection: the PeerID's base58
        # text costs ~12 us, on each side of every handshake's critical path.
        extra = self._log_extra
        if extra is None:
            extra = self._log_extra = {"peer": str(self.remote_peer), "conn_id": self.id}
        return extra

    # -- StreamDriver: what streams call ------------------------------------------

    def check_open(self) -> None:
        """Raise the connection's ``ConnectionClosedError`` if it is closed."""
        if self._closed:
            assert self._close_exc is not None
            raise self._close_exc

    def stream_send(self, stream_id: int, data: memoryview) -> int:
        """Queue what the send window allows of ``data`` and transmit it.

        (With a send step, the instance's ``stream_send`` is the step, and this
        is its general path.)"""
        if self._closed:
            self.check_open()
        session = self._session
        n = session.send_data(stream_id, data)
        if n:
            # _transmit without its timer check: send_data never moves a session's
            # timer (yamux, mplex; test_send_data_leaves_the_timer_alone)
            sent = self._tx.send(session.data_to_send())  # (first: see _transmit)
            self.stats.bytes_sent += sent
        return n

    _stream_send = stream_send

    async def wait_drained(self, interrupt: asyncio.Future[None] | None = None) -> None:
        """Wait for the sending path's write buffer to drain.

        With ``interrupt`` (a stream's waiter), its completion also ends the
        wait: a reset stream's writer must not stay blocked behind other
        streams' bytes.
        """
        self.check_open()
        tx = self._tx
        if not tx.write_paused:
            return
        drain = self.loop.create_task(tx.drain())
        try:
            if interrupt is None:
                await drain
            else:
                await asyncio.wait((drain, interrupt), return_when=asyncio.FIRST_COMPLETED)
            if drain.done():
                drain.result()
        except P2PError:
            self.check_open()
            raise
        finally:
            if not drain.done():
                drain.cancel()
            elif not drain.cancelled():
                # Finished with an error while we were cancelled or interrupted: mark it
                # retrieved (no "Task exception was never retrieved"); the caller's own
                # outcome is what counts.
                drain.exception()

    def stream_ack(self, stream_id: int, n: int) -> None:
        """The application consumed ``n`` bytes of the stream: return credit."""
        if self._closed:
            return
        self._session.acknowledge_received(stream_id, n, _now())
        self._transmit()
        blocked = self._blocked_on
        if blocked is not None and blocked.buffered <= self.recv_soft_limit // 2:
            self._unblock()

    def stream_overfull(self, stream: Stream) -> None:
        """A stream's unread bytes passed ``recv_soft_limit`` (mplex): stop reading."""
        if self._blocked_on is not None or self._closed:
            return
        self._blocked_on = stream
        self._rx.pause_reading()
        self._slow_timer = self.loop.call_later(self.slow_reader_timeout, self._slow_expired)

    def _slow_expired(self) -> None:
        stream = self._blocked_on
        self._slow_timer = None
        if stream is not None:
            log.info("resetting stream %s: reader stalled with %d bytes unread", stream.id, stream.buffered,
                     extra=self.log_extra)
            stream.reset(StreamErrorCode.RESOURCE_LIMIT)
        self._unblock()

    def _unblock(self) -> None:
        self._blocked_on = None
        if self._slow_timer is not None:
            self._slow_timer.cancel()
            self._slow_timer = None
        if not self._closed:
            self._rx.resume_reading()

    def stream_close_write(self, stream_id: int) -> None:
        """Half-close the stream (FIN)."""
        self.check_open()
        self._session.close_stream(stream_id)
        self._transmit()

    def stream_reset(self, stream_id: int, code: int) -> None:
        """Reset the stream on the wire (no-op on a closed connection)."""
        if self._closed:
            return
        with contextlib.suppress(P2PError):
            self._session.reset_stream(stream_id, code)
            self._transmit()

    def stream_released(self, stream: Stream) -> None:
        """The application is done with ``stream``."""
        if self.streams.pop(stream.id, None) is not None and self._attach is not None:
            self._session.detach(stream.id)  # type: ignore[attr-defined]
        if self._blocked_on is stream:
            self._unblock()

    # -- public ---------------------------------------------------------------------

    def statistics(self) -> dict[str, Any]:
        """Wire bytes, muxer frames and bytes, streams, and the last measured RTT."""
        out = self.stats.as_dict()
        out["bytes_received"] += getattr(self._session, "sealed_bytes_in", 0)
        #: of the muxer bytes received over TCP, those opened straight into a
        #: reader's buffer (``Stream.readinto``), never copied in user space
        out["bytes_received_in_place"] = getattr(self._session, "direct_bytes_in", 0)
        #: of the muxer frames sent, those a stream write framed, sealed and queued
        #: in one call (the send step over TCP)
        out["frames_sent_in_one_call"] = self._tx_step.frames_out if self._tx_step is not None else 0
        out["open_streams"] = len(self.streams)
        out["muxer"] = self.muxer
        #: the Noise transport cipher ("ChaChaPoly", or "AESGCM" between fastp2p peers)
        out["cipher"] = getattr(self._base.ciphers[0], "cipher", "ChaChaPoly")
        #: the code running it: "vaes-avx512" (fastp2p's AES-GCM kernel),
        #: "short-kernel+openssl-evp" (ChaChaPoly: frames up to 448 bytes on fastp2p's
        #: kernel), "openssl-evp", or "cryptography" (the pure build)
        out["cipher_impl"] = getattr(self._base.ciphers[0], "impl", "cryptography")
        #: plaintext bytes sealed / opened on the C pool's threads in parallel
        #: (NoiseConfig.parallel_seal: on with 4 or more CPUs)
        out["bytes_sealed_in_parallel"] = getattr(self._base.ciphers[0], "parallel_bytes", 0)
        out["bytes_opened_in_parallel"] = getattr(self._base.ciphers[1], "parallel_bytes", 0)
        out["data_path"] = self.data_path
        out["data_path_reason"] = self.data_path_reason
        out["muxer_stats"] = dict(getattr(self._session, "stats", {}))
        #: streams the muxer session still tracks (not yet closed both ways or reset)
        out["muxer_streams"] = self._session.stream_count()
        rtt = getattr(self._session, "rtt", None)
        if out["rtt"] is None and rtt is not None:
            out["rtt"] = rtt
        return out

    def open_stream(self, *, announce: bool = True) -> Stream:
        """Open a new outbound stream (no protocol negotiated yet).

        ``announce=False`` leaves the stream's opening frame (yamux SYN, mplex
        NewStream) queued for the caller's first write, which must follow at
        once: both are then sealed and sent together.

        Raises:
            ConnectionClosedError: the connection is closed or the peer sent GoAway.
            ResourceLimitExceededError: the stream limit is reached.
        """
        self.check_open()
        sid = self._session.open_stream()
        st = Stream(self, sid, inbound=False)
        self.streams[sid] = st
        if self._attach is not None:
            self._attach(sid, st.feed_data)
        self.stats.streams_opened += 1
        if announce:
            self._transmit()
        else:
            # the opening frame and the caller's first writes of this pass leave together
            self._tx.hold()
        return st

    def hold_writes(self) -> None:
        """Keep this loop pass's frames, its first included, for one write at the
        end of the pass (a hint: what follows in the same pass joins them)."""
        self._tx.hold()

    async def ping(self) -> float:
        """Round trip of a muxer-level ping (yamux), in seconds.

        Raises:
            ConnectionClosedError: the connection closed first.
            LocalProtocolError: the muxer has no ping (mplex).

        Cancellation: the ping stays outstanding; its answer is ignored.
        """
        self.check_open()
        opaque = self._session.ping(_now())
        fut: asyncio.Future[float] = self.loop.create_future()
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
        if self._step is not None:
            self._step.live = False  # reads still in flight are dropped
        if self._tx_step is not None:
            self._tx_step.live = False
        self._close_exc = err
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._slow_timer is not None:
            self._slow_timer.cancel()
            self._slow_timer = None
        self._blocked_on = None
        for path in {self._tx, self._rx}:
            if path is not self._base:
                with contextlib.suppress(Exception):
                    path.close()
        for st in list(self.streams.values()):
            st.set_reset(err)
        self.streams.clear()
        for fut in self._pings.values():
            if not fut.done():
                fut.set_exception(err)
        self._pings.clear()
        if not self.closed.done():
            self.closed.set_result(None)
        self._on_closed(self)
