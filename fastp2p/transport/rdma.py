"""RDMA data path: the in-band upgrade, stream frames over RC queue pairs, and
one-sided put/get/atomics on granted regions.

Two fastp2p hosts holding a Noise-secured connection upgrade it with
``/fastp2p/rdma/1.0.0`` (messages and rules in ``fastp2p.proto.rdma``): queue
pair numbers, PSNs, GIDs and MTU travel only over that authenticated stream.
Any failure leaves the connection on its current path with the reason in
``conn.data_path_reason``. As with shared memory the TCP connection stays open
carrying nothing: its closing is how a peer's death is noticed at once (the
queue pair's retry limit notices it too, within a bounded time, whenever
something is outstanding).

Streams (``RdmaPath``)
    Muxer frames are gather-copied (one C copy) into send slots of a
    registered slab and sent with SEND-with-immediate; the receiver has
    ``credits`` receive slots of ``buf_size`` bytes pre-posted from a
    registered slab of pool memory (one registration per slab, never per
    message). Credit-based flow control: a sender spends one credit per
    message; the immediate of every message returns the receive slots its
    sender re-posted since its last message; when that count reaches half the
    window with nothing to send, a zero-length credit message carries it. Data
    messages keep one credit in reserve for credit messages, so two peers
    never deadlock. Delivered bytes are transient (the slot is re-posted when
    the delivery returns): a reader waiting in ``readinto`` gets them copied
    straight into its buffer, anything else copies once.

One-sided operations (``rma``)
    A second RC queue pair per connection carries RDMA WRITE/READ and atomics
    so that a remote-access error (which moves both ends of that queue pair
    to the error state) never touches stream data. The owner registers exactly
    the range ``MemoryManager.check`` allowed with exactly the right, hands the
    rkey back, and deregisters when the requester reports completion (or the
    stream ends, or a deadline passes): rights and bounds are enforced by the
    NIC, and a stale rkey fails there. After such an error the queue pair is
    re-created in-band (``RECONNECT``).

In-flight ownership (DESIGN boundary rule 4): every posted one-sided work
request has an entry keyed by its ``wr_id`` holding the future, the local
registration (kept open: ``inflight``) and a lease on the local region; only
the completion, or the queue pair's destruction, releases them, never the
cancellation of the coroutine that awaited it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import secrets
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fastp2p import _accel
from fastp2p.errors import (
    AccessDeniedError,
    AccessError,
    BrokenResourceError,
    ClosedResourceError,
    ConnectionClosedError,
    P2PError,
    RDMAError,
    RegionBoundsError,
    RemoteProtocolError,
    TransportUnavailableError,
)
from fastp2p.proto import rdma as msgs
from fastp2p.proto.rdma import DenyStatus, Kind, Op, RdmaMessage
from fastp2p.rdma_errors import CompletionError, FlushError, completion_error
from fastp2p.transport._upgrade import UpgradeChannel, UpgradeRefused
from fastp2p.transport.base import DataPath

if TYPE_CHECKING:
    from fastp2p.config import RdmaConfig
    from fastp2p.rdma import RdmaDevice
    from fastp2p.transport.conn import Connection
    from fastp2p.transport.stream import Stream

__all__ = ["PROTOCOL_ID", "RdmaPath", "UpgradeRefused", "upgrade_outbound", "serve", "rma"]

log = logging.getLogger("fastp2p.rdma")

PROTOCOL_ID = msgs.PROTOCOL_ID

# wr_id layout: kind in the top 4 bits
_RECV = 1 << 60
_SEND = 2 << 60
_CREDIT = 3 << 60
_RMA = 4 << 60
_KIND_MASK = 0xF << 60
_LOW = (1 << 60) - 1


def _v() -> Any:
    from fastp2p._native import verbs

    return verbs


# -- per-connection verbs resources ---------------------------------------------------


class _Endpoint:
    """CQ, the stream and one-sided QPs, and the registered slabs of one connection."""

    def __init__(self, dev: RdmaDevice, cfg: RdmaConfig) -> None:
        self.dev = dev
        self.cfg = cfg
        self.nrecv = cfg.recv_credits
        self.nsend = cfg.send_slots
        self.buf = cfg.buf_size
        self.closed = False
        self.cq = dev.ctx.create_cq(self.nrecv + self.nsend + cfg.rma_depth + 64)
        self.regions: list[Any] = []
        self.mrs: list[Any] = []
        try:
            self.qp = dev.pd.create_qp(self.cq, self.nsend + self.nrecv + 8, self.nrecv + 8)
            self.qp.to_init(dev.port, 0)
            self.rma_qp = self._new_rma_qp()
            self.recv_mr = self._slab(self.nrecv * self.buf)
            self.send_mr = self._slab(self.nsend * self.buf)
            self.scratch_mr = self._slab(8 * cfg.rma_depth)
            self.qp.post_recv_slots(self.recv_mr, self.buf, range(self.nrecv), _RECV)
        except BaseException:
            self.close()
            raise
        self.psn = secrets.randbits(24)
        self.rma_psn = secrets.randbits(24)
        self.mtu = dev.mtu

    def _new_rma_qp(self) -> Any:
        v = _v()
        qp = self.dev.pd.create_qp(self.cq, self.cfg.rma_depth + 4, 4)
        # The queue pair admits remote operations; each registration then allows
        # only its own range and right. The stream queue pair admits none.
        qp.to_init(
            self.dev.port,
            v.ACCESS_LOCAL_WRITE | v.ACCESS_REMOTE_READ | v.ACCESS_REMOTE_WRITE | v.ACCESS_REMOTE_ATOMIC,
        )
        return qp

    def _slab(self, n: int) -> Any:
        region = _accel.alloc_region(n, False)
        self.regions.append(region)
        mr = self.dev.pd.register(region, _v().ACCESS_LOCAL_WRITE)
        self.mrs.append(mr)
        return mr

    def info(self, kind: Kind, **kw: Any) -> RdmaMessage:
        return RdmaMessage(
            kind,
            gid=self.dev.gid,
            lid=self.dev.lid,
            qpn=self.qp.qp_num,
            psn=self.psn,
            rma_qpn=self.rma_qp.qp_num,
            rma_psn=self.rma_psn,
            mtu=self.mtu,
            credits=self.nrecv,
            buf_size=self.buf,
            **kw,
        )

    def connect(self, peer: RdmaMessage) -> None:
        """RTR + RTS both queue pairs towards the peer's."""
        if len(peer.gid) != 16 or not peer.qpn or not peer.rma_qpn:
            raise RemoteProtocolError("rdma peer info without GID or queue pair numbers")
        self.mtu = min(self.mtu, peer.mtu or self.mtu)
        self._connect_qp(self.qp, peer.qpn, peer.psn, self.psn, peer)
        self._connect_qp(self.rma_qp, peer.rma_qpn, peer.rma_psn, self.rma_psn, peer)

    def _connect_qp(self, qp: Any, qpn: int, rpsn: int, spsn: int, peer: RdmaMessage) -> None:
        d, c = self.dev, self.cfg
        qp.to_rtr(qpn, rpsn, peer.gid, d.port, d.sgid_index, self.mtu, peer.lid, d.max_rd_atomic, 12)
        qp.to_rts(spsn, c.qp_timeout, c.retry_count, c.rnr_retry, d.max_rd_atomic)

    def reconnect_rma(self, peer: RdmaMessage | None = None) -> None:
        """Replace the one-sided queue pair (after an error); connect if ``peer`` given."""
        old = self.rma_qp
        self.rma_qp = self._new_rma_qp()
        self.rma_psn = secrets.randbits(24)
        with contextlib.suppress(Exception):
            old.close()
        if peer is not None:
            self._connect_qp(self.rma_qp, peer.rma_qpn, peer.rma_psn, self.rma_psn, peer)

    def close(self) -> None:
        """Destroy the queue pairs first (the NIC stops touching memory), then the rest."""
        if self.closed:
            return
        self.closed = True
        for name in ("qp", "rma_qp"):
            qp = getattr(self, name, None)
            if qp is not None:
                with contextlib.suppress(Exception):
                    qp.close()
        with contextlib.suppress(Exception):
            self.cq.close()
        for mr in self.mrs:
            with contextlib.suppress(Exception):
                mr.close()
        for region in self.regions:
            region.close()


class _Op:
    """One posted one-sided work request (the in-flight table's entry)."""

    __slots__ = ("fut", "mr", "lease", "scratch", "what")

    def __init__(self, fut: asyncio.Future[int], mr: Any, lease: Any, scratch: int, what: str) -> None:
        self.fut = fut
        self.mr = mr
        self.lease = lease
        self.scratch = scratch
        self.what = what


# -- the data path ----------------------------------------------------------------------


class RdmaPath(DataPath):
    """Muxer frames over an RC queue pair with credit-based flow control."""

    name = "rdma"

    def __init__(self, ep: _Endpoint, peer: RdmaMessage, cfg: RdmaConfig) -> None:
        self.loop = asyncio.get_running_loop()
        self.ep = ep
        self.cfg = cfg
        self.device = ep.dev
        self._B = ep.buf
        self._send_cap = min(ep.buf, peer.buf_size or ep.buf)
        # Both sides use the smaller of the two receive windows, so each sender's
        # queue stays within its size and each receiver's credit threshold is
        # reachable by what the sender may have outstanding.
        window = min(peer.credits, ep.nrecv)
        if window < 2 or self._send_cap < 4096:
            raise RemoteProtocolError(f"rdma peer offered {peer.credits} receive slots of {peer.buf_size} bytes")
        self._credits = window
        self._owed = 0
        self._credit_threshold = max(1, window // 2)
        self._free_slots: list[int] = list(range(ep.nsend - 1, -1, -1))
        self._open_slot = -1
        self._open_fill = 0
        self._ready: collections.deque[tuple[int, int]] = collections.deque()
        self._pending: collections.deque[memoryview] = collections.deque()
        self._pending_bytes = 0
        self._high_water = cfg.write_high_water
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._backlog: collections.deque[tuple[int, int]] = collections.deque()  # (slot, nbytes)
        self._deliver: Callable[[Any, bool], None] | None = None
        self._on_failed: Callable[[BaseException], None] | None = None
        self._paused = False
        self._closed = False
        self._polling = False
        self._failure: BaseException | None = None
        # one-sided operations
        self._ops: dict[int, _Op] = {}
        self._op_seq = 0
        self._scratch_free = list(range(cfg.rma_depth - 1, -1, -1))
        self._rma_slots = asyncio.Semaphore(cfg.rma_depth)
        self.rma_broken: str | None = None
        self._rma_lock = asyncio.Lock()
        # adaptive busy-poll budget (ns)
        self._spin_ns = cfg.busy_poll_us * 1000
        self._spin_max = cfg.busy_poll_us * 1000
        self.bytes_sent = 0
        self.bytes_received = 0
        self.messages_sent = 0
        self.messages_received = 0
        self.credit_messages = 0
        self.events = 0
        self.loop.add_reader(ep.cq.channel_fd, self._on_event)
        self._reader_added = True

    # -- sending ------------------------------------------------------------------

    def send(self, bufs: list[memoryview]) -> int:
        if self._closed:
            raise ClosedResourceError("RDMA path closed")
        if self._failure is not None:
            raise BrokenResourceError(f"RDMA path failed: {self._failure}")
        total = 0
        for b in bufs:
            total += len(b)
        self.bytes_sent += total
        if self._pending:
            for b in bufs:
                self._queue(b)
            return total
        skip = self._fill(bufs, 0, total)
        if skip < total:
            for b in bufs:
                if skip >= len(b):
                    skip -= len(b)
                    continue
                self._queue(b[skip:])
                skip = 0
        self._post_ready()
        return total

    def _fill(self, bufs: list[memoryview], skip: int, total: int) -> int:
        """Copy ``bufs`` from byte ``skip`` into send slots; returns how far it got."""
        cap = self._send_cap
        mr = self.ep.send_mr
        B = self._B
        while skip < total:
            if self._open_slot < 0:
                if not self._free_slots:
                    break
                self._open_slot = self._free_slots.pop()
                self._open_fill = 0
            n = mr.gather(self._open_slot * B + self._open_fill, cap - self._open_fill, bufs, skip)
            self._open_fill += n
            skip += n
            if self._open_fill >= cap:
                self._ready.append((self._open_slot, self._open_fill))
                self._open_slot = -1
        return skip

    def _queue(self, b: memoryview) -> None:
        self._pending.append(memoryview(bytes(b)))
        self._pending_bytes += len(b)

    def _post_ready(self) -> None:
        if self._closed or self._failure is not None:
            return
        v = _v()
        B = self._B
        mr = self.ep.send_mr
        wrs = []
        while self._credits >= 2:
            if self._ready:
                slot, n = self._ready.popleft()
            elif self._open_slot >= 0 and self._open_fill > 0:
                slot, n = self._open_slot, self._open_fill
                self._open_slot = -1
            else:
                break
            self._credits -= 1
            wrs.append((_SEND | slot, v.OP_SEND_IMM, mr, slot * B, n, 0, 0, self._owed, v.WR_SIGNALED))
            self._owed = 0
        if wrs:
            self.messages_sent += len(wrs)
            try:
                self.ep.qp.post_send_batch(wrs)
            except RDMAError as exc:
                self._fail(exc)

    def _send_credits(self) -> None:
        """Return credits with a zero-length message when nothing carries them."""
        if self._owed < self._credit_threshold or self._closed or self._failure is not None:
            return
        self._post_ready()
        if self._owed and self._credits >= 1:
            v = _v()
            self._credits -= 1
            owed, self._owed = self._owed, 0
            self.credit_messages += 1
            try:
                self.ep.qp.post_send(_CREDIT, v.OP_SEND_IMM, None, 0, 0, imm=owed)
            except RDMAError as exc:
                self._fail(exc)

    def _flush_pending(self) -> None:
        pending = self._pending
        if pending:
            done = self._fill(list(pending), 0, self._pending_bytes)
            self._pending_bytes -= done
            while done:
                head = pending[0]
                if len(head) <= done:
                    done -= len(head)
                    pending.popleft()
                else:
                    pending[0] = head[done:]
                    done = 0
        self._post_ready()
        if not pending:
            for w in self._drain_waiters:
                if not w.done():
                    w.set_result(None)
            self._drain_waiters.clear()

    @property
    def write_paused(self) -> bool:
        return self._pending_bytes > self._high_water

    async def drain(self) -> None:
        while self._pending and not self._closed and self._failure is None:
            fut = self.loop.create_future()
            self._drain_waiters.append(fut)
            await fut
        if self._pending and (self._closed or self._failure is not None):
            raise BrokenResourceError("RDMA path closed with unsent data")

    # -- receiving ------------------------------------------------------------------

    def start(self, deliver: Callable[[Any, bool], None], on_failed: Callable[[BaseException], None]) -> None:
        """Deliver received bytes to ``deliver(data, transient=True)`` from now on."""
        self._deliver = deliver
        self._on_failed = on_failed
        if self._failure is not None:
            exc, self._failure = self._failure, None
            self._fail(exc)
            return
        self.loop.call_soon(self._on_event)

    def _on_event(self) -> None:
        if self._closed or self._polling:
            return
        self.events += 1
        try:
            self.ep.cq.drain_events()
        except RDMAError as exc:
            self._fail(exc)
            return
        self.poll()

    def poll(self) -> None:
        """Process every completion now (then, adaptively, spin a little for more)."""
        if self._closed or self._polling:
            return
        self._polling = True
        try:
            cq = self.ep.cq
            spin = 0
            while not self._closed:
                wcs = cq.poll(64, spin)
                if not wcs:
                    if spin:
                        self._spin_ns = max(self._spin_ns // 2, 1000) if self._spin_max else 0
                    break
                if spin:
                    self._spin_ns = min(self._spin_ns * 2, self._spin_max)
                self._handle(wcs)
                spin = self._spin_ns if self._spin_max else 0
            if not self._closed:
                self._deliver_backlog()
                self._send_credits()
        finally:
            self._polling = False

    def _handle(self, wcs: list[tuple[int, int, int, int, int | None, int, int]]) -> None:
        freed = False
        for wr_id, status, _opcode, nbytes, imm, _qpn, verr in wcs:
            kind = wr_id & _KIND_MASK
            if kind == _RMA:
                self._complete_op(wr_id, status, verr)
                continue
            if status != 0:
                if self._closed:
                    continue
                self._fail(completion_error(status, wr_id=wr_id, vendor_err=verr, what="RDMA stream path"))
                return
            if kind == _RECV:
                if imm:
                    self._credits += imm
                self.messages_received += 1
                self._backlog.append((wr_id & _LOW, nbytes))
            elif kind == _SEND:
                self._free_slots.append(wr_id & _LOW)
                freed = True
        if freed and self._pending:
            self._flush_pending()
        else:
            self._post_ready()
        self._deliver_backlog()

    def _deliver_backlog(self) -> None:
        deliver = self._deliver
        if deliver is None or self._paused or not self._backlog:
            return
        B = self._B
        mr = self.ep.recv_mr
        repost: list[int] = []
        backlog = self._backlog
        try:
            while backlog and not self._paused and not self._closed:
                slot, n = backlog.popleft()
                if n:
                    self.bytes_received += n
                    view = mr.view(slot * B, n)
                    try:
                        deliver(view, True)
                    finally:
                        with contextlib.suppress(BufferError):
                            view.release()
                repost.append(slot)
        finally:
            if repost and not self._closed:
                try:
                    self.ep.qp.post_recv_slots(mr, B, repost, _RECV)
                    self._owed += len(repost)
                except RDMAError as exc:
                    self._fail(exc)

    def _fail(self, exc: BaseException) -> None:
        if self._failure is not None or self._closed:
            return
        cb = self._on_failed
        if cb is None:
            self._failure = exc  # surfaced when the receiving side starts / on send
            return
        self._on_failed = None
        self._failure = exc
        for w in self._drain_waiters:
            if not w.done():
                w.set_result(None)
        cb(exc if isinstance(exc, P2PError) else RDMAError(str(exc)))

    def pause_reading(self) -> None:
        self._paused = True

    def resume_reading(self) -> None:
        if self._paused:
            self._paused = False
            self.loop.call_soon(self._resume)

    def _resume(self) -> None:
        if not self._closed and not self._polling:
            self._deliver_backlog()
            self._send_credits()

    # -- one-sided operations -------------------------------------------------------------

    async def post_rma(
        self,
        opcode: int,
        mr: Any,
        offset: int,
        length: int,
        remote_addr: int,
        rkey: int,
        *,
        compare_add: int = 0,
        swap: int = 0,
        what: str = "RDMA operation",
    ) -> int:
        """Post one one-sided work request and wait for its completion.

        Returns the old value for atomics (else 0). The in-flight entry, not
        this coroutine, owns ``mr`` (kept open) and a lease on its region until
        the completion or the queue pair's destruction.

        Raises:
            CompletionError subclasses (RemoteAccessError, RetryExceededError,
            FlushError ...), ClosedResourceError, RDMAError.
        """
        if self._closed:
            raise ClosedResourceError("RDMA path closed")
        if self.rma_broken:
            raise TransportUnavailableError(f"one-sided queue pair unusable: {self.rma_broken}")
        v = _v()
        atomic = opcode in (v.OP_CAS, v.OP_FAA)
        await self._rma_slots.acquire()
        try:
            if self._closed:
                raise ClosedResourceError("RDMA path closed")
            region = mr.region
            lease = region.lease() if region is not None else None
            self._op_seq = (self._op_seq + 1) & _LOW
            wr_id = _RMA | self._op_seq
            scratch = self._scratch_free.pop() if atomic else -1
            fut: asyncio.Future[int] = self.loop.create_future()
            entry = _Op(fut, mr, lease, scratch, what)
            try:
                if atomic:
                    self.ep.rma_qp.post_send(
                        wr_id, opcode, self.ep.scratch_mr, scratch * 8, 8, remote_addr, rkey,
                        0, compare_add, swap,
                    )
                else:
                    self.ep.rma_qp.post_send(wr_id, opcode, mr, offset, length, remote_addr, rkey)
            except BaseException:
                if lease is not None:
                    lease.release()
                if scratch >= 0:
                    self._scratch_free.append(scratch)
                raise
            mr.inflight += 1
            self._ops[wr_id] = entry
        except BaseException:
            self._rma_slots.release()
            raise
        return await fut

    def _complete_op(self, wr_id: int, status: int, verr: int) -> None:
        entry = self._ops.pop(wr_id, None)
        if entry is None:
            return
        self._finish_op(entry, None if status == 0 else completion_error(status, wr_id=wr_id, vendor_err=verr, what=entry.what))
        if status != 0 and not self._closed:
            # the one-sided queue pair is in the error state now
            self._rma_failed(f"{completion_error(status, vendor_err=verr)}")

    def _finish_op(self, entry: _Op, exc: BaseException | None) -> None:
        value = 0
        if entry.scratch >= 0:
            if exc is None:
                value = int.from_bytes(self.ep.scratch_mr.view(entry.scratch * 8, 8), "little")
            self._scratch_free.append(entry.scratch)
        entry.mr.inflight -= 1
        if entry.lease is not None:
            entry.lease.release()
        self._rma_slots.release()
        fut = entry.fut
        if not fut.done() and not self.loop.is_closed():
            if exc is None:
                fut.set_result(value)
            else:
                fut.set_exception(exc)

    def _rma_failed(self, why: str) -> None:
        if self.rma_broken is None:
            self.rma_broken = why
            log.info("one-sided queue pair failed (%s); it is re-created on next use", why)

    async def repair_rma(self, conn: Connection) -> None:
        """Re-create the one-sided queue pair with the peer after an error (in-band)."""
        from fastp2p.transport.upgrader import negotiate_outbound

        async with self._rma_lock:
            if self.rma_broken is None or self._closed:
                return
            # flush what is left (entries of the dead queue pair fail with FlushError)
            self.ep.reconnect_rma()  # destroys the old queue pair first
            self._drop_ops(FlushError("one-sided queue pair was reset"))
            stream = conn.open_stream()
            try:
                msg = self.ep.info(Kind.RECONNECT)
                stream.protocol = await negotiate_outbound(stream, [PROTOCOL_ID], early_data=msgs.encode(msg))
                reply = await UpgradeChannel[RdmaMessage](stream, msgs, "rdma").recv()
                if reply.kind is not Kind.RECONNECTED:
                    raise RemoteProtocolError(f"expected RECONNECTED, got {reply.kind.name}")
                self.ep._connect_qp(self.ep.rma_qp, reply.rma_qpn, reply.rma_psn, self.ep.rma_psn, reply)
                self.rma_broken = None
            finally:
                with contextlib.suppress(P2PError):
                    await stream.aclose()

    def _drop_ops(self, exc: BaseException) -> None:
        for wr_id in list(self._ops):
            entry = self._ops.pop(wr_id)
            self._finish_op(entry, exc)

    # -- teardown ----------------------------------------------------------------------

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._reader_added:
            self._reader_added = False
            with contextlib.suppress(Exception):
                self.loop.remove_reader(self.ep.cq.channel_fd)
        for w in self._drain_waiters:
            if not w.done():
                w.set_result(None)
        self._drain_waiters.clear()
        # Destroy the queue pairs first: after that the NIC touches nothing, so the
        # in-flight table may release its leases and registrations.
        self.ep.close()
        self._drop_ops(ConnectionClosedError("connection closed before the RDMA operation completed"))
        with contextlib.suppress(Exception):
            self.device.pd.sweep()

    def statistics(self) -> dict[str, Any]:
        return {
            "bytes_sent": self.bytes_sent,
            "bytes_received": self.bytes_received,
            "messages_sent": self.messages_sent,
            "messages_received": self.messages_received,
            "credit_messages": self.credit_messages,
            "credits": self._credits,
            "events": self.events,
            "pending": self._pending_bytes,
            "rma_inflight": len(self._ops),
            "rma_broken": self.rma_broken,
        }


# -- the upgrade -----------------------------------------------------------------------


async def upgrade_outbound(conn: Connection, stream: Stream, cfg: RdmaConfig, boot_id: bytes = b"") -> RdmaPath:
    """Dialer side of the upgrade. Returns the path; raises ``UpgradeRefused``
    (or a ``P2PError``/``OSError``) when the connection stays where it was."""
    from fastp2p import rdma
    from fastp2p.transport.upgrader import negotiate_outbound

    dev = rdma.open_device(cfg.device)
    ep = _Endpoint(dev, cfg)
    path: RdmaPath | None = None
    try:
        hello = ep.info(Kind.HELLO, boot_id=boot_id)
        stream.protocol = await negotiate_outbound(stream, [PROTOCOL_ID], early_data=msgs.encode(hello))
        ch = UpgradeChannel[RdmaMessage](stream, msgs, "rdma")
        reply = await ch.recv()
        if reply.kind is Kind.REFUSE:
            raise UpgradeRefused(f"peer refused: {reply.reason}")
        if reply.kind is not Kind.ACCEPT:
            raise RemoteProtocolError(f"expected ACCEPT, got {reply.kind.name}")
        ep.connect(reply)
        path = RdmaPath(ep, reply, cfg)
        conn.switch_tx(stream.id, msgs.encode(RdmaMessage(Kind.SWITCH)), path)
        msg = await ch.recv()
        if msg.kind is not Kind.SWITCH:
            raise RemoteProtocolError(f"expected SWITCH, got {msg.kind.name}")
        conn.switch_rx(path, transient=True)
        return path
    except BaseException:
        if path is not None:
            if not conn.uses_path(path):
                path.close()
            else:
                # our sending side already moved: the connection cannot go back
                raise
        else:
            ep.close()
        raise


async def serve(
    conn: Connection,
    stream: Stream,
    cfg: RdmaConfig,
    enabled: tuple[bool, str],
    check: Callable[..., tuple[Any, int]],
    refuse_same_host: bytes | None = None,
) -> RdmaPath | None:
    """Listener side of ``/fastp2p/rdma/1.0.0``: an upgrade, a one-sided
    operation or a reconnect of the one-sided queue pair, by the first message.

    ``refuse_same_host``: this host's boot id when a same-host peer should use
    shared memory instead.
    """
    ch = UpgradeChannel[RdmaMessage](stream, msgs, "rdma")
    first = await ch.recv()
    if first.kind is Kind.RMA_REQUEST:
        await _serve_rma(conn, ch, first, check, cfg)
        return None
    if first.kind is Kind.RECONNECT:
        path = conn.tx_path
        if not isinstance(path, RdmaPath) or path.ep.closed:
            raise RemoteProtocolError("RECONNECT on a connection not using RDMA")
        path.ep.reconnect_rma(first)  # destroys the old queue pair first
        path._drop_ops(FlushError("one-sided queue pair was reset by the peer"))
        path.rma_broken = None
        await ch.send(path.ep.info(Kind.RECONNECTED))
        return None
    if first.kind is not Kind.HELLO:
        raise RemoteProtocolError(f"expected HELLO, got {first.kind.name}")
    ok, why = enabled
    if ok and refuse_same_host and first.boot_id == refuse_same_host:
        ok, why = False, "peer runs on this host: shared memory preferred (RdmaConfig.same_host)"
    if ok and conn.data_path != "tcp":
        ok, why = False, f"connection already uses {conn.data_path}"
    ep = None
    if ok:
        try:
            from fastp2p import rdma

            ep = _Endpoint(rdma.open_device(cfg.device), cfg)
            ep.connect(first)
        except (P2PError, OSError) as exc:
            if ep is not None:
                ep.close()
                ep = None
            ok, why = False, f"could not set up RDMA: {exc}"
    if not ok or ep is None:
        conn.data_path_reason = why
        await ch.send(RdmaMessage(Kind.REFUSE, reason=why))
        return None
    try:
        path = RdmaPath(ep, first, cfg)
    except BaseException:
        ep.close()
        raise
    try:
        await ch.send(ep.info(Kind.ACCEPT))
        msg = await ch.recv()
        if msg.kind is not Kind.SWITCH:
            raise RemoteProtocolError(f"expected SWITCH, got {msg.kind.name}")
        conn.switch_rx(path, transient=True)
        conn.switch_tx(stream.id, msgs.encode(RdmaMessage(Kind.SWITCH)), path)
    except BaseException:
        if not conn.uses_path(path):
            path.close()
        raise
    return path


# -- one-sided operations: owner side -----------------------------------------------------


async def _serve_rma(
    conn: Connection, ch: UpgradeChannel[RdmaMessage], req: RdmaMessage, check: Callable[..., tuple[Any, int]], cfg: RdmaConfig
) -> None:
    v = _v()
    path = conn.tx_path
    if not isinstance(path, RdmaPath):
        await ch.send(RdmaMessage(Kind.RMA_DENIED, status=DenyStatus.UNAVAILABLE, reason="not on the RDMA path"))
        return
    try:
        op = Op(req.op)
    except ValueError:
        raise RemoteProtocolError(f"unknown one-sided op {req.op}") from None
    atomic = op in (Op.CAS, Op.FAA)
    try:
        if atomic and req.length != 8:
            raise RegionBoundsError("atomics act on 8-byte slots")
        region, at = check(req.token, conn.remote_peer, write=op is not Op.GET, offset=req.offset, length=req.length)
        if atomic:
            # an atomic also reads (returns the old value)
            check(req.token, conn.remote_peer, write=False, offset=req.offset, length=8)
            if (region.address + at) % 8:
                raise RegionBoundsError("atomic slot not 8-byte aligned")
        if req.length == 0:
            raise RegionBoundsError("empty range")
    except RegionBoundsError as exc:
        await ch.send(RdmaMessage(Kind.RMA_DENIED, status=DenyStatus.BOUNDS, reason=str(exc)))
        return
    except (AccessError, ClosedResourceError) as exc:
        await ch.send(RdmaMessage(Kind.RMA_DENIED, status=DenyStatus.ACCESS_DENIED, reason=str(exc)))
        return
    access = {
        Op.PUT: v.ACCESS_LOCAL_WRITE | v.ACCESS_REMOTE_WRITE,
        Op.GET: v.ACCESS_REMOTE_READ,
        Op.CAS: v.ACCESS_LOCAL_WRITE | v.ACCESS_REMOTE_ATOMIC,
        Op.FAA: v.ACCESS_LOCAL_WRITE | v.ACCESS_REMOTE_ATOMIC,
    }[op]
    try:
        # exactly the checked range, exactly the right: the NIC enforces both
        mr = path.device.pd.register(region, access, at, req.length)
    except (P2PError, ValueError) as exc:
        await ch.send(RdmaMessage(Kind.RMA_DENIED, status=DenyStatus.INTERNAL, reason=str(exc)))
        return
    try:
        await ch.send(RdmaMessage(Kind.RMA_GRANT, address=mr.addr, rkey=mr.rkey, length=req.length))
        with contextlib.suppress(TimeoutError, UpgradeRefused, P2PError):
            async with asyncio.timeout(cfg.grant_timeout):
                done = await ch.recv()
                if done.kind is not Kind.RMA_DONE:
                    raise RemoteProtocolError(f"expected RMA_DONE, got {done.kind.name}")
    finally:
        mr.close()  # the rkey dies here: later accesses fail on the NIC
    with contextlib.suppress(P2PError):
        await ch.send(RdmaMessage(Kind.RMA_FINISHED))


# -- one-sided operations: requester side -------------------------------------------------


async def rma(
    conn: Connection,
    op: Op,
    region: Any,
    token: bytes,
    offset: int,
    length: int,
    local_offset: int,
    *,
    compare: int = 0,
    operand: int = 0,
) -> int:
    """One put/get/atomic over RDMA (the caller validated the local range).

    Returns the byte count (put/get) or the slot's old value (atomics).
    """
    from fastp2p.transport.upgrader import negotiate_outbound

    v = _v()
    path = conn.tx_path
    if not isinstance(path, RdmaPath):
        raise TransportUnavailableError("the connection does not use the RDMA path")
    if path.rma_broken:
        await path.repair_rma(conn)
    atomic = op in (Op.CAS, Op.FAA)
    mr = None if atomic else path.device.registration(region)
    stream = conn.open_stream()
    try:
        req = RdmaMessage(
            Kind.RMA_REQUEST, op=int(op), token=bytes(token), offset=offset, length=length,
            compare=compare, operand=operand,
        )
        stream.protocol = await negotiate_outbound(stream, [PROTOCOL_ID], early_data=msgs.encode(req))
        ch = UpgradeChannel[RdmaMessage](stream, msgs, "rdma")
        grant = await ch.recv()
        if grant.kind is Kind.RMA_DENIED:
            if grant.status == DenyStatus.BOUNDS:
                raise RegionBoundsError(f"owner refused: {grant.reason}")
            if grant.status == DenyStatus.ACCESS_DENIED:
                raise AccessDeniedError(f"owner refused: {grant.reason}")
            raise RDMAError(f"owner could not serve the operation: {grant.reason}")
        if grant.kind is not Kind.RMA_GRANT or grant.length != length:
            raise RemoteProtocolError(f"expected RMA_GRANT for {length} bytes, got {grant.kind.name}")
        status = 255
        try:
            if op is Op.PUT:
                result = await path.post_rma(v.OP_WRITE, mr, local_offset, length, grant.address, grant.rkey, what="RDMA WRITE")
                result = length
            elif op is Op.GET:
                await path.post_rma(v.OP_READ, mr, local_offset, length, grant.address, grant.rkey, what="RDMA READ")
                result = length
            else:
                result = await path.post_rma(
                    v.OP_CAS if op is Op.CAS else v.OP_FAA, path.ep.scratch_mr, 0, 8, grant.address, grant.rkey,
                    compare_add=compare if op is Op.CAS else operand, swap=operand, what=f"RDMA {op.name}",
                )
            status = 0
        except CompletionError as exc:
            status = min(exc.status or 255, 255)
            raise
        finally:
            # the owner deregisters (kills the rkey) when it reads this
            with contextlib.suppress(P2PError, UpgradeRefused):
                await ch.send(RdmaMessage(Kind.RMA_DONE, status=status))
                await ch.recv()
        return result
    except BaseException:
        stream.reset()
        raise
    finally:
        with contextlib.suppress(P2PError):
            await stream.aclose()
