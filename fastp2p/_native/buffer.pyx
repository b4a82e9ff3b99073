# cython: language_level=3
"""Buffer pool: thin bindings over csrc/fp_pool.c (page-aligned size-classed blocks).

Same API as the pure twin fastp2p/bufferpool.py. ``Buffer`` exports PEP 3118
directly (pass it anywhere a buffer is accepted) and also has ``.view`` so
code written for both implementations can always use ``buf.view``.

Other extensions (verbs) ``cimport`` ``Buffer``/``BufferPool`` through
buffer.pxd to reach ``_blk.ptr``/``_blk.cap`` without Python calls.

Exports are counted in ``__getbuffer__``/``__releasebuffer__``; ``release()``
with live exports raises ``BufferError`` and frees nothing. Each Buffer keeps
its BufferPool alive, so pool memory is never freed under a leased buffer.
"""

cimport cython
from cpython.buffer cimport PyBuffer_FillInfo

from fastp2p.errors import ClosedResourceError

DEFAULT_SIZE_CLASSES = (4096, 65536, 1 << 20, 4 << 20, 16 << 20)


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
        if not self._released and self._pool is not None and self._pool._pool != NULL:
            fp_pool_release(self._pool._pool, &self._blk)

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
        fp_pool_release(self._pool._pool, &self._blk)

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
    """Size-classed free lists of page-aligned blocks."""

    # attributes are declared in buffer.pxd

    def __cinit__(self, size_classes=DEFAULT_SIZE_CLASSES, Py_ssize_t max_cached_per_class=64):
        cdef size_t cls[FP_POOL_MAX_CLASSES]
        cdef Py_ssize_t i
        self._pool = NULL
        classes = sorted(set(int(c) for c in size_classes))
        if not classes or classes[0] <= 0:
            raise ValueError("size_classes must be positive")
        if len(classes) > FP_POOL_MAX_CLASSES:
            raise ValueError(f"at most {FP_POOL_MAX_CLASSES} size classes")
        if max_cached_per_class < 0:
            raise ValueError("max_cached_per_class must be >= 0")
        for i in range(len(classes)):
            cls[i] = classes[i]
        if fp_pool_create(&self._pool, cls, len(classes), max_cached_per_class) != 0:
            raise MemoryError("fp_pool_create failed")
        self.size_classes = tuple(classes)
        self.max_cached_per_class = max_cached_per_class
        self._closed = False

    def __dealloc__(self):
        # every leased Buffer holds a reference to us, so nothing is leased here
        if self._pool != NULL:
            fp_pool_destroy(self._pool)
            self._pool = NULL

    def acquire(self, Py_ssize_t n):
        """Lease a buffer of ``n`` bytes (the block is the smallest class >= n)."""
        if self._closed:
            raise ClosedResourceError("buffer pool is closed")
        if n < 0:
            raise ValueError("n must be >= 0")
        cdef Buffer buf = Buffer.__new__(Buffer)
        if fp_pool_acquire(self._pool, <size_t>n, &buf._blk) != 0:
            raise MemoryError(f"could not allocate {n} bytes")
        buf._pool = self
        buf._nbytes = n
        buf._released = False
        return buf

    def release(self, Buffer buf not None):
        """Same as ``buf.release()``."""
        buf.release()

    def stats(self):
        """``allocated`` blocks alive (cached + in use), ``cached``, ``in_use``, ``bytes_allocated``."""
        cdef fp_pool_stats st
        fp_pool_get_stats(self._pool, &st)
        return {"allocated": st.allocated, "cached": st.cached, "in_use": st.in_use,
                "bytes_allocated": st.bytes_allocated}

    def close(self):
        """Drop every cached block; leased buffers stay valid until released."""
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
