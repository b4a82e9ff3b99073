"""The simulated-time loop (fastp2p.testing.simclock) and the memory transport on it."""

from __future__ import annotations

import asyncio
import time

import pytest

from fastp2p.multiaddr import Multiaddr
from fastp2p.testing.simclock import VirtualClockLoop
from fastp2p.transport.memory import MemoryConnection, MemoryHub, MemoryTransport


def run(coro):  # type: ignore[no-untyped-def]
    with asyncio.Runner(loop_factory=VirtualClockLoop) as r:
        return r.run(coro)


def test_idle_time_is_skipped() -> None:
    async def main() -> float:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await asyncio.sleep(3600)
        return loop.time() - t0

    w0 = time.monotonic()
    assert run(main()) == pytest.approx(3600)
    assert time.monotonic() - w0 < 5


def test_busy_loop_does_not_advance_the_clock() -> None:
    # 0.2 s of real CPU work in small slices under a 10 ms timeout: the work keeps
    # callbacks ready, so simulated time stands still and the timeout never fires
    async def main() -> float:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        async with asyncio.timeout(0.01):
            end = time.monotonic() + 0.2
            while time.monotonic() < end:
                await asyncio.sleep(0)
        return loop.time() - t0

    assert run(main()) == 0.0


def test_timers_fire_in_order_and_at_their_time() -> None:
    async def main() -> list[tuple[str, float]]:
        loop = asyncio.get_running_loop()
        seen: list[tuple[str, float]] = []
        done = loop.create_future()
        for name, delay in (("c", 3.0), ("a", 1.0), ("b", 2.0)):
            loop.call_later(delay, lambda n=name: seen.append((n, loop.time())))
        loop.call_later(4.0, done.set_result, None)
        await done
        return seen

    assert run(main()) == [("a", 1.0), ("b", 2.0), ("c", 3.0)]


def test_timeout_fires_when_the_simulated_peer_is_silent() -> None:
    async def main() -> float:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(2.0):
                await loop.create_future()  # never answered
        return loop.time() - t0

    assert run(main()) == pytest.approx(2.0)


def test_memory_transport_keeps_byte_order_with_latency() -> None:
    # writes made at the same simulated instant are due at the same instant: the
    # transport must still deliver them in order (the loop's timer heap does not)
    async def main() -> bytes:
        t = MemoryTransport(MemoryHub(), latency=0.001)
        accepted: asyncio.Queue[MemoryConnection] = asyncio.Queue()

        async def on_connection(conn: MemoryConnection) -> None:  # type: ignore[override]
            await accepted.put(conn)

        listener = await t.listen(Multiaddr("/memory/0"), on_connection)  # type: ignore[arg-type]
        client = await t.dial(listener.addrs[0])
        server = await accepted.get()
        for i in range(200):
            client.write(bytes([i]))
        client.close()
        data = b""
        while chunk := await server.read_some():
            data += chunk
        await listener.aclose()
        return data

    assert run(main()) == bytes(range(200))
