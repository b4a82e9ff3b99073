"""Pure twin of the native ``ReadPump`` (fastp2p._native.frame): the read half of
the TCP transport's asyncio ``BufferedProtocol``."""

from __future__ import annotations

from collections.abc import Callable


class ReadPump:
    """The event loop calls ``get_buffer``/``buffer_updated`` once per socket read.
    Each read goes to ``_on_data(view)`` (the connection's receive step) or, before
    that is set, to the subclass's ``_read_early(nbytes)``."""

    _rxv: memoryview
    _rxv_now: memoryview
    _on_data: Callable[[memoryview], None] | None
    bytes_received: int

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._rxv_now

    def buffer_updated(self, nbytes: int) -> None:
        self.bytes_received += nbytes
        cb = self._on_data
        if cb is not None:
            cb(self._rxv[:nbytes])
            return
        self._read_early(nbytes)

    def _read_early(self, nbytes: int) -> None:  # pragma: no cover - the subclass's
        raise NotImplementedError
