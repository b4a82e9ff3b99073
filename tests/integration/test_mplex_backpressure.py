"""mplex has no flow control: a fast writer is held back by pausing the socket.

Regression: on uvloop (libuv reads a busy socket up to 32 times per loop turn
before any task runs) a reader that lent a buffer as large as the per-stream
limit let it fill without counting it toward the soft limit, the unread bytes
passed the hard limit and the session reset the stream. Now the demux's fast
way stops at the soft limit, and the stream counts its loan when it checks.
"""

from __future__ import annotations

import asyncio

import pytest

import fastp2p
from fastp2p.testing import host_pair

uvloop = pytest.importorskip("uvloop", reason="the regression needs libuv's read loop (uvloop)")

MSG = 4 << 20  # = MplexConfig.max_buffered_per_stream: the reader's buffer holds the whole limit
TOTAL = 96 << 20


async def _run() -> tuple[object, object]:
    done: asyncio.Future[object] = asyncio.get_running_loop().create_future()

    async def sink(s: fastp2p.Stream) -> None:
        try:
            hdr = memoryview(bytearray(13))
            got = 0
            while got < 13:  # a small read first: the rest of the batch is queued
                got += await s.readinto(hdr[got:])
            buf = memoryview(bytearray(MSG))
            n = 0
            while k := await s.readinto(buf):
                n += k
            done.set_result(n)
        except Exception as exc:  # noqa: BLE001 - reported below
            done.set_result(exc)

    cfg = fastp2p.HostConfig(muxers=("/mplex/6.7.0",), data_paths=("tcp",))
    async with asyncio.timeout(120), host_pair(cfg, handlers={"/b": sink}) as (a, _b, p):
        s = await a.open_stream(p, "/b")
        await s.write(bytes(13))
        data = memoryview(bytes(MSG))
        writer: object = None
        try:
            for _ in range(TOTAL // MSG):
                await s.write(data)
            await s.close_write()
        except Exception as exc:  # noqa: BLE001 - reported below
            writer = exc
        return writer, await done


def test_fast_writer_slow_reader_big_buffer_no_reset() -> None:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        writer, reader = runner.run(_run())
    assert writer is None, f"writer failed: {writer!r}"
    assert reader == TOTAL, f"reader got {reader!r}"
