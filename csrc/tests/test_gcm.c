/* Plain-assert unit tests for fp_gcm.c (built by ci/test_c.sh under ASan/UBSan).
 *
 * Known answers: McGrew and Viega, "The Galois/Counter Mode of Operation
 * (GCM)", test cases 13-15 (AES-256, 96-bit IV, no AAD). Then OpenSSL's EVP
 * AES-256-GCM as the reference for 0..70000-byte messages fed in random
 * pieces, in place and not, and tampered bytes rejected (csrc/tests/aead_kernel_check.h,
 * shared with the ChaCha20-Poly1305 kernel's test and both fuzz harnesses). On a CPU without
 * VAES/VPCLMULQDQ/AVX-512 only the "unsupported" contract is checked (and said).
 */
#undef NDEBUG
#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "fp_aead.h"
#include "fp_gcm.h"

#include "hex.h"

static void seal(const uint8_t key[32], const uint8_t iv[12], const uint8_t *in, size_t n,
                 uint8_t *out, uint8_t tag[16], size_t piece) {
    fp_gcm *g = fp_gcm_new(key);
    assert(g);
    fp_gcm_start(g, iv);
    for (size_t pos = 0; pos < n;) {
        size_t k = piece ? piece : n;
        if (k > n - pos) k = n - pos;
        fp_gcm_update(g, in + pos, out + pos, k, 1);
        pos += k;
    }
    fp_gcm_tag(g, tag);
    fp_gcm_free(g);
}

static void test_known_answers(void) {
    static const struct {
        const char *key, *iv, *pt, *ct, *tag;
    } v[] = {
        {"0000000000000000000000000000000000000000000000000000000000000000",
         "000000000000000000000000", "", "", "530f8afbc74536b9a963b4f1c4cb738b"},
        {"0000000000000000000000000000000000000000000000000000000000000000",
         "000000000000000000000000", "00000000000000000000000000000000",
         "cea7403d4d606b6e074ec5d3baf39d18", "d0d1c8a799996bf0265b98b5d48ab919"},
        {"feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308",
         "cafebabefacedbaddecaf888",
         "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72"
         "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b391aafd255",
         "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa"
         "8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662898015ad",
         "b094dac5d93471bdec1a502270e3cc6c"},
    };
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        uint8_t key[32], iv[12], pt[64], want[64], wtag[16], ct[64], tag[16];
        unhex(v[i].key, key);
        unhex(v[i].iv, iv);
        size_t n = unhex(v[i].pt, pt);
        unhex(v[i].ct, want);
        unhex(v[i].tag, wtag);
        for (size_t piece = 0; piece <= 17; piece += 1) {
            seal(key, iv, pt, n, ct, tag, piece);
            assert(memcmp(ct, want, n) == 0 && memcmp(tag, wtag, 16) == 0);
        }
    }
}

#define K(f) fp_gcm_##f
#define K_EVP EVP_aes_256_gcm
#include "aead_kernel_check.h"

static void test_against_openssl(void) {
    /* every length to 600 (all tail shapes of the 16-block step), then random, some long */
    assert(kernel_check_random(70000, 3000, 600, 12345) == 0);
}

/* fp_aead on each implementation: the same frames, each opens the other's. */
static void test_aead_impls_agree(void) {
    uint8_t key[32], a[70000], wire[2][71000], plain[70000];
    size_t outlen[2], consumed, got;
    for (int i = 0; i < 32; i++) key[i] = (uint8_t)(i * 7);
    for (size_t i = 0; i < sizeof a; i++) a[i] = (uint8_t)(i * 31);
    fp_iovec iov[3] = {{a, 12}, {a + 12, 65000}, {a + 65012, 4988}};
    for (int impl = 0; impl < 2; impl++) {
        fp_aead tx;
        assert(fp_aead_set_aesgcm_impl(impl ? FP_AEAD_IMPL_GCM : FP_AEAD_IMPL_EVP) == 0);
        assert(fp_aead_init_kind(&tx, FP_AEAD_AESGCM, key, 7, 1) == 0);
        assert(tx.impl == (impl ? FP_AEAD_IMPL_GCM : FP_AEAD_IMPL_EVP));
        assert(fp_aead_seal_frames(&tx, iov, 3, wire[impl], sizeof wire[impl], &outlen[impl]) == 0);
        fp_aead_free(&tx);
    }
    assert(outlen[0] == outlen[1] && memcmp(wire[0], wire[1], outlen[0]) == 0);
    for (int impl = 0; impl < 2; impl++) {
        fp_aead rx;
        assert(fp_aead_set_aesgcm_impl(impl ? FP_AEAD_IMPL_GCM : FP_AEAD_IMPL_EVP) == 0);
        assert(fp_aead_init_kind(&rx, FP_AEAD_AESGCM, key, 7, 0) == 0);
        assert(fp_aead_open_frames(&rx, wire[1 - impl], outlen[0], &consumed, plain, sizeof plain,
                                   &got) == 0);
        assert(consumed == outlen[0] && got == sizeof a && memcmp(plain, a, got) == 0);
        fp_aead_free(&rx);
        fp_aead_free(&rx); /* idempotent */
    }
}

int main(void) {
    if (!fp_gcm_supported()) {
        uint8_t key[32] = {0};
        assert(fp_gcm_new(key) == NULL);
        assert(fp_aead_set_aesgcm_impl(FP_AEAD_IMPL_GCM) == FP_EINVAL);
        assert(fp_aead_aesgcm_impl() == FP_AEAD_IMPL_EVP);
        printf("test_gcm: this CPU lacks VAES/VPCLMULQDQ/AVX-512: only the fallback was checked\n");
        return 0;
    }
    test_known_answers();
    test_against_openssl();
    test_aead_impls_agree();
    printf("test_gcm: ok\n");
    return 0;
}
