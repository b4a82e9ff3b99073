"""StreamHistory: bounded memory of ended streams and the errors late writers get."""

from __future__ import annotations

from fastp2p.errors import ClosedResourceError, StreamResetError
from fastp2p.proto._history import StreamHistory


def test_bounded_fifo_and_errors() -> None:
    h = StreamHistory(3)
    h.remember(1, False, 0, True)
    h.remember(2, True, 7, True)
    h.remember(3, True, 0, False)
    h.remember(4, False, 0, False)  # evicts 1, the oldest
    assert 1 not in h and len(h) == 3
    err = h.write_error(2)
    assert isinstance(err, StreamResetError) and err.code == 7 and err.remote
    assert isinstance(h.write_error(4), ClosedResourceError)
    assert h.write_error(99) is None
    h.forget(2)
    assert 2 not in h and h.get(3) == (True, 0, False)
