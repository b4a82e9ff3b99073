/* libFuzzer harness: XSalsa20 stream position keeping.
 *
 * The input gives a key, a nonce and a sequence of chunk lengths; the rest is
 * the message. Invariants (abort on violation): XOR-ing in those chunks equals
 * one call over the whole message, in place equals out of place, applying the
 * stream twice gives the message back, and nothing reads or writes out of
 * bounds (ASan).
 */
#include <stdlib.h>
#include <string.h>

#include "fp_xsalsa20.h"

#define FP_FUZZ_CHECK(c) \
    do {                 \
        if (!(c)) abort(); \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 32 + 24 + 1) return 0;
    const uint8_t *key = data, *nonce = data + 32;
    size_t nsplit = data[56] % 8;
    data += 57;
    size -= 57;
    if (size < nsplit * 2) return 0;
    const uint8_t *splits = data;
    data += nsplit * 2;
    size -= nsplit * 2;
    /* repeat the message so the lane path (>= 512 bytes) is reached too */
    size_t len = size * (size_t)(1 + (size ? 2048 / (size + 1) : 0));
    uint8_t *msg = malloc(len + 1), *one = malloc(len + 1), *chunked = malloc(len + 1);
    FP_FUZZ_CHECK(msg && one && chunked);
    for (size_t i = 0; i < len; i++) msg[i] = data[i % size];

    fp_xsalsa20 s;
    fp_xsalsa20_init(&s, key, nonce);
    FP_FUZZ_CHECK(fp_xsalsa20_xor(&s, one, msg, len) == 0);

    memcpy(chunked, msg, len);
    fp_xsalsa20_init(&s, key, nonce);
    size_t off = 0;
    for (size_t i = 0; i < nsplit && off < len; i++) {
        size_t m = ((size_t)splits[2 * i] << 8 | splits[2 * i + 1]) % (len - off + 1);
        FP_FUZZ_CHECK(fp_xsalsa20_xor(&s, chunked + off, chunked + off, m) == 0);
        off += m;
    }
    FP_FUZZ_CHECK(fp_xsalsa20_xor(&s, chunked + off, chunked + off, len - off) == 0);
    FP_FUZZ_CHECK(memcmp(one, chunked, len) == 0);

    fp_xsalsa20_init(&s, key, nonce);
    FP_FUZZ_CHECK(fp_xsalsa20_xor(&s, chunked, chunked, len) == 0);
    FP_FUZZ_CHECK(memcmp(chunked, msg, len) == 0);
    fp_xsalsa20_wipe(&s);
    free(msg);
    free(one);
    free(chunked);
    return 0;
}
