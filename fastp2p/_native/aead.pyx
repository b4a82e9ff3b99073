# cython: language_level=3
"""Noise transport ciphers (ChaChaPoly, AESGCM): thin bindings over csrc/fp_aead.c
(OpenSSL EVP; AES-256-GCM on fastp2p's own VAES kernel, csrc/fp_gcm.c, where the CPU has it).

Same API and semantics as the pure twin fastp2p/proto/noise/cipher.py. Sealing
a list of buffers is one C call into a recycled pool block of exact length;
opening decrypts every complete frame in one C call. The GIL is released for
inputs of at least ``NOGIL_THRESHOLD`` bytes. Output blocks (``FrameBlock``) come
from the one process-wide pool of fastp2p._native.buffer and are recycled.
"""

from libc.stdint cimport uint8_t, uint64_t
from libc.string cimport memcpy, memcmp
from fastp2p._native.clock cimport monotonic
from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_SIMPLE
from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING
from cpython.bytearray cimport PyByteArray_FromStringAndSize, PyByteArray_AS_STRING, PyByteArray_Resize
from cpython.mem cimport PyMem_Malloc, PyMem_Free
from cpython.buffer cimport PyBuffer_FillInfo

cimport cython

from fastp2p._native.buffer cimport BufferPool, default_pool, fp_block

from fastp2p.errors import (
    BusyResourceError,
    ClosedResourceError,
    DecryptError,
    FrameError,
    SecurityError,
)

cdef extern from "openssl/crypto.h" nogil:
    const char *OpenSSL_version(int t)


def noise_hkdf2(chaining_key, ikm):
    """Noise spec 4.3 HKDF with two outputs over HMAC-SHA256: ``(out1, out2)``,
    32 bytes each (the pure twin: ``fastp2p.proto.noise.handshake.noise_hkdf2``).
    C because OpenSSL 3's one-shot HMAC fetches its algorithms on every call."""
    cdef bytes ck = chaining_key if type(chaining_key) is bytes else bytes(chaining_key)
    cdef bytes m = ikm if type(ikm) is bytes else bytes(ikm)
    cdef bytes out1 = PyBytes_FromStringAndSize(NULL, FP_HKDF_HASHLEN)
    cdef bytes out2 = PyBytes_FromStringAndSize(NULL, FP_HKDF_HASHLEN)
    cdef int rc = fp_noise_hkdf2(<const uint8_t *>PyBytes_AS_STRING(ck), len(ck),
                                 <const uint8_t *>PyBytes_AS_STRING(m), len(m),
                                 <uint8_t *>PyBytes_AS_STRING(out1), <uint8_t *>PyBytes_AS_STRING(out2))
    if rc == FP_ENOMEM:
        raise MemoryError("noise_hkdf2")
    if rc:
        raise SecurityError(f"OpenSSL failed in the Noise HKDF ({rc})")
    return out1, out2


def openssl_version():
    """The version of the libcrypto this module runs with (``OpenSSL_version(OPENSSL_VERSION)``)."""
    return OpenSSL_version(0).decode("ascii", "replace")


#: names of the AES-256-GCM implementations (``aesgcm_impl``, ``NoiseCipher.impl``)
AESGCM_IMPLS = ("vaes-avx512", "openssl-evp")
#: names of the ChaCha20-Poly1305 implementations (``chacha_impl``, ``NoiseCipher.impl``)
CHACHA_IMPLS = ("short-kernel+openssl-evp", "openssl-evp")
_IMPL_NAMES = {FP_AEAD_IMPL_GCM: "vaes-avx512", FP_AEAD_IMPL_EVP: "openssl-evp",
               FP_AEAD_IMPL_CHACHA_SHORT: "short-kernel+openssl-evp"}
_IMPL_BY_NAME = {v: k for k, v in _IMPL_NAMES.items()}


def aesgcm_impl():
    """What new AES-256-GCM ciphers run on: ``"vaes-avx512"`` (fastp2p's kernel,
    csrc/fp_gcm.c, where the CPU and OS have AVX-512 with VAES and VPCLMULQDQ;
    ``FASTP2P_AESGCM=evp`` turns it off) or ``"openssl-evp"``."""
    return _IMPL_NAMES[fp_aead_aesgcm_impl()]


def chacha_impl():
    """What new ChaCha20-Poly1305 ciphers run on: ``"short-kernel+openssl-evp"``
    (frames of at most 448 bytes on fastp2p's kernel, csrc/fp_chacha.c, where the CPU
    and OS have AVX2; longer ones on OpenSSL; ``FASTP2P_CHACHA=evp`` turns it off)
    or ``"openssl-evp"``."""
    return _IMPL_NAMES[fp_aead_chacha_impl()]


def set_aesgcm_impl(name):
    """Choose the AES-256-GCM implementation for ciphers made from now on
    (process-wide; for tests and benchmarks). ValueError for an unknown name or
    one this CPU cannot run."""
    if name not in AESGCM_IMPLS:
        raise ValueError(f"unknown AES-GCM implementation {name!r} (one of {AESGCM_IMPLS})")
    if fp_aead_set_aesgcm_impl(_IMPL_BY_NAME[name]) != 0:
        raise ValueError(f"{name} needs AVX-512 (F, BW, VL), VAES and VPCLMULQDQ; this CPU lacks some")


def set_chacha_impl(name):
    """Choose the ChaCha20-Poly1305 implementation for ciphers made from now on
    (process-wide; for tests and benchmarks), as ``set_aesgcm_impl``."""
    if name not in CHACHA_IMPLS:
        raise ValueError(f"unknown ChaCha20-Poly1305 implementation {name!r} (one of {CHACHA_IMPLS})")
    if fp_aead_set_chacha_impl(_IMPL_BY_NAME[name]) != 0:
        raise ValueError(f"{name} needs AVX2; this CPU lacks it")


cdef int _cipher_kind(cipher) except -1:
    """fp_aead's kind for a Noise cipher name (ValueError for another name)."""
    if cipher == "ChaChaPoly":
        return FP_AEAD_CHACHAPOLY
    if cipher == "AESGCM":
        return FP_AEAD_AESGCM
    raise ValueError(f"unknown Noise cipher {cipher!r}")


def seal_speed(cipher="AESGCM", Py_ssize_t size=16384, double seconds=0.5):
    """Single-core bytes per second of sealing ``size``-byte messages into one reused
    buffer with this build's ``cipher`` (what ``openssl speed -evp`` measures for
    OpenSSL: the cipher in cache, not the library around it). The GIL is released."""
    cdef int kind = _cipher_kind(cipher)
    if not 0 < size <= FP_AEAD_MAX_PLAINTEXT:
        raise ValueError(f"size must be 1..{FP_AEAD_MAX_PLAINTEXT}")
    cdef fp_aead a
    cdef bytes key = bytes(range(32))
    cdef bytearray src = bytearray(size), dst = bytearray(size + FP_AEAD_TAG_SIZE)
    cdef uint8_t *ps = <uint8_t *>PyByteArray_AS_STRING(src)
    cdef uint8_t *pd = <uint8_t *>PyByteArray_AS_STRING(dst)
    cdef long long n = 0, i
    cdef double t0, dt = 0.0
    cdef int rc = 0
    if fp_aead_init_kind(&a, kind, <const uint8_t *>PyBytes_AS_STRING(key), 0, 1) != 0:
        raise MemoryError("cipher context setup failed")
    try:
        with nogil:
            rc = fp_aead_encrypt(&a, ps, <size_t>size, pd, <size_t>size + FP_AEAD_TAG_SIZE)
            t0 = monotonic()
            while rc == 0 and dt < seconds:
                for i in range(64):
                    rc |= fp_aead_encrypt(&a, ps, <size_t>size, pd, <size_t>size + FP_AEAD_TAG_SIZE)
                n += 64
                dt = monotonic() - t0
    finally:
        fp_aead_free(&a)
    if rc:
        raise SecurityError(f"sealing failed ({rc})")
    return n * size / dt


MAX_FRAME = 65535
TAG_SIZE = 16
MAX_PLAINTEXT = 65519
#: plaintext bytes of the frames this side seals (see FP_AEAD_SEAL_PLAINTEXT)
SEAL_PLAINTEXT = FP_AEAD_SEAL_PLAINTEXT
#: an input buffer this long starts frames of its own (see FP_AEAD_ALIGN_MIN)
ALIGN_MIN = FP_AEAD_ALIGN_MIN
MAX_NONCE = (1 << 64) - 1
NOGIL_THRESHOLD = 16 * 1024
#: Noise cipher names this module implements (Noise spec 12.3 / 12.4)
CIPHERS = ("ChaChaPoly", "AESGCM")

cdef enum:
    _NOGIL = 16 * 1024
    _STACK_IOV = 16


# -- recycled output blocks ------------------------------------------------------------
#
# Sealed ciphertext and opened plaintext live in ``FrameBlock`` objects whose
# memory comes from the process-wide pool of fastp2p._native.buffer (csrc/fp_pool.c,
# reached through buffer.pxd; its size classes and cache limits are defined there).
# Freshly mapped multi-megabyte buffers page-fault on first touch, which costs more
# than the AEAD itself in a VM; recycled pool blocks are already resident. A block
# goes back to the pool only when its last reference (including every memoryview
# exported from it) is gone, so consumers that keep slices (stream receive queues,
# a transport's write queue) are always safe.

cdef BufferPool _POOL = default_pool()


@cython.no_gc
cdef class FrameBlock:
    """A read-only byte buffer (PEP 3118) holding sealed or opened frames."""

    # (attributes declared in aead.pxd)

    def __cinit__(self):
        self.data = NULL
        self.length = 0
        self.blk.ptr = NULL
        self.exports = 0

    def __init__(self, *args, **kwargs):
        raise TypeError("FrameBlocks come from NoiseCipher.seal_frames()/open_frames()")

    def __dealloc__(self):
        if self.blk.ptr != NULL:
            self.pool._release_block(&self.blk)
        self.data = NULL

    def __len__(self):
        return self.length

    def __bytes__(self):
        return PyBytes_FromStringAndSize(<const char *>self.data, self.length)

    def __eq__(self, other):
        cdef Py_buffer view
        try:
            PyObject_GetBuffer(other, &view, PyBUF_SIMPLE)
        except TypeError:
            return NotImplemented
        try:
            return view.len == self.length and (
                self.length == 0 or memcmp(view.buf, self.data, self.length) == 0)
        finally:
            PyBuffer_Release(&view)

    __hash__ = None

    def __repr__(self):
        return f"<FrameBlock {self.length} bytes>"

    def __getbuffer__(self, Py_buffer *buffer, int flags):
        PyBuffer_FillInfo(buffer, self, self.data, self.length, 1, flags)
        self.exports += 1

    def __releasebuffer__(self, Py_buffer *buffer):
        self.exports -= 1


cdef FrameBlock _new_block(size_t n):
    cdef FrameBlock b = FrameBlock.__new__(FrameBlock)
    _POOL._acquire_block(n, 0, &b.blk)
    b.pool = _POOL
    b.data = <uint8_t *>b.blk.ptr
    b.length = <Py_ssize_t>n
    return b


# -- parallel sealing and opening -------------------------------------------------------
#
# Noise frames are independent (each has its own nonce), so a large write can be
# sealed, and a large read opened, as runs of whole frames on several threads with
# the GIL released, each thread with its own copy of the cipher context
# (fp_aead_clone, one per pool thread, kept by the cipher). The threads are C
# threads of one process-wide pool (csrc/fp_par.c), started on first use.

def pool_threads():
    """Threads fastp2p's parallel seal/open pool has started in this process
    (csrc/fp_par.c; they live as long as the process)."""
    return fp_par_started()


cdef class NoiseCipher:
    """CipherState (ChaChaPoly or AESGCM) for one direction of a Noise transport session."""

    # (attributes and C-level methods declared in aead.pxd)

    def __cinit__(self, key, nonce=0, cipher="ChaChaPoly"):
        self._a.ctx = NULL
        self._a.shortk = NULL
        self._clones = NULL
        self._nclones = 0
        self._par_threads = 0
        self._open_threads = 0
        self._open_copy = False
        self.parallel_bytes = 0
        self._open_batches = 0
        cdef const uint8_t[::1] k = key
        cdef int kind = _cipher_kind(cipher)
        if k.shape[0] != FP_AEAD_KEY_SIZE:
            raise ValueError(f"{cipher} key must be 32 bytes")
        if not 0 <= nonce <= MAX_NONCE:
            raise ValueError(f"nonce out of range: {nonce}")
        if fp_aead_init_kind(&self._a, kind, &k[0], nonce, 1) != 0:
            raise MemoryError("cipher context setup failed")
        self.cipher = cipher
        self._pending = bytearray()
        self._error = None
        self._busy = False

    def __dealloc__(self):
        fp_aead_free(&self._a)
        self._free_clones()

    cdef void _free_clones(self):
        cdef int i
        if self._clones != NULL:
            for i in range(self._nclones):
                fp_aead_free(&self._clones[i])
            PyMem_Free(self._clones)
            self._clones = NULL
        self._nclones = 0

    def parallel_seal(self, int threads, size_t min_bytes=1 << 18):
        """Seal writes of at least ``min_bytes`` in parallel: runs of frames on ``threads``
        threads of a process-wide C pool plus the calling one, the GIL released (0: off).

        The wire bytes are identical to a serial seal. Worth it only with spare
        cores (``NoiseConfig.parallel_seal``).
        """
        if threads < 0:
            raise ValueError("threads must be >= 0")
        self._par_threads = min(threads, FP_PAR_MAX)
        self._par_min = max(min_bytes, FP_AEAD_SEAL_PLAINTEXT + 1)

    def parallel_open(self, int threads, size_t min_bytes=1 << 17):
        """Open reads of at least ``min_bytes`` holding two or more whole frames in
        parallel: runs of frames on ``threads`` pool threads plus the calling one,
        the GIL released (0: off). The plaintext, and what a forged or malformed
        frame does, are a serial open's exactly."""
        if threads < 0:
            raise ValueError("threads must be >= 0")
        self._open_threads = min(threads, FP_PAR_MAX)
        self._open_min = max(min_bytes, 2 * FP_AEAD_TAG_SIZE)
        # Frames that are not all payload for a reader's lent buffer are opened
        # into a block the decoder then copies from: that copy costs about what
        # opening AES-GCM does, so only ChaCha20-Poly1305 (3-4 GB/s a core) gains
        # (16-core Xeon, 16 KiB messages: ChaCha 1.2x, AES-GCM 0.88x of serial).
        self._open_copy = self.cipher == "ChaChaPoly"

    cdef int _ensure_clones(self, int k) except -1:
        """At least ``k`` contexts cloned from this one for the pool's threads."""
        cdef fp_aead *grown
        cdef int i, rc
        if self._nclones >= k:
            return 0
        grown = <fp_aead *>PyMem_Malloc(k * sizeof(fp_aead))
        if grown == NULL:
            raise MemoryError()
        self._free_clones()
        self._clones = grown
        for i in range(k):
            rc = fp_aead_clone(&self._clones[i], &self._a)
            if rc:
                self._nclones = i
                self._fail(rc)
            self._nclones = i + 1
        return 0

    cdef int _seal_par(self, const fp_iovec *iov, size_t cnt, uint8_t *dst, size_t need,
                       size_t total) except? -999:
        """``fp_aead_seal_frames`` of ``iov`` on the pool (see ``parallel_seal``; the
        caller checked it is on and holds ``_enter``); returns its status."""
        cdef size_t nclones = <size_t>self._par_threads, parts = 1, got = 0
        cdef int rc
        self._ensure_clones(self._par_threads)
        with nogil:
            rc = fp_aead_seal_frames_par(&self._a, self._clones, nclones, iov, cnt, dst, need,
                                         &got, &parts)
        if parts > 1 and rc == 0:
            self.parallel_bytes += total
        return rc

    cdef void alert_pool(self, size_t n) noexcept:
        """A read of ``n`` bytes is about to be made: when one that large is opened
        on the pool, wake its sleeping threads now (fp_par_alert), so that they are
        ready when the read's frames are (the read's copy hides their wake-up)."""
        if self._open_threads and n >= self._open_min:
            fp_par_alert()

    cdef int open_par(self, const uint8_t *src, size_t n, uint8_t *dst, size_t cap,
                      size_t *consumed, size_t *outlen) except? -999:
        """``fp_aead_open_frames`` of ``src[:n]`` into ``dst`` on the pool (see
        ``parallel_open``; the caller checked it is on and holds ``_enter``).
        Returns its status without raising: the plaintext of the frames before a
        failing one is good, and the caller delivers it before ``_fail``."""
        cdef size_t nclones = <size_t>self._open_threads, parts = 1
        cdef int rc
        self._ensure_clones(self._open_threads)
        self._open_batches += 1
        with nogil:
            rc = fp_aead_open_frames_par(&self._a, self._clones, nclones, src, n, consumed, dst,
                                         cap, outlen, &parts)
        if parts > 1:
            self.parallel_bytes += outlen[0]
        return rc

    def close(self):
        """Free the EVP context (and the key in it); later calls raise ClosedResourceError."""
        if self._busy:
            raise BusyResourceError("NoiseCipher is in use")
        fp_aead_free(&self._a)
        self._free_clones()
        self._error = ClosedResourceError
        self._pending = bytearray()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @property
    def nonce(self):
        """The counter the next message will use."""
        return self._a.nonce

    @property
    def impl(self):
        """The code this cipher runs on: ``"vaes-avx512"``, ``"short-kernel+openssl-evp"``
        (ChaChaPoly: short frames on fastp2p's kernel) or ``"openssl-evp"``."""
        return _IMPL_NAMES[self._a.impl]

    @property
    def buffered(self):
        """Bytes of an incomplete incoming frame held internally."""
        return len(self._pending)

    @property
    def pending_frame_len(self):
        """The length field of the buffered partial frame; -1 when fewer than
        its 2 length bytes are buffered."""
        if len(self._pending) < 2:
            return -1
        return (<uint8_t>self._pending[0]) << 8 | <uint8_t>self._pending[1]

    cdef int _enter(self) except -1:
        if self._error is not None:
            if self._error is ClosedResourceError:
                raise ClosedResourceError("NoiseCipher is closed")
            raise self._error(f"cipher is dead after an earlier {self._error.__name__}")
        if self._busy:
            raise BusyResourceError("NoiseCipher used from two threads at once")
        self._busy = True
        return 0

    cdef object _fail(self, int rc):
        if rc == FP_ENONCE:
            raise SecurityError("Noise nonce exhausted; the session must be rekeyed or closed")
        self._pending = bytearray()
        if rc == FP_EFRAME:
            self._error = FrameError
            raise FrameError("noise frame shorter than the tag")
        if rc == FP_EAUTH:
            self._error = DecryptError
            raise DecryptError("Noise transport message failed authentication")
        raise SecurityError(f"AEAD failure ({rc})")

    # -- frame by frame, for a demultiplexer that places each frame's plaintext --------

    def pending_need(self, data):
        """Bytes of ``data`` that complete the buffered partial frame (0: none
        buffered; all of it when even that does not complete it)."""
        cdef Py_buffer view
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            return self._pending_need(<const uint8_t *>view.buf, <size_t>view.len)
        finally:
            PyBuffer_Release(&view)

    def complete_pending(self, data):
        """Add ``data`` (at most ``pending_need`` bytes) to the buffered partial
        frame. When that completes it, return its body (ciphertext + tag, for
        ``open_frame``) and buffer nothing; else None. FrameError: the frame's
        length is shorter than the tag."""
        cdef size_t flen
        if self._error is not None:
            self._enter()  # raises the cipher's error
        pending = self._pending
        pending += memoryview(data).cast("B")
        if len(pending) < 2:
            return None
        flen = (<uint8_t>pending[0]) << 8 | <uint8_t>pending[1]
        if flen < FP_AEAD_TAG_SIZE:
            self._fail(FP_EFRAME)
        if <size_t>len(pending) < 2 + flen:
            return None
        body = bytes(pending[2:])
        pending.clear()
        return body

    def open_frame(self, body):
        """Open one frame's body (ciphertext + tag, the length prefix taken) into
        new bytes; only with no partial frame buffered (see ``pending_need``)."""
        cdef Py_buffer view
        PyObject_GetBuffer(body, &view, PyBUF_SIMPLE)
        try:
            self._enter()
            try:
                if view.len < FP_AEAD_TAG_SIZE:
                    self._fail(FP_EFRAME)
                out = PyBytes_FromStringAndSize(NULL, view.len - FP_AEAD_TAG_SIZE)
                self.open_frame_into(<const uint8_t *>view.buf, <size_t>view.len,
                                     <uint8_t *>PyBytes_AS_STRING(out))
                return out
            finally:
                self._busy = False
        finally:
            PyBuffer_Release(&view)

    cdef size_t _pending_need(self, const uint8_t *src, size_t n):
        """Bytes of ``src`` that complete the buffered partial frame (0: none
        buffered; n when even all of ``src`` does not complete it)."""
        cdef size_t p = len(self._pending), flen
        if p == 0:
            return 0
        if p == 1:
            if n < 1:
                return n
            flen = (<uint8_t>self._pending[0]) << 8 | src[0]
        else:
            flen = (<uint8_t>self._pending[0]) << 8 | <uint8_t>self._pending[1]
        return min(2 + flen - p, n)

    cdef object new_block(self, size_t n):
        """A pooled output block of ``n`` bytes (its ``length`` set by the caller)."""
        return _new_block(n)

    cdef int open_frame_into(self, const uint8_t *ct, size_t n, uint8_t *out) except -1:
        """Open one frame's body (ciphertext + tag, ``n`` bytes) into ``out``.

        The caller holds ``_enter`` and has no partial frame buffered. Failures
        raise the typed errors of ``open_frames`` and leave the cipher dead.
        """
        cdef int rc
        if n >= _NOGIL:
            with nogil:
                rc = fp_aead_open_frame(&self._a, ct, n, out)
        else:
            rc = fp_aead_open_frame(&self._a, ct, n, out)
        if rc:
            self._fail(rc)
        return 0

    cdef int open_begin(self, const uint8_t *ct, size_t n) except -1:
        """Start opening one frame's body (``n`` bytes: ciphertext + tag) in parts:
        ``open_part`` over consecutive ranges of its ciphertext, then ``open_end``.
        Nothing decrypted may be acted on before ``open_end`` returned. Same
        caller rules and errors as ``open_frame_into``."""
        cdef int rc = fp_aead_open_begin(&self._a, ct, n)
        if rc:
            self._fail(rc)
        return 0

    cdef int open_part(self, const uint8_t *ct, size_t k, uint8_t *out) except -1:
        cdef int rc
        if k >= _NOGIL:
            with nogil:
                rc = fp_aead_open_update(&self._a, ct, k, out)
        else:
            rc = fp_aead_open_update(&self._a, ct, k, out)
        if rc:
            self._fail(rc)
        return 0

    cdef int open_end(self) except -1:
        """Authenticate the frame ``open_begin`` started (DecryptError: it is forged)."""
        cdef int rc = fp_aead_open_end(&self._a)
        if rc:
            self._fail(rc)
        return 0

    def encrypt(self, plaintext):
        """Encrypt one message (no framing); returns ciphertext + tag."""
        cdef const uint8_t[::1] p = memoryview(plaintext).cast("B")
        cdef size_t n = p.shape[0]
        self._enter()
        try:
            out = PyBytes_FromStringAndSize(NULL, n + FP_AEAD_TAG_SIZE)
            rc = fp_aead_encrypt(&self._a, &p[0] if n else <const uint8_t *>b"", n,
                                 <uint8_t *>PyBytes_AS_STRING(out), n + FP_AEAD_TAG_SIZE)
            if rc:
                self._fail(rc)
            return out
        finally:
            self._busy = False

    def decrypt(self, ciphertext):
        """Decrypt one message (no framing); DecryptError kills the cipher."""
        cdef const uint8_t[::1] c = memoryview(ciphertext).cast("B")
        cdef size_t n = c.shape[0]
        self._enter()
        try:
            if n < FP_AEAD_TAG_SIZE:
                self._fail(FP_EAUTH)
            out = PyBytes_FromStringAndSize(NULL, n - FP_AEAD_TAG_SIZE)
            rc = fp_aead_decrypt(&self._a, &c[0], n, <uint8_t *>PyBytes_AS_STRING(out),
                                 n - FP_AEAD_TAG_SIZE)
            if rc:
                self._fail(rc)
            return out
        finally:
            self._busy = False

    def seal_frames(self, bufs):
        """Encrypt ``bufs`` (a buffer or list/tuple of buffers, one plaintext) into frames."""
        cdef Py_buffer stack_views[_STACK_IOV]
        cdef fp_iovec stack_iov[_STACK_IOV]
        cdef Py_buffer *views = stack_views
        cdef fp_iovec *iov = stack_iov
        cdef Py_ssize_t cnt, i, got = 0
        cdef size_t total = 0
        items = bufs if isinstance(bufs, (list, tuple)) else (bufs,)
        cnt = len(items)
        self._enter()
        try:
            if cnt > _STACK_IOV:
                views = <Py_buffer *>PyMem_Malloc(cnt * sizeof(Py_buffer))
                iov = <fp_iovec *>PyMem_Malloc(cnt * sizeof(fp_iovec))
                if views == NULL or iov == NULL:
                    raise MemoryError()
            for i in range(cnt):
                PyObject_GetBuffer(items[i], &views[i], PyBUF_SIMPLE)
                got += 1
                iov[i].base = <const uint8_t *>views[i].buf
                iov[i].len = <size_t>views[i].len
                total += iov[i].len
            if total == 0:
                return b""
            return self.seal_iov(iov, cnt, total)
        finally:
            for i in range(got):
                PyBuffer_Release(&views[i])
            if views != stack_views:
                PyMem_Free(views)
            if iov != stack_iov:
                PyMem_Free(iov)
            self._busy = False

    cdef object seal_iov(self, const fp_iovec *iov, size_t cnt, size_t total):
        """Seal ``iov`` (``total`` > 0 bytes, one plaintext) into a new FrameBlock.

        The caller holds ``_enter``. Failures raise ``seal_frames``' typed errors."""
        cdef size_t outlen = 0
        cdef size_t need = fp_aead_sealed_size_iov(iov, cnt)
        cdef int rc
        out = _new_block(need)
        cdef uint8_t *dst = (<FrameBlock>out).data
        if self._par_threads and total >= self._par_min:
            rc = self._seal_par(iov, cnt, dst, need, total)
        elif total >= _NOGIL:
            with nogil:
                rc = fp_aead_seal_frames(&self._a, iov, cnt, dst, need, &outlen)
        else:
            rc = fp_aead_seal_frames(&self._a, iov, cnt, dst, need, &outlen)
        if rc:
            self._fail(rc)
        return out

    cdef bytes seal_iov_bytes(self, const fp_iovec *iov, size_t cnt):
        """``seal_iov`` of a small plaintext into a new bytes object: cheaper to make,
        and to hand to the event loop, than a pooled block and a view of it.

        The caller holds ``_enter``."""
        cdef size_t outlen = 0
        cdef size_t need = fp_aead_sealed_size_iov(iov, cnt)
        cdef bytes out = PyBytes_FromStringAndSize(NULL, <Py_ssize_t>need)
        cdef int rc = fp_aead_seal_frames(&self._a, iov, cnt, <uint8_t *>PyBytes_AS_STRING(out),
                                          need, &outlen)
        if rc:
            self._fail(rc)
        return out

    def open_frames(self, data):
        """Decrypt every complete frame in (buffered +) ``data``; keep a partial one."""
        cdef Py_buffer view
        cdef const uint8_t *src
        cdef size_t n, pos = 0, consumed = 0, outlen = 0, opos = 0, flen, need, cap
        cdef int rc = 0
        cdef uint8_t *dst
        cdef bytearray pending
        self._enter()
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            src = <const uint8_t *>view.buf
            n = <size_t>view.len
            pending = self._pending
            cap = n + len(pending)  # plaintext is always shorter than its frames
            out = _new_block(cap)
            dst = (<FrameBlock>out).data
            if len(pending):
                # complete the pending frame first, taking only what it needs
                if len(pending) < 2:
                    need = min(2 - len(pending), n)
                    pending += (<const char *>src)[:need]
                    pos += need
                if len(pending) >= 2:
                    flen = (<uint8_t>pending[0]) << 8 | <uint8_t>pending[1]
                    if flen < FP_AEAD_TAG_SIZE:
                        self._fail(FP_EFRAME)
                    need = min(2 + flen - len(pending), n - pos)
                    if need:
                        pending += (<const char *>src + pos)[:need]
                    pos += need
                    if len(pending) == 2 + flen:
                        rc = fp_aead_open_frames(&self._a,
                                                 <const uint8_t *>PyByteArray_AS_STRING(pending),
                                                 2 + flen, &consumed, dst, cap, &outlen)
                        if rc:
                            self._fail(rc)
                        opos = outlen
                        pending.clear()
            if not len(pending) and pos < n:
                if self._open_threads and n - pos >= self._open_min:
                    rc = self.open_par(src + pos, n - pos, dst + opos, cap - opos, &consumed,
                                       &outlen)
                elif n - pos >= _NOGIL:
                    with nogil:
                        rc = fp_aead_open_frames(&self._a, src + pos, n - pos, &consumed,
                                                 dst + opos, cap - opos, &outlen)
                else:
                    rc = fp_aead_open_frames(&self._a, src + pos, n - pos, &consumed,
                                             dst + opos, cap - opos, &outlen)
                if rc:
                    self._fail(rc)
                opos += outlen
                pos += consumed
                if pos < n:
                    pending += (<const char *>src + pos)[:n - pos]
            (<FrameBlock>out).length = <Py_ssize_t>opos
            return out
        finally:
            PyBuffer_Release(&view)
            self._busy = False
