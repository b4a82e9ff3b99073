"""Conformance checks for fastp2p streams and stream muxers.

Two reusable suites, meant to be run by fastp2p's own tests and by anyone who
builds a transport, a muxer or a stream wrapper on top of fastp2p:

- :func:`check_stream` ports trio's ``check_two_way_stream``: the byte-stream
  contract of one :class:`fastp2p.Stream` pair (data, EOF, half-close, reset,
  conflict detection, cancellation).
- :func:`check_muxer` ports go-libp2p's ``p2p/muxer/testsuite`` (``SubtestAll``)
  onto a pair of connected :class:`fastp2p.Host` objects: many streams on one
  connection, resets, closes, a 1000-stream stress run, and that every stream
  table is empty again afterwards.

Both raise ``AssertionError`` (or the unexpected exception) on the first
violation; every sub-check runs under its own ``asyncio.timeout``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from contextlib import AbstractAsyncContextManager
from typing import Any

from fastp2p.config import HostConfig
from fastp2p.errors import (
    BusyResourceError,
    ClosedResourceError,
    ConnectionClosedError,
    StreamResetError,
)
from fastp2p.host import Host
from fastp2p.peer import PeerID
from fastp2p.proto.ping import PROTOCOL_ID as PING_PROTOCOL_ID
from fastp2p.stream import Stream

__all__ = [
    "CONFORMANCE_PROTOCOL",
    "MUXER_SUBTESTS",
    "MakeHostPair",
    "MakeStreamPair",
    "STREAM_CHECKS",
    "assert_stream_tables_empty",
    "check_muxer",
    "check_stream",
    "stream_pair",
]

#: Protocol id served by :func:`stream_pair` and the echo of :func:`check_muxer`.
CONFORMANCE_PROTOCOL = "/fastp2p/conformance/1.0.0"
_ECHO_PROTOCOL = "/fastp2p/conformance/echo/1.0.0"
_RESET_PROTOCOL = "/fastp2p/conformance/reset/1.0.0"
_HOLD_PROTOCOL = "/fastp2p/conformance/hold/1.0.0"
_PING_PROTOCOL = PING_PROTOCOL_ID

#: ``make_pair()`` for :func:`check_stream`: yields two connected streams ``(a, b)``.
MakeStreamPair = Callable[[], AbstractAsyncContextManager[tuple[Stream, Stream]]]
#: ``make_host_pair()`` for :func:`check_muxer`: yields ``(dialer, listener, listener_id)``.
MakeHostPair = Callable[[], AbstractAsyncContextManager[tuple[Host, Host, PeerID]]]


# -- helpers ---------------------------------------------------------------------------


async def _recv_exactly(stream: Stream, n: int, *, chunk: int = 65537) -> bytes:
    """Read exactly ``n`` bytes with ``readinto`` (odd buffer sizes on purpose)."""
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = await stream.readinto(view[got : got + chunk])
        assert k > 0, f"unexpected end of stream after {got} of {n} bytes"
        got += k
    return bytes(buf)


async def _assert_eof(stream: Stream, *, times: int = 3) -> None:
    """``readinto`` returns 0 repeatedly and ``read`` returns b"" at end of stream."""
    buf = bytearray(16)
    for _ in range(times):
        assert await stream.readinto(buf) == 0, "readinto must return 0 at end of stream"
    assert await stream.read() == b"", "read() must return b'' at end of stream"
    assert await stream.read(10) == b"", "read(n) must return b'' at end of stream"


async def _until_pending(task: asyncio.Task[Any]) -> None:
    """Let ``task`` run one step; assert it is suspended (blocked) afterwards."""
    await asyncio.sleep(0)
    assert not task.done(), f"expected {task.get_coro()!r} to block, it completed"


async def _wait_for(cond: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    try:
        async with asyncio.timeout(timeout):
            while not cond():
                await asyncio.sleep(0.005)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout} s waiting for: {what}") from None


async def _echo(stream: Stream) -> None:
    """Echo until EOF, then half-close (the handler's return closes the stream)."""
    buf = bytearray(64 * 1024)
    view = memoryview(buf)
    while n := await stream.readinto(buf):
        await stream.write(view[:n])
    await stream.close_write()


@contextlib.asynccontextmanager
async def stream_pair(
    config: HostConfig | None = None,
    *,
    make_host_pair: MakeHostPair | None = None,
) -> AsyncIterator[tuple[Stream, Stream]]:
    """Two connected streams over a fresh pair of Hosts (TCP loopback by default).

    A factory suitable for :func:`check_stream`, e.g.
    ``functools.partial(stream_pair, HostConfig(muxers=("/mplex/6.7.0",)))``.

    Args:
        config: the ``HostConfig`` of both hosts (its ``muxers`` pick the muxer).
        make_host_pair: an alternative factory of connected hosts, yielding
            ``(dialer, listener, listener_id)`` like ``fastp2p.testing.host_pair``.

    Yields:
        ``(a, b)``: ``a`` opened by the dialer, ``b`` the listener's end of it,
        both negotiated to :data:`CONFORMANCE_PROTOCOL`. Both are closed (or
        already reset) and both hosts stopped when the block exits.
    """
    if make_host_pair is None:
        from fastp2p.testing import host_pair

        factory: AbstractAsyncContextManager[tuple[Host, Host, PeerID]] = host_pair(config)
    else:
        factory = make_host_pair()
    async with factory as (dialer, listener, peer):
        loop = asyncio.get_running_loop()
        accepted: asyncio.Future[Stream] = loop.create_future()
        release = asyncio.Event()

        async def handler(s: Stream) -> None:
            if accepted.done():
                s.reset()
                return
            accepted.set_result(s)
            await release.wait()  # the host closes ``s`` when the handler returns

        listener.set_handler(CONFORMANCE_PROTOCOL, handler)
        a = await dialer.open_stream(peer, CONFORMANCE_PROTOCOL)
        try:
            async with asyncio.timeout(10):
                b = await accepted
            yield a, b
        finally:
            release.set()
            with contextlib.suppress(Exception):
                await a.aclose()
            if accepted.done():
                with contextlib.suppress(Exception):
                    await accepted.result().aclose()


# -- check_stream ------------------------------------------------------------------------


async def check_stream(
    make_pair: MakeStreamPair,
    *,
    large_size: int = 4 << 20,
    timeout: float = 30.0,
    only: Collection[str] | None = None,
    skip: Collection[str] = (),
) -> None:
    """Check the two-way byte-stream contract of ``fastp2p.Stream`` (trio style).

    Each sub-check gets a fresh pair from ``make_pair`` and its own timeout.
    Checked: data both ways; ``large_size`` bytes each way at once, written in
    one call and in odd-sized pieces while the peer reads, byte-exact; a
    zero-length write is a no-op; EOF after ``close_write`` (``readinto``
    returns 0 repeatedly, ``read`` returns b"") while the other direction stays
    open; ``close_write`` is idempotent and a later ``write`` raises
    ``ClosedResourceError``; ``reset`` raises ``StreamResetError`` on both
    sides with the right ``.remote``, waking pending reads and failing a
    write blocked on backpressure (go-libp2p); concurrent ``readinto`` /
    ``write`` on one stream raise ``BusyResourceError``; ``aclose`` is
    idempotent, fails pending reads and writes and later reads with
    ``ClosedResourceError`` (trio); ``async with`` closes (or, when the block raises, resets) the stream; a
    cancelled ``readinto`` or ``read(n)`` consumes nothing and leaves the
    stream usable.

    Args:
        make_pair: a factory of async context managers, each yielding two
            connected streams ``(a, b)``; see :func:`stream_pair`.
        large_size: bytes sent each way by the large-transfer check.
        timeout: seconds allowed per sub-check.
        only: run only these sub-checks (names from :data:`STREAM_CHECKS`).
        skip: sub-checks not to run.

    Raises:
        ValueError: ``only`` or ``skip`` names an unknown sub-check.
        AssertionError: a check failed (the message says which).
        TimeoutError: a sub-check hung for ``timeout`` seconds.

    Cancellation: the pair in use is closed by its context manager.
    """
    for name in _select_names(STREAM_CHECKS, only, skip):
        check = _STREAM_CHECKS[name]
        args = (large_size,) if check is _check_large_concurrent else ()
        try:
            async with asyncio.timeout(timeout), make_pair() as (a, b):
                await check(a, b, *args)
        except Exception as exc:
            exc.add_note(f"in fastp2p.testing.check_stream sub-check {name!r}")
            raise


async def _check_send_both_ways(a: Stream, b: Stream) -> None:
    await a.write(b"x")
    assert await _recv_exactly(b, 1) == b"x"
    await b.write(b"y")
    assert await _recv_exactly(a, 1) == b"y"
    # every buffer type, interleaved, several messages in flight
    msgs: list[Any] = [b"hello", bytearray(b"world"), memoryview(b"!!" * 100)]
    for m in msgs:
        await a.write(m)
        await b.write(m)
    expect = b"".join(bytes(m) for m in msgs)
    assert await _recv_exactly(b, len(expect), chunk=7) == expect
    assert await a.readexactly(len(expect)) == expect
    # a memoryview that is not bytes-shaped is sent as its raw bytes
    arr = memoryview(bytearray(range(16))).cast("I")
    await a.write(arr)
    assert await _recv_exactly(b, 16) == bytes(range(16))


async def _check_large_concurrent(a: Stream, b: Stream, size: int = 4 << 20) -> None:
    data_ab = os.urandom(size)
    data_ba = os.urandom(size)

    async def send(s: Stream, data: bytes) -> None:
        view = memoryview(data)
        half = len(view) // 2
        await s.write(view[:half])  # one big write
        off = half
        rng = random.Random(len(data))
        while off < len(view):  # then odd-sized pieces
            n = rng.randint(1, 300_000)
            await s.write(view[off : off + n])
            off += n
        await s.close_write()

    async def recv(s: Stream, n: int) -> bytes:
        got = await _recv_exactly(s, n, chunk=65537)
        await _assert_eof(s, times=1)
        return got

    async with asyncio.TaskGroup() as tg:
        tg.create_task(send(a, data_ab))
        tg.create_task(send(b, data_ba))
        at_b = tg.create_task(recv(b, size))
        at_a = tg.create_task(recv(a, size))
    assert at_b.result() == data_ab, "a -> b transfer corrupted"
    assert at_a.result() == data_ba, "b -> a transfer corrupted"


async def _check_zero_length_write(a: Stream, b: Stream) -> None:
    await a.write(b"")
    await a.write(memoryview(b""))
    await a.write(bytearray())
    buf = bytearray(8)
    reader = asyncio.create_task(b.readinto(buf))
    try:
        await asyncio.sleep(0.05)
        assert not reader.done(), (
            "a zero-length write must be a no-op, but the peer's readinto returned "
            f"{reader.result() if not reader.exception() else reader.exception()!r}"
        )
        await a.write(b"z")
        assert await reader == 1 and buf[:1] == b"z"
    finally:
        reader.cancel()
    # and a zero-length write does not disturb the other direction
    await b.write(b"")
    await b.write(b"ok")
    assert await _recv_exactly(a, 2) == b"ok"


async def _check_eof_and_half_close(a: Stream, b: Stream) -> None:
    buf = bytearray(16)
    # EOF reaches a reader that is already waiting
    pending = asyncio.create_task(b.readinto(buf))
    await _until_pending(pending)
    await a.write(b"hello")
    assert await pending == 5 and buf[:5] == b"hello"
    pending = asyncio.create_task(b.readinto(buf))
    await _until_pending(pending)
    await a.write(b" world")
    await a.close_write()
    got = await pending
    rest = await b.read()  # to EOF
    assert bytes(buf[:got]) + rest == b" world"
    await _assert_eof(b)
    # half-close: the other direction still works both ways of reading
    await b.write(b"still open")
    assert await _recv_exactly(a, 10) == b"still open"
    await b.write(b"more")
    await b.close_write()
    assert await a.read() == b"more"
    await _assert_eof(a)
    assert not a.is_closed and not b.is_closed


async def _check_close_write_idempotent_then_write_fails(a: Stream, b: Stream) -> None:
    await a.write(b"data")
    await a.close_write()
    await a.close_write()
    for payload in (b"more", b""):
        try:
            await a.write(payload)
        except ClosedResourceError:
            pass
        else:
            raise AssertionError(
                f"write({payload!r}) after close_write must raise ClosedResourceError"
            )
    assert await b.read() == b"data"
    await _assert_eof(b)
    await b.write(b"reply")  # the peer's direction is unaffected
    assert await _recv_exactly(a, 5) == b"reply"


async def _expect_reset(op: Awaitable[Any], *, remote: bool, what: str) -> StreamResetError:
    try:
        res = await op
    except StreamResetError as exc:
        assert exc.remote is remote, (
            f"{what}: StreamResetError.remote is {exc.remote}, want {remote}"
        )
        return exc
    raise AssertionError(f"{what}: expected StreamResetError, got {res!r}")


async def _check_reset(a: Stream, b: Stream) -> None:
    await a.write(b"before")
    assert await _recv_exactly(b, 6) == b"before"
    a.reset()
    a.reset()  # idempotent
    assert a.is_closed
    await _expect_reset(b.readinto(bytearray(8)), remote=True, what="peer readinto after reset")
    await _expect_reset(b.read(), remote=True, what="peer read after reset")
    await _expect_reset(b.write(b"x"), remote=True, what="peer write after reset")
    await _expect_reset(a.write(b"x"), remote=False, what="own write after reset")
    await _expect_reset(a.readinto(bytearray(8)), remote=False, what="own readinto after reset")
    assert b.is_closed
    # closing a reset stream never raises
    await a.aclose()
    await b.aclose()
    await a.aclose()


async def _expect_raises(
    op: Awaitable[Any], exc_type: type[BaseException], what: str, *, within: float | None = None
) -> BaseException:
    """Await ``op``; it must raise ``exc_type`` (within ``within`` seconds if given)."""
    try:
        async with asyncio.timeout(within):
            res = await op
    except exc_type as exc:
        return exc
    except TimeoutError:
        raise AssertionError(f"{what}: still blocked after {within} s") from None
    raise AssertionError(f"{what}: expected {exc_type.__name__}, got {res!r}")


async def _check_reset_wakes_pending_reads(a: Stream, b: Stream) -> None:
    # a pending read on the peer and a pending read on the resetting side both wake up
    peer_read = asyncio.create_task(b.readinto(bytearray(8)))
    own_read = asyncio.create_task(a.readinto(bytearray(8)))
    await _until_pending(peer_read)
    await _until_pending(own_read)
    a.reset()
    await _expect_reset(own_read, remote=False, what="own pending readinto")
    await _expect_reset(peer_read, remote=True, what="peer pending readinto")


async def _check_reset_fails_pending_write(a: Stream, b: Stream) -> None:
    # go-libp2p: a Write blocked when the stream is reset returns ErrReset;
    # trio: a blocked send_all fails when the stream is closed under it.
    blocked, _ = await _block_a_write(a)
    try:
        a.reset()
        exc = await _expect_raises(
            blocked, StreamResetError, "write pending during own reset", within=2
        )
        assert getattr(exc, "remote", None) is False
    finally:
        blocked.cancel()


async def _check_peer_reset_fails_pending_write(a: Stream, b: Stream) -> None:
    blocked, _ = await _block_a_write(b)
    try:
        a.reset()
        exc = await _expect_raises(
            blocked, StreamResetError, "write pending when the peer reset", within=2
        )
        assert getattr(exc, "remote", None) is True
    finally:
        blocked.cancel()


async def _check_aclose_wakes_pending_ops(a: Stream, b: Stream) -> None:
    # trio check_two_way_stream: closing a stream under a blocked receive_some /
    # send_all makes them raise ClosedResourceError.
    read = asyncio.create_task(a.readinto(bytearray(8)))
    await _until_pending(read)
    blocked, _ = await _block_a_write(a)
    try:
        await a.aclose()
        await _expect_raises(read, ClosedResourceError, "readinto pending during aclose", within=1)
        await _expect_raises(blocked, ClosedResourceError, "write pending during aclose", within=1)
    finally:
        read.cancel()
        blocked.cancel()


async def _check_read_after_aclose(a: Stream, b: Stream) -> None:
    # before the peer's EOF arrived
    await a.aclose()
    await _expect_raises(a.readinto(bytearray(4)), ClosedResourceError, "readinto after aclose")
    # after the peer's EOF arrived (the docstring: ClosedResourceError once aclose'd)
    await b.close_write()
    assert await b.read() == b""
    await b.aclose()
    await _expect_raises(
        b.readinto(bytearray(4)), ClosedResourceError, "readinto after EOF and aclose"
    )
    await _expect_raises(b.read(4), ClosedResourceError, "read(n) after EOF and aclose")


async def _block_a_write(s: Stream) -> tuple[asyncio.Task[None], int]:
    """Start writes on ``s`` (peer not reading) until one blocks on backpressure."""
    chunk = bytes(4 << 20)
    sent = 0
    for _ in range(64):
        task = asyncio.create_task(s.write(chunk))
        await asyncio.sleep(0)
        if not task.done():
            return task, sent + len(chunk)
        await task
        sent += len(chunk)
    raise AssertionError("256 MiB written to a peer that does not read: no backpressure")


async def _check_concurrent_write_is_busy(a: Stream, b: Stream) -> None:
    blocked, total = await _block_a_write(a)
    try:
        for payload in (b"x", b""):
            try:
                await a.write(payload)
            except BusyResourceError:
                pass
            else:
                raise AssertionError("a second concurrent write must raise BusyResourceError")
        # the other direction is independent: no conflict
        await b.write(b"pong")
        # drain the peer so the blocked write completes
        got = 0
        buf = bytearray(1 << 20)
        while got < total:
            n = await b.readinto(buf)
            assert n > 0
            assert not any(buf[:n])
            got += n
        await blocked
    finally:
        blocked.cancel()
    assert got == total
    await a.write(b"after")  # the guard was released
    assert await _recv_exactly(b, 5) == b"after"
    assert await _recv_exactly(a, 4) == b"pong"


async def _check_concurrent_readinto_is_busy(a: Stream, b: Stream) -> None:
    buf = bytearray(8)
    pending = asyncio.create_task(b.readinto(buf))
    try:
        await _until_pending(pending)
        for op in (b.readinto(bytearray(8)), b.read(8), b.read()):
            try:
                await op
            except BusyResourceError:
                pass
            else:
                raise AssertionError("a second concurrent read must raise BusyResourceError")
        # writing while a read is pending is allowed (full duplex)
        await b.write(b"dup")
        assert await _recv_exactly(a, 3) == b"dup"
        await a.write(b"q")
        assert await pending == 1 and buf[:1] == b"q"
    finally:
        pending.cancel()
    await a.write(b"r")
    assert await b.read(1) == b"r"  # the guard was released


async def _check_aclose_idempotent(a: Stream, b: Stream) -> None:
    await a.write(b"bye")
    await a.aclose()
    await a.aclose()
    assert a.is_closed
    assert await b.read() == b"bye"
    await _assert_eof(b)
    for op, name in ((a.write(b"x"), "write"), (a.readinto(bytearray(4)), "readinto")):
        try:
            await op
        except ClosedResourceError:
            pass
        else:
            raise AssertionError(f"{name} after aclose must raise ClosedResourceError")
    await a.close_write()  # no-op on a closed stream
    await b.aclose()
    await b.aclose()


async def _check_async_with_closes(a: Stream, b: Stream) -> None:
    async with a as entered:
        assert entered is a
        await a.write(b"ctx")
    assert a.is_closed
    assert await b.read() == b"ctx"
    await _assert_eof(b)


class _Boom(Exception):
    pass


async def _check_async_with_resets_on_error(a: Stream, b: Stream) -> None:
    try:
        async with a:
            await a.write(b"partial")
            raise _Boom
    except _Boom:
        pass
    assert a.is_closed
    # the peer sees a reset, not a clean EOF (it may first read what was sent)
    try:
        async with asyncio.timeout(10):
            while await b.read(1 << 16):
                pass
    except StreamResetError as exc:
        assert exc.remote
    else:
        raise AssertionError("an exception inside `async with stream` must reset the stream")


async def _check_cancelled_read_leaves_stream_usable(a: Stream, b: Stream) -> None:
    buf = bytearray(16)
    # explicit cancel of a pending readinto
    t = asyncio.create_task(b.readinto(buf))
    await _until_pending(t)
    t.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await t
    assert t.cancelled(), "a cancelled pending readinto must raise CancelledError"
    await a.write(b"after-cancel")
    assert await _recv_exactly(b, 12) == b"after-cancel"
    # a timeout around readinto, then data arrives
    try:
        async with asyncio.timeout(0.02):
            await b.readinto(buf)
        raise AssertionError("readinto returned with no data sent")
    except TimeoutError:
        pass
    await a.write(b"late")
    assert await _recv_exactly(b, 4) == b"late"
    # a cancelled read(n) consumes nothing either
    t2 = asyncio.create_task(b.read(4))
    await _until_pending(t2)
    t2.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await t2
    await a.write(b"kept")
    await a.close_write()
    assert await b.read() == b"kept"
    await _assert_eof(b)
    # the cancelled reader left the other direction intact too
    await b.write(b"rev")
    assert await _recv_exactly(a, 3) == b"rev"


# -- check_muxer -------------------------------------------------------------------------


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
    for name in _select_names(MUXER_SUBTESTS, only, skip):
        sub = _MUXER_SUBTESTS[name]
        try:
            async with asyncio.timeout(timeout), make_host_pair() as (a, b, peer):
                a.set_handler(_ECHO_PROTOCOL, _echo)
                b.set_handler(_ECHO_PROTOCOL, _echo)
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
                pings = [s for s in c.streams.values() if s.protocol == _PING_PROTOCOL]
                others = [s for s in c.streams.values() if s.protocol != _PING_PROTOCOL]
                in_session = c._session.stream_count()
                if others or in_session > len(pings):
                    out.append(f"{c!r}: streams={others!r}, session table size={in_session}")
        return out

    try:
        await _wait_for(lambda: not leftovers(), "stream tables to drain", timeout)
    except AssertionError:
        raise AssertionError("stream tables not empty: " + "; ".join(leftovers())) from None


async def _sub_simple_write(a: Host, b: Host, peer: PeerID) -> None:
    s = await a.open_stream(peer, _ECHO_PROTOCOL)
    msg = b"Hello World, this is the simple write subtest" * 8
    await s.write(msg)
    assert await _recv_exactly(s, len(msg)) == msg
    await s.close_write()
    await _assert_eof(s)
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

    b.set_handler(_RESET_PROTOCOL, handler)
    s = await a.open_stream(peer, _RESET_PROTOCOL)
    s.reset()
    exc = await outcome
    assert isinstance(exc, StreamResetError), f"listener write after reset raised {exc!r}"
    assert exc.remote, "the listener's StreamResetError must say the peer reset"
    await _expect_reset(s.write(b"x"), remote=False, what="dialer write after own reset")
    await s.aclose()
    # the connection survives: a new stream works
    await _sub_simple_write(a, b, peer)


async def _sub_write_after_close(a: Host, b: Host, peer: PeerID) -> None:
    s = await a.open_stream(peer, _ECHO_PROTOCOL)
    await s.close_write()
    try:
        await s.write(b"x")
    except ClosedResourceError:
        pass
    else:
        raise AssertionError("write after close_write must raise ClosedResourceError")
    await _assert_eof(s)  # the echo closed its side after our EOF
    await s.aclose()
    try:
        await s.write(b"x")
    except ClosedResourceError:
        pass
    else:
        raise AssertionError("write after aclose must raise ClosedResourceError")


async def _sub_stream_close_then_read(a: Host, b: Host, peer: PeerID) -> None:
    s = await a.open_stream(peer, _ECHO_PROTOCOL)
    msg = os.urandom(100_000)
    await s.write(msg)
    await s.close_write()
    assert await s.read() == msg  # reading continues after our half-close
    await _assert_eof(s)
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
            s = await a.open_stream(peer, _ECHO_PROTOCOL)
            msgs = [pool[(i * 7 + k) % 63 * size :][:size] for k in range(n_msgs)]

            async def write_all() -> None:
                for m in msgs:
                    await s.write(m)
                await s.close_write()

            async with asyncio.TaskGroup() as tg:
                tg.create_task(write_all())
                for k, m in enumerate(msgs):
                    got = await _recv_exactly(s, size)
                    assert got == m, f"stream {i} message {k} corrupted"
            await _assert_eof(s, times=1)
            await s.aclose()

    async with asyncio.TaskGroup() as tg:
        for i in range(n_streams):
            tg.create_task(one(i))


async def _sub_both_directions(a: Host, b: Host, peer: PeerID, n: int = 100) -> None:
    async def one(src: Host, dst: PeerID, i: int) -> None:
        s = await src.open_stream(dst, _ECHO_PROTOCOL)
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
        await _echo(s)

    b.set_handler(_HOLD_PROTOCOL, hold)
    streams = []
    for _ in range(10):
        s = await a.open_stream(peer, _HOLD_PROTOCOL)
        await s.write(b"left open")
        assert await _recv_exactly(s, 9) == b"left open"
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
    await _wait_for(lambda: b.connection(a.peer_id) is None, "listener to drop the connection")
    await _wait_for(
        lambda: all(s.is_closed for s in held), "listener's streams to fail after the close"
    )
    assert a.connection(peer) is None


# -- registry --------------------------------------------------------------------------

_STREAM_CHECKS: dict[str, Callable[..., Awaitable[None]]] = {
    "send_both_ways": _check_send_both_ways,
    "large_concurrent": _check_large_concurrent,
    "zero_length_write": _check_zero_length_write,
    "eof_and_half_close": _check_eof_and_half_close,
    "close_write_idempotent": _check_close_write_idempotent_then_write_fails,
    "reset": _check_reset,
    "reset_wakes_pending_reads": _check_reset_wakes_pending_reads,
    "reset_fails_pending_write": _check_reset_fails_pending_write,
    "peer_reset_fails_pending_write": _check_peer_reset_fails_pending_write,
    "concurrent_readinto_busy": _check_concurrent_readinto_is_busy,
    "concurrent_write_busy": _check_concurrent_write_is_busy,
    "aclose_idempotent": _check_aclose_idempotent,
    "aclose_wakes_pending_ops": _check_aclose_wakes_pending_ops,
    "read_after_aclose": _check_read_after_aclose,
    "async_with_closes": _check_async_with_closes,
    "async_with_resets_on_error": _check_async_with_resets_on_error,
    "cancelled_read": _check_cancelled_read_leaves_stream_usable,
}
#: Names of :func:`check_stream`'s sub-checks, in the order they run.
STREAM_CHECKS: tuple[str, ...] = tuple(_STREAM_CHECKS)

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


def _select_names(
    names: tuple[str, ...], only: Collection[str] | None, skip: Collection[str]
) -> list[str]:
    unknown = (set(only or ()) | set(skip)) - set(names)
    if unknown:
        raise ValueError(f"unknown sub-check names: {sorted(unknown)}; known: {list(names)}")
    return [n for n in names if (only is None or n in only) and n not in skip]
