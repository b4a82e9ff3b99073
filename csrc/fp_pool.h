/* fp_pool.h - page-aligned, size-classed block pool (no Python.h).
 *
 * Blocks come from posix_memalign (page-aligned) below FP_POOL_MMAP_THRESHOLD
 * and from anonymous mmap at or above it, so RDMA can register them per block
 * without straddling foreign pages. Each size class keeps a bounded free list
 * (max_cached blocks); requests above the largest class get an exact-size,
 * uncached block (class index -1).
 *
 * Ownership contract:
 * - fp_pool_create() returns a heap-allocated pool owned by the caller, who
 *   must call fp_pool_destroy() once. Destroying frees cached blocks only:
 *   blocks still leased must be given back with fp_pool_release() BEFORE
 *   destroy (the Cython Buffer keeps its BufferPool alive to guarantee this).
 * - fp_pool_acquire() fills a caller-owned fp_block; the memory it points to
 *   is owned by the caller until fp_pool_release() (which takes it back and
 *   zeroes the fp_block). Releasing a block twice is the caller's bug; the
 *   Cython layer prevents it.
 * - fp_pool_trim() (close) frees the cached blocks and makes later releases
 *   free their block instead of caching it.
 * Not thread-safe: callers serialise (the GIL does, in fastp2p).
 */
#ifndef FP_POOL_H
#define FP_POOL_H

#include <stddef.h>
#include <stdint.h>
#include "fp_common.h"

#define FP_POOL_MAX_CLASSES 32
#define FP_POOL_MMAP_THRESHOLD ((size_t)1 << 20)

typedef struct {
    void *ptr;       /* page-aligned start */
    size_t cap;      /* usable bytes (class size or exact size) */
    int cls;         /* size class index, -1 for uncached oversize blocks */
} fp_block;

typedef struct {
    size_t allocated; /* blocks alive (cached + leased) */
    size_t cached;
    size_t in_use;
    size_t bytes_allocated;
} fp_pool_stats;

typedef struct fp_pool fp_pool;

/* classes: strictly increasing positive sizes (copied). FP_EINVAL / FP_ENOMEM. */
int fp_pool_create(fp_pool **out, const size_t *classes, size_t nclasses, size_t max_cached);
void fp_pool_destroy(fp_pool *p);
int fp_pool_acquire(fp_pool *p, size_t n, fp_block *blk);
void fp_pool_release(fp_pool *p, fp_block *blk);
void fp_pool_trim(fp_pool *p);
void fp_pool_get_stats(const fp_pool *p, fp_pool_stats *st);
size_t fp_pool_page_size(void);

#endif /* FP_POOL_H */
