"""TcpConnection's read sizes over real loopback TCP: ``limit_reads`` (a hint that
sizes reads to a reader's buffer) under ``cap_reads`` (a bound a muxer without flow
control needs: mplex pauses reading at a stream's soft limit, so one read must not
bring more than that)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from fastp2p.transport.tcp import RECV_BUFFER_SIZE, TcpConnection

from .test_tcp_write_queue import _loops, tcp_pair

CHUNK = 4 << 20


async def _largest_reads(setup: Any, rounds: int = 3) -> list[int]:
    """Send CHUNK bytes ``rounds`` times over loopback, calling ``setup(peer, i)``
    before round i; the largest read the listener made in each round."""
    async with tcp_pair() as (conn, peer):
        sizes: list[int] = []
        got = 0
        arrived = asyncio.Event()

        def on_data(view: memoryview) -> None:
            nonlocal got
            sizes.append(len(view))
            got += len(view)
            arrived.set()

        assert peer.start_push(on_data, lambda exc: arrived.set()) == b""
        out = []
        for i in range(rounds):
            setup(peer, i)
            sizes.clear()
            got = 0
            conn.write(bytes(CHUNK))
            async with asyncio.timeout(10):
                while got < CHUNK:
                    await arrived.wait()
                    arrived.clear()
            out.append(max(sizes))
        conn.close()
        peer.close()
        return out


@pytest.mark.parametrize("loop_factory", _loops())
def test_cap_reads_bounds_every_read_and_limit_reads_stays_under_it(loop_factory: Any) -> None:
    cap = 64 << 10

    def setup(peer: TcpConnection, i: int) -> None:
        if i == 0:
            peer.cap_reads(cap)
        elif i == 1:
            peer.limit_reads(16 << 10)  # a smaller hint still holds
        else:
            peer.limit_reads(0)  # "any size" means the cap

    with asyncio.Runner(loop_factory=loop_factory) as r:
        largest = r.run(_largest_reads(setup))
    assert largest[0] <= cap and largest[1] <= 16 << 10 and largest[2] <= cap, largest
    assert largest[2] > 16 << 10, largest  # the hint was lifted


@pytest.mark.parametrize("loop_factory", _loops())
def test_without_a_cap_reads_may_fill_the_receive_buffer(loop_factory: Any) -> None:
    def setup(peer: TcpConnection, i: int) -> None:
        if i == 0:
            peer.cap_reads(64 << 10)
        elif i == 1:
            peer.cap_reads(0)  # lifted
        else:
            peer.limit_reads(0)

    with asyncio.Runner(loop_factory=loop_factory) as r:
        largest = r.run(_largest_reads(setup))
    assert largest[0] <= 64 << 10, largest
    assert max(largest[1:]) > 64 << 10 and max(largest) <= RECV_BUFFER_SIZE, largest


@pytest.mark.parametrize("loop_factory", _loops())
def test_both_ends_have_tcp_nodelay(loop_factory: Any) -> None:
    """Small frames (a round trip's message, a window update) must not wait for
    Nagle: asyncio's and uvloop's transports set TCP_NODELAY themselves, so we set
    it only on other loops, and both the dialled and the accepted socket have it."""
    import socket

    from fastp2p.transport.tcp import _loop_sets_nodelay

    async def main() -> list[int]:
        assert _loop_sets_nodelay(asyncio.get_running_loop())
        async with tcp_pair() as (conn, peer):
            out = [c._sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) for c in (conn, peer)]
            conn.close()
            peer.close()
            return out

    with asyncio.Runner(loop_factory=loop_factory) as r:
        assert all(r.run(main()))


def test_other_loops_are_not_trusted_with_tcp_nodelay() -> None:
    # (asyncio's and uvloop's are, in test_both_ends_have_tcp_nodelay)
    from fastp2p.transport import tcp

    class OtherLoop(asyncio.AbstractEventLoop):  # neither: the transport sets it
        pass

    assert not tcp._loop_sets_nodelay(OtherLoop())
