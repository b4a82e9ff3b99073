/* Tests for fp_par.c (the pool) and fp_aead.c's parallel seal and open, which
 * must give a serial seal's and open's bytes, counts and failures exactly
 * (built by ci/test_c.sh, under ASan and UBSan). */
#define _GNU_SOURCE
#undef NDEBUG
#include <assert.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fp_aead.h"
#include "fp_par.h"

#define JOBS_MAX 200

typedef struct {
    atomic_int hits[JOBS_MAX];
    atomic_int busy[FP_PAR_MAX + 1]; /* a slot runs one job at a time */
} counts;

static void hit(void *arg, size_t i, unsigned slot) {
    counts *c = arg;
    assert(slot <= FP_PAR_MAX);
    assert(atomic_exchange(&c->busy[slot], 1) == 0);
    atomic_fetch_add(&c->hits[i], 1);
    for (volatile int k = 0; k < (int)(i % 7) * 50; k++) {
    }
    atomic_store(&c->busy[slot], 0);
}

/* Every job runs exactly once, whatever the thread count. */
static void check_batches(unsigned seed, int rounds) {
    for (int r = 0; r < rounds; r++) {
        counts c;
        size_t n = (size_t)(rand_r(&seed) % JOBS_MAX);
        unsigned threads = (unsigned)(rand_r(&seed) % 9);
        for (size_t i = 0; i < JOBS_MAX; i++) atomic_init(&c.hits[i], 0);
        for (size_t i = 0; i <= FP_PAR_MAX; i++) atomic_init(&c.busy[i], 0);
        fp_par_run(threads, hit, &c, n);
        for (size_t i = 0; i < JOBS_MAX; i++) assert(atomic_load(&c.hits[i]) == (i < n));
    }
}

static void *caller(void *p) {
    check_batches((unsigned)(uintptr_t)p, 400);
    return NULL;
}

static void test_pool(void) {
    check_batches(1, 2000);
    assert(fp_par_started() >= 1 && fp_par_started() <= 8);
    /* callers on several threads at once: one batch holds the pool, the others run alone */
    pthread_t t[4];
    for (uintptr_t i = 0; i < 4; i++) assert(pthread_create(&t[i], NULL, caller, (void *)(i + 7)) == 0);
    for (int i = 0; i < 4; i++) pthread_join(t[i], NULL);
    /* a forked child has no pool threads: it starts its own */
    pid_t pid = fork();
    assert(pid >= 0);
    if (pid == 0) {
        if (fp_par_started() != 0) _exit(3);
        check_batches(5, 200);
        _exit(fp_par_started() >= 1 ? 0 : 4);
    }
    int st = 0;
    assert(waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0);
    puts("pool ok");
}

/* fp_par_alert (wake the sleeping pool ahead of a batch) changes no batch's
 * outcome, whether the batch comes at once, after the alert's spin ran out, or
 * never; called with no pool started, it is a no-op. */
static void test_alert(void) {
    pid_t pid = fork();
    assert(pid >= 0);
    if (pid == 0) {
        fp_par_alert(); /* no pool thread yet */
        if (fp_par_started() != 0) _exit(3);
        _exit(0);
    }
    int st = 0;
    assert(waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0);
    unsigned seed = 11;
    for (int r = 0; r < 60; r++) {
        usleep(r % 3 == 0 ? 1000 : 50); /* past the spin: the pool threads sleep */
        fp_par_alert();
        if (r % 4 == 1) usleep(400); /* past the alert's spin too */
        if (r % 5 != 2) check_batches(seed + (unsigned)r, 3);
    }
    for (int r = 0; r < 200; r++) fp_par_alert(); /* alerts and no batch */
    check_batches(seed, 50);
    puts("alert ok");
}

static uint8_t key[32];

/* Parallel seal of len bytes with nclones equals a serial seal, the bytes cut
 * as a muxer's writes are (12-byte headers before payload pieces of every
 * size: segments of one frame and of many); the parallel open of the result
 * equals the serial open, also with a frame forged or cut. */
static void check_aead(int kind, size_t len, size_t nclones, unsigned *seed) {
    fp_aead ser, par, clones[8];
    uint64_t nonce0 = rand_r(seed) % 5;
    assert(fp_aead_init_kind(&ser, kind, key, nonce0, 1) == 0);
    assert(fp_aead_init_kind(&par, kind, key, nonce0, 1) == 0);
    for (size_t i = 0; i < nclones; i++) assert(fp_aead_clone(&clones[i], &par) == 0);
    uint8_t *pt = malloc(len + 1);
    for (size_t i = 0; i < len; i++) pt[i] = (uint8_t)rand_r(seed);
    fp_iovec iov[64];
    size_t cnt = 0, at = 0;
    while (at < len && cnt < 63) {
        size_t piece = cnt % 2 == 0 ? 12 : 1 + (size_t)rand_r(seed) % (rand_r(seed) % 2 ? 300000 : 900);
        if (piece > len - at) piece = len - at;
        iov[cnt++] = (fp_iovec){pt + at, piece};
        at += piece;
    }
    if (at < len) iov[cnt++] = (fp_iovec){pt + at, len - at};
    size_t need = fp_aead_sealed_size_iov(iov, cnt), o1 = 0, o2 = 0, parts = 0, frames = 0;
    size_t pos = 0, skip = 0, seg = 0;
    while (fp_aead_next_segment(iov, cnt, &pos, &skip, &seg))
        frames += (seg + FP_AEAD_SEAL_PLAINTEXT - 1) / FP_AEAD_SEAL_PLAINTEXT;
    uint8_t *c1 = malloc(need + 1), *c2 = malloc(need + 1);
    assert(fp_aead_seal_frames(&ser, iov, cnt, c1, need, &o1) == 0);
    assert(fp_aead_seal_frames_par(&par, clones, nclones, iov, cnt, c2, need, &o2, &parts) == 0);
    assert(parts >= 1 && parts <= nclones + 1);
    if (nclones && frames >= 2) assert(parts >= 2);
    assert(o1 == o2 && o1 == need && memcmp(c1, c2, need) == 0 && ser.nonce == par.nonce);
    if (need) assert(fp_aead_seal_frames_par(&par, clones, nclones, iov, cnt, c2, need - 1, &o2,
                                             &parts) == FP_ENOBUFS);
    for (size_t i = 0; i < nclones; i++) fp_aead_free(&clones[i]);
    fp_aead_free(&ser);
    fp_aead_free(&par);

    /* open: whole, then forged in one frame, then cut short */
    for (int mode = 0; mode < 3; mode++) {
        fp_aead rs, rp, rc[8];
        assert(fp_aead_init_kind(&rs, kind, key, nonce0, 0) == 0);
        assert(fp_aead_init_kind(&rp, kind, key, nonce0, 0) == 0);
        for (size_t i = 0; i < nclones; i++) assert(fp_aead_clone(&rc[i], &rp) == 0);
        size_t n = need;
        if (mode == 1 && n) c1[(size_t)rand_r(seed) % n] ^= 0x40;
        if (mode == 2 && n) n -= (size_t)rand_r(seed) % n;
        uint8_t *p1 = malloc(n + 1), *p2 = malloc(n + 1);
        size_t u1 = 0, u2 = 0, l1 = 0, l2 = 0;
        int r1 = fp_aead_open_frames(&rs, c1, n, &u1, p1, n, &l1);
        int r2 = fp_aead_open_frames_par(&rp, rc, nclones, c1, n, &u2, p2, n, &l2, &parts);
        if (mode == 0 && nclones && frames >= 2) assert(parts >= 2);
        assert(r1 == r2 && u1 == u2 && l1 == l2 && memcmp(p1, p2, l1) == 0);
        if (!r1) assert(rs.nonce == rp.nonce && memcmp(p1, pt, l1) == 0);
        if (mode == 1) memcpy(c1, c2, need); /* undo the forgery (c2: the same seal) */
        for (size_t i = 0; i < nclones; i++) fp_aead_free(&rc[i]);
        fp_aead_free(&rs);
        fp_aead_free(&rp);
        free(p1);
        free(p2);
    }
    free(pt);
    free(c1);
    free(c2);
}

static void test_aead(void) {
    unsigned seed = 42;
    const size_t P = FP_AEAD_SEAL_PLAINTEXT;
    size_t lens[] = {0, 1, P - 1, P, P + 1, 2 * P, 3 * P + 7, 9 * P, 17 * P + 100};
    int kinds[] = {FP_AEAD_CHACHAPOLY, FP_AEAD_AESGCM};
    for (size_t k = 0; k < 2; k++)
        for (size_t i = 0; i < sizeof lens / sizeof *lens; i++)
            for (size_t nc = 0; nc <= 7; nc += 1 + (nc > 2))
                check_aead(kinds[k], lens[i], nc, &seed);
    /* a frame shorter than its tag after whole frames: FP_EFRAME after them, as serial */
    fp_aead tx, rs, rp, rc[2];
    assert(fp_aead_init_kind(&tx, FP_AEAD_AESGCM, key, 0, 1) == 0);
    size_t len = 3 * P, need = fp_aead_sealed_size(len), o = 0;
    uint8_t *pt = calloc(1, len), *ct = calloc(1, need + 4), *out = malloc(need + 4);
    fp_iovec v = {pt, len};
    assert(fp_aead_seal_frames(&tx, &v, 1, ct, need, &o) == 0);
    ct[need] = 0, ct[need + 1] = 5; /* length 5 < 16 */
    assert(fp_aead_init_kind(&rs, FP_AEAD_AESGCM, key, 0, 0) == 0);
    assert(fp_aead_init_kind(&rp, FP_AEAD_AESGCM, key, 0, 0) == 0);
    for (int i = 0; i < 2; i++) assert(fp_aead_clone(&rc[i], &rp) == 0);
    size_t u1, u2, l1, l2;
    assert(fp_aead_open_frames(&rs, ct, need + 4, &u1, out, need + 4, &l1) == FP_EFRAME);
    size_t parts = 0;
    assert(fp_aead_open_frames_par(&rp, rc, 2, ct, need + 4, &u2, out, need + 4, &l2, &parts) == FP_EFRAME);
    assert(parts == 3);
    assert(u1 == u2 && u1 == need && l1 == l2 && l1 == len);
    for (int i = 0; i < 2; i++) fp_aead_free(&rc[i]);
    fp_aead_free(&tx);
    fp_aead_free(&rs);
    fp_aead_free(&rp);
    free(pt);
    free(ct);
    free(out);
    puts("aead parallel ok");
}

int main(void) {
    for (int i = 0; i < 32; i++) key[i] = (uint8_t)(i * 3 + 1);
    test_pool();
    test_alert();
    test_aead();
    puts("test_par: all passed");
    return 0;
}
