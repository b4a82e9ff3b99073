/* libFuzzer harness: the shared-memory rings against a hostile peer.
 *
 * Part 1 reads the input as a script of operations on a creator/attacher
 * pair (producer writes, consumer peeks and consumes, wake/arm calls) mixed
 * with "attacker" writes of arbitrary bytes and index values into the shared
 * header through a third mapping of the memfd. Part 2 attaches to a memfd
 * whose header, size and seals come from the input.
 *
 * Invariants checked (abort on violation): every span handed out lies inside
 * its ring's double mapping and is at most cap long (all its bytes are read or
 * written: guard pages and ASan catch strays); until the first attack the
 * rings behave exactly like the byte-stream model (no error, exact counts,
 * exact contents); after it, every call returns success or FP_ECORRUPT (or
 * FP_EINVAL for an over-long consume), and FP_ECORRUPT is sticky per end;
 * attach succeeds only on a header the oracle accepts, and a failed attach
 * leaves nothing open.
 */
#define _GNU_SOURCE 1
#include <fcntl.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "fp_ring.h"

#define FP_FUZZ_CHECK(c) \
    do {                 \
        if (!(c)) abort(); \
    } while (0)

typedef struct {
    const uint8_t *p;
    size_t n;
} fz_in;

static uint8_t fz8(fz_in *in) {
    if (!in->n) return 0;
    in->n--;
    return *in->p++;
}
static uint16_t fz16(fz_in *in) { return (uint16_t)(fz8(in) | (fz8(in) << 8)); }
static uint64_t fz64(fz_in *in) {
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v |= (uint64_t)fz8(in) << (8 * i);
    return v;
}

/* The model stream of ring i: byte at position p is pattern[i][p % 251]
 * (a prime period: a span misplaced by any multiple of cap shows). */
#define MAX_CAP (4 * 4096)
#define PERIOD 251
static uint8_t pattern[2][2 * MAX_CAP + PERIOD + 64];
static uint8_t scratch[2 * MAX_CAP + 64];
static uint8_t sink[2 * MAX_CAP];

static const uint8_t *model(int ring, uint64_t pos) {
    if (!pattern[0][1]) {
        for (size_t k = 0; k < sizeof pattern[0]; k++) {
            pattern[0][k] = (uint8_t)((k % PERIOD) * 37 + 1);
            pattern[1][k] = (uint8_t)((k % PERIOD) * 91 + 7);
        }
    }
    return pattern[ring] + pos % PERIOD;
}

typedef struct {
    fp_ring_writer *w;
    fp_ring_reader *r;
    uint64_t wpos, rpos; /* the model, valid until the first attack */
    int wbroken, rbroken;
} fz_ring;

static int span_ok(const uint8_t *data, uint64_t cap, const uint8_t *p, size_t len) {
    return p >= data && len <= cap && (size_t)(p - data) < cap && p + len <= data + 2 * cap;
}

static void check_rc_w(fz_ring *q, int rc, int attacked) {
    FP_FUZZ_CHECK(rc >= 0 || rc == FP_ECORRUPT);
    if (!attacked) FP_FUZZ_CHECK(rc >= 0);
    if (q->wbroken) FP_FUZZ_CHECK(rc == FP_ECORRUPT);
    if (rc == FP_ECORRUPT) q->wbroken = 1;
}
static void check_rc_r(fz_ring *q, int rc, int attacked) {
    FP_FUZZ_CHECK(rc >= 0 || rc == FP_ECORRUPT || rc == FP_EINVAL);
    if (!attacked) FP_FUZZ_CHECK(rc >= 0 || rc == FP_EINVAL);
    if (q->rbroken) FP_FUZZ_CHECK(rc == FP_ECORRUPT);
    if (rc == FP_ECORRUPT) q->rbroken = 1;
}

static void fuzz_script(fz_in *in) {
    size_t page = fp_ring_page_size();
    uint8_t sel = fz8(in);
    uint64_t cap0 = (uint64_t)page << (sel & 1), cap1 = (uint64_t)page << ((sel >> 1) & 1);
    if (cap0 > MAX_CAP || cap1 > MAX_CAP) return;
    fp_ring_segment a, b;
    if (fp_ring_segment_create(&a, cap0, cap1) != 0) abort();
    if (fp_ring_segment_attach(&b, a.fd) != 0) abort();
    uint8_t *peer = mmap(NULL, page, PROT_READ | PROT_WRITE, MAP_SHARED, a.fd, 0);
    FP_FUZZ_CHECK(peer != MAP_FAILED);
    fz_ring ring[2] = {{&a.w, &b.r, 0, 0, 0, 0}, {&b.w, &a.r, 0, 0, 0, 0}};
    int attacked = 0;
    for (int steps = 0; in->n && steps < 512; steps++) {
        uint8_t op = fz8(in);
        int i = op & 1;
        fz_ring *q = &ring[i];
        uint64_t cap = q->w->cap;
        int rc;
        switch ((op >> 1) % 9) {
        case 0: { /* producer write, up to three pieces */
            size_t want = fz16(in) % (2 * cap + 1), cut1 = want ? fz16(in) % (want + 1) : 0;
            size_t cut2 = cut1 + (want - cut1 ? fz16(in) % (want - cut1 + 1) : 0);
            const uint8_t *src = model(i, q->wpos);
            fp_ring_iov iov[3] = {{src, cut1}, {src + cut1, cut2 - cut1}, {src + cut2, want - cut2}};
            size_t written = (size_t)-1;
            rc = fp_ring_writer_write(q->w, iov, 3, &written);
            check_rc_w(q, rc, attacked);
            if (rc == 0) {
                FP_FUZZ_CHECK(written <= want);
                if (!attacked) {
                    uint64_t room = cap - (q->wpos - q->rpos);
                    FP_FUZZ_CHECK(written == (want < room ? want : room));
                }
                q->wpos += written;
            }
            break;
        }
        case 1: { /* consumer peek: touch every byte of the span */
            const uint8_t *p = NULL;
            size_t len = 0;
            rc = fp_ring_reader_peek(q->r, &p, &len);
            check_rc_r(q, rc, attacked);
            if (rc == 0) {
                FP_FUZZ_CHECK(span_ok(q->r->data, cap, p, len));
                if (len) memcpy(sink, p, len); /* a stray span faults on a guard page */
                if (!attacked) {
                    FP_FUZZ_CHECK(len == q->wpos - q->rpos);
                    FP_FUZZ_CHECK(!len || memcmp(p, model(i, q->rpos), len) == 0);
                }
            }
            break;
        }
        case 2: { /* consume */
            size_t n = fz16(in) % (cap + 2);
            rc = fp_ring_reader_consume(q->r, n);
            check_rc_r(q, rc, attacked);
            if (!attacked) FP_FUZZ_CHECK((rc == FP_EINVAL) == (n > q->wpos - q->rpos));
            if (rc >= 0) q->rpos += n;
            break;
        }
        case 3: { /* attacker: arbitrary bytes anywhere in the header page */
            size_t off = (fz8(in) & 1) ? fz16(in) % FP_RING_HEADER_USED : fz16(in) % page;
            size_t len = 1 + fz8(in) % 16;
            if (len > page - off) len = page - off;
            for (size_t k = 0; k < len; k++) peer[off + k] = fz8(in);
            attacked = 1;
            break;
        }
        case 4: { /* attacker: an index near (or far from) its true value */
            int which = fz8(in) & 1; /* 0: head, 1: tail */
            uint64_t truth = which ? q->r->tail : q->w->head;
            uint64_t v = (fz8(in) & 1) ? fz64(in) : truth + (uint64_t)(int64_t)(int16_t)fz16(in);
            size_t off = which ? FP_RING_OFF_TAIL(i) : FP_RING_OFF_HEAD(i);
            memcpy(peer + off, &v, 8);
            attacked = 1;
            break;
        }
        case 5: { /* wakeup protocol */
            switch (fz8(in) % 4) {
            case 0: rc = fp_ring_writer_wake(q->w); check_rc_w(q, rc, attacked); break;
            case 1: rc = fp_ring_writer_arm_space(q->w); check_rc_w(q, rc, attacked); break;
            case 2: rc = fp_ring_reader_arm(q->r); check_rc_r(q, rc, attacked); break;
            default: {
                size_t n = 0;
                rc = fp_ring_reader_spin(q->r, fz8(in) * 10u, &n);
                check_rc_r(q, rc, attacked);
                if (rc == 0) FP_FUZZ_CHECK(n <= cap);
            }
            }
            FP_FUZZ_CHECK(rc <= 1);
            break;
        }
        case 6: { /* queries */
            size_t n = 0;
            rc = fp_ring_writer_free(q->w, &n);
            check_rc_w(q, rc, attacked);
            if (rc == 0) {
                FP_FUZZ_CHECK(n <= cap);
                if (!attacked) FP_FUZZ_CHECK(n == cap - (q->wpos - q->rpos));
            }
            rc = fp_ring_reader_readable(q->r, &n);
            check_rc_r(q, rc, attacked);
            if (rc == 0) {
                FP_FUZZ_CHECK(n <= cap);
                if (!attacked) FP_FUZZ_CHECK(n == q->wpos - q->rpos);
            }
            break;
        }
        case 7: { /* zero-copy produce: fill the whole reserved span */
            uint8_t *p = NULL;
            size_t len = 0;
            rc = fp_ring_writer_reserve(q->w, &p, &len);
            check_rc_w(q, rc, attacked);
            if (rc == 0) {
                FP_FUZZ_CHECK(span_ok(q->w->data, cap, p, len));
                size_t n = len ? fz16(in) % (len + 1) : 0;
                if (len) memcpy(p, model(i, q->wpos), len);
                rc = fp_ring_writer_commit(q->w, n);
                FP_FUZZ_CHECK(rc == 0);
                FP_FUZZ_CHECK(fp_ring_writer_commit(q->w, len - n + 1) == FP_EINVAL);
                q->wpos += n;
            }
            break;
        }
        default: /* drain both rings */
            for (int k = 0; k < 2; k++) {
                size_t n = 0;
                rc = fp_ring_reader_readable(ring[k].r, &n);
                check_rc_r(&ring[k], rc, attacked);
                if (rc == 0) {
                    rc = fp_ring_reader_consume(ring[k].r, n);
                    check_rc_r(&ring[k], rc, attacked);
                    if (rc >= 0) ring[k].rpos += n;
                }
            }
        }
    }
    munmap(peer, page);
    fp_ring_segment_destroy(&b);
    fp_ring_segment_destroy(&a);
}

static void fuzz_attach(fz_in *in) {
    size_t page = fp_ring_page_size();
    static uint8_t hdr[4096 + 64];
    size_t hlen = 64 + FP_RING_HEADER_USED;
    if (hlen > sizeof hdr) hlen = sizeof hdr;
    memset(hdr, 0, sizeof hdr);
    uint8_t mode = fz8(in);
    if (mode & 1) { /* start from a plausible header */
        memcpy(hdr, FP_RING_MAGIC, 8);
        uint32_t ver = FP_RING_VERSION;
        memcpy(hdr + FP_RING_OFF_VERSION, &ver, 4);
        uint64_t caps[2] = {(uint64_t)page << (fz8(in) % 3), (uint64_t)page << (fz8(in) % 3)};
        memcpy(hdr + FP_RING_OFF_CAP0, caps, 16);
        for (int k = fz8(in) % 4; k > 0; k--) hdr[fz8(in) % 32] = fz8(in);
        for (int k = fz8(in) % 4; k > 0; k--) { /* initial indices */
            uint64_t v = (fz8(in) & 1) ? fz64(in) : fz16(in);
            size_t off = (size_t)FP_RING_OFF_HEAD(0) + (size_t)FP_RING_LINE * (fz8(in) % 8);
            memcpy(hdr + off, &v, 8);
        }
    } else {
        for (size_t k = 0; k < 64; k++) hdr[k] = fz8(in);
    }
    uint64_t cap0, cap1;
    memcpy(&cap0, hdr + FP_RING_OFF_CAP0, 8);
    memcpy(&cap1, hdr + FP_RING_OFF_CAP1, 8);
    uint64_t need = fp_ring_segment_size(cap0, cap1);
    uint64_t size;
    switch (fz8(in) % 5) {
    case 0: size = need; break;
    case 1: size = need ? need - 1 : 0; break;
    case 2: size = need + page; break;
    case 3: size = fz16(in); break;
    default: size = (uint64_t)fz8(in) * page;
    }
    if (size > (uint64_t)1 << 20) size = (uint64_t)1 << 20;
    int seals = 0, sbits = fz8(in);
    if (!(sbits & 1)) seals |= F_SEAL_SHRINK;
    if (!(sbits & 2)) seals |= F_SEAL_GROW;
    if ((sbits & 0x1c) == 0x1c) seals |= F_SEAL_WRITE;

    int fd = memfd_create("fuzz-ring", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    FP_FUZZ_CHECK(fd >= 0);
    FP_FUZZ_CHECK(ftruncate(fd, (off_t)(size > hlen ? size : hlen)) == 0);
    FP_FUZZ_CHECK(pwrite(fd, hdr, hlen, 0) == (ssize_t)hlen);
    FP_FUZZ_CHECK(ftruncate(fd, (off_t)size) == 0);
    if (seals) FP_FUZZ_CHECK(fcntl(fd, F_ADD_SEALS, seals) == 0);

    fp_ring_segment s;
    int rc = fp_ring_segment_attach(&s, fd);
    FP_FUZZ_CHECK(rc == 0 || rc == FP_ECORRUPT);
    int oracle = memcmp(hdr, FP_RING_MAGIC, 8) == 0 &&
                 hdr[FP_RING_OFF_VERSION] == FP_RING_VERSION && !hdr[9] && !hdr[10] && !hdr[11] &&
                 need && size >= need && (seals & F_SEAL_SHRINK) && !(seals & F_SEAL_WRITE);
    if (rc) {
        FP_FUZZ_CHECK(s.fd == -1 && s.map == NULL);
    } else {
        FP_FUZZ_CHECK(oracle && s.r.cap == cap0 && s.w.cap == cap1);
        FP_FUZZ_CHECK(s.w.head - s.w.tail_seen <= s.w.cap);
        const uint8_t *p;
        size_t len;
        rc = fp_ring_reader_peek(&s.r, &p, &len);
        FP_FUZZ_CHECK(rc == 0 || rc == FP_ECORRUPT);
        if (rc == 0) {
            FP_FUZZ_CHECK(span_ok(s.r.data, s.r.cap, p, len));
            if (len) memcpy(sink, p, len < sizeof sink ? len : sizeof sink);
            FP_FUZZ_CHECK(fp_ring_reader_consume(&s.r, len) >= 0);
        }
        fp_ring_iov iov = {scratch, sizeof scratch};
        size_t written;
        rc = fp_ring_writer_write(&s.w, &iov, 1, &written);
        FP_FUZZ_CHECK(rc == 0 || rc == FP_ECORRUPT);
        fp_ring_segment_destroy(&s);
    }
    close(fd);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fz_in in = {data, size};
    fuzz_script(&in);
    fz_in in2 = {data, size};
    fuzz_attach(&in2);
    return 0;
}
