"""Shared-memory byte rings between two processes (csrc/fp_ring.c).

Errors: ``ShmRingError`` when the peer left shared state impossible (sticky per
ring end), ``ClosedResourceError`` after ``close()``, ``ValueError`` for bad
arguments, ``BusyResourceError`` for a second thread on one end, ``OSError``
for system failures.
"""

from collections.abc import Sequence
from types import TracebackType

from fastp2p._typing import ReadableBuffer

DEFAULT_CAPACITY: int
MAX_CAPACITY: int
PAGE_SIZE: int

class RingWriter:
    """Producing end: appends bytes for the peer."""

    def write(self, bufs: ReadableBuffer | Sequence[ReadableBuffer], /) -> int:
        """Copy as many bytes as fit, in order (may stop mid-buffer); return the count."""
    def wake_needed(self) -> bool:
        """After write(): True if the consumer sleeps and must be woken (flag cleared)."""
    def arm_space(self) -> bool:
        """Announce a wait for space; True if space is free now (then don't wait)."""
    @property
    def free(self) -> int:
        """Bytes writable now."""
    @property
    def capacity(self) -> int: ...

class RingReader:
    """Consuming end: contiguous read-only views of the peer's bytes."""

    def __buffer__(self, flags: int, /) -> memoryview: ...
    def peek(self) -> memoryview:
        """Read-only view of every readable byte (contiguous, maybe empty).

        The mapping stays alive while the view lives; the contents are stable
        until consume() returns them to the producer.
        """
    def consume(self, n: int, /) -> bool:
        """Return ``n`` peeked bytes; True if the producer waits for space (wake it)."""
    def arm(self) -> bool:
        """Announce sleep; True if data is readable now (then don't sleep)."""
    def spin(self, max_ns: int, /) -> int:
        """Busy-poll without the GIL for up to ``max_ns``; return readable bytes (0: timeout)."""
    @property
    def readable(self) -> int:
        """Bytes readable now."""
    @property
    def capacity(self) -> int: ...

class ShmSegment:
    """Two rings in one sealed memfd: the creator writes ring 0, the attacher ring 1."""

    writer: RingWriter
    reader: RingReader
    @classmethod
    def create(cls, capacity: int = ...) -> ShmSegment:
        """New memfd with ``capacity`` bytes per direction (power of two, page multiple)."""
    @classmethod
    def attach(cls, fd: int) -> ShmSegment:
        """Validate and map the peer's segment; ``fd`` is duplicated (close yours)."""
    @property
    def fd(self) -> int:
        """The memfd to pass with SCM_RIGHTS; owned by the segment."""
    @property
    def capacity(self) -> int: ...
    @property
    def is_creator(self) -> bool: ...
    @property
    def closed(self) -> bool: ...
    def close(self) -> None:
        """Close the fd now; unmap when the last peek() view is released. Idempotent."""
    def __enter__(self) -> ShmSegment: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...
