"""Buffer pool; pure twin of ``fastp2p._native.buffer`` (csrc/fp_pool.c).

A :class:`BufferPool` hands out :class:`Buffer` objects from per-size-class free
lists (the smallest class >= the request; requests above the largest class get
an exact, uncached allocation). The defaults mirror the ``FP_POOL_DEFAULT_*``
macros of csrc/fp_pool.h (power-of-two classes 4 KiB .. 64 MiB; per class at
most 256 blocks and 32 MiB, but at least 8 blocks); a parity test keeps them
equal. The pure pool has no huge pages (``hugepages=True`` is accepted and
ignored). The pure twin of ``MemoryRegion`` lives in fastp2p/_region_pure.py.

Using a buffer: always go through ``buf.view`` (a fresh ``memoryview`` of the
whole buffer). Python 3.11 has no ``__buffer__`` hook, so the pure ``Buffer``
cannot itself be passed where a buffer is expected; the native ``Buffer``
exports PEP 3118 directly but also has ``.view``, so ``buf.view`` works with
both implementations.

Export tracking in the pure twin: every ``.view`` call exports the backing
``bytearray``; ``release()`` probes whether any such export (or a memoryview
derived from one) is still alive by trying to shrink the ``bytearray`` by one
byte and grow it back (CPython refuses with ``BufferError``; the round trip
stays inside the allocation, so it neither copies nor moves the block). Views are therefore tracked exactly as long as
callers only use ``buf.view``. Copies of ``buf.address`` are not tracked (the
native twin cannot track raw pointers either). The pure twin's memory is not
page-aligned; the native one is.

Errors: ``release()`` with a live view raises ``BufferError`` and frees nothing;
using or releasing a buffer after release raises ``ClosedResourceError``.
"""

from __future__ import annotations

import bisect
import ctypes
from collections.abc import Iterable
from types import TracebackType

from fastp2p.errors import ClosedResourceError

__all__ = [
    "DEFAULT_MAX_CACHED_BYTES_PER_CLASS",
    "DEFAULT_MAX_CACHED_PER_CLASS",
    "DEFAULT_MIN_CACHED_PER_CLASS",
    "DEFAULT_SIZE_CLASSES",
    "Buffer",
    "BufferPool",
    "get_default_pool",
]

# Mirrors FP_POOL_DEFAULT_* in csrc/fp_pool.h.
DEFAULT_SIZE_CLASSES = tuple(1 << s for s in range(12, 27))
DEFAULT_MAX_CACHED_PER_CLASS = 256
DEFAULT_MIN_CACHED_PER_CLASS = 8
DEFAULT_MAX_CACHED_BYTES_PER_CLASS = 32 << 20


class Buffer:
    """A leased block of memory from a :class:`BufferPool`."""

    __slots__ = ("_mem", "_nbytes", "_pool", "_class", "_address", "__weakref__")

    def __init__(
        self,
        nbytes: int,
        *,
        _pool: BufferPool | None = None,
        _class: int = -1,
        _mem: bytearray | None = None,
    ) -> None:
        if nbytes < 0:
            raise ValueError("nbytes must be >= 0")
        mem = _mem if _mem is not None else bytearray(nbytes)
        self._mem: bytearray | None = mem
        self._nbytes = nbytes
        self._pool = _pool
        self._class = _class
        self._address = 0

    def _live(self) -> bytearray:
        if self._mem is None:
            raise ClosedResourceError("buffer already released")
        return self._mem

    @property
    def view(self) -> memoryview:
        """A writable memoryview of exactly ``nbytes`` bytes (exports the buffer)."""
        mem = self._live()
        mv = memoryview(mem)
        return mv if len(mem) == self._nbytes else mv[: self._nbytes]

    @property
    def nbytes(self) -> int:
        return self._nbytes

    @property
    def capacity(self) -> int:
        """Size of the underlying block (the size class)."""
        return len(self._live())

    @property
    def address(self) -> int:
        """Address of the first byte (valid until release)."""
        mem = self._live()
        if not self._address:
            if len(mem) == 0:
                return 0
            arr = (ctypes.c_char * len(mem)).from_buffer(mem)
            self._address = ctypes.addressof(arr)
            del arr  # drop the export: the bytearray is never resized while leased
        return self._address

    @property
    def closed(self) -> bool:
        return self._mem is None

    def _check_no_exports(self) -> None:
        mem = self._live()
        if not mem:
            return
        try:
            # CPython refuses to resize a bytearray with live exports. Shrinking by
            # one byte and growing back stays inside the allocation: no realloc,
            # no copy, the address does not move.
            del mem[-1]
        except BufferError:
            raise BufferError("buffer has live memoryviews; release them first") from None
        mem.append(0)

    def release(self) -> None:
        """Return the memory to the pool.

        Raises:
            BufferError: a view of this buffer is still alive (nothing is freed).
            ClosedResourceError: already released.
        """
        self._check_no_exports()
        mem = self._mem
        self._mem = None
        pool, self._pool = self._pool, None
        if pool is not None and mem is not None:
            pool._recycle(self._class, mem)

    def __enter__(self) -> Buffer:
        self._live()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._mem is not None:
            self.release()

    def __len__(self) -> int:
        return self._nbytes

    def __repr__(self) -> str:
        state = "released" if self._mem is None else f"{self._nbytes} bytes"
        return f"<Buffer {state}>"


class BufferPool:
    """Size-classed free lists of buffers (see the module docstring)."""

    def __init__(
        self,
        size_classes: Iterable[int] = DEFAULT_SIZE_CLASSES,
        max_cached_per_class: int = DEFAULT_MAX_CACHED_PER_CLASS,
        *,
        max_cached_bytes_per_class: int = DEFAULT_MAX_CACHED_BYTES_PER_CLASS,
        hugepages: bool = False,
    ) -> None:
        classes = sorted(set(int(c) for c in size_classes))
        if not classes or classes[0] <= 0:
            raise ValueError("size_classes must be positive")
        if max_cached_per_class < 0:
            raise ValueError("max_cached_per_class must be >= 0")
        if max_cached_bytes_per_class < 0:
            raise ValueError("max_cached_bytes_per_class must be >= 0")
        self.size_classes = tuple(classes)
        self.max_cached_per_class = max_cached_per_class
        self.max_cached_bytes_per_class = max_cached_bytes_per_class
        self.hugepages = hugepages
        lo = min(DEFAULT_MIN_CACHED_PER_CLASS, max_cached_per_class)
        self._limits = [
            min(max_cached_per_class, max(lo, max_cached_bytes_per_class // c))
            if max_cached_bytes_per_class
            else max_cached_per_class
            for c in classes
        ]
        self._free: list[list[bytearray]] = [[] for _ in classes]
        self._in_use = 0
        self._allocated = 0
        self._closed = False

    def acquire(self, n: int) -> Buffer:
        """Lease a buffer of ``n`` bytes (rounded up to a size class for the block)."""
        if self._closed:
            raise ClosedResourceError("buffer pool is closed")
        if n < 0:
            raise ValueError("n must be >= 0")
        i = bisect.bisect_left(self.size_classes, n)
        if i < len(self.size_classes):
            free = self._free[i]
            if free:
                mem = free.pop()
            else:
                mem = bytearray(self.size_classes[i])
                self._allocated += 1
        else:
            i = -1
            mem = bytearray(n)
            self._allocated += 1
        self._in_use += 1
        return Buffer(n, _pool=self, _class=i, _mem=mem)

    def release(self, buf: Buffer) -> None:
        """Same as ``buf.release()``."""
        if not isinstance(buf, Buffer):
            raise TypeError("expected a Buffer")
        buf.release()

    def _recycle(self, cls: int, mem: bytearray) -> None:
        self._in_use -= 1
        if cls >= 0 and not self._closed and len(self._free[cls]) < self._limits[cls]:
            self._free[cls].append(mem)
        else:
            self._allocated -= 1

    def stats(self) -> dict[str, int]:
        """``allocated`` blocks alive (cached + in use), ``cached``, ``in_use``."""
        cached = sum(len(f) for f in self._free)
        return {
            "allocated": self._allocated,
            "cached": cached,
            "in_use": self._in_use,
            "huge_allocated": 0,
        }

    def cache_limits(self) -> dict[int, int]:
        """``{class size: most blocks cached}``."""
        return dict(zip(self.size_classes, self._limits, strict=True))

    def trim(self) -> None:
        """Drop every cached block now; the pool stays open."""
        for f in self._free:
            self._allocated -= len(f)
            f.clear()

    def close(self) -> None:
        """Drop every cached block; leased buffers stay valid until released.

        Raises:
            ValueError: this is the process-wide default pool (use ``trim()``).
        """
        if self is _DEFAULT_POOL:
            raise ValueError("the process-wide default pool cannot be closed; use trim()")
        if self._closed:
            return
        self._closed = True
        self.trim()

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> BufferPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_DEFAULT_POOL = BufferPool()


def get_default_pool() -> BufferPool:
    """The process-wide :class:`BufferPool` (twin of the native default pool)."""
    return _DEFAULT_POOL
