"""StreamTransport: asyncio protocols over fastp2p streams, end to end over TCP.

Real hosts on loopback; the protocols are plain asyncio ``Protocol`` and
``BufferedProtocol`` classes (and asyncio's own ``StreamReaderProtocol``),
unaware of fastp2p. Covered: data both ways in order (yamux and mplex, small
writes and writes far beyond the send window), half-close both ways, reading
paused (the peer's window stalls, its writer is paused, nothing lost),
abort and peer resets, a dead connection, a protocol callback that raises or
returns a bad buffer, a refused lazy proposal, and every stream released.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from fastp2p import Host, StreamTransport
from fastp2p.config import HostConfig
from fastp2p.errors import (
    BusyResourceError,
    ConnectionClosedError,
    NegotiationError,
    StreamResetError,
)
from fastp2p.peer import PeerID
from fastp2p.transport.upgrader import propose_now

PROTO = "/test/transport/1.0.0"
CFG = HostConfig(data_paths=("tcp",))
MUXERS = {"yamux": "/yamux/1.0.0", "mplex": "/mplex/6.7.0"}


@contextlib.asynccontextmanager
async def _pair(factory: Callable[[], asyncio.BaseProtocol], config: HostConfig = CFG,
                ) -> AsyncIterator[tuple[Host, Host, PeerID]]:
    """A listener serving PROTO with ``factory`` (set before the dial, so the
    dialer's identify lists it and proposes it lazily), and a dialer."""
    async with Host(listen=["/ip4/127.0.0.1/tcp/0"], config=config) as b, Host(config=config) as a:
        b.set_protocol_handler(PROTO, factory)
        peer = await a.connect(b.full_addrs[0])
        yield a, b, peer


class Recorder(asyncio.Protocol):
    """A plain Protocol that keeps what it gets and how it ended."""

    def __init__(self, keep_open: bool = False) -> None:
        loop = asyncio.get_running_loop()
        self.data = bytearray()
        self.eof = loop.create_future()
        self.lost = loop.create_future()
        self.keep_open = keep_open
        self.paused = 0
        self.resumed = 0
        self.t: Any = None

    def connection_made(self, transport: Any) -> None:
        self.t = transport

    def data_received(self, data: bytes) -> None:
        assert type(data) is bytes
        self.data += data

    def eof_received(self) -> bool:
        self.eof.set_result(bytes(self.data))
        return self.keep_open

    def pause_writing(self) -> None:
        self.paused += 1

    def resume_writing(self) -> None:
        self.resumed += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.set_result(exc)


class EchoBuffered(asyncio.BufferedProtocol):
    """Echoes every byte back from its own buffer; closes on EOF."""

    instances: list[EchoBuffered] = []

    def __init__(self, size: int = 1000) -> None:
        self.buf = bytearray(size)
        self.lost = asyncio.get_running_loop().create_future()
        self.got = 0
        EchoBuffered.instances.append(self)

    def connection_made(self, transport: Any) -> None:
        self.t = transport

    def get_buffer(self, sizehint: int) -> bytearray:
        return self.buf

    def buffer_updated(self, nbytes: int) -> None:
        self.got += nbytes
        self.t.write(memoryview(self.buf)[:nbytes])

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.set_result(exc)


async def _released(*hosts: Host) -> None:
    """Every stream of every connection of ``hosts`` is released (bounded wait)."""
    for _ in range(200):
        if all(not c.streams for h in hosts for c in h.connections):
            return
        await asyncio.sleep(0.01)
    raise AssertionError([dict(c.streams) for h in hosts for c in h.connections])


@pytest.mark.parametrize("muxer", sorted(MUXERS))
async def test_echo_in_order_then_both_sides_close(muxer: str) -> None:
    cfg = dataclasses.replace(CFG, muxers=(MUXERS[muxer],))
    EchoBuffered.instances.clear()
    async with _pair(EchoBuffered, cfg) as (a, b, peer):
        t, p = await a.open_stream_protocol(peer, Recorder, PROTO)
        assert isinstance(t, StreamTransport) and p.t is t
        assert t.get_extra_info("peer_id") == peer
        assert t.get_extra_info("protocol_id") == PROTO
        assert t.get_extra_info("stream").protocol == PROTO
        assert t.get_extra_info("nothing", 7) == 7
        sent = bytearray()
        for i in range(300):  # many small writes, in one loop pass
            chunk = b"%d," % i
            t.write(chunk)
            sent += chunk
        big = bytes(range(256)) * 12_000  # ~3 MB: far beyond a send window
        t.writelines([big, b"end"])
        sent += big + b"end"
        t.write_eof()
        assert t.can_write_eof()
        with pytest.raises(RuntimeError):
            t.write(b"late")
        got = await asyncio.wait_for(p.eof, 30)
        assert got == sent
        assert await asyncio.wait_for(p.lost, 10) is None  # eof_received() -> False: closed
        (server,) = EchoBuffered.instances
        assert server.got == len(sent)
        assert await asyncio.wait_for(server.lost, 10) is None
        assert t.is_closing()
        await _released(a, b)


async def test_pausing_reads_stalls_the_writer_and_loses_nothing() -> None:
    servers: list[Recorder] = []

    def paused_recorder() -> Recorder:
        r = Recorder()
        servers.append(r)
        return r

    async with _pair(paused_recorder) as (a, b, peer):
        t, p = await a.open_stream_protocol(peer, Recorder, PROTO)
        t.set_write_buffer_limits(high=64 * 1024)
        assert t.get_write_buffer_limits() == (16 * 1024, 64 * 1024)
        t.write(b"x")
        for _ in range(200):
            if servers:
                break
            await asyncio.sleep(0.01)
        (srv,) = servers
        srv.t.pause_reading()
        assert not srv.t.is_reading()
        payload = bytes(range(251)) * 40_000  # 10 MB: more than any receive window
        t.write(payload)
        await asyncio.sleep(0.3)
        # the reader's window is spent: the rest waits here, the writer is paused
        assert t.get_write_buffer_size() > 0
        assert p.paused == 1 and p.resumed == 0
        held = len(srv.data)
        assert held < len(payload)
        srv.t.resume_reading()
        t.write_eof()
        got = await asyncio.wait_for(srv.eof, 30)
        assert got == b"x" + payload
        assert p.resumed == 1
        assert t.get_write_buffer_size() == 0
        t.close()
        await asyncio.wait_for(p.lost, 10)
        await _released(a, b)


async def test_half_close_keeps_the_other_direction() -> None:
    class Answer(Recorder):
        def eof_received(self) -> bool:
            self.t.write(b"answer:" + bytes(self.data))
            self.t.close()
            return True

    async with _pair(Answer) as (a, b, peer):
        t, p = await a.open_stream_protocol(peer, lambda: Recorder(keep_open=True), PROTO)
        t.write(b"question")
        t.write_eof()
        assert await asyncio.wait_for(p.eof, 10) == b"answer:question"
        assert not p.lost.done()  # keep_open: still ours to close
        t.close()
        assert await asyncio.wait_for(p.lost, 10) is None
        await _released(a, b)


async def test_abort_resets_the_peer() -> None:
    servers: list[Recorder] = []
    async with _pair(lambda: servers.append(Recorder()) or servers[-1]) as (a, b, peer):
        t, p = await a.open_stream_protocol(peer, Recorder, PROTO)
        t.write(b"hello")
        for _ in range(200):
            if servers and servers[0].data:
                break
            await asyncio.sleep(0.01)
        t.abort()
        assert await asyncio.wait_for(p.lost, 10) is None
        exc = await asyncio.wait_for(servers[0].lost, 10)
        assert isinstance(exc, StreamResetError) and exc.remote
        t.write(b"dropped")  # after close: ignored, as asyncio's transports do
        await _released(a, b)


async def test_a_raising_callback_resets_only_its_stream() -> None:
    class Boom(Recorder):
        def data_received(self, data: bytes) -> None:
            raise ValueError("protocol bug")

    async with _pair(Boom) as (a, b, peer):
        t, p = await a.open_stream_protocol(peer, Recorder, PROTO)
        t.write(b"trigger")
        exc = await asyncio.wait_for(p.lost, 10)
        assert isinstance(exc, StreamResetError) and exc.remote
        # the host and the connection go on serving
        b.set_protocol_handler(PROTO, EchoBuffered)
        t2, p2 = await a.open_stream_protocol(peer, Recorder, PROTO)
        t2.write(b"again")
        t2.write_eof()
        assert await asyncio.wait_for(p2.eof, 10) == b"again"
        await _released(a, b)


async def test_an_empty_buffer_fails_the_stream_instead_of_spinning() -> None:
    class Empty(asyncio.BufferedProtocol):
        def __init__(self) -> None:
            self.lost = asyncio.get_running_loop().create_future()

        def get_buffer(self, sizehint: int) -> bytearray:
            return bytearray()

        def buffer_updated(self, nbytes: int) -> None:
            raise AssertionError("never called")

        def connection_lost(self, exc: Exception | None) -> None:
            self.lost.set_result(exc)

    async with _pair(EchoBuffered) as (a, b, peer):
        t, p = await a.open_stream_protocol(peer, Empty, PROTO)
        exc = await asyncio.wait_for(p.lost, 10)
        assert isinstance(exc, ValueError)
        await _released(a, b)


async def test_a_dead_connection_reaches_every_protocol() -> None:
    servers: list[Recorder] = []
    async with _pair(lambda: servers.append(Recorder()) or servers[-1]) as (a, b, peer):
        clients = [await a.open_stream_protocol(peer, Recorder, PROTO) for _ in range(3)]
        for t, _p in clients:
            t.write(b"hi")
        for _ in range(200):
            if len(servers) == 3 and all(s.data for s in servers):
                break
            await asyncio.sleep(0.01)
        await a.disconnect(peer)
        for _t, p in clients:
            assert isinstance(await asyncio.wait_for(p.lost, 10), ConnectionClosedError)
        for s in servers:
            assert isinstance(await asyncio.wait_for(s.lost, 10), (ConnectionClosedError, StreamResetError))


async def test_a_refused_lazy_proposal_is_a_negotiation_error() -> None:
    async with _pair(EchoBuffered) as (a, _b, peer):
        conn = a.connection(peer)
        assert conn is not None
        stream = conn.open_stream(announce=False)
        assert propose_now(stream, "/test/not-served/1.0.0")  # the listener refuses it
        p = Recorder()
        StreamTransport(stream, p)
        exc = await asyncio.wait_for(p.lost, 10)
        assert isinstance(exc, (NegotiationError, StreamResetError))
        assert not p.data  # the listener's refusal never reaches the protocol


async def test_reads_are_busy_while_a_transport_owns_the_stream() -> None:
    async with _pair(EchoBuffered) as (a, _b, peer):
        stream = await a.open_stream(peer, PROTO)
        p = Recorder()
        t = StreamTransport(stream, p)
        with pytest.raises(BusyResourceError):
            await stream.readinto(bytearray(10))
        second = Recorder()
        with pytest.raises(BusyResourceError):
            StreamTransport(stream, second)
        assert second.t is None  # refused before connection_made
        t.write(b"ok")
        t.write_eof()
        assert await asyncio.wait_for(p.eof, 10) == b"ok"


async def test_asyncio_streams_run_over_it() -> None:
    """asyncio's own StreamReader/StreamWriter, on a fastp2p stream."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while line := await reader.readline():
            writer.write(line.upper())
            await writer.drain()
        writer.close()

    def server_protocol() -> asyncio.StreamReaderProtocol:
        return asyncio.StreamReaderProtocol(asyncio.StreamReader(), serve)

    async with _pair(server_protocol) as (a, b, peer):
        reader = asyncio.StreamReader()
        t, _p = await a.open_stream_protocol(peer, lambda: asyncio.StreamReaderProtocol(reader), PROTO)
        writer = asyncio.StreamWriter(t, _p, reader, asyncio.get_running_loop())
        for word in (b"alpha\n", b"beta\n", b"x" * 60_000 + b"\n"):
            writer.write(word)
            await writer.drain()
            assert await asyncio.wait_for(reader.readline(), 10) == word.upper()
        writer.write_eof()
        assert await asyncio.wait_for(reader.read(), 10) == b""
        writer.close()
        await writer.wait_closed()
        await _released(a, b)


async def test_a_failing_connection_made_resets_the_stream() -> None:
    class Refuse(Recorder):
        def connection_made(self, transport: Any) -> None:
            raise RuntimeError("no")

    async with _pair(EchoBuffered) as (a, b, peer):
        with pytest.raises(RuntimeError):
            await a.open_stream_protocol(peer, Refuse, PROTO)
        await _released(a, b)


async def test_a_buffer_changed_after_write_still_sends_what_was_written() -> None:
    servers: list[Recorder] = []
    async with _pair(lambda: servers.append(Recorder()) or servers[-1]) as (a, b, peer):
        t, _p = await a.open_stream_protocol(peer, Recorder, PROTO)
        buf = bytearray(b"a" * 3_000_000)  # beyond the send window: part of it must wait
        t.write(buf)
        assert t.get_write_buffer_size() > 0
        buf[:] = b"b" * len(buf)  # the caller reuses its buffer at once, as asyncio allows
        t.write_eof()
        for _ in range(200):
            if servers:
                break
            await asyncio.sleep(0.01)
        assert await asyncio.wait_for(servers[0].eof, 30) == b"a" * 3_000_000
        t.close()
        await _released(a, b)


async def test_closing_the_connection_inside_a_callback() -> None:
    """A protocol may end its whole connection from ``buffer_updated`` (which the
    native receive step calls at the end of a read): the other streams of that
    read see the failure, nothing raises into the event loop, the host serves on."""
    ended: list[Any] = []

    class Closer(EchoBuffered):
        def buffer_updated(self, nbytes: int) -> None:
            self.t.write(b"bye")
            conn = self.t.get_extra_info("connection")
            with contextlib.suppress(StopIteration):
                conn.aclose().send(None)  # (its body never awaits: runs to the end here)
            ended.append(conn)

    loop = asyncio.get_running_loop()
    errors: list[Any] = []
    loop.set_exception_handler(lambda _loop, ctx: errors.append(ctx))
    async with _pair(Closer) as (a, b, peer):
        clients = [await a.open_stream_protocol(peer, Recorder, PROTO) for _ in range(3)]
        for t, _p in clients:
            t.write(b"go")
        for _t, p in clients:
            exc = await asyncio.wait_for(p.lost, 10)
            assert exc is None or isinstance(exc, (ConnectionClosedError, StreamResetError))
        assert ended and ended[0].is_closed
        # the listener still accepts and serves
        b.set_protocol_handler(PROTO, EchoBuffered)
        peer2 = await a.connect(b.full_addrs[0])
        t, p = await a.open_stream_protocol(peer2, Recorder, PROTO)
        t.write(b"again")
        t.write_eof()
        assert await asyncio.wait_for(p.eof, 10) == b"again"
    assert not errors, errors


async def test_closed_streams_leave_no_cyclic_garbage() -> None:
    """Transport, protocol, sink and reader are freed by reference counting once
    a stream ends (asyncio's transports drop their protocol likewise): left to the
    cyclic collector, many short streams made collections of ~1 ms mid-traffic."""
    import gc

    class Echo(asyncio.BufferedProtocol):  # (EchoBuffered keeps its instances)
        def connection_made(self, transport: Any) -> None:
            self.t = transport
            self.buf = bytearray(100)

        def get_buffer(self, sizehint: int) -> bytearray:
            return self.buf

        def buffer_updated(self, nbytes: int) -> None:
            self.t.write(self.buf[:nbytes])

    async with _pair(Echo) as (a, b, peer):
        gc.collect()
        gc.disable()
        try:
            for _ in range(20):
                t, p = await a.open_stream_protocol(peer, Recorder, PROTO)
                t.write(b"ping")
                t.write_eof()
                assert await asyncio.wait_for(p.eof, 10) == b"ping"
                await asyncio.wait_for(p.lost, 10)
            del t, p
            await _released(a, b)
            await asyncio.sleep(0.05)  # (the listener's connection_lost callbacks)
            conns = set(map(id, a.connections + b.connections))
            alive = [o for o in gc.get_objects()
                     if type(o) in (Echo, Recorder)
                     or (type(o) is StreamTransport and id(o.get_extra_info("connection")) in conns)]
            assert not alive, alive[:5]
        finally:
            gc.enable()
