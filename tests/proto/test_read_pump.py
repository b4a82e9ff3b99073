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
