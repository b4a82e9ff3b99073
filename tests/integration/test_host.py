"""Host-level behaviour over real TCP loopback sockets, for both muxers."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket

import pytest

import fastp2p
from fastp2p.config import HostConfig, YamuxConfig
from fastp2p.errors import (
    NegotiationError,
    PeerIDMismatchError,
    StreamResetError,
)
from fastp2p.peer import Ed25519PrivateKey, PeerID
from fastp2p.services import Ping, perf, serve_echo, serve_perf
from fastp2p.services.echo import PROTOCOL_ID as ECHO_PROTOCOL
from fastp2p.testing import host_pair

MUXERS = ["/yamux/1.0.0", "/mplex/6.7.0"]


@pytest.fixture(params=MUXERS, ids=["yamux", "mplex"])
def config(request: pytest.FixtureRequest) -> HostConfig:
    return HostConfig(muxers=(request.param,))


async def test_connect_identify_and_echo(config: HostConfig, no_fd_leak: None) -> None:
    async with host_pair(config) as (a, b, peer):
        serve_echo(b)
        assert peer == b.peer_id
        conn = a.connection(peer)
        assert conn is not None and conn.muxer == config.muxers[0]
        rec = a.peerstore.get(peer)
        assert rec is not None and rec.identified
        assert rec.agent_version == b.config.agent_version
        assert "/ipfs/id/1.0.0" in rec.protocols and "/ipfs/ping/1.0.0" in rec.protocols
        assert [str(x) for x in rec.listen_addrs] == [str(x) for x in b.addrs]
        # the listener identified us too
        for _ in range(100):
            rec_b = b.peerstore.get(a.peer_id)
            if rec_b is not None and rec_b.identified:
                break
            await asyncio.sleep(0.01)
        assert rec_b is not None and rec_b.agent_version == a.config.agent_version

        data = os.urandom(1 << 20)
        stream = await a.open_stream(peer, "/echo/1.0.0")
        assert stream.protocol == "/echo/1.0.0"

        async def send() -> None:
            await stream.write(memoryview(data))
            await stream.close_write()

        sender = asyncio.create_task(send())
        got = await stream.read()
        await sender
        await stream.aclose()
        assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()


async def test_readinto_readexactly_and_eof(config: HostConfig) -> None:
    async with host_pair(config) as (a, b, peer):

        async def handler(s: fastp2p.Stream) -> None:
            await s.write(b"hello world")
            await s.close_write()

        b.set_handler("/t/1", handler)
        s = await a.open_stream(peer, "/t/2", "/t/1")
        assert s.protocol == "/t/1"
        assert await s.readexactly(5) == b"hello"
        buf = bytearray(64)
        n = await s.readinto(buf)
        assert buf[:n] == b" world"
        assert await s.readinto(buf) == 0
        assert await s.read() == b""
        with pytest.raises(asyncio.IncompleteReadError):
            await s.readexactly(1)
        await s.aclose()


async def test_numpy_and_memoryview_writes_are_zero_copy_inputs(config: HostConfig) -> None:
    np = pytest.importorskip("numpy")
    async with host_pair(config) as (a, b, peer):
        serve_echo(b)
        arr = np.arange(100_000, dtype=np.uint32)
        s = await a.open_stream(peer, "/echo/1.0.0")
        out = np.empty_like(arr)
        view = memoryview(out).cast("B")

        async def send() -> None:
            await s.write(arr)
            await s.close_write()

        t = asyncio.create_task(send())
        got = 0
        while n := await s.readinto(view[got:]):
            got += n
        await t
        assert got == arr.nbytes and (out == arr).all()
        await s.aclose()


async def test_ping_reuses_one_stream(config: HostConfig) -> None:
    async with host_pair(config) as (a, b, peer):
        ping = Ping(a)
        rtts = [await ping(peer) for _ in range(5)]
        assert all(0 < r < 5 for r in rtts)
        assert len(ping._streams) == 1
        conn = a.connection(peer)
        assert conn is not None and conn.stats.streams_opened >= 2  # identify + ping
        await ping.aclose()


async def test_perf_protocol(config: HostConfig) -> None:
    async with host_pair(config) as (a, b, peer):
        serve_perf(b)
        res = await perf(a, peer, 3 << 20, 5 << 20)
        assert res.upload_bytes == 3 << 20 and res.download_bytes == 5 << 20
        assert res.total_seconds > 0


async def test_unknown_protocol_raises_negotiation_error(config: HostConfig) -> None:
    async with host_pair(config) as (a, b, peer):
        with pytest.raises(NegotiationError):
            await a.open_stream(peer, "/nope/1.0.0", "/nope/2.0.0")
        # the connection is still usable
        serve_echo(b)
        s = await a.open_stream(peer, "/echo/1.0.0")
        await s.write(b"x")
        assert await s.readexactly(1) == b"x"
        await s.aclose()


async def test_handler_exception_resets_stream_host_keeps_serving(config: HostConfig) -> None:
    async with host_pair(config) as (a, b, peer):

        async def bad(s: fastp2p.Stream) -> None:
            await s.readexactly(1)
            raise RuntimeError("handler bug")

        b.set_handler("/bad/1", bad)
        serve_echo(b)
        s = await a.open_stream(peer, "/bad/1")
        await s.write(b"x")
        with pytest.raises(StreamResetError) as ei:
            await s.read()
        assert ei.value.remote
        await s.aclose()
        s2 = await a.open_stream(peer, "/echo/1.0.0")
        await s2.write(b"still here")
        await s2.close_write()
        assert await s2.read() == b"still here"
        await s2.aclose()


async def test_reset_propagates_both_ways(config: HostConfig) -> None:
    async with host_pair(config) as (a, b, peer):
        got: asyncio.Future[BaseException] = asyncio.get_running_loop().create_future()

        async def handler(s: fastp2p.Stream) -> None:
            try:
                await s.read()
            except StreamResetError as exc:
                got.set_result(exc)
                raise

        b.set_handler("/r/1", handler)
        s = await a.open_stream(peer, "/r/1")
        await s.write(b"abc")
        s.reset()
        exc = await asyncio.wait_for(got, 5)
        assert isinstance(exc, StreamResetError) and exc.remote
        with pytest.raises(StreamResetError):
            await s.write(b"more")


async def test_many_concurrent_streams(config: HostConfig) -> None:
    async with host_pair(config) as (a, b, peer):
        serve_echo(b)

        async def one(i: int) -> None:
            s = await a.open_stream(peer, "/echo/1.0.0")
            msg = i.to_bytes(4, "big") * 16
            await s.write(msg)
            await s.close_write()
            assert await s.read() == msg
            await s.aclose()

        async with asyncio.timeout(60):
            await asyncio.gather(*(one(i) for i in range(300)))
        conn = a.connection(peer)
        assert conn is not None
        for _ in range(100):
            if not conn.streams:
                break
            await asyncio.sleep(0.01)
        assert len(conn.streams) <= 1  # at most the cached ping stream


async def test_slow_reader_backpressure_bounds_memory() -> None:
    """A peer that stops reading: the writer blocks at the window, nothing grows."""
    cfg = HostConfig(muxers=("/yamux/1.0.0",), yamux=YamuxConfig(max_window=1 << 20))
    async with host_pair(cfg) as (a, b, peer):
        held: asyncio.Future[fastp2p.Stream] = asyncio.get_running_loop().create_future()
        release = asyncio.Event()

        async def sink(s: fastp2p.Stream) -> None:
            held.set_result(s)
            await release.wait()
            while await s.read(1 << 20):
                pass

        b.set_handler("/sink/1", sink)
        s = await a.open_stream(peer, "/sink/1")
        chunk = bytes(1 << 20)
        sent = 0

        async def writer() -> None:
            nonlocal sent
            for _ in range(64):
                await s.write(chunk)
                sent += len(chunk)

        t = asyncio.create_task(writer())
        await asyncio.sleep(0.5)
        rs = await held
        assert not t.done()
        # Only the flow-control window (plus what is in flight) was accepted.
        assert sent <= 2 << 20
        assert rs._buffered <= 1 << 20
        release.set()
        async with asyncio.timeout(30):
            await t
        await s.close_write()
        await s.aclose()


async def test_peer_id_mismatch_is_rejected() -> None:
    async with fastp2p.Host(listen=["/ip4/127.0.0.1/tcp/0"]) as b, fastp2p.Host() as a:
        wrong = PeerID.from_public_key(Ed25519PrivateKey.generate().public_key())
        addr = b.addrs[0].with_peer_id(wrong)
        with pytest.raises(PeerIDMismatchError):
            await a.connect(addr)
        # the listener keeps serving
        assert await a.connect(b.full_addrs[0]) == b.peer_id


async def test_ipv6_loopback() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 support in this kernel")
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError as exc:
        pytest.skip(f"cannot bind ::1: {exc}")
    async with host_pair(listen="/ip6/::1/tcp/0") as (a, b, peer):
        assert str(b.addrs[0]).startswith("/ip6/::1/tcp/")
        assert await Ping(a)(peer) > 0


async def test_garbage_and_stalled_handshakes_do_not_harm_host() -> None:
    cfg = HostConfig(negotiation_timeout=0.5)
    async with fastp2p.Host(listen=["/ip4/127.0.0.1/tcp/0"], config=cfg) as b:
        host, port = b.addrs[0].tcp_host_port()
        # garbage
        r1, w1 = await asyncio.open_connection(host, port)
        w1.write(os.urandom(4096))
        # valid multistream header, then stall forever
        r2, w2 = await asyncio.open_connection(host, port)
        w2.write(b"\x13/multistream/1.0.0\n\x07/noise\n")
        # truncated Noise message 1 (length says 32, only 5 bytes follow)
        r3, w3 = await asyncio.open_connection(host, port)
        w3.write(b"\x13/multistream/1.0.0\n\x07/noise\n\x00\x20abcde")
        async with asyncio.timeout(5):
            for r in (r1, r2, r3):
                while await r.read(65536):
                    pass  # the host closes each one
        for w in (w1, w2, w3):
            w.close()
        async with fastp2p.Host() as a:
            assert await a.connect(b.full_addrs[0]) == b.peer_id


async def test_inbound_connection_limit() -> None:
    cfg = HostConfig(max_inbound_connections=1)
    async with fastp2p.Host(listen=["/ip4/127.0.0.1/tcp/0"], config=cfg) as b:
        async with fastp2p.Host() as a1, fastp2p.Host() as a2:
            await a1.connect(b.full_addrs[0])
            with pytest.raises(fastp2p.P2PError):
                await a2.connect(b.full_addrs[0])


async def test_connection_close_fails_streams_and_cleans_up(no_fd_leak: None) -> None:
    async with host_pair() as (a, b, peer):
        serve_echo(b)
        s = await a.open_stream(peer, "/echo/1.0.0")
        conn = a.connection(peer)
        assert conn is not None
        await b.disconnect(a.peer_id)
        async with asyncio.timeout(5):
            await conn.closed
        with pytest.raises(fastp2p.ConnectionClosedError):
            await s.write(b"x")
        assert a.connection(peer) is None


async def test_mplex_slow_reader_pauses_socket_then_resets_stalled_stream() -> None:
    """mplex has no flow control: the driver applies TCP backpressure, bounded in time."""
    from fastp2p.config import MplexConfig

    cfg = HostConfig(muxers=("/mplex/6.7.0",), mplex=MplexConfig(max_buffered_per_stream=1 << 20))
    async with host_pair(cfg) as (a, b, peer):
        held: asyncio.Queue[fastp2p.Stream] = asyncio.Queue()
        release = asyncio.Event()

        async def sink(s: fastp2p.Stream) -> None:
            await held.put(s)
            await release.wait()
            while await s.read(1 << 20):
                pass

        b.set_handler("/sink/1", sink)
        s = await a.open_stream(peer, "/sink/1")
        data = bytes(16 << 20)
        t = asyncio.create_task(s.write(data))
        rs = await held.get()
        await asyncio.sleep(0.5)
        assert rs._buffered <= 1 << 20  # bounded by the per-stream limit, not 16 MiB
        assert rs.conn._blocked_on is rs
        release.set()
        async with asyncio.timeout(30):
            await t
        await s.close_write()
        await s.aclose()

        # A reader that never reads is reset after slow_reader_timeout; others live on.
        release.clear()
        b.connection(a.peer_id).slow_reader_timeout = 0.3  # type: ignore[union-attr]
        s2 = await a.open_stream(peer, "/sink/1")
        t2 = asyncio.create_task(s2.write(data))
        rs2 = await held.get()
        async with asyncio.timeout(10):
            while not rs2.is_closed:
                await asyncio.sleep(0.05)
        t2.cancel()
        serve_echo(b)
        s3 = await a.open_stream(peer, "/echo/1.0.0")
        await s3.write(b"ok")
        assert await s3.readexactly(2) == b"ok"
        await s3.aclose()
        s2.reset()


async def test_connection_statistics(config: HostConfig) -> None:
    async with host_pair(config) as (a, b, peer):
        serve_echo(b)
        s = await a.open_stream(peer, "/echo/1.0.0")
        await s.write(bytes(100_000))
        await s.readexactly(100_000)
        await s.aclose()
        await Ping(a)(peer)
        st = a.connection(peer).statistics()  # type: ignore[union-attr]
        assert st["bytes_sent"] > 100_000 and st["bytes_received"] > 100_000
        assert st["streams_opened"] >= 3 and st["rtt"] > 0
        assert st["muxer_stats"]["frames_in"] > 0 and st["muxer_stats"]["frames_out"] > 0


async def test_inlined_muxer_negotiation_prefers_initiator_order() -> None:
    """Muxers are agreed inside the Noise handshake: the dialer's first common choice wins."""
    dial_cfg = HostConfig(muxers=("/mplex/6.7.0", "/yamux/1.0.0"))
    listen_cfg = HostConfig(muxers=("/yamux/1.0.0", "/mplex/6.7.0"))
    async with fastp2p.Host(listen=["/ip4/127.0.0.1/tcp/0"], config=listen_cfg) as b:
        async with fastp2p.Host(config=dial_cfg) as a:
            peer = await a.connect(b.full_addrs[0])
            assert a.connection(peer).muxer == "/mplex/6.7.0"  # type: ignore[union-attr]
            for _ in range(100):
                if b.connection(a.peer_id) is not None:
                    break
                await asyncio.sleep(0.01)
            assert b.connection(a.peer_id).muxer == "/mplex/6.7.0"  # type: ignore[union-attr]
        # No common muxer at all: the dial fails cleanly, the listener keeps serving.
        async with fastp2p.Host(config=HostConfig(muxers=("/other/1.0.0",))) as c:
            with pytest.raises(fastp2p.P2PError):
                await c.connect(b.full_addrs[0])
        async with fastp2p.Host() as d:
            assert await d.connect(b.full_addrs[0]) == b.peer_id


def test_early_muxer_choice_rules() -> None:
    from fastp2p.transport.upgrader import _early_muxer

    y, m = "/yamux/1.0.0", "/mplex/6.7.0"
    assert _early_muxer((y, m), (m, y), dialer=True) == y
    assert _early_muxer((y, m), (m, y), dialer=False) == m
    assert _early_muxer((y,), (), dialer=True) is None  # peer did not offer: multistream
    assert _early_muxer((y,), ("/foo",), dialer=True) is None


async def test_identify_push_on_new_protocol() -> None:
    async with host_pair() as (a, b, peer):
        assert "/new/1.0.0" not in a.peerstore.get(peer).protocols  # type: ignore[union-attr]

        async def h(s: fastp2p.Stream) -> None:
            await s.aclose()

        b.set_handler("/new/1.0.0", h)
        async with asyncio.timeout(5):
            while "/new/1.0.0" not in a.peerstore.get(peer).protocols:  # type: ignore[union-attr]
                await asyncio.sleep(0.01)
        b.remove_handler("/new/1.0.0")
        async with asyncio.timeout(5):
            while "/new/1.0.0" in a.peerstore.get(peer).protocols:  # type: ignore[union-attr]
                await asyncio.sleep(0.01)


async def test_identify_answer_encoded_once_and_follows_changes() -> None:
    from fastp2p.proto.identify import encode_identify
    from fastp2p.proto.protobuf import length_prefixed

    async def h(s: fastp2p.Stream) -> None:
        await s.aclose()

    async with host_pair() as (a, b, peer):
        ident = b._identify
        assert ident is not None
        conn = b.connection(a.peer_id)
        assert conn is not None
        want = length_prefixed(encode_identify(ident.local_info(conn)))
        assert ident._encoded_answer(conn) == want  # the same bytes as encoding it whole
        cached = ident._answer
        assert ident._encoded_answer(conn) == want and ident._answer is cached
        b.set_handler("/new/1.0.0", h)
        got = ident._encoded_answer(conn)
        assert got == length_prefixed(encode_identify(ident.local_info(conn)))
        assert b"/new/1.0.0" in got and ident._answer is not cached
        # a new peer's identify request gets the new answer
        async with fastp2p.Host() as c:
            async with asyncio.timeout(10):
                await c.connect(b.full_addrs[0])
            rec = c.peerstore.get(peer)
            assert rec is not None and "/new/1.0.0" in rec.protocols
            assert rec.observed_addr is not None  # the per-connection field is there too


async def test_ping_forgets_peers_whose_connection_closed() -> None:
    async with host_pair() as (a, b, peer):
        ping = Ping(a)
        await ping(peer)
        assert peer in ping._streams and peer in ping._locks
        await a.disconnect(peer)
        async with asyncio.timeout(5):
            while peer in ping._streams or peer in ping._locks:
                await asyncio.sleep(0.01)


async def test_listen_after_start_and_stop_listening(no_fd_leak: None) -> None:
    """Host.listen adds a listener to a running host; stop_listening keeps its connections."""
    async with fastp2p.Host() as b, fastp2p.Host() as a:
        assert b.addrs == []
        serve_echo(b)
        lst = await b.listen("/ip4/127.0.0.1/tcp/0")
        assert lst.addrs and lst.addrs[0].tcp_host_port()[1] != 0
        assert b.addrs == lst.addrs
        peer = await a.connect(lst.addrs[0].with_peer_id(b.peer_id))
        s = await a.open_stream(peer, ECHO_PROTOCOL)
        await s.write(b"before")
        assert await s.readexactly(6) == b"before"
        await b.stop_listening(lst)
        assert b.addrs == []
        with pytest.raises(fastp2p.DialError):
            await _dial_once(lst.addrs[0])
        # the connection accepted there stays open
        await s.write(b"after")
        assert await s.readexactly(5) == b"after"
        await s.aclose()
    with pytest.raises(fastp2p.ClosedResourceError):
        await b.listen("/ip4/127.0.0.1/tcp/0")


async def _dial_once(addr: fastp2p.Multiaddr) -> None:
    async with fastp2p.Host() as c:
        await c.connect(addr)
