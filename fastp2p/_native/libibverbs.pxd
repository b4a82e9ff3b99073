# The slice of <infiniband/verbs.h> and csrc/fp_verbs.h that fastp2p._native.verbs uses.
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t


cdef extern from "<infiniband/verbs.h>" nogil:
    cdef struct ibv_device:
        pass
    cdef struct ibv_context:
        ibv_device *device
    cdef struct ibv_pd:
        ibv_context *context
    cdef struct ibv_mr:
        void *addr
        size_t length
        uint32_t lkey
        uint32_t rkey
    cdef struct ibv_comp_channel:
        int fd
    cdef struct ibv_cq:
        pass
    cdef struct ibv_qp:
        uint32_t qp_num
    cdef struct ibv_srq:
        pass
    cdef struct ibv_qp_cap:
        uint32_t max_send_wr
        uint32_t max_recv_wr
        uint32_t max_send_sge
        uint32_t max_recv_sge
        uint32_t max_inline_data
    enum ibv_qp_type:
        IBV_QPT_RC
    cdef struct ibv_qp_init_attr:
        void *qp_context
        ibv_cq *send_cq
        ibv_cq *recv_cq
        ibv_srq *srq
        ibv_qp_cap cap
        ibv_qp_type qp_type
        int sq_sig_all
    cdef struct ibv_port_attr:
        int state
        int max_mtu
        int active_mtu
        int gid_tbl_len
        uint32_t max_msg_sz
        uint16_t lid
        uint8_t link_layer
        uint8_t phys_state
    cdef struct ibv_device_attr:
        char fw_ver[64]
        uint64_t max_mr_size
        int max_qp
        int max_qp_wr
        int max_sge
        int max_cq
        int max_cqe
        int max_mr
        int max_pd
        int max_qp_rd_atom
        int max_qp_init_rd_atom
        int atomic_cap
        int max_mw
        uint8_t phys_port_cnt
    union ibv_gid:
        uint8_t raw[16]
    cdef struct ibv_gid_entry:
        ibv_gid gid
        uint32_t gid_index
        uint32_t port_num
        uint32_t gid_type
        uint32_t ndev_ifindex

    enum:
        IBV_ACCESS_LOCAL_WRITE
        IBV_ACCESS_REMOTE_WRITE
        IBV_ACCESS_REMOTE_READ
        IBV_ACCESS_REMOTE_ATOMIC
        IBV_ACCESS_MW_BIND
        IBV_LINK_LAYER_ETHERNET
        IBV_LINK_LAYER_INFINIBAND
        IBV_PORT_ACTIVE
        IBV_GID_TYPE_IB
        IBV_GID_TYPE_ROCE_V1
        IBV_GID_TYPE_ROCE_V2
        IBV_QPS_RESET
        IBV_QPS_INIT
        IBV_QPS_RTR
        IBV_QPS_RTS
        IBV_QPS_SQD
        IBV_QPS_SQE
        IBV_QPS_ERR
        IBV_WC_SUCCESS
        IBV_WC_LOC_LEN_ERR
        IBV_WC_LOC_QP_OP_ERR
        IBV_WC_LOC_PROT_ERR
        IBV_WC_WR_FLUSH_ERR
        IBV_WC_REM_INV_REQ_ERR
        IBV_WC_REM_ACCESS_ERR
        IBV_WC_REM_OP_ERR
        IBV_WC_RETRY_EXC_ERR
        IBV_WC_RNR_RETRY_EXC_ERR
        IBV_WC_SEND
        IBV_WC_RDMA_WRITE
        IBV_WC_RDMA_READ
        IBV_WC_COMP_SWAP
        IBV_WC_FETCH_ADD
        IBV_WC_RECV
        IBV_WC_RECV_RDMA_WITH_IMM
        IBV_MTU_256
        IBV_MTU_1024
        IBV_MTU_4096

    ibv_device **ibv_get_device_list(int *num_devices)
    void ibv_free_device_list(ibv_device **lst)
    const char *ibv_get_device_name(ibv_device *device)
    uint64_t ibv_get_device_guid(ibv_device *device)
    ibv_context *ibv_open_device(ibv_device *device)
    int ibv_close_device(ibv_context *context)
    int ibv_query_device(ibv_context *context, ibv_device_attr *device_attr)
    int ibv_query_port(ibv_context *context, uint8_t port_num, ibv_port_attr *port_attr)
    int ibv_query_gid(ibv_context *context, uint8_t port_num, int index, ibv_gid *gid)
    ssize_t ibv_query_gid_table(ibv_context *context, ibv_gid_entry *entries, size_t max_entries,
                                uint32_t flags)
    ibv_pd *ibv_alloc_pd(ibv_context *context)
    int ibv_dealloc_pd(ibv_pd *pd)
    ibv_mr *ibv_reg_mr(ibv_pd *pd, void *addr, size_t length, int access)
    int ibv_dereg_mr(ibv_mr *mr)
    ibv_comp_channel *ibv_create_comp_channel(ibv_context *context)
    int ibv_destroy_comp_channel(ibv_comp_channel *channel)
    ibv_cq *ibv_create_cq(ibv_context *context, int cqe, void *cq_context,
                          ibv_comp_channel *channel, int comp_vector)
    int ibv_destroy_cq(ibv_cq *cq)
    int ibv_req_notify_cq(ibv_cq *cq, int solicited_only)
    void ibv_ack_cq_events(ibv_cq *cq, unsigned int nevents)
    ibv_qp *ibv_create_qp(ibv_pd *pd, ibv_qp_init_attr *qp_init_attr)
    int ibv_destroy_qp(ibv_qp *qp)
    const char *ibv_wc_status_str(int status)


cdef extern from "fp_verbs.h" nogil:
    enum:
        FP_OP_SEND
        FP_OP_SEND_IMM
        FP_OP_WRITE
        FP_OP_WRITE_IMM
        FP_OP_READ
        FP_OP_CAS
        FP_OP_FAA
        FP_WR_SIGNALED
        FP_WR_INLINE
        FP_WR_FENCE
        FP_POST_BATCH
    ctypedef struct fp_send_wr:
        uint64_t wr_id
        uint64_t local_addr
        uint64_t remote_addr
        uint64_t compare_add
        uint64_t swap
        uint32_t length
        uint32_t lkey
        uint32_t rkey
        uint32_t imm
        int opcode
        int flags
    ctypedef struct fp_recv_wr:
        uint64_t wr_id
        uint64_t addr
        uint32_t length
        uint32_t lkey
    ctypedef struct fp_wc:
        uint64_t wr_id
        int status
        int opcode
        uint32_t byte_len
        uint32_t imm
        uint32_t qp_num
        uint32_t vendor_err
        int has_imm
    ctypedef struct fp_qp_peer:
        uint32_t qpn
        uint32_t psn
        uint16_t lid
        uint8_t gid[16]
    ctypedef struct fp_iov:
        const void *base
        size_t len

    int fp_post_send(ibv_qp *qp, const fp_send_wr *wrs, size_t n, size_t *posted)
    int fp_post_recv(ibv_qp *qp, const fp_recv_wr *wrs, size_t n, size_t *posted)
    int fp_poll_cq(ibv_cq *cq, fp_wc *out, int n)
    int fp_poll_cq_spin(ibv_cq *cq, fp_wc *out, int n, uint64_t spin_ns)
    int fp_cq_channel_drain(ibv_comp_channel *ch, ibv_cq *cq, unsigned *events)
    int fp_channel_set_nonblock(ibv_comp_channel *ch)
    int fp_qp_to_init(ibv_qp *qp, uint8_t port, int access)
    int fp_qp_to_rtr(ibv_qp *qp, const fp_qp_peer *peer, uint8_t port, int sgid_index,
                     int mtu, int max_dest_rd_atomic, int min_rnr_timer)
    int fp_qp_to_rts(ibv_qp *qp, uint32_t psn, int timeout, int retry_cnt, int rnr_retry,
                     int max_rd_atomic)
    int fp_qp_to_error(ibv_qp *qp)
    int fp_qp_state(ibv_qp *qp)
    int fp_pick_gid(ibv_context *ctx, uint8_t port, int *index, uint8_t gid[16], int *is_roce)
    size_t fp_gather(uint8_t *dst, size_t cap, const fp_iov *iov, size_t niov, size_t skip)
