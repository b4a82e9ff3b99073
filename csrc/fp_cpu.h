/* fp_cpu.h - x86-64 CPU features for the kernels' dispatch (fp_gcm.c,
 * fp_chacha.c; no Python.h).
 *
 * CPUID and XGETBV are read directly rather than through
 * __builtin_cpu_supports, whose feature names differ between compilers. XCR0
 * says which register state the OS saves: an instruction the CPU has but whose
 * registers the OS does not save must not be used. Call from code compiled for
 * plain x86-64 (outside any target pragma).
 */
#ifndef FP_CPU_H
#define FP_CPU_H

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>

typedef struct {
    unsigned ecx1;       /* CPUID leaf 1 ECX */
    unsigned ebx7, ecx7; /* CPUID leaf 7 subleaf 0 EBX, ECX */
    unsigned xcr0;       /* XCR0's low half; 0 when the OS has not enabled XSAVE */
} fp_cpu_info;

#define FP_XCR0_AVX 0x06u    /* SSE and AVX state */
#define FP_XCR0_AVX512 0xe6u /* and the opmask and both halves of the ZMM state */

static inline fp_cpu_info fp_cpu_read(void) {
    fp_cpu_info info = {0, 0, 0, 0};
    unsigned a, b, c, d, lo, hi;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return info;
    info.ecx1 = c;
    if (c & 1u << 27) { /* OSXSAVE: XGETBV is usable */
        __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
        (void)hi;
        info.xcr0 = lo;
    }
    if (__get_cpuid_count(7, 0, &a, &b, &c, &d)) {
        info.ebx7 = b;
        info.ecx7 = c;
    }
    return info;
}

/* every bit of `bits` is set in `reg` */
static inline int fp_cpu_has(unsigned reg, unsigned bits) { return (reg & bits) == bits; }

#endif
#endif /* FP_CPU_H */
