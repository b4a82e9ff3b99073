/* fp_pool.c - page-aligned, size-classed block pool; see fp_pool.h. */
#define _DEFAULT_SOURCE 1
#define _POSIX_C_SOURCE 200809L
#include "fp_pool.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#ifndef MAP_HUGETLB
#define MAP_HUGETLB 0x40000 /* Linux value; mmap fails cleanly where unsupported */
#endif

typedef struct {
    void *ptr;
    int flags; /* FP_BLOCK_* */
} fp_cached_block;

typedef struct {
    size_t size;
    size_t limit;           /* cache limit in blocks */
    size_t count;           /* cached blocks */
    fp_cached_block *free;  /* array of `limit` entries */
} fp_pool_class;

struct fp_pool {
    size_t nclasses;
    int flags;
    int closed;
    fp_pool_stats stats;
    fp_pool_class cls[FP_POOL_MAX_CLASSES];
};

size_t fp_pool_page_size(void) {
    static size_t page;
    if (!page) {
        long ps = sysconf(_SC_PAGESIZE);
        page = ps > 0 ? (size_t)ps : 4096;
    }
    return page;
}

static size_t fp_huge_round(size_t size) {
    return (size + FP_POOL_HUGE_PAGE_SIZE - 1) & ~(FP_POOL_HUGE_PAGE_SIZE - 1);
}

/* Allocate `size` bytes; sets *flags and *huge_err (see fp_pool.h). */
static void *fp_block_alloc(size_t size, int want_huge, int *flags, int *huge_err) {
    *flags = 0;
    *huge_err = 0;
    if (size == 0) size = 1;
    if (want_huge) {
        if (size < FP_POOL_HUGE_PAGE_SIZE) {
            *huge_err = FP_POOL_HUGE_TOO_SMALL;
        } else {
            void *p = mmap(NULL, fp_huge_round(size), PROT_READ | PROT_WRITE,
                           MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB, -1, 0);
            if (p != MAP_FAILED) {
                *flags = FP_BLOCK_MMAP | FP_BLOCK_HUGE | FP_BLOCK_ZEROED;
                return p;
            }
            *huge_err = errno ? errno : ENOMEM;
        }
    }
    if (size >= FP_POOL_MMAP_THRESHOLD) {
        void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) return NULL;
        *flags = FP_BLOCK_MMAP | FP_BLOCK_ZEROED;
        return p;
    }
    void *p = NULL;
    if (posix_memalign(&p, fp_pool_page_size(), size) != 0) return NULL;
    return p;
}

static void fp_block_free(void *ptr, size_t size, int flags) {
    if (!ptr) return;
    if (size == 0) size = 1;
    if (flags & FP_BLOCK_HUGE)
        munmap(ptr, fp_huge_round(size));
    else if (flags & FP_BLOCK_MMAP)
        munmap(ptr, size);
    else
        free(ptr);
}

int fp_pool_create_ex(fp_pool **out, const fp_pool_config *cfg) {
    *out = NULL;
    size_t nclasses = cfg->nclasses;
    if (nclasses == 0 || nclasses > FP_POOL_MAX_CLASSES || !cfg->classes) return FP_EINVAL;
    for (size_t i = 0; i < nclasses; i++)
        if (cfg->classes[i] == 0 || (i && cfg->classes[i] <= cfg->classes[i - 1])) return FP_EINVAL;
    fp_pool *p = calloc(1, sizeof(*p));
    if (!p) return FP_ENOMEM;
    p->nclasses = nclasses;
    p->flags = cfg->flags;
    size_t lo = cfg->min_cached < cfg->max_cached ? cfg->min_cached : cfg->max_cached;
    for (size_t i = 0; i < nclasses; i++) {
        fp_pool_class *c = &p->cls[i];
        c->size = cfg->classes[i];
        c->limit = cfg->max_cached;
        if (cfg->max_cached_bytes) {
            size_t per = cfg->max_cached_bytes / c->size;
            if (per < lo) per = lo;
            if (per < c->limit) c->limit = per;
        }
        if (c->limit) {
            c->free = calloc(c->limit, sizeof(*c->free));
            if (!c->free) {
                fp_pool_destroy(p);
                return FP_ENOMEM;
            }
        }
    }
    *out = p;
    return FP_OK;
}

int fp_pool_create(fp_pool **out, const size_t *classes, size_t nclasses, size_t max_cached) {
    fp_pool_config cfg = {classes, nclasses, max_cached, 0, 0, 0};
    return fp_pool_create_ex(out, &cfg);
}

void fp_pool_default_config(fp_pool_config *cfg) {
    static size_t classes[FP_POOL_DEFAULT_MAX_SHIFT - FP_POOL_DEFAULT_MIN_SHIFT + 1];
    size_t n = FP_POOL_DEFAULT_MAX_SHIFT - FP_POOL_DEFAULT_MIN_SHIFT + 1;
    for (size_t i = 0; i < n; i++) classes[i] = (size_t)1 << (FP_POOL_DEFAULT_MIN_SHIFT + i);
    cfg->classes = classes;
    cfg->nclasses = n;
    cfg->max_cached = FP_POOL_DEFAULT_MAX_CACHED;
    cfg->min_cached = FP_POOL_DEFAULT_MIN_CACHED;
    cfg->max_cached_bytes = FP_POOL_DEFAULT_CACHED_BYTES;
    cfg->flags = 0;
}

int fp_pool_create_default(fp_pool **out, int flags) {
    fp_pool_config cfg;
    fp_pool_default_config(&cfg);
    cfg.flags = flags;
    return fp_pool_create_ex(out, &cfg);
}

static void fp_pool_forget(fp_pool *p, size_t size, int flags) {
    p->stats.allocated--;
    p->stats.bytes_allocated -= size;
    if (flags & FP_BLOCK_HUGE) p->stats.huge_allocated--;
}

void fp_pool_drop_cached(fp_pool *p) {
    for (size_t i = 0; i < p->nclasses; i++) {
        fp_pool_class *c = &p->cls[i];
        while (c->count) {
            fp_cached_block *e = &c->free[--c->count];
            fp_block_free(e->ptr, c->size, e->flags);
            fp_pool_forget(p, c->size, e->flags);
            p->stats.cached--;
        }
    }
}

void fp_pool_trim(fp_pool *p) {
    fp_pool_drop_cached(p);
    p->closed = 1;
}

void fp_pool_destroy(fp_pool *p) {
    if (!p) return;
    fp_pool_trim(p);
    for (size_t i = 0; i < p->nclasses; i++) free(p->cls[i].free);
    free(p);
}

static int fp_pool_fresh(fp_pool *p, size_t size, int huge, fp_block *blk) {
    blk->ptr = fp_block_alloc(size, huge, &blk->flags, &blk->huge_err);
    if (!blk->ptr) return FP_ENOMEM;
    p->stats.allocated++;
    p->stats.bytes_allocated += size;
    if (blk->flags & FP_BLOCK_HUGE) p->stats.huge_allocated++;
    return FP_OK;
}

int fp_pool_acquire_ex(fp_pool *p, size_t n, int flags, fp_block *blk) {
    int huge = ((flags | p->flags) & FP_POOL_HUGEPAGES) != 0;
    size_t lo = 0, hi = p->nclasses;
    while (lo < hi) { /* smallest class >= n */
        size_t mid = (lo + hi) / 2;
        if (p->cls[mid].size < n)
            lo = mid + 1;
        else
            hi = mid;
    }
    blk->huge_err = 0;
    if (lo < p->nclasses) {
        fp_pool_class *c = &p->cls[lo];
        blk->cls = (int)lo;
        blk->cap = c->size;
        if (c->count) {
            size_t k = c->count - 1;
            if (huge && c->size >= FP_POOL_HUGE_PAGE_SIZE) {
                /* a huge-page request takes a cached huge block, or a fresh one */
                while (k > 0 && !(c->free[k].flags & FP_BLOCK_HUGE)) k--;
                if (!(c->free[k].flags & FP_BLOCK_HUGE)) goto fresh;
            }
            blk->ptr = c->free[k].ptr;
            blk->flags = c->free[k].flags;
            c->free[k] = c->free[--c->count];
            p->stats.cached--;
            p->stats.in_use++;
            return FP_OK;
        }
    fresh:
        if (fp_pool_fresh(p, c->size, huge, blk) != FP_OK) return FP_ENOMEM;
    } else {
        blk->cls = -1;
        blk->cap = n;
        if (fp_pool_fresh(p, n, huge, blk) != FP_OK) return FP_ENOMEM;
    }
    p->stats.in_use++;
    return FP_OK;
}

int fp_pool_acquire(fp_pool *p, size_t n, fp_block *blk) { return fp_pool_acquire_ex(p, n, 0, blk); }

void fp_pool_release(fp_pool *p, fp_block *blk) {
    if (!blk->ptr) return;
    p->stats.in_use--;
    if (blk->cls >= 0 && !p->closed) {
        fp_pool_class *c = &p->cls[blk->cls];
        if (c->count < c->limit) {
            c->free[c->count].ptr = blk->ptr;
            c->free[c->count].flags = blk->flags & ~FP_BLOCK_ZEROED;
            c->count++;
            p->stats.cached++;
            goto done;
        }
    }
    fp_block_free(blk->ptr, blk->cap, blk->flags);
    fp_pool_forget(p, blk->cap, blk->flags);
done:
    blk->ptr = NULL;
    blk->cap = 0;
    blk->cls = -1;
    blk->flags = 0;
    blk->huge_err = 0;
}

void fp_pool_get_stats(const fp_pool *p, fp_pool_stats *st) { *st = p->stats; }

size_t fp_pool_class_limit(const fp_pool *p, size_t i) { return i < p->nclasses ? p->cls[i].limit : 0; }
