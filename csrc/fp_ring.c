/* fp_ring.c - two SPSC byte rings in one sealed memfd; see fp_ring.h. */
#define _GNU_SOURCE 1
#include "fp_ring.h"

#include <fcntl.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>


/* A peer-controlled value failed validation: the end is broken for good. */
#define FP_RING_FAIL(end)           \
    do {                            \
        (end)->broken = 1;          \
        return FP_ECORRUPT;         \
    } while (0)
#define FP_RING_CHECK_LIVE(end)                  \
    do {                                         \
        if (FP_UNLIKELY((end)->broken)) return FP_ECORRUPT; \
    } while (0)

struct fp_ring_ctrl {
    _Alignas(FP_RING_LINE) _Atomic uint64_t head;             /* producer writes */
    _Alignas(FP_RING_LINE) _Atomic uint64_t tail;             /* consumer writes */
    _Alignas(FP_RING_LINE) _Atomic uint32_t consumer_sleeping; /* consumer sets, producer clears */
    _Alignas(FP_RING_LINE) _Atomic uint32_t producer_waiting;  /* producer sets, consumer clears */
};

typedef struct {
    uint8_t magic[8];
    uint32_t version;
    uint32_t reserved;
    uint64_t cap[2];
} fp_ring_ident;

static_assert(ATOMIC_LLONG_LOCK_FREE == 2 && ATOMIC_INT_LOCK_FREE == 2,
              "shared-memory indices need lock-free atomics");
static_assert(sizeof(_Atomic uint64_t) == 8 && sizeof(_Atomic uint32_t) == 4, "atomic sizes");
static_assert(sizeof(struct fp_ring_ctrl) == 4 * FP_RING_LINE, "control block layout");
static_assert(offsetof(struct fp_ring_ctrl, tail) == FP_RING_LINE, "tail line");
static_assert(offsetof(struct fp_ring_ctrl, consumer_sleeping) == 2 * FP_RING_LINE, "sleeping line");
static_assert(offsetof(struct fp_ring_ctrl, producer_waiting) == 3 * FP_RING_LINE, "waiting line");
static_assert(sizeof(fp_ring_ident) == 32 && offsetof(fp_ring_ident, cap) == FP_RING_OFF_CAP0,
              "ident layout");
static_assert(FP_RING_HEADER_USED <= 4096, "header fits the smallest page");

size_t fp_ring_page_size(void) {
    static size_t page;
    if (!page) {
        long ps = sysconf(_SC_PAGESIZE);
        page = ps > 0 ? (size_t)ps : 4096;
    }
    return page;
}

int fp_ring_check_cap(uint64_t cap) {
    uint64_t page = fp_ring_page_size();
    if (cap < page || cap > FP_RING_MAX_CAP || (cap & (cap - 1)) || (cap & (page - 1)))
        return FP_EINVAL;
    return FP_OK;
}

uint64_t fp_ring_segment_size(uint64_t cap0, uint64_t cap1) {
    if (fp_ring_check_cap(cap0) || fp_ring_check_cap(cap1)) return 0;
    return fp_ring_page_size() + cap0 + cap1;
}

static fp_ring_ctrl *fp_ring_ctrl_at(uint8_t *header, int i) {
    return (fp_ring_ctrl *)(void *)(header + FP_RING_OFF_CTRL(i));
}

static void fp_ring_segment_clear(fp_ring_segment *seg) {
    memset(seg, 0, sizeof(*seg));
    seg->fd = -1;
}

/* Reserve G|header|G|ring0 x2|G|ring1 x2|G as PROT_NONE, then map the memfd
 * over it. `produce` is the ring this side writes (mapped writable). */
static int fp_ring_map(fp_ring_segment *seg, int fd, int produce) {
    size_t page = fp_ring_page_size();
    size_t c0 = (size_t)seg->cap[0], c1 = (size_t)seg->cap[1];
    size_t len = 4 * page + page + 2 * c0 + 2 * c1;
    uint8_t *base = mmap(NULL, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (base == MAP_FAILED) return -errno;
    uint8_t *hdr = base + page;
    uint8_t *ring[2] = {hdr + 2 * page, hdr + 2 * page + 2 * c0 + page};
    off_t off[2] = {(off_t)page, (off_t)(page + c0)};
    size_t cap[2] = {c0, c1};
    if (mmap(hdr, page, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, 0) == MAP_FAILED)
        goto fail;
    for (int i = 0; i < 2; i++) {
        int prot = i == produce ? PROT_READ | PROT_WRITE : PROT_READ;
        for (int k = 0; k < 2; k++)
            if (mmap(ring[i] + (size_t)k * cap[i], cap[i], prot, MAP_SHARED | MAP_FIXED, fd,
                     off[i]) == MAP_FAILED)
                goto fail;
    }
    seg->map = base;
    seg->map_len = len;
    seg->header = hdr;
    fp_ring_writer *w = &seg->w;
    fp_ring_reader *r = &seg->r;
    int consume = !produce;
    w->data = ring[produce];
    w->ctrl = fp_ring_ctrl_at(hdr, produce);
    w->cap = seg->cap[produce];
    w->mask = w->cap - 1;
    r->data = ring[consume];
    r->ctrl = fp_ring_ctrl_at(hdr, consume);
    r->cap = seg->cap[consume];
    r->mask = r->cap - 1;
    return FP_OK;
fail:;
    int err = -errno;
    munmap(base, len);
    return err;
}

int fp_ring_segment_create(fp_ring_segment *seg, uint64_t cap0, uint64_t cap1) {
    fp_ring_segment_clear(seg);
    uint64_t size = fp_ring_segment_size(cap0, cap1);
    if (!size) return FP_EINVAL;
    int fd = memfd_create("fastp2p-shm", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0) return -errno;
    int rc;
    if (ftruncate(fd, (off_t)size) != 0 ||
        fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0) {
        rc = -errno;
        close(fd);
        return rc;
    }
    seg->cap[0] = cap0;
    seg->cap[1] = cap1;
    seg->creator = 1;
    if ((rc = fp_ring_map(seg, fd, 0)) != 0) {
        close(fd);
        fp_ring_segment_clear(seg);
        return rc;
    }
    /* The fd has not left this process yet: plain stores are private. */
    fp_ring_ident id;
    memset(&id, 0, sizeof id);
    memcpy(id.magic, FP_RING_MAGIC, 8);
    id.version = FP_RING_VERSION;
    id.cap[0] = cap0;
    id.cap[1] = cap1;
    memcpy(seg->header, &id, sizeof id);
    seg->fd = fd;
    return FP_OK;
}

int fp_ring_segment_attach(fp_ring_segment *seg, int fd) {
    fp_ring_segment_clear(seg);
    if (fd < 0) return -EBADF;
    int seals = fcntl(fd, F_GET_SEALS);
    if (seals < 0) return errno == EINVAL ? FP_ECORRUPT : -errno; /* EINVAL: not a memfd */
    /* Without F_SEAL_SHRINK the peer could truncate under our mapping (SIGBUS);
     * a write seal would make our shared writable mapping fail. */
    int bad = 0;
#ifdef F_SEAL_FUTURE_WRITE
    bad |= F_SEAL_FUTURE_WRITE;
#endif
    bad |= F_SEAL_WRITE;
    if (!(seals & F_SEAL_SHRINK) || (seals & bad)) return FP_ECORRUPT;
    struct stat st;
    if (fstat(fd, &st) != 0) return -errno;
    /* One private copy of the identity block: validated and used, never re-read. */
    fp_ring_ident id;
    ssize_t got = pread(fd, &id, sizeof id, 0);
    if (got < 0) return -errno;
    if ((size_t)got != sizeof id) return FP_ECORRUPT;
    if (memcmp(id.magic, FP_RING_MAGIC, 8) != 0 || id.version != FP_RING_VERSION) return FP_ECORRUPT;
    uint64_t need = fp_ring_segment_size(id.cap[0], id.cap[1]);
    if (!need || st.st_size < 0 || (uint64_t)st.st_size < need) return FP_ECORRUPT;
    int own = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (own < 0) return -errno;
    seg->cap[0] = id.cap[0];
    seg->cap[1] = id.cap[1];
    seg->creator = 0;
    int rc = fp_ring_map(seg, own, 1);
    if (rc) {
        close(own);
        fp_ring_segment_clear(seg);
        return rc;
    }
    seg->fd = own;
    /* Start from the indices found; each is validated against the other. */
    fp_ring_reader *r = &seg->r;
    fp_ring_writer *w = &seg->w;
    r->tail = atomic_load_explicit(&r->ctrl->tail, memory_order_relaxed);
    r->head_seen = r->tail;
    w->head = atomic_load_explicit(&w->ctrl->head, memory_order_relaxed);
    w->tail_seen = atomic_load_explicit(&w->ctrl->tail, memory_order_acquire);
    if (w->head - w->tail_seen > w->cap) {
        fp_ring_segment_destroy(seg);
        return FP_ECORRUPT;
    }
    return FP_OK;
}

void fp_ring_segment_close_fd(fp_ring_segment *seg) {
    if (seg->fd >= 0) {
        close(seg->fd);
        seg->fd = -1;
    }
}

void fp_ring_segment_unmap(fp_ring_segment *seg) {
    if (seg->map) {
        munmap(seg->map, seg->map_len);
        seg->map = NULL;
        seg->map_len = 0;
        seg->header = NULL;
        seg->w.data = NULL;
        seg->w.ctrl = NULL;
        seg->w.broken = 1;
        seg->r.data = NULL;
        seg->r.ctrl = NULL;
        seg->r.broken = 1;
    }
}

void fp_ring_segment_destroy(fp_ring_segment *seg) {
    fp_ring_segment_unmap(seg);
    fp_ring_segment_close_fd(seg);
}

/* Producer: tail must satisfy tail_seen <= tail <= head (wrapping). */
static inline int fp_ring_writer_sync(fp_ring_writer *w, uint64_t *free_bytes) {
    FP_RING_CHECK_LIVE(w);
    uint64_t t = atomic_load_explicit(&w->ctrl->tail, memory_order_acquire);
    if (FP_UNLIKELY(t - w->tail_seen > w->head - w->tail_seen)) FP_RING_FAIL(w);
    w->tail_seen = t;
    *free_bytes = w->cap - (w->head - t);
    return FP_OK;
}

int fp_ring_writer_free(fp_ring_writer *w, size_t *free_bytes) {
    uint64_t f;
    int rc = fp_ring_writer_sync(w, &f);
    if (rc) return rc;
    *free_bytes = (size_t)f;
    return FP_OK;
}

int fp_ring_writer_write(fp_ring_writer *w, const fp_ring_iov *iov, size_t niov, size_t *written) {
    uint64_t f;
    int rc = fp_ring_writer_sync(w, &f);
    if (rc) return rc;
    uint64_t done = 0;
    for (size_t i = 0; i < niov && f; i++) {
        size_t n = iov[i].len < f ? iov[i].len : (size_t)f;
        if (!n) continue;
        /* offset + n <= mask + cap: inside the double mapping */
        memcpy(w->data + ((w->head + done) & w->mask), iov[i].base, n);
        done += n;
        f -= n;
    }
    if (done) {
        w->head += done;
        atomic_store_explicit(&w->ctrl->head, w->head, memory_order_release);
    }
    *written = (size_t)done;
    return FP_OK;
}

int fp_ring_writer_reserve(fp_ring_writer *w, uint8_t **ptr, size_t *len) {
    uint64_t f;
    int rc = fp_ring_writer_sync(w, &f);
    if (rc) return rc;
    *ptr = w->data + (w->head & w->mask);
    *len = (size_t)f;
    return FP_OK;
}

int fp_ring_writer_commit(fp_ring_writer *w, size_t n) {
    FP_RING_CHECK_LIVE(w);
    /* tail_seen was validated by the reserve: the span is still ours */
    if (n > w->cap - (w->head - w->tail_seen)) return FP_EINVAL;
    if (n) {
        w->head += n;
        atomic_store_explicit(&w->ctrl->head, w->head, memory_order_release);
    }
    return FP_OK;
}

int fp_ring_writer_wake(fp_ring_writer *w) {
    FP_RING_CHECK_LIVE(w);
    /* pairs with the fence in fp_ring_reader_arm: one of us sees the other */
    atomic_thread_fence(memory_order_seq_cst);
    if (!atomic_load_explicit(&w->ctrl->consumer_sleeping, memory_order_relaxed)) return 0;
    return atomic_exchange_explicit(&w->ctrl->consumer_sleeping, 0, memory_order_relaxed) != 0;
}

int fp_ring_writer_arm_space(fp_ring_writer *w) {
    FP_RING_CHECK_LIVE(w);
    atomic_store_explicit(&w->ctrl->producer_waiting, 1, memory_order_relaxed);
    atomic_thread_fence(memory_order_seq_cst);
    uint64_t f;
    int rc = fp_ring_writer_sync(w, &f);
    if (rc) return rc;
    if (f) {
        atomic_store_explicit(&w->ctrl->producer_waiting, 0, memory_order_relaxed);
        return 1;
    }
    return 0;
}

/* Consumer: head must satisfy head_seen <= head <= tail + cap (wrapping). */
static inline int fp_ring_reader_sync(fp_ring_reader *r, uint64_t *avail) {
    FP_RING_CHECK_LIVE(r);
    uint64_t h = atomic_load_explicit(&r->ctrl->head, memory_order_acquire);
    uint64_t a = h - r->tail;
    if (FP_UNLIKELY(a > r->cap || a < r->head_seen - r->tail)) FP_RING_FAIL(r);
    r->head_seen = h;
    *avail = a;
    return FP_OK;
}

int fp_ring_reader_readable(fp_ring_reader *r, size_t *readable) {
    uint64_t a;
    int rc = fp_ring_reader_sync(r, &a);
    if (rc) return rc;
    *readable = (size_t)a;
    return FP_OK;
}

int fp_ring_reader_peek(fp_ring_reader *r, const uint8_t **ptr, size_t *len) {
    uint64_t a;
    int rc = fp_ring_reader_sync(r, &a);
    if (rc) return rc;
    /* (tail & mask) + a <= mask + cap: inside the double mapping */
    *ptr = r->data + (r->tail & r->mask);
    *len = (size_t)a;
    return FP_OK;
}

int fp_ring_reader_consume(fp_ring_reader *r, size_t n) {
    FP_RING_CHECK_LIVE(r);
    if (n > r->head_seen - r->tail) {
        uint64_t a;
        int rc = fp_ring_reader_sync(r, &a);
        if (rc) return rc;
        if (n > a) return FP_EINVAL;
    }
    if (!n) return 0;
    r->tail += n;
    atomic_store_explicit(&r->ctrl->tail, r->tail, memory_order_release);
    /* pairs with the fence in fp_ring_writer_arm_space */
    atomic_thread_fence(memory_order_seq_cst);
    if (!atomic_load_explicit(&r->ctrl->producer_waiting, memory_order_relaxed)) return 0;
    return atomic_exchange_explicit(&r->ctrl->producer_waiting, 0, memory_order_relaxed) != 0;
}

int fp_ring_reader_arm(fp_ring_reader *r) {
    FP_RING_CHECK_LIVE(r);
    atomic_store_explicit(&r->ctrl->consumer_sleeping, 1, memory_order_relaxed);
    atomic_thread_fence(memory_order_seq_cst);
    uint64_t a;
    int rc = fp_ring_reader_sync(r, &a);
    if (rc) return rc;
    if (a) {
        atomic_store_explicit(&r->ctrl->consumer_sleeping, 0, memory_order_relaxed);
        return 1;
    }
    return 0;
}

static uint64_t fp_ring_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

int fp_ring_reader_spin(fp_ring_reader *r, uint64_t max_ns, size_t *readable) {
    uint64_t a;
    int rc = fp_ring_reader_sync(r, &a);
    if (rc || a || !max_ns) {
        if (!rc) *readable = (size_t)a;
        return rc;
    }
    uint64_t seen = r->head_seen;
    uint64_t deadline = fp_ring_now_ns() + max_ns;
    for (;;) {
        for (int i = 0; i < 64; i++) {
            fp_cpu_relax();
            if (atomic_load_explicit(&r->ctrl->head, memory_order_relaxed) != seen) {
                rc = fp_ring_reader_sync(r, &a);
                if (!rc) *readable = (size_t)a;
                return rc;
            }
        }
        if (fp_ring_now_ns() >= deadline) break;
    }
    *readable = 0;
    return FP_OK;
}
