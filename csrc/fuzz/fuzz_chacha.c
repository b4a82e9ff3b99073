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

#define FP_FUZZ_CHECK(c) \
    do {                 \
        if (!(c)) abort(); \
    } while (0)

static size_t piece(uint8_t seed, unsigned k, size_t left) {
    size_t p = seed ? 1 + ((size_t)seed * (k + 1) * 29) % 300 : left;
    return p < left ? p : left;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 46) return 0;
    const uint8_t *key = data, *iv = data + 32;
    uint8_t pseed = data[44], tseed = data[45];
    data += 46;
    size -= 46;
    if (!fp_chacha_supported()) {
        FP_FUZZ_CHECK(fp_chacha_new(key) == NULL);
        return 0;
    }
    size_t n = size * (size_t)(1 + (size ? 2048 / (size + 1) : 0)) % 2300;
    uint8_t *msg = malloc(n + 1), *ref = malloc(n + 1), *ct = malloc(n + 1);
    uint8_t rtag[16], tag[16];
    FP_FUZZ_CHECK(msg && ref && ct);
    for (size_t i = 0; i < n; i++) msg[i] = data[i % size];

    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    int l = 0;
    FP_FUZZ_CHECK(c && EVP_EncryptInit_ex(c, EVP_chacha20_poly1305(), NULL, key, iv) == 1);
    if (n) FP_FUZZ_CHECK(EVP_EncryptUpdate(c, ref, &l, msg, (int)n) == 1 && (size_t)l == n);
    FP_FUZZ_CHECK(EVP_EncryptFinal_ex(c, ref + n, &l) == 1);
    FP_FUZZ_CHECK(EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_AEAD_GET_TAG, 16, rtag) == 1);
    EVP_CIPHER_CTX_free(c);

    fp_chacha_allow_avx512(tseed & 1); /* both variants, where the CPU has AVX-512VL */
    fp_chacha *g = fp_chacha_new(key);
    FP_FUZZ_CHECK(g);
    fp_chacha_start(g, iv);
    unsigned k = 0;
    for (size_t pos = 0; pos < n; k++) {
        size_t p = piece(pseed, k, n - pos);
        fp_chacha_update(g, msg + pos, ct + pos, p, 1);
        pos += p;
    }
    fp_chacha_tag(g, tag);
    FP_FUZZ_CHECK(memcmp(ct, ref, n) == 0 && memcmp(tag, rtag, 16) == 0);

    fp_chacha_start(g, iv);
    k = 0;
    for (size_t pos = 0; pos < n; k++) {
        size_t p = piece((uint8_t)(pseed ^ 0x5a), k, n - pos);
        fp_chacha_update(g, ct + pos, ct + pos, p, 0);
        pos += p;
    }
    FP_FUZZ_CHECK(fp_chacha_verify(g, rtag) == 0 && memcmp(ct, msg, n) == 0);

    size_t at = ((size_t)tseed * 131) % (n + 16);
    if (at < n)
        ref[at] ^= (uint8_t)(1u << (tseed % 8));
    else
        rtag[at - n] ^= (uint8_t)(1u << (tseed % 8));
    fp_chacha_start(g, iv);
    fp_chacha_update(g, ref, ct, n, 0);
    FP_FUZZ_CHECK(fp_chacha_verify(g, rtag) == -1);

    fp_chacha_free(g);
    free(msg);
    free(ref);
    free(ct);
    return 0;
}
