"""Helpers shared by the stream and muxer conformance suites (private)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection
from contextlib import AbstractAsyncContextManager
from typing import Any

from fastp2p.errors import StreamResetError
from fastp2p.host import Host
from fastp2p.peer import PeerID
from fastp2p.proto.ping import PROTOCOL_ID as PING_PROTOCOL_ID
from fastp2p.stream import Stream

#: Protocol id served by ``stream_pair`` and the echo of ``check_muxer``.
CONFORMANCE_PROTOCOL = "/fastp2p/conformance/1.0.0"
ECHO_PROTOCOL = "/fastp2p/conformance/echo/1.0.0"
RESET_PROTOCOL = "/fastp2p/conformance/reset/1.0.0"
HOLD_PROTOCOL = "/fastp2p/conformance/hold/1.0.0"
PING_PROTOCOL = PING_PROTOCOL_ID

#: ``make_pair()`` for :func:`check_stream`: yields two connected streams ``(a, b)``.
MakeStreamPair = Callable[[], AbstractAsyncContextManager[tuple[Stream, Stream]]]
#: ``make_host_pair()`` for :func:`check_muxer`: yields ``(dialer, listener, listener_id)``.
MakeHostPair = Callable[[], AbstractAsyncContextManager[tuple[Host, Host, PeerID]]]


async def recv_exactly(stream: Stream, n: int, *, chunk: int = 65537) -> bytes:
    """Read exactly ``n`` bytes with ``readinto`` (odd buffer sizes on purpose)."""
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = await stream.readinto(view[got : got + chunk])
        assert k > 0, f"unexpected end of stream after {got} of {n} bytes"
        got += k
    return bytes(buf)


async def assert_eof(stream: Stream, *, times: int = 3) -> None:
    """``readinto`` returns 0 repeatedly and ``read`` returns b"" at end of stream."""
    buf = bytearray(16)
    for _ in range(times):
        assert await stream.readinto(buf) == 0, "readinto must return 0 at end of stream"
    assert await stream.read() == b"", "read() must return b'' at end of stream"
    assert await stream.read(10) == b"", "read(n) must return b'' at end of stream"


async def until_pending(task: asyncio.Task[Any]) -> None:
    """Let ``task`` run one step; assert it is suspended (blocked) afterwards."""
    await asyncio.sleep(0)
    assert not task.done(), f"expected {task.get_coro()!r} to block, it completed"


async def wait_until(cond: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    try:
        async with asyncio.timeout(timeout):
            while not cond():
                await asyncio.sleep(0.005)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout} s waiting for: {what}") from None


async def expect_reset(op: Awaitable[Any], *, remote: bool, what: str) -> StreamResetError:
    """Await ``op``; it must raise ``StreamResetError`` with ``.remote is remote``."""
    try:
        res = await op
    except StreamResetError as exc:
        assert exc.remote is remote, (
            f"{what}: StreamResetError.remote is {exc.remote}, want {remote}"
        )
        return exc
    raise AssertionError(f"{what}: expected StreamResetError, got {res!r}")


async def echo_handler(stream: Stream) -> None:
    """Echo until EOF, then half-close (the handler's return closes the stream)."""
    buf = bytearray(64 * 1024)
    view = memoryview(buf)
    while n := await stream.readinto(buf):
        await stream.write(view[:n])
    await stream.close_write()


def select_names(
    names: tuple[str, ...], only: Collection[str] | None, skip: Collection[str]
) -> list[str]:
    unknown = (set(only or ()) | set(skip)) - set(names)
    if unknown:
        raise ValueError(f"unknown sub-check names: {sorted(unknown)}; known: {list(names)}")
    return [n for n in names if (only is None or n in only) and n not in skip]
