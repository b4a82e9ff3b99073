/* fp_chacha.h - ChaCha20-Poly1305 (RFC 8439), 96-bit nonce, no AAD, for short
 * messages (no Python.h).
 *
 * Why a kernel of our own: ChaChaPoly is the cipher every libp2p peer speaks,
 * and most of its frames are short (a round trip's 64 bytes, window updates,
 * RPCs). OpenSSL 3.0's EVP spends ~550 ns on a 76-byte frame on an AVX-512
 * EPYC: per-call setup, and two ChaCha20 calls whose latency chains run one
 * after the other (the Poly1305 key block, then the data). Here the key block
 * and the first seven data blocks come from one 8-block AVX2 batch started with
 * the message, and Poly1305 is a few scalar multiplies per 16 bytes. For long
 * messages OpenSSL's AVX-512 code is faster, so fp_aead.c uses this kernel only
 * for frames of at most FP_CHACHA_SMALL_MAX bytes, and only where the CPU and
 * OS run AVX2 (fp_chacha_supported; AVX-512VL's rotate where present). Output is byte for byte RFC 8439; the tests
 * compare it with the RFC's vectors and with OpenSSL.
 *
 * Use: fp_chacha_new(key) once per key (and direction), then per message
 * fp_chacha_start(iv), any number of fp_chacha_update() calls over consecutive
 * pieces (any lengths; in == out is allowed, other overlap is not), and
 * fp_chacha_tag() (sealing) or fp_chacha_verify() (opening; constant time).
 * fp_chacha_free() wipes the key and keystream. One caller at a time.
 */
#ifndef FP_CHACHA_H
#define FP_CHACHA_H

#include <stddef.h>
#include <stdint.h>

/* Frames of at most this many plaintext bytes go to the kernel (fp_aead.c):
 * those whose keystream comes from the message's first 8-block batch (block 0
 * is the Poly1305 key). Sealing on an AVX-512 EPYC (Zen 4), against OpenSSL
 * 3.0's EVP: 60 bytes x2.5, 200 x1.9, 256-384 x1.2-1.3, 448 x1.07, 512 x0.86
 * (a second batch), 768 x0.6; in bulk EVP's AVX-512 code is 3-4x faster. */
#define FP_CHACHA_SMALL_MAX 448

typedef struct fp_chacha fp_chacha;

/* 1 where this CPU and OS run the kernel (AVX2, and the OS saves the AVX
 * state), else 0. Cached. */
int fp_chacha_supported(void);

/* For tests: 0 keeps contexts made from now on on the AVX2 code even where
 * AVX-512VL is present (1, the default, lets them use it). */
void fp_chacha_allow_avx512(int allow);

/* NULL when unsupported or out of memory. */
fp_chacha *fp_chacha_new(const uint8_t key[32]);
fp_chacha *fp_chacha_clone(const fp_chacha *c);
void fp_chacha_free(fp_chacha *c);

void fp_chacha_start(fp_chacha *c, const uint8_t iv[12]);
/* enc = 1: in is plaintext, out ciphertext; enc = 0: the reverse. */
void fp_chacha_update(fp_chacha *c, const uint8_t *in, uint8_t *out, size_t n, int enc);
void fp_chacha_tag(fp_chacha *c, uint8_t tag[16]);
/* 0 when the message's tag equals expect, else -1. */
int fp_chacha_verify(fp_chacha *c, const uint8_t expect[16]);

#endif /* FP_CHACHA_H */
