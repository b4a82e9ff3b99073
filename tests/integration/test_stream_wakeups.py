"""Receive path wake-ups (issue 12 item 2): a reader waiting in ``readinto`` is
woken once per receive batch, and every frame of the batch lands in its buffer."""

from __future__ import annotations

import asyncio

import pytest

from fastp2p.transport.stream import Stream


class FakeDriver:
    recv_soft_limit = 1 << 30
    remote_peer = None
    write_paused = False

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.acked = 0

    def check_open(self) -> None:
        pass

    def stream_ack(self, stream_id: int, n: int) -> None:
        self.acked += n

    def stream_released(self, stream: Stream) -> None:
        pass


async def test_one_wakeup_fills_the_lent_buffer_with_the_whole_batch() -> None:
    d = FakeDriver()
    st = Stream(d, 1, inbound=True)  # type: ignore[arg-type]
    buf = bytearray(100)
    task = asyncio.ensure_future(st.readinto(buf))
    await asyncio.sleep(0)  # the reader lends its buffer and waits
    for part in (b"a" * 10, b"b" * 20, b"c" * 30):  # one batch: no loop turn in between
        st.feed_data(memoryview(part))
    assert await task == 60
    assert bytes(buf[:60]) == b"a" * 10 + b"b" * 20 + b"c" * 30
    assert st.buffered == 0 and d.acked == 60


async def test_overflow_of_the_lent_buffer_is_queued() -> None:
    d = FakeDriver()
    st = Stream(d, 1, inbound=True)  # type: ignore[arg-type]
    buf = bytearray(25)
    task = asyncio.ensure_future(st.readinto(buf))
    await asyncio.sleep(0)
    st.feed_data(memoryview(b"a" * 10))
    st.feed_data(memoryview(b"b" * 20))
    st.feed_data(memoryview(b"c" * 5))
    assert await task == 25
    assert bytes(buf) == b"a" * 10 + b"b" * 15
    assert await st.read(100) == b"b" * 5 + b"c" * 5
    assert st.buffered == 0 and d.acked == 35


async def test_cancelled_after_the_batch_landed_keeps_every_byte() -> None:
    d = FakeDriver()
    st = Stream(d, 1, inbound=True)  # type: ignore[arg-type]
    buf = bytearray(100)
    task = asyncio.ensure_future(st.readinto(buf))
    await asyncio.sleep(0)
    st.feed_data(memoryview(b"x" * 10))
    st.feed_data(memoryview(b"y" * 10))
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert st.buffered == 20
    assert await st.read(100) == b"x" * 10 + b"y" * 10
    assert d.acked == 20
