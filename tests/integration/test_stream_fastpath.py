"""The yamux data fast path end to end (issue 12 items 1 and 2), over real TCP + Noise.

- plain DATA frames reach open streams through the session's demux (native: one
  C pass per batch), without a ``DataReceived`` event each, in order and intact;
- a write that fits the send window and the transport's buffer creates no task
  and no future;
- credit goes back in batches: one session call per ``ack_batch`` bytes read,
  not one per read.
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

import pytest

from fastp2p import _accel
from fastp2p.config import HostConfig
from fastp2p.testing import host_pair
from fastp2p.transport.conn import ACK_BATCH

PROTO = "/test/fastpath/1.0.0"
CFG = HostConfig(data_paths=("tcp",))


class CountingLoop:
    """Delegates to the running loop, counting futures and tasks made through it."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.futures = 0
        self.tasks = 0

    def create_future(self) -> asyncio.Future[Any]:
        self.futures += 1
        return self._loop.create_future()

    def create_task(self, coro: Any, **kw: Any) -> asyncio.Task[Any]:
        self.tasks += 1
        return self._loop.create_task(coro, **kw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loop, name)


async def test_bulk_goes_through_the_demux_intact() -> None:
    got = asyncio.get_running_loop().create_future()

    async def sink(stream: Any) -> None:
        demux = getattr(stream.conn._session, "_demux", None)
        routed = demux is not None and demux.attached(stream.id)
        h = hashlib.sha256()
        buf = memoryview(bytearray(100_000))
        total = 0
        while n := await stream.readinto(buf):
            h.update(buf[:n])
            total += n
        got.set_result((total, h.hexdigest(), routed))
        await stream.aclose()

    async with asyncio.timeout(60), host_pair(CFG, handlers={PROTO: sink}) as (cli, _srv, peer):
        s = await cli.open_stream(peer, PROTO)
        data = memoryview(bytes(range(256)) * 16411 * 8)  # 33.6 MB
        for off in range(0, len(data), 70_001):  # odd sizes: frames split across batches
            await s.write(data[off:off + 70_001])
        await s.close_write()
        total, digest, routed = await got
        assert (total, digest) == (len(data), hashlib.sha256(data).hexdigest())
        assert routed, "the stream's DATA did not go through the session's demux"
        await s.aclose()


async def test_each_read_is_one_native_step_into_the_lent_buffer() -> None:
    """Over TCP the connection opens and demultiplexes each read in one call
    (feed_sealed), and a waiting reader's buffer takes the bytes: none of the
    bulk reaches the stream as a queued chunk."""
    got = asyncio.get_running_loop().create_future()
    size = 8 << 20

    async def sink(stream: Any) -> None:
        conn = stream.conn
        queued = 0
        feed = stream.feed_data

        def counting_feed(data: Any, transient: bool = False) -> None:
            nonlocal queued
            queued += len(data)
            feed(data, transient)

        # the demux delivers what a loan cannot take through the attached callable
        conn._session.attach(stream.id, counting_feed)
        buf = memoryview(bytearray(size))  # larger than anything in flight
        total = 0
        while n := await stream.readinto(buf[total:] if total < size else buf):
            total += n
        got.set_result((total, queued, conn.statistics()))
        await stream.aclose()

    async with asyncio.timeout(60), host_pair(CFG, handlers={PROTO: sink}) as (cli, _srv, peer):
        s = await cli.open_stream(peer, PROTO)
        await s.write(bytes(size))
        await s.close_write()
        total, queued, stats = await got
        await s.aclose()
    assert total == size
    if getattr(_accel.native, "YamuxDemux", None) is None:
        return  # pure build: the same step in Python (covered by the proto tests)
    # every byte went straight into the lent buffer (wake-ups may leave a read's
    # tail queued only when the buffer was full, which it never is here)
    assert queued == 0, f"{queued} bytes were queued instead of landing in the lent buffer"
    assert stats["bytes_received"] >= size and stats["muxer_stats"]["bytes_in"] >= size


async def test_a_reader_reusing_a_large_buffer_gets_every_byte_in_place() -> None:
    """The common bulk loop (one 1 MiB buffer, read, consume, read again) with a
    sender faster than the reader: the socket reads are sized to the buffer's
    room and stop while it is full, so the bytes wait in the kernel instead of
    being queued and copied; the connection reads on afterwards."""
    got = asyncio.get_running_loop().create_future()
    size = 48 << 20

    async def sink(stream: Any) -> None:
        h = hashlib.sha256()
        buf = memoryview(bytearray(1 << 20))
        total = 0
        while n := await stream.readinto(buf):
            h.update(buf[:n])  # the reader's own work, slower than the socket
            total += n
        got.set_result((total, h.hexdigest(), stream.conn.statistics()))
        await stream.write(b"!")
        await stream.aclose()

    async with asyncio.timeout(90), host_pair(CFG, handlers={PROTO: sink}) as (cli, _srv, peer):
        s = await cli.open_stream(peer, PROTO)
        chunk = memoryview(bytes(range(256)) * 4096)  # 1 MiB
        for _ in range(size // len(chunk)):
            await s.write(chunk)
        await s.close_write()
        total, digest, stats = await got
        assert await s.readexactly(1) == b"!"  # reading was resumed after the last pause
        await s.aclose()
    assert (total, digest) == (size, hashlib.sha256(bytes(chunk) * (size // len(chunk))).hexdigest())
    if getattr(_accel.native, "YamuxDemux", None) is None:
        return  # pure build: same policy in Python (tests/proto/test_yamux_lend.py)
    in_place = stats["bytes_received_in_place"]
    # all but the frames carrying yamux headers (and the odd frame a slow wake-up
    # left without a loan)
    assert in_place >= 0.97 * size, f"only {in_place / size:.1%} of the bytes were opened in place"


async def test_write_that_fits_creates_no_task_or_future_and_credit_is_batched() -> None:
    done = asyncio.get_running_loop().create_future()
    acks: list[int] = []

    async def reader(stream: Any) -> None:
        conn = stream.conn
        orig = conn.stream_ack

        def counting_ack(sid: int, n: int) -> None:
            acks.append(n)
            orig(sid, n)

        conn.stream_ack = counting_ack
        buf = memoryview(bytearray(64))
        total = 0
        while n := await stream.readinto(buf):
            total += n
        done.set_result(total)
        await stream.aclose()

    async with asyncio.timeout(60), host_pair(CFG, handlers={PROTO: reader}) as (cli, _srv, peer):
        s = await cli.open_stream(peer, PROTO)
        await s.write(b"x")
        conn = s.conn
        counting = CountingLoop(conn.loop)
        conn.loop = counting  # type: ignore[assignment]
        try:
            msg = bytes(1000)
            for _ in range(200):  # 200 KB: within the 256 KiB window, far below the high-water mark
                await s.write(msg)
        finally:
            conn.loop = counting._loop
        assert (counting.futures, counting.tasks) == (0, 0)
        await s.close_write()
        total = await done
        assert total == 200_001
        # 64-byte reads: without batching ~3000 acks; with it one per ACK_BATCH bytes
        assert len(acks) <= total // ACK_BATCH + 2, acks[:10]
        assert all(n >= ACK_BATCH for n in acks[:-1])
        await s.aclose()


@pytest.mark.parametrize("step", [True, False], ids=["send_step", "general_path"])
async def test_stream_writes_take_the_send_step_and_every_wire_byte_is_counted(step: bool) -> None:
    """Over TCP each stream write is one send-step call (native: C; pure: its
    twin): large and small writes, in one loop pass or many. The frames and
    bytes it sends count in the statistics like any other: the server received
    every muxer byte the client counted, and the client's sealed bytes are
    exactly those plus the Noise framing. With the step off, the general path
    counts the same (a seal at the pass's end inside a send is not lost)."""
    done = asyncio.get_running_loop().create_future()
    small, large = 2000, 64

    async def sink(stream: Any) -> None:
        h = hashlib.sha256()
        buf = memoryview(bytearray(1 << 20))
        while n := await stream.readinto(buf):
            h.update(buf[:n])
        await stream.write(b"k")
        await stream.aclose()
        done.set_result((h.hexdigest(), stream.conn))

    async with asyncio.timeout(60), host_pair(CFG, handlers={PROTO: sink}) as (cli, _srv, peer):
        s = await cli.open_stream(peer, PROTO)
        before = s.conn.statistics()["frames_sent_in_one_call"]  # (the protocol proposal's)
        if not step:
            s.conn._tx_step.live = False
        expect = hashlib.sha256()
        for i in range(small):  # small writes: most in one loop pass, held and sealed together
            msg = bytes([i % 251]) * (1 + i % 100)
            expect.update(msg)
            await s.write(msg)
        for i in range(large):  # 64 KiB writes: sealed and queued one by one
            msg = bytes([i % 7]) * 65536
            expect.update(msg)
            await s.write(memoryview(msg))
            if i % 8 == 0:
                await asyncio.sleep(0)  # a new loop pass: its first write leaves at once
        await s.close_write()
        assert await s.read(1) == b"k"
        digest, srv_conn = await done
        await s.aclose()
        await asyncio.sleep(0.05)  # the closes' last frames land
        cli_stats = s.conn.statistics()
        srv_stats = srv_conn.statistics()
    assert digest == expect.hexdigest()
    if step:
        assert cli_stats["frames_sent_in_one_call"] >= small + large
        assert cli_stats["frames_sent_in_one_call"] <= cli_stats["muxer_stats"]["frames_out"]
    else:
        assert cli_stats["frames_sent_in_one_call"] == before
    # every muxer byte the client queued reached the server ...
    assert cli_stats["muxer_stats"]["bytes_out"] == srv_stats["muxer_stats"]["bytes_in"]
    # ... and was counted sealed: 2 length bytes and a 16-byte tag per Noise frame
    overhead = cli_stats["bytes_sent"] - cli_stats["muxer_stats"]["bytes_out"]
    assert overhead > 0 and overhead % 18 == 0, overhead
