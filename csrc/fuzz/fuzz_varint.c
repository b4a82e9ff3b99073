/* libFuzzer harness: uvarint decode/encode round trip and minimality. */
#include <stdlib.h>

#include "fp_frame.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    uint64_t v = 0;
    int n = fp_uvarint_decode(data, size, &v);
    if (n > 0) {
        uint8_t buf[FP_UVARINT_MAX_BYTES];
        if ((size_t)n > size || n > FP_UVARINT_MAX_BYTES) abort();
        int m = fp_uvarint_encode(v, buf, sizeof buf);
        /* minimal encoding only: re-encoding gives back the same bytes */
        if (m != n || memcmp(buf, data, (size_t)n) != 0) abort();
    } else if (n == 0) {
        if (size >= FP_UVARINT_MAX_BYTES) abort(); /* 9 bytes always decide */
    } else if (n != FP_EOVERLONG && n != FP_ENONMINIMAL) {
        abort();
    }
    if (size >= 8) {
        uint64_t x;
        memcpy(&x, data, 8);
        x &= FP_UVARINT_MAX;
        uint8_t buf[FP_UVARINT_MAX_BYTES];
        int m = fp_uvarint_encode(x, buf, sizeof buf);
        if (m <= 0 || fp_uvarint_decode(buf, (size_t)m, &v) != m || v != x) abort();
    }
    return 0;
}
