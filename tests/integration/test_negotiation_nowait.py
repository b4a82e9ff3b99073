"""Stream negotiation without a wait (issue 12, connect and stream-open latency).

- ``Stream.read_nowait`` / ``write_nowait``: what is buffered, what the window
  takes, never a wait;
- a lazy proposal that arrives with the stream's opening frame is answered at
  once: ``negotiate_inbound`` succeeds even with a timeout of 0 (the waiting
  path would raise TimeoutError), and a proposal that is not there yet still
  waits, bounded by the timeout;
- ``Host.open_stream`` for a protocol identify listed hands the proposal to the
  muxer in the same call (the stream is lazy at once).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import pytest

from fastp2p.config import HostConfig
from fastp2p.errors import ClosedResourceError
from fastp2p.host import Host
from fastp2p.testing import host_pair
from fastp2p.transport.upgrader import negotiate_inbound, propose_now

PROTO = "/test/nowait/1.0.0"
CFG = HostConfig(data_paths=("tcp",))


@contextlib.asynccontextmanager
async def _lazy_stream_to_a_listener_by_hand() -> AsyncIterator[tuple[Any, Any]]:
    """A stream proposing PROTO lazily, and its inbound end, which the test answers."""
    opened: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    async with host_pair(CFG) as (a, b, peer):
        conn_b = b.connection(a.peer_id)
        assert conn_b is not None
        conn_b._on_inbound_stream = opened.set_result  # noqa: SLF001 - test hook
        s = a.connection(peer).open_stream()
        assert propose_now(s, PROTO)
        yield s, await asyncio.wait_for(opened, 10)


async def test_read_and_write_nowait() -> None:
    seen: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    async def handler(stream: Any) -> None:
        seen.set_result(stream)
        await asyncio.sleep(30)

    async with host_pair(CFG, handlers={PROTO: handler}) as (a, _b, peer):
        s = await a.open_stream(peer, PROTO)
        assert s.read_nowait(10) == b""  # nothing buffered yet
        assert s.write_nowait(b"ping") == 4
        remote = await asyncio.wait_for(seen, 10)
        assert await remote.readexactly(4) == b"ping"
        await remote.write(b"pong!")
        got = b""
        for _ in range(200):
            got += s.read_nowait(3)
            if len(got) >= 5:
                break
            await asyncio.sleep(0.005)
        assert got == b"pong!"
        assert s.read_nowait(0) == b""
        await s.close_write()
        with pytest.raises(ClosedResourceError):
            s.write_nowait(b"x")
        s.reset()
        assert s.read_nowait(10) == b""  # a reset stream has nothing to give; read raises


async def test_buffered_proposal_is_answered_without_waiting() -> None:
    from fastp2p.proto.multistream import first_flight

    # the listener's inbound streams taken by hand, to negotiate ourselves
    async with _lazy_stream_to_a_listener_by_hand() as (s, inbound):
        await s.write(b"early")
        for _ in range(200):
            if inbound.buffered >= len(first_flight(PROTO)) + 5:
                break
            await asyncio.sleep(0.005)
        # everything is buffered: no wait, so even a zero timeout is met
        assert await negotiate_inbound(inbound, {PROTO}, timeout=0) == PROTO
        assert await inbound.readexactly(5) == b"early"

        # nothing buffered: the wait is bounded by the timeout
        conn_b = inbound.conn
        opened2: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        conn_b._on_inbound_stream = opened2.set_result  # noqa: SLF001
        s2 = s.conn.open_stream()
        s2.write_nowait(b"\x13")  # the first byte of the multistream header only
        inbound2 = await asyncio.wait_for(opened2, 10)
        with pytest.raises(TimeoutError):
            await negotiate_inbound(inbound2, {PROTO}, timeout=0.05)


async def test_open_stream_of_a_known_protocol_is_lazy_at_once() -> None:
    async def echo(stream: Any) -> None:
        await stream.write(await stream.readexactly(3))
        await stream.aclose()

    async with host_pair(CFG, handlers={PROTO: echo}) as (a, _b, peer):
        s = await a.open_stream(peer, PROTO)  # identify listed PROTO
        assert type(s).__name__ == "_LazyStream"
        await s.write(b"abc")
        assert await s.readexactly(3) == b"abc"
        await s.aclose()


async def test_ephemeral_keys_made_ahead_are_handed_out_once() -> None:
    from nacl.bindings import crypto_scalarmult_base

    from fastp2p.transport.upgrader import _Ephemerals

    pool = _Ephemerals(size=2)
    assert pool.take() is None  # none made yet: the handshake makes its own
    seen: set[bytes] = set()
    for _ in range(10):
        pool.refill_soon()
        assert not pool._keys  # noqa: SLF001 - made after the caller's callback, not in it
        await asyncio.sleep(0)
        key = pool.take()
        assert key is not None
        priv, pub = key
        assert crypto_scalarmult_base(priv) == pub
        assert pub not in seen
        seen.add(pub)
    for _ in range(5):
        pool.refill_soon()
        await asyncio.sleep(0)
    assert len(pool._keys) == 2  # noqa: SLF001 - the bound


async def test_each_side_makes_its_next_ephemeral_key_while_it_waits() -> None:
    """A handshake takes a key made ahead and has the next one made while it waits
    for the peer's answer: the dialer after message 1, the listener after message 2."""
    from fastp2p.transport import upgrader

    async with Host(listen=["/ip4/127.0.0.1/tcp/0"], config=CFG) as b, Host(config=CFG) as a:
        upgrader._EPHEMERALS._keys.clear()  # noqa: SLF001
        await a.connect(f"{b.addrs[0]}/p2p/{b.peer_id}")
        # each side found none and had one made: both keys are in the pool now
        assert len(upgrader._EPHEMERALS._keys) == 2  # noqa: SLF001
        used = {k[1] for k in upgrader._EPHEMERALS._keys}  # noqa: SLF001
        await a.disconnect(b.peer_id)
        await a.connect(f"{b.addrs[0]}/p2p/{b.peer_id}")
        # those two were taken and two fresh ones made in their place
        now = {k[1] for k in upgrader._EPHEMERALS._keys}  # noqa: SLF001
        assert len(now) == 2 and not now & used


async def test_open_stream_nowait_proposes_on_that_connection() -> None:
    from fastp2p.errors import NegotiationError
    from fastp2p.transport.upgrader import MPLEX_PROTOCOL_ID

    async def echo(stream: Any) -> None:
        await stream.write(await stream.readexactly(2))
        await stream.aclose()

    async with host_pair(CFG, handlers={PROTO: echo}) as (a, _b, peer):
        conn = a.connection(peer)
        assert conn is not None
        before = conn.stats.streams_opened
        send = conn._base.ciphers[0]  # noqa: SLF001 - counts the Noise frames sealed
        nonce = send.nonce
        s = a.open_stream_nowait(conn, PROTO)  # no await: proposed in this call
        assert s is not None and s.protocol == PROTO and s.conn is conn
        assert conn.stats.streams_opened == before + 1
        assert send.nonce == nonce  # held for the caller's first write (DataPath.hold)
        await s.write(b"hi")  # fits the window: returns in this same pass
        assert send.nonce == nonce
        await asyncio.sleep(0)  # the pass's end
        assert send.nonce == nonce + 1  # the SYN, the proposal and the data: one Noise frame
        assert await s.readexactly(2) == b"hi"
        await s.aclose()
        # a protocol the listener does not serve: the first read says so
        bad = a.open_stream_nowait(conn, "/not/served/1.0.0")
        assert bad is not None
        with pytest.raises(NegotiationError):
            async with asyncio.timeout(10):
                await bad.read(1)
        await bad.aclose()
    # over mplex a peer whose agent is not fastp2p's gets the round trip (see
    # Host._proposes_early): None, nothing opened
    mplex = HostConfig(data_paths=("tcp",), muxers=(MPLEX_PROTOCOL_ID,))
    other = dataclasses.replace(mplex, agent_version="js-libp2p/2.0.0")
    async with host_pair(mplex, handlers={PROTO: echo}, listener_config=other) as (a, _b, peer):
        conn = a.connection(peer)
        assert conn is not None and conn.muxer == MPLEX_PROTOCOL_ID
        before = conn.stats.streams_opened
        assert a.open_stream_nowait(conn, PROTO) is None
        assert conn.stats.streams_opened == before


async def test_identify_refused_by_the_peer_ends_connect_promptly() -> None:
    # the request is proposed without waiting; a peer without identify answers "na"
    # at the first read, which ends identify (not the connection) at once
    import fastp2p

    quiet = HostConfig(data_paths=("tcp",), enable_identify=False)
    async with fastp2p.Host(listen=["/ip4/127.0.0.1/tcp/0"], config=quiet) as b, \
            fastp2p.Host(config=CFG) as a:
        async with asyncio.timeout(5):  # far below negotiation_timeout
            peer = await a.connect(b.full_addrs[0])
        assert peer == b.peer_id
        rec = a.peerstore.get(peer)
        assert rec is None or not rec.identified
        assert a.connection(peer) is not None  # the connection itself lives on


async def test_open_stream_beyond_the_accept_backlog_waits_on_the_same_stream() -> None:
    # with accept_backlog of our streams unacknowledged the SYN waits, and so does the
    # proposal: on that same stream (no stream is reset and opened again)
    import dataclasses

    from fastp2p.config import YamuxConfig

    async def echo(stream: Any) -> None:
        await stream.write(await stream.readexactly(2))
        await stream.aclose()

    cfg = HostConfig(data_paths=("tcp",), yamux=dataclasses.replace(YamuxConfig(), accept_backlog=4))
    async with host_pair(cfg, handlers={PROTO: echo}) as (a, _b, peer):
        conn = a.connection(peer)
        assert conn is not None
        before = conn.stats.streams_opened

        async def one() -> bytes:
            s = await a.open_stream(peer, PROTO)
            await s.write(b"ok")
            got = await s.readexactly(2)
            await s.aclose()
            return bytes(got)

        async with asyncio.timeout(20):
            assert await asyncio.gather(*(one() for _ in range(40))) == [b"ok"] * 40
        assert conn.stats.streams_opened == before + 40
        assert a.open_stream_nowait(conn, PROTO) is not None  # the backlog is free again


@pytest.mark.parametrize("split", [1, 20, 25])
async def test_lazy_stream_settles_from_an_answer_split_across_frames(split: int) -> None:
    # the one-step settle takes the usual answer whole; one that arrives in parts (at
    # a byte of the header, between the two lines, inside the echo) goes to the full
    # dialer machine, which settles from the same bytes
    from fastp2p.proto.multistream import MultistreamListener, first_flight

    async with _lazy_stream_to_a_listener_by_hand() as (s, inbound):
        await s.write(b"hello")
        ms = MultistreamListener({PROTO})
        while not ms.done:
            ms.receive_data(await inbound.read(4096))
        answer = ms.data_to_send()
        assert answer == first_flight(PROTO)
        rest = ms.unused_data()
        while len(rest) < 5:
            rest += await inbound.read(4096)
        assert rest == b"hello"
        await inbound.write(answer[:split])
        reader = asyncio.ensure_future(s.readexactly(6))
        await asyncio.sleep(0.05)
        assert not reader.done()  # a part of the answer is not data
        await inbound.write(answer[split:] + b"world!")
        assert await asyncio.wait_for(reader, 10) == b"world!"
        assert type(s).__name__ == "Stream"


async def test_lazy_stream_refused_with_data_behind_the_refusal() -> None:
    from fastp2p.errors import NegotiationError
    from fastp2p.proto.multistream import HEADER_MESSAGE, encode_message

    async with _lazy_stream_to_a_listener_by_hand() as (s, inbound):
        await inbound.write(HEADER_MESSAGE + encode_message("na") + b"junk")
        with pytest.raises(NegotiationError):
            await asyncio.wait_for(s.read(10), 10)


@pytest.mark.parametrize("agent", ["fastp2p/0.0.0", "go-libp2p/0.36.0", None])
async def test_open_stream_over_mplex_proposes_early_only_to_fastp2p(agent: str | None) -> None:
    """Over mplex the proposal goes with the first write only to a peer whose
    identify says it is fastp2p (js-libp2p's mplex loses a half-close that comes
    during negotiation); others, or a peer that sent no agent, get the round
    trip. Either way the stream works, a half-close included."""
    from fastp2p.transport.upgrader import MPLEX_PROTOCOL_ID

    async def echo(stream: Any) -> None:
        await stream.write(await stream.read())  # to EOF: the half-close must arrive
        await stream.aclose()

    mplex = HostConfig(data_paths=("tcp",), muxers=(MPLEX_PROTOCOL_ID,))
    listener = dataclasses.replace(mplex, agent_version=agent) if agent != "fastp2p/0.0.0" else mplex
    async with host_pair(mplex, handlers={PROTO: echo}, listener_config=listener) as (a, b, peer):
        conn = a.connection(peer)
        assert conn is not None and conn.muxer == MPLEX_PROTOCOL_ID
        rec = a.peerstore.get(peer)
        assert rec is not None and rec.agent_version == (None if agent is None else listener.agent_version)
        inbound = b.connection(a.peer_id)
        assert inbound is not None
        accepted = inbound.stats.streams_accepted
        s = await a.open_stream(peer, PROTO)
        early = agent is not None and agent.startswith("fastp2p/")
        # early: open_stream returned before the listener saw the stream (nothing was
        # awaited); otherwise it awaited the listener's answer
        assert (inbound.stats.streams_accepted == accepted) is early
        assert (type(s).__name__ == "_LazyStream") is early
        await s.write(b"abc")
        await s.close_write()
        async with asyncio.timeout(10):
            assert await s.read() == b"abc"
        await s.aclose()
