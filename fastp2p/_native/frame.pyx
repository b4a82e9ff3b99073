# cython: language_level=3, binding=False
"""yamux / mplex frame codecs and uvarint: thin bindings over csrc/fp_frame.c.

(``binding=False``: module functions are builtins, so ``fastp2p._accel`` can
store them as class attributes without them binding like methods.)

Same API and semantics as the pure twins (fastp2p/proto/varint.py,
fastp2p/proto/yamux/frame.py, fastp2p/proto/mplex/frame.py). One C call decodes
a whole batch of records; payloads are zero-copy memoryview slices of the
buffer passed to ``feed``.
"""

from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_SIMPLE, PyBUF_WRITABLE
from cpython.bytes cimport PyBytes_FromStringAndSize
from cpython.bytearray cimport (PyByteArray_AS_STRING, PyByteArray_FromStringAndSize,
                                 PyByteArray_GET_SIZE, PyByteArray_Resize)
from cpython.sequence cimport PySequence_GetSlice
from cpython.mem cimport PyMem_Malloc, PyMem_Free
from cpython.memoryview cimport PyMemoryView_FromObject
from cpython.pyport cimport PY_SSIZE_T_MAX
from fastp2p._native.clock cimport monotonic as _monotonic
from libc.string cimport memcpy
cimport cython

from fastp2p._native.aead cimport FP_AEAD_TAG_SIZE, FP_EFRAME, FrameBlock, NoiseCipher, fp_iovec

from fastp2p.errors import (
    ClosedResourceError,
    FrameError,
    FrameTooLargeError,
    FrameTypeError,
    FrameVersionError,
    P2PError,
    VarintError,
)

cdef extern from "fp_frame.h" nogil:
    enum:
        FP_UVARINT_MAX_BYTES
        FP_YAMUX_HEADER_SIZE
        FP_MPLEX_MAX_HEADER
        FP_MPLEX_REC_FIRST
        FP_MPLEX_REC_LAST
        FP_EVERSION
        FP_ETYPE
        FP_E2BIG
        FP_EOVERLONG
        FP_ENONMINIMAL
        FP_YAMUX_TYPE_DATA
    size_t FP_NO_PAYLOAD

    int fp_uvarint_encode(uint64_t v, uint8_t *out, size_t cap)
    int fp_uvarint_decode(const uint8_t *buf, size_t n, uint64_t *value)
    int fp_yamux_encode_header(uint8_t *out, uint8_t type, uint16_t flags, uint32_t stream_id,
                               uint32_t length)

    ctypedef struct fp_yamux_record:
        uint8_t type
        uint16_t flags
        uint32_t stream_id
        uint32_t length
        size_t offset
    ctypedef struct fp_yamux_decoder:
        uint8_t hdr_len
        uint32_t remaining
        int error
    void fp_yamux_decoder_init(fp_yamux_decoder *d)
    bint fp_yamux_decoder_in_payload(const fp_yamux_decoder *d, size_t n, uint32_t *stream_id)
    void fp_yamux_decoder_take_payload(fp_yamux_decoder *d, size_t n)
    size_t fp_yamux_decoder_head(const fp_yamux_decoder *d, const uint8_t *buf, size_t n,
                                 size_t more, uint32_t *stream_id)
    int fp_yamux_decoder_feed(fp_yamux_decoder *d, const uint8_t *buf, size_t n,
                              size_t *consumed, fp_yamux_record *out, size_t cap, size_t *nout)

    int fp_mplex_encode_header(uint64_t stream_id, uint8_t flag, uint64_t length, uint8_t *out,
                               size_t cap)
    ctypedef struct fp_mplex_record:
        uint8_t flag
        uint8_t bits
        uint64_t stream_id
        size_t length
        size_t offset
    ctypedef struct fp_mplex_decoder:
        uint8_t hdr_len
        uint64_t remaining
        int error
    void fp_mplex_decoder_init(fp_mplex_decoder *d, uint64_t max_message_size)
    bint fp_mplex_decoder_in_payload(const fp_mplex_decoder *d, size_t n, uint8_t *flag,
                                     uint64_t *stream_id)
    void fp_mplex_decoder_take_payload(fp_mplex_decoder *d, size_t n)
    size_t fp_mplex_decoder_head(const fp_mplex_decoder *d, const uint8_t *buf, size_t n,
                                 size_t more, uint8_t *flag, uint64_t *stream_id)
    int fp_mplex_decoder_feed(fp_mplex_decoder *d, const uint8_t *buf, size_t n,
                              size_t *consumed, fp_mplex_record *out, size_t cap, size_t *nout)

cdef enum:
    BATCH = 256

TYPE_DATA = 0
TYPE_WINDOW_UPDATE = 1
TYPE_PING = 2
TYPE_GO_AWAY = 3
FLAG_SYN = 1
FLAG_ACK = 2
FLAG_FIN = 4
FLAG_RST = 8
HEADER_SIZE = 12
VERSION = 0

NEW_STREAM = 0
MESSAGE_RECEIVER = 1
MESSAGE_INITIATOR = 2
CLOSE_RECEIVER = 3
CLOSE_INITIATOR = 4
RESET_RECEIVER = 5
RESET_INITIATOR = 6

cdef object _raise_status(int rc, str what):
    if rc == FP_EVERSION:
        raise FrameVersionError(f"unsupported {what} version")
    if rc == FP_ETYPE:
        raise FrameTypeError(f"unknown {what} frame type/flag")
    if rc == FP_E2BIG:
        raise FrameTooLargeError(f"{what} frame exceeds the maximum message size")
    if rc == FP_EOVERLONG:
        raise VarintError("varint longer than 9 bytes")
    if rc == FP_ENONMINIMAL:
        raise VarintError("non-minimal varint encoding")
    raise FrameError(f"{what} decode failed ({rc})")


cdef enum:
    # as fastp2p/proto/yamux/frame.py's (why there): loans of this size or more
    # size the socket reads to fit them, and stop them with less room than
    # LOAN_MIN_READ; from LOAN_OVERFLOW_PAUSE on, an overflow stops them too
    LOAN_LARGE = 512 * 1024
    LOAN_MIN_READ = 16 * 1024
    LOAN_OVERFLOW_PAUSE = 64 * 1024
    # as fastp2p/proto/yamux/frame.py's: a frame of this much plaintext or more
    # that starts with a data frame's header is opened in two parts
    SPLIT_MIN = 2048
    # most frames in one run opened in place on the pool (a 1 MiB read holds 16
    # full ones; more come from small writes, opened the block's way)
    _RUN_MAX = 64
    # a feed's plaintext block of at most this many bytes is a bytearray (_block)
    SMALL_BLOCK = 4096
    # as fastp2p/proto/yamux/frame.py's (why there): the wake hint's bounds
    WAKE_MIN = 32 * 1024
    WAKE_MAX = 256 * 1024
    WAKE_STEP = 16 * 1024


cdef int _append(bytearray b, const uint8_t *src, size_t k) except -1:
    """``b += src[:k]`` in one copy."""
    cdef Py_ssize_t old = PyByteArray_GET_SIZE(b)
    PyByteArray_Resize(b, old + <Py_ssize_t>k)
    memcpy(PyByteArray_AS_STRING(b) + old, src, k)
    return 0


cdef inline object _byte_view(object data):
    mv = memoryview(data)
    if mv.ndim != 1 or mv.format != "B":
        mv = mv.cast("B")
    return mv


def uvarint_encode(n):
    """Encode a non-negative int < 2**63 as an unsigned varint."""
    cdef uint8_t out[FP_UVARINT_MAX_BYTES]
    cdef uint64_t v
    if n < 0 or n >= (1 << 63):
        raise ValueError(f"uvarint out of range: {n}")
    v = n
    cdef int k = fp_uvarint_encode(v, out, FP_UVARINT_MAX_BYTES)
    return PyBytes_FromStringAndSize(<char *>out, k)


def uvarint_decode(buf, Py_ssize_t offset=0):
    """Decode a varint at ``offset``; returns ``(value, end_offset)`` or None if incomplete."""
    cdef Py_buffer view
    cdef uint64_t value = 0
    cdef int rc
    if offset < 0:
        raise ValueError("offset must be >= 0")
    PyObject_GetBuffer(buf, &view, PyBUF_SIMPLE)
    try:
        if offset >= view.len:
            return None
        rc = fp_uvarint_decode(<const uint8_t *>view.buf + offset, <size_t>(view.len - offset),
                               &value)
    finally:
        PyBuffer_Release(&view)
    if rc > 0:
        return value, offset + rc
    if rc == 0:
        return None
    _raise_status(rc, "varint")


def encode_header(type, flags, stream_id, length):
    """Encode a 12-byte yamux header (version 0); ValueError on out-of-range args."""
    cdef uint8_t out[FP_YAMUX_HEADER_SIZE]
    cdef long long t, f, s, l
    try:
        t = type
        f = flags
        s = stream_id
        l = length
    except OverflowError:
        raise ValueError("yamux header field out of range") from None
    if not 0 <= t <= 3:
        raise ValueError(f"yamux type out of range: {type}")
    if not 0 <= f <= 0xFFFF:
        raise ValueError(f"yamux flags out of range: {flags}")
    if not 0 <= s <= 0xFFFFFFFF:
        raise ValueError(f"yamux stream id out of range: {stream_id}")
    if not 0 <= l <= 0xFFFFFFFF:
        raise ValueError(f"yamux length out of range: {length}")
    fp_yamux_encode_header(out, <uint8_t>t, <uint16_t>f, <uint32_t>s, <uint32_t>l)
    return PyBytes_FromStringAndSize(<char *>out, FP_YAMUX_HEADER_SIZE)


cdef class YamuxDecoder:
    """Streaming, zero-copy yamux frame decoder (see fastp2p.proto.yamux.frame)."""

    cdef fp_yamux_decoder _dec

    def __cinit__(self):
        fp_yamux_decoder_init(&self._dec)

    @property
    def buffered(self):
        """Bytes held internally (an incomplete header; never payload)."""
        return self._dec.hdr_len

    def feed(self, data):
        """Decode everything complete in ``data``; one C call per batch of records."""
        cdef Py_buffer view
        cdef fp_yamux_record recs[BATCH]
        cdef size_t consumed = 0, nout = 0, pos = 0, i, off
        cdef int rc
        cdef list out = []
        mv = _byte_view(data)
        PyObject_GetBuffer(mv, &view, PyBUF_SIMPLE)
        try:
            while True:
                rc = fp_yamux_decoder_feed(&self._dec, <const uint8_t *>view.buf + pos,
                                           <size_t>view.len - pos, &consumed, recs, BATCH, &nout)
                if rc < 0:
                    _raise_status(rc, "yamux")
                for i in range(nout):
                    if recs[i].offset == FP_NO_PAYLOAD:
                        out.append((recs[i].type, recs[i].flags, recs[i].stream_id,
                                    recs[i].length, None))
                    else:
                        off = pos + recs[i].offset
                        out.append((recs[i].type, recs[i].flags, recs[i].stream_id,
                                    recs[i].length,
                                    PySequence_GetSlice(mv, off, off + recs[i].length)))
                pos += consumed
                if nout < BATCH:
                    break
        finally:
            PyBuffer_Release(&view)
        return out


def mplex_encode_header(stream_id, flag, length):
    """Encode ``uvarint(stream_id << 3 | flag) + uvarint(length)``; ValueError on bad args."""
    cdef uint8_t out[FP_MPLEX_MAX_HEADER]
    if not 0 <= stream_id < (1 << 60):
        raise ValueError(f"mplex stream id out of range: {stream_id}")
    if not 0 <= flag <= 6:
        raise ValueError(f"mplex flag out of range: {flag}")
    if not 0 <= length < (1 << 63):
        raise ValueError(f"uvarint out of range: {length}")
    cdef int k = fp_mplex_encode_header(stream_id, flag, length, out, FP_MPLEX_MAX_HEADER)
    return PyBytes_FromStringAndSize(<char *>out, k)


@cython.final
cdef class _Pieces:
    """An mplex control frame's payload split across feeds, collected in order
    (data messages are handed over piecewise; control payloads are small)."""

    cdef bytearray acc

    cdef object add(self, uint8_t bits, object piece):
        """Add one piece; returns the whole payload with the last one, else None."""
        if bits & FP_MPLEX_REC_FIRST:
            self.acc = bytearray(piece)
        else:
            self.acc += piece
        if not bits & FP_MPLEX_REC_LAST:
            return None
        whole = memoryview(bytes(self.acc))
        self.acc = None
        return whole

    cdef Py_ssize_t held(self):
        return len(self.acc) if self.acc is not None else 0

    cdef void drop(self):
        self.acc = None


cdef class MplexDecoder:
    """Streaming, zero-copy mplex frame decoder (see fastp2p.proto.mplex.frame)."""

    cdef fp_mplex_decoder _dec
    cdef _Pieces _control  # control payload split across feeds, being collected
    cdef readonly object max_message_size

    def __cinit__(self, max_message_size=1 << 20):
        if max_message_size < 0:
            raise ValueError("max_message_size must be >= 0")
        self.max_message_size = max_message_size
        fp_mplex_decoder_init(&self._dec, min(max_message_size, (1 << 64) - 1))
        self._control = _Pieces.__new__(_Pieces)

    @property
    def buffered(self):
        """Bytes held internally (incomplete header + partial control payload)."""
        return self._dec.hdr_len + self._control.held()

    def feed(self, data):
        """Decode everything complete in ``data``; one C call per batch of records."""
        cdef Py_buffer view
        cdef fp_mplex_record recs[BATCH]
        cdef fp_mplex_record *r
        cdef size_t consumed = 0, nout = 0, pos = 0, i, off
        cdef int rc
        cdef list out = []
        mv = _byte_view(data)
        PyObject_GetBuffer(mv, &view, PyBUF_SIMPLE)
        try:
            while True:
                rc = fp_mplex_decoder_feed(&self._dec, <const uint8_t *>view.buf + pos,
                                           <size_t>view.len - pos, &consumed, recs, BATCH, &nout)
                if rc < 0:
                    self._control.drop()
                    _raise_status(rc, "mplex")
                for i in range(nout):
                    r = &recs[i]
                    off = pos + r.offset
                    if r.flag == 1 or r.flag == 2 or r.bits == FP_MPLEX_REC_FIRST | FP_MPLEX_REC_LAST:
                        out.append((r.flag, r.stream_id, PySequence_GetSlice(mv, off, off + r.length)))
                    else:
                        whole = self._control.add(r.bits, PySequence_GetSlice(mv, off, off + r.length))
                        if whole is not None:
                            out.append((r.flag, r.stream_id, whole))
                pos += consumed
                if nout < BATCH:
                    break
        finally:
            PyBuffer_Release(&view)
        return out


# no_gc_clear: the collector's clear would drop the lent buffer's owner without
# releasing its export (a bytearray freed while exported, an mmap that can never
# close); __dealloc__ releases it once whatever else the cycle holds is cleared.
@cython.final
@cython.no_gc_clear
cdef class _Route:
    """One attached stream; also the token :meth:`YamuxDemux.lend` returns."""

    cdef object deliver
    cdef long long credit
    cdef long long delivered
    # A reader's lent buffer (Stream.readinto): plain DATA payloads are copied
    # straight into it, and its waiter is woken once per batch.
    cdef Py_buffer lent
    cdef bint lent_held
    cdef bint spilled
    cdef Py_ssize_t lent_got
    cdef object waiter

    def __dealloc__(self):
        if self.lent_held:
            PyBuffer_Release(&self.lent)
            self.lent_held = False

    def unlend(self):
        """End the loan; returns the bytes placed in the lent buffer."""
        cdef Py_ssize_t got = self.lent_got
        if self.lent_held:
            PyBuffer_Release(&self.lent)
            self.lent_held = False
        self.lent_got = 0
        self.waiter = None
        return got

    @property
    def got(self):
        """Bytes placed in the lent buffer so far."""
        return self.lent_got

    def spill(self):
        """Data for the stream went elsewhere: copy nothing more into the loan.

        Called when a frame reached the stream another way (the session's
        events) while the buffer is lent, so bytes keep their order.
        """
        self.spilled = True


@cython.final
cdef class _SealedStep:
    """:meth:`_RouteTable.sealed_step`'s callable."""

    cdef _RouteTable table
    cdef object cipher
    cdef bint native
    cdef object on_records
    cdef object on_error
    #: False: drop what comes (the driver closed)
    cdef public bint live
    #: the last read offered frames to the open pool (ReadPump.get_buffer alerts it)
    cdef bint pooled

    def __call__(self, data):
        if not self.live:
            return
        if self.native:
            self.feed_read(_byte_view(data), PY_SSIZE_T_MAX)
            return
        try:
            records = self.table.feed_sealed(self.cipher, data)
        except P2PError as exc:
            self.on_error(exc)
            return
        if records is not None:
            self.on_records(records)

    cdef int feed_read(self, object rxv, Py_ssize_t n) except -1:
        """``self(rxv[:n])`` without making the slice: a socket read's bytes, from
        ReadPump (a memoryview object and a Python call fewer per read)."""
        cdef Py_buffer view
        cdef NoiseCipher cipher
        cdef unsigned long long batches
        if not self.live:
            return 0
        if not self.native:
            self(PySequence_GetSlice(rxv, 0, n))
            return 0
        cipher = <NoiseCipher>self.cipher
        batches = cipher._open_batches
        PyObject_GetBuffer(rxv, &view, PyBUF_SIMPLE)
        try:
            try:
                records = self.table._feed_sealed_raw(cipher, <const uint8_t *>view.buf,
                                                      min(n, view.len))
            finally:
                PyBuffer_Release(&view)
                # a read that went to the pool is most likely followed by another
                self.pooled = cipher._open_batches != batches
        except P2PError as exc:
            self.on_error(exc)
            return 0
        if records is not None:
            self.on_records(records)
        return 0


# A small frame's plaintext (under SPLIT_MIN) is opened here first: when it is one
# data frame for a reader with a lent buffer, its payload is copied there and the
# feed takes no pooled block (_RouteTable._open_small). One area for the process,
# not one per demultiplexer (2 KiB less per connection): it is used from the open
# to the copy out, under the GIL (frames this small are opened without releasing
# it; the module needs the GIL). A use that starts while another is in progress
# (a stream's deliver callback that feeds another connection) gets its own.
cdef uint8_t _small_scratch[SPLIT_MIN]
cdef bint _small_scratch_busy = False


cdef class _RouteTable:
    """The stream table of a demultiplexer (YamuxDemux, MplexDemux): per stream its
    credit, what it was delivered, and a reader's lent buffer; the counters."""

    cdef dict _routes
    #: plaintext bytes and frames (records: a frame split across feeds counts per piece)
    cdef readonly unsigned long long bytes_in
    cdef readonly unsigned long long frames_in
    #: of ``bytes_in``, those ``feed_sealed`` opened
    cdef readonly unsigned long long sealed_bytes_in
    #: of ``sealed_bytes_in``, those opened straight into a reader's lent buffer
    cdef readonly unsigned long long direct_bytes_in
    # state of one feed: records handled the fast way, readers to wake at the end
    cdef Py_ssize_t _fast
    cdef list _woken
    cdef _Route _woken1  # the first of them (most feeds wake one reader: no list)
    # records for the session (once one had to go there, all after it do)
    cdef list _out
    cdef bint _slow
    # a loan overflowed in this feed (its reader is behind: data went to the queue)
    cdef bint _overflowed
    # the last loan that took data in this feed
    cdef _Route _last_loan
    # this feed's block for plaintext that goes through the decoder (taken on first
    # need: _block), its bytes, a view of it, and the bytes used
    cdef object _blk
    cdef uint8_t *_blk_data
    cdef size_t _blk_cap  # its size (the plaintext of the rest of the read fits)
    cdef object _blk_mv
    cdef Py_ssize_t _opos
    # the bytes of a frame opened first to find a data frame's header (_open_one)
    cdef size_t _head_size
    # the frame buffered after the last feed: its plaintext bytes, wire bytes still due
    cdef Py_ssize_t _pend_plain
    cdef Py_ssize_t _pend_need
    #: the most bytes the next socket read should take (0: no limit), so that what
    #: it brings fits the large loan being filled (see ``_size_read``)
    cdef readonly Py_ssize_t read_hint
    #: called with the new ``read_hint`` when it changes (None: nothing is
    #: called): the driver sizes its reads without asking on each one
    cdef public object on_read_hint
    #: called once at the end of a feed after which the large loan being filled
    #: can take no more (full, or it overflowed): the driver stops reading until
    #: the reader lends its next buffer (None: nothing is called)
    cdef public object on_loan_full
    #: wire bytes still due that are certain to come, when at least WAKE_MIN
    #: (at most WAKE_MAX, a multiple of WAKE_STEP; else 0): the reader's socket
    #: need not wake the loop before that many are in
    cdef readonly Py_ssize_t wake_hint
    #: called with the new ``wake_hint`` when it changes (None: nothing is called)
    cdef public object on_wake_hint

    def __cinit__(self, *args, **kwargs):
        self._routes = {}
        self.bytes_in = 0
        self.frames_in = 0
        self.sealed_bytes_in = 0
        self.direct_bytes_in = 0

    def attach(self, stream_id, deliver, long long credit):
        """Route plain data of ``stream_id`` to ``deliver`` within ``credit`` bytes."""
        cdef _Route r = _Route.__new__(_Route)
        r.deliver = deliver
        r.credit = credit
        r.delivered = 0
        self._routes[stream_id] = r

    def detach(self, stream_id):
        """Stop routing ``stream_id``; returns the bytes delivered and not yet taken.

        A loan in progress stays valid: its token still counts what it received.
        """
        r = self._routes.pop(stream_id, None)
        return 0 if r is None else (<_Route>r).delivered

    def attached(self, stream_id):
        return stream_id in self._routes

    def lend(self, stream_id, buf, waiter):
        """Copy ``stream_id``'s plain data straight into ``buf`` (writable bytes).

        The first payload that lands there completes ``waiter`` (a future:
        anything with ``done()`` and ``set_result()``), once per batch, not
        per frame; later ones of the same batch keep filling it until it is
        full or :meth:`_Route.unlend` ends the loan. Returns the loan's token,
        or None when the stream is not attached (the caller then takes the
        data the usual way).
        """
        r = self._routes.get(stream_id)
        if r is None:
            return None
        cdef _Route route = <_Route>r
        if route.lent_held:
            PyBuffer_Release(&route.lent)
            route.lent_held = False
        PyObject_GetBuffer(buf, &route.lent, PyBUF_WRITABLE)
        route.lent_held = True
        route.lent_got = 0
        route.spilled = False
        route.waiter = waiter
        if route.lent.len >= LOAN_LARGE:
            self._set_hint(max(self._size_read(route.lent.len), 0))
        return route

    def take(self, stream_id):
        """Bytes delivered to ``stream_id`` since the last ``take`` (0 if not attached)."""
        cdef long long n
        r = self._routes.get(stream_id)
        if r is None:
            return 0
        n = (<_Route>r).delivered
        (<_Route>r).delivered = 0
        return n

    def set_credit(self, stream_id, long long credit):
        r = self._routes.get(stream_id)
        if r is not None:
            (<_Route>r).credit = credit

    def clear(self):
        """Detach every stream."""
        self._routes.clear()

    def __len__(self):
        return len(self._routes)

    cdef Py_ssize_t _loan_room(self, _Route r) except -1:
        """Bytes ``r``'s loan may take now: 0 without a loan, after a spill, or when
        its reader was woken another way (EOF, reset, cancel) before a byte landed."""
        if not r.lent_held or r.spilled or (r.lent_got == 0 and r.waiter.done()):
            return 0
        return r.lent.len - r.lent_got

    cdef void _into_loan(self, _Route r, Py_ssize_t k):
        """``k`` bytes were placed in ``r``'s loan; its reader is woken at the end of the feed."""
        if r.lent_got == 0:
            if self._woken1 is None:
                self._woken1 = r
            else:
                if self._woken is None:
                    self._woken = []
                self._woken.append(r)
        r.lent_got += k
        self._last_loan = r

    cdef int _hand_over(self, _Route r, object mv, const uint8_t *base, size_t off,
                        size_t length) except -1:
        """A fast-way payload (``base[off:off+length]``, ``mv`` views base, within
        ``r``'s credit): into the loan while it has room, the rest to ``deliver``."""
        cdef Py_ssize_t room, k = 0
        r.credit -= <long long>length
        r.delivered += <long long>length
        if r.lent_held and not r.spilled:
            room = self._loan_room(r)
            if room > 0:
                k = min(room, <Py_ssize_t>length)
                memcpy(<uint8_t *>r.lent.buf + r.lent_got, base + off, <size_t>k)
                self._into_loan(r, k)
            if k < <Py_ssize_t>length:
                # the rest goes the usual way, and so does all after it
                r.spilled = True
                self._overflowed = True
                self._last_loan = r
        if k < <Py_ssize_t>length:
            r.deliver(PySequence_GetSlice(mv, off + k, off + length))
        return 0

    cdef void _wake(self):
        """Complete the waiters of the loans that took data in this feed (once each)."""
        cdef _Route first = self._woken1
        woken = self._woken
        self._woken1 = None
        self._woken = None
        if first is not None:
            w = first.waiter
            if w is not None and not w.done():
                w.set_result(None)
        if woken is not None:
            for ro in woken:
                w = (<_Route>ro).waiter
                if w is not None and not w.done():
                    w.set_result(None)

    def feed(self, data):
        """Decode ``data``; deliver what can go the fast way; returns ``(fast, records)``."""
        self._begin()
        self._segment_all(data)
        out = self._finish()
        return self._fast, (out if out is not None else [])

    # -- one feed: the frame-by-frame walk shared by both muxers --------------------

    def feed_sealed(self, cipher, data):
        """Open the Noise frames in ``data`` with ``cipher``, then :meth:`feed` the
        plaintext; returns the records the session must see, or None when every
        frame went the fast way.

        With the native cipher this goes frame by frame, and a frame whose
        plaintext is all payload of one data frame (yamux DATA without flags,
        an mplex Message) for a stream whose reader lent a buffer with room for
        it is opened straight into that buffer (no copy). A failing frame raises
        after the frames before it were delivered.
        """
        if isinstance(cipher, NoiseCipher):
            return self._feed_sealed_native(<NoiseCipher>cipher, data)
        block = cipher.open_frames(data)
        self._note_pending_of(cipher)
        cdef Py_ssize_t n = len(block)
        if not n:
            return None
        self._begin()
        self.sealed_bytes_in += <unsigned long long>n
        self._segment_all(block)
        return self._finish_sealed()

    def sealed_step(self, cipher, on_records, on_error):
        """:meth:`feed_sealed` with ``cipher`` as one callable for a driver that feeds
        per socket read: ``step(data)``. Records the fast way did not take go to
        ``on_records(records)``; a failing frame's error (a ``P2PError``) goes to
        ``on_error(exc)`` instead of raising. ``step.live = False`` makes it drop
        what it is given (the driver closed). No Python runs when every frame
        goes the fast way."""
        cdef _SealedStep st = _SealedStep.__new__(_SealedStep)
        st.table = self
        st.cipher = cipher
        st.native = isinstance(cipher, NoiseCipher)
        st.on_records = on_records
        st.on_error = on_error
        st.live = True
        return st

    cdef object _feed_sealed_native(self, NoiseCipher cipher, object data):
        cdef Py_buffer view
        mv_in = _byte_view(data)
        PyObject_GetBuffer(mv_in, &view, PyBUF_SIMPLE)
        try:
            return self._feed_sealed_raw(cipher, <const uint8_t *>view.buf, <size_t>view.len)
        finally:
            PyBuffer_Release(&view)

    cdef object _feed_sealed_raw(self, NoiseCipher cipher, const uint8_t *src, size_t n):
        """``_feed_sealed_native`` over ``src[:n]`` (the caller holds its buffer)."""
        cdef const uint8_t *pend
        cdef size_t pos = 0, flen, p, k
        cdef bint one = False  # the last frame was opened alone (it did not start a lent run)
        cdef bytearray pending = cipher._pending
        self._begin()
        p = <size_t>len(pending)
        k = cipher._pending_need(src, n)
        cipher._enter()
        try:
            if k:
                # complete the frame buffered from the last read; opened like the
                # others (straight into a lent buffer when it is all payload)
                _append(pending, src, k)
                pos = k
                p += k
                if p >= 2:
                    pend = <const uint8_t *>PyByteArray_AS_STRING(pending)
                    flen = (<size_t>pend[0]) << 8 | pend[1]
                    if flen < FP_AEAD_TAG_SIZE:
                        cipher._fail(FP_EFRAME)
                    if p == 2 + flen:
                        # (a block of its own when it needs one: one sized for
                        # the whole read as well would take the next size class)
                        self._open_one(cipher, pend + 2, flen, flen)
                        pending.clear()
                        self._blk = None
                        self._blk_mv = None
            while n - pos >= 2:
                if cipher._open_threads and n - pos >= cipher._open_min and not self._slow:
                    # a large read on a machine with cores to spare: runs of frames
                    # on the cipher's pool (NoiseCipher.parallel_open)
                    k = self._open_lent_run(cipher, src + pos, n - pos)
                    if not k and one and cipher._open_copy:
                        k = self._open_run(cipher, src + pos, n - pos)
                    if k:
                        pos += k
                        one = False
                        continue
                flen = (<size_t>src[pos]) << 8 | src[pos + 1]
                if flen < FP_AEAD_TAG_SIZE:
                    cipher._fail(FP_EFRAME)
                if n - pos - 2 < flen:
                    break
                self._open_one(cipher, src + pos + 2, flen, n - pos)
                pos += 2 + flen
                one = True
            if pos < n:
                # a partial frame: the cipher keeps it for the next read
                _append(pending, src + pos, n - pos)
        finally:
            cipher._busy = False
            self._blk = None
            self._blk_mv = None
        self._note_pending(pending)
        return self._finish_sealed()

    cdef size_t _open_lent_run(self, NoiseCipher cipher, const uint8_t *src, size_t n) except? 0:
        """Open the whole frames at the start of ``src[:n]`` that are all payload of
        the data frame being read, for a reader whose lent buffer takes them, on the
        cipher's pool straight into that buffer (the serial walk's in-place open,
        many frames at once); returns the bytes they took, 0 when fewer than two
        such frames. The frames before a failing one are placed, then its error
        raises."""
        cdef size_t ends[_RUN_MAX + 1]
        cdef size_t plain[_RUN_MAX + 1]
        cdef size_t m = 0, flen, consumed = 0, outlen = 0
        cdef uint64_t key = 0  # the stream of the data frame being read
        cdef _Route r = None
        cdef int rc
        ends[0] = plain[0] = 0
        while m < _RUN_MAX and n - ends[m] >= 2:
            flen = (<size_t>src[ends[m]]) << 8 | src[ends[m] + 1]
            if flen <= FP_AEAD_TAG_SIZE or n - ends[m] - 2 < flen:
                break
            if not self._in_payload(plain[m] + flen - FP_AEAD_TAG_SIZE, &key):
                break
            ends[m + 1] = ends[m] + 2 + flen
            plain[m + 1] = plain[m] + flen - FP_AEAD_TAG_SIZE
            m += 1
        while m >= 2:
            r = self._lent_route(key, plain[m])
            if r is not None:
                break
            m -= 1
        if m < 2:
            return 0
        rc = cipher.open_par(src, ends[m], <uint8_t *>r.lent.buf + r.lent_got, plain[m],
                             &consumed, &outlen)
        if outlen:  # the authentic frames, as the serial walk places them
            self._take_payload(outlen)
            self._placed(r, outlen)
        if rc:
            cipher._fail(rc)
        return consumed

    cdef size_t _open_run(self, NoiseCipher cipher, const uint8_t *src, size_t n) except? 0:
        """Open the whole frames at ``src[:n]`` on the cipher's pool into this feed's
        block, then decode them as one run; returns the bytes they took. For frames that are
        not a lent reader's payload (``_open_lent_run``): the decoder copies what
        a lent reader takes, since where each payload goes is known only after
        opening. The frames before a failing one are delivered, then its error
        raises."""
        cdef size_t consumed = 0, outlen = 0
        cdef uint8_t *data
        cdef Py_ssize_t opos
        cdef int rc
        data = self._block(cipher, n)
        opos = self._opos
        rc = cipher.open_par(src, n, data + opos, self._blk_cap - <size_t>opos, &consumed, &outlen)
        if outlen:
            self.sealed_bytes_in += outlen
            self._segment(self._blk_mv, data, <size_t>opos, outlen)
            self._opos = opos + <Py_ssize_t>outlen
        if rc:
            cipher._fail(rc)
        return consumed

    cdef int _open_one(self, NoiseCipher cipher, const uint8_t *body, size_t flen,
                       size_t cap) except -1:
        """Open one frame's ``body`` (``flen`` bytes: ciphertext + tag): all payload
        for a reader whose lent buffer takes it whole goes straight there, anything
        else into this feed's block and through the decoder. The block is taken
        from the pool at the first frame that needs it, with room for ``cap``
        bytes (this frame's and the rest of the read's: plaintext is shorter), so
        a read that all goes to lent buffers takes none."""
        cdef size_t plen = flen - FP_AEAD_TAG_SIZE
        cdef uint64_t key = 0
        cdef _Route r
        cdef uint8_t *data
        cdef Py_ssize_t opos
        cdef size_t hs, used
        if plen and not self._slow and self._in_payload(plen, &key):
            r = self._lent_route(key, plen)
            if r is not None:
                # straight into the reader's buffer; accounted once authentic
                cipher.open_frame_into(body, flen, <uint8_t *>r.lent.buf + r.lent_got)
                self._take_payload(plen)
                self._placed(r, plen)
                return 0
        if plen < SPLIT_MIN and not self._slow:
            return self._open_small(cipher, body, flen, cap)
        data = self._block(cipher, cap)
        opos = self._opos
        hs = self._head_size
        if plen >= SPLIT_MIN and plen > hs and not self._slow:
            # A data frame's header and the start of its payload (fastp2p's
            # sender puts them in one Noise frame): the header is opened into the
            # block first; when it names a lent buffer with room for the payload,
            # the rest is opened straight there. Nothing is acted on until the
            # whole frame is authentic.
            cipher.open_begin(body, flen)
            cipher.open_part(body, hs, data + opos)
            used = self._head(data + opos, hs, plen - hs, &key)
            r = self._lent_route(key, plen - used) if used else None
            if r is not None:
                cipher.open_part(body + hs, plen - hs,
                                 <uint8_t *>r.lent.buf + r.lent_got + (hs - used))
                cipher.open_end()
                # the header (and any payload opened with it) through the decoder
                self.sealed_bytes_in += hs
                self._segment(self._blk_mv, data, <size_t>opos, hs)
                self._opos = opos + <Py_ssize_t>hs
                self._take_payload(plen - hs)
                self._placed(r, plen - hs)
                return 0
            cipher.open_part(body + hs, plen - hs, data + opos + hs)
            cipher.open_end()
        else:
            cipher.open_frame_into(body, flen, data + opos)
        if plen:
            self.sealed_bytes_in += plen
            self._segment(self._blk_mv, data, <size_t>opos, plen)
            self._opos = opos + <Py_ssize_t>plen
        return 0

    cdef uint8_t *_block(self, NoiseCipher cipher, size_t cap) except NULL:
        """This feed's block, made at the first frame that needs it, with room for
        ``cap`` bytes: a bytearray up to SMALL_BLOCK (cheaper to make and free
        than a pooled block, whose acquire and release take the pool's lock),
        else from the pool."""
        if self._blk is None:
            if cap <= SMALL_BLOCK:
                b = PyByteArray_FromStringAndSize(NULL, <Py_ssize_t>cap)
                self._blk_data = <uint8_t *>PyByteArray_AS_STRING(b)
            else:
                b = cipher.new_block(cap)
                self._blk_data = (<FrameBlock>b).data
            self._blk_cap = cap
            self._blk = b
            self._blk_mv = memoryview(b)
            self._opos = 0
        return self._blk_data

    cdef int _open_small(self, NoiseCipher cipher, const uint8_t *body, size_t flen,
                         size_t cap) except -1:
        """``_open_one`` for a frame of under SPLIT_MIN plaintext bytes (a message of
        a round trip): opened into the scratch area, then, when it is one data
        frame's header and payload for a reader whose lent buffer takes the
        payload whole, the header goes through the decoder and the payload is
        copied to the reader; otherwise it is copied to the feed's block and
        decoded there, as any frame. The block (a pool acquire and an object)
        would cost more than the copy."""
        global _small_scratch_busy
        cdef uint8_t *sc
        cdef bint own = _small_scratch_busy
        if own:
            sc = <uint8_t *>PyMem_Malloc(SPLIT_MIN)
            if sc == NULL:
                raise MemoryError()
        else:
            sc = _small_scratch
            _small_scratch_busy = True
        try:
            self._open_small_in(cipher, body, flen, cap, sc)
        finally:
            if own:
                PyMem_Free(sc)
            else:
                _small_scratch_busy = False
        return 0

    cdef int _open_small_in(self, NoiseCipher cipher, const uint8_t *body, size_t flen,
                            size_t cap, uint8_t *sc) except -1:
        """``_open_small`` with the scratch area ``sc`` (at least SPLIT_MIN bytes)."""
        cdef size_t plen = flen - FP_AEAD_TAG_SIZE
        cdef uint64_t key = 0
        cdef size_t used
        cdef _Route r
        cdef uint8_t *data
        cdef Py_ssize_t opos
        cipher.open_frame_into(body, flen, sc)
        if plen == 0:
            return 0
        used = self._head(sc, plen, 0, &key)
        if used and used < plen:
            r = self._lent_route(key, plen - used)
            if r is not None:
                # The header alone makes no record the session must see (a plain
                # data frame of an attached stream within its credit: checked
                # above), so the decoder takes nothing of the scratch area with it.
                self.sealed_bytes_in += used
                self._segment(None, sc, 0, used)
                memcpy(<uint8_t *>r.lent.buf + r.lent_got, sc + used, plen - used)
                self._take_payload(plen - used)
                self._placed(r, plen - used, False)
                return 0
        data = self._block(cipher, cap)
        opos = self._opos
        memcpy(data + opos, sc, plen)
        self.sealed_bytes_in += plen
        self._segment(self._blk_mv, data, <size_t>opos, plen)
        self._opos = opos + <Py_ssize_t>plen
        return 0

    cdef int _note_pending_of(self, object cipher) except -1:
        """``_note_pending`` for any cipher (its ``buffered``, ``pending_frame_len``)."""
        cdef Py_ssize_t p = cipher.buffered
        self._set_pending(p, cipher.pending_frame_len if p >= 2 else 0)
        return 0

    cdef void _note_pending(self, bytearray pending):
        """Remember the buffered partial frame's plaintext size and the wire
        bytes that complete it (-1: not known yet), for ``_size_read``."""
        cdef Py_ssize_t p = PyByteArray_GET_SIZE(pending)
        cdef const uint8_t *b = <const uint8_t *>PyByteArray_AS_STRING(pending)
        self._set_pending(p, ((<Py_ssize_t>b[0]) << 8 | b[1]) if p >= 2 else 0)

    cdef void _set_pending(self, Py_ssize_t p, Py_ssize_t flen):
        """``p`` bytes of a frame of length ``flen`` are buffered (flen: p >= 2 only)."""
        if p == 0:
            self._pend_plain = 0
            self._pend_need = 0
        elif p == 1:
            self._pend_need = -1
        else:
            self._pend_plain = flen - FP_AEAD_TAG_SIZE
            self._pend_need = 2 + flen - p

    cdef object _finish_sealed(self):
        out = self._finish()
        return out if out else None

    cdef int _segment_all(self, object data) except -1:
        """:meth:`_segment` over all of ``data``."""
        cdef Py_buffer view
        mv = _byte_view(data)
        PyObject_GetBuffer(mv, &view, PyBUF_SIMPLE)
        try:
            self._segment(mv, <const uint8_t *>view.buf, 0, <size_t>view.len)
        finally:
            PyBuffer_Release(&view)
        return 0

    cdef _Route _lent_route(self, uint64_t key, size_t plen):
        """The route whose lent buffer takes ``plen`` payload bytes whole, or None."""
        ro = self._routes.get(key)
        if ro is None:
            return None
        cdef _Route r = <_Route>ro
        if <long long>plen > r.credit or <size_t>self._loan_room(r) < plen:
            return None
        return r

    cdef void _placed(self, _Route r, size_t plen, bint direct=True):
        # what _segment's fast way does for a record copied whole into the loan
        # (``direct``: opened there, not copied from the scratch area)
        self.bytes_in += plen
        self.sealed_bytes_in += plen
        if direct:
            self.direct_bytes_in += plen
        self.frames_in += 1
        self._fast += 1
        r.credit -= <long long>plen
        r.delivered += <long long>plen
        self._into_loan(r, <Py_ssize_t>plen)

    cdef void _begin(self):
        self._out = None  # made when a record must go to the session
        self._woken1 = None
        self._woken = None
        self._slow = False
        self._overflowed = False
        self._last_loan = None
        self._fast = 0

    cdef list _finish(self):
        """Wake the readers whose lent buffers took data; the records for the session
        (None: none)."""
        cdef list out = self._out
        cdef _Route r = self._last_loan
        cdef bint full = False
        cdef Py_ssize_t hint = 0
        self._out = None
        self._last_loan = None
        self._wake()
        if r is not None and r.lent_held:
            if r.spilled:
                full = self._overflowed and r.lent.len >= LOAN_OVERFLOW_PAUSE
            elif r.lent.len >= LOAN_LARGE:
                hint = self._size_read(r.lent.len - r.lent_got)
                full = hint < 0
        self._overflowed = False
        self._set_hint(max(hint, 0))
        if self.on_wake_hint is not None:
            self._set_wake()
        if full and self.on_loan_full is not None:
            self.on_loan_full()
        return out

    cdef int _set_wake(self) except -1:
        """``wake_hint`` from the muxer frame in progress and the Noise frame buffered."""
        cdef Py_ssize_t left = <Py_ssize_t>self._frame_left()
        cdef Py_ssize_t need = self._pend_need, due, wake = 0
        # the buffered frame's plaintext is the next part of the muxer frame (or
        # all of its rest and more); its missing wire bytes are due either way
        due = need + max(0, left - self._pend_plain) if need > 0 else left
        if due >= WAKE_MIN:
            wake = min(due, WAKE_MAX) // WAKE_STEP * WAKE_STEP
        if wake != self.wake_hint:
            self.wake_hint = wake
            self.on_wake_hint(wake)
        return 0

    cdef Py_ssize_t _size_read(self, Py_ssize_t room):
        """The read hint for a large loan with ``room`` bytes left: the wire bytes
        that complete the frame buffered from the last read, plus the room its
        plaintext leaves (plaintext is never longer than its frames). -1 when
        that room is under LOAN_MIN_READ (reading more now would only queue it);
        0 when the buffered frame's length is not known yet."""
        if self._pend_need < 0:
            return 0
        room -= self._pend_plain
        if room < LOAN_MIN_READ:
            return -1
        return self._pend_need + room

    cdef int _set_hint(self, Py_ssize_t hint) except -1:
        if hint != self.read_hint:
            self.read_hint = hint
            if self.on_read_hint is not None:
                self.on_read_hint(hint)
        return 0

    # -- the muxer's part of the walk (YamuxDemux, MplexDemux) -------------------------

    cdef bint _in_payload(self, size_t plen, uint64_t *key):
        """True when the next ``plen`` bytes are all payload of one plain data frame;
        ``key`` names its route."""
        return False

    cdef void _take_payload(self, size_t plen):
        """Account ``plen`` payload bytes placed without the decoder."""
        pass

    cdef size_t _frame_left(self):
        """Payload bytes of the muxer frame in progress not fed yet (0: between frames)."""
        return 0

    cdef size_t _head(self, const uint8_t *buf, size_t n, size_t more, uint64_t *key):
        """The decoder's ``head``: the length of a plain data frame's header at
        ``buf`` whose payload covers the rest of ``buf[:n]`` and ``more`` bytes
        (``key`` names its route), or 0."""
        return 0

    cdef int _segment(self, object mv, const uint8_t *base, size_t start, size_t n) except -1:
        """Decode base[start:start+n) (``mv`` views base) and walk its records."""
        raise NotImplementedError


@cython.final
cdef class YamuxDemux(_RouteTable):
    """YamuxDecoder that delivers plain DATA frames itself (see fastp2p.proto.yamux.frame).

    One C pass decodes the whole input; a second walks the records, charging
    plain DATA on attached streams to their credit and handing the payload to
    the stream: copied into the buffer its reader lent (:meth:`lend`), or as a
    zero-copy slice to its ``deliver``; until the first record the session
    must see. That one and all after it are returned as tuples.
    :meth:`feed_sealed` opens the Noise frames first, in the same call.
    """

    cdef fp_yamux_decoder _dec

    def __cinit__(self):
        fp_yamux_decoder_init(&self._dec)
        self._head_size = FP_YAMUX_HEADER_SIZE

    @property
    def buffered(self):
        """Bytes held internally (an incomplete header; never payload)."""
        return self._dec.hdr_len

    cdef bint _in_payload(self, size_t plen, uint64_t *key):
        cdef uint32_t sid = 0
        if fp_yamux_decoder_in_payload(&self._dec, plen, &sid):
            key[0] = sid
            return True
        return False

    cdef void _take_payload(self, size_t plen):
        fp_yamux_decoder_take_payload(&self._dec, plen)

    cdef size_t _frame_left(self):
        if self._dec.error or self._dec.hdr_len:
            return 0
        return self._dec.remaining

    cdef size_t _head(self, const uint8_t *buf, size_t n, size_t more, uint64_t *key):
        cdef uint32_t sid = 0
        cdef size_t k = fp_yamux_decoder_head(&self._dec, buf, n, more, &sid)
        key[0] = sid
        return k

    cdef int _segment(self, object mv, const uint8_t *base, size_t start, size_t n) except -1:
        """Decode base[start:start+n) (``mv`` views base) and walk its records."""
        cdef fp_yamux_record stack_recs[BATCH]
        cdef fp_yamux_record *recs = stack_recs
        cdef fp_yamux_record *grown
        cdef fp_yamux_record *rec
        cdef size_t cap = BATCH, total = 0, consumed = 0, nout = 0, pos = start, end = start + n
        cdef size_t i, off
        cdef int rc
        cdef _Route r
        cdef object ro
        cdef list out = self._out
        try:
            self.bytes_in += <unsigned long long>n
            # pass 1: decode the segment (an error delivers nothing of it)
            while True:
                rc = fp_yamux_decoder_feed(&self._dec, base + pos, end - pos, &consumed,
                                           recs + total, cap - total, &nout)
                if rc < 0:
                    _raise_status(rc, "yamux")
                for i in range(total, total + nout):
                    if recs[i].offset != FP_NO_PAYLOAD:
                        recs[i].offset += pos  # make offsets absolute
                total += nout
                pos += consumed
                if total < cap:
                    break
                grown = <fp_yamux_record *>PyMem_Malloc(2 * cap * sizeof(fp_yamux_record))
                if grown == NULL:
                    raise MemoryError()
                memcpy(grown, recs, cap * sizeof(fp_yamux_record))
                if recs != stack_recs:
                    PyMem_Free(recs)
                recs = grown
                cap *= 2
            self.frames_in += total
            # pass 2: the fast way, up to the first record the session must see
            i = 0
            while i < total and not self._slow:
                rec = &recs[i]
                if rec.type != FP_YAMUX_TYPE_DATA or rec.flags != 0:
                    self._slow = True
                    break
                ro = self._routes.get(rec.stream_id)
                if ro is None:
                    self._slow = True
                    break
                r = <_Route>ro
                if rec.length > r.credit:
                    self._slow = True
                    break
                i += 1
                self._fast += 1
                if rec.length:
                    self._hand_over(r, mv, base, rec.offset, rec.length)
            if i < total and out is None:
                out = self._out = []
            while i < total:
                rec = &recs[i]
                if rec.offset == FP_NO_PAYLOAD:
                    out.append((rec.type, rec.flags, rec.stream_id, rec.length, None))
                else:
                    off = rec.offset
                    out.append((rec.type, rec.flags, rec.stream_id, rec.length,
                                PySequence_GetSlice(mv, off, off + rec.length)))
                i += 1
        finally:
            if recs != stack_recs:
                PyMem_Free(recs)
        return 0


cdef enum:
    # MplexDemux marks on fp_mplex_record.bits of control records split across feeds
    _PIECE = 0x10  # a part of a control payload, collected (not a record)
    _WHOLE = 0x20  # the last part: the record's payload is the collected copy


cdef inline uint64_t _message_key(uint8_t flag, uint64_t sid):
    # the session's key of the stream a Message addresses (message_key in
    # fastp2p/proto/mplex/frame.py): flag 1 (MESSAGE_RECEIVER) id*2+1, flag 2 id*2
    return sid * 2 + (flag == 1)


@cython.final
cdef class MplexDemux(_RouteTable):
    """MplexDecoder that delivers Message records itself (see fastp2p.proto.mplex.frame).

    One C pass decodes the whole input; a second walks the records, charging
    Message records of attached stream keys (``id*2+1`` MESSAGE_RECEIVER,
    ``id*2`` MESSAGE_INITIATOR) to their credit and handing the payload to the
    stream: copied into the buffer its reader lent (:meth:`lend`), or as a
    zero-copy slice to its ``deliver``; until the first record the session
    must see. That one and all after it are returned as tuples.
    """

    cdef fp_mplex_decoder _dec
    cdef _Pieces _control  # control payload split across feeds, being collected
    cdef readonly object max_message_size

    def __cinit__(self, max_message_size=1 << 20):
        if max_message_size < 0:
            raise ValueError("max_message_size must be >= 0")
        self.max_message_size = max_message_size
        fp_mplex_decoder_init(&self._dec, min(max_message_size, (1 << 64) - 1))
        self._head_size = FP_MPLEX_MAX_HEADER
        self._control = _Pieces.__new__(_Pieces)

    @property
    def buffered(self):
        """Bytes held internally (incomplete header + partial control payload)."""
        return self._dec.hdr_len + self._control.held()

    cdef bint _in_payload(self, size_t plen, uint64_t *key):
        cdef uint8_t flag = 0
        cdef uint64_t sid = 0
        if fp_mplex_decoder_in_payload(&self._dec, plen, &flag, &sid):
            key[0] = _message_key(flag, sid)
            return True
        return False

    cdef void _take_payload(self, size_t plen):
        fp_mplex_decoder_take_payload(&self._dec, plen)

    cdef size_t _frame_left(self):
        if self._dec.error or self._dec.hdr_len:
            return 0
        return <size_t>min(self._dec.remaining, <uint64_t>PY_SSIZE_T_MAX)

    cdef size_t _head(self, const uint8_t *buf, size_t n, size_t more, uint64_t *key):
        cdef uint8_t flag = 0
        cdef uint64_t sid = 0
        cdef size_t k = fp_mplex_decoder_head(&self._dec, buf, n, more, &flag, &sid)
        if k:
            key[0] = _message_key(flag, sid)
        return k

    cdef int _segment(self, object mv, const uint8_t *base, size_t start, size_t n) except -1:
        """Decode base[start:start+n) (``mv`` views base) and walk its records."""
        cdef fp_mplex_record stack_recs[BATCH]
        cdef fp_mplex_record *recs = stack_recs
        cdef fp_mplex_record *grown
        cdef fp_mplex_record *rec
        cdef size_t cap = BATCH, total = 0, consumed = 0, nout = 0, pos = start, end = start + n
        cdef size_t i, off
        cdef size_t emitted = 0
        cdef Py_ssize_t wi = 0
        cdef int rc
        cdef _Route r
        cdef object ro
        cdef list out = self._out
        cdef list whole = None  # payloads of _WHOLE records, in order
        try:
            self.bytes_in += <unsigned long long>n
            # pass 1: decode the segment (an error delivers nothing of it)
            while True:
                rc = fp_mplex_decoder_feed(&self._dec, base + pos, end - pos, &consumed,
                                           recs + total, cap - total, &nout)
                if rc < 0:
                    self._control.drop()
                    _raise_status(rc, "mplex")
                for i in range(total, total + nout):
                    rec = &recs[i]
                    rec.offset += pos  # make offsets absolute
                    if (rec.flag == 1 or rec.flag == 2
                            or rec.bits == FP_MPLEX_REC_FIRST | FP_MPLEX_REC_LAST):
                        emitted += 1
                        continue
                    off = rec.offset
                    w = self._control.add(rec.bits, PySequence_GetSlice(mv, off, off + rec.length))
                    if w is not None:
                        if whole is None:
                            whole = []
                        whole.append(w)
                        rec.bits = _WHOLE
                        emitted += 1
                    else:
                        rec.bits = _PIECE
                total += nout
                pos += consumed
                if total < cap:
                    break
                grown = <fp_mplex_record *>PyMem_Malloc(2 * cap * sizeof(fp_mplex_record))
                if grown == NULL:
                    raise MemoryError()
                memcpy(grown, recs, cap * sizeof(fp_mplex_record))
                if recs != stack_recs:
                    PyMem_Free(recs)
                recs = grown
                cap *= 2
            self.frames_in += emitted
            # pass 2: the fast way, up to the first record the session must see
            i = 0
            while i < total and not self._slow:
                rec = &recs[i]
                if rec.flag != 1 and rec.flag != 2:
                    self._slow = True
                    break
                ro = self._routes.get(_message_key(rec.flag, rec.stream_id))
                if ro is None:
                    self._slow = True
                    break
                r = <_Route>ro
                if <long long>rec.length > r.credit:
                    self._slow = True
                    break
                i += 1
                self._fast += 1
                if rec.length:
                    self._hand_over(r, mv, base, rec.offset, rec.length)
            if i < total and out is None:
                out = self._out = []
            while i < total:
                rec = &recs[i]
                i += 1
                if rec.flag != 1 and rec.flag != 2:
                    if rec.bits == _PIECE:
                        continue
                    if rec.bits == _WHOLE:
                        out.append((rec.flag, rec.stream_id, whole[wi]))
                        wi += 1
                        continue
                off = rec.offset
                out.append((rec.flag, rec.stream_id,
                            PySequence_GetSlice(mv, off, off + rec.length)))
        finally:
            if recs != stack_recs:
                PyMem_Free(recs)
        return 0


# -- the write half: a stream's message from the writer to the socket, in one call ----


cdef enum:
    # as fastp2p/transport/_pump.py's (why there): the pass's small writes are
    # joined up to COALESCE_MAX bytes; QUEUE_MAX bytes queued leave at once
    COALESCE_MAX = 16 * 1024
    QUEUE_MAX = 1024 * 1024
    # as fastp2p/transport/conn.py's: plaintext NoisePath holds for one seal at
    # the pass's end, and the age at which a batch of small sends leaves early
    DEFER_MAX = 16 * 1024
cdef double EARLY_FLUSH_S = 0.0002


cdef class WritePump:
    """The write half of the TCP connection (which derives from it): ``write``
    and its loop-pass state, as C fields that ``SendStep`` uses too. The pure
    twin, with the reasons, is fastp2p/transport/_pump.py's."""

    #: a write was made in this loop pass (RawConnection.in_pass)
    cdef public bint in_pass
    cdef public bint _closed
    #: the pass's later writes (None: none), its last one if small writes fill
    #: it, and the bytes in them
    cdef public object _pend
    cdef public object _pend_tail
    cdef public Py_ssize_t _pend_n
    #: called at the end of the pass, before the queued bytes leave
    cdef public object _at_end
    #: 1: the pass's end waits one more turn of the loop, 2: it did (hold_past_tasks)
    cdef public int _again
    #: the end-of-pass marker is scheduled (by the pass's first write or a read)
    cdef public bint _marked
    cdef public object _transport
    #: ``loop.call_soon``, the end-of-pass marker (bound once) and its empty context
    cdef public object _call_soon
    cdef public object _end_cb
    cdef public object _ctx
    #: the connection's protocol (its ``lost`` flag: queued bytes are dropped then)
    cdef public object _p

    def write(self, data):
        if self._closed:
            raise ClosedResourceError("connection closed")
        self._write(data)

    cdef int _write(self, object data) except -1:
        cdef Py_ssize_t n
        cdef list pend = self._pend
        if pend is None:
            if not self.in_pass:
                self.first_write(data)
                return 0
            self._pend = pend = []
        n = len(data)
        if n <= COALESCE_MAX:
            tail = self._pend_tail
            if tail is None:
                self._pend_tail = tail = bytearray(data)
                pend.append(tail)
            else:
                tail += data
                if len(<bytearray>tail) > COALESCE_MAX:
                    self._flush_pending()
                    return 0
        else:
            pend.append(data if type(data) is bytes else PyMemoryView_FromObject(data))
            self._pend_tail = None
        n += self._pend_n
        if n >= QUEUE_MAX:
            self._flush_pending()
        else:
            self._pend_n = n
        return 0

    def defer_to_pass_end(self, cb):
        return self._defer(cb)

    cdef bint _defer(self, object cb) except -1:
        if not self.in_pass or self._closed:
            return False
        at_end = self._at_end
        if at_end is None:
            self._at_end = cb
            return True
        return at_end is cb or at_end == cb

    def flush(self):
        self._flush_pending()

    cdef int _mark(self) except -1:
        """Schedule the pass's end marker, unless it is already."""
        if not self._marked:
            self._marked = True
            self._call_soon(self._end_cb, context=self._ctx)
        return 0

    cdef int _mark_after_read(self) except -1:
        """A read came (ReadPump): make the pass's end marker now (why: _pump.py)."""
        if not self._closed:
            self._mark()
        return 0

    def hold_flush(self):
        if not self.in_pass:
            self.in_pass = True
            if self._marked and self._again == 0:
                self._again = 1  # a read's marker: the end waits a turn, as a new one's would
            self._mark()

    def hold_past_tasks(self):
        if not self.in_pass:
            self.hold_flush()
        elif self._again == 0 and not self._closed:
            self._again = 1  # (see _pump.py)

    def _end_pass(self):
        if self._again == 1:
            self._again = 2
            self._call_soon(self._end_cb, context=self._ctx)
            return
        self._again = 0
        self._marked = False
        at_end = self._at_end
        if at_end is not None:
            self._at_end = None
            try:
                at_end()  # its writes join this pass's queued bytes
            finally:  # a failing callback must not hold later writes back
                self.in_pass = False
                self._flush_pending()
            return
        self.in_pass = False
        if self._pend is not None:
            self._flush_pending()

    def _send_pending(self):
        self._flush_pending()

    cdef int _flush_pending(self) except -1:
        cdef list pend = self._pend
        if pend is not None:
            self._pend = None
            self._pend_tail = None
            self._pend_n = 0
            if not self._closed and not self._p.lost:
                if len(pend) == 1:
                    self._transport.write(pend[0])
                else:
                    self._transport.writelines(pend)  # one writev (uvloop)
        return 0

    cdef int first_write(self, object data) except -1:
        """The pass's first write (``not in_pass``): at once, and mark the pass."""
        self.in_pass = True
        try:
            # Transports take only bytes-like builtins; a view keeps a FrameBlock alive.
            self._transport.write(data if type(data) is bytes else PyMemoryView_FromObject(data))
        finally:
            # (after the write: the message leaves before the handle is made; a
            # read's marker, made already, ends this pass too)
            self._mark()
        return 0


# -- the TCP protocol's read callbacks (after the write half: a read marks its pass) --

cdef class ReadPump:
    """The read half of the TCP transport's buffered protocol (which derives from
    it and the event loop's ``BufferedProtocol``): the loop calls
    ``get_buffer``/``buffer_updated`` once per socket read, and here they are C
    methods, not Python frames. Each read goes to ``_on_data(view)`` (the
    connection's receive step) or, before that is set, to the subclass's
    ``_read_early(nbytes)``."""

    #: the receive buffer and the part of it the next read may fill
    cdef public object _rxv
    cdef public object _rxv_now
    #: each read's bytes, as a view of ``_rxv`` valid during the call (None: _read_early)
    cdef public object _on_data
    cdef public unsigned long long bytes_received
    #: the connection's write half, whose pass end marker a push-mode read makes (None: none)
    cdef public WritePump _writer

    def get_buffer(self, sizehint):
        cb = self._on_data
        if type(cb) is _SealedStep and (<_SealedStep>cb).pooled:  # set by native feeds only
            (<NoiseCipher>(<_SealedStep>cb).cipher).alert_pool(len(self._rxv_now))
        return self._rxv_now

    def buffer_updated(self, Py_ssize_t nbytes):
        self.bytes_received += <unsigned long long>nbytes
        cb = self._on_data
        if cb is not None:
            if type(cb) is _SealedStep:
                (<_SealedStep>cb).feed_read(self._rxv, nbytes)
            else:
                cb(PySequence_GetSlice(self._rxv, 0, nbytes))
            if self._writer is not None:
                self._writer._mark_after_read()
            return
        self._read_early(nbytes)


cdef class SealState:
    """The pass state of ``NoisePath`` (which derives from it), as C fields that
    ``SendStep`` uses too: the raw connection, the send cipher, the plaintext
    held for one seal at the pass's end (``_pend``), when that batch began, and
    whether a batch left early in this pass. The pure twin is
    fastp2p/transport/_pump.py's."""

    cdef public object raw
    cdef public object _send
    cdef public object _pend
    cdef public double _batch_t0
    cdef public bint _early
    #: the path's end-of-pass callback (bound once)
    cdef public object _end_cb


cdef enum:
    # most muxer frames one step seals (more: the general path)
    _STEP_FRAMES = 16
    # a seal of at most this much plaintext makes a bytes object, not a pooled
    # block (_seal)
    SMALL_SEAL = 4096


cdef class SendStep:
    """``stream_send`` of a connection whose frames are sealed with Noise over TCP,
    in one call: ``step(stream_id, data) -> bytes taken``.

    For a write to an open stream with send window it reads the stream's
    record in the session's table (``local_closed``; yamux ``state`` and
    ``send_window``), encodes the DATA frame headers, and seals and writes them
    with the payload as ``NoisePath.send`` and the TCP connection's ``write``
    would (a pass's first write at once; later ones held, joined and sealed as
    there), then takes the bytes from the window: no Python runs. Every other
    case (queued session output, a closed, reset, SYN-pending or window-less
    stream, over 16 frames) goes to ``fallback(stream_id, data)``, the general
    path, untouched. Made by the session's ``send_step``; ``live = False``
    sends everything the general way. The pure twin is
    fastp2p/transport/_pump.py's.
    """

    cdef object session
    cdef dict streams
    cdef bint yamux
    cdef Py_ssize_t max_frame
    cdef SealState path
    cdef NoiseCipher cipher
    cdef WritePump pump
    cdef object fallback
    cdef public bint live
    #: muxer frames and their bytes (headers included), and the sealed bytes, it sent
    cdef readonly unsigned long long frames_out
    cdef readonly unsigned long long bytes_out
    cdef readonly unsigned long long wire_out

    def __cinit__(self, session, dict streams, bint yamux, Py_ssize_t max_frame,
                  SealState path, fallback):
        if max_frame <= 0:
            raise ValueError("max_frame must be > 0")
        self.session = session
        self.streams = streams
        self.yamux = yamux
        self.max_frame = max_frame
        self.path = path
        self.cipher = <NoiseCipher?>path._send
        self.pump = <WritePump?>path.raw
        self.fallback = fallback
        self.live = True

    def __call__(self, stream_id, data):
        cdef Py_ssize_t n = self._send(stream_id, data)
        if n < 0:
            return self.fallback(stream_id, data)
        return n

    cdef object _seal(self, const fp_iovec *iov, size_t cnt, size_t total):
        """``total`` plaintext bytes sealed: into a bytes object up to SMALL_SEAL (see
        seal_iov_bytes; the pump writes or queues either), else a pooled block."""
        cdef NoiseCipher cipher = self.cipher
        cipher._enter()
        try:
            if total <= SMALL_SEAL:
                out = cipher.seal_iov_bytes(iov, cnt)
            else:
                out = cipher.seal_iov(iov, cnt, total)
        finally:
            cipher._busy = False
        self.wire_out += <unsigned long long>len(out)
        return out

    cdef int _flush_path(self) except -1:
        """``NoisePath.flush``: seal and write the plaintext held for the pass's end."""
        cdef fp_iovec one
        cdef bytearray pend = self.path._pend
        self.path._pend = None
        if self.pump._closed:
            return 0  # dropped, as the raw connection drops its unsent bytes
        one.base = <const uint8_t *>PyByteArray_AS_STRING(pend)
        one.len = <size_t>PyByteArray_GET_SIZE(pend)
        self.pump._write(self._seal(&one, 1, one.len))
        return 0

    cdef Py_ssize_t _send(self, object stream_id, object data) except -2:
        """Send what the window allows of ``data``; -1: not this way (nothing done)."""
        cdef WritePump pump = self.pump
        cdef SealState path = self.path
        cdef Py_buffer view
        cdef uint8_t hdrs[_STEP_FRAMES * FP_MPLEX_MAX_HEADER]
        cdef fp_iovec iov[2 * _STEP_FRAMES]
        cdef Py_ssize_t total, n, off = 0, size, window
        cdef size_t hlen = 0, plain
        cdef uint64_t key
        cdef int i = 0, j, k, h
        cdef bytearray pend
        if not self.live or pump._closed:
            return -1
        if self.session._out:  # (frames the session queued go first: the general way)
            return -1
        st = self.streams.get(stream_id)
        if st is None or st.local_closed:
            return -1
        if self.yamux:
            if st.state == 0:  # SYN not sent yet (the session's _PENDING_SYN)
                return -1
            window = st.send_window
            if window <= 0:
                return -1
        else:
            window = PY_SSIZE_T_MAX
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            total = view.len
            if total == 0:
                return -1
            n = total if total <= window else window
            k = <int>((n + self.max_frame - 1) // self.max_frame)
            if k > _STEP_FRAMES:
                return -1
            key = <uint64_t>stream_id
            while off < n:
                size = n - off
                if size > self.max_frame:
                    size = self.max_frame
                if self.yamux:
                    if fp_yamux_encode_header(hdrs + hlen, FP_YAMUX_TYPE_DATA, 0, <uint32_t>key,
                                              <uint32_t>size) < 0:
                        return -1
                    h = FP_YAMUX_HEADER_SIZE
                else:  # key = id * 2 + 1: a stream we opened (MESSAGE_INITIATOR)
                    h = fp_mplex_encode_header(key >> 1, 2 if key & 1 else 1, <uint64_t>size,
                                               hdrs + hlen, FP_MPLEX_MAX_HEADER)
                    if h <= 0:
                        return -1
                iov[i].base = hdrs + hlen
                iov[i].len = <size_t>h
                iov[i + 1].base = <const uint8_t *>view.buf + off
                iov[i + 1].len = <size_t>size
                hlen += <size_t>h
                off += size
                i += 2
            plain = <size_t>n + hlen
            # NoisePath.send and _send_in_pass, written out (the reasons are there)
            if path._pend is None and not pump.in_pass:
                pump.first_write(self._seal(iov, <size_t>i, plain))
            elif plain > DEFER_MAX:
                if path._pend is not None:
                    self._flush_path()
                pump._write(self._seal(iov, <size_t>i, plain))
            elif path._pend is not None:
                pend = path._pend
                for j in range(i):
                    _append(pend, iov[j].base, iov[j].len)
                if PyByteArray_GET_SIZE(pend) > DEFER_MAX:
                    self._flush_path()
                    if not path._early or _monotonic() - path._batch_t0 >= EARLY_FLUSH_S:
                        path._early = True
                        pump._flush_pending()
            elif pump._defer(path._end_cb):
                path._batch_t0 = _monotonic()
                pend = bytearray()
                for j in range(i):
                    _append(pend, iov[j].base, iov[j].len)
                path._pend = pend
            else:
                pump._write(self._seal(iov, <size_t>i, plain))
        finally:
            PyBuffer_Release(&view)
        if self.yamux:
            st.send_window = window - n
        self.frames_out += <unsigned long long>k
        self.bytes_out += <unsigned long long>plain
        return n
