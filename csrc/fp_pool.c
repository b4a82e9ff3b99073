/* fp_pool.c - page-aligned, size-classed block pool; see fp_pool.h. */
#define _DEFAULT_SOURCE 1
#define _POSIX_C_SOURCE 200809L
#include "fp_pool.h"

#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

typedef struct {
    size_t size;
    size_t count;  /* cached blocks */
    void **free;   /* array of max_cached pointers */
} fp_pool_class;

struct fp_pool {
    size_t nclasses;
    size_t max_cached;
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

static void *fp_block_alloc(size_t size) {
    if (size == 0) size = 1;
    if (size >= FP_POOL_MMAP_THRESHOLD) {
        void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        return p == MAP_FAILED ? NULL : p;
    }
    void *p = NULL;
    if (posix_memalign(&p, fp_pool_page_size(), size) != 0) return NULL;
    return p;
}

static void fp_block_free(void *ptr, size_t size) {
    if (!ptr) return;
    if (size == 0) size = 1;
    if (size >= FP_POOL_MMAP_THRESHOLD)
        munmap(ptr, size);
    else
        free(ptr);
}

int fp_pool_create(fp_pool **out, const size_t *classes, size_t nclasses, size_t max_cached) {
    *out = NULL;
    if (nclasses == 0 || nclasses > FP_POOL_MAX_CLASSES) return FP_EINVAL;
    for (size_t i = 0; i < nclasses; i++)
        if (classes[i] == 0 || (i && classes[i] <= classes[i - 1])) return FP_EINVAL;
    fp_pool *p = calloc(1, sizeof(*p));
    if (!p) return FP_ENOMEM;
    p->nclasses = nclasses;
    p->max_cached = max_cached;
    for (size_t i = 0; i < nclasses; i++) {
        p->cls[i].size = classes[i];
        if (max_cached) {
            p->cls[i].free = calloc(max_cached, sizeof(void *));
            if (!p->cls[i].free) {
                fp_pool_destroy(p);
                return FP_ENOMEM;
            }
        }
    }
    *out = p;
    return FP_OK;
}

void fp_pool_trim(fp_pool *p) {
    for (size_t i = 0; i < p->nclasses; i++) {
        fp_pool_class *c = &p->cls[i];
        while (c->count) {
            fp_block_free(c->free[--c->count], c->size);
            p->stats.allocated--;
            p->stats.cached--;
            p->stats.bytes_allocated -= c->size;
        }
    }
    p->closed = 1;
}

void fp_pool_destroy(fp_pool *p) {
    if (!p) return;
    fp_pool_trim(p);
    for (size_t i = 0; i < p->nclasses; i++) free(p->cls[i].free);
    free(p);
}

int fp_pool_acquire(fp_pool *p, size_t n, fp_block *blk) {
    size_t i = 0;
    while (i < p->nclasses && p->cls[i].size < n) i++;
    if (i < p->nclasses) {
        fp_pool_class *c = &p->cls[i];
        blk->cls = (int)i;
        blk->cap = c->size;
        if (c->count) {
            blk->ptr = c->free[--c->count];
            p->stats.cached--;
        } else {
            blk->ptr = fp_block_alloc(c->size);
            if (!blk->ptr) return FP_ENOMEM;
            p->stats.allocated++;
            p->stats.bytes_allocated += c->size;
        }
    } else {
        blk->cls = -1;
        blk->cap = n;
        blk->ptr = fp_block_alloc(n);
        if (!blk->ptr) return FP_ENOMEM;
        p->stats.allocated++;
        p->stats.bytes_allocated += n;
    }
    p->stats.in_use++;
    return FP_OK;
}

void fp_pool_release(fp_pool *p, fp_block *blk) {
    if (!blk->ptr) return;
    p->stats.in_use--;
    if (blk->cls >= 0 && !p->closed) {
        fp_pool_class *c = &p->cls[blk->cls];
        if (c->count < p->max_cached) {
            c->free[c->count++] = blk->ptr;
            p->stats.cached++;
            goto done;
        }
    }
    fp_block_free(blk->ptr, blk->cap);
    p->stats.allocated--;
    p->stats.bytes_allocated -= blk->cap;
done:
    blk->ptr = NULL;
    blk->cap = 0;
    blk->cls = -1;
}

void fp_pool_get_stats(const fp_pool *p, fp_pool_stats *st) { *st = p->stats; }
