/* Plain-assert unit tests for fp_pool.c: byte-budget cache limits, the default
 * configuration, huge-page requests and their fallback (built like the other
 * csrc/tests under ASan/UBSan: cc -Icsrc csrc/tests/test_pool.c csrc/fp_pool.c). */
#undef NDEBUG
#include <assert.h>
#include <stdio.h>
#include <string.h>

#include "fp_pool.h"

static void test_budget_limits(void) {
    size_t classes[] = {4096, 1 << 20, 8 << 20, 64 << 20};
    fp_pool_config cfg = {classes, 4, 256, 8, (size_t)32 << 20, 0};
    fp_pool *p;
    assert(fp_pool_create_ex(&p, &cfg) == 0);
    assert(fp_pool_class_limit(p, 0) == 256); /* 32 MiB / 4 KiB capped at 256 */
    assert(fp_pool_class_limit(p, 1) == 32);
    assert(fp_pool_class_limit(p, 2) == 8);   /* 4, raised to min_cached */
    assert(fp_pool_class_limit(p, 3) == 8);
    assert(fp_pool_class_limit(p, 4) == 0);
    fp_block b[40];
    for (int i = 0; i < 40; i++) assert(fp_pool_acquire(p, 1 << 20, &b[i]) == 0 && b[i].cls == 1);
    for (int i = 0; i < 40; i++) fp_pool_release(p, &b[i]);
    fp_pool_stats st;
    fp_pool_get_stats(p, &st);
    assert(st.cached == 32 && st.allocated == 32 && st.in_use == 0);
    fp_pool_drop_cached(p);
    fp_pool_get_stats(p, &st);
    assert(st.cached == 0 && st.allocated == 0 && st.bytes_allocated == 0);
    /* still open after drop_cached: releases are cached again */
    assert(fp_pool_acquire(p, 1, &b[0]) == 0);
    fp_pool_release(p, &b[0]);
    fp_pool_get_stats(p, &st);
    assert(st.cached == 1);
    fp_pool_destroy(p);
}

static void test_default(void) {
    fp_pool_config cfg;
    fp_pool_default_config(&cfg);
    assert(cfg.nclasses == FP_POOL_DEFAULT_MAX_SHIFT - FP_POOL_DEFAULT_MIN_SHIFT + 1);
    assert(cfg.classes[0] == 4096 && cfg.classes[cfg.nclasses - 1] == ((size_t)64 << 20));
    fp_pool *p;
    assert(fp_pool_create_default(&p, 0) == 0);
    fp_block a;
    assert(fp_pool_acquire(p, 4097, &a) == 0 && a.cap == 8192 && a.huge_err == 0);
    assert(((uintptr_t)a.ptr % fp_pool_page_size()) == 0);
    fp_pool_release(p, &a);
    assert(fp_pool_acquire(p, (4 << 20) + 1, &a) == 0 && a.cap == (8u << 20));
    assert(a.flags & FP_BLOCK_MMAP);
    memset(a.ptr, 3, a.cap);
    fp_pool_release(p, &a);
    assert(fp_pool_acquire(p, 65 << 20, &a) == 0 && a.cls == -1 && a.cap == (65u << 20));
    fp_pool_release(p, &a);
    fp_pool_destroy(p);
}

static void test_hugepages(void) {
    fp_pool *p;
    assert(fp_pool_create_default(&p, 0) == 0);
    fp_block a, b;
    /* too small for a huge page: normal pages, and the reason says so */
    assert(fp_pool_acquire_ex(p, 4096, FP_POOL_HUGEPAGES, &a) == 0);
    assert(!(a.flags & FP_BLOCK_HUGE) && a.huge_err == FP_POOL_HUGE_TOO_SMALL);
    fp_pool_release(p, &a);
    /* big enough: huge pages if any are reserved, else a fallback with an errno */
    assert(fp_pool_acquire_ex(p, 4 << 20, FP_POOL_HUGEPAGES, &a) == 0);
    memset(a.ptr, 1, a.cap);
    fp_pool_stats st;
    fp_pool_get_stats(p, &st);
    if (a.flags & FP_BLOCK_HUGE) {
        assert(a.huge_err == 0 && st.huge_allocated == 1);
    } else {
        assert(a.huge_err > 0 && st.huge_allocated == 0);
    }
    /* oversize exact huge request */
    assert(fp_pool_acquire_ex(p, (65 << 20) + 5, FP_POOL_HUGEPAGES, &b) == 0);
    memset(b.ptr, 2, b.cap);
    fp_pool_release(p, &b);
    fp_pool_release(p, &a);
    fp_pool_get_stats(p, &st);
    assert(st.in_use == 0 && st.cached == 2); /* the 4 KiB and the 4 MiB block */
    /* a plain request may reuse the cached block whatever backs it */
    assert(fp_pool_acquire(p, 4 << 20, &a) == 0);
    fp_pool_get_stats(p, &st);
    assert(st.cached == 1 && st.in_use == 1);
    fp_pool_release(p, &a);
    int used = st.huge_allocated != 0;
    fp_pool_destroy(p);
    printf("test_pool: huge pages %s\n", used ? "used" : "unavailable (fallback tested)");
}

int main(void) {
    test_budget_limits();
    test_default();
    test_hugepages();
    puts("test_pool: ok");
    return 0;
}
