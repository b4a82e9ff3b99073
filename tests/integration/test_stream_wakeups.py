"""Receive path wake-ups (issue 12 item 2): a reader waiting in ``readinto`` is
woken once per receive batch, and every frame of the batch lands in its buffer."""

from __future__ import annotations

import asyncio
import struct

import pytest

from fastp2p import _accel
from fastp2p.transport.stream import Stream


class FakeDriver:
    recv_soft_limit = 1 << 30
    remote_peer = None
    busy_poll = None
    write_paused = False

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.acked = 0

    def check_open(self) -> None:
        pass

    def stream_ack(self, stream_id: int, n: int) -> None:
        self.acked += n

    def stream_lend(self, stream_id: int, buf: object, waiter: object) -> None:
        return None  # no native receive step: feed_data fills the lent buffer

    def stream_released(self, stream: Stream) -> None:
        pass

    def stream_close_write(self, stream_id: int) -> None:
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


# -- the same through a real demux: the reader's buffer is lent to the receive step ----

KERNELS = [pytest.param(_accel.pure, id="pure")]
if _accel.native is not None:
    KERNELS.append(pytest.param(_accel.native, id="native"))


class DemuxDriver(FakeDriver):
    """A driver whose receive step is a real YamuxDemux (as Connection's is)."""

    def __init__(self, kernels: object) -> None:
        super().__init__()
        self.demux = kernels.YamuxDemux()  # type: ignore[attr-defined]

    def stream_lend(self, stream_id: int, buf: object, waiter: object) -> object:
        return self.demux.lend(stream_id, buf, waiter)

    def attach(self, st: Stream) -> None:
        self.demux.attach(st.id, st.feed_data, 1 << 30)

    def feed(self, *parts: tuple[int, bytes]) -> None:
        """One receive batch: DATA frames for (stream id, payload)."""
        self.demux.feed(b"".join(struct.pack(">BBHII", 0, 0, 0, sid, len(p)) + p for sid, p in parts))


@pytest.mark.parametrize("kernels", KERNELS)
async def test_lent_buffer_is_filled_by_the_demux_with_one_wakeup(kernels: object) -> None:
    d = DemuxDriver(kernels)
    st = Stream(d, 1, inbound=True)  # type: ignore[arg-type]
    d.attach(st)
    buf = bytearray(25)
    task = asyncio.ensure_future(st.readinto(buf))
    await asyncio.sleep(0)
    d.feed((1, b"a" * 10), (1, b"b" * 20))
    d.feed((1, b"c" * 5))  # the reader has not run: overflow queued behind
    assert await task == 25
    assert bytes(buf) == b"a" * 10 + b"b" * 15
    assert await st.read(100) == b"b" * 5 + b"c" * 5
    assert st.buffered == 0 and d.acked == 35


@pytest.mark.parametrize("kernels", KERNELS)
async def test_data_from_the_session_stops_the_loan_so_order_holds(kernels: object) -> None:
    d = DemuxDriver(kernels)
    st = Stream(d, 1, inbound=True)  # type: ignore[arg-type]
    d.attach(st)
    buf = bytearray(100)
    task = asyncio.ensure_future(st.readinto(buf))
    await asyncio.sleep(0)
    d.feed((1, b"1"))
    st.feed_data(memoryview(b"2"))  # a DATA frame the session handled (behind a control frame)
    d.feed((1, b"3"))  # must not overtake "2" into the lent buffer
    assert await task == 1 and buf[:1] == b"1"
    assert await st.read(100) == b"23"


@pytest.mark.parametrize("kernels", KERNELS)
async def test_cancelled_with_bytes_in_the_loan_keeps_every_byte(kernels: object) -> None:
    d = DemuxDriver(kernels)
    st = Stream(d, 1, inbound=True)  # type: ignore[arg-type]
    d.attach(st)
    buf = bytearray(100)
    task = asyncio.ensure_future(st.readinto(buf))
    await asyncio.sleep(0)
    d.feed((1, b"x" * 10), (1, b"y" * 10))
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert st.buffered == 20
    d.feed((1, b"z"))  # the loan ended with the read: queued, after the kept bytes
    assert await st.read(100) == b"x" * 10 + b"y" * 10 + b"z"
    assert d.acked == 21


@pytest.mark.parametrize("kernels", KERNELS)
async def test_read_only_buffer_is_refused_before_waiting(kernels: object) -> None:
    d = DemuxDriver(kernels)
    st = Stream(d, 1, inbound=True)  # type: ignore[arg-type]
    d.attach(st)
    with pytest.raises((BufferError, TypeError)):
        await st.readinto(b"read-only")
    d.feed((1, b"ok"))
    assert await st.read(10) == b"ok"


# -- readinto's own bookkeeping (written out in the method: guard, views, credit) ------


@pytest.mark.parametrize("kernels", KERNELS)
async def test_readinto_releases_the_callers_buffer_on_every_exit(kernels: object) -> None:
    from fastp2p.errors import StreamResetError

    d = DemuxDriver(kernels)
    st = Stream(d, 1, inbound=True)  # type: ignore[arg-type]
    d.attach(st)
    buf = bytearray(8)
    task = asyncio.ensure_future(st.readinto(buf))  # wait with the buffer lent ...
    await asyncio.sleep(0)
    d.feed((1, b"abc"))
    assert await task == 3
    buf.extend(b"!")  # ... and released after: a bytearray with exports cannot resize
    task = asyncio.ensure_future(st.readinto(buf))  # cancelled while waiting
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    buf.extend(b"!")
    task = asyncio.ensure_future(st.readinto(buf))  # failed while waiting
    await asyncio.sleep(0)
    st.set_reset(StreamResetError("reset by test", code=0, remote=True))
    with pytest.raises(StreamResetError):
        await task
    buf.extend(b"!")
    with pytest.raises(StreamResetError):  # failed before waiting
        await st.readinto(buf)
    buf.extend(b"!")


async def test_readinto_refusing_a_buffer_leaves_the_stream_readable() -> None:
    d = FakeDriver()
    st = Stream(d, 1, inbound=True)  # type: ignore[arg-type]
    st.feed_data(memoryview(b"0123456789"))
    with pytest.raises(TypeError):
        await st.readinto(12345)  # type: ignore[arg-type]  # not a buffer
    with pytest.raises(TypeError):
        await st.readinto(memoryview(bytearray(8))[::2])  # not contiguous
    assert await st.readinto(bytearray(0)) == 0
    # other formats and shapes are read as bytes: the count is bytes
    import array

    ints = array.array("i", [0, 0])
    assert await st.readinto(ints) == 8
    assert ints.tobytes() == b"01234567"
    assert await st.read(10) == b"89"
    assert st.buffered == 0 and d.acked == 10


async def test_readinto_returns_credit_in_batches_and_all_of_it() -> None:
    d = FakeDriver()
    d.ack_batch = 100  # type: ignore[attr-defined]
    st = Stream(d, 1, inbound=True)  # type: ignore[arg-type]
    buf = bytearray(30)
    for i in range(10):  # 10 x 30 bytes, each read after a wait
        task = asyncio.ensure_future(st.readinto(buf))
        await asyncio.sleep(0)
        st.feed_data(memoryview(bytes([i]) * 30))
        assert await task == 30 and bytes(buf) == bytes([i]) * 30
        # credit leaves once 100 consumed bytes gathered, never per read
        assert d.acked == (i + 1) * 30 // 120 * 120
    await st.aclose()  # what was held back goes back on close
    assert d.acked == 300
