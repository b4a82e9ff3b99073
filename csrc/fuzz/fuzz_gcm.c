/* libFuzzer harness: fastp2p's AES-256-GCM kernel (fp_gcm.c) against OpenSSL's EVP.
 *
 * Input: [0..32) key, [32..44) IV, [44] piece seed, [45] tamper position seed,
 * the rest the message (repeated up to ~4 KiB so the 16-block step is reached).
 * Invariants (csrc/tests/aead_kernel_check.h; abort on violation): sealing in input-chosen pieces gives EVP's
 * ciphertext and tag; opening in place, in other pieces, gives the message and
 * verifies; one flipped bit of the ciphertext or tag never verifies; nothing
 * reads or writes out of bounds (ASan). Without VAES/AVX-512 it checks that the
 * kernel declines (fp_gcm_new returns NULL).
 */
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "fp_gcm.h"

#define K(f) fp_gcm_##f
#define K_EVP EVP_aes_256_gcm
#include "../tests/aead_kernel_check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!fp_gcm_supported()) {
        if (size >= 32 && fp_gcm_new(data) != NULL) abort();
        return 0;
    }
    if (kernel_check_input(data, size, 4096, 9000) != 0) abort();
    return 0;
}
