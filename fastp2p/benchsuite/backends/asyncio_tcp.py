"""Raw asyncio TCP baselines: streams API and BufferedProtocol, default loop or uvloop.

No muxer: a "stream" is a TCP connection. The BufferedProtocol variant
receives straight into a preallocated buffer (``get_buffer`` hands out a slice
of it); the streams variant reads chunks and copies them into the buffer, which
is what the streams API costs when the data has to land in your own memory.

Set up as a competent user would, and as fastp2p's own transport is: the bulk
receiver reads into a buffer as large as fastp2p's per-loop TCP receive buffer
(the header's ``a``), both sides' transports get fastp2p's write high/low-water
marks, the streams reader's limit is that buffer size, and TCP_NODELAY is on.
"""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

from .. import wire
from .base import (
    AsyncClient,
    Backend,
    BaseServer,
    fastp2p_io_limits,
    set_write_limits,
    split_total,
    uvloop_factory,
)

HOST = "127.0.0.1"


def _parse(addr: str) -> tuple[str, int]:
    h, p = addr.rsplit(":", 1)
    return h, int(p)


def _nodelay(transport: asyncio.BaseTransport) -> None:
    """TCP_NODELAY and fastp2p's write-buffer limits on a fresh transport."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
    set_write_limits(transport)


def _reader_limit() -> int:
    return fastp2p_io_limits()[0]


# --------------------------------------------------------------------------- streams API


async def _stream_handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    _nodelay(writer.transport)
    try:
        while True:
            try:
                hdr = await reader.readexactly(wire.HDR_LEN)
            except asyncio.IncompleteReadError:
                return
            op, a, b = wire.unpack(hdr)
            if op == wire.OP_BULK:
                buf = bytearray(a)  # preallocated receive buffer
                left = b
                while left:
                    chunk = await reader.read(min(a, left))
                    if not chunk:
                        return
                    buf[: len(chunk)] = chunk
                    left -= len(chunk)
                writer.write(wire.ACK)
            elif op == wire.OP_ECHO:
                while True:
                    try:
                        msg = await reader.readexactly(a)
                    except asyncio.IncompleteReadError:
                        return
                    writer.write(msg)
            elif op == wire.OP_RR:
                await reader.readexactly(a)
                writer.write(bytes(b))
                await writer.drain()
                return
            elif op == wire.OP_IDLE:
                wire.stat_add("idle")
                try:
                    await reader.read()
                finally:
                    wire.stat_add("idle", -1)
                return
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


class StreamsServer(BaseServer):
    def __init__(self, loop_factory: Any) -> None:
        self.loop_factory = loop_factory

    def serve(self, ready: Any) -> None:
        async def main() -> None:
            srv = await asyncio.start_server(_stream_handler, HOST, 0, backlog=4096,
                                             limit=_reader_limit())
            port = srv.sockets[0].getsockname()[1]
            ready(f"{HOST}:{port}")
            await srv.serve_forever()

        with asyncio.Runner(loop_factory=self.loop_factory) as r:
            r.run(main())


class StreamsClient(AsyncClient):
    def __init__(self, loop_factory: Any) -> None:
        self.loop_factory = loop_factory
        super().__init__()
        self._idle: list[asyncio.StreamWriter] = []

    async def _open(self, addr: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        h, p = _parse(addr)
        r, w = await asyncio.open_connection(h, p, limit=_reader_limit())
        _nodelay(w.transport)
        return r, w

    async def a_bulk(self, addr: str, total: int, msg_size: int, streams: int,
                     recv_buf: int) -> dict[str, Any]:
        conns = [await self._open(addr) for _ in range(streams)]
        payload = memoryview(bytes(msg_size))
        parts = split_total(total, msg_size, streams)

        async def one(rw: Any, n: int) -> None:
            r, w = rw
            w.write(wire.pack(wire.OP_BULK, recv_buf, n))
            left = n
            while left:
                k = min(msg_size, left)
                w.write(payload[:k])
                left -= k
                await w.drain()
            await r.readexactly(1)

        t0 = time.perf_counter()
        await asyncio.gather(*(one(c, n) for c, n in zip(conns, parts, strict=False)))
        dt = time.perf_counter() - t0
        for _, w in conns:
            w.close()
        return {"seconds": dt, "bytes": sum(parts)}

    async def a_rtt(self, addr: str, n: int, size: int, warmup: int) -> dict[str, Any]:
        r, w = await self._open(addr)
        w.write(wire.pack(wire.OP_ECHO, size))
        msg = bytes(size)
        out = []
        pc = time.perf_counter
        for _ in range(warmup + n):  # warm-up on the same connection, discarded below
            t0 = pc()
            w.write(msg)
            await r.readexactly(size)
            out.append((pc() - t0) * 1e6)
        w.close()
        return {"samples_us": out[warmup:]}

    async def a_connect(self, addr: str, n: int) -> dict[str, Any]:
        out, conn = [], []
        for _ in range(n):
            t0 = time.perf_counter()
            r, w = await self._open(addr)
            conn.append((time.perf_counter() - t0) * 1e3)
            w.write(wire.pack(wire.OP_ECHO, 1) + b"x")
            await r.readexactly(1)
            out.append((time.perf_counter() - t0) * 1e3)
            w.close()
            await w.wait_closed()
        return {"samples_ms": out, "connect_ms": conn}

    async def a_rr(self, addr: str, k: int, req: int, resp: int) -> dict[str, Any]:
        payload = wire.pack(wire.OP_RR, req, resp) + bytes(req)

        async def one() -> None:
            r, w = await self._open(addr)
            w.write(payload)
            await r.readexactly(resp)
            w.close()

        t0 = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(k)))
        return {"seconds": time.perf_counter() - t0}

    async def a_idle_open(self, addr: str, conns: int, streams: int) -> dict[str, Any]:
        for _ in range(conns + streams):  # no muxer: a stream is a connection
            _r, w = await self._open(addr)
            w.write(wire.pack(wire.OP_IDLE))
            self._idle.append(w)
        await asyncio.sleep(0)
        return {}

    async def a_idle_close(self) -> dict[str, Any]:
        for w in self._idle:
            w.close()
        self._idle.clear()
        await asyncio.sleep(0.05)
        return {}


# --------------------------------------------------------------------------- BufferedProtocol


def _poller(busy_poll_us: int) -> Any:
    """The ``-busypoll`` variant's loop poller: fastp2p's BusyPoller, which any
    asyncio program can use, with the budget of fastp2p's own variant."""
    if not busy_poll_us:
        return None
    from fastp2p.transport.busypoll import BusyPoller

    return BusyPoller(asyncio.get_running_loop(), busy_poll_us)


class _ServerProto(asyncio.BufferedProtocol):
    def __init__(self, busy_poll: Any = None) -> None:
        self.busy_poll = busy_poll  # a BusyPoller (the -busypoll variant), kicked per read
        self.hdr = bytearray(wire.HDR_LEN)
        self.hmv = memoryview(self.hdr)
        self.pos = 0
        self.state = 0  # 0 header, then op
        self.buf = memoryview(bytearray(256))  # grows per op; idle conns stay small
        self.left = 0
        self.a = self.b = 0

    def connection_made(self, transport: Any) -> None:
        self.t = transport
        _nodelay(transport)

    def get_buffer(self, sizehint: int) -> memoryview:
        st = self.state
        if st == 0:
            return self.hmv[self.pos:]
        if st == wire.OP_BULK:
            return self.buf[: min(len(self.buf), self.left)]
        if st in (wire.OP_ECHO, wire.OP_RR):
            return self.buf[self.pos: self.a]
        return self.buf  # IDLE / done: scratch

    def buffer_updated(self, n: int) -> None:
        if self.busy_poll is not None:
            self.busy_poll.kick()  # (as fastp2p's stream does each time a read waits)
        st = self.state
        if st == wire.OP_BULK:
            self.left -= n
            if not self.left:
                self.t.write(wire.ACK)
                self.state, self.pos = 0, 0
            return
        if st == 0:
            self.pos += n
            if self.pos < wire.HDR_LEN:
                return
            op, a, b = wire.unpack(self.hdr)
            self.a, self.b, self.pos, self.state = a, b, 0, op
            if op == wire.OP_BULK:
                if len(self.buf) != a:
                    self.buf = memoryview(bytearray(a))  # preallocated once per op
                self.left = b
                if not b:
                    self.t.write(wire.ACK)
                    self.state = 0
            elif op in (wire.OP_ECHO, wire.OP_RR):
                if len(self.buf) < a:
                    self.buf = memoryview(bytearray(a))
            elif op == wire.OP_IDLE:
                wire.stat_add("idle")
            return
        if st in (wire.OP_ECHO, wire.OP_RR):
            self.pos += n
            if self.pos == self.a:
                self.pos = 0
                if st == wire.OP_ECHO:
                    self.t.write(bytes(self.buf[: self.a]))
                else:
                    self.t.write(bytes(self.b))
                    self.t.close()
                    self.state = -1

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self.state == wire.OP_IDLE:
            wire.stat_add("idle", -1)


class ProtoServer(BaseServer):
    def __init__(self, loop_factory: Any, busy_poll_us: int = 0) -> None:
        self.loop_factory = loop_factory
        self.busy_poll_us = busy_poll_us

    def serve(self, ready: Any) -> None:
        async def main() -> None:
            loop = asyncio.get_running_loop()
            poller = _poller(self.busy_poll_us)
            srv = await loop.create_server(lambda: _ServerProto(poller), HOST, 0, backlog=4096)
            ready(f"{HOST}:{srv.sockets[0].getsockname()[1]}")
            await srv.serve_forever()

        with asyncio.Runner(loop_factory=self.loop_factory) as r:
            r.run(main())


class _ClientProto(asyncio.BufferedProtocol):
    """Client side: flow-controlled writes, reads into a preallocated buffer."""

    def __init__(self, busy_poll: Any = None) -> None:
        self.busy_poll = busy_poll
        self.buf = memoryview(bytearray(256))  # grows per op; idle conns stay small
        self.want = 0
        self.got = 0
        self.waiter: asyncio.Future[None] | None = None
        self.drain_waiter: asyncio.Future[None] | None = None
        self.paused = False
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: Any) -> None:
        self.t = transport
        _nodelay(transport)

    def expect(self, n: int) -> asyncio.Future[None]:
        self.want, self.got = n, 0
        self.waiter = asyncio.get_running_loop().create_future()
        if len(self.buf) < n:
            self.buf = memoryview(bytearray(n))
        if self.busy_poll is not None:
            self.busy_poll.kick()
        return self.waiter

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.buf

    def buffer_updated(self, n: int) -> None:
        self.got += n
        if self.waiter is not None and self.got >= self.want and not self.waiter.done():
            self.waiter.set_result(None)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        if self.drain_waiter is not None and not self.drain_waiter.done():
            self.drain_waiter.set_result(None)

    async def drain(self) -> None:
        if self.paused:
            self.drain_waiter = asyncio.get_running_loop().create_future()
            await self.drain_waiter

    def connection_lost(self, exc: Exception | None) -> None:
        err = exc or ConnectionResetError("connection closed")
        for f in (self.waiter, self.drain_waiter):
            if f is not None and not f.done():
                f.set_exception(err)
        if not self.closed.done():
            self.closed.set_result(None)


class ProtoClient(AsyncClient):
    def __init__(self, loop_factory: Any, busy_poll_us: int = 0) -> None:
        self.loop_factory = loop_factory
        super().__init__()
        self._idle: list[_ClientProto] = []
        self.busy_poll_us = busy_poll_us
        self._poller: Any = None

    async def _open(self, addr: str) -> _ClientProto:
        h, p = _parse(addr)
        if self._poller is None:
            self._poller = _poller(self.busy_poll_us)
        poller = self._poller
        _t, proto = await asyncio.get_running_loop().create_connection(
            lambda: _ClientProto(poller), h, p)
        return proto

    async def a_bulk(self, addr: str, total: int, msg_size: int, streams: int,
                     recv_buf: int) -> dict[str, Any]:
        conns = [await self._open(addr) for _ in range(streams)]
        payload = memoryview(bytes(msg_size))
        parts = split_total(total, msg_size, streams)

        async def one(c: _ClientProto, n: int) -> None:
            done = c.expect(1)
            c.t.write(wire.pack(wire.OP_BULK, recv_buf, n))
            left = n
            while left:
                k = min(msg_size, left)
                c.t.write(payload[:k])
                left -= k
                if c.paused:
                    await c.drain()
            await done

        t0 = time.perf_counter()
        await asyncio.gather(*(one(c, n) for c, n in zip(conns, parts, strict=False)))
        dt = time.perf_counter() - t0
        for c in conns:
            c.t.close()
        return {"seconds": dt, "bytes": sum(parts)}

    async def a_rtt(self, addr: str, n: int, size: int, warmup: int) -> dict[str, Any]:
        c = await self._open(addr)
        c.t.write(wire.pack(wire.OP_ECHO, size))
        msg = bytes(size)
        out = []
        pc = time.perf_counter
        for _ in range(warmup + n):  # warm-up on the same connection, discarded below
            t0 = pc()
            f = c.expect(size)
            c.t.write(msg)
            await f
            out.append((pc() - t0) * 1e6)
        c.t.close()
        return {"samples_us": out[warmup:]}

    async def a_connect(self, addr: str, n: int) -> dict[str, Any]:
        out, conn = [], []
        for _ in range(n):
            t0 = time.perf_counter()
            c = await self._open(addr)
            conn.append((time.perf_counter() - t0) * 1e3)
            f = c.expect(1)
            c.t.write(wire.pack(wire.OP_ECHO, 1) + b"x")
            await f
            out.append((time.perf_counter() - t0) * 1e3)
            c.t.close()
            await c.closed
        return {"samples_ms": out, "connect_ms": conn}

    async def a_rr(self, addr: str, k: int, req: int, resp: int) -> dict[str, Any]:
        payload = wire.pack(wire.OP_RR, req, resp) + bytes(req)

        async def one() -> None:
            c = await self._open(addr)
            f = c.expect(resp)
            c.t.write(payload)
            await f
            c.t.close()

        t0 = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(k)))
        return {"seconds": time.perf_counter() - t0}

    async def a_idle_open(self, addr: str, conns: int, streams: int) -> dict[str, Any]:
        for _ in range(conns + streams):
            c = await self._open(addr)
            c.t.write(wire.pack(wire.OP_IDLE))
            self._idle.append(c)
        return {}

    async def a_idle_close(self) -> dict[str, Any]:
        for c in self._idle:
            c.t.close()
        self._idle.clear()
        await asyncio.sleep(0.05)
        return {}


# --------------------------------------------------------------------------- descriptors


class AsyncioTCP(Backend):
    streams_are_connections = True

    def __init__(self, api: str, loop: str, busy_poll: bool = False) -> None:
        from .fastp2p_tcp import BENCH_BUSY_POLL_US, BUSYPOLL

        if busy_poll and api != "proto":
            raise ValueError("the busy-polling baseline is the BufferedProtocol one")
        self.api, self.loop = api, loop
        self.busy_poll_us = BENCH_BUSY_POLL_US if busy_poll else 0
        self.name = f"tcp-{loop}-{api}" + (f"-{BUSYPOLL}" if busy_poll else "")
        self.title = (f"raw TCP, {loop} loop, {'streams API' if api == 'streams' else 'BufferedProtocol'}"
                      + (f", busy polling {BENCH_BUSY_POLL_US} us" if busy_poll else ""))
        if busy_poll:
            self.config_note = (f"fastp2p's BusyPoller ({BENCH_BUSY_POLL_US} us) kicked per read on both "
                                "sides, as the fastp2p -busypoll variants")

    def available(self) -> str | None:
        if self.loop == "uvloop":
            try:
                import uvloop  # noqa: F401
            except ImportError:
                return 'uvloop not installed: pip install "fastp2p[bench]"'
        return None

    def versions(self) -> dict[str, str]:
        if self.loop == "uvloop":
            import uvloop

            return {"uvloop": uvloop.__version__}
        return {}

    def _lf(self) -> Any:
        return uvloop_factory() if self.loop == "uvloop" else None

    def make_server(self) -> BaseServer:
        if self.api == "streams":
            return StreamsServer(self._lf())
        return ProtoServer(self._lf(), self.busy_poll_us)

    def make_client(self) -> AsyncClient:
        if self.api == "streams":
            return StreamsClient(self._lf())
        return ProtoClient(self._lf(), self.busy_poll_us)
