/* fp_xsalsa20.c - portable XSalsa20 (see fp_xsalsa20.h for the contract).
 *
 * Written from the specifications: "Salsa20 specification" (Bernstein, 2005)
 * and "Extending the Salsa20 nonce" (2008). Words are little-endian on the
 * wire; loads and stores go through byte helpers, so any host byte order and
 * any buffer alignment work.
 *
 * Speed: the bulk path computes FP_XS_LANES consecutive blocks side by side,
 * each state word a vector over the lanes (GCC/clang vector extensions: SSE2
 * on baseline x86-64, NEON on arm64, scalar elsewhere); the plain one-block
 * path serves the tail and HSalsa20.
 */
#include "fp_xsalsa20.h"

#include <stdatomic.h>

#define FP_XS_LANES 16 /* blocks per bulk step */

static inline uint32_t rotl32(uint32_t v, int c) { return (v << c) | (v >> (32 - c)); }

static inline void store_le32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

/* "expand 32-byte k" as four little-endian words (diagonal 0, 5, 10, 15). */
static const uint32_t SIGMA[4] = {0x61707865u, 0x3320646eu, 0x79622d32u, 0x6b206574u};

/* Salsa20 quarter-round on words a, b, c, d. */
#define QR(x, a, b, c, d)                  \
    do {                                   \
        x[b] ^= rotl32(x[a] + x[d], 7);    \
        x[c] ^= rotl32(x[b] + x[a], 9);    \
        x[d] ^= rotl32(x[c] + x[b], 13);   \
        x[a] ^= rotl32(x[d] + x[c], 18);   \
    } while (0)

/* Ten double rounds (column round then row round) = Salsa20/20. */
static void salsa20_rounds(uint32_t x[16]) {
    for (int i = 0; i < 10; i++) {
        QR(x, 0, 4, 8, 12);
        QR(x, 5, 9, 13, 1);
        QR(x, 10, 14, 2, 6);
        QR(x, 15, 3, 7, 11);
        QR(x, 0, 1, 2, 3);
        QR(x, 5, 6, 7, 4);
        QR(x, 10, 11, 8, 9);
        QR(x, 15, 12, 13, 14);
    }
}

void fp_salsa20_block(uint8_t out[64], const uint32_t input[16]) {
    uint32_t x[16];
    memcpy(x, input, sizeof x);
    salsa20_rounds(x);
    for (int i = 0; i < 16; i++) store_le32(out + 4 * i, x[i] + input[i]);
}

#if defined(__GNUC__) || defined(__clang__)
#define VROTL(v, c) (((v) << (c)) | ((v) >> (32 - (c))))
#define QRV(x, a, b, c, d)                 \
    do {                                   \
        x[b] ^= VROTL(x[a] + x[d], 7);     \
        x[c] ^= VROTL(x[b] + x[a], 9);     \
        x[d] ^= VROTL(x[c] + x[b], 13);    \
        x[a] ^= VROTL(x[d] + x[c], 18);    \
    } while (0)

/* dst = src ^ keystream of LANES blocks starting at counter `ctr`. One vector
 * holds word i of LANES consecutive blocks (GCC/clang vector extensions:
 * lowered to whatever SIMD the target has, or to scalar code). */
#define FP_XS_DEFINE_LANES(NAME, LANES, ATTR)                                                  \
    typedef uint32_t NAME##_vec __attribute__((vector_size(4 * (LANES))));                     \
    ATTR static void NAME(uint8_t *dst, const uint8_t *src, const uint32_t input[16], uint64_t ctr) { \
        NAME##_vec x[16], j[16];                                                                \
        for (int i = 0; i < 16; i++)                                                            \
            for (int l = 0; l < (LANES); l++) x[i][l] = input[i];                               \
        for (int l = 0; l < (LANES); l++) {                                                     \
            uint64_t c = ctr + (uint64_t)l;                                                     \
            x[8][l] = (uint32_t)c;                                                              \
            x[9][l] = (uint32_t)(c >> 32);                                                      \
        }                                                                                       \
        memcpy(j, x, sizeof j);                                                                 \
        for (int r = 0; r < 10; r++) {                                                          \
            QRV(x, 0, 4, 8, 12);                                                                \
            QRV(x, 5, 9, 13, 1);                                                                \
            QRV(x, 10, 14, 2, 6);                                                               \
            QRV(x, 15, 3, 7, 11);                                                               \
            QRV(x, 0, 1, 2, 3);                                                                 \
            QRV(x, 5, 6, 7, 4);                                                                 \
            QRV(x, 10, 11, 8, 9);                                                               \
            QRV(x, 15, 12, 13, 14);                                                             \
        }                                                                                       \
        uint32_t w[16][(LANES)];                                                                \
        for (int i = 0; i < 16; i++) {                                                          \
            NAME##_vec v = x[i] + j[i];                                                         \
            memcpy(w[i], &v, sizeof v);                                                         \
        }                                                                                       \
        for (int l = 0; l < (LANES); l++) {                                                     \
            const uint8_t *s = src + 64 * l;                                                    \
            uint8_t *d = dst + 64 * l;                                                          \
            for (int i = 0; i < 16; i++) store_le32(d + 4 * i, fp_load_le32(s + 4 * i) ^ w[i][l]); \
        }                                                                                       \
    }

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__linux__)
/* x86-64 + gcc + glibc: the 8-lane function also in an AVX2 build, picked at
 * load time (ifunc; about 1.6x the SSE2 baseline), and a 16-lane AVX-512 one
 * (a native 32-bit rotate; about 1.6x AVX2) used where the CPU has AVX-512F. */
#define FP_XS_AVX512 1
FP_XS_DEFINE_LANES(salsa20_xor_lanes8, 8, __attribute__((target_clones("avx2", "default"))))
FP_XS_DEFINE_LANES(salsa20_xor_lanes16, 16, __attribute__((target("avx512f"))))
#else
FP_XS_DEFINE_LANES(salsa20_xor_lanes8, 8, )
#endif

/* -1: not decided yet; 0: 8-lane code; 1: AVX-512 (see fp_xsalsa20_use_avx512).
 * Atomic: the first calls may come from several threads at once (GIL released). */
static _Atomic int avx512 = -1;

int fp_xsalsa20_use_avx512(int on) {
#ifdef FP_XS_AVX512
    if (on < 0) on = __builtin_cpu_supports("avx512f") ? 1 : 0;
    avx512 = on && __builtin_cpu_supports("avx512f");
    return avx512;
#else
    (void)on;
    avx512 = 0;
    return 0;
#endif
}

/* dst = src ^ keystream of FP_XS_LANES (16) blocks starting at counter `ctr`. */
static void salsa20_xor_lanes(uint8_t *dst, const uint8_t *src, const uint32_t input[16], uint64_t ctr) {
#ifdef FP_XS_AVX512
    if (FP_UNLIKELY(avx512 < 0)) fp_xsalsa20_use_avx512(-1);
    if (avx512) {
        salsa20_xor_lanes16(dst, src, input, ctr);
        return;
    }
#endif
    salsa20_xor_lanes8(dst, src, input, ctr);
    salsa20_xor_lanes8(dst + 512, src + 512, input, ctr + 8);
}
#else
/* Portable fallback: one block at a time. */
static void salsa20_xor_lanes(uint8_t *dst, const uint8_t *src, const uint32_t input[16], uint64_t ctr) {
    uint32_t in[16];
    uint8_t ks[64];
    memcpy(in, input, sizeof in);
    for (int l = 0; l < FP_XS_LANES; l++) {
        uint64_t c = ctr + (uint64_t)l;
        in[8] = (uint32_t)c;
        in[9] = (uint32_t)(c >> 32);
        fp_salsa20_block(ks, in);
        for (int i = 0; i < 64; i++) dst[64 * l + i] = src[64 * l + i] ^ ks[i];
    }
}
#endif

void fp_hsalsa20(uint8_t out[32], const uint8_t key[32], const uint8_t in[16]) {
    uint32_t x[16];
    x[0] = SIGMA[0];
    x[5] = SIGMA[1];
    x[10] = SIGMA[2];
    x[15] = SIGMA[3];
    for (int i = 0; i < 4; i++) {
        x[1 + i] = fp_load_le32(key + 4 * i);
        x[11 + i] = fp_load_le32(key + 16 + 4 * i);
        x[6 + i] = fp_load_le32(in + 4 * i);
    }
    salsa20_rounds(x);
    /* No feed-forward: the diagonal and the words that held the input. */
    static const int pick[8] = {0, 5, 10, 15, 6, 7, 8, 9};
    for (int i = 0; i < 8; i++) store_le32(out + 4 * i, x[pick[i]]);
    memset(x, 0, sizeof x);
}

void fp_xsalsa20_init(fp_xsalsa20 *s, const uint8_t key[32], const uint8_t nonce[24]) {
    uint8_t sub[32];
    fp_hsalsa20(sub, key, nonce);
    s->input[0] = SIGMA[0];
    s->input[5] = SIGMA[1];
    s->input[10] = SIGMA[2];
    s->input[15] = SIGMA[3];
    for (int i = 0; i < 4; i++) {
        s->input[1 + i] = fp_load_le32(sub + 4 * i);
        s->input[11 + i] = fp_load_le32(sub + 16 + 4 * i);
    }
    s->input[6] = fp_load_le32(nonce + 16);
    s->input[7] = fp_load_le32(nonce + 20);
    s->input[8] = 0;
    s->input[9] = 0;
    s->used = FP_SALSA20_BLOCK;
    s->exhausted = 0;
    memset(s->block, 0, sizeof s->block);
    memset(sub, 0, sizeof sub);
}

static inline uint64_t counter_of(const fp_xsalsa20 *s) {
    return (uint64_t)s->input[8] | ((uint64_t)s->input[9] << 32);
}

static inline void set_counter(fp_xsalsa20 *s, uint64_t c) {
    s->input[8] = (uint32_t)c;
    s->input[9] = (uint32_t)(c >> 32);
}

static inline void xor_bytes(uint8_t *dst, const uint8_t *src, const uint8_t *ks, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t a, b;
        memcpy(&a, src + i, 8);
        memcpy(&b, ks + i, 8);
        a ^= b;
        memcpy(dst + i, &a, 8);
    }
    for (; i < n; i++) dst[i] = src[i] ^ ks[i];
}

/* Generate the block at the current counter into s->block and advance. */
static int next_block(fp_xsalsa20 *s) {
    if (FP_UNLIKELY(s->exhausted)) return FP_ENONCE;
    fp_salsa20_block(s->block, s->input);
    uint64_t c = counter_of(s) + 1;
    set_counter(s, c);
    if (c == 0) s->exhausted = 1;
    s->used = 0;
    return 0;
}

int fp_xsalsa20_xor(fp_xsalsa20 *s, uint8_t *dst, const uint8_t *src, size_t len) {
    /* 1. what is left of the current keystream block */
    size_t left = FP_SALSA20_BLOCK - s->used;
    if (left) {
        size_t n = len < left ? len : left;
        xor_bytes(dst, src, s->block + s->used, n);
        s->used += (uint32_t)n;
        dst += n;
        src += n;
        len -= n;
    }
    /* 2. whole groups of lanes, straight from the counter */
    const size_t group = (size_t)FP_SALSA20_BLOCK * FP_XS_LANES;
    while (len >= group) {
        uint64_t c = counter_of(s);
        if (FP_UNLIKELY(s->exhausted || c > UINT64_MAX - FP_XS_LANES)) break;  /* near the wrap */
        salsa20_xor_lanes(dst, src, s->input, c);
        set_counter(s, c + FP_XS_LANES);
        dst += group;
        src += group;
        len -= group;
    }
    /* 3. single blocks; a partial last block keeps its unused keystream */
    while (len) {
        int rc = next_block(s);
        if (rc) return rc;
        size_t n = len < FP_SALSA20_BLOCK ? len : FP_SALSA20_BLOCK;
        xor_bytes(dst, src, s->block, n);
        s->used = (uint32_t)n;
        dst += n;
        src += n;
        len -= n;
    }
    return 0;
}

void fp_xsalsa20_wipe(fp_xsalsa20 *s) { fp_wipe(s, sizeof *s); }
