"""The two-way byte-stream contract of :class:`fastp2p.Stream` (trio's ``check_two_way_stream``).

:func:`check_stream` runs every sub-check on fresh stream pairs from a factory
such as :func:`stream_pair`; it raises ``AssertionError`` (or the unexpected
exception) on the first violation, each sub-check under its own timeout.
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
from fastp2p.errors import BusyResourceError, ClosedResourceError, StreamResetError
from fastp2p.host import Host
from fastp2p.peer import PeerID
from fastp2p.stream import Stream
from fastp2p.testing._helpers import (
    CONFORMANCE_PROTOCOL,
    MakeHostPair,
    MakeStreamPair,
    assert_eof,
    expect_reset,
    recv_exactly,
    select_names,
    until_pending,
)

__all__ = ["STREAM_CHECKS", "check_stream", "stream_pair"]


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
    for name in select_names(STREAM_CHECKS, only, skip):
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
    assert await recv_exactly(b, 1) == b"x"
    await b.write(b"y")
    assert await recv_exactly(a, 1) == b"y"
    # every buffer type, interleaved, several messages in flight
    msgs: list[Any] = [b"hello", bytearray(b"world"), memoryview(b"!!" * 100)]
    for m in msgs:
        await a.write(m)
        await b.write(m)
    expect = b"".join(bytes(m) for m in msgs)
    assert await recv_exactly(b, len(expect), chunk=7) == expect
    assert await a.readexactly(len(expect)) == expect
    # a memoryview that is not bytes-shaped is sent as its raw bytes
    arr = memoryview(bytearray(range(16))).cast("I")
    await a.write(arr)
    assert await recv_exactly(b, 16) == bytes(range(16))


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
        got = await recv_exactly(s, n, chunk=65537)
        await assert_eof(s, times=1)
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
    assert await recv_exactly(a, 2) == b"ok"


async def _check_eof_and_half_close(a: Stream, b: Stream) -> None:
    buf = bytearray(16)
    # EOF reaches a reader that is already waiting
    pending = asyncio.create_task(b.readinto(buf))
    await until_pending(pending)
    await a.write(b"hello")
    assert await pending == 5 and buf[:5] == b"hello"
    pending = asyncio.create_task(b.readinto(buf))
    await until_pending(pending)
    await a.write(b" world")
    await a.close_write()
    got = await pending
    rest = await b.read()  # to EOF
    assert bytes(buf[:got]) + rest == b" world"
    await assert_eof(b)
    # half-close: the other direction still works both ways of reading
    await b.write(b"still open")
    assert await recv_exactly(a, 10) == b"still open"
    await b.write(b"more")
    await b.close_write()
    assert await a.read() == b"more"
    await assert_eof(a)
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
    await assert_eof(b)
    await b.write(b"reply")  # the peer's direction is unaffected
    assert await recv_exactly(a, 5) == b"reply"


async def _check_reset(a: Stream, b: Stream) -> None:
    await a.write(b"before")
    assert await recv_exactly(b, 6) == b"before"
    a.reset()
    a.reset()  # idempotent
    assert a.is_closed
    await expect_reset(b.readinto(bytearray(8)), remote=True, what="peer readinto after reset")
    await expect_reset(b.read(), remote=True, what="peer read after reset")
    await expect_reset(b.write(b"x"), remote=True, what="peer write after reset")
    await expect_reset(a.write(b"x"), remote=False, what="own write after reset")
    await expect_reset(a.readinto(bytearray(8)), remote=False, what="own readinto after reset")
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
    await until_pending(peer_read)
    await until_pending(own_read)
    a.reset()
    await expect_reset(own_read, remote=False, what="own pending readinto")
    await expect_reset(peer_read, remote=True, what="peer pending readinto")


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
    await until_pending(read)
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
    assert await recv_exactly(b, 5) == b"after"
    assert await recv_exactly(a, 4) == b"pong"


async def _check_concurrent_readinto_is_busy(a: Stream, b: Stream) -> None:
    buf = bytearray(8)
    pending = asyncio.create_task(b.readinto(buf))
    try:
        await until_pending(pending)
        for op in (b.readinto(bytearray(8)), b.read(8), b.read()):
            try:
                await op
            except BusyResourceError:
                pass
            else:
                raise AssertionError("a second concurrent read must raise BusyResourceError")
        # writing while a read is pending is allowed (full duplex)
        await b.write(b"dup")
        assert await recv_exactly(a, 3) == b"dup"
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
    await assert_eof(b)
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
    await assert_eof(b)


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
    await until_pending(t)
    t.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await t
    assert t.cancelled(), "a cancelled pending readinto must raise CancelledError"
    await a.write(b"after-cancel")
    assert await recv_exactly(b, 12) == b"after-cancel"
    # a timeout around readinto, then data arrives
    try:
        async with asyncio.timeout(0.02):
            await b.readinto(buf)
        raise AssertionError("readinto returned with no data sent")
    except TimeoutError:
        pass
    await a.write(b"late")
    assert await recv_exactly(b, 4) == b"late"
    # a cancelled read(n) consumes nothing either
    t2 = asyncio.create_task(b.read(4))
    await until_pending(t2)
    t2.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await t2
    await a.write(b"kept")
    await a.close_write()
    assert await b.read() == b"kept"
    await assert_eof(b)
    # the cancelled reader left the other direction intact too
    await b.write(b"rev")
    assert await recv_exactly(a, 3) == b"rev"


# -- check_muxer -------------------------------------------------------------------------


# -- registry ---------------------------------------------------------------------------

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
