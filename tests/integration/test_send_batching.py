"""Small sends of one loop pass are sealed together (NoisePath), over real TCP + Noise.

The first send of a pass leaves at once; the small ones after it in the same pass
are copied and sealed in one Noise frame at the pass's end. Larger sends are
sealed at once, after what was held, so the byte order on every stream holds.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from fastp2p.config import HostConfig
from fastp2p.testing import host_pair
from fastp2p.transport import conn as conn_module
from fastp2p.transport.conn import DEFER_MAX
from tests.integration.sends import recording_sends

PROTO = "/test/batching/1.0.0"
CFG = HostConfig(data_paths=("tcp",))
NOISE_OVERHEAD = 2 + 16  # length prefix + tag
YAMUX_HEADER = 12


async def _collect(stream: Any, n: int, into: asyncio.Future[bytes]) -> None:
    into.set_result(await stream.readexactly(n))


def _answer_once(size: int, got: asyncio.Queue[bytes]) -> Any:
    """A handler that opens its side with one byte, then queues one ``size``-byte message."""

    async def handler(stream: Any) -> None:
        await stream.write(b"r")  # the stream is open both ways before the timed pass
        await got.put(await stream.readexactly(size))
        await stream.aclose()

    return handler


async def _open_ready(cli: Any, peer: Any, k: int) -> list[Any]:
    """``k`` streams to ``_answer_once`` handlers, each open both ways."""
    streams = [await cli.open_stream(peer, PROTO) for _ in range(k)]
    for s in streams:
        assert await s.readexactly(1) == b"r"
    return streams


async def test_small_sends_of_one_pass_share_one_noise_frame_and_are_copied() -> None:
    k, size = 40, 100
    got: asyncio.Queue[bytes] = asyncio.Queue()

    async with asyncio.timeout(30), host_pair(CFG, handlers={PROTO: _answer_once(size, got)}) as (cli, _srv, peer):
        streams = await _open_ready(cli, peer, k)
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

    async with asyncio.timeout(30), host_pair(CFG, handlers={PROTO: _answer_once(size, got)}) as (cli, _srv, peer):
        streams = await _open_ready(cli, peer, k)
        await asyncio.sleep(0.05)
        with recording_sends(cli.connection(peer).base_path.raw) as rec:
            for i, s in enumerate(streams):  # one pass
                assert s.write_nowait(bytes([i]) * size) == size
            frame = YAMUX_HEADER + size
            per_batch = DEFER_MAX // frame + 1  # the send that passes DEFER_MAX flushes
            # the first send at once, then the first full batch, before the pass ends
            assert rec.sends[0] == NOISE_OVERHEAD + frame
            assert rec.sends[1:] == [NOISE_OVERHEAD + per_batch * frame] * ((k - 1) // per_batch)
            for _ in range(3):
                await asyncio.sleep(0)
        received = sorted([await got.get() for _ in range(k)])
        assert received == [bytes([i]) * size for i in range(k)]
        for s in streams:
            await s.aclose()


async def test_a_slowly_made_batch_leaves_at_once_and_a_quick_one_waits_for_the_pass_end(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Later batches of a pass: one whose sends took EARLY_FLUSH_S or more to make
    (handlers doing work between answers) is handed to the socket at once; one made
    quickly (a writer streaming 4 KB writes) joins the queue's writev at the pass's
    end. (EARLY_FLUSH_S raised to 50 ms: a slow machine makes five sends in far less.)"""
    monkeypatch.setattr(conn_module, "EARLY_FLUSH_S", 0.05)
    size = 4000
    per_batch = DEFER_MAX // (YAMUX_HEADER + size) + 1
    n = 1 + 3 * per_batch
    data = [bytes([i]) * size for i in range(n)]
    done: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    async def handler(stream: Any) -> None:
        await stream.write(b"r")
        await _collect(stream, n * size, done)

    async with asyncio.timeout(30), host_pair(CFG, handlers={PROTO: handler}) as (cli, _srv, peer):
        s = await cli.open_stream(peer, PROTO)
        assert await s.readexactly(1) == b"r"
        await asyncio.sleep(0.05)
        with recording_sends(cli.connection(peer).base_path.raw) as rec:
            chunks = iter(data)
            assert s.write_nowait(next(chunks)) == size  # the pass's first send: at once
            after = []
            for b in range(3):  # one pass: the first batch, a slow one, a quick one
                for j in range(per_batch):
                    if b == 1 and j == 1:
                        time.sleep(0.1)  # work between two answers
                    assert s.write_nowait(next(chunks)) == size
                after.append(len(rec.sends))
            assert after == [2, 3, 3]
            for _ in range(3):
                await asyncio.sleep(0)
            assert len(rec.sends) == 4  # the quick batch, at the pass's end
        assert await done == b"".join(data)
        await s.aclose()
