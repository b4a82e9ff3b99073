# Cross-module declarations for fastp2p._native.buffer (cimport from verbs etc.).
# Ownership: see csrc/fp_pool.h. A Buffer owns its fp_block until release();
# it holds a reference to its BufferPool so the pool outlives every lease.

cdef extern from "fp_pool.h" nogil:
    enum:
        FP_POOL_MAX_CLASSES
    ctypedef struct fp_block:
        void *ptr
        size_t cap
        int cls
    ctypedef struct fp_pool_stats:
        size_t allocated
        size_t cached
        size_t in_use
        size_t bytes_allocated
    ctypedef struct fp_pool:
        pass
    int fp_pool_create(fp_pool **out, const size_t *classes, size_t nclasses, size_t max_cached)
    void fp_pool_destroy(fp_pool *p)
    int fp_pool_acquire(fp_pool *p, size_t n, fp_block *blk)
    void fp_pool_release(fp_pool *p, fp_block *blk)
    void fp_pool_trim(fp_pool *p)
    void fp_pool_get_stats(const fp_pool *p, fp_pool_stats *st)


cdef class BufferPool:
    cdef fp_pool *_pool
    cdef readonly tuple size_classes
    cdef readonly Py_ssize_t max_cached_per_class
    cdef bint _closed


cdef class Buffer:
    cdef BufferPool _pool
    cdef fp_block _blk
    cdef Py_ssize_t _nbytes
    cdef Py_ssize_t _exports
    cdef bint _released
