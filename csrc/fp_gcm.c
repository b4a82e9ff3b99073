/* fp_gcm.c - AES-256-GCM with VAES and VPCLMULQDQ; see fp_gcm.h.
 *
 * GHASH works on byte-reversed blocks (Gueron and Kounavis, "Intel
 * Carry-Less Multiplication Instruction and its Usage for Computing the GCM
 * Mode", rev. 2.02, algorithms 1 and 5): carry-less multiply, shift the
 * 256-bit product left by one, reduce modulo x^128 + x^7 + x^2 + x + 1.
 * Sixteen blocks are multiplied by H^16 .. H^1 and summed before one
 * reduction (the products are linear in the reduction).
 * Counter blocks are kept byte-reversed, so the 32-bit big-endian counter
 * is the first dword and increments with a plain 32-bit add (GCM's inc32).
 */
#define _POSIX_C_SOURCE 200112L /* posix_memalign */
#include "fp_gcm.h"
#include "fp_common.h"

#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define FP_GCM_X86 1
#endif

#ifndef FP_GCM_X86

int fp_gcm_supported(void) { return 0; }
fp_gcm *fp_gcm_new(const uint8_t key[32]) { (void)key; return NULL; }
fp_gcm *fp_gcm_clone(const fp_gcm *g) { (void)g; return NULL; }
void fp_gcm_free(fp_gcm *g) { (void)g; }
void fp_gcm_start(fp_gcm *g, const uint8_t iv[12]) { (void)g; (void)iv; }
void fp_gcm_update(fp_gcm *g, const uint8_t *in, uint8_t *out, size_t n, int enc) {
    (void)g; (void)in; (void)out; (void)n; (void)enc;
}
void fp_gcm_tag(fp_gcm *g, uint8_t tag[16]) { (void)g; (void)tag; }
int fp_gcm_verify(fp_gcm *g, const uint8_t expect[16]) { (void)g; (void)expect; return -1; }

#else

#include <immintrin.h>

#include "fp_cpu.h"

/* Outside the target region below: runs on any x86-64. */
static int gcm_cpu_check(void) {
    fp_cpu_info cpu = fp_cpu_read();
    /* leaf 1 ECX: PCLMULQDQ 1, SSSE3 9, SSE4.1 19, AES 25; leaf 7 EBX: AVX512F 16,
     * AVX512BW 30, AVX512VL 31; ECX: VAES 9, VPCLMULQDQ 10 */
    return fp_cpu_has(cpu.ecx1, 1u << 1 | 1u << 9 | 1u << 19 | 1u << 25) &&
           fp_cpu_has(cpu.xcr0, FP_XCR0_AVX512) &&
           fp_cpu_has(cpu.ebx7, 1u << 16 | 1u << 30 | 1u << 31) &&
           fp_cpu_has(cpu.ecx7, 1u << 9 | 1u << 10);
}

int fp_gcm_supported(void) {
    static int cached = -1;
    if (cached < 0) cached = gcm_cpu_check();
    return cached;
}

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512vl,vaes,vpclmulqdq,aes,pclmul,ssse3,sse4.1"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,vaes,vpclmulqdq,aes,pclmul,ssse3,sse4.1")
#endif

#define GCM_ROUNDS 14 /* AES-256 */
#define HTAB 16       /* powers of H multiplied per step */

struct fp_gcm {
    __m128i rk[GCM_ROUNDS + 1];
    /* H^16 .. H^1 (byte-reversed), then HTAB zero entries: a step of k < 16
     * blocks reads its powers from htab + 16 - k. */
    __m128i htab[2 * HTAB];
    /* the message in progress */
    __m128i acc;  /* GHASH so far (byte-reversed) */
    __m128i ctr;  /* next counter block, byte-reversed */
    __m128i ek0;  /* E(K, J0), masks the tag */
    uint8_t ks[16];   /* keystream of the partial block */
    uint8_t part[16]; /* ciphertext of the partial block so far */
    size_t npart;     /* its bytes (0..15) */
    uint64_t len;     /* message bytes so far */
};

static inline __m128i bswap128(__m128i x) {
    return _mm_shuffle_epi8(x, _mm_setr_epi8(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0));
}

static inline __m512i bswap512(__m512i x) {
    return _mm512_shuffle_epi8(
        x, _mm512_broadcast_i32x4(
               _mm_setr_epi8(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0)));
}

/* [hi:lo] is a carry-less product of two byte-reversed operands: shift it
 * left by one bit and reduce it to 128 bits (algorithm 5). */
static inline __m128i gf_reduce(__m128i lo, __m128i hi) {
    __m128i t7 = _mm_srli_epi32(lo, 31), t8 = _mm_srli_epi32(hi, 31);
    lo = _mm_slli_epi32(lo, 1);
    hi = _mm_slli_epi32(hi, 1);
    __m128i t9 = _mm_srli_si128(t7, 12);
    t8 = _mm_slli_si128(t8, 4);
    t7 = _mm_slli_si128(t7, 4);
    lo = _mm_or_si128(lo, t7);
    hi = _mm_or_si128(_mm_or_si128(hi, t8), t9);
    t7 = _mm_xor_si128(_mm_xor_si128(_mm_slli_epi32(lo, 31), _mm_slli_epi32(lo, 30)),
                       _mm_slli_epi32(lo, 25));
    t8 = _mm_srli_si128(t7, 4);
    lo = _mm_xor_si128(lo, _mm_slli_si128(t7, 12));
    __m128i t2 = _mm_xor_si128(_mm_xor_si128(_mm_srli_epi32(lo, 1), _mm_srli_epi32(lo, 2)),
                               _mm_srli_epi32(lo, 7));
    lo = _mm_xor_si128(lo, _mm_xor_si128(t2, t8));
    return _mm_xor_si128(hi, lo);
}

static inline __m128i gf_mul(__m128i a, __m128i b) {
    __m128i lo = _mm_clmulepi64_si128(a, b, 0x00);
    __m128i hi = _mm_clmulepi64_si128(a, b, 0x11);
    __m128i mid = _mm_xor_si128(_mm_clmulepi64_si128(a, b, 0x10), _mm_clmulepi64_si128(a, b, 0x01));
    lo = _mm_xor_si128(lo, _mm_slli_si128(mid, 8));
    hi = _mm_xor_si128(hi, _mm_srli_si128(mid, 8));
    return gf_reduce(lo, hi);
}

static inline __m128i fold512(__m512i x) {
    __m256i y = _mm256_xor_si256(_mm512_castsi512_si256(x), _mm512_extracti64x4_epi64(x, 1));
    return _mm_xor_si128(_mm256_castsi256_si128(y), _mm256_extracti128_si256(y, 1));
}

/* acc = (acc + d[0]) * h[0] + d[1] * h[1] + ... over 16 lanes: d holds
 * byte-reversed ciphertext blocks in order, h their powers of H (lanes past
 * the message are zero in d). */
static inline __m128i ghash16(__m128i acc, __m512i d0, __m512i d1, __m512i d2, __m512i d3,
                              const __m128i *h) {
    __m512i h0 = _mm512_loadu_si512((const void *)(h + 0));
    __m512i h1 = _mm512_loadu_si512((const void *)(h + 4));
    __m512i h2 = _mm512_loadu_si512((const void *)(h + 8));
    __m512i h3 = _mm512_loadu_si512((const void *)(h + 12));
    d0 = _mm512_xor_si512(d0, _mm512_inserti32x4(_mm512_setzero_si512(), acc, 0));
    __m512i lo = _mm512_clmulepi64_epi128(d0, h0, 0x00);
    __m512i hi = _mm512_clmulepi64_epi128(d0, h0, 0x11);
    __m512i mid = _mm512_xor_si512(_mm512_clmulepi64_epi128(d0, h0, 0x01),
                                   _mm512_clmulepi64_epi128(d0, h0, 0x10));
#define GCM_ACC(d, h)                                                                     \
    lo = _mm512_xor_si512(lo, _mm512_clmulepi64_epi128(d, h, 0x00));                      \
    hi = _mm512_xor_si512(hi, _mm512_clmulepi64_epi128(d, h, 0x11));                      \
    mid = _mm512_ternarylogic_epi64(mid, _mm512_clmulepi64_epi128(d, h, 0x01),            \
                                    _mm512_clmulepi64_epi128(d, h, 0x10), 0x96)
    GCM_ACC(d1, h1);
    GCM_ACC(d2, h2);
    GCM_ACC(d3, h3);
#undef GCM_ACC
    __m128i l = fold512(lo), u = fold512(hi), m = fold512(mid);
    l = _mm_xor_si128(l, _mm_slli_si128(m, 8));
    u = _mm_xor_si128(u, _mm_srli_si128(m, 8));
    return gf_reduce(l, u);
}

/* ghash16 for at most four blocks (one register). */
static inline __m128i ghash4(__m128i acc, __m512i d0, const __m128i *h) {
    __m512i h0 = _mm512_loadu_si512((const void *)h);
    d0 = _mm512_xor_si512(d0, _mm512_inserti32x4(_mm512_setzero_si512(), acc, 0));
    __m128i l = fold512(_mm512_clmulepi64_epi128(d0, h0, 0x00));
    __m128i u = fold512(_mm512_clmulepi64_epi128(d0, h0, 0x11));
    __m128i m = fold512(_mm512_xor_si512(_mm512_clmulepi64_epi128(d0, h0, 0x01),
                                         _mm512_clmulepi64_epi128(d0, h0, 0x10)));
    l = _mm_xor_si128(l, _mm_slli_si128(m, 8));
    u = _mm_xor_si128(u, _mm_srli_si128(m, 8));
    return gf_reduce(l, u);
}

static inline __m128i aes_block(const fp_gcm *g, __m128i x) {
    x = _mm_xor_si128(x, g->rk[0]);
    for (int r = 1; r < GCM_ROUNDS; r++) x = _mm_aesenc_si128(x, g->rk[r]);
    return _mm_aesenclast_si128(x, g->rk[GCM_ROUNDS]);
}

/* t ^ t<<32 ^ t<<64 ^ t<<96: each word of a round key XORs all the words before it */
static inline __m128i key_words_xor(__m128i t) {
    __m128i s = _mm_slli_si128(t, 4);
    t = _mm_xor_si128(t, s);
    s = _mm_slli_si128(s, 4);
    t = _mm_xor_si128(t, s);
    return _mm_xor_si128(t, _mm_slli_si128(s, 4));
}

static inline __m128i key_assist1(__m128i t1, __m128i t2) {
    return _mm_xor_si128(key_words_xor(t1), _mm_shuffle_epi32(t2, 0xff));
}

static inline __m128i key_assist2(__m128i t1, __m128i t3) {
    return _mm_xor_si128(key_words_xor(t3),
                         _mm_shuffle_epi32(_mm_aeskeygenassist_si128(t1, 0x00), 0xaa));
}

/* AES-256 key schedule (FIPS 197 5.2) with AESKEYGENASSIST. */
static void aes256_expand(const uint8_t key[32], __m128i rk[GCM_ROUNDS + 1]) {
    __m128i t1 = _mm_loadu_si128((const __m128i *)key);
    __m128i t3 = _mm_loadu_si128((const __m128i *)(key + 16));
    rk[0] = t1;
    rk[1] = t3;
#define GCM_EXPAND(i, rcon)                                    \
    t1 = key_assist1(t1, _mm_aeskeygenassist_si128(t3, rcon)); \
    rk[i] = t1;                                                \
    t3 = key_assist2(t1, t3);                                  \
    rk[i + 1] = t3;
    GCM_EXPAND(2, 0x01)
    GCM_EXPAND(4, 0x02)
    GCM_EXPAND(6, 0x04)
    GCM_EXPAND(8, 0x08)
    GCM_EXPAND(10, 0x10)
    GCM_EXPAND(12, 0x20)
    t1 = key_assist1(t1, _mm_aeskeygenassist_si128(t3, 0x40));
    rk[14] = t1;
#undef GCM_EXPAND
}

static void *gcm_alloc(void) {
    void *p = NULL;
    if (posix_memalign(&p, 64, sizeof(fp_gcm)) != 0) return NULL;
    return p;
}

static void gcm_wipe(fp_gcm *g) { fp_wipe(g, sizeof *g); }

fp_gcm *fp_gcm_new(const uint8_t key[32]) {
    if (!fp_gcm_supported()) return NULL;
    fp_gcm *g = gcm_alloc();
    if (!g) return NULL;
    memset(g, 0, sizeof *g);
    aes256_expand(key, g->rk);
    __m128i h = bswap128(aes_block(g, _mm_setzero_si128()));
    __m128i p = h;
    for (int i = 1; i <= HTAB; i++) {
        g->htab[HTAB - i] = p; /* htab[16 - i] = H^i */
        p = gf_mul(p, h);
    }
    return g;
}

fp_gcm *fp_gcm_clone(const fp_gcm *g) {
    fp_gcm *c = gcm_alloc();
    if (c) memcpy(c, g, sizeof *g);
    return c;
}

void fp_gcm_free(fp_gcm *g) {
    if (!g) return;
    gcm_wipe(g);
    free(g);
}

void fp_gcm_start(fp_gcm *g, const uint8_t iv[12]) {
    uint8_t j0[16];
    memcpy(j0, iv, 12);
    j0[12] = j0[13] = j0[14] = 0;
    j0[15] = 1;
    __m128i j = _mm_loadu_si128((const __m128i *)j0);
    g->ek0 = aes_block(g, j);
    g->ctr = _mm_add_epi32(bswap128(j), _mm_cvtsi32_si128(1)); /* inc32(J0) */
    g->acc = _mm_setzero_si128();
    g->npart = 0;
    g->len = 0;
}

#define AES4(b0, b1, b2, b3, rk)                                                          \
    do {                                                                                \
        b0 = _mm512_xor_si512(b0, rk[0]);                                                \
        b1 = _mm512_xor_si512(b1, rk[0]);                                                \
        b2 = _mm512_xor_si512(b2, rk[0]);                                                \
        b3 = _mm512_xor_si512(b3, rk[0]);                                                \
        for (int r_ = 1; r_ < GCM_ROUNDS; r_++) {                                         \
            b0 = _mm512_aesenc_epi128(b0, rk[r_]);                                         \
            b1 = _mm512_aesenc_epi128(b1, rk[r_]);                                         \
            b2 = _mm512_aesenc_epi128(b2, rk[r_]);                                         \
            b3 = _mm512_aesenc_epi128(b3, rk[r_]);                                         \
        }                                                                               \
        b0 = _mm512_aesenclast_epi128(b0, rk[GCM_ROUNDS]);                                \
        b1 = _mm512_aesenclast_epi128(b1, rk[GCM_ROUNDS]);                                \
        b2 = _mm512_aesenclast_epi128(b2, rk[GCM_ROUNDS]);                                \
        b3 = _mm512_aesenclast_epi128(b3, rk[GCM_ROUNDS]);                                \
    } while (0)

/* Declares b0..b3: the next 16 counter blocks (byte order restored); c moves past them. */
#define GCM_COUNTERS4(c, inc4, b0, b1, b2, b3) \
    __m512i b0 = bswap512(c);                   \
    c = _mm512_add_epi32(c, inc4);              \
    __m512i b1 = bswap512(c);                   \
    c = _mm512_add_epi32(c, inc4);              \
    __m512i b2 = bswap512(c);                   \
    c = _mm512_add_epi32(c, inc4);              \
    __m512i b3 = bswap512(c);                   \
    c = _mm512_add_epi32(c, inc4)

static inline __mmask64 lane_mask(size_t nb, int k) {
    /* bytes of the k-th 64-byte group that belong to the nb blocks */
    size_t first = (size_t)k * 4;
    if (nb <= first) return 0;
    size_t m = nb - first;
    return m >= 4 ? ~(__mmask64)0 : (((__mmask64)1 << (16 * m)) - 1);
}

/* nb whole blocks: CTR over in -> out, GHASH over the ciphertext. */
static void gcm_blocks(fp_gcm *g, const uint8_t *in, uint8_t *out, size_t nb, int enc) {
    __m512i rk[GCM_ROUNDS + 1];
    for (int r = 0; r <= GCM_ROUNDS; r++) rk[r] = _mm512_broadcast_i32x4(g->rk[r]);
    const __m512i inc4 = _mm512_set_epi32(0, 0, 0, 4, 0, 0, 0, 4, 0, 0, 0, 4, 0, 0, 0, 4);
    __m512i c = _mm512_add_epi32(_mm512_broadcast_i32x4(g->ctr),
                                 _mm512_set_epi32(0, 0, 0, 3, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 0));
    __m128i acc = g->acc;
    g->ctr = _mm_add_epi32(g->ctr, _mm_cvtsi32_si128((int)(uint32_t)nb));
    /* Sealing hashes its own output: each step hashes the previous step's
     * ciphertext after starting this step's AES, so the two overlap. */
    __m512i p0 = _mm512_setzero_si512(), p1 = p0, p2 = p0, p3 = p0;
    int pending = 0;
    while (nb >= 16) {
        GCM_COUNTERS4(c, inc4, b0, b1, b2, b3);
        AES4(b0, b1, b2, b3, rk);
        __m512i x0 = _mm512_loadu_si512((const void *)(in + 0));
        __m512i x1 = _mm512_loadu_si512((const void *)(in + 64));
        __m512i x2 = _mm512_loadu_si512((const void *)(in + 128));
        __m512i x3 = _mm512_loadu_si512((const void *)(in + 192));
        if (pending) acc = ghash16(acc, p0, p1, p2, p3, g->htab);
        b0 = _mm512_xor_si512(b0, x0);
        b1 = _mm512_xor_si512(b1, x1);
        b2 = _mm512_xor_si512(b2, x2);
        b3 = _mm512_xor_si512(b3, x3);
        _mm512_storeu_si512((void *)(out + 0), b0);
        _mm512_storeu_si512((void *)(out + 64), b1);
        _mm512_storeu_si512((void *)(out + 128), b2);
        _mm512_storeu_si512((void *)(out + 192), b3);
        if (enc) {
            p0 = bswap512(b0);
            p1 = bswap512(b1);
            p2 = bswap512(b2);
            p3 = bswap512(b3);
            pending = 1;
        } else {
            acc = ghash16(acc, bswap512(x0), bswap512(x1), bswap512(x2), bswap512(x3), g->htab);
        }
        in += 256;
        out += 256;
        nb -= 16;
    }
    if (pending) acc = ghash16(acc, p0, p1, p2, p3, g->htab);
    if (nb && nb <= 4) { /* small messages: one register of AES */
        __mmask64 m0 = lane_mask(nb, 0);
        __m512i b0 = _mm512_xor_si512(bswap512(c), rk[0]);
        for (int r = 1; r < GCM_ROUNDS; r++) b0 = _mm512_aesenc_epi128(b0, rk[r]);
        b0 = _mm512_aesenclast_epi128(b0, rk[GCM_ROUNDS]);
        __m512i x0 = _mm512_maskz_loadu_epi8(m0, in);
        b0 = _mm512_maskz_mov_epi8(m0, _mm512_xor_si512(b0, x0));
        _mm512_mask_storeu_epi8(out, m0, b0);
        acc = ghash4(acc, bswap512(enc ? b0 : x0), g->htab + (HTAB - nb));
    } else if (nb) {
        __mmask64 m0 = lane_mask(nb, 0), m1 = lane_mask(nb, 1), m2 = lane_mask(nb, 2),
                  m3 = lane_mask(nb, 3);
        GCM_COUNTERS4(c, inc4, b0, b1, b2, b3);
        AES4(b0, b1, b2, b3, rk);
        /* masked loads and stores touch only the message's bytes */
        __m512i x0 = _mm512_maskz_loadu_epi8(m0, in + 0);
        __m512i x1 = _mm512_maskz_loadu_epi8(m1, in + 64);
        __m512i x2 = _mm512_maskz_loadu_epi8(m2, in + 128);
        __m512i x3 = _mm512_maskz_loadu_epi8(m3, in + 192);
        b0 = _mm512_maskz_mov_epi8(m0, _mm512_xor_si512(b0, x0));
        b1 = _mm512_maskz_mov_epi8(m1, _mm512_xor_si512(b1, x1));
        b2 = _mm512_maskz_mov_epi8(m2, _mm512_xor_si512(b2, x2));
        b3 = _mm512_maskz_mov_epi8(m3, _mm512_xor_si512(b3, x3));
        _mm512_mask_storeu_epi8(out + 0, m0, b0);
        _mm512_mask_storeu_epi8(out + 64, m1, b1);
        _mm512_mask_storeu_epi8(out + 128, m2, b2);
        _mm512_mask_storeu_epi8(out + 192, m3, b3);
        const __m128i *h = g->htab + (HTAB - nb);
        if (enc)
            acc = ghash16(acc, bswap512(b0), bswap512(b1), bswap512(b2), bswap512(b3), h);
        else
            acc = ghash16(acc, bswap512(x0), bswap512(x1), bswap512(x2), bswap512(x3), h);
    }
    g->acc = acc;
}

static inline void ghash1(fp_gcm *g, const uint8_t blk[16]) {
    __m128i x = bswap128(_mm_loadu_si128((const __m128i *)blk));
    g->acc = gf_mul(_mm_xor_si128(g->acc, x), g->htab[HTAB - 1]);
}

void fp_gcm_update(fp_gcm *g, const uint8_t *in, uint8_t *out, size_t n, int enc) {
    g->len += n;
    if (g->npart) { /* finish the partial block first */
        while (n && g->npart < 16) {
            uint8_t x = *in++, y = (uint8_t)(x ^ g->ks[g->npart]);
            g->part[g->npart++] = enc ? y : x;
            *out++ = y;
            n--;
        }
        if (g->npart < 16) return;
        ghash1(g, g->part);
        g->npart = 0;
    }
    size_t nb = n / 16;
    if (nb) {
        gcm_blocks(g, in, out, nb, enc);
        in += nb * 16;
        out += nb * 16;
        n -= nb * 16;
    }
    if (n) { /* a partial block: its GHASH waits for the rest, or for the tag */
        _mm_storeu_si128((__m128i *)g->ks, aes_block(g, bswap128(g->ctr)));
        g->ctr = _mm_add_epi32(g->ctr, _mm_cvtsi32_si128(1));
        for (size_t i = 0; i < n; i++) {
            uint8_t x = in[i], y = (uint8_t)(x ^ g->ks[i]);
            g->part[i] = enc ? y : x;
            out[i] = y;
        }
        g->npart = n;
    }
}

void fp_gcm_tag(fp_gcm *g, uint8_t tag[16]) {
    if (g->npart) {
        memset(g->part + g->npart, 0, 16 - g->npart);
        ghash1(g, g->part);
        g->npart = 0;
    }
    /* len(A) || len(C) in bits, byte-reversed: len(C) is the low quadword */
    __m128i lens = _mm_set_epi64x(0, (long long)(g->len * 8));
    g->acc = gf_mul(_mm_xor_si128(g->acc, lens), g->htab[HTAB - 1]);
    _mm_storeu_si128((__m128i *)tag, _mm_xor_si128(bswap128(g->acc), g->ek0));
}

int fp_gcm_verify(fp_gcm *g, const uint8_t expect[16]) {
    uint8_t tag[16];
    uint8_t diff = 0;
    fp_gcm_tag(g, tag);
    for (int i = 0; i < 16; i++) diff |= (uint8_t)(tag[i] ^ expect[i]);
    return diff ? -1 : 0;
}

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

#endif /* FP_GCM_X86 */
