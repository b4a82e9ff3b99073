/* fp_ring.h - two SPSC byte rings in one sealed memfd, shared by two
 * processes on one host (no Python.h).
 *
 * Segment layout (file offsets; P = page size, caps are powers of two and
 * multiples of P):
 *   [0, P)                 header: magic, version, cap[0], cap[1], then one
 *                          control block per ring (head, tail,
 *                          consumer_sleeping, producer_waiting, each on its
 *                          own FP_RING_LINE-byte line)
 *   [P, P + cap0)          ring 0 data, creator -> attacher
 *   [P + cap0, P+cap0+cap1) ring 1 data, attacher -> creator
 * The memfd is sealed F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL, so neither
 * side can truncate it under the other's mapping (SIGBUS); attach refuses an
 * fd without F_SEAL_SHRINK.
 *
 * Address-space layout of one mapping (G = one PROT_NONE guard page):
 *   G | header | G | ring0 | ring0 | G | ring1 | ring1 | G
 * Each ring's data is mapped twice back to back, so every span
 * [idx & mask, (idx & mask) + len) with len <= cap is contiguous: writes are
 * one memcpy per iovec piece and reads are one contiguous span. The ring a
 * side consumes is mapped PROT_READ, the one it produces PROT_READ|WRITE.
 *
 * Indices are free-running 64-bit byte counters (wrapping); the data offset
 * is idx & (cap - 1). The producer appends bytes and publishes head with a
 * release store; the consumer acquire-loads head, reads [tail, head) and
 * publishes tail with a release store. Framing is the caller's business.
 *
 * Hostile peer: the other process may write anything into the header at any
 * time. Each end therefore keeps LOCAL copies of the capacity (validated once)
 * and of its own index, writes only its own index and flags, reads the
 * peer's index once per operation and validates it against local state:
 *   consumer: tail <= head_seen <= head <= tail + cap   (wrapping arithmetic)
 *   producer: tail_seen <= tail <= head                 (wrapping arithmetic)
 * A violation returns FP_ECORRUPT and the end stays broken (every later call
 * on it returns FP_ECORRUPT). Data bytes themselves are untrusted input.
 *
 * Wakeups (armed bits, as in UCX): after publishing head the producer
 * issues a seq_cst fence and checks consumer_sleeping (fp_ring_writer_wake);
 * the consumer arms with store(consumer_sleeping = 1), seq_cst fence,
 * re-check head (fp_ring_reader_arm). Space is symmetric with
 * producer_waiting (fp_ring_writer_arm_space / fp_ring_reader_consume).
 * The caller turns "wake needed" into an eventfd write.
 *
 * Ownership contract:
 * - fp_ring_segment storage is owned by the caller (embedded in a Python
 *   object); create/attach fill it. The segment owns `fd` and the mapping:
 *   fp_ring_segment_close_fd() closes the fd, fp_ring_segment_unmap() drops
 *   the mapping, fp_ring_segment_destroy() does both. All three are
 *   idempotent. Every pointer returned by a reader or writer (peek spans)
 *   is valid only while the mapping exists: the caller must not unmap while
 *   such a pointer or any in-progress call is alive (the Cython layer
 *   counts exports and GIL-free calls and defers the unmap).
 * - fp_ring_segment_attach(fd) does NOT take `fd`: it duplicates it
 *   (F_DUPFD_CLOEXEC); the caller still owns and closes its own fd.
 * - fp_ring_writer_write() reads `iov[i].base` for `iov[i].len` bytes; the
 *   caller owns those buffers and keeps them valid for the call only.
 * - Out-parameters are caller-owned and written on success only (peek's
 *   span also on success only).
 * Threading: one thread at a time per end (a writer and a reader of the
 * same segment may run on different threads); the two ends of a ring may be
 * in different processes.
 */
#ifndef FP_RING_H
#define FP_RING_H

#include <stddef.h>
#include <stdint.h>
#include "fp_common.h"

/* The peer left shared state impossible (or the header/file is invalid). */
#ifndef FP_ECORRUPT
#define FP_ECORRUPT (-EUCLEAN)
#endif

#define FP_RING_MAGIC "fp2pring"          /* 8 bytes, no terminator stored */
#define FP_RING_VERSION 1u
#define FP_RING_LINE 128                   /* two 64-byte lines: beats the adjacent-line prefetcher */
#define FP_RING_DEFAULT_CAP ((uint64_t)4 << 20)
#define FP_RING_MAX_CAP ((uint64_t)256 << 20)

typedef struct {
    const void *base;
    size_t len;
} fp_ring_iov;

/* Shared control block of one ring (lives in the peer-writable header). */
typedef struct fp_ring_ctrl fp_ring_ctrl;

typedef struct {
    uint8_t *data;         /* first of the two consecutive mappings */
    fp_ring_ctrl *ctrl;
    uint64_t cap;          /* local copy, validated */
    uint64_t mask;
    uint64_t head;         /* own index (authoritative) */
    uint64_t tail_seen;    /* last validated consumer tail */
    int broken;
} fp_ring_writer;

typedef struct {
    const uint8_t *data;
    fp_ring_ctrl *ctrl;
    uint64_t cap;
    uint64_t mask;
    uint64_t tail;         /* own index (authoritative) */
    uint64_t head_seen;    /* last validated producer head */
    int broken;
} fp_ring_reader;

typedef struct {
    int fd;                /* -1 once closed */
    int creator;           /* 1: created here (writes ring 0); 0: attached (writes ring 1) */
    uint8_t *map;          /* whole reservation, NULL once unmapped */
    size_t map_len;
    uint8_t *header;
    uint64_t cap[2];
    fp_ring_writer w;
    fp_ring_reader r;
} fp_ring_segment;

size_t fp_ring_page_size(void);

/* Bytes of memfd a segment with these capacities needs (0 if invalid). */
uint64_t fp_ring_segment_size(uint64_t cap0, uint64_t cap1);

/* Validate one capacity: power of two, page multiple, <= FP_RING_MAX_CAP. */
int fp_ring_check_cap(uint64_t cap);

/* Creator: new memfd (MFD_CLOEXEC | MFD_ALLOW_SEALING), sized and sealed,
 * header initialised, mapped. FP_EINVAL for bad capacities; -errno for
 * system failures. On failure `seg` holds nothing (fd -1, map NULL). */
int fp_ring_segment_create(fp_ring_segment *seg, uint64_t cap0, uint64_t cap1);

/* Attacher: validate and map a segment made by fp_ring_segment_create in
 * another process. FP_ECORRUPT for a bad header, capacities, size or
 * missing seals (also for an fd that is not a sealable memfd);
 * -errno for system failures (e.g. -EBADF). `fd` stays the caller's. */
int fp_ring_segment_attach(fp_ring_segment *seg, int fd);

void fp_ring_segment_close_fd(fp_ring_segment *seg);
void fp_ring_segment_unmap(fp_ring_segment *seg);
void fp_ring_segment_destroy(fp_ring_segment *seg);

/* Producer. */
int fp_ring_writer_free(fp_ring_writer *w, size_t *free_bytes);
/* Copy as many bytes as fit, in order (may stop mid-piece), publish head.
 * *written = bytes copied. 0, or FP_ECORRUPT (nothing written). */
int fp_ring_writer_write(fp_ring_writer *w, const fp_ring_iov *iov, size_t niov, size_t *written);
/* Zero-copy variant: *ptr, *len = the contiguous writable span (len may be 0);
 * write into it, then fp_ring_writer_commit(n <= len). */
int fp_ring_writer_reserve(fp_ring_writer *w, uint8_t **ptr, size_t *len);
int fp_ring_writer_commit(fp_ring_writer *w, size_t n);
/* After publishing: 1 if the consumer was asleep (flag cleared; wake it), 0 if not. */
int fp_ring_writer_wake(fp_ring_writer *w);
/* Arm producer_waiting. 1: space is available now (disarmed; don't wait),
 * 0: armed (wait for the consumer's wake), or FP_ECORRUPT. */
int fp_ring_writer_arm_space(fp_ring_writer *w);

/* Consumer. */
int fp_ring_reader_readable(fp_ring_reader *r, size_t *readable);
/* *ptr, *len: all readable bytes, contiguous (len may be 0). */
int fp_ring_reader_peek(fp_ring_reader *r, const uint8_t **ptr, size_t *len);
/* Advance tail by n (n <= readable; head is re-read only when n exceeds what
 * the last peek/readable validated). 1: the producer was waiting for space
 * (flag cleared; wake it), 0: not, FP_EINVAL if n is more than readable,
 * FP_ECORRUPT if the peer's head is invalid or the end is broken. */
int fp_ring_reader_consume(fp_ring_reader *r, size_t n);
/* Arm consumer_sleeping. 1: data is readable now (disarmed; don't sleep),
 * 0: armed (sleep until woken), or FP_ECORRUPT. */
int fp_ring_reader_arm(fp_ring_reader *r);
/* Busy-poll head for up to max_ns; *readable = bytes readable (0 on timeout). */
int fp_ring_reader_spin(fp_ring_reader *r, uint64_t max_ns, size_t *readable);

/* Byte offsets of the shared header fields (for tests and fuzzers). */
#define FP_RING_OFF_MAGIC 0
#define FP_RING_OFF_VERSION 8
#define FP_RING_OFF_CAP0 16
#define FP_RING_OFF_CAP1 24
#define FP_RING_OFF_CTRL(i) (FP_RING_LINE * (1 + 4 * (size_t)(i)))
#define FP_RING_OFF_HEAD(i) (FP_RING_OFF_CTRL(i) + 0 * FP_RING_LINE)
#define FP_RING_OFF_TAIL(i) (FP_RING_OFF_CTRL(i) + 1 * FP_RING_LINE)
#define FP_RING_OFF_SLEEPING(i) (FP_RING_OFF_CTRL(i) + 2 * FP_RING_LINE)
#define FP_RING_OFF_WAITING(i) (FP_RING_OFF_CTRL(i) + 3 * FP_RING_LINE)
#define FP_RING_HEADER_USED FP_RING_OFF_CTRL(2)

#endif /* FP_RING_H */
