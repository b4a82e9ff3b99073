"""``ReadPump``, the read half of the TCP protocol: native and pure twins agree."""

from __future__ import annotations

import asyncio

import pytest

from .test_yamux_demux import IMPLS


def _pump(kernels):
    class P(kernels.ReadPump, asyncio.BufferedProtocol):  # the TCP protocol's shape
        def __init__(self) -> None:
            self._rxv = memoryview(bytearray(b"abcdefgh"))
            self._rxv_now = self._rxv[:4]
            self._on_data = None
            self.bytes_received = 0
            self.early: list[int] = []

        def _read_early(self, nbytes: int) -> None:
            self.early.append(nbytes)

    return P()


@pytest.mark.parametrize("impl", IMPLS)
def test_reads_go_to_the_receive_step_once_set(impl):
    p = _pump(impl)
    assert p.get_buffer(-1) is p._rxv_now  # what the next read may fill
    p.buffer_updated(3)
    assert p.early == [3] and p.bytes_received == 3
    got: list[bytes] = []
    p._on_data = lambda view: got.append(bytes(view))
    p.buffer_updated(5)
    assert got == [b"abcde"] and p.early == [3] and p.bytes_received == 8


@pytest.mark.parametrize("impl", IMPLS)
def test_a_failing_step_raises_to_the_event_loop(impl):
    p = _pump(impl)

    def boom(view: memoryview) -> None:
        raise RuntimeError("bug")

    p._on_data = boom
    with pytest.raises(RuntimeError, match="bug"):
        p.buffer_updated(1)


def _writer(kernels, calls: list[object]):
    class W(kernels.WritePump):  # the TCP connection's write-half state, as TcpConnection sets it
        def __init__(self) -> None:
            self.in_pass = False
            self._closed = False
            self._pend = None
            self._pend_tail = None
            self._pend_n = 0
            self._at_end = None
            self._again = 0
            self._marked = False
            self._transport = None
            self._call_soon = lambda cb, context=None: calls.append(cb)
            self._end_cb = self._end_pass
            self._ctx = None
            self._p = None

    return W()


@pytest.mark.parametrize("impl", IMPLS)
def test_a_read_in_push_mode_makes_the_writers_pass_end_marker_once(impl):
    """The marker is made in the read's callback (it then runs after the tasks the
    read woke); a second read in the same pass, or hold_flush, makes no second one."""
    p = _pump(impl)
    calls: list[object] = []
    w = _writer(impl, calls)
    p._on_data = lambda view: None
    p.buffer_updated(1)
    assert calls == []  # no writer: nothing
    p._writer = w
    p.buffer_updated(2)
    p.buffer_updated(1)
    assert len(calls) == 1 and w._marked and not w.in_pass
    w.hold_flush()  # the read's marker is due in this turn: the end waits one more
    assert len(calls) == 1 and w.in_pass and w._again == 1
    calls.pop()()  # the marker: goes round once more
    assert len(calls) == 1 and w._marked and w.in_pass
    calls.pop()()  # the pass ends
    assert not w._marked and not w.in_pass and w._again == 0
    w._closed = True
    p.buffer_updated(1)
    assert calls == []  # a closed connection makes none
