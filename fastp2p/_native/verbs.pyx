# cython: language_level=3
"""RDMA verbs: a pyverbs-shaped object tree over libibverbs and csrc/fp_verbs.c.

Objects: ``Context`` (an opened device) -> ``ProtectionDomain`` ->
``MemoryRegistration`` (of a fastp2p ``MemoryRegion`` or any writable buffer)
and ``QueuePair`` (RC); ``Context`` -> ``CompletionQueue`` (with a completion
channel whose fd an event loop watches). Every object has an idempotent
``close()`` and is a context manager; a parent's ``close()`` closes its
children first; a child keeps its parent alive.

Memory safety (DESIGN 5.4 rule 4): registering a ``MemoryRegion`` takes a
lease on it, released only after ``ibv_dereg_mr`` succeeded, so memory the NIC
may touch is never given back to the pool while registered. Work requests
name registered memory by (registration, offset); the transport's in-flight
table keeps the registration open (``inflight`` counter) until the completion
is polled or the queue pair is destroyed.

Errors are ``fastp2p.errors.RDMAError`` / ``MemoryRegistrationError`` with the
errno; completion statuses become typed exceptions in ``fastp2p.rdma_errors``
(the caller maps ``poll()`` results with ``completion_error``). The GIL is
released around posting and polling.
"""

cimport cython
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy, memset
from libc.errno cimport errno
from cpython.buffer cimport (
    PyObject_GetBuffer, PyBuffer_Release, PyBUF_SIMPLE, PyBUF_WRITABLE,
)

from fastp2p._native.libibverbs cimport *
from fastp2p._native.buffer cimport MemoryRegion

import os
import resource
import weakref

from fastp2p.errors import ClosedResourceError, MemoryRegistrationError, RDMAError

ACCESS_LOCAL_WRITE = IBV_ACCESS_LOCAL_WRITE
ACCESS_REMOTE_WRITE = IBV_ACCESS_REMOTE_WRITE
ACCESS_REMOTE_READ = IBV_ACCESS_REMOTE_READ
ACCESS_REMOTE_ATOMIC = IBV_ACCESS_REMOTE_ATOMIC
ACCESS_MW_BIND = IBV_ACCESS_MW_BIND

OP_SEND = FP_OP_SEND
OP_SEND_IMM = FP_OP_SEND_IMM
OP_WRITE = FP_OP_WRITE
OP_WRITE_IMM = FP_OP_WRITE_IMM
OP_READ = FP_OP_READ
OP_CAS = FP_OP_CAS
OP_FAA = FP_OP_FAA

WR_SIGNALED = FP_WR_SIGNALED
WR_INLINE = FP_WR_INLINE
WR_FENCE = FP_WR_FENCE

WC_SUCCESS = IBV_WC_SUCCESS
WC_WR_FLUSH_ERR = IBV_WC_WR_FLUSH_ERR
WC_REM_ACCESS_ERR = IBV_WC_REM_ACCESS_ERR
WC_RETRY_EXC_ERR = IBV_WC_RETRY_EXC_ERR
WC_RNR_RETRY_EXC_ERR = IBV_WC_RNR_RETRY_EXC_ERR
WC_SEND = IBV_WC_SEND
WC_RDMA_WRITE = IBV_WC_RDMA_WRITE
WC_RDMA_READ = IBV_WC_RDMA_READ
WC_COMP_SWAP = IBV_WC_COMP_SWAP
WC_FETCH_ADD = IBV_WC_FETCH_ADD
WC_RECV = IBV_WC_RECV
WC_RECV_RDMA_WITH_IMM = IBV_WC_RECV_RDMA_WITH_IMM

QPS_RESET = IBV_QPS_RESET
QPS_INIT = IBV_QPS_INIT
QPS_RTR = IBV_QPS_RTR
QPS_RTS = IBV_QPS_RTS
QPS_ERR = IBV_QPS_ERR

PORT_ACTIVE = IBV_PORT_ACTIVE
LINK_LAYER_ETHERNET = IBV_LINK_LAYER_ETHERNET
LINK_LAYER_INFINIBAND = IBV_LINK_LAYER_INFINIBAND

MTU_BYTES = {1: 256, 2: 512, 3: 1024, 4: 2048, 5: 4096}
_GID_TYPES = {IBV_GID_TYPE_IB: "IB", IBV_GID_TYPE_ROCE_V1: "RoCEv1", IBV_GID_TYPE_ROCE_V2: "RoCEv2"}

cdef enum:
    POLL_MAX = 256


cdef int _check(int rc, str what) except -1:
    """Raise RDMAError for a negative errno status (fp_ functions)."""
    if rc >= 0:
        return rc
    raise RDMAError(f"{what}: {os.strerror(-rc)}", errno=-rc)


def _memlock_hint():
    soft, hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    if soft == resource.RLIM_INFINITY:
        return ""
    return (f" (RLIMIT_MEMLOCK is {soft} bytes: raise it with `ulimit -l unlimited`, "
            "LimitMEMLOCK=infinity in a systemd unit, `--ulimit memlock=-1` for docker, "
            "or a memlock line in /etc/security/limits.conf)")


def devices():
    """Names of the RDMA devices libibverbs sees (empty when none)."""
    cdef int n = 0
    cdef ibv_device **lst = ibv_get_device_list(&n)
    if lst == NULL:
        e = errno
        if e == 38 or e == 0:  # ENOSYS: no kernel support
            return []
        raise RDMAError(f"ibv_get_device_list: {os.strerror(e)}", errno=e)
    try:
        return [ibv_get_device_name(lst[i]).decode() for i in range(n)]
    finally:
        ibv_free_device_list(lst)


@cython.no_gc_clear
cdef class VerbsObject:
    """Base: child tracking, idempotent close(), context manager."""

    def __cinit__(self, *args, **kwargs):
        self._children = weakref.WeakSet()
        self._closed = False

    cdef _add_child(self, VerbsObject child):
        self._children.add(child)

    cdef _destroy(self):
        pass

    def close(self):
        """Close children first, then this object's resource. Idempotent."""
        if self._closed:
            return
        for child in list(self._children):
            child.close()
        self._children.clear()
        self._destroy()
        self._closed = True

    @property
    def closed(self):
        return self._closed

    def _check_open(self):
        if self._closed:
            raise ClosedResourceError(f"{type(self).__name__} is closed")

    def __enter__(self):
        self._check_open()
        return self

    def __exit__(self, *exc):
        self.close()


@cython.no_gc_clear
cdef class Context(VerbsObject):
    """An opened RDMA device (``name=None``: the first one)."""

    def __init__(self, name=None):
        cdef int n = 0, i
        cdef ibv_device **lst = ibv_get_device_list(&n)
        if lst == NULL or n == 0:
            if lst != NULL:
                ibv_free_device_list(lst)
            raise RDMAError("no RDMA device found", errno=19)
        try:
            for i in range(n):
                dn = ibv_get_device_name(lst[i]).decode()
                if name is None or dn == name:
                    self.ctx = ibv_open_device(lst[i])
                    if self.ctx == NULL:
                        e = errno
                        raise RDMAError(f"ibv_open_device({dn}): {os.strerror(e)}", errno=e)
                    self.name = dn
                    return
        finally:
            ibv_free_device_list(lst)
        raise RDMAError(f"RDMA device {name!r} not found", errno=19)

    cdef _destroy(self):
        if self.ctx != NULL:
            ibv_close_device(self.ctx)
            self.ctx = NULL

    def __dealloc__(self):
        self._destroy()

    def query_device(self):
        """Device limits and capabilities as a dict."""
        self._check_open()
        cdef ibv_device_attr a
        _check(-ibv_query_device(self.ctx, &a), "ibv_query_device")
        return {
            "fw_ver": a.fw_ver.decode(errors="replace"),
            "max_mr_size": a.max_mr_size, "max_qp": a.max_qp, "max_qp_wr": a.max_qp_wr,
            "max_sge": a.max_sge, "max_cq": a.max_cq, "max_cqe": a.max_cqe, "max_mr": a.max_mr,
            "max_pd": a.max_pd, "max_qp_rd_atom": a.max_qp_rd_atom,
            "max_qp_init_rd_atom": a.max_qp_init_rd_atom, "atomic_cap": a.atomic_cap,
            "max_mw": a.max_mw, "phys_port_cnt": a.phys_port_cnt,
        }

    def query_port(self, int port=1):
        """Port state, MTUs (``IBV_MTU_*`` enum values), link layer, LID."""
        self._check_open()
        cdef ibv_port_attr a
        memset(&a, 0, sizeof(a))
        _check(-ibv_query_port(self.ctx, port, &a), f"ibv_query_port({port})")
        return {
            "state": a.state, "active": a.state == IBV_PORT_ACTIVE, "max_mtu": a.max_mtu,
            "active_mtu": a.active_mtu, "gid_tbl_len": a.gid_tbl_len, "max_msg_sz": a.max_msg_sz,
            "lid": a.lid, "link_layer": a.link_layer,
            "roce": a.link_layer == IBV_LINK_LAYER_ETHERNET,
        }

    def gids(self, int port=1):
        """``[(index, gid_bytes, type)]`` of the port's valid GID entries."""
        self._check_open()
        cdef ibv_gid_entry ent[256]
        cdef ssize_t n = ibv_query_gid_table(self.ctx, ent, 256, 0)
        _check(<int>n if n < 0 else 0, "ibv_query_gid_table")
        out = []
        for i in range(n):
            if ent[i].port_num == <uint32_t>port:
                out.append((ent[i].gid_index, bytes(ent[i].gid.raw[:16]),
                            _GID_TYPES.get(ent[i].gid_type, str(ent[i].gid_type))))
        return out

    def pick_gid(self, int port=1):
        """``(index, gid_bytes, is_roce)``: RoCE v2 (IPv4-mapped first) or IB GID 0.

        Raises:
            RDMAError: errno ENOENT when a RoCE port has no RoCE v2 GID.
        """
        self._check_open()
        cdef int idx = -1, roce = 0
        cdef uint8_t gid[16]
        cdef int rc = fp_pick_gid(self.ctx, port, &idx, gid, &roce)
        if rc == -2:
            raise RDMAError(f"{self.name} port {port} has no RoCE v2 GID "
                            "(give its netdev an IP address)", errno=2)
        _check(rc, "pick GID")
        return idx, bytes(gid[:16]), bool(roce)

    def alloc_pd(self):
        self._check_open()
        return ProtectionDomain(self)

    def create_cq(self, int cqe=1024, bint channel=True):
        self._check_open()
        return CompletionQueue(self, cqe, channel)

    def __repr__(self):
        return f"<Context {self.name}{' closed' if self._closed else ''}>"


@cython.no_gc_clear
cdef class ProtectionDomain(VerbsObject):
    """A protection domain; registrations and queue pairs hang off it."""

    def __init__(self, Context context not None):
        context._check_open()
        self.pd = ibv_alloc_pd(context.ctx)
        if self.pd == NULL:
            e = errno
            raise RDMAError(f"ibv_alloc_pd: {os.strerror(e)}", errno=e)
        self.context = context
        self._cache = {}
        context._add_child(self)

    cdef _destroy(self):
        self._cache = {}
        if self.pd != NULL:
            ibv_dealloc_pd(self.pd)
            self.pd = NULL

    def __dealloc__(self):
        if self.pd != NULL:
            ibv_dealloc_pd(self.pd)
            self.pd = NULL

    def register(self, obj, int access=IBV_ACCESS_LOCAL_WRITE, Py_ssize_t offset=0, length=None):
        """Register ``obj[offset:offset+length]`` with ``access`` (IBV_ACCESS_* flags).

        ``obj`` is a fastp2p ``MemoryRegion`` (leased until the registration is
        closed) or a buffer-protocol object (writable unless access is remote-read only).

        Raises:
            MemoryRegistrationError: the device refused (errno; RLIMIT_MEMLOCK hint).
            ClosedResourceError: the PD or the region is closed.
            RegionBoundsError/ValueError: the range is not inside ``obj``.
        """
        self._check_open()
        return MemoryRegistration(self, obj, access, offset, length)

    def registration(self, MemoryRegion region not None):
        """The cached local-access registration of the whole ``region`` (lazily made).

        Local access only (LOCAL_WRITE): remote peers reach memory solely
        through registrations scoped to a grant. Registrations of regions closed
        since are dropped first (when nothing is in flight on them).
        """
        self._check_open()
        self.sweep()
        mr = self._cache.get(region.region_id)
        if mr is not None and (<MemoryRegistration>mr).obj is region and not (<MemoryRegistration>mr)._closed:
            return mr
        mr = MemoryRegistration(self, region, IBV_ACCESS_LOCAL_WRITE, 0, None)
        self._cache[region.region_id] = mr
        return mr

    def sweep(self):
        """Deregister cached registrations whose region was closed and is idle."""
        cdef MemoryRegistration mr
        for rid, m in list(self._cache.items()):
            mr = <MemoryRegistration>m
            if mr._closed:
                del self._cache[rid]
            elif mr._region is not None and mr._region._closed and mr.inflight == 0:
                del self._cache[rid]
                mr.close()

    @property
    def cached(self):
        return len(self._cache)

    def create_qp(self, CompletionQueue cq not None, int max_send_wr=256, int max_recv_wr=256,
                  int max_inline=0):
        """A reliable-connected queue pair in RESET state (send and receive on ``cq``)."""
        self._check_open()
        return QueuePair(self, cq, max_send_wr, max_recv_wr, max_inline)


@cython.no_gc_clear
cdef class MemoryRegistration(VerbsObject):
    """Memory registered with a protection domain (``ibv_mr``): lkey, rkey, bounds."""

    def __init__(self, ProtectionDomain pd not None, obj, int access, Py_ssize_t offset, length):
        cdef char *base
        cdef Py_ssize_t total, n
        cdef int flags
        pd._check_open()
        self._has_view = False
        self._leased = False
        if isinstance(obj, MemoryRegion):
            self._region = <MemoryRegion>obj
            if self._region._closed:
                raise ClosedResourceError("memory region is closed")
            base = self._region._ptr
            total = self._region._nbytes
        else:
            flags = PyBUF_SIMPLE
            if access & (IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_ATOMIC):
                flags = PyBUF_WRITABLE
            PyObject_GetBuffer(obj, &self._view, flags)
            self._has_view = True
            base = <char *>self._view.buf
            total = self._view.len
        n = total - offset if length is None else length
        if offset < 0 or n <= 0 or offset + n > total:
            self._release_memory()
            raise ValueError(f"range [{offset}, {offset} + {n}) empty or outside a {total}-byte buffer")
        if self._region is not None:
            self._region._acquire_lease()
            self._leased = True
        self.mr = ibv_reg_mr(pd.pd, base + offset, <size_t>n, access)
        if self.mr == NULL:
            e = errno
            self._release_memory()
            raise MemoryRegistrationError(
                f"ibv_reg_mr({n} bytes, access={access:#x}): {os.strerror(e)}{_memlock_hint() if e in (1, 11, 12, 14) else ''}",
                errno=e)
        self.pd = pd
        self.obj = obj
        self.access = access
        self.offset = offset
        self.inflight = 0
        pd._add_child(self)

    cdef _release_memory(self):
        if self._leased:
            self._leased = False
            self._region._release_lease()
        if self._has_view:
            self._has_view = False
            PyBuffer_Release(&self._view)

    cdef _destroy(self):
        cdef int rc
        if self.mr != NULL:
            rc = ibv_dereg_mr(self.mr)
            if rc != 0:
                # the NIC may still use the memory: keep the lease (leak, never free early)
                raise MemoryRegistrationError(f"ibv_dereg_mr: {os.strerror(rc)}", errno=rc)
            self.mr = NULL
        self._release_memory()

    def __dealloc__(self):
        if self.mr != NULL:
            if ibv_dereg_mr(self.mr) == 0:
                self.mr = NULL
                self._release_memory()
        else:
            self._release_memory()

    @property
    def addr(self):
        """Address of the first registered byte (what a peer targets with the rkey)."""
        self._check_open()
        return <uint64_t>self.mr.addr

    @property
    def length(self):
        self._check_open()
        return self.mr.length

    @property
    def lkey(self):
        self._check_open()
        return self.mr.lkey

    @property
    def rkey(self):
        self._check_open()
        return self.mr.rkey

    @property
    def region(self):
        return self._region

    def view(self, Py_ssize_t offset=0, length=None):
        """A writable memoryview of the registered range (``offset`` relative to it)."""
        self._check_open()
        n = self.mr.length - offset if length is None else length
        if offset < 0 or n < 0 or offset + n > <Py_ssize_t>self.mr.length:
            raise ValueError("range outside the registration")
        if self._region is not None:
            return self._region.view(self.offset + offset, n)
        return memoryview(self.obj)[self.offset + offset:self.offset + offset + n]

    def gather(self, Py_ssize_t offset, Py_ssize_t cap, bufs, Py_ssize_t skip=0):
        """Copy the byte sequence ``bufs`` (from byte ``skip`` on) into the registered
        range at ``offset``, at most ``cap`` bytes; returns the count (one C copy)."""
        self._check_open()
        cdef fp_iov iov[64]
        cdef Py_buffer pb[64]
        cdef Py_ssize_t k = 0, i, nb = len(bufs), done = 0, got
        cdef size_t c
        cdef uint8_t *dst
        if offset < 0 or cap < 0 or offset + cap > <Py_ssize_t>self.mr.length:
            raise ValueError("gather range outside the registration")
        dst = <uint8_t *>self.mr.addr + offset
        i = 0
        while i < nb and done < cap:
            k = 0
            try:
                while i < nb and k < 64:
                    PyObject_GetBuffer(bufs[i], &pb[k], PyBUF_SIMPLE)
                    iov[k].base = pb[k].buf
                    iov[k].len = pb[k].len
                    k += 1
                    i += 1
                if cap - done >= 65536:
                    with nogil:
                        c = fp_gather(dst + done, cap - done, iov, k, skip)
                else:
                    c = fp_gather(dst + done, cap - done, iov, k, skip)
            finally:
                for j in range(k):
                    PyBuffer_Release(&pb[j])
            # account for what this chunk of buffers held past ``skip``
            got = 0
            for j in range(k):
                got += iov[j].len
            if skip >= got:
                skip -= got
            else:
                skip = 0
            done += c
        return done

    def __repr__(self):
        if self._closed:
            return "<MemoryRegistration closed>"
        return f"<MemoryRegistration {self.mr.length} bytes lkey={self.mr.lkey:#x} rkey={self.mr.rkey:#x}>"


@cython.no_gc_clear
cdef class CompletionQueue(VerbsObject):
    """A completion queue, optionally with a completion channel (``channel_fd``)."""

    def __init__(self, Context context not None, int cqe=1024, bint channel=True):
        context._check_open()
        self.channel = NULL
        if channel:
            self.channel = ibv_create_comp_channel(context.ctx)
            if self.channel == NULL:
                e = errno
                raise RDMAError(f"ibv_create_comp_channel: {os.strerror(e)}", errno=e)
            rc = fp_channel_set_nonblock(self.channel)
            if rc < 0:
                ibv_destroy_comp_channel(self.channel)
                self.channel = NULL
                _check(rc, "completion channel O_NONBLOCK")
        self.cq = ibv_create_cq(context.ctx, cqe, NULL, self.channel, 0)
        if self.cq == NULL:
            e = errno
            if self.channel != NULL:
                ibv_destroy_comp_channel(self.channel)
                self.channel = NULL
            raise RDMAError(f"ibv_create_cq({cqe}): {os.strerror(e)}", errno=e)
        self.context = context
        self.cqe = cqe
        if self.channel != NULL:
            _check(-ibv_req_notify_cq(self.cq, 0), "ibv_req_notify_cq")
        context._add_child(self)

    cdef _destroy(self):
        cdef unsigned ev = 0
        if self.cq != NULL:
            if self.channel != NULL:
                fp_cq_channel_drain(self.channel, self.cq, &ev)  # ack before destroy
            ibv_destroy_cq(self.cq)
            self.cq = NULL
        if self.channel != NULL:
            ibv_destroy_comp_channel(self.channel)
            self.channel = NULL

    def __dealloc__(self):
        self._destroy()

    @property
    def channel_fd(self):
        """The completion channel's fd (non-blocking) for ``loop.add_reader``; -1 if none."""
        return self.channel.fd if self.channel != NULL and not self._closed else -1

    def arm(self):
        """Request an event on the channel for the next completion."""
        self._check_open()
        _check(-ibv_req_notify_cq(self.cq, 0), "ibv_req_notify_cq")

    def drain_events(self):
        """Consume and acknowledge pending channel events, re-arm; returns how many."""
        self._check_open()
        cdef unsigned ev = 0
        if self.channel == NULL:
            return 0
        _check(fp_cq_channel_drain(self.channel, self.cq, &ev), "completion channel")
        return ev

    def poll(self, int max=32, uint64_t spin_ns=0):
        """Up to ``max`` completions as ``(wr_id, status, opcode, byte_len, imm, qp_num,
        vendor_err)`` tuples (``imm`` None without immediate data). With ``spin_ns``
        busy-polls that long while nothing has completed (GIL released)."""
        self._check_open()
        cdef fp_wc wc[POLL_MAX]
        cdef int n, i
        if max > POLL_MAX:
            max = POLL_MAX
        if max <= 0:
            return []
        with nogil:
            n = fp_poll_cq_spin(self.cq, wc, max, spin_ns)
        _check(n, "ibv_poll_cq")
        return [(wc[i].wr_id, wc[i].status, wc[i].opcode, wc[i].byte_len,
                 wc[i].imm if wc[i].has_imm else None, wc[i].qp_num, wc[i].vendor_err)
                for i in range(n)]


@cython.no_gc_clear
cdef class QueuePair(VerbsObject):
    """A reliable-connected queue pair; drive it RESET -> INIT -> RTR -> RTS."""

    def __init__(self, ProtectionDomain pd not None, CompletionQueue cq not None,
                 int max_send_wr=256, int max_recv_wr=256, int max_inline=0):
        cdef ibv_qp_init_attr a
        pd._check_open()
        cq._check_open()
        memset(&a, 0, sizeof(a))
        a.send_cq = cq.cq
        a.recv_cq = cq.cq
        a.qp_type = IBV_QPT_RC
        a.sq_sig_all = 0
        a.cap.max_send_wr = max_send_wr
        a.cap.max_recv_wr = max_recv_wr
        a.cap.max_send_sge = 1
        a.cap.max_recv_sge = 1
        a.cap.max_inline_data = max_inline
        self.qp = ibv_create_qp(pd.pd, &a)
        if self.qp == NULL:
            e = errno
            raise RDMAError(f"ibv_create_qp: {os.strerror(e)}", errno=e)
        self.pd = pd
        self.cq = cq
        self.max_send_wr = a.cap.max_send_wr
        self.max_recv_wr = a.cap.max_recv_wr
        self.max_inline = a.cap.max_inline_data
        pd._add_child(self)
        cq._add_child(self)

    cdef _destroy(self):
        cdef int rc
        if self.qp != NULL:
            rc = ibv_destroy_qp(self.qp)
            if rc != 0:
                raise RDMAError(f"ibv_destroy_qp: {os.strerror(rc)}", errno=rc)
            self.qp = NULL

    def __dealloc__(self):
        if self.qp != NULL:
            ibv_destroy_qp(self.qp)
            self.qp = NULL

    @property
    def qp_num(self):
        self._check_open()
        return self.qp.qp_num

    @property
    def state(self):
        """``QPS_*`` value."""
        self._check_open()
        return _check(fp_qp_state(self.qp), "ibv_query_qp")

    def to_init(self, int port=1, int access=0):
        self._check_open()
        _check(fp_qp_to_init(self.qp, port, access), "QP -> INIT")

    def to_rtr(self, uint32_t qpn, uint32_t psn, bytes gid not None, int port=1, int sgid_index=-1,
               int mtu=IBV_MTU_1024, int lid=0, int max_dest_rd_atomic=16, int min_rnr_timer=12):
        """Ready to receive from the peer QP ``qpn`` (``sgid_index`` -1: no GRH, IB)."""
        self._check_open()
        cdef fp_qp_peer p
        if len(gid) != 16:
            raise ValueError("a GID is 16 bytes")
        p.qpn = qpn
        p.psn = psn
        p.lid = <uint16_t>lid
        memcpy(p.gid, <const char *>gid, 16)
        _check(fp_qp_to_rtr(self.qp, &p, port, sgid_index, mtu, max_dest_rd_atomic, min_rnr_timer),
               "QP -> RTR")

    def to_rts(self, uint32_t psn, int timeout=14, int retry_cnt=7, int rnr_retry=7,
               int max_rd_atomic=16):
        self._check_open()
        _check(fp_qp_to_rts(self.qp, psn, timeout, retry_cnt, rnr_retry, max_rd_atomic), "QP -> RTS")

    def to_error(self):
        """Move to ERR: outstanding work requests complete with WR_FLUSH_ERR."""
        self._check_open()
        _check(fp_qp_to_error(self.qp), "QP -> ERR")

    def post_recv(self, uint64_t wr_id, MemoryRegistration mr not None, Py_ssize_t offset=0, length=None):
        """Post one receive into ``mr[offset:offset+length]``."""
        self._check_open()
        mr._check_open()
        cdef fp_recv_wr w
        cdef int rc
        n = mr.mr.length - offset if length is None else length
        if offset < 0 or n < 0 or offset + n > <Py_ssize_t>mr.mr.length:
            raise ValueError("receive range outside the registration")
        w.wr_id = wr_id
        w.addr = <uint64_t>mr.mr.addr + offset
        w.length = <uint32_t>n
        w.lkey = mr.mr.lkey
        with nogil:
            rc = fp_post_recv(self.qp, &w, 1, NULL)
        _check(rc, "ibv_post_recv")

    def post_recv_slots(self, MemoryRegistration mr not None, Py_ssize_t slot_size, slots,
                        uint64_t wr_base=0):
        """Post one receive per slot index in ``slots`` (``mr[i*slot_size:(i+1)*slot_size]``,
        wr_id ``wr_base + i``), chained in batches, GIL released. Returns the count."""
        self._check_open()
        mr._check_open()
        cdef fp_recv_wr w[FP_POST_BATCH]
        cdef size_t k = 0, posted
        cdef int rc
        cdef Py_ssize_t total = 0, idx
        cdef uint64_t base = <uint64_t>mr.mr.addr
        cdef size_t mlen = mr.mr.length
        for s in slots:
            idx = s
            if idx < 0 or (idx + 1) * slot_size > <Py_ssize_t>mlen:
                raise ValueError(f"slot {idx} outside the registration")
            w[k].wr_id = wr_base + <uint64_t>idx
            w[k].addr = base + <uint64_t>(idx * slot_size)
            w[k].length = <uint32_t>slot_size
            w[k].lkey = mr.mr.lkey
            k += 1
            if k == FP_POST_BATCH:
                with nogil:
                    rc = fp_post_recv(self.qp, w, k, &posted)
                _check(rc, "ibv_post_recv")
                total += k
                k = 0
        if k:
            with nogil:
                rc = fp_post_recv(self.qp, w, k, &posted)
            _check(rc, "ibv_post_recv")
            total += k
        return total

    def post_send(self, uint64_t wr_id, int opcode, MemoryRegistration mr=None, Py_ssize_t offset=0,
                  Py_ssize_t length=0, uint64_t remote_addr=0, uint32_t rkey=0, uint32_t imm=0,
                  uint64_t compare_add=0, uint64_t swap=0, int flags=FP_WR_SIGNALED):
        """Post one send-queue work request (``OP_*``) naming ``mr[offset:offset+length]``.

        Atomics (OP_CAS/OP_FAA) need an 8-byte local range for the old value.
        """
        self._check_open()
        cdef fp_send_wr w
        cdef int rc
        memset(&w, 0, sizeof(w))
        if opcode in (FP_OP_CAS, FP_OP_FAA):
            length = 8
        if length:
            if mr is None:
                raise ValueError("a non-empty work request needs a registration")
            mr._check_open()
            if offset < 0 or length < 0 or offset + length > <Py_ssize_t>mr.mr.length:
                raise ValueError("local range outside the registration")
            if length > 0x7FFFFFFF:
                raise ValueError("a work request carries at most 2 GiB")
            w.local_addr = <uint64_t>mr.mr.addr + offset
            w.lkey = mr.mr.lkey
        w.wr_id = wr_id
        w.length = <uint32_t>length
        w.remote_addr = remote_addr
        w.rkey = rkey
        w.imm = imm
        w.compare_add = compare_add
        w.swap = swap
        w.opcode = opcode
        w.flags = flags
        with nogil:
            rc = fp_post_send(self.qp, &w, 1, NULL)
        _check(rc, "ibv_post_send")

    def post_send_batch(self, wrs):
        """Post ``[(wr_id, opcode, mr, offset, length, remote_addr, rkey, imm, flags)]``
        in chained batches (GIL released per batch). Returns the count posted."""
        self._check_open()
        cdef fp_send_wr w[FP_POST_BATCH]
        cdef size_t k = 0, posted = 0
        cdef int rc
        cdef Py_ssize_t total = 0, off, ln
        cdef MemoryRegistration mr
        for t in wrs:
            wr_id, opcode, m, off, ln, raddr, rkey, imm, flags = t
            memset(&w[k], 0, sizeof(fp_send_wr))
            if ln:
                mr = <MemoryRegistration?>m
                mr._check_open()
                if off < 0 or ln < 0 or off + ln > <Py_ssize_t>mr.mr.length:
                    raise ValueError("local range outside the registration")
                w[k].local_addr = <uint64_t>mr.mr.addr + off
                w[k].lkey = mr.mr.lkey
            w[k].wr_id = wr_id
            w[k].length = <uint32_t>ln
            w[k].remote_addr = raddr
            w[k].rkey = rkey
            w[k].imm = imm
            w[k].opcode = opcode
            w[k].flags = flags
            k += 1
            if k == FP_POST_BATCH:
                with nogil:
                    rc = fp_post_send(self.qp, w, k, &posted)
                total += posted
                _check(rc, "ibv_post_send")
                k = 0
        if k:
            with nogil:
                rc = fp_post_send(self.qp, w, k, &posted)
            total += posted
            _check(rc, "ibv_post_send")
        return total

    def __repr__(self):
        if self._closed:
            return "<QueuePair closed>"
        return f"<QueuePair RC qpn={self.qp.qp_num:#x}>"
