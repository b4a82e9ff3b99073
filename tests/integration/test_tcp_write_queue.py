"""TcpConnection's write queue, over real loopback TCP, on asyncio's loop and uvloop.

The first write of a loop pass leaves at once; the writes after it in the same pass
are queued in order (small ones copied into one buffer, larger ones by reference)
and leave in one ``writelines`` (one writev on uvloop) at the end of the pass, or as
soon as ``QUEUE_MAX`` bytes are queued.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import pytest

from fastp2p.multiaddr import Multiaddr
from fastp2p.transport.tcp import COALESCE_MAX, QUEUE_MAX, TcpConnection, TcpTransport
from tests.integration.sends import SendRecorder, recording_sends


def _loops() -> list[Any]:
    out: list[Any] = [pytest.param(asyncio.new_event_loop, id="asyncio")]
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a test dependency
        return out
    return [*out, pytest.param(uvloop.new_event_loop, id="uvloop")]


@contextlib.asynccontextmanager
async def tcp_pair() -> AsyncIterator[tuple[TcpConnection, TcpConnection]]:
    """(dialled, accepted) raw TCP connections over loopback; the listener is
    closed on the way out."""
    accepted: asyncio.Queue[TcpConnection] = asyncio.Queue()

    async def on_conn(raw: Any) -> None:
        await accepted.put(raw)

    transport = TcpTransport()
    listener = await transport.listen(Multiaddr("/ip4/127.0.0.1/tcp/0"), on_conn)
    try:
        conn = await transport.dial(listener.addrs[0])
        yield conn, await accepted.get()
    finally:
        await listener.aclose()


async def _pair(
    body: Callable[[TcpConnection, SendRecorder], Coroutine[Any, Any, None]], expect: int
) -> bytes:
    """Run ``body`` on a dialled connection; return the first ``expect`` bytes the
    listener received."""
    async with tcp_pair() as (conn, peer):
        # The listener reads in push mode, as a secured connection does: the
        # handshake-phase inbox is bounded (MAX_INBOX) below what some bodies send.
        got = bytearray()
        arrived = asyncio.Event()
        lost: list[BaseException | None] = []

        def on_data(view: memoryview) -> None:
            got.extend(view)
            if len(got) >= expect:
                arrived.set()

        def on_lost(exc: BaseException | None) -> None:
            lost.append(exc)
            arrived.set()

        got += peer.start_push(on_data, on_lost)
        with recording_sends(conn) as rec:
            await body(conn, rec)
        async with asyncio.timeout(10):
            while len(got) < expect:
                await arrived.wait()
                arrived.clear()
                assert not lost, f"the listener saw the connection end early: {lost}"
        conn.close()
        peer.close()
        return bytes(got)


def _run(loop_factory: Any, coro: Coroutine[Any, Any, bytes]) -> bytes:
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(coro)


@pytest.mark.parametrize("loop_factory", _loops())
def test_writes_after_the_first_of_a_pass_leave_in_one_writelines_in_order(loop_factory: Any) -> None:
    a = os.urandom(100)
    b = os.urandom(COALESCE_MAX + 4000)  # queued by reference
    c = bytearray(os.urandom(50))  # copied: the caller reuses it below
    d = memoryview(os.urandom(40_000))
    e = os.urandom(60)
    want = a + b + bytes(c) + bytes(d) + e

    async def body(conn: TcpConnection, rec: SendRecorder) -> None:
        conn.write(a)  # the pass's first write: at once
        conn.write(b)
        conn.write(c)
        c[:] = b"\x00" * len(c)  # a queued small write was copied
        conn.write(d)
        conn.write(e)
        assert rec.calls == [("write", [100])]
        for _ in range(3):
            await asyncio.sleep(0)
        assert rec.calls == [("write", [100]), ("writelines", [len(b), 50, len(d), 60])]

    assert _run(loop_factory, _pair(body, len(want))) == want


@pytest.mark.parametrize("loop_factory", _loops())
def test_a_full_queue_leaves_before_the_pass_ends(loop_factory: Any) -> None:
    part = os.urandom(QUEUE_MAX // 4)
    n = 1 + 4 + 2

    async def body(conn: TcpConnection, rec: SendRecorder) -> None:
        for _ in range(n):  # one pass
            conn.write(part)
        # the first at once, four reach QUEUE_MAX and leave, two wait for the pass's end
        assert rec.calls == [("write", [len(part)]), ("writelines", [len(part)] * 4)]
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert rec.calls[2:] == [("writelines", [len(part)] * 2)]

    assert _run(loop_factory, _pair(body, n * len(part))) == part * n


@pytest.mark.parametrize("loop_factory", _loops())
def test_hold_past_tasks_lets_a_new_task_join_the_pass_once(loop_factory: Any) -> None:
    """A new stream's handler task, made after the pass's end was scheduled, writes
    before the pass's bytes leave (its answer joins the queued acknowledgment); a
    task made in that extra turn does not hold them any longer."""
    a, b, c, d = (os.urandom(n) for n in (100, 200, 300, 400))

    async def body(conn: TcpConnection, rec: SendRecorder) -> None:
        async def late() -> None:
            conn.write(d)
            conn.hold_past_tasks()  # the pass already waited once: no more

        async def handler() -> None:
            conn.write(c)
            asyncio.get_running_loop().create_task(late())

        conn.write(a)  # the pass's first write: at once, and its end is scheduled
        conn.write(b)
        asyncio.get_running_loop().create_task(handler())
        conn.hold_past_tasks()
        conn.hold_past_tasks()  # (as many streams opening in one read)
        for _ in range(4):
            await asyncio.sleep(0)
        # b and c in one buffer, after the handler's step; d in the next pass
        assert rec.calls == [("write", [100]), ("write", [500]), ("write", [400])]

    assert _run(loop_factory, _pair(body, 1000)) == a + b + c + d


@pytest.mark.parametrize("loop_factory", _loops())
def test_close_in_the_same_pass_sends_what_is_queued(loop_factory: Any) -> None:
    parts = [os.urandom(30_000) for _ in range(3)]

    async def body(conn: TcpConnection, rec: SendRecorder) -> None:
        for p in parts:
            conn.write(p)
        conn.close()  # graceful: the queued bytes go first
        assert rec.calls == [("write", [30_000]), ("writelines", [30_000, 30_000])]

    assert _run(loop_factory, _pair(body, 90_000)) == b"".join(parts)


def test_event_loops_in_two_threads_write_at_once() -> None:
    """Each connection's end-of-pass marker runs in a context of its own: one shared
    by all connections would be entered by two loops' threads at once
    (RuntimeError inside the loop, and the queued bytes would never leave)."""
    passes, part = 1000, b"x" * 60  # under the handshake inbox bound (MAX_INBOX)
    results: list[bytes] = []
    errors: list[BaseException] = []

    async def body(conn: TcpConnection, rec: SendRecorder) -> None:
        for _ in range(passes):
            conn.write(part)
            conn.write(part)  # queued: the pass's end sends it
            await asyncio.sleep(0)

    def run() -> None:
        try:
            results.append(_run(asyncio.new_event_loop, _pair(body, 2 * passes * len(part))))
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert results == [part * (2 * passes)] * 2
