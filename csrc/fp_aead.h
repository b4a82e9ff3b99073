/* fp_aead.h - Noise transport ciphers over OpenSSL EVP (no Python.h).
 *
 * Noise spec 'ChaChaPoly' (FP_AEAD_CHACHAPOLY, the libp2p default):
 * ChaCha20-Poly1305 (IETF); the 96-bit nonce is 4 zero bytes followed by the
 * 64-bit little-endian counter; empty associated data.
 * Noise spec 'AESGCM' (FP_AEAD_AESGCM, fastp2p-to-fastp2p only, see
 * fastp2p/proto/noise/handshake.py): AES-256-GCM; the 96-bit nonce is 4 zero
 * bytes followed by the 64-bit BIG-endian counter; 16-byte tag.
 * Nonce 2^64-1 is reserved and never used (FP_ENONCE).
 * libp2p noise spec: transport frames are a 2-byte big-endian length followed
 * by a noise message of at most 65535 bytes (ciphertext + 16-byte tag).
 *
 * Ownership contract:
 * - fp_aead is caller-allocated; fp_aead_init() creates one EVP_CIPHER_CTX (or
 *   fastp2p's AES-GCM kernel context), and for ChaChaPoly on AVX2 CPUs also the
 *   short-frame kernel's context, which it owns until fp_aead_free()
 *   (idempotent). Use one fp_aead per direction (one nonce counter); the
 *   context is reused for every frame, only the nonce (and the direction, so
 *   single-message tests may do both) is re-set per frame.
 *   Not thread-safe: one caller at a time (the GIL may be released).
 * - The key is copied into the contexts; the caller may wipe it afterwards
 *   (fp_aead_free wipes the kernels' copies).
 * - Input iovecs / buffers are borrowed for the duration of the call.
 * - Output buffers are owned by the caller; sizes are checked, never assumed.
 *   Input and output must not overlap.
 */
#ifndef FP_AEAD_H
#define FP_AEAD_H

#include <stdint.h>
#include <stddef.h>
#include "fp_common.h"

#define FP_AEAD_KEY_SIZE 32
#define FP_AEAD_TAG_SIZE 16
#define FP_AEAD_MAX_FRAME 65535
#define FP_AEAD_MAX_PLAINTEXT (FP_AEAD_MAX_FRAME - FP_AEAD_TAG_SIZE)
/* Plaintext bytes of the frames we seal (we accept up to FP_AEAD_MAX_PLAINTEXT).
 * 65408 = 511 * 128: OpenSSL 3's ChaCha20-Poly1305 runs its fast path only for
 * some message lengths (65408: 4.3 GB/s here, 65519: 3.2 GB/s, both ways); AES-GCM
 * does not care. Any frame size up to the maximum is valid Noise. */
#define FP_AEAD_SEAL_PLAINTEXT 65408
/* An iovec entry this long starts a new frame: its bytes are then whole frames
 * of their own (one EVP update each, the fast path), and a receiver can open
 * each one straight into the reader's buffer. Shorter entries (headers, small
 * messages) are packed together. */
#define FP_AEAD_ALIGN_MIN 16384
/* A run of shorter entries of at most this many bytes (one yamux or mplex
 * header) joins the large entry after it: a data frame's header and the start
 * of its payload share a Noise frame (one AEAD operation fewer per message),
 * and a receiver still opens the payload straight into the reader's buffer
 * (fastp2p/_native/frame.pyx: the header is opened first, on its own). */
#define FP_AEAD_JOIN_MAX 16
/* ... when that entry is at most this long (two frames). A longer one keeps its
 * header in a Noise frame of its own (18 bytes more on the wire), so that all its
 * frames are payload: a receiver opens runs of them on its pool straight into
 * the reader's buffer (frame.pyx _open_lent_run), where a header-led frame has to
 * be opened alone, in two parts, on the receiving thread. */
#define FP_AEAD_JOIN_ENTRY_MAX (2 * FP_AEAD_SEAL_PLAINTEXT)
#define FP_AEAD_LEN_SIZE 2
/* A frame of at most this much plaintext over several iovecs is gathered and
 * sealed with one cipher update (fp_aead_seal_from). */
#define FP_AEAD_GATHER_MAX 4096
#define FP_AEAD_MAX_NONCE UINT64_MAX

#define FP_AEAD_CHACHAPOLY 0
#define FP_AEAD_AESGCM 1

/* Which code runs a context's cipher: OpenSSL EVP; for AES-256-GCM on a CPU
 * with VAES and VPCLMULQDQ, fastp2p's own kernel (fp_gcm.h); for
 * ChaCha20-Poly1305 on a CPU with AVX2, fastp2p's kernel for frames of at most
 * FP_CHACHA_SMALL_MAX bytes and EVP for longer ones (fp_chacha.h). */
#define FP_AEAD_IMPL_EVP 0
#define FP_AEAD_IMPL_GCM 1
#define FP_AEAD_IMPL_CHACHA_SHORT 2

typedef struct {
    void *ctx;      /* EVP_CIPHER_CTX * or fp_gcm * (opaque: callers need no OpenSSL headers) */
    void *shortk;   /* fp_chacha * for short ChaChaPoly frames (FP_AEAD_IMPL_CHACHA_SHORT) */
    uint64_t nonce; /* next nonce to use */
    int encrypt;    /* initial direction (informational; each call sets its own) */
    int kind;       /* FP_AEAD_CHACHAPOLY or FP_AEAD_AESGCM (nonce byte order differs) */
    int impl;       /* FP_AEAD_IMPL_EVP, FP_AEAD_IMPL_GCM or FP_AEAD_IMPL_CHACHA_SHORT */
    int cur;        /* the frame in progress runs on: FP_AEAD_IMPL_EVP or a kernel's impl */
    uint8_t expect[16]; /* the tag of the frame being opened (kernels) */
} fp_aead;

typedef struct {
    const uint8_t *base;
    size_t len;
} fp_iovec;

/* ChaChaPoly; 0, FP_ENOMEM or FP_ECRYPTO. */
int fp_aead_init(fp_aead *a, const uint8_t key[FP_AEAD_KEY_SIZE], uint64_t nonce, int encrypt);
/* Either cipher (kind FP_AEAD_CHACHAPOLY / FP_AEAD_AESGCM; FP_EINVAL otherwise). */
int fp_aead_init_kind(fp_aead *a, int kind, const uint8_t key[FP_AEAD_KEY_SIZE], uint64_t nonce,
                      int encrypt);
void fp_aead_free(fp_aead *a);

/* Which implementation new AES-256-GCM contexts get: FP_AEAD_IMPL_GCM where
 * fp_gcm_supported() (the default, unless the environment variable
 * FASTP2P_AESGCM=evp), else FP_AEAD_IMPL_EVP. Setting FP_AEAD_IMPL_GCM on a
 * CPU without the instructions is FP_EINVAL. Process-wide, for tests and
 * benchmarks; contexts already made keep theirs. */
int fp_aead_aesgcm_impl(void);
int fp_aead_set_aesgcm_impl(int impl);

/* The same for ChaCha20-Poly1305: FP_AEAD_IMPL_CHACHA_SHORT where
 * fp_chacha_supported() (unless FASTP2P_CHACHA=evp), else FP_AEAD_IMPL_EVP. */
int fp_aead_chacha_impl(void);
int fp_aead_set_chacha_impl(int impl);

/* Framed size of n contiguous plaintext bytes: n + 18 * ceil(n / FP_AEAD_SEAL_PLAINTEXT). */
size_t fp_aead_sealed_size(size_t n);

/* The iovec's segments, each sealed as contiguous frames of its own: an entry
 * of FP_AEAD_ALIGN_MIN bytes or more is one segment, a run of shorter entries
 * another, except that a run of at most FP_AEAD_JOIN_MAX bytes joins the large
 * entry after it. Start with *pos = *skip = *len = 0 and call until it returns 0:
 * each 1 leaves the next segment's byte range of the concatenation in
 * [*skip, *skip + *len). */
int fp_aead_next_segment(const fp_iovec *iov, size_t iovcnt, size_t *pos, size_t *skip, size_t *len);

/* Framed size of the iovec: the sum of fp_aead_sealed_size over its segments. */
size_t fp_aead_sealed_size_iov(const fp_iovec *iov, size_t iovcnt);

/* Seals the concatenation of iov[0..iovcnt) into frames in out[0..cap), one
 * segment after the other (see fp_aead_next_segment). Writes exactly
 * fp_aead_sealed_size_iov() bytes to *outlen.
 * FP_ENOBUFS, FP_ENONCE (checked before anything is written), FP_ECRYPTO. */
int fp_aead_seal_frames(fp_aead *a, const fp_iovec *iov, size_t iovcnt, uint8_t *out, size_t cap,
                        size_t *outlen);

/* Seals bytes [skip, skip + len) of the iovec concatenation as contiguous
 * frames of FP_AEAD_SEAL_PLAINTEXT, the first with a->nonce: frames are
 * independent (each has its own nonce), so disjoint ranges of one segment that
 * start on frame boundaries may be sealed on several threads, one fp_aead each
 * (fp_aead_clone), with nonce = first nonce + frames before the range.
 * FP_EINVAL (range outside the data), then as fp_aead_seal_frames. */
int fp_aead_seal_range(fp_aead *a, const fp_iovec *iov, size_t iovcnt, size_t skip, size_t len,
                       uint8_t *out, size_t cap, size_t *outlen);

/* A second context with src's key, cipher, direction and nonce; free it with
 * fp_aead_free. 0, FP_EINVAL (src freed), FP_ENOMEM, FP_ECRYPTO. */
int fp_aead_clone(fp_aead *dst, const fp_aead *src);

/* Opens every complete frame in in[0..n) into out[0..cap) (cap >= n always
 * suffices). *consumed = bytes of whole frames used (a trailing partial frame
 * is left for the caller), *outlen = plaintext bytes written.
 * FP_EFRAME (length < 16), FP_EAUTH, FP_ENONCE, FP_ENOBUFS, FP_ECRYPTO. */
int fp_aead_open_frames(fp_aead *a, const uint8_t *in, size_t n, size_t *consumed, uint8_t *out,
                        size_t cap, size_t *outlen);

/* fp_aead_seal_frames on the caller's thread and up to nclones of fp_par's pool:
 * each segment is cut on frame boundaries into jobs of whole frames, each
 * sealed with its runner's context: a on the caller, clones[s - 1] on pool
 * thread s (contexts from fp_aead_clone of a; their nonces are set here). The
 * output, *outlen and a's nonce afterwards are exactly fp_aead_seal_frames'.
 * Errors as fp_aead_seal_frames. */
int fp_aead_seal_frames_par(fp_aead *a, fp_aead *clones, size_t nclones, const fp_iovec *iov,
                            size_t iovcnt, uint8_t *out, size_t cap, size_t *outlen,
                            size_t *parts);

/* fp_aead_open_frames likewise: the complete frames of in[0..n) are cut into
 * jobs of whole frames. The plaintext, *consumed and *outlen are
 * fp_aead_open_frames' exactly, a failure included: the frames before the first
 * failing one are opened and counted, nothing after it is (its bytes in out
 * must not be used). For both, *parts is the number of threads offered the
 * work, the caller's included (1: too little to cut, done serially). */
int fp_aead_open_frames_par(fp_aead *a, fp_aead *clones, size_t nclones, const uint8_t *in,
                            size_t n, size_t *consumed, uint8_t *out, size_t cap, size_t *outlen,
                            size_t *parts);

/* Opens one frame's body ct[0..n) (ciphertext + 16-byte tag, the length prefix
 * already taken) into out[0..n-16): the caller chooses where each frame's
 * plaintext lands (a reader's buffer). After FP_EAUTH out may hold
 * unauthenticated bytes the caller must not use. FP_EFRAME (n < 16), FP_EAUTH,
 * FP_ENONCE, FP_EINVAL (freed). */
int fp_aead_open_frame(fp_aead *a, const uint8_t *ct, size_t n, uint8_t *out);

/* One frame's body opened in parts, for a caller that decides where the rest
 * of the plaintext goes after reading its start: begin (nonce, tag; FP_EFRAME,
 * FP_ENONCE, FP_EINVAL), then updates over consecutive ciphertext ranges of
 * ct[0..n-16) in order, each into its own output, then end (FP_EAUTH: every
 * byte written is unauthenticated and must not be used). Nothing may be acted
 * on before end returns 0. */
int fp_aead_open_begin(fp_aead *a, const uint8_t *ct, size_t n);
int fp_aead_open_update(fp_aead *a, const uint8_t *ct, size_t k, uint8_t *out);
int fp_aead_open_end(fp_aead *a);

/* Single unframed message: out receives n + 16 bytes (encrypt) / n - 16 (decrypt). */
int fp_aead_encrypt(fp_aead *a, const uint8_t *in, size_t n, uint8_t *out, size_t cap);
int fp_aead_decrypt(fp_aead *a, const uint8_t *in, size_t n, uint8_t *out, size_t cap);

/* Noise spec 4.3 HKDF with two outputs over HMAC-SHA256 (the handshake's
 * MixKey and Split): temp = HMAC(ck, ikm); out1 = HMAC(temp, 0x01);
 * out2 = HMAC(temp, out1 || 0x02). out1/out2 receive 32 bytes each and may
 * not overlap the inputs. Any key length (a key over 64 bytes is hashed, as
 * HMAC says). Returns 0, FP_ENOMEM or FP_ECRYPTO. Thread-safe. */
#define FP_HKDF_HASHLEN 32
int fp_noise_hkdf2(const uint8_t *ck, size_t ck_len, const uint8_t *ikm, size_t ikm_len,
                   uint8_t out1[FP_HKDF_HASHLEN], uint8_t out2[FP_HKDF_HASHLEN]);

#endif /* FP_AEAD_H */
