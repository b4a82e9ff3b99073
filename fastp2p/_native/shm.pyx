# cython: language_level=3
"""Shared-memory byte rings between two processes: thin bindings over csrc/fp_ring.c.

One sealed memfd holds a header page and two SPSC byte rings (ring 0 creator ->
attacher, ring 1 attacher -> creator), each mapped twice back to back so every
readable or writable span is contiguous. The rings carry a byte stream (yamux
frames); the caller frames and decodes.

The peer process is untrusted: indices it publishes are validated on every
operation and an impossible one raises ``ShmRingError`` (sticky: the ring end
stays broken). The bytes themselves are untrusted input like socket data.

Lifetime: ``_ShmMap`` owns the C segment (fd + mapping). The segment, its
reader and writer, and every ``peek()`` view (through the reader) hold it, so
the mapping outlives all of them; ``close()`` closes the fd at once and
unmaps when the last exported view and GIL-free call are gone.
"""

cimport cython
from libc.stdint cimport uint8_t, uint64_t
from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBuffer_FillInfo, PyBUF_SIMPLE
from cpython.memoryview cimport PyMemoryView_FromObject

import operator
import os

from fastp2p.errors import BusyResourceError, ClosedResourceError, ShmRingError

cdef extern from "fp_ring.h" nogil:
    int FP_ECORRUPT
    int FP_EINVAL
    uint64_t FP_RING_DEFAULT_CAP
    uint64_t FP_RING_MAX_CAP

    ctypedef struct fp_ring_iov:
        const void *base
        size_t len
    ctypedef struct fp_ring_writer:
        uint64_t cap
    ctypedef struct fp_ring_reader:
        uint64_t cap
    ctypedef struct fp_ring_segment:
        int fd
        int creator
        uint8_t *map
        uint64_t cap[2]
        fp_ring_writer w
        fp_ring_reader r

    size_t fp_ring_page_size()
    int fp_ring_check_cap(uint64_t cap)
    int fp_ring_segment_create(fp_ring_segment *seg, uint64_t cap0, uint64_t cap1)
    int fp_ring_segment_attach(fp_ring_segment *seg, int fd)
    void fp_ring_segment_close_fd(fp_ring_segment *seg)
    void fp_ring_segment_unmap(fp_ring_segment *seg)
    void fp_ring_segment_destroy(fp_ring_segment *seg)

    int fp_ring_writer_free(fp_ring_writer *w, size_t *free_bytes)
    int fp_ring_writer_write(fp_ring_writer *w, const fp_ring_iov *iov, size_t niov, size_t *written)
    int fp_ring_writer_wake(fp_ring_writer *w)
    int fp_ring_writer_arm_space(fp_ring_writer *w)

    int fp_ring_reader_readable(fp_ring_reader *r, size_t *readable)
    int fp_ring_reader_peek(fp_ring_reader *r, const uint8_t **ptr, size_t *len)
    int fp_ring_reader_consume(fp_ring_reader *r, size_t n)
    int fp_ring_reader_arm(fp_ring_reader *r)
    int fp_ring_reader_spin(fp_ring_reader *r, uint64_t max_ns, size_t *readable)

cdef enum:
    BATCH = 32                    # buffers acquired per C call
    NOGIL_BYTES = 64 * 1024       # copies at least this large release the GIL

DEFAULT_CAPACITY = FP_RING_DEFAULT_CAP
MAX_CAPACITY = FP_RING_MAX_CAP
PAGE_SIZE = fp_ring_page_size()


cdef int _check(int rc, str what) except -1:
    if rc >= 0:
        return rc
    if rc == FP_ECORRUPT:
        raise ShmRingError(f"{what}: the peer left the shared ring in an impossible state")
    if rc == FP_EINVAL:
        raise ValueError(f"{what}: invalid argument")
    raise OSError(-rc, f"{what}: {os.strerror(-rc)}")


@cython.final
@cython.no_gc_clear
cdef class _ShmMap:
    """Owner of the C segment; unmaps only once nothing can touch the memory."""

    cdef fp_ring_segment seg
    cdef Py_ssize_t busy      # live peek() exports + calls running without the GIL
    cdef bint closed

    def __cinit__(self):
        self.seg.fd = -1
        self.seg.map = NULL
        self.busy = 0
        self.closed = True

    def __dealloc__(self):
        # every view and GIL-free call holds a reference to us: busy == 0 here
        fp_ring_segment_destroy(&self.seg)

    cdef inline int live(self) except -1:
        if self.closed:
            raise ClosedResourceError("shared-memory segment is closed")
        return 0

    cdef inline void enter(self) noexcept:
        self.busy += 1

    cdef inline void leave(self) noexcept:
        self.busy -= 1
        if self.busy == 0 and self.closed:
            fp_ring_segment_unmap(&self.seg)

    cdef void close(self) noexcept:
        if not self.closed:
            self.closed = True
            fp_ring_segment_close_fd(&self.seg)
            if self.busy == 0:
                fp_ring_segment_unmap(&self.seg)


@cython.final
cdef class RingWriter:
    """The producing end of one ring: appends bytes for the peer process."""

    cdef _ShmMap _map
    cdef bint _active         # a GIL-free copy is running (one caller at a time)

    def __init__(self, *args, **kwargs):
        raise TypeError("RingWriter comes from ShmSegment.writer")

    cdef int _enter(self) except -1:
        self._map.live()
        if self._active:
            raise BusyResourceError("another thread is writing to this ring")
        return 0

    def write(self, bufs):
        """Copy as many bytes of ``bufs`` as fit (in order; may stop mid-buffer).

        ``bufs`` is one buffer-protocol object or a list/tuple of them. Returns
        the number of bytes written (0 when the ring is full).
        """
        cdef _ShmMap m = self._map
        cdef Py_buffer pb[BATCH]
        cdef fp_ring_iov iov[BATCH]
        cdef Py_ssize_t i = 0, k, j, n
        cdef size_t want, written = 0, total = 0
        cdef int rc = 0
        self._enter()
        multi = type(bufs) is list or type(bufs) is tuple
        n = len(bufs) if multi else 1
        while i < n:
            m.live()
            k = 0
            want = 0
            try:
                while k < BATCH and i + k < n:
                    PyObject_GetBuffer(bufs[i + k] if multi else bufs, &pb[k], PyBUF_SIMPLE)
                    iov[k].base = pb[k].buf
                    iov[k].len = <size_t>pb[k].len
                    want += iov[k].len
                    k += 1
                if want >= NOGIL_BYTES:
                    # Hold the mapping (busy) and the end (_active) across the
                    # GIL-free copy: close() from another thread must not unmap.
                    m.enter()
                    self._active = True
                    with nogil:
                        rc = fp_ring_writer_write(&m.seg.w, iov, <size_t>k, &written)
                    self._active = False
                    m.leave()
                else:
                    rc = fp_ring_writer_write(&m.seg.w, iov, <size_t>k, &written)
            finally:
                for j in range(k):
                    PyBuffer_Release(&pb[j])
            _check(rc, "RingWriter.write")
            total += written
            if written < want:
                break
            i += k
        return total

    def wake_needed(self):
        """After write(): True if the consumer sleeps and must be woken (flag cleared)."""
        self._enter()
        return _check(fp_ring_writer_wake(&self._map.seg.w), "RingWriter.wake_needed") == 1

    def arm_space(self):
        """Announce a wait for space. True: space is free now (don't wait)."""
        self._enter()
        return _check(fp_ring_writer_arm_space(&self._map.seg.w), "RingWriter.arm_space") == 1

    @property
    def free(self):
        """Bytes writable now."""
        cdef size_t f = 0
        self._enter()
        _check(fp_ring_writer_free(&self._map.seg.w, &f), "RingWriter.free")
        return f

    @property
    def capacity(self):
        return self._map.seg.w.cap

    def __repr__(self):
        return f"<RingWriter capacity={self._map.seg.w.cap}>"


@cython.final
cdef class RingReader:
    """The consuming end of one ring: contiguous views of the peer's bytes."""

    cdef _ShmMap _map
    cdef const uint8_t *_ptr  # span being exported by peek()
    cdef size_t _len
    cdef bint _exporting
    cdef bint _active

    def __init__(self, *args, **kwargs):
        raise TypeError("RingReader comes from ShmSegment.reader")

    cdef int _enter(self) except -1:
        self._map.live()
        if self._active:
            raise BusyResourceError("another thread is spinning on this ring")
        return 0

    def __getbuffer__(self, Py_buffer *buffer, int flags):
        if not self._exporting:
            raise BufferError("use RingReader.peek() for a view of the ring")
        PyBuffer_FillInfo(buffer, self, <void *>self._ptr, <Py_ssize_t>self._len, 1, flags)
        # Each live view pins the mapping: close() defers the munmap until the last release.
        self._map.enter()

    def __releasebuffer__(self, Py_buffer *buffer):
        self._map.leave()

    def peek(self):
        """A read-only memoryview of every readable byte (contiguous, possibly empty).

        The memory stays mapped while the view lives; its contents are stable
        until ``consume()`` hands the bytes back to the producer.
        """
        cdef const uint8_t *p = NULL
        cdef size_t n = 0
        self._enter()
        _check(fp_ring_reader_peek(&self._map.seg.r, &p, &n), "RingReader.peek")
        self._ptr = p
        self._len = n
        self._exporting = True
        try:
            return PyMemoryView_FromObject(self)
        finally:
            self._exporting = False

    def consume(self, Py_ssize_t n):
        """Hand ``n`` peeked bytes back. True: the producer waits for space; wake it."""
        self._enter()
        if n < 0:
            raise ValueError("consume(n) needs n >= 0")
        rc = fp_ring_reader_consume(&self._map.seg.r, <size_t>n)
        if rc == FP_EINVAL:
            raise ValueError(f"consume({n}) is more than the readable bytes")
        return _check(rc, "RingReader.consume") == 1

    def arm(self):
        """Announce sleep. True: data is readable now (don't sleep)."""
        self._enter()
        return _check(fp_ring_reader_arm(&self._map.seg.r), "RingReader.arm") == 1

    def spin(self, long long max_ns):
        """Busy-poll (GIL released) up to ``max_ns``; return the readable byte count."""
        cdef _ShmMap m = self._map
        cdef size_t n = 0
        cdef int rc
        self._enter()
        if max_ns < 0:
            raise ValueError("spin(max_ns) needs max_ns >= 0")
        m.enter()
        self._active = True
        with nogil:
            rc = fp_ring_reader_spin(&m.seg.r, <uint64_t>max_ns, &n)
        self._active = False
        m.leave()
        _check(rc, "RingReader.spin")
        return n

    @property
    def readable(self):
        """Bytes readable now."""
        cdef size_t n = 0
        self._enter()
        _check(fp_ring_reader_readable(&self._map.seg.r, &n), "RingReader.readable")
        return n

    @property
    def capacity(self):
        return self._map.seg.r.cap

    def __repr__(self):
        return f"<RingReader capacity={self._map.seg.r.cap}>"


@cython.final
cdef class ShmSegment:
    """Two byte rings in one sealed memfd shared with one peer process.

    The creator writes ring 0 and reads ring 1; the attacher the reverse.
    """

    cdef _ShmMap _map
    cdef readonly RingWriter writer
    cdef readonly RingReader reader

    def __init__(self, *args, **kwargs):
        raise TypeError("use ShmSegment.create() or ShmSegment.attach(fd)")

    @staticmethod
    cdef ShmSegment _wrap(_ShmMap m):
        cdef ShmSegment s = ShmSegment.__new__(ShmSegment)
        cdef RingWriter w = RingWriter.__new__(RingWriter)
        cdef RingReader r = RingReader.__new__(RingReader)
        m.closed = False
        w._map = m
        r._map = m
        s._map = m
        s.writer = w
        s.reader = r
        return s

    @classmethod
    def create(cls, capacity=FP_RING_DEFAULT_CAP):
        """New segment with ``capacity`` bytes per direction (power of two, page multiple)."""
        cdef uint64_t cap
        capacity = operator.index(capacity)
        if capacity <= 0 or capacity > FP_RING_MAX_CAP or fp_ring_check_cap(<uint64_t>capacity):
            raise ValueError(f"capacity must be a power of two between {fp_ring_page_size()} "
                             f"and {FP_RING_MAX_CAP}, got {capacity}")
        cap = capacity
        cdef _ShmMap m = _ShmMap.__new__(_ShmMap)
        _check(fp_ring_segment_create(&m.seg, cap, cap), "ShmSegment.create")
        return ShmSegment._wrap(m)

    @classmethod
    def attach(cls, fd):
        """Map the peer's segment. ``fd`` is duplicated: the caller still closes its own."""
        fd = operator.index(fd)
        if fd < 0 or fd > 0x7fffffff:
            raise ValueError(f"bad file descriptor {fd}")
        cdef _ShmMap m = _ShmMap.__new__(_ShmMap)
        rc = fp_ring_segment_attach(&m.seg, <int>fd)
        if rc == FP_ECORRUPT:
            raise ShmRingError("not a valid fastp2p shared-memory segment (magic, version, "
                               "capacities, size or seals)")
        _check(rc, "ShmSegment.attach")
        return ShmSegment._wrap(m)

    @property
    def fd(self):
        """The memfd (send it with SCM_RIGHTS); owned by the segment, closed by close()."""
        self._map.live()
        return self._map.seg.fd

    @property
    def capacity(self):
        """Bytes per ring (ring 0's; both rings are this size when made by create())."""
        return self._map.seg.cap[0]

    @property
    def is_creator(self):
        return self._map.seg.creator == 1

    @property
    def closed(self):
        return self._map.closed

    def close(self):
        """Close the fd now; unmap once no peek() view or GIL-free call is alive. Idempotent."""
        self._map.close()

    def __enter__(self):
        self._map.live()
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        if self._map.closed:
            return "<ShmSegment closed>"
        role = "creator" if self._map.seg.creator else "attacher"
        return f"<ShmSegment {role} fd={self._map.seg.fd} capacity={self._map.seg.cap[0]}>"
