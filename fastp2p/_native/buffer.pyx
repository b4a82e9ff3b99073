# cython: language_level=3, binding=False
"""The one buffer pool and memory regions: thin bindings over csrc/fp_pool.c.

Same API as the pure twins fastp2p/bufferpool.py (``BufferPool``/``Buffer``) and
fastp2p/_region_pure.py (``MemoryRegion``, ``alloc_region``, ``register_region``).

One pool. At import this module creates the process-wide default
:class:`BufferPool` (``get_default_pool()``; size classes and cache limits are
the ``FP_POOL_DEFAULT_*`` macros in csrc/fp_pool.h). Every buffer fastp2p owns
comes from it: the AEAD module's ``FrameBlock``s (reached by ``cimport`` through
buffer.pxd, never by linking a second copy of fp_pool.c) and the memory of
:class:`MemoryRegion`s made by :func:`alloc_region`.

``Buffer`` exports PEP 3118 directly and also has ``.view``. Exports are counted
in ``__getbuffer__``/``__releasebuffer__``; ``release()`` with live exports raises
``BufferError`` and frees nothing. Each Buffer keeps its BufferPool alive.

``MemoryRegion`` is pool memory (:func:`alloc_region`) or a pinned user buffer
(:func:`register_region`: the region holds the object's ``Py_buffer`` for its
lifetime). It exports PEP 3118 (writable), counts exports and in-flight leases,
and frees its memory (or releases the user's ``Py_buffer``) only after
``close()`` AND once the last lease and the last exported view are gone.

(``binding=False``: module functions are builtins, so ``fastp2p._accel`` can store
them as class attributes without them binding like methods.)
"""

cimport cython
from cpython.buffer cimport (
    PyBuffer_FillInfo,
    PyBuffer_Release,
    PyObject_CheckBuffer,
    PyObject_GetBuffer,
    PyBUF_ANY_CONTIGUOUS,
    PyBUF_WRITABLE,
)
from libc.string cimport memset

import os

from fastp2p.errors import AccessError, ClosedResourceError, RegionBoundsError

DEFAULT_SIZE_CLASSES = tuple(
    1 << s for s in range(FP_POOL_DEFAULT_MIN_SHIFT, FP_POOL_DEFAULT_MAX_SHIFT + 1))
DEFAULT_MAX_CACHED_PER_CLASS = FP_POOL_DEFAULT_MAX_CACHED
DEFAULT_MIN_CACHED_PER_CLASS = FP_POOL_DEFAULT_MIN_CACHED
DEFAULT_MAX_CACHED_BYTES_PER_CLASS = FP_POOL_DEFAULT_CACHED_BYTES
HUGE_PAGE_SIZE = FP_POOL_HUGE_PAGE_SIZE
PAGE_SIZE = fp_pool_page_size()


@cython.no_gc_clear
cdef class Buffer:
    """A leased, page-aligned block of memory from a :class:`BufferPool`."""

    # attributes are declared in buffer.pxd (cimport-able by other modules)

    def __cinit__(self):
        self._blk.ptr = NULL
        self._blk.cap = 0
        self._blk.cls = -1
        self._released = True

    def __init__(self, *args, **kwargs):
        raise TypeError("native Buffers come from BufferPool.acquire()")

    def __dealloc__(self):
        if not self._released and self._pool is not None:
            self._pool._release_block(&self._blk)

    def __getbuffer__(self, Py_buffer *buffer, int flags):
        if self._released:
            raise ClosedResourceError("buffer already released")
        PyBuffer_FillInfo(buffer, self, self._blk.ptr, self._nbytes, 0, flags)
        self._exports += 1

    def __releasebuffer__(self, Py_buffer *buffer):
        self._exports -= 1

    @property
    def view(self):
        """A writable memoryview of exactly ``nbytes`` bytes (exports the buffer)."""
        return memoryview(self)

    @property
    def nbytes(self):
        return self._nbytes

    @property
    def capacity(self):
        """Size of the underlying block (the size class)."""
        if self._released:
            raise ClosedResourceError("buffer already released")
        return self._blk.cap

    @property
    def address(self):
        """Address of the first byte (page-aligned; valid until release)."""
        if self._released:
            raise ClosedResourceError("buffer already released")
        return <size_t>self._blk.ptr

    @property
    def exports(self):
        """Number of live buffer-protocol exports."""
        return self._exports

    @property
    def closed(self):
        return self._released

    def release(self):
        """Return the memory to the pool (BufferError with live views; never frees then)."""
        if self._released:
            raise ClosedResourceError("buffer already released")
        if self._exports:
            raise BufferError(f"buffer has {self._exports} live export(s); release them first")
        self._released = True
        self._pool._release_block(&self._blk)

    def __enter__(self):
        if self._released:
            raise ClosedResourceError("buffer already released")
        return self

    def __exit__(self, *exc):
        if not self._released:
            self.release()

    def __len__(self):
        return self._nbytes

    def __repr__(self):
        state = "released" if self._released else f"{self._nbytes} bytes"
        return f"<Buffer {state}>"


cdef class BufferPool:
    """Size-classed free lists of page-aligned blocks (csrc/fp_pool.c).

    Each class caches at most ``max_cached_per_class`` blocks and, when
    ``max_cached_bytes_per_class`` is non-zero, at most that many bytes (but at
    least ``DEFAULT_MIN_CACHED_PER_CLASS`` blocks). ``hugepages=True`` backs
    blocks of 2 MiB and more with huge pages when the system has them.
    """

    # attributes are declared in buffer.pxd

    def __cinit__(self, size_classes=DEFAULT_SIZE_CLASSES,
                  Py_ssize_t max_cached_per_class=FP_POOL_DEFAULT_MAX_CACHED, *,
                  Py_ssize_t max_cached_bytes_per_class=FP_POOL_DEFAULT_CACHED_BYTES,
                  bint hugepages=False):
        cdef size_t cls[FP_POOL_MAX_CLASSES]
        cdef fp_pool_config cfg
        cdef Py_ssize_t i
        self._pool = NULL
        self._closed = True
        classes = sorted(set(int(c) for c in size_classes))
        if not classes or classes[0] <= 0:
            raise ValueError("size_classes must be positive")
        if len(classes) > FP_POOL_MAX_CLASSES:
            raise ValueError(f"at most {FP_POOL_MAX_CLASSES} size classes")
        if max_cached_per_class < 0:
            raise ValueError("max_cached_per_class must be >= 0")
        if max_cached_bytes_per_class < 0:
            raise ValueError("max_cached_bytes_per_class must be >= 0")
        for i in range(len(classes)):
            cls[i] = classes[i]
        cfg.classes = cls
        cfg.nclasses = len(classes)
        cfg.max_cached = max_cached_per_class
        cfg.min_cached = FP_POOL_DEFAULT_MIN_CACHED
        cfg.max_cached_bytes = max_cached_bytes_per_class
        cfg.flags = FP_POOL_HUGEPAGES if hugepages else 0
        if fp_pool_create_ex(&self._pool, &cfg) != 0:
            raise MemoryError("fp_pool_create_ex failed")
        self.size_classes = tuple(classes)
        self.max_cached_per_class = max_cached_per_class
        self.max_cached_bytes_per_class = max_cached_bytes_per_class
        self.hugepages = hugepages
        self._closed = False

    def __dealloc__(self):
        # every leased Buffer/FrameBlock/MemoryRegion holds a reference to us
        if self._pool != NULL:
            fp_pool_destroy(self._pool)
            self._pool = NULL

    cdef int _acquire_block(self, size_t n, int flags, fp_block *blk) except -1:
        if self._closed:
            raise ClosedResourceError("buffer pool is closed")
        if fp_pool_acquire_ex(self._pool, n, flags, blk) != 0:
            raise MemoryError(f"could not allocate {n} bytes")
        return 0

    cdef void _release_block(self, fp_block *blk) noexcept:
        if self._pool != NULL:
            fp_pool_release(self._pool, blk)

    def acquire(self, Py_ssize_t n):
        """Lease a buffer of ``n`` bytes (the block is the smallest class >= n)."""
        if self._closed:
            raise ClosedResourceError("buffer pool is closed")
        if n < 0:
            raise ValueError("n must be >= 0")
        cdef Buffer buf = Buffer.__new__(Buffer)
        self._acquire_block(<size_t>n, 0, &buf._blk)
        buf._pool = self
        buf._nbytes = n
        buf._released = False
        return buf

    def release(self, Buffer buf not None):
        """Same as ``buf.release()``."""
        buf.release()

    def stats(self):
        """``allocated`` blocks alive (cached + in use), ``cached``, ``in_use``,
        ``bytes_allocated``, ``huge_allocated`` (blocks backed by huge pages)."""
        cdef fp_pool_stats st
        fp_pool_get_stats(self._pool, &st)
        return {"allocated": st.allocated, "cached": st.cached, "in_use": st.in_use,
                "bytes_allocated": st.bytes_allocated, "huge_allocated": st.huge_allocated}

    def cache_limits(self):
        """``{class size: most blocks cached}``."""
        return {self.size_classes[i]: fp_pool_class_limit(self._pool, i)
                for i in range(len(self.size_classes))}

    def trim(self):
        """Free every cached block now; the pool stays open."""
        fp_pool_drop_cached(self._pool)

    def close(self):
        """Drop every cached block; leased buffers stay valid until released.

        Raises:
            ValueError: this is the process-wide default pool (use ``trim()``).
        """
        if self._shared:
            raise ValueError("the process-wide default pool cannot be closed; use trim()")
        if not self._closed:
            self._closed = True
            fp_pool_trim(self._pool)

    @property
    def closed(self):
        return self._closed

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


cdef BufferPool _DEFAULT_POOL = BufferPool()
_DEFAULT_POOL._shared = True


cdef BufferPool default_pool():
    """The process-wide pool (for cimport by other extensions)."""
    return _DEFAULT_POOL


def get_default_pool():
    """The process-wide :class:`BufferPool` that serves every buffer fastp2p owns."""
    return _DEFAULT_POOL


# -- memory regions ---------------------------------------------------------------------


def _hugepage_fallback_reason(int err, Py_ssize_t nbytes):
    if err == FP_POOL_HUGE_TOO_SMALL:
        return (f"a {nbytes}-byte region is smaller than the {HUGE_PAGE_SIZE >> 20} MiB "
                "huge page size")
    why = f"mmap(MAP_HUGETLB) failed: {os.strerror(err)}"
    try:
        with open("/proc/sys/vm/nr_hugepages") as f:
            reserved = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return why
    if reserved == 0:
        return f"no huge pages are reserved (/proc/sys/vm/nr_hugepages is 0); {why}"
    return f"{why} ({reserved} huge pages reserved)"


@cython.no_gc_clear
cdef class MemoryRegion:
    """Pinned memory that can be shared, leased and granted (DESIGN 5.13).

    Exports PEP 3118 (writable): ``memoryview(region)`` and
    ``numpy.frombuffer(region, dtype)`` share its memory. ``close()`` (idempotent)
    refuses new leases and exports; the memory is freed, or the registered
    object's ``Py_buffer`` released, only when the last lease and the last
    exported view are gone.
    """

    # attributes are declared in buffer.pxd

    def __cinit__(self):
        self._ptr = NULL
        self._has_user = False
        self._closed = True
        self._freed = True
        self.region_id = b""
        self.hugepages = False
        self.hugepage_fallback_reason = None

    def __init__(self, *args, **kwargs):
        raise TypeError("MemoryRegions come from alloc_region()/register_region() "
                        "or a MemoryManager (host.alloc/host.register)")

    def __dealloc__(self):
        # every export holds a reference to us, so none is alive here; a lease taken
        # through the cdef API without holding a reference is the caller's bug
        self._free_now()

    cdef void _free_now(self) noexcept:
        if self._freed:
            return
        self._freed = True
        self._ptr = NULL
        if self._has_user:
            self._has_user = False
            PyBuffer_Release(&self._user)
        elif self._pool is not None:
            self._pool._release_block(&self._blk)

    cdef void _maybe_free(self) noexcept:
        if self._closed and self._exports == 0 and self._leases == 0:
            self._free_now()

    def __getbuffer__(self, Py_buffer *buffer, int flags):
        if self._closed:
            raise ClosedResourceError("memory region is closed")
        PyBuffer_FillInfo(buffer, self, self._ptr, self._nbytes, 0, flags)
        self._exports += 1

    def __releasebuffer__(self, Py_buffer *buffer):
        self._exports -= 1
        self._maybe_free()

    # -- leases (in-flight operations) ----------------------------------------------

    cpdef _acquire_lease(self):
        """Mark an in-flight operation; the memory stays valid until ``_release_lease``.

        Raises:
            ClosedResourceError: the region is closed.
        """
        if self._closed:
            raise ClosedResourceError("memory region is closed")
        self._leases += 1

    cpdef _release_lease(self):
        """End an in-flight operation; frees the memory if closed and nothing else holds it."""
        if self._leases <= 0:
            raise RuntimeError("_release_lease() without a lease")
        self._leases -= 1
        self._maybe_free()

    def lease(self):
        """A :class:`RegionLease` (``release()``, context manager) for one in-flight operation."""
        self._acquire_lease()
        cdef RegionLease lease = RegionLease.__new__(RegionLease)
        lease._region = self
        return lease

    # -- access -----------------------------------------------------------------------

    def view(self, Py_ssize_t offset=0, length=None):
        """A writable memoryview of ``length`` bytes at ``offset`` (default: to the end).

        Raises:
            RegionBoundsError: the range is not inside the region.
            ClosedResourceError: the region is closed.
        """
        if self._closed:
            raise ClosedResourceError("memory region is closed")
        cdef Py_ssize_t n
        if offset < 0 or offset > self._nbytes:
            raise RegionBoundsError(f"offset {offset} outside a {self._nbytes}-byte region")
        n = self._nbytes - offset if length is None else length
        if n < 0 or n > self._nbytes - offset:
            raise RegionBoundsError(
                f"range [{offset}, {offset} + {n}) outside a {self._nbytes}-byte region")
        mv = memoryview(self)
        if offset == 0 and n == self._nbytes:
            return mv
        return mv[offset:offset + n]

    @property
    def nbytes(self):
        return self._nbytes

    @property
    def address(self):
        """Address of the first byte (page-aligned for pool memory)."""
        if self._closed:
            raise ClosedResourceError("memory region is closed")
        return <size_t>self._ptr

    @property
    def closed(self):
        return self._closed

    @property
    def freed(self):
        """True once the memory went back to the pool (or the user's buffer was released)."""
        return self._freed

    @property
    def registered(self):
        """True for a pinned user buffer, False for pool memory."""
        return self._has_user

    @property
    def exports(self):
        """Live PEP 3118 exports (memoryviews, numpy arrays ...)."""
        return self._exports

    @property
    def leases(self):
        """In-flight operations holding the region."""
        return self._leases

    def close(self):
        """Refuse new leases and exports; free once the last lease and view are gone."""
        if self._closed:
            return
        self._closed = True
        grants = self._grants
        if grants is not None:
            grants._region_closed(self)
        self._maybe_free()

    def __enter__(self):
        if self._closed:
            raise ClosedResourceError("memory region is closed")
        return self

    def __exit__(self, *exc):
        self.close()

    def __len__(self):
        return self._nbytes

    def __repr__(self):
        kind = "registered" if self._has_user else "pool"
        state = "closed" if self._closed else f"{self._nbytes} bytes"
        return f"<MemoryRegion {kind} {state} id={self.region_id.hex()[:8]}>"

    # -- grants (delegated to the MemoryManager in _grants) -----------------------------

    cdef object _manager(self):
        if self._grants is None:
            raise AccessError("this region has no MemoryManager: create it with "
                              "MemoryManager.alloc/register (or host.alloc/register) to grant it")
        return self._grants

    def grant(self, peer, *, read=True, write=False, offset=0, length=None, expires=None):
        """A token that lets ``peer`` (a PeerID) access ``[offset, offset + length)``.

        See :meth:`fastp2p.memory.MemoryManager.grant`.
        """
        return self._manager().grant(self, peer, read=read, write=write, offset=offset,
                                     length=length, expires=expires)

    def revoke(self, token):
        """Invalidate one token of this region, immediately."""
        return self._manager().revoke(token, region=self)

    def revoke_all(self):
        """Invalidate every token of this region, immediately."""
        return self._manager().revoke_all(self)


@cython.no_gc_clear
cdef class RegionLease:
    """One in-flight operation on a :class:`MemoryRegion` (``region.lease()``)."""

    cdef MemoryRegion _region

    def __init__(self, *args, **kwargs):
        raise TypeError("RegionLeases come from MemoryRegion.lease()")

    def __dealloc__(self):
        if self._region is not None:
            region, self._region = self._region, None
            if region._leases > 0:
                region._leases -= 1
                region._maybe_free()

    def release(self):
        """End the operation (idempotent)."""
        if self._region is not None:
            region, self._region = self._region, None
            region._release_lease()

    @property
    def released(self):
        return self._region is None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()


def alloc_region(Py_ssize_t nbytes, hugepages=False):
    """A zero-filled :class:`MemoryRegion` of ``nbytes`` from the default pool.

    ``hugepages=True`` asks for huge pages (blocks of 2 MiB and more); when none
    can be had the region uses normal pages, ``region.hugepages`` is False and
    ``region.hugepage_fallback_reason`` says why.
    """
    if nbytes < 0:
        raise ValueError("nbytes must be >= 0")
    cdef MemoryRegion r = MemoryRegion.__new__(MemoryRegion)
    cdef BufferPool pool = _DEFAULT_POOL
    pool._acquire_block(<size_t>nbytes, FP_POOL_HUGEPAGES if hugepages else 0, &r._blk)
    r._pool = pool
    r._ptr = <char *>r._blk.ptr
    r._nbytes = nbytes
    r._closed = False
    r._freed = False
    if not (r._blk.flags & FP_BLOCK_ZEROED):
        memset(r._ptr, 0, <size_t>nbytes)  # recycled blocks may hold other data
    r.region_id = os.urandom(16)
    r.hugepages = (r._blk.flags & FP_BLOCK_HUGE) != 0
    if hugepages and not r.hugepages:
        r.hugepage_fallback_reason = _hugepage_fallback_reason(r._blk.huge_err, nbytes)
    return r


def register_region(obj):
    """Pin ``obj`` (a writable contiguous buffer: bytearray, numpy array, mmap ...).

    The region holds ``obj``'s ``Py_buffer`` until it is freed, so ``obj`` cannot
    be resized or closed under it.

    Raises:
        TypeError: ``obj`` is not a buffer, or is read-only.
        ValueError: ``obj`` is not contiguous.
    """
    if not PyObject_CheckBuffer(obj):
        raise TypeError("register_region() needs a writable contiguous buffer "
                        f"(bytearray, numpy array, mmap ...), not {type(obj).__name__}")
    cdef MemoryRegion r = MemoryRegion.__new__(MemoryRegion)
    try:
        PyObject_GetBuffer(obj, &r._user, PyBUF_WRITABLE | PyBUF_ANY_CONTIGUOUS)
    except (BufferError, ValueError, TypeError) as exc:
        _explain_register_failure(obj, exc)
        raise
    r._has_user = True
    r._ptr = <char *>r._user.buf
    r._nbytes = r._user.len
    r._closed = False
    r._freed = False
    r.region_id = os.urandom(16)
    return r


def _explain_register_failure(obj, exc):
    try:
        mv = memoryview(obj)
    except Exception:
        return
    with mv:
        if mv.readonly:
            raise TypeError(f"cannot register a read-only buffer ({type(obj).__name__}); "
                            "pass a writable one (bytearray, writable numpy array, mmap)") from exc
        if not (mv.c_contiguous or mv.f_contiguous):
            raise ValueError(f"cannot register a non-contiguous buffer ({type(obj).__name__}); "
                             "pass a contiguous one (e.g. numpy.ascontiguousarray)") from exc
