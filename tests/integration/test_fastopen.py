"""Connection setup and stream opening in fewer round trips and syscalls (issue 12).

- ``open_stream`` for a protocol the peer's identify listed proposes it lazily:
  it returns before the listener answers, and a refusal surfaces on the first read.
- The first write of a pass of the event loop leaves at once, the small writes
  after it in one ``send()`` at the end of the pass. A read makes the pass's end
  marker, which then runs after the tasks it woke, in their turn of the loop.
- One Noise static key (and signature) per host identity.
- Opening a stream and echoing one message is one Noise frame each way: the
  opener's SYN, proposal and first write leave together, and so do the
  listener's ACK, multistream answer and the handler's reply (DataPath.hold).
"""

from __future__ import annotations

import asyncio

import pytest

import fastp2p
from fastp2p.config import HostConfig
from fastp2p.errors import NegotiationError, StreamResetError
from fastp2p.testing import host_pair
from fastp2p.transport import tcp, upgrader
from tests.integration.sends import recording_sends

ECHO = "/test/echo/1.0.0"


async def _echo(stream: fastp2p.Stream) -> None:
    while data := await stream.read(65536):
        await stream.write(data)
    await stream.close_write()


async def test_known_protocol_is_proposed_without_waiting_for_the_answer() -> None:
    async with host_pair(handlers={ECHO: _echo}) as (cli, srv, peer):
        # identify done: ECHO is known
        assert ECHO in cli.peerstore.record(peer).protocols
        # The listener stops reading: a full negotiation could never finish now.
        srv_conn = srv.connection(cli.peer_id)
        assert srv_conn is not None
        srv_conn._raw.pause_reading()
        async with asyncio.timeout(5):
            st = await cli.open_stream(peer, ECHO)
        assert st.protocol == ECHO
        await st.write(b"ping")
        srv_conn._raw.resume_reading()
        async with asyncio.timeout(10):
            assert await st.readexactly(4) == b"ping"  # the answer was taken off first
            await st.close_write()
            assert await st.read() == b""
        await st.aclose()


async def test_unknown_protocol_is_negotiated_fully() -> None:
    async with host_pair(handlers={ECHO: _echo}) as (cli, _srv, peer):
        with pytest.raises(NegotiationError):
            async with asyncio.timeout(10):
                await cli.open_stream(peer, "/not/served/1.0.0")


async def test_lazy_refusal_surfaces_on_the_first_read() -> None:
    async with host_pair(handlers={ECHO: _echo}) as (cli, srv, peer):
        # The peerstore still lists ECHO, but the listener no longer serves it.
        srv._handlers.pop(ECHO)
        async with asyncio.timeout(5):
            st = await cli.open_stream(peer, ECHO)
        with pytest.raises((NegotiationError, StreamResetError)):
            async with asyncio.timeout(10):
                await st.read(10)
        await st.aclose()
        # the connection itself is fine
        async with asyncio.timeout(10):
            assert await cli.ping(peer) >= 0


async def test_small_writes_after_the_first_of_a_loop_pass_leave_in_one_send() -> None:
    got = bytearray()
    done = asyncio.Event()

    async def serve(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        got.extend(await r.read())
        done.set()
        w.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        raw = await tcp.TcpTransport().dial(fastp2p.Multiaddr(f"/ip4/127.0.0.1/tcp/{port}"))
        with recording_sends(raw) as rec:  # bytes per send (a writelines is one writev)
            raw.write(b"a" * 10)  # the first write of a pass leaves at once
            raw.write(bytearray(b"b" * 20))
            raw.write(memoryview(b"c" * 30))
            assert rec.sends == [10]
            await asyncio.sleep(0)  # the rest of the pass: one send
            assert rec.sends == [10, 50]
            await asyncio.sleep(0)
            # hold_flush: everything until the end of this pass goes together
            raw.hold_flush()
            raw.write(b"g" * 3)
            raw.write(b"h" * 4)
            assert rec.sends == [10, 50]
            await asyncio.sleep(0)
            assert rec.sends == [10, 50, 7]
            await asyncio.sleep(0)
            # flush sends at once: a message the peer must answer never waits
            raw.hold_flush()
            raw.write(b"j" * 2)
            raw.write(b"k" * 3)
            assert rec.sends == [10, 50, 7]
            raw.flush()
            assert rec.sends == [10, 50, 7, 5]
            await asyncio.sleep(0)
            # A large write joins the queue in order; close sends the queue in one writev.
            raw.write(b"d" * 5)
            raw.write(b"i" * 6)
            raw.write(b"e" * (tcp.COALESCE_MAX + 1))
            raw.write(b"f" * 7)
            raw.close()
            assert rec.sends == [10, 50, 7, 5, 5, 6 + tcp.COALESCE_MAX + 1 + 7]
            async with asyncio.timeout(10):
                await done.wait()
            assert bytes(got) == (
                b"a" * 10 + b"b" * 20 + b"c" * 30 + b"g" * 3 + b"h" * 4 + b"j" * 2 + b"k" * 3
                + b"d" * 5 + b"i" * 6
                + b"e" * (tcp.COALESCE_MAX + 1) + b"f" * 7
            )
    finally:
        server.close()


async def test_one_noise_static_key_per_identity() -> None:
    key = fastp2p.Ed25519PrivateKey.generate()
    s1, sig1 = upgrader._noise_static(key)
    s2, sig2 = upgrader._noise_static(key)
    assert s1 is s2 and sig1 == sig2
    other, _ = upgrader._noise_static(fastp2p.Ed25519PrivateKey.generate())
    assert other is not s1
    # a started host made its key at start, not in its first handshake
    async with fastp2p.Host() as h:
        assert h.identity.public_key().to_protobuf() in upgrader._STATIC_KEYS


async def test_host_buffer_pool_is_made_on_first_use() -> None:
    async with fastp2p.Host() as h:
        assert h._buffers is None
        pool = h.buffers
        assert h.buffers is pool


@pytest.mark.parametrize("rounds", [1, 5])
async def test_open_and_echo_is_one_frame_each_way(rounds: int) -> None:
    async def echo_once(stream: fastp2p.Stream) -> None:
        await stream.write(await stream.readexactly(4))
        await stream.close_write()

    # over TCP (on one host the default would move the streams to shared memory)
    async with host_pair(HostConfig(data_paths=("tcp",)), handlers={ECHO: echo_once}) as (cli, srv, peer):
        c_conn, s_conn = cli.connection(peer), srv.connection(cli.peer_id)
        assert c_conn is not None and s_conn is not None
        c_send, s_send = c_conn.base_path.ciphers[0], s_conn.base_path.ciphers[0]
        for _ in range(rounds):
            await asyncio.sleep(0.05)  # identify's and earlier streams' closes are out
            c0, s0 = c_send.nonce, s_send.nonce
            st = await cli.open_stream(peer, ECHO)  # known from identify: lazy
            await st.write(b"ping")
            async with asyncio.timeout(10):
                assert await st.readexactly(4) == b"ping"
            # before: 2 frames from the opener (SYN + proposal, then the data) and
            # 2-3 from the listener (ACK, then the answer and the reply)
            assert c_send.nonce - c0 == 1
            assert s_send.nonce - s0 == 1
            await st.aclose()


async def test_hold_writes_keeps_the_pass_first_write() -> None:
    async def sink(stream: fastp2p.Stream) -> None:
        while await stream.read(65536):
            pass

    async with host_pair(HostConfig(data_paths=("tcp",)), handlers={ECHO: sink}) as (cli, _srv, peer):
        st = await cli.open_stream(peer, ECHO)
        await st.write(b"x")
        conn = st.conn
        send = conn.base_path.ciphers[0]
        for hold, frames in ((False, 2), (True, 1)):
            await asyncio.sleep(0.05)  # nothing queued, no pass under way
            n0 = send.nonce
            if hold:
                conn.hold_writes()  # what Host._serve_stream does before the answer
            assert st.write_nowait(b"answer") == 6
            assert st.write_nowait(b"reply") == 5
            await asyncio.sleep(0)  # the pass's end
            assert send.nonce - n0 == frames
        await st.aclose()


@pytest.mark.parametrize("muxer", ["/yamux/1.0.0", "/mplex/6.7.0"])
async def test_a_read_makes_the_pass_end_marker_of_the_answers_it_wakes(muxer: str) -> None:
    """The read that wakes a handler makes the pass's end marker, so the marker
    runs in the handler's turn of the loop, after it: the answer is not followed
    by a turn (and a poll of the sockets) of its own. The answer still leaves at
    once, alone; a second write in the pass waits for the marker."""
    seen: list[tuple[bool, bool]] = []

    async def answer(stream: fastp2p.Stream) -> None:
        raw = stream.conn.base_path.raw
        while data := await stream.read(65536):
            seen.append((raw._marked, raw.in_pass))  # noqa: SLF001 - before the answer
            await stream.write(data[:2])
            await stream.write(data[2:])

    cfg = HostConfig(data_paths=("tcp",), muxers=(muxer,))
    async with host_pair(cfg, handlers={ECHO: answer}) as (cli, srv, peer):
        st = await cli.open_stream(peer, ECHO)
        await st.write(b"warm")
        assert await st.readexactly(4) == b"warm"
        s_conn = srv.connection(cli.peer_id)
        assert s_conn is not None
        raw = s_conn.base_path.raw
        assert raw._p._writer is raw  # noqa: SLF001 - push mode set the read side's writer
        ends = 0
        real_end = raw._end_cb  # noqa: SLF001

        def counted_end() -> None:
            nonlocal ends
            ends += 1
            real_end()

        raw._end_cb = counted_end  # noqa: SLF001
        try:
            for i in range(3):
                await asyncio.sleep(0.05)  # nothing under way
                seen.clear()
                ends = 0
                with recording_sends(raw) as rec:
                    await st.write(b"ab%02d" % i)
                    async with asyncio.timeout(10):
                        assert await st.readexactly(4) == b"ab%02d" % i
                    await asyncio.sleep(0.01)
                assert seen == [(True, False)], "the read made the marker; no write yet"
                assert ends == 1, "one marker: the answer's first write made none"
                assert rec.sends == [32, 32] if muxer.startswith("/yamux") else len(rec.sends) == 2
        finally:
            raw._end_cb = real_end  # noqa: SLF001
        await st.aclose()


async def test_tcp_reads_go_straight_to_the_native_receive_step() -> None:
    # each TCP read calls the connection's one-call receive step itself (redirect_push),
    # not through NoisePath's forwarding; a path switch's checked way puts it back
    async with host_pair(HostConfig(data_paths=("tcp",)), handlers={ECHO: _echo}) as (a, _b, peer):
        conn = a.connection(peer)
        assert conn is not None
        base = conn.base_path
        tcp_protocol = base.raw._p  # noqa: SLF001 - the transport's push target
        assert base.fused is not None
        assert tcp_protocol._on_data == base.fused  # noqa: SLF001
        s = await a.open_stream(peer, ECHO)
        await s.write(b"x" * 10)
        assert await s.readexactly(10) == b"x" * 10
        base.fused = None
        assert tcp_protocol._on_data == base._on_wire  # noqa: SLF001
        await s.write(b"y" * 10)  # still delivered, the forwarding way
        assert await s.readexactly(10) == b"y" * 10
