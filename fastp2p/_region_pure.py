"""Memory regions: pure twin of ``MemoryRegion`` in ``fastp2p._native.buffer``.

Same API and errors as the native class, with these differences:

- Python 3.11 classes cannot export the buffer protocol, so ``memoryview(region)``
  and ``numpy.frombuffer(region)`` need the native core on 3.11. Use
  ``region.view(offset, length)`` (a writable ``memoryview``; works with both
  implementations). On Python 3.12+ ``__buffer__`` makes the pure region a buffer
  too.
- Pool memory is an anonymous ``mmap`` per region (page-aligned, zero-filled),
  not a block of the native pool; there are no huge pages
  (``alloc_region(n, hugepages=True)`` gives ``hugepages`` False and a
  ``hugepage_fallback_reason``).
- Exports are not counted (no ``exports`` property). The memory can still never
  be freed under a live view: every view keeps the ``mmap`` (or the registered
  object's export) alive, and ``close()`` only drops the region's own
  references, once no lease is left. ``freed`` says the region let go.
- ``register_region`` needs a C-contiguous buffer (the native one accepts any
  contiguous buffer).

Leases (``lease()`` -> :class:`RegionLease`, or ``_acquire_lease()`` /
``_release_lease()``) keep the region's memory after ``close()`` until released.
"""

from __future__ import annotations

import ctypes
import mmap
import os
from types import TracebackType
from typing import Any

from fastp2p.errors import AccessError, ClosedResourceError, RegionBoundsError

__all__ = ["MemoryRegion", "RegionLease", "alloc_region", "register_region"]

_NO_HUGEPAGES = "the pure-Python implementation has no huge pages (build the native core)"


class MemoryRegion:
    """Pinned memory that can be shared, leased and granted (see the module docstring)."""

    __slots__ = (
        "_owner",
        "_mv",
        "_nbytes",
        "_address",
        "_closed",
        "_freed",
        "_leases",
        "_registered",
        "region_id",
        "hugepages",
        "hugepage_fallback_reason",
        "_grants",
        "__weakref__",
    )

    def __init__(self, *args: object, **kwargs: object) -> None:
        raise TypeError(
            "MemoryRegions come from alloc_region()/register_region() "
            "or a MemoryManager (host.alloc/host.register)"
        )

    @classmethod
    def _new(cls, owner: Any, array: Any, nbytes: int, registered: bool) -> MemoryRegion:
        self = cls.__new__(cls)
        self._setup(owner, array, nbytes, registered)
        return self

    def _setup(self, owner: Any, array: Any, nbytes: int, registered: bool) -> None:
        self._owner: Any = owner  # the mmap, or the registered object
        self._mv: memoryview | None = (
            memoryview(array).cast("B") if nbytes else memoryview(bytearray())
        )
        self._nbytes: int = nbytes
        self._address: int = ctypes.addressof(array) if nbytes else 0
        self._closed: bool = False
        self._freed: bool = False
        self._leases: int = 0
        self._registered: bool = registered
        self.region_id: bytes = os.urandom(16)
        self.hugepages: bool = False
        self.hugepage_fallback_reason: str | None = None
        self._grants: Any = None

    def _live(self) -> memoryview:
        if self._closed or self._mv is None:
            raise ClosedResourceError("memory region is closed")
        return self._mv

    def _maybe_free(self) -> None:
        if self._closed and self._leases == 0 and not self._freed:
            self._freed = True
            mv, self._mv = self._mv, None
            if mv is not None:
                try:
                    mv.release()
                except BufferError:
                    pass  # a consumer still holds it; it keeps the memory alive
            self._owner = None

    # -- buffer protocol (3.12+) ------------------------------------------------------

    def __buffer__(self, flags: int, /) -> memoryview:
        return self._live()

    def __release_buffer__(self, view: memoryview, /) -> None:
        pass

    # -- leases -------------------------------------------------------------------------

    def _acquire_lease(self) -> None:
        """Mark an in-flight operation (ClosedResourceError once closed)."""
        self._live()
        self._leases += 1

    def _release_lease(self) -> None:
        """End an in-flight operation; lets the memory go if closed and unleased."""
        if self._leases <= 0:
            raise RuntimeError("_release_lease() without a lease")
        self._leases -= 1
        self._maybe_free()

    def lease(self) -> RegionLease:
        """A :class:`RegionLease` for one in-flight operation."""
        self._acquire_lease()
        return RegionLease(self)

    # -- access -------------------------------------------------------------------------

    def view(self, offset: int = 0, length: int | None = None) -> memoryview:
        """A writable memoryview of ``length`` bytes at ``offset`` (default: to the end).

        Raises:
            RegionBoundsError: the range is not inside the region.
            ClosedResourceError: the region is closed.
        """
        mv = self._live()
        if offset < 0 or offset > self._nbytes:
            raise RegionBoundsError(f"offset {offset} outside a {self._nbytes}-byte region")
        n = self._nbytes - offset if length is None else length
        if n < 0 or n > self._nbytes - offset:
            raise RegionBoundsError(
                f"range [{offset}, {offset} + {n}) outside a {self._nbytes}-byte region"
            )
        return mv[offset : offset + n]

    @property
    def nbytes(self) -> int:
        return self._nbytes

    @property
    def address(self) -> int:
        """Address of the first byte."""
        self._live()
        return self._address

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def freed(self) -> bool:
        """True once the region let go of its memory (closed, no lease left)."""
        return self._freed

    @property
    def registered(self) -> bool:
        return self._registered

    @property
    def leases(self) -> int:
        return self._leases

    def close(self) -> None:
        """Refuse new leases and views; let the memory go once the last lease is released."""
        if self._closed:
            return
        self._closed = True
        if self._grants is not None:
            self._grants._region_closed(self)
        self._maybe_free()

    def __enter__(self) -> MemoryRegion:
        self._live()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __len__(self) -> int:
        return self._nbytes

    def __repr__(self) -> str:
        kind = "registered" if self._registered else "pool"
        state = "closed" if self._closed else f"{self._nbytes} bytes"
        return f"<MemoryRegion {kind} {state} id={self.region_id.hex()[:8]}>"

    # -- grants (delegated to the MemoryManager in _grants) -----------------------------

    def _manager(self) -> Any:
        if self._grants is None:
            raise AccessError(
                "this region has no MemoryManager: create it with "
                "MemoryManager.alloc/register (or host.alloc/register) to grant it"
            )
        return self._grants

    def grant(
        self,
        peer: Any,
        *,
        read: bool = True,
        write: bool = False,
        offset: int = 0,
        length: int | None = None,
        expires: float | None = None,
    ) -> bytes:
        """A token that lets ``peer`` access ``[offset, offset + length)``."""
        token: bytes = self._manager().grant(
            self, peer, read=read, write=write, offset=offset, length=length, expires=expires
        )
        return token

    def revoke(self, token: bytes) -> None:
        """Invalidate one token of this region, immediately."""
        self._manager().revoke(token, region=self)

    def revoke_all(self) -> None:
        """Invalidate every token of this region, immediately."""
        self._manager().revoke_all(self)


class RegionLease:
    """One in-flight operation on a :class:`MemoryRegion` (``region.lease()``)."""

    __slots__ = ("_region",)

    def __init__(self, region: MemoryRegion) -> None:
        self._region: MemoryRegion | None = region

    def release(self) -> None:
        """End the operation (idempotent)."""
        region, self._region = self._region, None
        if region is not None:
            region._release_lease()

    @property
    def released(self) -> bool:
        return self._region is None

    def __del__(self) -> None:
        if getattr(self, "_region", None) is not None:
            self.release()

    def __enter__(self) -> RegionLease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def alloc_region(nbytes: int, hugepages: bool = False) -> MemoryRegion:
    """A zero-filled, page-aligned :class:`MemoryRegion` of ``nbytes`` (anonymous mmap)."""
    if nbytes < 0:
        raise ValueError("nbytes must be >= 0")
    mm = mmap.mmap(-1, max(nbytes, 1))
    array = (ctypes.c_ubyte * nbytes).from_buffer(mm) if nbytes else None
    region = MemoryRegion._new(mm, array, nbytes, registered=False)
    if hugepages:
        region.hugepage_fallback_reason = _NO_HUGEPAGES
    return region


def register_region(obj: Any) -> MemoryRegion:
    """Pin ``obj`` (a writable C-contiguous buffer: bytearray, numpy array, mmap ...).

    Raises:
        TypeError: ``obj`` is not a buffer, or is read-only.
        ValueError: ``obj`` is not C-contiguous.
    """
    try:
        mv = memoryview(obj)
    except TypeError:
        raise TypeError(
            "register_region() needs a writable contiguous buffer "
            f"(bytearray, numpy array, mmap ...), not {type(obj).__name__}"
        ) from None
    with mv:
        if mv.readonly:
            raise TypeError(
                f"cannot register a read-only buffer ({type(obj).__name__}); "
                "pass a writable one (bytearray, writable numpy array, mmap)"
            )
        if not mv.c_contiguous:
            raise ValueError(
                f"cannot register a non-C-contiguous buffer ({type(obj).__name__}); "
                "pass a contiguous one (e.g. numpy.ascontiguousarray)"
            )
        nbytes = mv.nbytes
    # the ctypes array holds obj's export (obj cannot be resized or closed under it)
    array = (ctypes.c_ubyte * nbytes).from_buffer(obj) if nbytes else None
    return MemoryRegion._new(obj, array, nbytes, registered=True)
