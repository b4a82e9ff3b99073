# cython: language_level=3
"""XSalsa20 stream cipher (libp2p pnet): thin binding over csrc/fp_xsalsa20.c.

Same API and semantics as the pure twin fastp2p/proto/xsalsa20.py. One
``XSalsa20`` is one direction of a connection: it keeps its keystream position,
so calls of any lengths continue the stream. ``apply`` XORs a writable buffer
in place (the receive path: the socket's buffer, no copy); ``apply_into``
writes into a caller's buffer (the send path: from a read-only, recycled frame
block into a pool block); ``apply_copy`` returns a new ``bytearray``. The GIL is released for at least ``NOGIL_THRESHOLD`` bytes.
"""

from libc.stdint cimport uint8_t, uint32_t
from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_SIMPLE, PyBUF_WRITABLE
from cpython.bytearray cimport PyByteArray_FromStringAndSize, PyByteArray_AS_STRING

from fastp2p.errors import BusyResourceError, SecurityError

cdef extern from "fp_xsalsa20.h" nogil:
    enum:
        FP_XSALSA20_KEY_SIZE
        FP_XSALSA20_NONCE_SIZE
    ctypedef struct fp_xsalsa20:
        uint32_t exhausted
    void fp_xsalsa20_init(fp_xsalsa20 *s, const uint8_t *key, const uint8_t *nonce)
    int fp_xsalsa20_xor(fp_xsalsa20 *s, uint8_t *dst, const uint8_t *src, size_t len)
    void fp_xsalsa20_wipe(fp_xsalsa20 *s)

KEY_SIZE = 32
NONCE_SIZE = 24
NOGIL_THRESHOLD = 64 * 1024

cdef enum:
    _NOGIL = 64 * 1024


cdef class XSalsa20:
    """One XSalsa20 keystream (key: 32 bytes, nonce: 24 bytes), position kept."""

    cdef fp_xsalsa20 st
    cdef bint _busy

    def __cinit__(self, key, nonce):
        cdef const uint8_t[::1] k = bytes(key)
        cdef const uint8_t[::1] n = bytes(nonce)
        if k.shape[0] != FP_XSALSA20_KEY_SIZE:
            raise ValueError(f"XSalsa20 key must be 32 bytes, got {k.shape[0]}")
        if n.shape[0] != FP_XSALSA20_NONCE_SIZE:
            raise ValueError(f"XSalsa20 nonce must be 24 bytes, got {n.shape[0]}")
        fp_xsalsa20_init(&self.st, &k[0], &n[0])
        self._busy = False

    def __dealloc__(self):
        fp_xsalsa20_wipe(&self.st)

    cdef int _xor(self, uint8_t *dst, const uint8_t *src, size_t n) except -1:
        cdef int rc
        if self._busy:
            raise BusyResourceError("XSalsa20 used from two threads at once")
        self._busy = True
        try:
            if n >= _NOGIL:
                with nogil:
                    rc = fp_xsalsa20_xor(&self.st, dst, src, n)
            else:
                rc = fp_xsalsa20_xor(&self.st, dst, src, n)
        finally:
            self._busy = False
        if rc != 0:
            raise SecurityError("XSalsa20 keystream exhausted (2^70 bytes)")
        return 0

    def apply(self, buf):
        """XOR the keystream into the writable buffer ``buf``, in place."""
        cdef Py_buffer view
        PyObject_GetBuffer(buf, &view, PyBUF_SIMPLE | PyBUF_WRITABLE)
        try:
            self._xor(<uint8_t *>view.buf, <const uint8_t *>view.buf, <size_t>view.len)
        finally:
            PyBuffer_Release(&view)

    def apply_into(self, src, dst):
        """Write ``src`` XOR the keystream into the writable ``dst`` (same length; may be ``src``)."""
        cdef Py_buffer s
        cdef Py_buffer d
        PyObject_GetBuffer(src, &s, PyBUF_SIMPLE)
        try:
            PyObject_GetBuffer(dst, &d, PyBUF_SIMPLE | PyBUF_WRITABLE)
            try:
                if d.len != s.len:
                    raise ValueError(f"apply_into: dst has {d.len} bytes, src {s.len}")
                if d.buf != s.buf and (<char *>d.buf < <char *>s.buf + s.len) and (<char *>s.buf < <char *>d.buf + d.len):
                    raise ValueError("apply_into: src and dst overlap")
                self._xor(<uint8_t *>d.buf, <const uint8_t *>s.buf, <size_t>s.len)
            finally:
                PyBuffer_Release(&d)
        finally:
            PyBuffer_Release(&s)

    def apply_copy(self, data):
        """Return ``data`` XOR the keystream as a new ``bytearray``."""
        cdef Py_buffer view
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            out = PyByteArray_FromStringAndSize(NULL, view.len)
            if view.len:
                self._xor(<uint8_t *>PyByteArray_AS_STRING(out), <const uint8_t *>view.buf,
                          <size_t>view.len)
        finally:
            PyBuffer_Release(&view)
        return out
