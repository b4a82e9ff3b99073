"""TCP transport: listen and dial over asyncio, receiving into a reused buffer.

The protocol is an ``asyncio.BufferedProtocol``: the event loop (uvloop or the
default one) reads straight into one preallocated receive buffer per
connection; the consumer (handshake reader or the Connection's decrypt step)
processes it synchronously before the buffer is handed out again, so no
per-read ``bytes`` object is created on the bulk path.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import socket
import threading
from collections.abc import Callable, Coroutine
from typing import Any

from fastp2p import _accel
from fastp2p.errors import BrokenResourceError, DialError
from fastp2p.multiaddr import Multiaddr
from fastp2p.transport._pump import COALESCE_MAX, QUEUE_MAX  # noqa: F401  (re-exported)
from fastp2p.transport.base import Listener, RawConnection, Transport

__all__ = ["TcpTransport", "TcpConnection", "TcpListener"]

# One read's most bytes. 1 MiB, not 256 KiB: on a 16-core Xeon one AES-GCM
# stream's reader thread spent its time on per-read work (the syscall, waking
# the open pool, a frame cut in two at each read's end), and 1 MiB reads moved
# it from 2.9 to 3.0-3.8 GB/s over three runs; on 2 cores (writer-bound) no
# change. The buffer is one per event-loop thread (_receive_buffer), so the size
# costs no memory per connection.
RECV_BUFFER_SIZE = 1024 * 1024
WRITE_HIGH_WATER = 4 * 1024 * 1024
WRITE_LOW_WATER = 1024 * 1024
# Handshake-phase inbox bound: no legitimate peer sends this much before the upgrade ends.
MAX_INBOX = 256 * 1024
# The first write of a pass of the event loop goes out at once; the writes that
# follow it in the same pass are queued and leave together in one writev() at
# the end of the pass, or as soon as QUEUE_MAX bytes are queued. A read makes
# the end-of-pass marker (WritePump._mark_after_read), which then runs in the
# turn of the loop of the tasks the read woke, after them: their answers cost
# no turn (and poll of the sockets) more. The answers of many handler tasks
# woken by one receive batch cost two syscalls (and peer wake-ups) instead of
# one each, and a writer that seals message after message
# (a bulk upload in 16-64 KiB writes) makes one send() per QUEUE_MAX bytes, not
# one per message: the kernel's cost per byte falls to that of large writes.
# Small writes (up to COALESCE_MAX) are copied into one buffer, and leave once it
# holds more than COALESCE_MAX; larger ones are queued by reference (every caller
# hands over a buffer it no longer touches). The write itself and both limits
# are WritePump's (fastp2p/transport/_pump.py; native in fastp2p._native.frame).


def _sockaddr_to_multiaddr(addr: tuple[object, ...] | None) -> Multiaddr | None:
    if not addr:
        return None
    host, port = str(addr[0]), int(addr[1])  # type: ignore[call-overload]
    return Multiaddr.from_host_port(host, port)


def _loop_sets_nodelay(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether ``loop``'s TCP transports turn TCP_NODELAY on themselves: asyncio's
    own loops and uvloop's do, on every TCP socket they connect or accept (on
    uvloop our setsockopt was two syscalls more per connection: its socket
    wrapper asks getsockname first). Any other loop gets it from us."""
    return isinstance(loop, asyncio.BaseEventLoop) or type(loop).__module__.startswith("uvloop")


_shared_rx = threading.local()


def _receive_buffer() -> memoryview:
    """One receive buffer per thread (event loop), shared by all its connections.

    Safe because the loop calls ``get_buffer``, ``recv_into`` and
    ``buffer_updated`` back to back for one socket, and every consumer finishes
    with the bytes inside ``buffer_updated`` (decrypts or copies them). Idle
    connections therefore cost no receive memory.
    """
    view: memoryview | None = getattr(_shared_rx, "view", None)
    if view is None:
        # From the one pool (page-aligned, registrable), held for the thread's life.
        _shared_rx.buf = _accel.get_default_pool().acquire(RECV_BUFFER_SIZE)
        view = _shared_rx.view = _shared_rx.buf.view
    return view


class _TcpProtocol(_accel.ReadPump, asyncio.BufferedProtocol):
    # get_buffer/buffer_updated come from ReadPump: with the native kernels they
    # are C methods, so a socket read runs no Python frame before the receive step.
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._rxv = _receive_buffer()
        self._rxv_now = self._rxv  # what the next read fills (TcpConnection.limit_reads)
        self.transport: asyncio.Transport | None = None
        self._inbox = bytearray()
        self._waiter: asyncio.Future[None] | None = None
        self._on_data: Callable[[memoryview], None] | None = None
        self._on_lost: Callable[[BaseException | None], None] | None = None
        self.eof = False
        self.lost = False
        self.exc: BaseException | None = None
        # read by streams without a call (TcpConnection.pause_state)
        self.write_paused = False
        self._drain_waiters: list[asyncio.Future[None]] = []
        self.bytes_received = 0

    # asyncio callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport; duck-type them.
        tr: asyncio.Transport = transport  # type: ignore[assignment]
        self.transport = tr
        tr.set_write_buffer_limits(high=WRITE_HIGH_WATER, low=WRITE_LOW_WATER)
        if not _loop_sets_nodelay(self._loop):
            sock = transport.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _read_early(self, nbytes: int) -> None:
        """A read before push mode (the handshake): into the inbox."""
        if len(self._inbox) + nbytes > MAX_INBOX:
            # A peer flooding us before the upgrade finished: drop it.
            self.exc = BrokenResourceError("peer sent too much data during the handshake")
            assert self.transport is not None
            self.transport.abort()
            return
        self._inbox += self._rxv[:nbytes]
        self._wake()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake()
        if self._on_lost is not None:
            self._on_lost(None)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if exc is not None and self.exc is None:
            self.exc = exc
        self._wake()
        for w in self._drain_waiters:
            if not w.done():
                w.set_result(None)
        self._drain_waiters.clear()
        if self._on_lost is not None:
            self._on_lost(exc)

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        for w in self._drain_waiters:
            if not w.done():
                w.set_result(None)
        self._drain_waiters.clear()

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)


class TcpConnection(_accel.WritePump, RawConnection):
    """A raw (not yet secured) TCP connection.

    Its write pass state (``in_pass``, ``_closed``, ``_pend``, the transport, the
    end-of-pass marker) lives in ``WritePump``: a connection's ``SendStep`` sends
    a pass's first write itself.
    """

    def __init__(self, protocol: _TcpProtocol, *, outbound: bool) -> None:
        self._p = protocol
        self.outbound = outbound
        assert protocol.transport is not None
        self._transport = protocol.transport
        self._sock = self._transport.get_extra_info("socket")  # for socket options (wake_after)
        self._read_cap = 0  # the most bytes one read may bring (cap_reads; 0: the buffer's size)
        self.local_addr = _sockaddr_to_multiaddr(self._transport.get_extra_info("sockname"))
        self.remote_addr = _sockaddr_to_multiaddr(self._transport.get_extra_info("peername"))
        self._closed = False
        #: the writes of this loop pass after its first, in order (see COALESCE_MAX)
        self._pend: list[bytes | bytearray | memoryview] | None = None
        self._pend_tail: bytearray | None = None  # _pend's last buffer, if small writes fill it
        self._pend_n = 0  # bytes in _pend
        self.in_pass = False  # a write was made in this loop pass (see write, RawConnection.in_pass)
        #: called at the end of the pass, before the coalesced bytes leave (defer_to_pass_end)
        self._at_end: Callable[[], None] | None = None
        self._again = 0  # (see WritePump.hold_past_tasks)
        self._marked = False  # the end-of-pass marker is scheduled (see WritePump._mark)
        self._call_soon = protocol._loop.call_soon  # bound once: once per pass
        self._end_cb = self._end_pass  # (a cycle: the collector takes it)
        # The end-of-pass marker needs no context variables: an empty context of
        # its own spares call_soon a copy of the caller's on every pass. One per
        # connection, not per process: a context runs in one thread at a time,
        # and each event loop (thread) has its own connections.
        self._ctx = contextvars.Context()

    @property
    def bytes_received(self) -> int:
        return self._p.bytes_received

    async def read_some(self) -> bytes:
        """Return buffered bytes, waiting for some; b"" at EOF (handshake phase only)."""
        p = self._p
        while not p._inbox:
            if p.lost or p.eof:
                if p.exc is not None and not isinstance(p.exc, BrokenResourceError):
                    raise BrokenResourceError("connection lost") from p.exc
                if p.exc is not None:
                    raise p.exc
                return b""
            p._waiter = p._loop.create_future()
            try:
                await p._waiter
            finally:
                p._waiter = None
        data = bytes(p._inbox)
        p._inbox.clear()
        return data

    @property
    def write_paused(self) -> bool:
        return self._p.write_paused

    @property
    def pause_state(self) -> Any:
        return self._p

    async def drain(self) -> None:
        p = self._p
        while p.write_paused and not p.lost:
            fut = p._loop.create_future()
            p._drain_waiters.append(fut)
            await fut
        if p.lost:
            raise BrokenResourceError("connection lost") from p.exc

    def start_push(
        self,
        on_data: Callable[[memoryview], None],
        on_lost: Callable[[BaseException | None], None],
    ) -> bytes:
        """Switch to push mode; returns bytes received before the switch."""
        p = self._p
        left = bytes(p._inbox)
        p._inbox.clear()
        p._on_data = on_data
        p._on_lost = on_lost
        p._writer = self  # each read now makes the end-of-pass marker (WritePump._mark_after_read)
        if p.lost or p.eof:
            p._loop.call_soon(on_lost, p.exc)
        return left

    def redirect_push(self, on_data: Callable[[memoryview], None]) -> bool:
        self._p._on_data = on_data
        return True

    def limit_reads(self, n: int) -> None:
        p = self._p
        cap = self._read_cap
        if cap and not 0 < n <= cap:
            n = cap
        p._rxv_now = p._rxv[:n] if 0 < n < RECV_BUFFER_SIZE else p._rxv

    def cap_reads(self, n: int) -> None:
        self._read_cap = n if 0 < n < RECV_BUFFER_SIZE else 0
        self.limit_reads(0)

    def wake_after(self, n: int) -> None:
        # SO_RCVLOWAT: epoll reports the socket readable once n bytes are queued
        # (the kernel still wakes earlier at EOF, on an error, under memory
        # pressure or with its window nearly closed); reads return what is there
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, max(n, 1))

    def pause_reading(self) -> None:
        with contextlib.suppress(RuntimeError):
            self._transport.pause_reading()

    def resume_reading(self) -> None:
        with contextlib.suppress(RuntimeError):
            self._transport.resume_reading()

    def close(self) -> None:
        if not self._closed:
            at_end = self._at_end
            if at_end is not None:
                self._at_end = None
                at_end()
            self._send_pending()
            self._closed = True
            self._transport.close()

    def abort(self) -> None:
        self._closed = True
        self._pend = None
        self._pend_tail = None
        self._at_end = None
        self._transport.abort()

    @property
    def is_closed(self) -> bool:
        return self._closed or self._p.lost


class TcpListener(Listener):
    """A listening TCP socket; each accepted connection goes to the callback."""

    def __init__(self, server: asyncio.base_events.Server, addrs: list[Multiaddr]) -> None:
        self._server = server
        self.addrs = addrs

    async def aclose(self) -> None:
        # close() stops accepting and closes the listening sockets at once. Not
        # Server.wait_closed(): from Python 3.12 it also waits for every accepted
        # connection to end, and those belong to the host, which closes them itself.
        self._server.close()


class TcpTransport(Transport):
    """Dials and listens on /ip4|ip6|dns*/.../tcp/N multiaddrs."""

    @staticmethod
    def can_dial(addr: Multiaddr) -> bool:
        protos = addr.protocols()
        return (
            len(protos) >= 2
            and protos[0] in ("ip4", "ip6", "dns", "dns4", "dns6")
            and protos[1] == "tcp"
            and all(p == "p2p" for p in protos[2:])
        )

    async def dial(self, addr: Multiaddr) -> TcpConnection:
        """Open a TCP connection to ``addr``.

        Raises:
            DialError: the address is not a TCP address, or the connect failed.
        """
        if not self.can_dial(addr):
            raise DialError(f"not a TCP multiaddr: {addr}")
        host, port = addr.tcp_host_port()
        loop = asyncio.get_running_loop()
        try:
            _, proto = await loop.create_connection(lambda: _TcpProtocol(loop), host, port)
        except OSError as exc:
            raise DialError(f"TCP connect to {addr} failed: {exc}", [exc]) from exc
        return TcpConnection(proto, outbound=True)

    async def listen(
        self, addr: Multiaddr, on_connection: Callable[[RawConnection], Coroutine[Any, Any, None]]
    ) -> TcpListener:
        """Listen on ``addr`` (port 0 picks a free port)."""
        host, port = addr.tcp_host_port()
        loop = asyncio.get_running_loop()
        tasks: set[asyncio.Task[None]] = set()

        def factory() -> _TcpProtocol:
            proto = _TcpProtocol(loop)
            orig = proto.connection_made

            def made(transport: asyncio.BaseTransport) -> None:
                orig(transport)
                t: asyncio.Task[None] = loop.create_task(
                    on_connection(TcpConnection(proto, outbound=False))
                )
                tasks.add(t)
                t.add_done_callback(tasks.discard)

            proto.connection_made = made  # type: ignore[method-assign]
            return proto

        server = await loop.create_server(factory, host, port, reuse_address=True)
        addrs = []
        for sock in server.sockets:
            a = _sockaddr_to_multiaddr(sock.getsockname())
            if a is not None:
                addrs.append(a)
        return TcpListener(server, addrs)
