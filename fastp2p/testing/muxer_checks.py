"""go-libp2p's muxer test suite (``p2p/muxer/testsuite``, ``SubtestAll``) on fastp2p Hosts.

:func:`check_muxer` runs each sub-test on a fresh connected host pair and then
checks with :func:`assert_stream_tables_empty` that no stream was left behind.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Collection

from fastp2p.errors import ClosedResourceError, ConnectionClosedError, StreamResetError
from fastp2p.host import Host
from fastp2p.peer import PeerID
from fastp2p.stream import Stream
from fastp2p.testing._helpers import (
    ECHO_PROTOCOL,
    HOLD_PROTOCOL,
    PING_PROTOCOL,
    RESET_PROTOCOL,
    MakeHostPair,
    assert_eof,
    echo_handler,
    expect_reset,
    recv_exactly,
    select_names,
    wait_until,
)

__all__ = ["MUXER_SUBTESTS", "assert_stream_tables_empty", "check_muxer"]


async def check_muxer(
    make_host_pair: MakeHostPair,
    *,
    stress_streams: int = 1000,
    stress_msgs: int = 10,
    stress_msg_size: int = 2048,
    stress_concurrency: int = 1000,
    both_ways_streams: int = 100,
    timeout: float = 60.0,
    only: Collection[str] | None = None,
    skip: Collection[str] = (),
) -> None:
    """Port of go-libp2p's muxer ``SubtestAll`` onto a pair of connected Hosts.

    Sub-tests, each on a fresh host pair under its own timeout: SimpleWrite
    (echo one message); StreamReset (the dialer resets, the listener's write
    fails with a remote ``StreamResetError``); WriteAfterClose (writes after
    ``close_write`` and ``aclose`` raise ``ClosedResourceError``); StreamClose
    then read (half-close, read the echo to EOF, reading after ``aclose``
    raises); Stress1Conn1000Stream10Msg (``stress_streams`` streams of
    ``stress_msgs`` messages of ``stress_msg_size`` bytes, echoed byte-exact);
    streams opened from both sides of one connection concurrently;
    StreamLeftOpen (a connection closed under open streams fails them with
    ``ConnectionClosedError`` and cleans up). After each sub-test every
    connection's stream table (``Connection.streams`` and the muxer session's)
    must drain to empty, except for a cached ``/ipfs/ping/1.0.0`` stream.

    Args:
        make_host_pair: a factory of async context managers yielding
            ``(dialer, listener, listener_id)`` with the dialer connected, e.g.
            ``functools.partial(fastp2p.testing.host_pair, config)``.
        stress_streams: streams in the stress sub-test (go: 1000).
        stress_msgs: messages per stream (go: 10).
        stress_msg_size: bytes per message.
        stress_concurrency: at most this many stress streams open at once.
        both_ways_streams: streams opened from each side concurrently.
        timeout: seconds allowed per sub-test.
        only: run only these sub-tests (names from :data:`MUXER_SUBTESTS`).
        skip: sub-tests not to run.

    Raises:
        ValueError: ``only`` or ``skip`` names an unknown sub-test.
        AssertionError: a check failed (the message says which).
        TimeoutError: a sub-test hung for ``timeout`` seconds.

    Cancellation: the host pair in use is stopped by its context manager.
    """
    params = {
        "stress_1conn_1000stream_10msg": (
            stress_streams,
            stress_msgs,
            stress_msg_size,
            stress_concurrency,
        ),
        "many_streams_both_directions": (both_ways_streams,),
    }
    for name in select_names(MUXER_SUBTESTS, only, skip):
        sub = _MUXER_SUBTESTS[name]
        try:
            async with asyncio.timeout(timeout), make_host_pair() as (a, b, peer):
                a.set_handler(ECHO_PROTOCOL, echo_handler)
                b.set_handler(ECHO_PROTOCOL, echo_handler)
                await sub(a, b, peer, *params.get(name, ()))
                await assert_stream_tables_empty(a, b)
        except Exception as exc:
            exc.add_note(f"in fastp2p.testing.check_muxer sub-test {name!r}")
            raise


async def assert_stream_tables_empty(*hosts: Host, timeout: float = 5.0) -> None:
    """Wait until no connection of ``hosts`` has a stream left (but a ping stream).

    Checks both ``Connection.streams`` (streams the application has not closed)
    and the muxer session's table (streams not yet closed both ways or reset).

    Raises:
        AssertionError: streams remained after ``timeout`` seconds.
    """

    def leftovers() -> list[str]:
        out = []
        for h in hosts:
            for c in h.connections:
                if c.is_closed:
                    continue
                pings = [s for s in c.streams.values() if s.protocol == PING_PROTOCOL]
                others = [s for s in c.streams.values() if s.protocol != PING_PROTOCOL]
                in_session = c.statistics()["muxer_streams"]
                if others or in_session > len(pings):
                    out.append(f"{c!r}: streams={others!r}, session table size={in_session}")
        return out

    try:
        await wait_until(lambda: not leftovers(), "stream tables to drain", timeout)
    except AssertionError:
        raise AssertionError("stream tables not empty: " + "; ".join(leftovers())) from None


async def _sub_simple_write(a: Host, b: Host, peer: PeerID) -> None:
    s = await a.open_stream(peer, ECHO_PROTOCOL)
    msg = b"Hello World, this is the simple write subtest" * 8
    await s.write(msg)
    assert await recv_exactly(s, len(msg)) == msg
    await s.close_write()
    await assert_eof(s)
    await s.aclose()


async def _sub_stream_reset(a: Host, b: Host, peer: PeerID) -> None:
    loop = asyncio.get_running_loop()
    outcome: asyncio.Future[BaseException | None] = loop.create_future()

    async def handler(s: Stream) -> None:
        try:
            async with asyncio.timeout(10):
                while True:  # go: the listener's write after the dialer's reset fails
                    await s.write(b"foo")
                    await asyncio.sleep(0.005)
        except BaseException as exc:
            outcome.set_result(exc)
            raise

    b.set_handler(RESET_PROTOCOL, handler)
    s = await a.open_stream(peer, RESET_PROTOCOL)
    s.reset()
    exc = await outcome
    assert isinstance(exc, StreamResetError), f"listener write after reset raised {exc!r}"
    assert exc.remote, "the listener's StreamResetError must say the peer reset"
    await expect_reset(s.write(b"x"), remote=False, what="dialer write after own reset")
    await s.aclose()
    # the connection survives: a new stream works
    await _sub_simple_write(a, b, peer)


async def _sub_write_after_close(a: Host, b: Host, peer: PeerID) -> None:
    s = await a.open_stream(peer, ECHO_PROTOCOL)
    await s.close_write()
    try:
        await s.write(b"x")
    except ClosedResourceError:
        pass
    else:
        raise AssertionError("write after close_write must raise ClosedResourceError")
    await assert_eof(s)  # the echo closed its side after our EOF
    await s.aclose()
    try:
        await s.write(b"x")
    except ClosedResourceError:
        pass
    else:
        raise AssertionError("write after aclose must raise ClosedResourceError")


async def _sub_stream_close_then_read(a: Host, b: Host, peer: PeerID) -> None:
    s = await a.open_stream(peer, ECHO_PROTOCOL)
    msg = os.urandom(100_000)
    await s.write(msg)
    await s.close_write()
    assert await s.read() == msg  # reading continues after our half-close
    await assert_eof(s)
    await s.aclose()
    try:
        await s.readinto(bytearray(4))
    except ClosedResourceError:
        pass
    else:
        raise AssertionError("readinto after aclose must raise ClosedResourceError")


async def _sub_stress(
    a: Host,
    b: Host,
    peer: PeerID,
    n_streams: int = 1000,
    n_msgs: int = 10,
    size: int = 2048,
    concurrency: int = 1000,
) -> None:
    sem = asyncio.Semaphore(concurrency)
    pool = os.urandom(size * 64)

    async def one(i: int) -> None:
        async with sem:
            s = await a.open_stream(peer, ECHO_PROTOCOL)
            msgs = [pool[(i * 7 + k) % 63 * size :][:size] for k in range(n_msgs)]

            async def write_all() -> None:
                for m in msgs:
                    await s.write(m)
                await s.close_write()

            async with asyncio.TaskGroup() as tg:
                tg.create_task(write_all())
                for k, m in enumerate(msgs):
                    got = await recv_exactly(s, size)
                    assert got == m, f"stream {i} message {k} corrupted"
            await assert_eof(s, times=1)
            await s.aclose()

    async with asyncio.TaskGroup() as tg:
        for i in range(n_streams):
            tg.create_task(one(i))


async def _sub_both_directions(a: Host, b: Host, peer: PeerID, n: int = 100) -> None:
    async def one(src: Host, dst: PeerID, i: int) -> None:
        s = await src.open_stream(dst, ECHO_PROTOCOL)
        msg = f"{src.peer_id}:{i}:".encode() * 8
        await s.write(msg)
        await s.close_write()
        assert await s.read() == msg
        await s.aclose()

    async with asyncio.TaskGroup() as tg:
        for i in range(n):
            tg.create_task(one(a, peer, i))
            tg.create_task(one(b, a.peer_id, i))


async def _sub_stream_left_open(a: Host, b: Host, peer: PeerID) -> None:
    held: list[Stream] = []

    async def hold(s: Stream) -> None:
        held.append(s)
        await echo_handler(s)

    b.set_handler(HOLD_PROTOCOL, hold)
    streams = []
    for _ in range(10):
        s = await a.open_stream(peer, HOLD_PROTOCOL)
        await s.write(b"left open")
        assert await recv_exactly(s, 9) == b"left open"
        streams.append(s)
    conn = a.connection(peer)
    assert conn is not None
    await a.disconnect(peer)
    async with asyncio.timeout(10):
        await conn.closed
    for s in streams:
        for op, name in ((s.write(b"x"), "write"), (s.read(), "read")):
            try:
                await op
            except (ConnectionClosedError, StreamResetError, ClosedResourceError):
                pass
            else:
                raise AssertionError(f"{name} on a stream of a closed connection must raise")
        await s.aclose()
    # the listener's handlers end (their streams fail) and its connection goes away
    await wait_until(lambda: b.connection(a.peer_id) is None, "listener to drop the connection")
    await wait_until(
        lambda: all(s.is_closed for s in held), "listener's streams to fail after the close"
    )
    assert a.connection(peer) is None


# -- registry ---------------------------------------------------------------------------

_MUXER_SUBTESTS: dict[str, Callable[..., Awaitable[None]]] = {
    "simple_write": _sub_simple_write,
    "stream_reset": _sub_stream_reset,
    "write_after_close": _sub_write_after_close,
    "stream_close_then_read": _sub_stream_close_then_read,
    "stress_1conn_1000stream_10msg": _sub_stress,
    "many_streams_both_directions": _sub_both_directions,
    "stream_left_open": _sub_stream_left_open,
}
#: Names of :func:`check_muxer`'s sub-tests, in the order they run.
MUXER_SUBTESTS: tuple[str, ...] = tuple(_MUXER_SUBTESTS)
