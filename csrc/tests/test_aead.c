/* Plain-assert unit tests for fp_aead.c and fp_pool.c (built by ci/test_c.sh). */
#undef NDEBUG
#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fp_aead.h"
#include "fp_pool.h"

static uint8_t key[32];

static void test_roundtrip(size_t n) {
    fp_aead tx, rx;
    assert(fp_aead_init(&tx, key, 0, 1) == 0);
    assert(fp_aead_init(&rx, key, 0, 0) == 0);
    uint8_t *pt = malloc(n + 1), *out = malloc(n + 1);
    for (size_t i = 0; i < n; i++) pt[i] = (uint8_t)(i * 7);
    /* split the plaintext into 3 iovecs at odd places */
    fp_iovec iov[3] = {{pt, n / 3}, {pt + n / 3, n / 2 - n / 3}, {pt + n / 2, n - n / 2}};
    /* segments: entries of FP_AEAD_ALIGN_MIN or more alone, shorter runs together */
    size_t sz = 0, frames = 0, run = 0;
    for (int i = 0; i <= 3; i++) {
        size_t len = i < 3 ? iov[i].len : 0;
        if (i == 3 || (len >= FP_AEAD_ALIGN_MIN && run)) {
            sz += fp_aead_sealed_size(run);
            frames += (run + FP_AEAD_SEAL_PLAINTEXT - 1) / FP_AEAD_SEAL_PLAINTEXT;
            run = 0;
        }
        if (len >= FP_AEAD_ALIGN_MIN) {
            sz += fp_aead_sealed_size(len);
            frames += (len + FP_AEAD_SEAL_PLAINTEXT - 1) / FP_AEAD_SEAL_PLAINTEXT;
        } else {
            run += len;
        }
    }
    assert(sz == fp_aead_sealed_size_iov(iov, 3));
    uint8_t *ct = malloc(sz + 1);
    size_t outlen = 0, consumed = 0, ptlen = 0;
    assert(fp_aead_seal_frames(&tx, iov, 3, ct, sz, &outlen) == 0 && outlen == sz);
    assert(tx.nonce == frames);
    /* a partial trailing frame is left unconsumed */
    if (sz) {
        assert(fp_aead_open_frames(&rx, ct, sz - 1, &consumed, out, n + 1, &ptlen) == 0);
        assert(consumed < sz);
        size_t c2 = 0, p2 = 0;
        assert(fp_aead_open_frames(&rx, ct + consumed, sz - consumed, &c2, out + ptlen,
                                   n + 1 - ptlen, &p2) == 0);
        assert(consumed + c2 == sz && ptlen + p2 == n);
        assert(memcmp(out, pt, n) == 0);
    }
    /* too small output is refused before anything is written */
    if (sz) assert(fp_aead_seal_frames(&tx, iov, 3, ct, sz - 1, &outlen) == FP_ENOBUFS);
    fp_aead_free(&tx);
    fp_aead_free(&rx);
    fp_aead_free(&rx); /* idempotent */
    free(pt);
    free(out);
    free(ct);
}

static void test_errors(void) {
    fp_aead tx, rx;
    uint8_t ct[64], out[64];
    size_t outlen, consumed;
    fp_iovec iov = {(const uint8_t *)"hello", 5};
    assert(fp_aead_init(&tx, key, 0, 1) == 0);
    assert(fp_aead_init(&rx, key, 0, 0) == 0);
    assert(fp_aead_seal_frames(&tx, &iov, 1, ct, sizeof ct, &outlen) == 0 && outlen == 23);
    ct[5] ^= 1;
    assert(fp_aead_open_frames(&rx, ct, outlen, &consumed, out, sizeof out, &outlen) == FP_EAUTH);
    const uint8_t shortf[] = {0, 15};
    assert(fp_aead_open_frames(&rx, shortf, 2, &consumed, out, sizeof out, &outlen) == FP_EFRAME);
    /* nonce exhaustion */
    tx.nonce = FP_AEAD_MAX_NONCE - 1;
    assert(fp_aead_encrypt(&tx, (const uint8_t *)"x", 1, ct, sizeof ct) == 0);
    assert(fp_aead_encrypt(&tx, (const uint8_t *)"x", 1, ct, sizeof ct) == FP_ENONCE);
    assert(fp_aead_seal_frames(&tx, &iov, 1, ct, sizeof ct, &outlen) == FP_ENONCE);
    /* single message encrypt/decrypt, one ctx doing both directions */
    fp_aead both;
    assert(fp_aead_init(&both, key, 9, 1) == 0);
    assert(fp_aead_encrypt(&both, (const uint8_t *)"abc", 3, ct, sizeof ct) == 0);
    both.nonce = 9;
    assert(fp_aead_decrypt(&both, ct, 19, out, sizeof out) == 0 && memcmp(out, "abc", 3) == 0);
    assert(fp_aead_decrypt(&both, ct, 3, out, sizeof out) == FP_EAUTH);
    fp_aead_free(&both);
    fp_aead_free(&tx);
    fp_aead_free(&rx);
}

static void test_pool(void) {
    size_t classes[] = {4096, 65536, 1 << 20};
    fp_pool *p;
    fp_pool_stats st;
    fp_block a, b, c;
    assert(fp_pool_create(&p, classes, 3, 1) == 0);
    assert(fp_pool_acquire(p, 10, &a) == 0 && a.cap == 4096 && a.cls == 0);
    assert(((uintptr_t)a.ptr % fp_pool_page_size()) == 0);
    memset(a.ptr, 1, a.cap);
    assert(fp_pool_acquire(p, 5 << 20, &b) == 0 && b.cap == (5u << 20) && b.cls == -1);
    memset(b.ptr, 2, b.cap);
    assert(fp_pool_acquire(p, 1 << 20, &c) == 0 && c.cls == 2);
    void *aptr = a.ptr;
    fp_pool_release(p, &a);
    assert(a.ptr == NULL);
    fp_pool_release(p, &b);
    fp_pool_release(p, &c);
    fp_pool_get_stats(p, &st);
    assert(st.in_use == 0 && st.cached == 2 && st.allocated == 2);
    assert(fp_pool_acquire(p, 100, &a) == 0 && a.ptr == aptr);
    fp_pool_trim(p);
    fp_pool_release(p, &a);
    fp_pool_get_stats(p, &st);
    assert(st.allocated == 0 && st.cached == 0);
    fp_pool_destroy(p);
    size_t badc[] = {10, 5};
    assert(fp_pool_create(&p, badc, 2, 1) == FP_EINVAL);
}

/* AESGCM: known answer (key 00..1f, nonce 5 = 4 zero bytes + big-endian 5, "hello"),
 * computed with an independent AES-GCM (pyca/cryptography); then a framed round trip. */
static void test_aesgcm(void) {
    static const uint8_t want[21] = {0xf0, 0xc4, 0xae, 0x0e, 0xac, 0x92, 0x6e, 0x35, 0x21, 0x34, 0x18,
                                     0x86, 0x55, 0x08, 0x68, 0x1f, 0x47, 0xc2, 0x50, 0x92, 0x86};
    fp_aead tx, rx;
    uint8_t ct[21], pt[5];
    assert(fp_aead_init_kind(&tx, FP_AEAD_AESGCM, key, 5, 1) == 0);
    assert(fp_aead_init_kind(&rx, FP_AEAD_AESGCM, key, 5, 0) == 0);
    assert(fp_aead_encrypt(&tx, (const uint8_t *)"hello", 5, ct, sizeof ct) == 0);
    assert(memcmp(ct, want, sizeof want) == 0);
    assert(fp_aead_decrypt(&rx, ct, sizeof ct, pt, sizeof pt) == 0 && memcmp(pt, "hello", 5) == 0);
    ct[3] ^= 1;
    assert(fp_aead_decrypt(&rx, ct, sizeof ct, pt, sizeof pt) == FP_EAUTH);
    fp_aead_free(&tx);
    fp_aead_free(&rx);
    assert(fp_aead_init_kind(&tx, 7, key, 0, 1) == FP_EINVAL && tx.ctx == NULL);
    size_t n = 3 * FP_AEAD_SEAL_PLAINTEXT + 5, sz = fp_aead_sealed_size(n), outlen = 0, consumed = 0,
           ptlen = 0;
    uint8_t *buf = calloc(1, n), *sealed = malloc(sz), *back = malloc(n);
    fp_iovec iov = {buf, n};
    assert(fp_aead_init_kind(&tx, FP_AEAD_AESGCM, key, 0, 1) == 0);
    assert(fp_aead_init_kind(&rx, FP_AEAD_AESGCM, key, 0, 0) == 0);
    assert(fp_aead_seal_frames(&tx, &iov, 1, sealed, sz, &outlen) == 0 && outlen == sz);
    assert(fp_aead_open_frames(&rx, sealed, sz, &consumed, back, n, &ptlen) == 0);
    assert(consumed == sz && ptlen == n && memcmp(back, buf, n) == 0);
    fp_aead_free(&tx);
    fp_aead_free(&rx);
    free(buf);
    free(sealed);
    free(back);
}

/* Disjoint frame ranges sealed with clones (as the parallel sealer does) are
 * byte-identical to one sequential seal. */
static void test_seal_range(int kind) {
    size_t n = 5 * FP_AEAD_SEAL_PLAINTEXT + 123;
    uint8_t *pt = malloc(n);
    for (size_t i = 0; i < n; i++) pt[i] = (uint8_t)(i * 13 + 1);
    fp_iovec iov[3] = {{pt, 1000}, {pt + 1000, 2 * FP_AEAD_SEAL_PLAINTEXT}, {pt + 1000 + 2 * FP_AEAD_SEAL_PLAINTEXT, n - 1000 - 2 * FP_AEAD_SEAL_PLAINTEXT}};
    size_t sz = fp_aead_sealed_size(n), outlen = 0;
    uint8_t *one = malloc(sz), *par = malloc(sz);
    fp_aead a, b, c;
    assert(fp_aead_init_kind(&a, kind, key, 7, 1) == 0);
    /* the whole range as contiguous frames (as one segment of a seal_frames) */
    assert(fp_aead_seal_range(&a, iov, 3, 0, n, one, sz, &outlen) == 0 && outlen == sz);
    assert(a.nonce == 7 + 6);
    fp_aead_free(&a);
    assert(fp_aead_init_kind(&a, kind, key, 7, 1) == 0);
    assert(fp_aead_clone(&b, &a) == 0 && fp_aead_clone(&c, &a) == 0);
    /* frames 0-1 on a, 2-3 on b, 4-5 on c (in reverse order: independence) */
    size_t seg = 2 * FP_AEAD_SEAL_PLAINTEXT, fseg = 2 * (FP_AEAD_SEAL_PLAINTEXT + FP_AEAD_TAG_SIZE + FP_AEAD_LEN_SIZE);
    c.nonce = 7 + 4;
    assert(fp_aead_seal_range(&c, iov, 3, 2 * seg, n - 2 * seg, par + 2 * fseg, sz - 2 * fseg, &outlen) == 0);
    assert(outlen == sz - 2 * fseg);
    b.nonce = 7 + 2;
    assert(fp_aead_seal_range(&b, iov, 3, seg, seg, par + fseg, fseg, &outlen) == 0 && outlen == fseg);
    assert(fp_aead_seal_range(&a, iov, 3, 0, seg, par, fseg, &outlen) == 0 && outlen == fseg);
    assert(memcmp(one, par, sz) == 0);
    /* a range outside the data is refused */
    assert(fp_aead_seal_range(&a, iov, 3, n, 1, par, sz, &outlen) == FP_EINVAL);
    fp_aead_free(&a);
    fp_aead_free(&b);
    fp_aead_free(&c);
    assert(fp_aead_clone(&b, &a) == FP_EINVAL);
    free(pt);
    free(one);
    free(par);
}

/* frame by frame, each into a place of the caller's choosing, = open_frames */
static void test_open_frame(void) {
    fp_aead tx, rx;
    size_t n = 2 * FP_AEAD_SEAL_PLAINTEXT + 10, sz = fp_aead_sealed_size(n), outlen = 0;
    uint8_t *pt = malloc(n), *ct = malloc(sz), *out = calloc(1, n);
    for (size_t i = 0; i < n; i++) pt[i] = (uint8_t)(i * 13);
    fp_iovec iov = {pt, n};
    assert(fp_aead_init(&tx, key, 0, 1) == 0 && fp_aead_init(&rx, key, 0, 0) == 0);
    assert(fp_aead_seal_frames(&tx, &iov, 1, ct, sz, &outlen) == 0);
    /* frames in reverse destination order: the plaintext lands where it is told */
    size_t pos = 0, opos[3] = {n - FP_AEAD_SEAL_PLAINTEXT, 10, 0}, i = 0;
    while (pos < sz) {
        size_t flen = (size_t)ct[pos] << 8 | ct[pos + 1];
        assert(fp_aead_open_frame(&rx, ct + pos + 2, flen, out + opos[i++]) == 0);
        pos += 2 + flen;
    }
    assert(memcmp(out + n - FP_AEAD_SEAL_PLAINTEXT, pt, FP_AEAD_SEAL_PLAINTEXT) == 0);
    assert(memcmp(out + 10, pt + FP_AEAD_SEAL_PLAINTEXT, FP_AEAD_SEAL_PLAINTEXT) == 0);
    assert(memcmp(out, pt + 2 * FP_AEAD_SEAL_PLAINTEXT, 10) == 0);
    /* a forged frame, and one shorter than the tag */
    fp_aead_free(&rx);
    assert(fp_aead_init(&rx, key, 0, 0) == 0);
    ct[2 + 100] ^= 1;
    assert(fp_aead_open_frame(&rx, ct + 2, FP_AEAD_MAX_FRAME, out) == FP_EAUTH);
    assert(fp_aead_open_frame(&rx, ct + 2, FP_AEAD_TAG_SIZE - 1, out) == FP_EFRAME);
    fp_aead_free(&rx);
    assert(fp_aead_open_frame(&rx, ct + 2, FP_AEAD_MAX_FRAME, out) == FP_EINVAL);
    fp_aead_free(&tx);
    free(pt);
    free(ct);
    free(out);
}

/* a frame opened in parts (begin, updates into different places, end) = opened whole;
 * a header run joins the large entry after it, a longer run does not */
static void test_open_in_parts(int kind) {
    fp_aead tx, rx;
    uint8_t hdr[12], run[40], *body = malloc(70000), *ct = malloc(80000), head[12], *out = malloc(70000);
    size_t outlen = 0;
    memset(hdr, 7, sizeof hdr);
    memset(run, 9, sizeof run);
    for (size_t i = 0; i < 70000; i++) body[i] = (uint8_t)(i * 7);
    fp_iovec iov[2] = {{hdr, sizeof hdr}, {body, 70000}};
    assert(fp_aead_init_kind(&tx, kind, key, 0, 1) == 0 && fp_aead_init_kind(&rx, kind, key, 0, 0) == 0);
    assert(fp_aead_sealed_size_iov(iov, 2) == fp_aead_sealed_size(12 + 70000));
    assert(fp_aead_seal_frames(&tx, iov, 2, ct, 80000, &outlen) == 0 && tx.nonce == 2);
    size_t flen = (size_t)ct[0] << 8 | ct[1];
    assert(flen == FP_AEAD_SEAL_PLAINTEXT + FP_AEAD_TAG_SIZE);
    assert(fp_aead_open_begin(&rx, ct + 2, flen) == 0);
    assert(fp_aead_open_update(&rx, ct + 2, 12, head) == 0);
    assert(fp_aead_open_update(&rx, ct + 2 + 12, 1000, out) == 0);
    assert(fp_aead_open_update(&rx, ct + 2 + 1012, FP_AEAD_SEAL_PLAINTEXT - 1012, out + 1000) == 0);
    assert(fp_aead_open_end(&rx) == 0);
    assert(memcmp(head, hdr, 12) == 0 && memcmp(out, body, FP_AEAD_SEAL_PLAINTEXT - 12) == 0);
    /* the next frame opened whole, in sequence */
    size_t f2 = (size_t)ct[2 + flen] << 8 | ct[3 + flen];
    assert(fp_aead_open_frame(&rx, ct + 4 + flen, f2, out) == 0);
    assert(memcmp(out, body + FP_AEAD_SEAL_PLAINTEXT - 12, 70000 - (FP_AEAD_SEAL_PLAINTEXT - 12)) == 0);
    /* a forged frame fails at the end, whatever was written before */
    fp_aead_free(&rx);
    assert(fp_aead_init_kind(&rx, kind, key, 0, 0) == 0);
    ct[2 + 5000] ^= 1;
    assert(fp_aead_open_begin(&rx, ct + 2, flen) == 0);
    assert(fp_aead_open_update(&rx, ct + 2, flen - FP_AEAD_TAG_SIZE, out) == 0);
    assert(fp_aead_open_end(&rx) == FP_EAUTH);
    assert(fp_aead_open_begin(&rx, ct + 2, FP_AEAD_TAG_SIZE - 1) == FP_EFRAME);
    /* a run over FP_AEAD_JOIN_MAX stays in frames of its own */
    fp_iovec iov2[2] = {{run, sizeof run}, {body, 70000}};
    assert(sizeof run > FP_AEAD_JOIN_MAX);
    assert(fp_aead_sealed_size_iov(iov2, 2) == fp_aead_sealed_size(sizeof run) + fp_aead_sealed_size(70000));
    /* a header joins an entry of up to FP_AEAD_JOIN_ENTRY_MAX bytes; before a
     * longer one it is a frame of its own, and the entry's frames all payload */
    {
        size_t big = FP_AEAD_JOIN_ENTRY_MAX + 1;
        uint8_t *bb = calloc(1, big), *bc = malloc(fp_aead_sealed_size(big) + 64);
        fp_iovec j1[2] = {{hdr, 12}, {bb, FP_AEAD_JOIN_ENTRY_MAX}}, j2[2] = {{hdr, 12}, {bb, big}};
        assert(fp_aead_sealed_size_iov(j1, 2) == fp_aead_sealed_size(12 + FP_AEAD_JOIN_ENTRY_MAX));
        assert(fp_aead_sealed_size_iov(j2, 2) == fp_aead_sealed_size(12) + fp_aead_sealed_size(big));
        fp_aead t2;
        assert(fp_aead_init_kind(&t2, kind, key, 0, 1) == 0);
        assert(fp_aead_seal_frames(&t2, j2, 2, bc, fp_aead_sealed_size(big) + 64, &outlen) == 0);
        assert(outlen == fp_aead_sealed_size_iov(j2, 2) && t2.nonce == 1 + 3);
        assert(bc[0] == 0 && bc[1] == 12 + FP_AEAD_TAG_SIZE); /* the header alone */
        fp_aead_free(&t2);
        free(bb);
        free(bc);
    }
    fp_aead_free(&tx);
    fp_aead_free(&rx);
    free(body);
    free(ct);
    free(out);
}

/* RFC 5869 test case 3 (SHA-256, empty salt and info): the Noise HKDF is RFC 5869 with
 * the chaining key as salt and no info, so out1 || out2 begins with its OKM. */
static void test_hkdf(void) {
    static const uint8_t okm[42] = {
        0x8d, 0xa4, 0xe7, 0x75, 0xa5, 0x63, 0xc1, 0x8f, 0x71, 0x5f, 0x80, 0x2a, 0x06, 0x3c,
        0x5a, 0x31, 0xb8, 0xa1, 0x1f, 0x5c, 0x5e, 0xe1, 0x87, 0x9e, 0xc3, 0x45, 0x4e, 0x5f,
        0x3c, 0x73, 0x8d, 0x2d, 0x9d, 0x20, 0x13, 0x95, 0xfa, 0xa4, 0xb6, 0x1a, 0x96, 0xc8};
    uint8_t ikm[22], o1[32], o2[32], p1[32], p2[32], longkey[100];
    memset(ikm, 0x0b, sizeof ikm);
    assert(fp_noise_hkdf2(NULL, 0, ikm, sizeof ikm, o1, o2) == 0);
    assert(memcmp(o1, okm, 32) == 0 && memcmp(o2, okm + 32, 10) == 0);
    /* a key over the HMAC block (hashed first) and an empty input: deterministic */
    memset(longkey, 0x5a, sizeof longkey);
    assert(fp_noise_hkdf2(longkey, sizeof longkey, NULL, 0, o1, o2) == 0);
    assert(fp_noise_hkdf2(longkey, sizeof longkey, NULL, 0, p1, p2) == 0);
    assert(memcmp(o1, p1, 32) == 0 && memcmp(o2, p2, 32) == 0 && memcmp(o1, o2, 32) != 0);
}

int main(void) {
    for (int i = 0; i < 32; i++) key[i] = (uint8_t)i;
    size_t sizes[] = {0, 1, 100, FP_AEAD_SEAL_PLAINTEXT - 1, FP_AEAD_SEAL_PLAINTEXT,
                      FP_AEAD_SEAL_PLAINTEXT + 1, 3 * FP_AEAD_SEAL_PLAINTEXT + 5, 1 << 20};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) test_roundtrip(sizes[i]);
    test_errors();
    test_open_frame();
    test_open_in_parts(FP_AEAD_CHACHAPOLY);
    test_open_in_parts(FP_AEAD_AESGCM);
    test_aesgcm();
    test_pool();
    test_seal_range(FP_AEAD_CHACHAPOLY);
    test_seal_range(FP_AEAD_AESGCM);
    test_hkdf();
    puts("test_aead: ok");
    return 0;
}
