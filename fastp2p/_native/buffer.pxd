# Cross-module declarations for fastp2p._native.buffer (cimported by aead, verbs ...).
#
# Ownership: see csrc/fp_pool.h. A Buffer or MemoryRegion owns its fp_block until it
# is released/freed, and holds a reference to its BufferPool so the pool outlives
# every lease. Other extensions must NOT link csrc/fp_pool.c themselves (each .so
# would get its own copy of the C statics); they reach the one pool through the
# cdef methods below: default_pool()._acquire_block(...) / ._release_block(...).

cdef extern from "fp_pool.h" nogil:
    enum:
        FP_POOL_MAX_CLASSES
        FP_POOL_HUGEPAGES
        FP_BLOCK_MMAP
        FP_BLOCK_HUGE
        FP_BLOCK_ZEROED
        FP_POOL_HUGE_TOO_SMALL
        FP_POOL_DEFAULT_MIN_SHIFT
        FP_POOL_DEFAULT_MAX_SHIFT
        FP_POOL_DEFAULT_MAX_CACHED
        FP_POOL_DEFAULT_MIN_CACHED
    size_t FP_POOL_DEFAULT_CACHED_BYTES
    size_t FP_POOL_HUGE_PAGE_SIZE
    size_t FP_POOL_MMAP_THRESHOLD
    ctypedef struct fp_block:
        void *ptr
        size_t cap
        int cls
        int flags
        int huge_err
    ctypedef struct fp_pool_stats:
        size_t allocated
        size_t cached
        size_t in_use
        size_t bytes_allocated
        size_t huge_allocated
    ctypedef struct fp_pool:
        pass
    ctypedef struct fp_pool_config:
        const size_t *classes
        size_t nclasses
        size_t max_cached
        size_t min_cached
        size_t max_cached_bytes
        int flags
    int fp_pool_create(fp_pool **out, const size_t *classes, size_t nclasses, size_t max_cached)
    int fp_pool_create_ex(fp_pool **out, const fp_pool_config *cfg)
    int fp_pool_create_default(fp_pool **out, int flags)
    void fp_pool_destroy(fp_pool *p)
    int fp_pool_acquire(fp_pool *p, size_t n, fp_block *blk)
    int fp_pool_acquire_ex(fp_pool *p, size_t n, int flags, fp_block *blk)
    void fp_pool_release(fp_pool *p, fp_block *blk)
    void fp_pool_trim(fp_pool *p)
    void fp_pool_drop_cached(fp_pool *p)
    void fp_pool_get_stats(const fp_pool *p, fp_pool_stats *st)
    size_t fp_pool_class_limit(const fp_pool *p, size_t i)
    size_t fp_pool_page_size()


cdef class BufferPool:
    cdef fp_pool *_pool
    cdef readonly tuple size_classes
    cdef readonly Py_ssize_t max_cached_per_class
    cdef readonly Py_ssize_t max_cached_bytes_per_class
    cdef readonly bint hugepages
    cdef bint _closed
    cdef bint _shared     # the process-wide default pool: close() refuses

    # Take a block of at least n bytes (MemoryError on failure, ClosedResourceError
    # once closed). The caller owns blk until _release_block and must keep this
    # pool alive until then (hold a reference).
    cdef int _acquire_block(self, size_t n, int flags, fp_block *blk) except -1
    cdef void _release_block(self, fp_block *blk) noexcept


cdef class Buffer:
    cdef BufferPool _pool
    cdef fp_block _blk
    cdef Py_ssize_t _nbytes
    cdef Py_ssize_t _exports
    cdef bint _released


cdef class MemoryRegion:
    cdef BufferPool _pool          # pool memory: the owning pool; None when registered
    cdef fp_block _blk             # pool memory
    cdef Py_buffer _user           # registered memory: the pinned Py_buffer
    cdef bint _has_user
    cdef char *_ptr
    cdef Py_ssize_t _nbytes
    cdef Py_ssize_t _exports       # live PEP 3118 exports
    cdef Py_ssize_t _leases        # in-flight operations
    cdef bint _closed              # no new leases or exports
    cdef bint _freed               # memory given back (pool) / Py_buffer released
    cdef readonly bytes region_id
    cdef readonly bint hugepages
    cdef readonly object hugepage_fallback_reason
    cdef public object _grants     # grant table slot (fastp2p.memory.MemoryManager)
    cdef object __weakref__

    # In-flight ownership (DESIGN 5.4 rule 4): a lease keeps the memory alive after
    # close(). Callers of the cdef versions must hold a reference to the region.
    cpdef _acquire_lease(self)
    cpdef _release_lease(self)
    cdef void _maybe_free(self) noexcept
    cdef void _free_now(self) noexcept
    cdef object _manager(self)


cdef BufferPool default_pool()
