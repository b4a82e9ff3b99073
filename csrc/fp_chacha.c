/* fp_chacha.c - ChaCha20-Poly1305 for short messages; see fp_chacha.h.
 *
 * ChaCha20 (RFC 8439 section 2.3): eight blocks at a time, one 32-bit word of
 * each block per AVX2 lane (x[i] holds word i of blocks counter..counter+7),
 * then an 8x8 transpose per half-block to lay the keystream out in byte order.
 * A message's first batch starts at block 0: block 0's first 32 bytes are the
 * Poly1305 key (section 2.6), blocks 1..7 its first 448 bytes of keystream.
 * Poly1305 (section 2.5): radix 2^44/2^44/2^42 limbs with 64x64->128-bit
 * products (the layout of poly1305-donna's 64-bit version), over the AEAD
 * input of section 2.8 with empty AAD: ciphertext, zero padding to 16 bytes,
 * then le64(0) || le64(ciphertext length).
 */
#define _POSIX_C_SOURCE 200112L /* posix_memalign */
#include "fp_chacha.h"
#include "fp_common.h"

#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define FP_CHACHA_X86 1
#endif

#ifndef FP_CHACHA_X86

int fp_chacha_supported(void) { return 0; }
fp_chacha *fp_chacha_new(const uint8_t key[32]) { (void)key; return NULL; }
fp_chacha *fp_chacha_clone(const fp_chacha *c) { (void)c; return NULL; }
void fp_chacha_free(fp_chacha *c) { (void)c; }
void fp_chacha_allow_avx512(int allow) { (void)allow; }
void fp_chacha_start(fp_chacha *c, const uint8_t iv[12]) { (void)c; (void)iv; }
void fp_chacha_update(fp_chacha *c, const uint8_t *in, uint8_t *out, size_t n, int enc) {
    (void)c; (void)in; (void)out; (void)n; (void)enc;
}
void fp_chacha_tag(fp_chacha *c, uint8_t tag[16]) { (void)c; (void)tag; }
int fp_chacha_verify(fp_chacha *c, const uint8_t expect[16]) { (void)c; (void)expect; return -1; }

#else

#include <immintrin.h>

#include "fp_cpu.h"

#define BATCH 512 /* keystream bytes per batch: 8 blocks */
#define M44 0xfffffffffffULL
#define M42 0x3ffffffffffULL

typedef void (*chacha_batch_fn)(const uint32_t key[8], const uint32_t nonce[3], uint32_t counter,
                                uint8_t ks[512]);

struct fp_chacha {
    uint8_t ks[BATCH]; /* the current batch's keystream */
    uint32_t key[8];
    uint32_t nonce[3];
    uint32_t counter; /* first block of the next batch */
    unsigned ks_pos;  /* keystream bytes used */
    uint64_t r0, r1, r2, h0, h1, h2, pad0, pad1;
    uint64_t ct_len;
    uint8_t buf[16]; /* a partial Poly1305 block */
    unsigned buf_len;
    chacha_batch_fn batch;
};

/* Outside the target regions below: runs on any x86-64. */
static int chacha_cpu_check(void) {
    fp_cpu_info cpu = fp_cpu_read();
    /* leaf 1 ECX: AVX 28; leaf 7 EBX: AVX2 5 */
    return fp_cpu_has(cpu.ecx1, 1u << 28) && fp_cpu_has(cpu.xcr0, FP_XCR0_AVX) &&
           fp_cpu_has(cpu.ebx7, 1u << 5);
}

int fp_chacha_supported(void) {
    static int cached = -1;
    if (cached < 0) cached = chacha_cpu_check();
    return cached;
}

/* -- Poly1305 --------------------------------------------------------------------- */

static void poly_init(fp_chacha *c, const uint8_t key[32]) {
    uint64_t t0 = fp_load_le64(key), t1 = fp_load_le64(key + 8);
    c->r0 = t0 & 0xffc0fffffffULL; /* r clamped (section 2.5.1) */
    c->r1 = ((t0 >> 44) | (t1 << 20)) & 0xfffffc0ffffULL;
    c->r2 = (t1 >> 24) & 0x00ffffffc0fULL;
    c->h0 = c->h1 = c->h2 = 0;
    c->pad0 = fp_load_le64(key + 16);
    c->pad1 = fp_load_le64(key + 24);
    c->buf_len = 0;
    c->ct_len = 0;
}

/* h = (h + block + 2^128) * r mod 2^130 - 5, for each 16-byte block of m */
static void poly_blocks(fp_chacha *c, const uint8_t *m, size_t nblocks) {
    typedef unsigned __int128 u128;
    const uint64_t r0 = c->r0, r1 = c->r1, r2 = c->r2;
    const uint64_t s1 = r1 * (5 << 2), s2 = r2 * (5 << 2); /* 2^132 = 4 * 2^130 == 20 */
    uint64_t h0 = c->h0, h1 = c->h1, h2 = c->h2;
    while (nblocks--) {
        uint64_t t0 = fp_load_le64(m), t1 = fp_load_le64(m + 8);
        h0 += t0 & M44;
        h1 += ((t0 >> 44) | (t1 << 20)) & M44;
        h2 += ((t1 >> 24) & M42) | (1ULL << 40);
        u128 d0 = (u128)h0 * r0 + (u128)h1 * s2 + (u128)h2 * s1;
        u128 d1 = (u128)h0 * r1 + (u128)h1 * r0 + (u128)h2 * s2;
        u128 d2 = (u128)h0 * r2 + (u128)h1 * r1 + (u128)h2 * r0;
        uint64_t k = (uint64_t)(d0 >> 44);
        h0 = (uint64_t)d0 & M44;
        d1 += k;
        k = (uint64_t)(d1 >> 44);
        h1 = (uint64_t)d1 & M44;
        d2 += k;
        k = (uint64_t)(d2 >> 42);
        h2 = (uint64_t)d2 & M42;
        h0 += k * 5;
        k = h0 >> 44;
        h0 &= M44;
        h1 += k;
        m += 16;
    }
    c->h0 = h0;
    c->h1 = h1;
    c->h2 = h2;
}

/* Ciphertext bytes into the MAC, in any pieces. */
static void poly_absorb(fp_chacha *c, const uint8_t *m, size_t n) {
    c->ct_len += n;
    if (c->buf_len) {
        size_t take = 16 - c->buf_len;
        if (take > n) take = n;
        memcpy(c->buf + c->buf_len, m, take);
        c->buf_len += (unsigned)take;
        m += take;
        n -= take;
        if (c->buf_len < 16) return;
        poly_blocks(c, c->buf, 1);
        c->buf_len = 0;
    }
    if (n >= 16) {
        poly_blocks(c, m, n / 16);
        m += n & ~(size_t)15;
        n &= 15;
    }
    if (n) {
        memcpy(c->buf, m, n);
        c->buf_len = (unsigned)n;
    }
}

static void poly_finish(fp_chacha *c, uint8_t tag[16]) {
    uint8_t last[16];
    if (c->buf_len) { /* pad16(ciphertext): zeros, a whole block */
        memset(c->buf + c->buf_len, 0, 16 - c->buf_len);
        poly_blocks(c, c->buf, 1);
        c->buf_len = 0;
    }
    fp_store_le64(last, 0); /* AAD length */
    fp_store_le64(last + 8, c->ct_len);
    poly_blocks(c, last, 1);

    uint64_t h0 = c->h0, h1 = c->h1, h2 = c->h2, k;
    /* carry fully */
    k = h1 >> 44; h1 &= M44; h2 += k;
    k = h2 >> 42; h2 &= M42; h0 += k * 5;
    k = h0 >> 44; h0 &= M44; h1 += k;
    k = h1 >> 44; h1 &= M44; h2 += k;
    k = h2 >> 42; h2 &= M42; h0 += k * 5;
    k = h0 >> 44; h0 &= M44; h1 += k;
    /* g = h + 5 - 2^130; take g where it does not go below zero (constant time) */
    uint64_t g0 = h0 + 5;
    k = g0 >> 44; g0 &= M44;
    uint64_t g1 = h1 + k;
    k = g1 >> 44; g1 &= M44;
    uint64_t g2 = h2 + k - (1ULL << 42);
    uint64_t keep_g = (g2 >> 63) - 1; /* all ones when g2 >= 0 */
    g0 &= keep_g; g1 &= keep_g; g2 &= keep_g;
    h0 = (h0 & ~keep_g) | g0;
    h1 = (h1 & ~keep_g) | g1;
    h2 = (h2 & ~keep_g) | g2;
    /* + s, mod 2^128 */
    uint64_t t0 = c->pad0, t1 = c->pad1;
    h0 += t0 & M44;
    k = h0 >> 44; h0 &= M44;
    h1 += (((t0 >> 44) | (t1 << 20)) & M44) + k;
    k = h1 >> 44; h1 &= M44;
    h2 += ((t1 >> 24) & M42) + k;
    h2 &= M42;
    h0 = h0 | (h1 << 44);
    h1 = (h1 >> 20) | (h2 << 24);
    fp_store_le64(tag, h0);
    fp_store_le64(tag + 8, h1);
}

/* -- ChaCha20, eight blocks per call ------------------------------------------------ */

/* One body, two instruction sets: AVX2 rotates by 12 and 7 with two shifts and
 * an OR; AVX-512VL has a rotate instruction (a quarter of the round's work
 * fewer). fp_chacha_new picks the variant this CPU runs. */
#define CHACHA_QR(a, b, c, d)                     \
    do {                                          \
        x[a] = _mm256_add_epi32(x[a], x[b]);      \
        x[d] = ROT16(_mm256_xor_si256(x[d], x[a])); \
        x[c] = _mm256_add_epi32(x[c], x[d]);      \
        x[b] = ROTL(_mm256_xor_si256(x[b], x[c]), 12); \
        x[a] = _mm256_add_epi32(x[a], x[b]);      \
        x[d] = ROT8(_mm256_xor_si256(x[d], x[a])); \
        x[c] = _mm256_add_epi32(x[c], x[d]);      \
        x[b] = ROTL(_mm256_xor_si256(x[b], x[c]), 7); \
    } while (0)

/* Keystream blocks counter .. counter + 7 into ks: words a[0..7] of blocks
 * 0..7 (one block per lane) are transposed so block j's words land at
 * ks + 64 * j, little-endian (u0: words 0-3 of blocks 0 and 4, u1: of 1 and 5,
 * ...; u4..u7 the same for words 4-7). */
#define CHACHA_BATCH_BODY                                                                      \
    __m256i s[16], x[16];                                                                      \
    s[0] = _mm256_set1_epi32(0x61707865); /* "expand 32-byte k" */                             \
    s[1] = _mm256_set1_epi32(0x3320646e);                                                      \
    s[2] = _mm256_set1_epi32(0x79622d32);                                                      \
    s[3] = _mm256_set1_epi32(0x6b206574);                                                      \
    for (int i = 0; i < 8; i++) s[4 + i] = _mm256_set1_epi32((int)key[i]);                     \
    s[12] = _mm256_add_epi32(_mm256_set1_epi32((int)counter),                                  \
                             _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));                       \
    for (int i = 0; i < 3; i++) s[13 + i] = _mm256_set1_epi32((int)nonce[i]);                  \
    for (int i = 0; i < 16; i++) x[i] = s[i];                                                  \
    for (int i = 0; i < 10; i++) {                                                             \
        CHACHA_QR(0, 4, 8, 12);                                                                \
        CHACHA_QR(1, 5, 9, 13);                                                                \
        CHACHA_QR(2, 6, 10, 14);                                                               \
        CHACHA_QR(3, 7, 11, 15);                                                               \
        CHACHA_QR(0, 5, 10, 15);                                                               \
        CHACHA_QR(1, 6, 11, 12);                                                               \
        CHACHA_QR(2, 7, 8, 13);                                                                \
        CHACHA_QR(3, 4, 9, 14);                                                                \
    }                                                                                          \
    for (int h = 0; h < 2; h++) {                                                              \
        const __m256i *a = x + 8 * h, *o = s + 8 * h;                                          \
        __m256i w[8];                                                                          \
        for (int i = 0; i < 8; i++) w[i] = _mm256_add_epi32(a[i], o[i]);                       \
        __m256i t0 = _mm256_unpacklo_epi32(w[0], w[1]), t1 = _mm256_unpackhi_epi32(w[0], w[1]); \
        __m256i t2 = _mm256_unpacklo_epi32(w[2], w[3]), t3 = _mm256_unpackhi_epi32(w[2], w[3]); \
        __m256i t4 = _mm256_unpacklo_epi32(w[4], w[5]), t5 = _mm256_unpackhi_epi32(w[4], w[5]); \
        __m256i t6 = _mm256_unpacklo_epi32(w[6], w[7]), t7 = _mm256_unpackhi_epi32(w[6], w[7]); \
        __m256i u0 = _mm256_unpacklo_epi64(t0, t2), u1 = _mm256_unpackhi_epi64(t0, t2);        \
        __m256i u2 = _mm256_unpacklo_epi64(t1, t3), u3 = _mm256_unpackhi_epi64(t1, t3);        \
        __m256i u4 = _mm256_unpacklo_epi64(t4, t6), u5 = _mm256_unpackhi_epi64(t4, t6);        \
        __m256i u6 = _mm256_unpacklo_epi64(t5, t7), u7 = _mm256_unpackhi_epi64(t5, t7);        \
        uint8_t *out = ks + 32 * h;                                                            \
        _mm256_storeu_si256((__m256i *)(out + 0 * 64), _mm256_permute2x128_si256(u0, u4, 0x20)); \
        _mm256_storeu_si256((__m256i *)(out + 1 * 64), _mm256_permute2x128_si256(u1, u5, 0x20)); \
        _mm256_storeu_si256((__m256i *)(out + 2 * 64), _mm256_permute2x128_si256(u2, u6, 0x20)); \
        _mm256_storeu_si256((__m256i *)(out + 3 * 64), _mm256_permute2x128_si256(u3, u7, 0x20)); \
        _mm256_storeu_si256((__m256i *)(out + 4 * 64), _mm256_permute2x128_si256(u0, u4, 0x31)); \
        _mm256_storeu_si256((__m256i *)(out + 5 * 64), _mm256_permute2x128_si256(u1, u5, 0x31)); \
        _mm256_storeu_si256((__m256i *)(out + 6 * 64), _mm256_permute2x128_si256(u2, u6, 0x31)); \
        _mm256_storeu_si256((__m256i *)(out + 7 * 64), _mm256_permute2x128_si256(u3, u7, 0x31)); \
    }

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2")
#endif

#define ROTL(v, k) _mm256_or_si256(_mm256_slli_epi32(v, k), _mm256_srli_epi32(v, 32 - (k)))
#define ROT16(v) _mm256_shuffle_epi8(v, r16)
#define ROT8(v) _mm256_shuffle_epi8(v, r8)

static void chacha_batch_avx2(const uint32_t key[8], const uint32_t nonce[3], uint32_t counter,
                              uint8_t ks[BATCH]) {
    const __m256i r16 = _mm256_setr_epi8(2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13,
                                         2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13);
    const __m256i r8 = _mm256_setr_epi8(3, 0, 1, 2, 7, 4, 5, 6, 11, 8, 9, 10, 15, 12, 13, 14,
                                        3, 0, 1, 2, 7, 4, 5, 6, 11, 8, 9, 10, 15, 12, 13, 14);
    CHACHA_BATCH_BODY
}

static void xor_bytes(uint8_t *out, const uint8_t *in, const uint8_t *ks, size_t n) {
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        __m256i v = _mm256_loadu_si256((const __m256i *)(in + i));
        __m256i k = _mm256_loadu_si256((const __m256i *)(ks + i));
        _mm256_storeu_si256((__m256i *)(out + i), _mm256_xor_si256(v, k));
    }
    for (; i < n; i++) out[i] = in[i] ^ ks[i];
}

#undef ROTL
#undef ROT16
#undef ROT8
#if defined(__clang__)
#pragma clang attribute pop
#pragma clang attribute push(__attribute__((target("avx2,avx512f,avx512vl"))), apply_to = function)
#else
#pragma GCC pop_options
#pragma GCC push_options
#pragma GCC target("avx2,avx512f,avx512vl")
#endif

#define ROTL(v, k) _mm256_rol_epi32(v, k)
#define ROT16(v) _mm256_rol_epi32(v, 16)
#define ROT8(v) _mm256_rol_epi32(v, 8)

static void chacha_batch_avx512vl(const uint32_t key[8], const uint32_t nonce[3],
                                  uint32_t counter, uint8_t ks[BATCH]) {
    CHACHA_BATCH_BODY
}

#undef ROTL
#undef ROT16
#undef ROT8
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

static int chacha_has_avx512vl(void) {
    fp_cpu_info cpu = fp_cpu_read();
    /* leaf 7 EBX: AVX512F 16, AVX512VL 31 */
    return fp_cpu_has(cpu.xcr0, FP_XCR0_AVX512) && fp_cpu_has(cpu.ebx7, 1u << 16 | 1u << 31);
}

static int chacha_avx512_allowed = 1;

void fp_chacha_allow_avx512(int allow) { chacha_avx512_allowed = allow; }

static chacha_batch_fn chacha_batch_pick(void) {
    static int has = -1;
    if (has < 0) has = chacha_has_avx512vl();
    return has && chacha_avx512_allowed ? chacha_batch_avx512vl : chacha_batch_avx2;
}

/* -- the AEAD ----------------------------------------------------------------------- */

static fp_chacha *chacha_alloc(void) {
    void *p = NULL;
    return posix_memalign(&p, 64, sizeof(fp_chacha)) == 0 ? (fp_chacha *)p : NULL;
}

static void chacha_wipe(fp_chacha *c) { fp_wipe(c, sizeof *c); }

fp_chacha *fp_chacha_new(const uint8_t key[32]) {
    if (!fp_chacha_supported()) return NULL;
    fp_chacha *c = chacha_alloc();
    if (!c) return NULL;
    memset(c, 0, sizeof *c);
    for (int i = 0; i < 8; i++) c->key[i] = fp_load_le32(key + 4 * i);
    c->batch = chacha_batch_pick();
    return c;
}

fp_chacha *fp_chacha_clone(const fp_chacha *c) {
    fp_chacha *d = chacha_alloc();
    if (d) memcpy(d, c, sizeof *c);
    return d;
}

void fp_chacha_free(fp_chacha *c) {
    if (!c) return;
    chacha_wipe(c);
    free(c);
}

void fp_chacha_start(fp_chacha *c, const uint8_t iv[12]) {
    for (int i = 0; i < 3; i++) c->nonce[i] = fp_load_le32(iv + 4 * i);
    c->batch(c->key, c->nonce, 0, c->ks);
    poly_init(c, c->ks); /* block 0: the one-time Poly1305 key */
    c->ks_pos = 64;      /* the message's keystream starts at block 1 */
    c->counter = 8;
}

void fp_chacha_update(fp_chacha *c, const uint8_t *in, uint8_t *out, size_t n, int enc) {
    while (n) {
        if (c->ks_pos == BATCH) {
            c->batch(c->key, c->nonce, c->counter, c->ks);
            c->counter += 8;
            c->ks_pos = 0;
        }
        size_t k = BATCH - c->ks_pos;
        if (k > n) k = n;
        if (!enc) poly_absorb(c, in, k); /* the ciphertext, before in == out overwrites it */
        xor_bytes(out, in, c->ks + c->ks_pos, k);
        if (enc) poly_absorb(c, out, k);
        c->ks_pos += (unsigned)k;
        in += k;
        out += k;
        n -= k;
    }
}

void fp_chacha_tag(fp_chacha *c, uint8_t tag[16]) { poly_finish(c, tag); }

int fp_chacha_verify(fp_chacha *c, const uint8_t expect[16]) {
    uint8_t tag[16], diff = 0;
    poly_finish(c, tag);
    for (int i = 0; i < 16; i++) diff |= (uint8_t)(tag[i] ^ expect[i]);
    return diff ? -1 : 0;
}

#endif /* FP_CHACHA_X86 */
