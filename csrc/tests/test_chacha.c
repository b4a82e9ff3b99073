/* Plain-assert unit tests for fp_chacha.c (built by ci/test_c.sh under ASan/UBSan).
 *
 * Known answer: RFC 8439 section 2.4.2 (ChaCha20 encryption from block 1, the
 * keystream an AEAD message uses). Then OpenSSL's EVP ChaCha20-Poly1305 as the
 * reference for 0..5000-byte messages (past several 8-block batches) fed in
 * random pieces, in place and not, and every tampered byte rejected; and
 * fp_aead's frames, kernel and EVP, byte for byte the same. All of it on the
 * AVX-512VL code (where present) and again on the AVX2 code. On a CPU without
 * AVX2 only the "unsupported" contract is checked (and said).
 */
#undef NDEBUG
#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "fp_aead.h"
#include "fp_chacha.h"

#include "hex.h"

static void test_known_answer(void) {
    uint8_t key[32], iv[12], ct[114], want[114];
    const char *pt = "Ladies and Gentlemen of the class of '99: If I could offer you only one tip "
                     "for the future, sunscreen would be it.";
    for (int i = 0; i < 32; i++) key[i] = (uint8_t)i;
    unhex("000000000000004a00000000", iv);
    size_t n = unhex("6e2e359a2568f98041ba0728dd0d6981e97e7aec1d4360c20a27afccfd9fae0b"
                     "f91b65c5524733ab8f593dabcd62b3571639d624e65152ab8f530c359f0861d8"
                     "07ca0dbf500d6a6156a38e088a22b65e52bc514d16ccf806818ce91ab7793736"
                     "5af90bbf74a35be6b40b8eedf2785e42874d", want);
    assert(n == strlen(pt));
    fp_chacha *c = fp_chacha_new(key);
    assert(c);
    fp_chacha_start(c, iv);
    fp_chacha_update(c, (const uint8_t *)pt, ct, n, 1);
    assert(memcmp(ct, want, n) == 0);
    fp_chacha_free(c);
}

#define K(f) fp_chacha_##f
#define K_EVP EVP_chacha20_poly1305
#include "aead_kernel_check.h"

static void test_against_openssl(void) {
    /* every length to 1100 (all batch and block tails), then random */
    assert(kernel_check_random(5000, 3000, 1100, 8439) == 0);
}

/* fp_aead on each implementation: the same frames (short and long), each
 * opens the other's; a tampered short frame fails. */
static void test_aead_impls_agree(void) {
    static uint8_t a[70000], wire[2][72000], plain[70000];
    uint8_t key[32];
    size_t outlen[2], consumed, got;
    for (int i = 0; i < 32; i++) key[i] = (uint8_t)(i * 5);
    for (size_t i = 0; i < sizeof a; i++) a[i] = (uint8_t)(i * 13);
    /* short frames (76 bytes, and 12 + 188 gathered) between long ones; then single
     * messages around FP_CHACHA_SMALL_MAX */
    fp_iovec iov[7] = {{a, 12}, {a + 12, 64}, {a + 76, 20000}, {a + 20076, 12}, {a + 20088, 188},
                       {a + 20276, 20000}, {a + 40276, 29724}};
    for (int impl = 0; impl < 2; impl++) {
        fp_aead tx;
        assert(fp_aead_set_chacha_impl(impl ? FP_AEAD_IMPL_CHACHA_SHORT : FP_AEAD_IMPL_EVP) == 0);
        assert(fp_aead_init_kind(&tx, FP_AEAD_CHACHAPOLY, key, 3, 1) == 0);
        assert(tx.impl == (impl ? FP_AEAD_IMPL_CHACHA_SHORT : FP_AEAD_IMPL_EVP));
        assert(fp_aead_seal_frames(&tx, iov, 7, wire[impl], sizeof wire[impl], &outlen[impl]) == 0);
        /* single messages around the cut-over, and a clone that continues the nonces */
        fp_aead cl;
        assert(fp_aead_clone(&cl, &tx) == 0);
        for (size_t n = FP_CHACHA_SMALL_MAX - 1; n <= FP_CHACHA_SMALL_MAX + 1; n++) {
            static uint8_t ct[2][FP_CHACHA_SMALL_MAX + 32];
            assert(fp_aead_encrypt(&tx, a, n, ct[0], sizeof ct[0]) == 0);
            assert(fp_aead_encrypt(&cl, a, n, ct[1], sizeof ct[1]) == 0);
            assert(memcmp(ct[0], ct[1], n + 16) == 0);
        }
        fp_aead_free(&cl);
        fp_aead_free(&tx);
    }
    assert(outlen[0] == outlen[1] && memcmp(wire[0], wire[1], outlen[0]) == 0);
    for (int impl = 0; impl < 2; impl++) {
        fp_aead rx;
        assert(fp_aead_set_chacha_impl(impl ? FP_AEAD_IMPL_CHACHA_SHORT : FP_AEAD_IMPL_EVP) == 0);
        assert(fp_aead_init_kind(&rx, FP_AEAD_CHACHAPOLY, key, 3, 0) == 0);
        assert(fp_aead_open_frames(&rx, wire[1 - impl], outlen[0], &consumed, plain, sizeof plain,
                                   &got) == 0);
        assert(consumed == outlen[0] && got == sizeof a && memcmp(plain, a, got) == 0);
        fp_aead_free(&rx);
        /* the first (short) frame with one bit flipped */
        assert(fp_aead_init_kind(&rx, FP_AEAD_CHACHAPOLY, key, 3, 0) == 0);
        wire[1 - impl][10] ^= 4;
        assert(fp_aead_open_frames(&rx, wire[1 - impl], outlen[0], &consumed, plain, sizeof plain,
                                   &got) == FP_EAUTH);
        wire[1 - impl][10] ^= 4;
        fp_aead_free(&rx);
        fp_aead_free(&rx); /* idempotent */
    }
}

int main(void) {
    if (!fp_chacha_supported()) {
        uint8_t key[32] = {0};
        assert(fp_chacha_new(key) == NULL);
        assert(fp_aead_set_chacha_impl(FP_AEAD_IMPL_CHACHA_SHORT) == FP_EINVAL);
        assert(fp_aead_chacha_impl() == FP_AEAD_IMPL_EVP);
        printf("test_chacha: this CPU lacks AVX2: only the fallback was checked\n");
        return 0;
    }
    for (int avx512 = 1; avx512 >= 0; avx512--) { /* both variants (where the CPU has both) */
        fp_chacha_allow_avx512(avx512);
        test_known_answer();
        test_against_openssl();
        test_aead_impls_agree();
    }
    fp_chacha_allow_avx512(1);
    printf("test_chacha: ok\n");
    return 0;
}
