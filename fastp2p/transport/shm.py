"""Same-host shared-memory data path: the in-band upgrade and the ring driver.

Two fastp2p hosts holding a Noise-secured connection upgrade it with
``/fastp2p/shm/1.0.0`` (messages and rules in ``fastp2p.proto.shm``) when they
run on one kernel. The dialer creates a memfd with two single-producer /
single-consumer rings (``fastp2p._native.shm``, C) and one eventfd per side,
and hands the three descriptors with SCM_RIGHTS over an abstract Unix socket
only to the process that proves it is the authenticated peer: it must send the
one-time secret that travelled over the Noise channel, and the kernel's
SO_PEERCRED must name the pid/uid the peer announced there. Then each side
switches its sending direction to the ring after its ``SWITCH`` marker, and its
receiving direction when it reads the peer's marker. Any failure leaves the
connection on TCP with the reason in ``conn.data_path_reason``.

The TCP connection stays open after the switch: it carries nothing, but its
closing is how a peer's death (even SIGKILL) is noticed at once.

``ShmPath`` moves the muxer frames: ``send`` copies them into the ring (one
gather copy in C); a wake-up goes through the peer's eventfd only when the
peer armed it before sleeping. Receiving hands the contiguous readable span of
the ring to the connection (``transient``: streams that keep bytes copy them;
a reader waiting in ``readinto`` gets them copied straight into its buffer).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hmac
import logging
import os
import secrets
import socket
import struct
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fastp2p import _accel
from fastp2p.errors import (
    BrokenResourceError,
    ClosedResourceError,
    P2PError,
    RemoteProtocolError,
)
from fastp2p.proto import shm as msgs
from fastp2p.proto.shm import Kind, ShmMessage
from fastp2p.transport._upgrade import UpgradeChannel, UpgradeRefused
from fastp2p.transport.base import DataPath

if TYPE_CHECKING:
    from fastp2p.config import ShmConfig
    from fastp2p.transport.conn import Connection
    from fastp2p.transport.stream import Stream

__all__ = ["PROTOCOL_ID", "ShmPath", "available", "boot_id", "upgrade_outbound", "serve_upgrade"]

log = logging.getLogger("fastp2p.shm")

PROTOCOL_ID = msgs.PROTOCOL_ID
# Bytes handed to the connection per delivery, as a TCP read would: a stream
# that pauses reading (mplex backpressure) then stops the flow within this much.
MAX_DELIVERY = 256 * 1024
# Bytes one pass of poll() delivers, as a fraction of the ring, before it lets the
# loop run: a reader's lent readinto buffer takes everything until its task runs,
# and only then goes the credit back. Unbounded, a bulk transfer went in turns
# (the writer filled the ring and the window, slept; the reader emptied it all,
# returned the credit, slept): 6.1-6.5 GB/s with both processes half idle.
PASS_FRACTION = 4
# Busy-poll slice while spinning: short enough that other tasks barely wait.
_SPIN_SLICE_NS = 3_000
_SOCKET_PREFIX = b"\0fastp2p-shm-"
_MAX_ACCEPTS = 4


def available() -> tuple[bool, str]:
    """Whether this process can use the shared-memory path, and why not."""
    if not _accel.HAVE_NATIVE:
        return False, "the shared-memory path needs the native core (FASTP2P_NO_EXTENSIONS is set)"
    try:
        from fastp2p._native import shm  # noqa: F401
    except ImportError as exc:  # pragma: no cover - depends on the build
        return False, f"native shm module missing: {exc}"
    if not hasattr(os, "eventfd") or not hasattr(os, "memfd_create"):
        return False, "this platform has no eventfd/memfd (Linux only)"
    return True, ""


_BOOT_ID: bytes | None = None


def boot_id() -> bytes:
    """This kernel's boot id: equal boot ids mean the same host."""
    global _BOOT_ID
    if _BOOT_ID is None:
        try:
            with open("/proc/sys/kernel/random/boot_id", "rb") as f:
                _BOOT_ID = f.read().strip()[:64]
        except OSError:
            _BOOT_ID = b""
    return _BOOT_ID


class ShmPath(DataPath):
    """Muxer frames through a shared ring (optionally still Noise-sealed)."""

    name = "shm"

    def __init__(
        self,
        segment: Any,
        my_efd: int,
        peer_efd: int,
        *,
        peer_pid: int,
        high_water: int,
        spin_us: float = 0.0,
        seal: Any = None,
        open_: Any = None,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.segment = segment
        self._writer = segment.writer
        self._reader = segment.reader
        self.window_hint = segment.capacity
        self._my_efd = my_efd
        self._peer_efd = peer_efd
        self.peer_pid = peer_pid
        self._seal = seal
        self._open = open_
        self._high_water = high_water
        self._spin_s = spin_us / 1e6
        self._spin_until = 0.0
        self._spinning = False
        # Bytes that did not fit in the ring (copies: the caller reuses its buffers).
        self._pending: collections.deque[memoryview] = collections.deque()
        self._pending_bytes = 0
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._deliver: Callable[[Any, bool], None] | None = None
        self._on_failed: Callable[[BaseException], None] | None = None
        self._reading = False
        self._paused = False
        self._closed = False
        self._polling = False
        self._poll_soon = False  # a pass that stopped at its budget is scheduled
        self._pass_bytes = max(MAX_DELIVERY, segment.capacity // PASS_FRACTION)
        self.bytes_sent = 0
        self.bytes_received = 0
        self.wakeups_sent = 0
        self.wakeups_received = 0
        self.bytes_spilled = 0

    # -- sending ------------------------------------------------------------------

    def send(self, bufs: list[memoryview]) -> int:
        if self._closed:
            raise ClosedResourceError("shared-memory path closed")
        if self._seal is not None:
            bufs = [memoryview(self._seal.seal_frames(bufs))]
        total = 0
        for b in bufs:
            total += len(b)
        self.bytes_sent += total
        if self._pending:
            for b in bufs:
                self._queue(b)
            return total
        try:
            n = self._writer.write(bufs)
        except P2PError as exc:
            self._fail(exc)
            raise
        if self._writer.wake_needed():
            self._wake_peer()
        if self._spin_s:
            # A request just went out: its answer is worth polling for.
            self._start_spin()
        if n < total:
            # Ring full: keep a copy of the rest (the caller may reuse its buffers)
            # and wait for the consumer to make space.
            skip = n
            for b in bufs:
                if skip >= len(b):
                    skip -= len(b)
                    continue
                self._queue(b[skip:])
                skip = 0
            if self._writer.arm_space():
                self.loop.call_soon(self._flush_pending)
        return total

    def _queue(self, b: memoryview) -> None:
        self._pending.append(memoryview(bytes(b)))
        self._pending_bytes += len(b)
        self.bytes_spilled += len(b)

    def _flush_pending(self) -> None:
        pending = self._pending
        while pending and not self._closed:
            n = self._writer.write(list(pending))
            self._pending_bytes -= n
            while n:
                head = pending[0]
                if len(head) <= n:
                    n -= len(head)
                    pending.popleft()
                else:
                    pending[0] = head[n:]
                    n = 0
            if self._writer.wake_needed():
                self._wake_peer()
            if pending:
                if not self._writer.arm_space():
                    break
        if not self._pending:
            for w in self._drain_waiters:
                if not w.done():
                    w.set_result(None)
            self._drain_waiters.clear()

    def _wake_peer(self) -> None:
        self.wakeups_sent += 1
        with contextlib.suppress(BlockingIOError):
            os.eventfd_write(self._peer_efd, 1)

    @property
    def transient(self) -> bool:
        """Delivered bytes live in the ring (unsealed path): keepers must copy."""
        return self._open is None

    @property
    def write_paused(self) -> bool:
        return self._pending_bytes > self._high_water

    async def drain(self) -> None:
        while self._pending and not self._closed:
            fut = self.loop.create_future()
            self._drain_waiters.append(fut)
            await fut
        if self._closed and self._pending:
            raise BrokenResourceError("shared-memory path closed with unsent data")

    # -- receiving ------------------------------------------------------------------

    def start(self, deliver: Callable[[Any, bool], None], on_failed: Callable[[BaseException], None]) -> None:
        """Deliver ring bytes to ``deliver(data, transient)`` from now on."""
        self._deliver = deliver
        self._on_failed = on_failed
        self._reading = True
        self.loop.add_reader(self._my_efd, self._on_wake)
        self._pass()

    def _on_wake(self) -> None:
        self.wakeups_received += 1
        with contextlib.suppress(BlockingIOError):
            os.eventfd_read(self._my_efd)
        if self._pending:
            self._flush_pending()
        self._pass()

    def _next_pass(self) -> None:
        self._poll_soon = False
        self._pass()

    def poll(self) -> None:
        """Deliver everything readable now, then arm the wake-up (the connection's
        last look at the ring when the peer is gone)."""
        self._poll_soon = False
        self._pass(bounded=False)

    def _pass(self, bounded: bool = True) -> None:
        """Deliver what is readable (``bounded``: up to the pass's budget), then
        arm the wake-up, or come back in the loop's next round if the budget ran
        out first."""
        if not self._reading or self._paused or self._closed or self._polling or self._poll_soon:
            return
        self._polling = True
        reader = self._reader
        deliver = self._deliver
        assert deliver is not None
        # A producer waiting for space is woken once half the ring is free (or
        # before we stop), not after every consume: each wake-up is a syscall
        # and a cross-CPU interrupt.
        owed = False
        half = reader.capacity // 2
        left = self._pass_bytes if bounded else None
        try:
            while True:
                if left is not None and left <= 0:
                    # Let the woken readers run first (their tasks were scheduled
                    # before this): their credit then reaches the writer while this
                    # side still has the rest to copy, and they lend their next
                    # buffers before the next pass.
                    self._poll_soon = True
                    self.loop.call_soon(self._next_pass)
                    break
                whole = reader.peek()
                n = len(whole)
                if n == 0:
                    whole.release()
                    if owed:
                        owed = False
                        self._wake_peer()
                    if self._spin_s and self._start_spin():
                        break  # polling instead of sleeping: the producer need not wake us
                    if reader.arm():
                        continue
                    break
                if n > MAX_DELIVERY:
                    n = MAX_DELIVERY
                view = whole[:n]
                self.bytes_received += n
                if left is not None:
                    left -= n
                try:
                    if self._open is not None:
                        plain = self._open.open_frames(view)
                        if plain:
                            deliver(plain, False)
                    else:
                        deliver(view, True)
                finally:
                    view.release()
                    whole.release()
                if self._closed:
                    return
                if reader.consume(n):
                    owed = True
                if owed and reader.readable <= half:
                    owed = False
                    self._wake_peer()
                if self._paused:
                    break
        except P2PError as exc:
            self._fail(exc)
        finally:
            self._polling = False
            if owed and not self._closed:
                self._wake_peer()

    def _start_spin(self) -> bool:
        """Poll for ``spin_us`` more (re-armed by traffic); False if not reading."""
        if not self._reading or self._closed:
            return False
        self._spin_until = time.monotonic() + self._spin_s
        if not self._spinning:
            self._spinning = True
            self.loop.call_soon(self._spin)
        return True

    def _spin(self) -> None:
        # One short slice per loop iteration, so other ready tasks keep running.
        if self._closed or not self._reading:
            self._spinning = False
            return
        try:
            got = self._reader.spin(_SPIN_SLICE_NS)
        except P2PError as exc:
            self._spinning = False
            self._fail(exc)
            return
        if got and not self._paused:
            self._spinning = False
            self._pass()  # re-arms the spin itself
            return
        if time.monotonic() < self._spin_until and not self._paused:
            self.loop.call_soon(self._spin)
            return
        self._spinning = False
        if self._paused:
            return
        try:
            if self._reader.arm():
                self._pass()
        except P2PError as exc:
            self._fail(exc)

    def _fail(self, exc: BaseException) -> None:
        cb = self._on_failed
        self._on_failed = None
        if cb is not None:
            cb(exc)

    def pause_reading(self) -> None:
        self._paused = True

    def resume_reading(self) -> None:
        if self._paused:
            self._paused = False
            if self._reading:
                self.loop.call_soon(self._pass)

    # -- teardown ----------------------------------------------------------------------

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._reading:
            with contextlib.suppress(Exception):
                self.loop.remove_reader(self._my_efd)
        for w in self._drain_waiters:
            if not w.done():
                w.set_result(None)  # drain() then raises BrokenResourceError
        self._drain_waiters.clear()
        for fd in (self._my_efd, self._peer_efd):
            with contextlib.suppress(OSError):
                os.close(fd)
        # The segment defers its munmap while a delivered view is still alive.
        self.segment.close()

    def statistics(self) -> dict[str, int]:
        return {
            "bytes_sent": self.bytes_sent,
            "bytes_received": self.bytes_received,
            "wakeups_sent": self.wakeups_sent,
            "wakeups_received": self.wakeups_received,
            "pending": self._pending_bytes,
            "bytes_spilled": self.bytes_spilled,
        }


# -- the upgrade -----------------------------------------------------------------


def _peercred(sock: socket.socket) -> tuple[int, int, int]:
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", raw)
    return pid, uid, gid


async def _wait_readable(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
    fut: asyncio.Future[None] = loop.create_future()
    fd = sock.fileno()

    def ready() -> None:
        if not fut.done():
            fut.set_result(None)

    loop.add_reader(fd, ready)
    try:
        await fut
    finally:
        loop.remove_reader(fd)


def _make_efd() -> int:
    return os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)


def _make_path(conn: Connection, seg: Any, my_efd: int, peer_efd: int, peer_pid: int, cfg: ShmConfig, sealed: bool) -> ShmPath:
    send, recv = conn.base_path.ciphers
    return ShmPath(
        seg,
        my_efd,
        peer_efd,
        peer_pid=peer_pid,
        high_water=cfg.write_high_water,
        spin_us=cfg.spin_us,
        seal=send if sealed else None,
        open_=recv if sealed else None,
    )


async def _hand_over(
    lsock: socket.socket, secret: bytes, fds: list[int], timeout: float,
    log_extra: dict[str, Any] | None = None,
) -> int:
    """Accept on the hand-off socket until a process presents ``secret``; pass it
    ``fds``. Returns that process's pid as the kernel reports it.

    Connections are checked concurrently, each with a short deadline, so a
    local process that connects first and stays silent delays nobody.
    """
    loop = asyncio.get_running_loop()
    winner: asyncio.Future[tuple[socket.socket, int]] = loop.create_future()
    checks: set[asyncio.Task[None]] = set()

    async def check(csock: socket.socket) -> None:
        keep = False
        try:
            pid, uid, _gid = _peercred(csock)
            got = b""
            async with asyncio.timeout(min(1.0, timeout)):
                while len(got) < msgs.SECRET_SIZE:
                    chunk = await loop.sock_recv(csock, msgs.SECRET_SIZE - len(got))
                    if not chunk:
                        break
                    got += chunk
            if hmac.compare_digest(got, secret) and uid == os.getuid() and not winner.done():
                keep = True
                winner.set_result((csock, pid))
            else:
                log.warning(
                    "shm upgrade: refused local process pid %d uid %d on the hand-off socket", pid, uid,
                    extra=log_extra,
                )
        except (OSError, TimeoutError):
            pass
        finally:
            if not keep:
                csock.close()

    async def accept() -> None:
        for _ in range(_MAX_ACCEPTS * 4):
            csock, _addr = await loop.sock_accept(lsock)
            t = loop.create_task(check(csock))
            checks.add(t)
            t.add_done_callback(checks.discard)

    acceptor = loop.create_task(accept())
    try:
        await asyncio.wait((acceptor, winner), return_when=asyncio.FIRST_COMPLETED)
        if not winner.done():
            raise UpgradeRefused("no process holding the secret collected the shared memory")
        csock, pid = winner.result()
        with csock:
            csock.setblocking(True)
            socket.send_fds(csock, [b"F"], fds)
        return pid
    finally:
        acceptor.cancel()
        for t in list(checks):
            t.cancel()
        await asyncio.gather(acceptor, *checks, return_exceptions=True)


async def upgrade_outbound(conn: Connection, stream: Stream, cfg: ShmConfig) -> ShmPath:
    """Dialer side of the upgrade (one round trip plus the hand-off).

    Opens the stream itself (HELLO rides behind the protocol proposal), offers
    the rings, hands them over and switches. Returns the path; raises
    ``UpgradeRefused`` (or a ``P2PError``/``OSError``) when the connection
    stays on TCP.
    """
    from fastp2p._native.shm import ShmSegment
    from fastp2p.transport.upgrader import negotiate_outbound

    seg = ShmSegment.create(cfg.ring_capacity)
    efd_me, efd_peer = _make_efd(), _make_efd()
    lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    path: ShmPath | None = None
    hand: asyncio.Task[int] | None = None
    try:
        name = _SOCKET_PREFIX + secrets.token_hex(16).encode()
        lsock.bind(name)
        lsock.listen(_MAX_ACCEPTS)
        lsock.setblocking(False)
        secret = secrets.token_bytes(msgs.SECRET_SIZE)
        hand = asyncio.get_running_loop().create_task(
            _hand_over(lsock, secret, [seg.fd, efd_me, efd_peer], cfg.upgrade_timeout,
                       getattr(conn, "log_extra", None))
        )
        hello = ShmMessage(
            Kind.HELLO,
            boot_id=boot_id(),
            pid=os.getpid(),
            uid=os.getuid(),
            capacity=cfg.ring_capacity,
            sealed=cfg.sealed,
            socket=name,
            secret=secret,
        )
        stream.protocol = await negotiate_outbound(stream, [PROTOCOL_ID], early_data=msgs.encode(hello))
        ch = UpgradeChannel[ShmMessage](stream, msgs, "upgrade")
        reply = await ch.recv()
        if reply.kind is Kind.REFUSE:
            raise UpgradeRefused(f"peer refused: {reply.reason}")
        if reply.kind is not Kind.SWITCH:
            raise RemoteProtocolError(f"expected SWITCH, got {reply.kind.name}")
        # The peer collected the descriptors before its SWITCH, so the hand-off
        # task is finishing (a peer that lies about it runs into the timeout).
        peer_pid = await hand
        # Sealed if either side asked for it (the listener says so in its SWITCH).
        path = _make_path(conn, seg, efd_me, efd_peer, peer_pid, cfg, cfg.sealed or reply.sealed)
        # The peer sends through the ring from now on.
        conn.switch_rx(path, transient=path.transient)
        conn.switch_tx(stream.id, msgs.encode(ShmMessage(Kind.SWITCH)), path)
        return path
    except BaseException:
        if path is not None:
            if not conn.uses_path(path):
                path.close()
        else:
            seg.close()
            for fd in (efd_me, efd_peer):
                os.close(fd)
        raise
    finally:
        if hand is not None and not hand.done():
            hand.cancel()
            with contextlib.suppress(BaseException):
                await hand
        lsock.close()


async def serve_upgrade(
    conn: Connection, stream: Stream, cfg: ShmConfig, enabled: tuple[bool, str]
) -> ShmPath | None:
    """Listener side of the upgrade (the ``/fastp2p/shm/1.0.0`` handler)."""
    from fastp2p._native.shm import ShmSegment

    loop = asyncio.get_running_loop()
    ch = UpgradeChannel[ShmMessage](stream, msgs, "upgrade")
    hello = await ch.recv()
    if hello.kind is not Kind.HELLO:
        raise RemoteProtocolError(f"expected HELLO, got {hello.kind.name}")
    ok, why = enabled
    if ok and hello.boot_id != boot_id():
        ok, why = False, "peer runs on another host (kernel boot id differs)"
    if ok and hello.uid != os.getuid():
        ok, why = False, "peer runs as another user"
    if ok and (len(hello.secret) != msgs.SECRET_SIZE or not hello.socket.startswith(_SOCKET_PREFIX)):
        raise RemoteProtocolError("shm HELLO without a valid hand-off socket and secret")
    if not ok:
        conn.data_path_reason = why
        await ch.send(ShmMessage(Kind.REFUSE, reason=why))
        return None
    fds: list[int] = []
    seg = None
    try:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        with sock:
            sock.setblocking(False)
            async with asyncio.timeout(cfg.upgrade_timeout):
                await loop.sock_connect(sock, hello.socket)
                await loop.sock_sendall(sock, hello.secret)
                await _wait_readable(loop, sock)
                _msg, fds, _flags, _addr = socket.recv_fds(sock, 16, 4)
            pid, _uid, _gid = _peercred(sock)
        if len(fds) != 3 or pid != hello.pid:
            raise UpgradeRefused("the hand-off socket did not pass the expected descriptors")
        seg = ShmSegment.attach(fds[0])
        peer_efd, my_efd = fds[1], fds[2]
        os.close(fds[0])
        fds = []
    except (OSError, TimeoutError, UpgradeRefused, P2PError) as exc:
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        if seg is not None:
            seg.close()
        why = f"could not attach the shared memory: {exc}"
        conn.data_path_reason = why
        await ch.send(ShmMessage(Kind.REFUSE, reason=why))
        return None
    sealed = hello.sealed or cfg.sealed
    path = _make_path(conn, seg, my_efd, peer_efd, hello.pid, cfg, sealed)
    try:
        conn.switch_tx(stream.id, msgs.encode(ShmMessage(Kind.SWITCH, sealed=sealed)), path)
        msg = await ch.recv()
        if msg.kind is not Kind.SWITCH:
            raise RemoteProtocolError(f"expected SWITCH, got {msg.kind.name}")
        conn.switch_rx(path, transient=path.transient)
    except BaseException:
        if not conn.uses_path(path):
            path.close()
        raise
    return path


__all__ += ["UpgradeRefused"]
