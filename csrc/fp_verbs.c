/* fp_verbs.c - batches, polling and QP transitions over libibverbs.
 * See fp_verbs.h for the ownership contract. */
// ci-ldflags: -libverbs
#define _GNU_SOURCE
#include "fp_verbs.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <time.h>

#define FP_CHECK_ARG(c) do { if (!(c)) return -EINVAL; } while (0)
#define FP_NEG(rc) ((rc) > 0 ? -(rc) : ((rc) < 0 ? (rc) : -EIO))

static uint64_t fp_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int fp_opcode(int op, enum ibv_wr_opcode *out)
{
    switch (op) {
    case FP_OP_SEND: *out = IBV_WR_SEND; return 0;
    case FP_OP_SEND_IMM: *out = IBV_WR_SEND_WITH_IMM; return 0;
    case FP_OP_WRITE: *out = IBV_WR_RDMA_WRITE; return 0;
    case FP_OP_WRITE_IMM: *out = IBV_WR_RDMA_WRITE_WITH_IMM; return 0;
    case FP_OP_READ: *out = IBV_WR_RDMA_READ; return 0;
    case FP_OP_CAS: *out = IBV_WR_ATOMIC_CMP_AND_SWP; return 0;
    case FP_OP_FAA: *out = IBV_WR_ATOMIC_FETCH_AND_ADD; return 0;
    default: return -EINVAL;
    }
}

int fp_post_send(struct ibv_qp *qp, const fp_send_wr *wrs, size_t n, size_t *posted)
{
    struct ibv_send_wr wr[FP_POST_BATCH];
    struct ibv_sge sge[FP_POST_BATCH];
    size_t done = 0;
    int rc = 0;

    FP_CHECK_ARG(qp != NULL && (wrs != NULL || n == 0));
    while (done < n) {
        size_t k = n - done < FP_POST_BATCH ? n - done : FP_POST_BATCH;
        struct ibv_send_wr *bad = NULL;
        memset(wr, 0, sizeof(wr[0]) * k);
        for (size_t i = 0; i < k; i++) {
            const fp_send_wr *s = &wrs[done + i];
            if ((rc = fp_opcode(s->opcode, &wr[i].opcode)) < 0)
                goto out;
            wr[i].wr_id = s->wr_id;
            wr[i].next = i + 1 < k ? &wr[i + 1] : NULL;
            if (s->length > 0 || s->opcode == FP_OP_CAS || s->opcode == FP_OP_FAA) {
                sge[i].addr = s->local_addr;
                sge[i].length = s->length;
                sge[i].lkey = s->lkey;
                wr[i].sg_list = &sge[i];
                wr[i].num_sge = 1;
            }
            if (s->flags & FP_WR_SIGNALED) wr[i].send_flags |= IBV_SEND_SIGNALED;
            if (s->flags & FP_WR_INLINE) wr[i].send_flags |= IBV_SEND_INLINE;
            if (s->flags & FP_WR_FENCE) wr[i].send_flags |= IBV_SEND_FENCE;
            if (s->opcode == FP_OP_SEND_IMM || s->opcode == FP_OP_WRITE_IMM)
                wr[i].imm_data = htonl(s->imm);
            if (s->opcode == FP_OP_WRITE || s->opcode == FP_OP_WRITE_IMM || s->opcode == FP_OP_READ) {
                wr[i].wr.rdma.remote_addr = s->remote_addr;
                wr[i].wr.rdma.rkey = s->rkey;
            } else if (s->opcode == FP_OP_CAS || s->opcode == FP_OP_FAA) {
                wr[i].wr.atomic.remote_addr = s->remote_addr;
                wr[i].wr.atomic.rkey = s->rkey;
                wr[i].wr.atomic.compare_add = s->compare_add;
                wr[i].wr.atomic.swap = s->swap;
            }
        }
        rc = ibv_post_send(qp, wr, &bad);
        if (rc) {
            size_t ok = 0;
            for (struct ibv_send_wr *w = wr; w && w != bad; w = w->next)
                ok++;
            done += ok;
            rc = FP_NEG(rc);
            goto out;
        }
        done += k;
    }
out:
    if (posted)
        *posted = done;
    return rc < 0 ? rc : 0;
}

int fp_post_recv(struct ibv_qp *qp, const fp_recv_wr *wrs, size_t n, size_t *posted)
{
    struct ibv_recv_wr wr[FP_POST_BATCH];
    struct ibv_sge sge[FP_POST_BATCH];
    size_t done = 0;
    int rc = 0;

    FP_CHECK_ARG(qp != NULL && (wrs != NULL || n == 0));
    while (done < n) {
        size_t k = n - done < FP_POST_BATCH ? n - done : FP_POST_BATCH;
        struct ibv_recv_wr *bad = NULL;
        for (size_t i = 0; i < k; i++) {
            const fp_recv_wr *r = &wrs[done + i];
            sge[i].addr = r->addr;
            sge[i].length = r->length;
            sge[i].lkey = r->lkey;
            wr[i].wr_id = r->wr_id;
            wr[i].sg_list = &sge[i];
            wr[i].num_sge = r->length ? 1 : 0;
            wr[i].next = i + 1 < k ? &wr[i + 1] : NULL;
        }
        rc = ibv_post_recv(qp, wr, &bad);
        if (rc) {
            size_t ok = 0;
            for (struct ibv_recv_wr *w = wr; w && w != bad; w = w->next)
                ok++;
            done += ok;
            rc = FP_NEG(rc);
            break;
        }
        done += k;
    }
    if (posted)
        *posted = done;
    return rc < 0 ? rc : 0;
}

int fp_poll_cq(struct ibv_cq *cq, fp_wc *out, int n)
{
    struct ibv_wc wc[32];
    int total = 0;

    FP_CHECK_ARG(cq != NULL && out != NULL && n >= 0);
    while (total < n) {
        int want = n - total < 32 ? n - total : 32;
        int got = ibv_poll_cq(cq, want, wc);
        if (got < 0)
            return total ? total : -EIO;
        for (int i = 0; i < got; i++) {
            fp_wc *o = &out[total + i];
            o->wr_id = wc[i].wr_id;
            o->status = wc[i].status;
            o->opcode = wc[i].opcode;
            o->byte_len = wc[i].byte_len;
            o->qp_num = wc[i].qp_num;
            o->vendor_err = wc[i].vendor_err;
            o->has_imm = (wc[i].wc_flags & IBV_WC_WITH_IMM) ? 1 : 0;
            o->imm = o->has_imm ? ntohl(wc[i].imm_data) : 0;
        }
        total += got;
        if (got < want)
            break;
    }
    return total;
}

int fp_poll_cq_spin(struct ibv_cq *cq, fp_wc *out, int n, uint64_t spin_ns)
{
    int got = fp_poll_cq(cq, out, n);
    if (got != 0 || spin_ns == 0)
        return got;
    uint64_t until = fp_now_ns() + spin_ns;
    do {
        got = fp_poll_cq(cq, out, n);
        if (got != 0)
            return got;
    } while (fp_now_ns() < until);
    return 0;
}

int fp_channel_set_nonblock(struct ibv_comp_channel *ch)
{
    FP_CHECK_ARG(ch != NULL);
    int fl = fcntl(ch->fd, F_GETFL);
    if (fl < 0 || fcntl(ch->fd, F_SETFL, fl | O_NONBLOCK) < 0)
        return -errno;
    return 0;
}

int fp_cq_channel_drain(struct ibv_comp_channel *ch, struct ibv_cq *cq, unsigned *events)
{
    unsigned n = 0;
    struct ibv_cq *ev_cq;
    void *ev_ctx;

    FP_CHECK_ARG(ch != NULL && cq != NULL);
    while (ibv_get_cq_event(ch, &ev_cq, &ev_ctx) == 0) {
        n++;
        if (ev_cq != cq) {               /* one channel per CQ in fastp2p */
            ibv_ack_cq_events(ev_cq, 1);
            n--;
        }
    }
    if (n)
        ibv_ack_cq_events(cq, n);
    if (events)
        *events = n;
    int rc = ibv_req_notify_cq(cq, 0);
    return rc ? FP_NEG(rc) : 0;
}

int fp_qp_to_init(struct ibv_qp *qp, uint8_t port, int access)
{
    struct ibv_qp_attr a;
    FP_CHECK_ARG(qp != NULL);
    memset(&a, 0, sizeof(a));
    a.qp_state = IBV_QPS_INIT;
    a.pkey_index = 0;
    a.port_num = port;
    a.qp_access_flags = access;
    int rc = ibv_modify_qp(qp, &a, IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_ACCESS_FLAGS);
    return rc ? FP_NEG(rc) : 0;
}

int fp_qp_to_rtr(struct ibv_qp *qp, const fp_qp_peer *peer, uint8_t port, int sgid_index,
                 int mtu, int max_dest_rd_atomic, int min_rnr_timer)
{
    struct ibv_qp_attr a;
    FP_CHECK_ARG(qp != NULL && peer != NULL && mtu >= IBV_MTU_256 && mtu <= IBV_MTU_4096);
    memset(&a, 0, sizeof(a));
    a.qp_state = IBV_QPS_RTR;
    a.path_mtu = (enum ibv_mtu)mtu;
    a.dest_qp_num = peer->qpn & 0xffffff;
    a.rq_psn = peer->psn & 0xffffff;
    a.max_dest_rd_atomic = (uint8_t)max_dest_rd_atomic;
    a.min_rnr_timer = (uint8_t)min_rnr_timer;
    a.ah_attr.port_num = port;
    a.ah_attr.dlid = peer->lid;
    a.ah_attr.sl = 0;
    a.ah_attr.src_path_bits = 0;
    if (sgid_index >= 0) {
        a.ah_attr.is_global = 1;
        memcpy(a.ah_attr.grh.dgid.raw, peer->gid, 16);
        a.ah_attr.grh.sgid_index = (uint8_t)sgid_index;
        a.ah_attr.grh.hop_limit = 64;
        a.ah_attr.grh.traffic_class = 0;
        a.ah_attr.grh.flow_label = 0;
    }
    int rc = ibv_modify_qp(qp, &a, IBV_QP_STATE | IBV_QP_AV | IBV_QP_PATH_MTU | IBV_QP_DEST_QPN |
                                   IBV_QP_RQ_PSN | IBV_QP_MAX_DEST_RD_ATOMIC | IBV_QP_MIN_RNR_TIMER);
    return rc ? FP_NEG(rc) : 0;
}

int fp_qp_to_rts(struct ibv_qp *qp, uint32_t psn, int timeout, int retry_cnt, int rnr_retry,
                 int max_rd_atomic)
{
    struct ibv_qp_attr a;
    FP_CHECK_ARG(qp != NULL);
    memset(&a, 0, sizeof(a));
    a.qp_state = IBV_QPS_RTS;
    a.sq_psn = psn & 0xffffff;
    a.timeout = (uint8_t)timeout;
    a.retry_cnt = (uint8_t)retry_cnt;
    a.rnr_retry = (uint8_t)rnr_retry;
    a.max_rd_atomic = (uint8_t)max_rd_atomic;
    int rc = ibv_modify_qp(qp, &a, IBV_QP_STATE | IBV_QP_SQ_PSN | IBV_QP_TIMEOUT | IBV_QP_RETRY_CNT |
                                   IBV_QP_RNR_RETRY | IBV_QP_MAX_QP_RD_ATOMIC);
    return rc ? FP_NEG(rc) : 0;
}

int fp_qp_to_error(struct ibv_qp *qp)
{
    struct ibv_qp_attr a;
    FP_CHECK_ARG(qp != NULL);
    memset(&a, 0, sizeof(a));
    a.qp_state = IBV_QPS_ERR;
    int rc = ibv_modify_qp(qp, &a, IBV_QP_STATE);
    return rc ? FP_NEG(rc) : 0;
}

int fp_qp_state(struct ibv_qp *qp)
{
    struct ibv_qp_attr a;
    struct ibv_qp_init_attr ia;
    FP_CHECK_ARG(qp != NULL);
    int rc = ibv_query_qp(qp, &a, IBV_QP_STATE, &ia);
    return rc ? FP_NEG(rc) : (int)a.qp_state;
}

static int fp_gid_is_v4mapped(const uint8_t g[16])
{
    static const uint8_t pfx[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    return memcmp(g, pfx, 12) == 0;
}

int fp_pick_gid(struct ibv_context *ctx, uint8_t port, int *index, uint8_t gid[16], int *is_roce)
{
    struct ibv_port_attr pa;
    struct ibv_gid_entry ent[256];
    int best = -1, best_score = -1;

    FP_CHECK_ARG(ctx != NULL && index != NULL && gid != NULL);
    int rc = ibv_query_port(ctx, port, &pa);
    if (rc)
        return FP_NEG(rc);
    if (is_roce)
        *is_roce = pa.link_layer == IBV_LINK_LAYER_ETHERNET;
    if (pa.link_layer != IBV_LINK_LAYER_ETHERNET) {
        union ibv_gid g;
        if ((rc = ibv_query_gid(ctx, port, 0, &g)) != 0)
            return FP_NEG(rc);
        *index = 0;
        memcpy(gid, g.raw, 16);
        return 0;
    }
    ssize_t n = ibv_query_gid_table(ctx, ent, 256, 0);
    if (n < 0)
        return (int)n;
    for (ssize_t i = 0; i < n; i++) {
        if (ent[i].port_num != port || ent[i].gid_type != IBV_GID_TYPE_ROCE_V2)
            continue;
        int score = fp_gid_is_v4mapped(ent[i].gid.raw) ? 2 : 1;
        if (score > best_score) {
            best_score = score;
            best = (int)i;
        }
    }
    if (best < 0)
        return -ENOENT;
    *index = (int)ent[best].gid_index;
    memcpy(gid, ent[best].gid.raw, 16);
    return 0;
}

size_t fp_gather(uint8_t *dst, size_t cap, const fp_iov *iov, size_t niov, size_t skip)
{
    size_t out = 0;
    for (size_t i = 0; i < niov && out < cap; i++) {
        size_t len = iov[i].len;
        if (skip >= len) {
            skip -= len;
            continue;
        }
        size_t k = len - skip;
        if (k > cap - out)
            k = cap - out;
        memcpy(dst + out, (const uint8_t *)iov[i].base + skip, k);
        out += k;
        skip = 0;
    }
    return out;
}
