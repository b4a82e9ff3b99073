"""Small sends of one loop pass are sealed together (NoisePath), over real TCP + Noise.

The first send of a pass leaves at once; the small ones after it in the same pass
are copied and sealed in one Noise frame at the pass's end. Larger sends are
sealed at once, after what was held, so the byte order on every stream holds.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastp2p.config import HostConfig
from fastp2p.testing import host_pair
from fastp2p.transport.conn import DEFER_MAX

PROTO = "/test/batching/1.0.0"
CFG = HostConfig(data_paths=("tcp",))
NOISE_OVERHEAD = 2 + 16  # length prefix + tag
YAMUX_HEADER = 12


async def _collect(stream: Any, n: int, into: asyncio.Future[bytes]) -> None:
    into.set_result(await stream.readexactly(n))


async def test_small_sends_of_one_pass_share_one_noise_frame_and_are_copied() -> None:
    k, size = 40, 100
    got: asyncio.Queue[bytes] = asyncio.Queue()

    async def handler(stream: Any) -> None:
        await stream.write(b"r")  # the stream is open both ways before the timed pass
        await got.put(await stream.readexactly(size))
        await stream.aclose()

    async with asyncio.timeout(30), host_pair(CFG, handlers={PROTO: handler}) as (cli, _srv, peer):
        streams = [await cli.open_stream(peer, PROTO) for _ in range(k)]
        for s in streams:
            assert await s.readexactly(1) == b"r"
        await asyncio.sleep(0.05)  # acks and window updates settled: nothing else to send
        conn = cli.connection(peer)
        before = conn.statistics()["bytes_sent"]
        buf = bytearray(size)
        for i, s in enumerate(streams):  # one synchronous step: one loop pass
            buf[:] = bytes([i]) * size
            assert s.write_nowait(buf) == size
            buf[:] = b"\xff" * size  # reused at once: a held send must have copied it
        for _ in range(3):
            await asyncio.sleep(0)
        sent = conn.statistics()["bytes_sent"] - before
        # the first write alone, then the other 39 in one Noise frame
        frame = YAMUX_HEADER + size
        assert sent == 2 * NOISE_OVERHEAD + k * frame
        received = sorted([await got.get() for _ in range(k)])
        assert received == [bytes([i]) * size for i in range(k)]
        for s in streams:
            await s.aclose()


async def test_a_large_send_after_held_ones_keeps_the_byte_order() -> None:
    done: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
    big = bytes(range(256)) * ((DEFER_MAX * 3) // 256)
    parts = [b"a" * 10, b"b" * 20, big, b"c" * 30, b"d" * (DEFER_MAX - 5), b"e" * 40]
    total = sum(len(p) for p in parts)

    async def handler(stream: Any) -> None:
        await stream.write(b"r")
        await _collect(stream, total, done)
        await stream.aclose()

    async with asyncio.timeout(30), host_pair(CFG, handlers={PROTO: handler}) as (cli, _srv, peer):
        s = await cli.open_stream(peer, PROTO)
        assert await s.readexactly(1) == b"r"
        for p in parts:  # one pass: sent at once, held, sealed at once, held, flushed, held
            assert s.write_nowait(p) == len(p)
        assert await done == b"".join(parts)
        await s.aclose()


async def test_a_send_held_when_the_connection_closes_still_leaves() -> None:
    done: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    async def handler(stream: Any) -> None:
        await stream.write(b"r")
        await _collect(stream, 7, done)

    async with asyncio.timeout(30), host_pair(CFG, handlers={PROTO: handler}) as (cli, _srv, peer):
        s = await cli.open_stream(peer, PROTO)
        assert await s.readexactly(1) == b"r"
        s.write_nowait(b"abc")  # at once
        s.write_nowait(b"defg")  # held for the end of the pass
        cli.connection(peer)._raw.close()  # graceful close in the same pass: flushed first
        assert await done == b"abcdefg"


async def test_a_full_batch_of_small_sends_leaves_before_the_pass_ends() -> None:
    """Many streams answering in one pass: the pass's first batch of small sends
    that passed DEFER_MAX is sealed and handed to the socket at once (the peer
    starts on it), not queued with the pass's large writes until the pass ends."""
    k, size = 200, 100
    got: asyncio.Queue[bytes] = asyncio.Queue()

    async def handler(stream: Any) -> None:
        await stream.write(b"r")
        await got.put(await stream.readexactly(size))
        await stream.aclose()

    async with asyncio.timeout(30), host_pair(CFG, handlers={PROTO: handler}) as (cli, _srv, peer):
        streams = [await cli.open_stream(peer, PROTO) for _ in range(k)]
        for s in streams:
            assert await s.readexactly(1) == b"r"
        await asyncio.sleep(0.05)
        raw = cli.connection(peer).base_path.raw
        sent: list[int] = []
        transport = raw._transport
        real_write, real_lines = transport.write, transport.writelines
        inside = False  # asyncio's writelines may call write itself

        def write(d: Any) -> None:
            if not inside:
                sent.append(memoryview(d).nbytes)
            real_write(d)

        def lines(bufs: Any) -> None:
            nonlocal inside
            bufs = list(bufs)
            sent.append(sum(memoryview(b).nbytes for b in bufs))
            inside = True
            try:
                real_lines(bufs)
            finally:
                inside = False

        raw._transport = _Observed(transport, write, lines)
        try:
            for i, s in enumerate(streams):  # one pass
                assert s.write_nowait(bytes([i]) * size) == size
            frame = YAMUX_HEADER + size
            per_batch = DEFER_MAX // frame + 1  # the send that passes DEFER_MAX flushes
            # the first send at once, then the first full batch, before the pass ends
            assert sent[0] == NOISE_OVERHEAD + frame
            assert sent[1:] == [NOISE_OVERHEAD + per_batch * frame] * ((k - 1) // per_batch)
            for _ in range(3):
                await asyncio.sleep(0)
        finally:
            raw._transport = transport
        received = sorted([await got.get() for _ in range(k)])
        assert received == [bytes([i]) * size for i in range(k)]
        for s in streams:
            await s.aclose()


class _Observed:
    """A transport whose write/writelines are observed; everything else is the real one."""

    def __init__(self, real: Any, write: Any, writelines: Any) -> None:
        self._real = real
        self.write = write
        self.writelines = writelines

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)
