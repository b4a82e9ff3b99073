/* Plain-assert unit tests for fp_ring.c (built by ci/test_c.sh under ASan/UBSan).
 * The "peer" that corrupts shared state is a separate MAP_SHARED mapping of
 * the same memfd, as a hostile process would have. */
#define _GNU_SOURCE 1
#undef NDEBUG
#include <assert.h>
#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "fp_ring.h"

#define PAGE ((uint64_t)fp_ring_page_size())

static int count_fds(void) {
    DIR *d = opendir("/proc/self/fd");
    assert(d);
    int n = 0;
    while (readdir(d)) n++;
    closedir(d);
    return n;
}

static uint64_t rng_state = 0x9E3779B97F4A7C15u;
static uint64_t rng(uint64_t *s) {
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * UINT64_C(2685821657736338717);
}

/* The peer's view of the header. */
static uint8_t *peer_map(int fd) {
    void *p = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    assert(p != MAP_FAILED);
    return p;
}
static void peer_put64(uint8_t *hdr, size_t off, uint64_t v) { memcpy(hdr + off, &v, 8); }
static void peer_put32(uint8_t *hdr, size_t off, uint32_t v) { memcpy(hdr + off, &v, 4); }
static uint64_t peer_get64(const uint8_t *hdr, size_t off) {
    uint64_t v;
    memcpy(&v, hdr + off, 8);
    return v;
}
static uint32_t peer_get32(const uint8_t *hdr, size_t off) {
    uint32_t v;
    memcpy(&v, hdr + off, 4);
    return v;
}

static void pair(fp_ring_segment *a, fp_ring_segment *b, uint64_t cap0, uint64_t cap1) {
    assert(fp_ring_segment_create(a, cap0, cap1) == 0);
    assert(a->fd >= 0 && a->creator == 1 && a->map);
    assert(fp_ring_segment_attach(b, a->fd) == 0);
    assert(b->fd >= 0 && b->fd != a->fd && b->creator == 0);
    assert(a->w.cap == cap0 && b->r.cap == cap0 && b->w.cap == cap1 && a->r.cap == cap1);
}

static void unpair(fp_ring_segment *a, fp_ring_segment *b) {
    fp_ring_segment_destroy(a);
    fp_ring_segment_destroy(b);
    fp_ring_segment_destroy(a); /* idempotent */
    assert(a->fd == -1 && !a->map && b->fd == -1 && !b->map);
}

static void fill(uint8_t *p, size_t n, uint64_t pos) {
    for (size_t i = 0; i < n; i++) p[i] = (uint8_t)((pos + i) * 131 + ((pos + i) >> 9));
}
static int check(const uint8_t *p, size_t n, uint64_t pos) {
    for (size_t i = 0; i < n; i++)
        if (p[i] != (uint8_t)((pos + i) * 131 + ((pos + i) >> 9))) return 0;
    return 1;
}

static void test_caps(void) {
    fp_ring_segment s;
    assert(fp_ring_check_cap(PAGE) == 0);
    assert(fp_ring_check_cap(FP_RING_MAX_CAP) == 0);
    assert(fp_ring_check_cap(0) == FP_EINVAL);
    assert(fp_ring_check_cap(PAGE / 2) == FP_EINVAL);
    assert(fp_ring_check_cap(3 * PAGE) == FP_EINVAL);
    assert(fp_ring_check_cap(FP_RING_MAX_CAP * 2) == FP_EINVAL);
    assert(fp_ring_check_cap((uint64_t)1 << 63) == FP_EINVAL);
    assert(fp_ring_segment_create(&s, 3 * PAGE, PAGE) == FP_EINVAL && s.fd == -1 && !s.map);
    assert(fp_ring_segment_size(PAGE, 2 * PAGE) == 4 * PAGE);
    assert(fp_ring_segment_size(PAGE, 0) == 0);
}

static void test_roundtrip_wrap(void) {
    fp_ring_segment a, b;
    const uint64_t cap = 2 * PAGE;
    pair(&a, &b, cap, PAGE);
    size_t n, len;
    const uint8_t *p;
    uint8_t src[3 * 8192];
    assert(sizeof src >= cap + 100);
    assert(fp_ring_writer_free(&a.w, &n) == 0 && n == cap);
    assert(fp_ring_reader_peek(&b.r, &p, &len) == 0 && len == 0);
    assert(fp_ring_reader_consume(&b.r, 1) == FP_EINVAL);
    assert(fp_ring_reader_consume(&b.r, 0) == 0);
    uint64_t wpos = 0, rpos = 0;
    /* odd-sized chunks through many wraps; every span is contiguous */
    for (int it = 0; it < 2000; it++) {
        size_t want = 1 + (size_t)(rng(&rng_state) % (cap + 100));
        fill(src, want, wpos);
        size_t cut = want / 3;
        fp_ring_iov iov[3] = {{src, cut}, {NULL, 0}, {src + cut, want - cut}};
        size_t w;
        assert(fp_ring_writer_write(&a.w, iov, 3, &w) == 0);
        assert(w <= want && w == (want < cap - (wpos - rpos) ? want : cap - (wpos - rpos)));
        wpos += w;
        assert(fp_ring_reader_readable(&b.r, &n) == 0 && n == wpos - rpos);
        assert(fp_ring_reader_peek(&b.r, &p, &len) == 0 && len == wpos - rpos);
        assert(p >= b.r.data && p + len <= b.r.data + 2 * cap);
        assert(check(p, len, rpos));
        size_t take = (size_t)(rng(&rng_state) % (len + 1));
        if (it % 7 == 0) take = len;
        assert(fp_ring_reader_consume(&b.r, len + 1) == FP_EINVAL);
        assert(fp_ring_reader_consume(&b.r, take) == 0);
        rpos += take;
        assert(a.w.head == wpos && b.r.tail == rpos);
    }
    assert(wpos > 100 * cap);
    /* reserve/commit */
    uint8_t *wp;
    assert(fp_ring_writer_reserve(&a.w, &wp, &len) == 0 && len == cap - (wpos - rpos));
    fill(wp, len, wpos);
    assert(fp_ring_writer_commit(&a.w, len + 1) == FP_EINVAL);
    assert(fp_ring_writer_commit(&a.w, len) == 0);
    wpos += len;
    assert(fp_ring_writer_free(&a.w, &n) == 0 && n == 0);
    size_t w;
    fp_ring_iov one = {src, 10};
    assert(fp_ring_writer_write(&a.w, &one, 1, &w) == 0 && w == 0);
    assert(fp_ring_reader_peek(&b.r, &p, &len) == 0 && len == cap && check(p, len, rpos));
    assert(fp_ring_reader_consume(&b.r, len) == 0);
    /* the reverse ring */
    fill(src, 100, 0);
    assert(fp_ring_writer_write(&b.w, &one, 1, &w) == 0 && w == 10);
    assert(fp_ring_reader_peek(&a.r, &p, &len) == 0 && len == 10 && check(p, 10, 0));
    unpair(&a, &b);
}

static void test_index_wrap_2_64(void) {
    fp_ring_segment a, b;
    pair(&a, &b, PAGE, PAGE);
    uint64_t start = UINT64_MAX - PAGE / 2;
    a.w.head = a.w.tail_seen = start;
    b.r.tail = b.r.head_seen = start;
    uint8_t *hdr = peer_map(a.fd);
    peer_put64(hdr, FP_RING_OFF_HEAD(0), start);
    peer_put64(hdr, FP_RING_OFF_TAIL(0), start);
    uint8_t src[4096];
    uint64_t pos = 0;
    for (int i = 0; i < 64; i++) {
        size_t want = 1 + (size_t)(rng(&rng_state) % sizeof src), w, len;
        fill(src, want, pos);
        fp_ring_iov iov = {src, want};
        assert(fp_ring_writer_write(&a.w, &iov, 1, &w) == 0 && w > 0);
        const uint8_t *p;
        assert(fp_ring_reader_peek(&b.r, &p, &len) == 0 && len == w && check(p, len, pos));
        assert(fp_ring_reader_consume(&b.r, len) == 0);
        pos += w;
    }
    assert(a.w.head < start); /* wrapped past 2^64 */
    munmap(hdr, PAGE);
    unpair(&a, &b);
}

static void test_wake_protocol(void) {
    fp_ring_segment a, b;
    pair(&a, &b, PAGE, PAGE);
    uint8_t *hdr = peer_map(a.fd);
    uint8_t src[8192];
    size_t w, len;
    const uint8_t *p;
    fill(src, sizeof src, 0);
    /* consumer sleeps on an empty ring; the next write must report a wake */
    assert(fp_ring_writer_wake(&a.w) == 0);
    assert(fp_ring_reader_arm(&b.r) == 0);
    assert(peer_get32(hdr, FP_RING_OFF_SLEEPING(0)) == 1);
    fp_ring_iov iov = {src, 100};
    assert(fp_ring_writer_write(&a.w, &iov, 1, &w) == 0 && w == 100);
    assert(fp_ring_writer_wake(&a.w) == 1);
    assert(peer_get32(hdr, FP_RING_OFF_SLEEPING(0)) == 0);
    assert(fp_ring_writer_wake(&a.w) == 0);
    /* arming with data readable: don't sleep, flag left clear */
    assert(fp_ring_reader_arm(&b.r) == 1);
    assert(peer_get32(hdr, FP_RING_OFF_SLEEPING(0)) == 0);
    assert(fp_ring_writer_wake(&a.w) == 0);
    /* producer fills the ring and waits for space */
    iov.len = sizeof src;
    assert(fp_ring_writer_write(&a.w, &iov, 1, &w) == 0 && w == PAGE - 100);
    assert(fp_ring_writer_arm_space(&a.w) == 0);
    assert(peer_get32(hdr, FP_RING_OFF_WAITING(0)) == 1);
    assert(fp_ring_reader_peek(&b.r, &p, &len) == 0 && len == PAGE);
    assert(fp_ring_reader_consume(&b.r, 1) == 1);
    assert(peer_get32(hdr, FP_RING_OFF_WAITING(0)) == 0);
    assert(fp_ring_reader_consume(&b.r, 1) == 0);
    /* space already there: don't wait, flag left clear */
    assert(fp_ring_writer_arm_space(&a.w) == 1);
    assert(peer_get32(hdr, FP_RING_OFF_WAITING(0)) == 0);
    assert(fp_ring_reader_consume(&b.r, 1) == 0);
    /* a peer scribbling the flags only causes spurious wakes */
    peer_put32(hdr, FP_RING_OFF_SLEEPING(0), 0xdeadbeef);
    assert(fp_ring_writer_wake(&a.w) == 1 && fp_ring_writer_wake(&a.w) == 0);
    peer_put32(hdr, FP_RING_OFF_WAITING(0), 7);
    assert(fp_ring_reader_consume(&b.r, 1) == 1);
    /* spin: data present returns at once; empty ring times out with 0 */
    size_t n = 99;
    assert(fp_ring_reader_spin(&b.r, 1000000, &n) == 0 && n == PAGE - 4);
    assert(fp_ring_reader_consume(&b.r, n) == 0);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    assert(fp_ring_reader_spin(&b.r, 2000000, &n) == 0 && n == 0);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double el = (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
    assert(el >= 0.0019 && el < 1.0);
    assert(fp_ring_reader_spin(&b.r, 0, &n) == 0 && n == 0);
    munmap(hdr, PAGE);
    unpair(&a, &b);
}

/* Consumer-side corruption: each case on a fresh pair. */
static void test_corrupt_consumer(void) {
    enum { BEYOND, BEYOND_HUGE, BEHIND_TAIL, BACKWARDS, FULL_OK, CAP_SCRIBBLE, NCASES };
    for (int c = 0; c < NCASES; c++) {
        fp_ring_segment a, b;
        pair(&a, &b, PAGE, PAGE);
        uint8_t *hdr = peer_map(a.fd);
        uint8_t src[512];
        size_t w, len, n;
        const uint8_t *p;
        fill(src, sizeof src, 0);
        fp_ring_iov iov = {src, 300};
        assert(fp_ring_writer_write(&a.w, &iov, 1, &w) == 0 && w == 300);
        assert(fp_ring_reader_peek(&b.r, &p, &len) == 0 && len == 300);
        assert(fp_ring_reader_consume(&b.r, 100) == 0); /* tail 100, head_seen 300 */
        int expect = FP_ECORRUPT;
        switch (c) {
        case BEYOND: peer_put64(hdr, FP_RING_OFF_HEAD(0), 100 + PAGE + 1); break;
        case BEYOND_HUGE: peer_put64(hdr, FP_RING_OFF_HEAD(0), UINT64_MAX); break;
        case BEHIND_TAIL: peer_put64(hdr, FP_RING_OFF_HEAD(0), 99); break;
        case BACKWARDS: peer_put64(hdr, FP_RING_OFF_HEAD(0), 299); break;
        case FULL_OK: peer_put64(hdr, FP_RING_OFF_HEAD(0), 100 + PAGE); expect = 0; break;
        case CAP_SCRIBBLE:
            peer_put64(hdr, FP_RING_OFF_CAP0, (uint64_t)1 << 40);
            peer_put64(hdr, FP_RING_OFF_CAP1, 0);
            memset(hdr, 0xff, 16);
            expect = 0;
            break;
        }
        assert(fp_ring_reader_peek(&b.r, &p, &len) == expect);
        if (expect == 0) {
            assert(p >= b.r.data && p + len <= b.r.data + 2 * PAGE && len <= PAGE);
            volatile uint8_t sink = 0;
            for (size_t i = 0; i < len; i++) sink ^= p[i];
            (void)sink;
        } else {
            /* sticky, even once the peer restores a sane value */
            peer_put64(hdr, FP_RING_OFF_HEAD(0), 300);
            assert(fp_ring_reader_readable(&b.r, &n) == FP_ECORRUPT);
            assert(fp_ring_reader_consume(&b.r, 0) == FP_ECORRUPT);
            assert(fp_ring_reader_arm(&b.r) == FP_ECORRUPT);
            assert(fp_ring_reader_spin(&b.r, 1000, &n) == FP_ECORRUPT);
            assert(b.r.tail == 100 && peer_get64(hdr, FP_RING_OFF_TAIL(0)) == 100);
        }
        munmap(hdr, PAGE);
        unpair(&a, &b);
    }
}

/* Producer-side corruption of the consumer's tail. */
static void test_corrupt_producer(void) {
    enum { AHEAD, AHEAD_HUGE, BACKWARDS, BEHIND_ZERO, EQUAL_OK, NCASES };
    for (int c = 0; c < NCASES; c++) {
        fp_ring_segment a, b;
        pair(&a, &b, PAGE, PAGE);
        uint8_t *hdr = peer_map(a.fd);
        uint8_t src[512];
        size_t w, n, len;
        const uint8_t *p;
        fill(src, sizeof src, 0);
        fp_ring_iov iov = {src, 300};
        assert(fp_ring_writer_write(&a.w, &iov, 1, &w) == 0 && w == 300);
        assert(fp_ring_reader_peek(&b.r, &p, &len) == 0 && len == 300);
        assert(fp_ring_reader_consume(&b.r, 100) == 0);
        assert(fp_ring_writer_free(&a.w, &n) == 0 && n == PAGE - 200); /* tail_seen 100 */
        int expect = FP_ECORRUPT;
        switch (c) {
        case AHEAD: peer_put64(hdr, FP_RING_OFF_TAIL(0), 301); break;
        case AHEAD_HUGE: peer_put64(hdr, FP_RING_OFF_TAIL(0), (uint64_t)1 << 62); break;
        case BACKWARDS: peer_put64(hdr, FP_RING_OFF_TAIL(0), 99); break;
        case BEHIND_ZERO: peer_put64(hdr, FP_RING_OFF_TAIL(0), UINT64_MAX); break;
        case EQUAL_OK: peer_put64(hdr, FP_RING_OFF_TAIL(0), 300); expect = 0; break;
        }
        uint64_t head_before = peer_get64(hdr, FP_RING_OFF_HEAD(0));
        assert(fp_ring_writer_write(&a.w, &iov, 1, &w) == expect);
        if (expect) {
            assert(peer_get64(hdr, FP_RING_OFF_HEAD(0)) == head_before && a.w.head == 300);
            peer_put64(hdr, FP_RING_OFF_TAIL(0), 100);
            assert(fp_ring_writer_free(&a.w, &n) == FP_ECORRUPT);
            assert(fp_ring_writer_arm_space(&a.w) == FP_ECORRUPT);
            assert(fp_ring_writer_wake(&a.w) == FP_ECORRUPT);
            uint8_t *wp;
            assert(fp_ring_writer_reserve(&a.w, &wp, &n) == FP_ECORRUPT);
            assert(fp_ring_writer_commit(&a.w, 0) == FP_ECORRUPT);
        } else {
            assert(w == 300 && fp_ring_writer_free(&a.w, &n) == 0 && n == PAGE - 300);
        }
        munmap(hdr, PAGE);
        unpair(&a, &b);
    }
}

/* A memfd with `hdr` bytes at offset 0, `size` bytes long, sealed with `seals`. */
static int raw_memfd(const void *hdr, size_t hlen, uint64_t size, int seals) {
    int fd = memfd_create("test-ring", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    assert(fd >= 0);
    assert(ftruncate(fd, (off_t)size) == 0);
    if (hlen) assert(pwrite(fd, hdr, hlen, 0) == (ssize_t)(hlen < size ? hlen : hlen));
    if (hlen > size) assert(ftruncate(fd, (off_t)size) == 0);
    if (seals) assert(fcntl(fd, F_ADD_SEALS, seals) == 0);
    return fd;
}

static void test_attach_invalid(void) {
    int fds_before = count_fds();
    fp_ring_segment s;
    const int SEALS = F_SEAL_SHRINK | F_SEAL_GROW;
    struct {
        uint8_t magic[8];
        uint32_t version, reserved;
        uint64_t cap0, cap1;
    } good = {{'f', 'p', '2', 'p', 'r', 'i', 'n', 'g'}, FP_RING_VERSION, 0, PAGE, 2 * PAGE}, h;
    uint64_t size = PAGE + 3 * PAGE;
    int fd;

    fd = raw_memfd(&good, sizeof good, size, SEALS);
    assert(fp_ring_segment_attach(&s, fd) == 0 && s.r.cap == PAGE && s.w.cap == 2 * PAGE);
    fp_ring_segment_destroy(&s);
    close(fd);

#define EXPECT_ATTACH(hdrp, sz, seals, want)                       \
    do {                                                           \
        fd = raw_memfd((hdrp), sizeof *(hdrp), (sz), (seals));     \
        assert(fp_ring_segment_attach(&s, fd) == (want));          \
        assert(s.fd == -1 && !s.map);                              \
        close(fd);                                                 \
    } while (0)

    h = good; h.magic[0] ^= 1;               EXPECT_ATTACH(&h, size, SEALS, FP_ECORRUPT);
    h = good; h.version = 2;                 EXPECT_ATTACH(&h, size, SEALS, FP_ECORRUPT);
    h = good; h.cap0 = 0;                    EXPECT_ATTACH(&h, size, SEALS, FP_ECORRUPT);
    h = good; h.cap0 = 3 * PAGE;             EXPECT_ATTACH(&h, size, SEALS, FP_ECORRUPT);
    h = good; h.cap1 = PAGE / 2;             EXPECT_ATTACH(&h, size, SEALS, FP_ECORRUPT);
    h = good; h.cap1 = PAGE + 1;             EXPECT_ATTACH(&h, size, SEALS, FP_ECORRUPT);
    h = good; h.cap0 = FP_RING_MAX_CAP * 2;  EXPECT_ATTACH(&h, size, SEALS, FP_ECORRUPT);
    h = good; h.cap0 = (uint64_t)1 << 63;    EXPECT_ATTACH(&h, size, SEALS, FP_ECORRUPT);
    h = good; h.cap0 = h.cap1 = FP_RING_MAX_CAP; EXPECT_ATTACH(&h, size, SEALS, FP_ECORRUPT);
    h = good;                                EXPECT_ATTACH(&h, size - 1, SEALS, FP_ECORRUPT);
    h = good;                                EXPECT_ATTACH(&h, PAGE, SEALS, FP_ECORRUPT);
    h = good;                                EXPECT_ATTACH(&h, 16, SEALS, FP_ECORRUPT);
    h = good;                                EXPECT_ATTACH(&h, 0, SEALS, FP_ECORRUPT);
    h = good;                                EXPECT_ATTACH(&h, size, 0, FP_ECORRUPT);
    h = good;                                EXPECT_ATTACH(&h, size, F_SEAL_GROW, FP_ECORRUPT);
    h = good;                                EXPECT_ATTACH(&h, size, SEALS | F_SEAL_WRITE, FP_ECORRUPT);

    /* indices of the attacher's own ring already impossible */
    fp_ring_segment a;
    assert(fp_ring_segment_create(&a, PAGE, PAGE) == 0);
    uint8_t *hdr = peer_map(a.fd);
    peer_put64(hdr, FP_RING_OFF_HEAD(1), PAGE + 1);
    assert(fp_ring_segment_attach(&s, a.fd) == FP_ECORRUPT && s.fd == -1 && !s.map);
    peer_put64(hdr, FP_RING_OFF_HEAD(1), 5);
    peer_put64(hdr, FP_RING_OFF_TAIL(1), 5);
    assert(fp_ring_segment_attach(&s, a.fd) == 0 && s.w.head == 5);
    fp_ring_segment_destroy(&s);
    munmap(hdr, PAGE);
    fp_ring_segment_destroy(&a);

    /* not a memfd, or not an fd at all */
    int pfd[2];
    assert(pipe(pfd) == 0);
    assert(fp_ring_segment_attach(&s, pfd[0]) == FP_ECORRUPT);
    close(pfd[0]);
    close(pfd[1]);
    fd = open("/dev/zero", O_RDWR | O_CLOEXEC);
    assert(fd >= 0);
    assert(fp_ring_segment_attach(&s, fd) == FP_ECORRUPT);
    assert(fp_ring_segment_attach(&s, -1) == -EBADF);
    close(fd);
    assert(fp_ring_segment_attach(&s, fd) == -EBADF);
    assert(count_fds() == fds_before);
}

/* Two threads, two mappings, 256 MiB with random chunk and iovec sizes,
 * eventfd wakeups driven only by the arm/wake protocol. A lost wakeup
 * shows up as a 10 s poll timeout. */
#define XFER_TOTAL ((uint64_t)256 << 20)
#define XFER_PERIOD 1048573u /* prime: chunk boundaries drift against the ring */

typedef struct {
    fp_ring_segment *seg;
    int efd_data, efd_space;
    const uint8_t *src;
    uint64_t sleeps, wakes, spins;
} xfer_ctx;

static void wait_efd(int fd) {
    struct pollfd pfd = {fd, POLLIN, 0};
    int rc = poll(&pfd, 1, 10000);
    assert(rc == 1 && "lost wakeup");
    uint64_t v;
    assert(read(fd, &v, 8) == 8);
}
static void kick_efd(int fd) {
    uint64_t one = 1;
    assert(write(fd, &one, 8) == 8);
}

static void *producer(void *arg) {
    xfer_ctx *x = arg;
    fp_ring_writer *w = &x->seg->w;
    uint64_t s = 12345, sent = 0;
    while (sent < XFER_TOTAL) {
        uint64_t want = 1 + rng(&s) % (3 * w->cap / 2);
        if (want > XFER_TOTAL - sent) want = XFER_TOTAL - sent;
        fp_ring_iov iov[4];
        size_t niov = 0;
        uint64_t pos = sent, left = want;
        while (left && niov < 4) {
            size_t off = (size_t)(pos % XFER_PERIOD);
            size_t n = XFER_PERIOD - off;
            if (n > left) n = (size_t)left;
            if (niov < 3 && n > 1 && (rng(&s) & 1)) n = 1 + (size_t)(rng(&s) % n);
            iov[niov].base = x->src + off;
            iov[niov].len = n;
            niov++;
            pos += n;
            left -= n;
        }
        size_t wr;
        assert(fp_ring_writer_write(w, iov, niov, &wr) == 0);
        sent += wr;
        int wk = fp_ring_writer_wake(w);
        assert(wk >= 0);
        if (wk) {
            x->wakes++;
            kick_efd(x->efd_data);
        }
        if (wr == 0) {
            int rc = fp_ring_writer_arm_space(w);
            assert(rc >= 0);
            if (rc == 0) {
                x->sleeps++;
                wait_efd(x->efd_space);
            }
        }
    }
    return NULL;
}

static void *consumer(void *arg) {
    xfer_ctx *x = arg;
    fp_ring_reader *r = &x->seg->r;
    uint64_t s = 777, got = 0;
    while (got < XFER_TOTAL) {
        const uint8_t *p;
        size_t len;
        assert(fp_ring_reader_peek(r, &p, &len) == 0);
        assert(len <= r->cap);
        if (!len) {
            size_t n;
            assert(fp_ring_reader_spin(r, 2000, &n) == 0);
            if (n) {
                x->spins++;
                continue;
            }
            int rc = fp_ring_reader_arm(r);
            assert(rc >= 0);
            if (rc == 0) {
                x->sleeps++;
                wait_efd(x->efd_data);
            }
            continue;
        }
        size_t take = (rng(&s) & 3) ? len : 1 + (size_t)(rng(&s) % len);
        size_t done = 0;
        while (done < take) {
            size_t off = (size_t)((got + done) % XFER_PERIOD);
            size_t n = XFER_PERIOD - off;
            if (n > take - done) n = take - done;
            assert(memcmp(p + done, x->src + off, n) == 0);
            done += n;
        }
        int rc = fp_ring_reader_consume(r, take);
        assert(rc >= 0);
        if (rc) {
            x->wakes++;
            kick_efd(x->efd_space);
        }
        got += take;
    }
    return NULL;
}

static void test_two_threads(void) {
    fp_ring_segment a, b;
    pair(&a, &b, 64 * 1024, PAGE);
    uint8_t *src = malloc(XFER_PERIOD);
    assert(src);
    fill(src, XFER_PERIOD, 0);
    int efd_data = eventfd(0, EFD_CLOEXEC), efd_space = eventfd(0, EFD_CLOEXEC);
    assert(efd_data >= 0 && efd_space >= 0);
    xfer_ctx px = {&a, efd_data, efd_space, src, 0, 0, 0};
    xfer_ctx cx = {&b, efd_data, efd_space, src, 0, 0, 0};
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    pthread_t tp, tc;
    assert(pthread_create(&tc, NULL, consumer, &cx) == 0);
    assert(pthread_create(&tp, NULL, producer, &px) == 0);
    assert(pthread_join(tp, NULL) == 0);
    assert(pthread_join(tc, NULL) == 0);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double el = (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
    assert(a.w.head == XFER_TOTAL && b.r.tail == XFER_TOTAL);
    printf("two threads: %llu MiB in %.2f s (%.2f GB/s); "
           "producer slept %llu woke %llu, consumer slept %llu woke %llu spun %llu\n",
           (unsigned long long)(XFER_TOTAL >> 20), el, XFER_TOTAL / el / 1e9,
           (unsigned long long)px.sleeps, (unsigned long long)px.wakes,
           (unsigned long long)cx.sleeps, (unsigned long long)cx.wakes,
           (unsigned long long)cx.spins);
    close(efd_data);
    close(efd_space);
    free(src);
    unpair(&a, &b);
}

int main(void) {
    int fds_before = count_fds();
    test_caps();
    test_roundtrip_wrap();
    test_index_wrap_2_64();
    test_wake_protocol();
    test_corrupt_consumer();
    test_corrupt_producer();
    test_attach_invalid();
    test_two_threads();
    assert(count_fds() == fds_before);
    printf("test_ring: all passed\n");
    return 0;
}
