/* fp_verbs.h - the per-work-request part of RDMA verbs (no Python.h).
 *
 * Thin, allocation-free helpers over libibverbs for the hot path: batches of
 * send and receive work requests built from caller arrays, completion
 * polling into a caller array (optionally spinning for a bounded time),
 * draining a completion channel, RC queue-pair state transitions
 * (RESET -> INIT -> RTR -> RTS) and RoCEv2 GID selection.
 *
 * Ownership contract:
 *  - Every `struct ibv_*` pointer is borrowed: the caller (the Cython object
 *    tree in fastp2p/_native/verbs.pyx) created it and destroys it; nothing
 *    here frees or keeps a pointer after returning.
 *  - `fp_send_wr` / `fp_recv_wr` arrays are read during the call only. The
 *    memory they *name* (local_addr/addr) must stay registered and alive until
 *    the matching completion is polled or the QP is destroyed: the caller's
 *    in-flight table holds it (DESIGN 5.4 rule 4).
 *  - `fp_wc` output arrays are written, never read; `n` bounds them.
 *  - `fp_gather` copies from caller iovecs into caller memory; no pointer kept.
 *
 * Status: 0 or a non-negative count on success, a negative errno on failure
 * (libibverbs' positive errno returns are negated).
 */
#ifndef FP_VERBS_H
#define FP_VERBS_H

#include <stddef.h>
#include <stdint.h>
#include <infiniband/verbs.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Work-request opcodes understood by fp_post_send. */
enum {
    FP_OP_SEND = 0,
    FP_OP_SEND_IMM = 1,
    FP_OP_WRITE = 2,
    FP_OP_WRITE_IMM = 3,
    FP_OP_READ = 4,
    FP_OP_CAS = 5,
    FP_OP_FAA = 6,
};

/* fp_send_wr.flags */
#define FP_WR_SIGNALED 1
#define FP_WR_INLINE 2
#define FP_WR_FENCE 4

/* At most this many work requests are chained into one ibv_post_* call. */
#define FP_POST_BATCH 64

typedef struct fp_send_wr {
    uint64_t wr_id;
    uint64_t local_addr;   /* 0 with length 0: no scatter/gather entry */
    uint64_t remote_addr;  /* WRITE/READ/atomics */
    uint64_t compare_add;  /* CAS: compare; FAA: add */
    uint64_t swap;         /* CAS: swap */
    uint32_t length;
    uint32_t lkey;
    uint32_t rkey;
    uint32_t imm;          /* host order; sent in network order */
    int opcode;            /* FP_OP_* */
    int flags;             /* FP_WR_* */
} fp_send_wr;

typedef struct fp_recv_wr {
    uint64_t wr_id;
    uint64_t addr;
    uint32_t length;
    uint32_t lkey;
} fp_recv_wr;

/* One completion, decoupled from struct ibv_wc's layout. */
typedef struct fp_wc {
    uint64_t wr_id;
    int status;            /* enum ibv_wc_status */
    int opcode;            /* enum ibv_wc_opcode */
    uint32_t byte_len;
    uint32_t imm;          /* host order; valid when has_imm */
    uint32_t qp_num;
    uint32_t vendor_err;
    int has_imm;
} fp_wc;

/* What a peer tells us about its RC queue pair (exchanged out of band). */
typedef struct fp_qp_peer {
    uint32_t qpn;
    uint32_t psn;
    uint16_t lid;
    uint8_t gid[16];
} fp_qp_peer;

typedef struct fp_iov {
    const void *base;
    size_t len;
} fp_iov;

/* Post `n` send work requests (chained FP_POST_BATCH at a time). `*posted`
 * (may be NULL) receives how many the provider accepted before an error. */
int fp_post_send(struct ibv_qp *qp, const fp_send_wr *wrs, size_t n, size_t *posted);

/* Post `n` receive work requests, one scatter entry each. */
int fp_post_recv(struct ibv_qp *qp, const fp_recv_wr *wrs, size_t n, size_t *posted);

/* Poll up to `n` completions into `out`; returns the count (0: none). */
int fp_poll_cq(struct ibv_cq *cq, fp_wc *out, int n);

/* As fp_poll_cq, but keep polling for up to `spin_ns` nanoseconds while
 * nothing has completed (adaptive busy-poll); returns at the first batch. */
int fp_poll_cq_spin(struct ibv_cq *cq, fp_wc *out, int n, uint64_t spin_ns);

/* Non-blocking: consume every pending event of `ch` (which must be in
 * O_NONBLOCK mode), acknowledge them, and re-arm `cq` for the next
 * completion. `*events` receives the number of events consumed. */
int fp_cq_channel_drain(struct ibv_comp_channel *ch, struct ibv_cq *cq, unsigned *events);

/* Put a completion channel's fd into non-blocking mode. */
int fp_channel_set_nonblock(struct ibv_comp_channel *ch);

/* RC QP transitions. `access` is IBV_ACCESS_* for remote operations. */
int fp_qp_to_init(struct ibv_qp *qp, uint8_t port, int access);
int fp_qp_to_rtr(struct ibv_qp *qp, const fp_qp_peer *peer, uint8_t port, int sgid_index,
                 int mtu, int max_dest_rd_atomic, int min_rnr_timer);
int fp_qp_to_rts(struct ibv_qp *qp, uint32_t psn, int timeout, int retry_cnt, int rnr_retry,
                 int max_rd_atomic);
int fp_qp_to_error(struct ibv_qp *qp);
/* Current state (enum ibv_qp_state) or a negative errno. */
int fp_qp_state(struct ibv_qp *qp);

/* The GID to use on `port`: a RoCE v2 entry, preferring an IPv4-mapped one
 * (::ffff:a.b.c.d) over link-local IPv6; on InfiniBand ports (which have no
 * GID types) index 0. Returns -ENOENT when a RoCE port has no RoCE v2 GID. */
int fp_pick_gid(struct ibv_context *ctx, uint8_t port, int *index, uint8_t gid[16],
                int *is_roce);

/* Gather-copy from `iov` (skipping the first `skip` bytes of the sequence)
 * into `dst` (capacity `cap`); returns the number of bytes copied. */
size_t fp_gather(uint8_t *dst, size_t cap, const fp_iov *iov, size_t niov, size_t skip);

#ifdef __cplusplus
}
#endif
#endif /* FP_VERBS_H */
