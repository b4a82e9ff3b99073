# Cross-module declarations for fastp2p._native.verbs (pyverbs-style object tree).
#
# Ownership: a child holds a strong reference to its parent (QP -> PD, CQ;
# MR -> PD; PD, CQ -> Context), so a parent's C object outlives every child's.
# A parent's close() closes its children first (weak set, pyverbs
# close_weakrefs). close() is idempotent; __dealloc__ destroys only the
# object's own C resource (its children, holding references, are gone).
from fastp2p._native.libibverbs cimport (
    ibv_context, ibv_pd, ibv_mr, ibv_cq, ibv_comp_channel, ibv_qp,
)
from fastp2p._native.buffer cimport MemoryRegion
from cpython.buffer cimport Py_buffer


cdef class VerbsObject:
    cdef object _children          # weakref.WeakSet of VerbsObject
    cdef bint _closed
    cdef object __weakref__
    cdef _add_child(self, VerbsObject child)
    cdef _destroy(self)


cdef class Context(VerbsObject):
    cdef ibv_context *ctx
    cdef readonly str name


cdef class ProtectionDomain(VerbsObject):
    cdef ibv_pd *pd
    cdef readonly Context context
    cdef dict _cache               # region_id -> MemoryRegistration (local access only)


cdef class MemoryRegistration(VerbsObject):
    cdef ibv_mr *mr
    cdef readonly ProtectionDomain pd
    cdef readonly object obj       # the MemoryRegion or buffer object registered
    cdef MemoryRegion _region      # set when obj is a fastp2p MemoryRegion (leased)
    cdef Py_buffer _view           # set for other buffer objects
    cdef bint _has_view
    cdef bint _leased
    cdef readonly int access
    cdef readonly Py_ssize_t offset  # of the registered range within obj
    cdef public Py_ssize_t inflight  # posted work requests naming this MR (transport's table)
    cdef _release_memory(self)


cdef class CompletionQueue(VerbsObject):
    cdef ibv_cq *cq
    cdef ibv_comp_channel *channel
    cdef readonly Context context
    cdef readonly int cqe


cdef class QueuePair(VerbsObject):
    cdef ibv_qp *qp
    cdef readonly ProtectionDomain pd
    cdef readonly CompletionQueue cq
    cdef readonly int max_send_wr
    cdef readonly int max_recv_wr
    cdef readonly int max_inline
