/* hex.h - test vectors written in hex, for the C tests (csrc/tests/test_*.c).
 * Needs <assert.h>, <stdio.h>, <string.h>. */
#ifndef FP_TESTS_HEX_H
#define FP_TESTS_HEX_H

/* The bytes of hex string h into out; returns how many (strlen(h) / 2). */
static inline size_t unhex(const char *h, uint8_t *out) {
    size_t n = strlen(h) / 2;
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        assert(sscanf(h + 2 * i, "%2x", &v) == 1);
        out[i] = (uint8_t)v;
    }
    return n;
}

#endif /* FP_TESTS_HEX_H */
