"""In-process memory transport (rust-libp2p ``MemoryTransport``): ``/memory/<n>`` addresses.

Hundreds of Hosts can run the real stack (multistream, Noise, yamux/mplex,
every service) in one process and one event loop, connected by in-memory
pipes: the simulation and scale tests use it, and ``fastp2p.testing`` can.

Rules
-----
- Addresses are ``/memory/<u64>`` (multiaddr code 777, as go- and
  rust-libp2p encode it). Listening on ``/memory/0`` picks a free number.
- A ``MemoryHub`` is the address space; each ``MemoryTransport`` belongs to
  one (``DEFAULT_HUB`` unless given), so independent simulations can share a
  process without seeing each other.
- Bytes written are copied (the writer may reuse its buffer at once) and
  delivered in order on a later loop iteration (or after ``latency``
  seconds), never re-entrantly inside ``write``.
- Flow control mirrors TCP's: ``write_paused`` is true while more than
  ``high_water`` bytes are in flight to a reader that has paused; ``drain``
  waits for ``low_water``.
- ``close`` delivers EOF after everything already written; ``abort`` drops
  what is in flight and tells both sides the connection is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any

from fastp2p.errors import BrokenResourceError, ClosedResourceError, DialError
from fastp2p.multiaddr import Multiaddr
from fastp2p.transport.base import Listener, RawConnection, Transport

__all__ = ["MemoryHub", "MemoryTransport", "MemoryConnection", "MemoryListener", "DEFAULT_HUB"]

HIGH_WATER = 4 * 1024 * 1024
LOW_WATER = 1024 * 1024
# Handshake-phase inbox bound, as for TCP.
MAX_INBOX = 256 * 1024


class MemoryHub:
    """One address space of ``/memory/<n>`` listeners."""

    def __init__(self) -> None:
        self._listeners: dict[int, MemoryListener] = {}
        self._next = 1

    def _bind(self, port: int, listener: MemoryListener) -> int:
        if port == 0:
            while self._next in self._listeners:
                self._next += 1
            port = self._next
            self._next += 1
        elif port in self._listeners:
            raise OSError(f"/memory/{port} is already in use")
        self._listeners[port] = listener
        return port

    def _unbind(self, port: int, listener: MemoryListener) -> None:
        if self._listeners.get(port) is listener:
            del self._listeners[port]

    def lookup(self, port: int) -> MemoryListener | None:
        return self._listeners.get(port)


DEFAULT_HUB = MemoryHub()


def _port(addr: Multiaddr) -> int:
    value = addr.value_for("memory")
    if value is None:
        raise DialError(f"not a memory multiaddr: {addr}")
    return int(value)


class MemoryConnection(RawConnection):
    """One end of an in-memory byte pipe."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        *,
        outbound: bool,
        local_addr: Multiaddr | None,
        remote_addr: Multiaddr | None,
        latency: float,
    ) -> None:
        self._loop = loop
        self.outbound = outbound
        self.local_addr = local_addr
        self.remote_addr = remote_addr
        self._latency = latency
        self.peer: MemoryConnection | None = None
        self._inbox = bytearray()
        self._waiter: asyncio.Future[None] | None = None
        self._on_data: Callable[[memoryview], None] | None = None
        self._on_lost: Callable[[BaseException | None], None] | None = None
        self._held: deque[bytes] = deque()  # received while reading is paused
        # what we sent, in order, until its latency has passed
        self._pipe: deque[tuple[float, Callable[..., None], tuple[Any, ...]]] = deque()
        self._pipe_timer: asyncio.TimerHandle | None = None
        self._reading_paused = False
        self._closed = False  # our side: no more writes
        self._eof = False  # the peer will send no more
        self._lost = False
        self._exc: BaseException | None = None
        self._in_flight = 0  # bytes we wrote that the peer has not consumed
        self._drain_waiters: list[asyncio.Future[None]] = []
        self.bytes_received = 0
        self.bytes_sent = 0

    # -- sending --------------------------------------------------------------------------

    def _schedule(self, fn: Callable[..., None], *args: Any) -> None:
        if self._latency <= 0:
            self._loop.call_soon(fn, *args)  # FIFO
            return
        # One timer per direction over a FIFO of (due, call): timers due at the same
        # instant carry no order in the loop's heap (they do under a simulated clock,
        # fastp2p.testing.simclock), and the bytes of a connection must stay in order.
        pipe = self._pipe
        pipe.append((self._loop.time() + self._latency, fn, args))
        if self._pipe_timer is None:
            self._pipe_timer = self._loop.call_at(pipe[0][0], self._run_pipe)

    def _run_pipe(self) -> None:
        self._pipe_timer = None
        pipe = self._pipe
        now = self._loop.time()
        _, fn, args = pipe.popleft()  # the timer was set for the head: it is due
        fn(*args)
        while pipe and pipe[0][0] <= now:
            _, fn, args = pipe.popleft()
            fn(*args)
        if pipe:
            self._pipe_timer = self._loop.call_at(pipe[0][0], self._run_pipe)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closed or self._lost:
            raise ClosedResourceError("connection closed")
        chunk = bytes(data)
        if not chunk:
            return
        peer = self.peer
        assert peer is not None
        self._in_flight += len(chunk)
        self.bytes_sent += len(chunk)
        self._schedule(peer._arrive, chunk)

    @property
    def write_paused(self) -> bool:
        return self._in_flight > HIGH_WATER

    async def drain(self) -> None:
        while self._in_flight > LOW_WATER and not self._lost:
            fut = self._loop.create_future()
            self._drain_waiters.append(fut)
            await fut
        if self._lost:
            raise BrokenResourceError("connection lost") from self._exc

    def _consumed(self, n: int) -> None:
        self._in_flight -= n
        if self._in_flight <= LOW_WATER and self._drain_waiters:
            for w in self._drain_waiters:
                if not w.done():
                    w.set_result(None)
            self._drain_waiters.clear()

    # -- receiving ------------------------------------------------------------------------

    def _arrive(self, chunk: bytes) -> None:
        if self._lost:
            return
        if self._reading_paused:
            self._held.append(chunk)
            return
        self._deliver(chunk)

    def _deliver(self, chunk: bytes) -> None:
        self.bytes_received += len(chunk)
        peer = self.peer
        cb = self._on_data
        if cb is not None:
            cb(memoryview(chunk))
        else:
            if len(self._inbox) + len(chunk) > MAX_INBOX:
                self._exc = BrokenResourceError("peer sent too much data during the handshake")
                self.abort()
                return
            self._inbox += chunk
            self._wake()
        if peer is not None:
            peer._consumed(len(chunk))

    def _arrive_eof(self) -> None:
        if self._lost:
            return
        if self._reading_paused:
            self._held.append(b"")
            return
        self._eof = True
        self._wake()
        if self._on_lost is not None:
            self._on_lost(None)

    def _arrive_abort(self) -> None:
        if self._lost:
            return
        self._mark_lost(BrokenResourceError("connection reset by peer"))

    def _mark_lost(self, exc: BaseException | None) -> None:
        self._lost = True
        if exc is not None and self._exc is None:
            self._exc = exc
        self._held.clear()
        self._wake()
        for w in self._drain_waiters:
            if not w.done():
                w.set_result(None)
        self._drain_waiters.clear()
        if self._on_lost is not None:
            self._on_lost(exc)

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    async def read_some(self) -> bytes:
        while not self._inbox:
            if self._lost or self._eof:
                if self._exc is not None:
                    raise BrokenResourceError("connection lost") from self._exc
                return b""
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        data = bytes(self._inbox)
        self._inbox.clear()
        return data

    def start_push(
        self,
        on_data: Callable[[memoryview], None],
        on_lost: Callable[[BaseException | None], None],
    ) -> bytes:
        left = bytes(self._inbox)
        self._inbox.clear()
        self._on_data = on_data
        self._on_lost = on_lost
        if self._lost or self._eof:
            self._loop.call_soon(on_lost, self._exc)
        return left

    def redirect_push(self, on_data: Callable[[memoryview], None]) -> bool:
        self._on_data = on_data
        return True

    def pause_reading(self) -> None:
        self._reading_paused = True

    def resume_reading(self) -> None:
        if not self._reading_paused:
            return
        self._reading_paused = False
        while self._held and not self._reading_paused and not self._lost:
            chunk = self._held.popleft()
            if chunk:
                self._deliver(chunk)
            else:
                self._arrive_eof()

    # -- closing --------------------------------------------------------------------------

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        peer = self.peer
        if peer is not None and not self._lost:
            self._schedule(peer._arrive_eof)
            # Like a TCP close: once both directions ended, the connection is gone.
            self._schedule(self._finish)

    def _finish(self) -> None:
        if not self._lost:
            self._mark_lost(None)

    def abort(self) -> None:
        self._closed = True
        if self._lost:
            return
        peer = self.peer
        self._mark_lost(self._exc)
        if peer is not None:
            self._loop.call_soon(peer._arrive_abort)

    @property
    def is_closed(self) -> bool:
        return self._closed or self._lost


class MemoryListener(Listener):
    """A ``/memory/<n>`` listener in a hub."""

    def __init__(
        self,
        hub: MemoryHub,
        port: int,
        on_connection: Callable[[RawConnection], Coroutine[Any, Any, None]],
    ) -> None:
        self._hub = hub
        self._on_connection = on_connection
        self.port = hub._bind(port, self)
        self.addrs = [Multiaddr(f"/memory/{self.port}")]
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    def _accept(self, conn: MemoryConnection) -> None:
        task = asyncio.get_running_loop().create_task(self._on_connection(conn))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._hub._unbind(self.port, self)
        for t in list(self._tasks):
            t.cancel()
        with contextlib.suppress(Exception):
            await asyncio.gather(*self._tasks, return_exceptions=True)


class MemoryTransport(Transport):
    """Dials and listens on ``/memory/<n>`` within one ``MemoryHub``.

    Args:
        hub: the address space (``DEFAULT_HUB`` when None).
        latency: one-way delay, in seconds, added to every write.
    """

    def __init__(self, hub: MemoryHub | None = None, *, latency: float = 0.0) -> None:
        self.hub = hub or DEFAULT_HUB
        self.latency = latency
        self._dialer_ports = 0

    def can_dial(self, addr: Multiaddr) -> bool:
        protos = addr.protocols()
        return bool(protos) and protos[0] == "memory" and all(p == "p2p" for p in protos[1:])

    async def dial(self, addr: Multiaddr) -> MemoryConnection:
        """Connect to the listener at ``addr``.

        Raises:
            DialError: nothing listens there (like a refused TCP connect).
        """
        if not self.can_dial(addr):
            raise DialError(f"not a memory multiaddr: {addr}")
        port = _port(addr)
        listener = self.hub.lookup(port)
        if listener is None or listener._closed:
            raise DialError(f"nothing listens on /memory/{port}")
        loop = asyncio.get_running_loop()
        self._dialer_ports += 1
        local = None
        remote = Multiaddr(f"/memory/{port}")
        client = MemoryConnection(loop, outbound=True, local_addr=local, remote_addr=remote, latency=self.latency)
        server = MemoryConnection(loop, outbound=False, local_addr=remote, remote_addr=None, latency=self.latency)
        client.peer, server.peer = server, client
        listener._accept(server)
        await asyncio.sleep(0)
        return client

    async def listen(
        self, addr: Multiaddr, on_connection: Callable[[RawConnection], Coroutine[Any, Any, None]]
    ) -> MemoryListener:
        """Listen on ``/memory/<n>`` (``/memory/0`` picks a free number).

        Raises:
            OSError: the number is taken.
        """
        return MemoryListener(self.hub, _port(addr), on_connection)
