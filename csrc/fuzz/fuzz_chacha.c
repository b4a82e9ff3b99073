/* libFuzzer harness: fastp2p's ChaCha20-Poly1305 kernel (fp_chacha.c) against
 * OpenSSL's EVP.
 *
 * Input: [0..32) key, [32..44) IV, [44] piece seed, [45] tamper position seed,
 * the rest the message (repeated, up to ~2 KiB, so several 8-block batches are
 * reached; fp_aead gives the kernel at most FP_CHACHA_SMALL_MAX bytes, but the
 * kernel itself takes any length). Invariants (abort on violation): sealing in
 * input-chosen pieces gives EVP's ciphertext and tag; opening in place, in other
 * pieces, gives the message and verifies; one flipped bit of the ciphertext or
 * tag never verifies; nothing reads or writes out of bounds (ASan); on the
 * AVX-512VL code and the AVX2 code by turns. Without AVX2
 * it checks that the kernel declines (fp_chacha_new returns NULL).
 */
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "fp_chacha.h"

#define K(f) fp_chacha_##f
#define K_EVP EVP_chacha20_poly1305
#include "../tests/aead_kernel_check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!fp_chacha_supported()) {
        if (size >= 32 && fp_chacha_new(data) != NULL) abort();
        return 0;
    }
    if (size > 45) fp_chacha_allow_avx512(data[45] & 1); /* both variants, where the CPU has AVX-512VL */
    if (kernel_check_input(data, size, 2048, 2300) != 0) abort();
    return 0;
}
