/* fp_xsalsa20.h - XSalsa20 stream cipher for libp2p private networks (no Python.h).
 *
 * XSalsa20 (Bernstein, "Extending the Salsa20 nonce", 2008): a 32-byte key
 * and a 24-byte nonce. HSalsa20 of the key and the first 16 nonce bytes gives
 * a subkey; the keystream is Salsa20/20 under that subkey with the last 8
 * nonce bytes and a 64-bit block counter starting at 0. libp2p pnet XORs every
 * byte of a connection (after the 24-byte nonce) with this keystream.
 *
 * Ownership contract:
 * - fp_xsalsa20 is caller-allocated, plain data (no heap): init, then any
 *   number of fp_xsalsa20_xor calls; fp_xsalsa20_wipe zeroes it.
 * - The stream position is kept: successive calls of any lengths continue the
 *   keystream exactly as one call over the concatenation would.
 * - src and dst may be the same buffer (in place) but must not otherwise overlap.
 * - Not thread-safe: one caller at a time (the GIL may be released around it).
 * - After 2^70 bytes the counter would wrap; fp_xsalsa20_xor refuses with
 *   FP_ENONCE instead (no connection gets there).
 */
#ifndef FP_XSALSA20_H
#define FP_XSALSA20_H

#include <stddef.h>
#include <stdint.h>

#include "fp_common.h"

#define FP_XSALSA20_KEY_SIZE 32
#define FP_XSALSA20_NONCE_SIZE 24
#define FP_SALSA20_BLOCK 64

typedef struct fp_xsalsa20 {
    uint32_t input[16];                /* Salsa20 input words; counter in 8, 9 */
    uint8_t block[FP_SALSA20_BLOCK];   /* keystream of the block before input's counter */
    uint32_t used;                     /* bytes of `block` already consumed (64: none left) */
    uint32_t exhausted;                /* the 64-bit block counter wrapped */
} fp_xsalsa20;

/* HSalsa20: 32-byte subkey from key[32] and in[16]. */
void fp_hsalsa20(uint8_t out[32], const uint8_t key[32], const uint8_t in[16]);

/* Salsa20/20 block function on a 16-word input (64 bytes of keystream). */
void fp_salsa20_block(uint8_t out[64], const uint32_t input[16]);

/* Set up the XSalsa20 stream for key[32], nonce[24] at position 0. */
void fp_xsalsa20_init(fp_xsalsa20 *s, const uint8_t key[32], const uint8_t nonce[24]);

/* dst[i] = src[i] ^ keystream, continuing the stream; returns 0 or FP_ENONCE. */
int fp_xsalsa20_xor(fp_xsalsa20 *s, uint8_t *dst, const uint8_t *src, size_t len);

/* Which bulk code runs: 1 asks for the AVX-512 one (x86-64 gcc builds, CPUs with
 * AVX-512F), 0 for the 8-lane one, -1 for the automatic choice (the default).
 * Returns whether AVX-512 is now used. For tests and benchmarks; not thread-safe. */
int fp_xsalsa20_use_avx512(int on);

/* Zero the state (key material). */
void fp_xsalsa20_wipe(fp_xsalsa20 *s);

#endif
