/* fp_gcm.h - AES-256-GCM on VAES + VPCLMULQDQ (AVX-512), 96-bit IV, no AAD (no Python.h).
 *
 * Why a kernel of our own: the OpenSSL this project links (Debian 12's 3.0,
 * and the manylinux wheel's) seals AES-256-GCM at ~6.4 GB/s on an AVX-512
 * Xeon, 128 bits at a time, and spends ~2/3 of a 76-byte frame's seal on
 * EVP's per-call setup; 16 blocks per step with 512-bit AES and carry-less
 * multiply, and a per-message start of a few instructions, run about twice
 * as fast in bulk and several times faster for small frames. It is used only
 * where the CPU and the OS offer every instruction it needs
 * (fp_gcm_supported); elsewhere fp_aead.c keeps EVP. Its output is byte for
 * byte AES-256-GCM (NIST SP 800-38D); the tests compare it with OpenSSL's.
 *
 * Use: fp_gcm_new(key) once per key (and direction), then per message
 * fp_gcm_start(iv), any number of fp_gcm_update() calls over consecutive
 * pieces of the message (any lengths; in == out is allowed, other overlap is
 * not), and fp_gcm_tag() (sealing) or fp_gcm_verify() (opening; constant
 * time). fp_gcm_free() wipes the key schedule. One caller at a time.
 */
#ifndef FP_GCM_H
#define FP_GCM_H

#include <stddef.h>
#include <stdint.h>

typedef struct fp_gcm fp_gcm;

/* 1 where this CPU and OS run the kernel (AVX-512 F/BW/VL, VAES, VPCLMULQDQ,
 * AES-NI, PCLMULQDQ, and the OS saves the AVX-512 state), else 0. Cached. */
int fp_gcm_supported(void);

/* NULL when unsupported or out of memory. */
fp_gcm *fp_gcm_new(const uint8_t key[32]);
fp_gcm *fp_gcm_clone(const fp_gcm *g);
void fp_gcm_free(fp_gcm *g);

void fp_gcm_start(fp_gcm *g, const uint8_t iv[12]);
/* enc = 1: in is plaintext, out ciphertext; enc = 0: the reverse. */
void fp_gcm_update(fp_gcm *g, const uint8_t *in, uint8_t *out, size_t n, int enc);
void fp_gcm_tag(fp_gcm *g, uint8_t tag[16]);
/* 0 when the message's tag equals expect, else -1. */
int fp_gcm_verify(fp_gcm *g, const uint8_t expect[16]);

#endif /* FP_GCM_H */
