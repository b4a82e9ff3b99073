/* fp_pool.h - THE page-aligned, size-classed block pool (no Python.h).
 *
 * Every buffer fastp2p owns comes from one of these pools: the process-wide
 * default pool (created by fastp2p._native.buffer at import with
 * fp_pool_create_default(); AEAD frame blocks and MemoryRegions use it) or a
 * BufferPool a caller creates explicitly. The default pool's size classes and
 * cache limits are the FP_POOL_DEFAULT_* macros below and nowhere else.
 *
 * Blocks come from posix_memalign (page-aligned) below FP_POOL_MMAP_THRESHOLD
 * and from anonymous mmap at or above it, so RDMA can register them per block
 * without straddling foreign pages. Each size class keeps a bounded free list:
 * at most max_cached blocks, and when a byte budget is set, at most
 * max_cached_bytes / size blocks (but never fewer than min_cached). Recycled
 * blocks are already resident, so a hot path that reuses them does not
 * page-fault. Requests above the largest class get an exact-size, uncached
 * block (class index -1).
 *
 * Huge pages: with FP_POOL_HUGEPAGES (per pool, or per request through
 * fp_pool_acquire_ex), fresh blocks of at least FP_POOL_HUGE_PAGE_SIZE bytes
 * are mmap'd with MAP_HUGETLB (size rounded up to the huge page size). When
 * that fails (none reserved: /proc/sys/vm/nr_hugepages is 0, or mmap refuses)
 * the block falls back to normal pages and fp_block.huge_err says why:
 * 0 = not requested or hugepage-backed, FP_POOL_HUGE_TOO_SMALL = below the
 * huge page size, otherwise the positive errno of the failed mmap. A block that
 * got huge pages has FP_BLOCK_HUGE in fp_block.flags. Huge blocks are cached in
 * the same free lists (their flag travels with them).
 *
 * Ownership contract:
 * - fp_pool_create*() return a heap-allocated pool owned by the caller, who
 *   must call fp_pool_destroy() once. Destroying frees cached blocks only:
 *   blocks still leased must be given back with fp_pool_release() BEFORE
 *   destroy (the Cython owners keep their BufferPool alive to guarantee this).
 * - fp_pool_acquire*() fill a caller-owned fp_block; the memory it points to
 *   is owned by the caller until fp_pool_release() (which takes it back and
 *   zeroes the fp_block). Releasing a block twice is the caller's bug; the
 *   Cython layer prevents it.
 * - fp_pool_trim() (close) frees the cached blocks and makes later releases
 *   free their block instead of caching it. fp_pool_drop_cached() frees the
 *   cached blocks and leaves the pool open.
 * Not thread-safe: callers serialise (the GIL does, in fastp2p).
 */
#ifndef FP_POOL_H
#define FP_POOL_H

#include <stddef.h>
#include <stdint.h>
#include "fp_common.h"

#define FP_POOL_MAX_CLASSES 32
#define FP_POOL_MMAP_THRESHOLD ((size_t)1 << 20)
#define FP_POOL_HUGE_PAGE_SIZE ((size_t)2 << 20)

/* The default pool: power-of-two classes 4 KiB .. 64 MiB; per class at most
 * 256 blocks and 32 MiB (enough to recycle a full 16 MiB yamux window of
 * sealed or opened batches), but at least 8 blocks. */
#define FP_POOL_DEFAULT_MIN_SHIFT 12
#define FP_POOL_DEFAULT_MAX_SHIFT 26
#define FP_POOL_DEFAULT_MAX_CACHED 256
#define FP_POOL_DEFAULT_MIN_CACHED 8
#define FP_POOL_DEFAULT_CACHED_BYTES ((size_t)32 << 20)

/* pool and request flags */
#define FP_POOL_HUGEPAGES 1
/* fp_block.flags */
#define FP_BLOCK_MMAP 1
#define FP_BLOCK_HUGE 2
#define FP_BLOCK_ZEROED 4 /* fresh from mmap, so known to be zero-filled (never set on reuse) */
/* fp_block.huge_err when the request was below the huge page size */
#define FP_POOL_HUGE_TOO_SMALL (-1)

typedef struct {
    void *ptr;       /* page-aligned start */
    size_t cap;      /* usable bytes (class size, exact size, or huge-rounded) */
    int cls;         /* size class index, -1 for uncached oversize blocks */
    int flags;       /* FP_BLOCK_* */
    int huge_err;    /* why huge pages were not used (see above); 0 otherwise */
} fp_block;

typedef struct {
    size_t allocated; /* blocks alive (cached + leased) */
    size_t cached;
    size_t in_use;
    size_t bytes_allocated;
    size_t huge_allocated; /* blocks alive that are backed by huge pages */
} fp_pool_stats;

typedef struct {
    const size_t *classes;   /* strictly increasing positive sizes (copied) */
    size_t nclasses;
    size_t max_cached;       /* blocks per class, upper bound */
    size_t min_cached;       /* lower bound when a byte budget applies */
    size_t max_cached_bytes; /* per-class byte budget; 0 = no budget */
    int flags;               /* FP_POOL_HUGEPAGES */
} fp_pool_config;

typedef struct fp_pool fp_pool;

/* FP_EINVAL / FP_ENOMEM. */
int fp_pool_create(fp_pool **out, const size_t *classes, size_t nclasses, size_t max_cached);
int fp_pool_create_ex(fp_pool **out, const fp_pool_config *cfg);
/* The default configuration (FP_POOL_DEFAULT_*); flags as in fp_pool_config. */
int fp_pool_create_default(fp_pool **out, int flags);
/* Fill *cfg with the default configuration; classes points at static storage. */
void fp_pool_default_config(fp_pool_config *cfg);
void fp_pool_destroy(fp_pool *p);
int fp_pool_acquire(fp_pool *p, size_t n, fp_block *blk);
/* flags: FP_POOL_HUGEPAGES requests huge pages for this block (ORed with the pool's). */
int fp_pool_acquire_ex(fp_pool *p, size_t n, int flags, fp_block *blk);
void fp_pool_release(fp_pool *p, fp_block *blk);
void fp_pool_trim(fp_pool *p);
void fp_pool_drop_cached(fp_pool *p);
void fp_pool_get_stats(const fp_pool *p, fp_pool_stats *st);
/* Cache limit (blocks) of class i, or 0 when i is out of range. */
size_t fp_pool_class_limit(const fp_pool *p, size_t i);
size_t fp_pool_page_size(void);

#endif /* FP_POOL_H */
