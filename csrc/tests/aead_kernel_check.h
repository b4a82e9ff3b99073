/* aead_kernel_check.h - one message through one of fastp2p's AEAD kernels
 * (fp_gcm.c, fp_chacha.c: the same streaming API) against OpenSSL's EVP, for
 * the C tests (csrc/tests/test_*.c: assert on it) and the fuzz harnesses
 * (csrc/fuzz/fuzz_*.c: abort on it).
 *
 * Define before including: K(f), the kernel's function f (#define K(f)
 * fp_gcm_##f: K(new), K(start), ...), and K_EVP, the EVP_CIPHER of the same
 * AEAD. Needs <openssl/evp.h>, <stdlib.h>, <string.h>.
 */
#ifndef FP_AEAD_KERNEL_CHECK_H
#define FP_AEAD_KERNEL_CHECK_H

/* Piece k of a message fed in pieces: seed 0 feeds it whole, others in
 * seed-chosen sizes of 1..300 bytes. */
static inline size_t kc_piece(unsigned seed, unsigned k, size_t left) {
    size_t p = seed ? 1 + ((size_t)seed * (k + 1) * 29 + (size_t)(seed >> 8) * k) % 300 : left;
    return p < left ? p : left;
}

/* 0 when every invariant holds, else the line of the first that does not:
 * sealing msg in pieces (pseed) gives EVP's ciphertext and tag; a clone sealing
 * in place agrees; opening in place, in other pieces, gives msg and verifies;
 * one flipped bit of the ciphertext or the tag (tseed picks it) is refused. */
static inline int kernel_check(const uint8_t key[32], const uint8_t iv[12], const uint8_t *msg, size_t n,
                               unsigned pseed, unsigned tseed) {
#define KC_CHECK(c) \
    do {            \
        if (!(c)) { \
            line = __LINE__; \
            goto out;        \
        }           \
    } while (0)
    int line = 0, l = 0;
    uint8_t rtag[16], tag[16];
    uint8_t *ref = malloc(n + 1), *ct = malloc(n + 1), *buf = malloc(n + 1);
    __typeof__(K(new)(key)) g = NULL, c = NULL; /* (not evaluated) */
    EVP_CIPHER_CTX *e = EVP_CIPHER_CTX_new();
    KC_CHECK(ref && ct && buf && e);
    KC_CHECK(EVP_EncryptInit_ex(e, K_EVP(), NULL, key, iv) == 1);
    if (n) KC_CHECK(EVP_EncryptUpdate(e, ref, &l, msg, (int)n) == 1 && (size_t)l == n);
    KC_CHECK(EVP_EncryptFinal_ex(e, ref + n, &l) == 1);
    KC_CHECK(EVP_CIPHER_CTX_ctrl(e, EVP_CTRL_AEAD_GET_TAG, 16, rtag) == 1);

    KC_CHECK((g = K(new)(key)) != NULL);
    K(start)(g, iv);
    unsigned k = 0;
    for (size_t pos = 0; pos < n; k++) {
        size_t p = kc_piece(pseed, k, n - pos);
        K(update)(g, msg + pos, ct + pos, p, 1);
        pos += p;
    }
    K(tag)(g, tag);
    KC_CHECK(memcmp(ct, ref, n) == 0 && memcmp(tag, rtag, 16) == 0);

    KC_CHECK((c = K(clone)(g)) != NULL);
    memcpy(buf, msg, n);
    K(start)(c, iv);
    K(update)(c, buf, buf, n, 1);
    K(tag)(c, tag);
    KC_CHECK(memcmp(buf, ref, n) == 0 && memcmp(tag, rtag, 16) == 0);

    K(start)(g, iv);
    k = 0;
    for (size_t pos = 0; pos < n; k++) {
        size_t p = kc_piece(pseed ^ 0x5a, k, n - pos);
        K(update)(g, ct + pos, ct + pos, p, 0);
        pos += p;
    }
    KC_CHECK(K(verify)(g, rtag) == 0 && memcmp(ct, msg, n) == 0);

    size_t at = ((size_t)tseed * 131) % (n + 16);
    if (at < n)
        ref[at] ^= (uint8_t)(1u << (tseed % 8));
    else
        rtag[at - n] ^= (uint8_t)(1u << (tseed % 8));
    K(start)(g, iv);
    K(update)(g, ref, buf, n, 0);
    KC_CHECK(K(verify)(g, rtag) == -1);
out:
    K(free)(c);
    K(free)(g);
    EVP_CIPHER_CTX_free(e);
    free(ref);
    free(ct);
    free(buf);
    return line;
#undef KC_CHECK
}

/* The C tests: kernel_check on `iters` random keys, IVs and messages, every
 * length below `every` first, then random lengths below `max`, odd ones fed
 * whole and even ones in random pieces. 0, or the failing line. */
static inline int kernel_check_random(size_t max, int iters, int every, unsigned seed) {
    uint8_t *pt = malloc(max + 1), key[32], iv[12];
    int line = pt ? 0 : __LINE__;
    srand(seed);
    for (int it = 0; it < iters && !line; it++) {
        for (int i = 0; i < 32; i++) key[i] = (uint8_t)rand();
        for (int i = 0; i < 12; i++) iv[i] = (uint8_t)rand();
        size_t n = it < every ? (size_t)it : (size_t)rand() % max;
        for (size_t i = 0; i < n; i++) pt[i] = (uint8_t)rand();
        unsigned pseed = (it & 1) ? 0 : (unsigned)rand();
        line = kernel_check(key, iv, pt, n, pseed, (unsigned)rand());
    }
    free(pt);
    return line;
}

/* The fuzz harnesses: input [0..32) key, [32..44) IV, [44] piece seed, [45]
 * tamper seed, the rest the message, repeated to about `reach` bytes (below
 * `max`). 0, or the failing line (the harness aborts). */
static inline int kernel_check_input(const uint8_t *data, size_t size, size_t reach, size_t max) {
    if (size < 46) return 0;
    const uint8_t *key = data, *iv = data + 32;
    unsigned pseed = data[44], tseed = data[45];
    data += 46;
    size -= 46;
    size_t n = size * (size_t)(1 + (size ? reach / (size + 1) : 0)) % max;
    uint8_t *msg = malloc(n + 1);
    if (!msg) return __LINE__;
    for (size_t i = 0; i < n; i++) msg[i] = data[i % size];
    int line = kernel_check(key, iv, msg, n, pseed, tseed);
    free(msg);
    return line;
}

#endif /* FP_AEAD_KERNEL_CHECK_H */
