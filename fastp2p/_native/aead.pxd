# Cross-module declarations for fastp2p._native.aead: frame.pyx's demultiplexers
# open Noise frames one by one, straight into readers' buffers when they can
# (NoiseCipher.open_frame_into).

from libc.stdint cimport uint8_t, uint64_t

from fastp2p._native.buffer cimport BufferPool, fp_block

cdef extern from "fp_aead.h" nogil:
    enum:
        FP_AEAD_KEY_SIZE
        FP_AEAD_TAG_SIZE
        FP_AEAD_MAX_FRAME
        FP_AEAD_MAX_PLAINTEXT
        FP_AEAD_SEAL_PLAINTEXT
        FP_AEAD_ALIGN_MIN
    enum:
        FP_EFRAME
        FP_EAUTH
        FP_ENONCE
        FP_ENOMEM
        FP_AEAD_CHACHAPOLY
        FP_AEAD_AESGCM
        FP_AEAD_IMPL_EVP
        FP_AEAD_IMPL_GCM
        FP_AEAD_IMPL_CHACHA_SHORT
    ctypedef struct fp_aead:
        void *ctx
        void *shortk
        uint64_t nonce
        int impl
    ctypedef struct fp_iovec:
        const uint8_t *base
        size_t len
    int fp_aead_init(fp_aead *a, const uint8_t *key, uint64_t nonce, int encrypt)
    int fp_aead_init_kind(fp_aead *a, int kind, const uint8_t *key, uint64_t nonce, int encrypt)
    void fp_aead_free(fp_aead *a)
    int fp_aead_aesgcm_impl()
    int fp_aead_set_aesgcm_impl(int impl)
    int fp_aead_chacha_impl()
    int fp_aead_set_chacha_impl(int impl)
    size_t fp_aead_sealed_size(size_t n)
    size_t fp_aead_sealed_size_iov(const fp_iovec *iov, size_t iovcnt)
    int fp_aead_next_segment(const fp_iovec *iov, size_t iovcnt, size_t *pos, size_t *skip,
                             size_t *len)
    int fp_aead_seal_frames(fp_aead *a, const fp_iovec *iov, size_t iovcnt, uint8_t *out,
                            size_t cap, size_t *outlen)
    int fp_aead_seal_range(fp_aead *a, const fp_iovec *iov, size_t iovcnt, size_t skip,
                           size_t len, uint8_t *out, size_t cap, size_t *outlen)
    int fp_aead_clone(fp_aead *dst, const fp_aead *src)
    int fp_aead_seal_frames_par(fp_aead *a, fp_aead *clones, size_t nclones, const fp_iovec *iov,
                                size_t iovcnt, uint8_t *out, size_t cap, size_t *outlen,
                                size_t *parts)
    int fp_aead_open_frames_par(fp_aead *a, fp_aead *clones, size_t nclones, const uint8_t *inp,
                                size_t n, size_t *consumed, uint8_t *out, size_t cap,
                                size_t *outlen, size_t *parts)
    int fp_aead_open_frames(fp_aead *a, const uint8_t *inp, size_t n, size_t *consumed,
                            uint8_t *out, size_t cap, size_t *outlen)
    int fp_aead_encrypt(fp_aead *a, const uint8_t *inp, size_t n, uint8_t *out, size_t cap)
    int fp_aead_decrypt(fp_aead *a, const uint8_t *inp, size_t n, uint8_t *out, size_t cap)
    int fp_aead_open_frame(fp_aead *a, const uint8_t *ct, size_t n, uint8_t *out)
    int fp_aead_open_begin(fp_aead *a, const uint8_t *ct, size_t n)
    int fp_aead_open_update(fp_aead *a, const uint8_t *ct, size_t k, uint8_t *out)
    int fp_aead_open_end(fp_aead *a)
    enum:
        FP_HKDF_HASHLEN
    int fp_noise_hkdf2(const uint8_t *ck, size_t ck_len, const uint8_t *ikm, size_t ikm_len,
                       uint8_t *out1, uint8_t *out2)


cdef extern from "fp_par.h" nogil:
    enum:
        FP_PAR_MAX
    unsigned fp_par_started()
    void fp_par_alert()


cdef class FrameBlock:
    cdef uint8_t *data
    cdef Py_ssize_t length
    cdef fp_block blk
    cdef BufferPool pool
    cdef int exports


cdef class NoiseCipher:
    cdef fp_aead _a
    cdef bytearray _pending
    cdef object _error
    cdef bint _busy
    cdef readonly str cipher
    # parallel sealing (a sending cipher) or opening (a receiving one): contexts
    # for the pool threads (csrc/fp_par.c), and when to use them
    cdef fp_aead *_clones
    cdef int _nclones
    cdef int _par_threads
    cdef size_t _par_min
    cdef int _open_threads
    cdef size_t _open_min
    cdef bint _open_copy  # runs that are not a lent reader's payload too (see parallel_open)
    cdef readonly unsigned long long parallel_bytes
    # runs offered to the pool by open_par (whoever ran them): a read that made
    # one is followed by fp_par_alert before the next (frame.pyx ReadPump)
    cdef unsigned long long _open_batches

    cdef void _free_clones(self)
    cdef int _ensure_clones(self, int k) except -1
    cdef int _seal_par(self, const fp_iovec *iov, size_t cnt, uint8_t *dst, size_t need,
                       size_t total) except? -999
    cdef void alert_pool(self, size_t n) noexcept
    cdef int open_par(self, const uint8_t *src, size_t n, uint8_t *dst, size_t cap,
                      size_t *consumed, size_t *outlen) except? -999
    cdef int _enter(self) except -1
    cdef object _fail(self, int rc)
    # frame by frame (see aead.pyx)
    cdef size_t _pending_need(self, const uint8_t *src, size_t n)
    cdef object new_block(self, size_t n)
    cdef object seal_iov(self, const fp_iovec *iov, size_t cnt, size_t total)
    cdef bytes seal_iov_bytes(self, const fp_iovec *iov, size_t cnt)
    cdef int open_frame_into(self, const uint8_t *ct, size_t n, uint8_t *out) except -1
    cdef int open_begin(self, const uint8_t *ct, size_t n) except -1
    cdef int open_part(self, const uint8_t *ct, size_t k, uint8_t *out) except -1
    cdef int open_end(self) except -1
