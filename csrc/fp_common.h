/* fp_common.h - shared helpers for fastp2p's C kernels (no Python.h).
 *
 * Status codes: every fp_ function returns 0 (or a non-negative count) on
 * success and a negative errno-style value on failure; the FP_E* names below
 * are the only ones used.
 */
#ifndef FP_COMMON_H
#define FP_COMMON_H

#include <assert.h>
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#if defined(__GNUC__) || defined(__clang__)
#define FP_LIKELY(x) __builtin_expect(!!(x), 1)
#define FP_UNLIKELY(x) __builtin_expect(!!(x), 0)
#else
#define FP_LIKELY(x) (x)
#define FP_UNLIKELY(x) (x)
#endif

/* Negative errno-style status codes. */
#define FP_OK 0
#define FP_EINVAL (-EINVAL)       /* bad argument from the local caller */
#define FP_ENOBUFS (-ENOBUFS)     /* caller-provided output too small */
#define FP_ENOMEM (-ENOMEM)       /* allocation failed */
#define FP_EVERSION (-EPROTO)     /* yamux: unknown version */
#define FP_ETYPE (-EBADMSG)       /* unknown frame type / mplex flag 7 */
#define FP_E2BIG (-E2BIG)         /* frame larger than allowed */
#define FP_EOVERLONG (-EOVERFLOW) /* varint longer than 9 bytes */
#define FP_ENONMINIMAL (-EILSEQ)  /* varint not minimally encoded */
#define FP_EFRAME (-EMSGSIZE)     /* malformed frame (e.g. noise frame < tag) */
#define FP_EAUTH (-EACCES)        /* AEAD tag did not verify */
#define FP_ENONCE (-ERANGE)       /* Noise nonce exhausted */
#define FP_ECRYPTO (-EIO)         /* libcrypto failure */
#define FP_EDEAD (-EPIPE)         /* object already failed; unusable */

/* Bounds-check: fail with FP_ENOBUFS unless `need` bytes fit in `have`. */
#define FP_CHECK_BOUNDS(need, have)                \
    do {                                           \
        if (FP_UNLIKELY((size_t)(need) > (size_t)(have))) \
            return FP_ENOBUFS;                     \
    } while (0)

static_assert(sizeof(uint8_t) == 1, "uint8_t must be one byte");
static_assert(sizeof(size_t) >= 4, "size_t must be at least 32 bits");

static inline uint16_t fp_load_be16(const uint8_t *p) {
    return (uint16_t)(((uint16_t)p[0] << 8) | p[1]);
}
static inline uint32_t fp_load_be32(const uint8_t *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}
static inline void fp_store_be16(uint8_t *p, uint16_t v) {
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}
static inline void fp_store_be32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}
static inline uint32_t fp_load_le32(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static inline uint64_t fp_load_le64(const uint8_t *p) {
    return (uint64_t)fp_load_le32(p) | ((uint64_t)fp_load_le32(p + 4) << 32);
}
static inline void fp_store_le64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}

/* Zeroes n bytes of key material the compiler may not drop as a dead store. */
static inline void fp_wipe(void *p, size_t n) {
    volatile uint8_t *v = (volatile uint8_t *)p;
    for (size_t i = 0; i < n; i++) v[i] = 0;
}

/* A spin-wait hint to the CPU: let the sibling hyperthread run, save power. */
static inline void fp_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield" ::: "memory");
#else
    __asm__ __volatile__("" ::: "memory");
#endif
}

#endif /* FP_COMMON_H */
