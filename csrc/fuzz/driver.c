/* Tiny stand-in for libFuzzer when clang is unavailable: feeds random inputs
 * (plus mutations of a few seeds) to LLVMFuzzerTestOneInput for N seconds.
 * Usage: ./fuzz_x.bin [seconds] [seed]  (run under gcc ASan/UBSan). */
#define _POSIX_C_SOURCE 200809L
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint64_t rng_state;
static uint64_t rng(void) { /* xorshift64* */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * UINT64_C(2685821657736338717);
}

int main(int argc, char **argv) {
    double seconds = argc > 1 ? atof(argv[1]) : 20.0;
    rng_state = argc > 2 ? strtoull(argv[2], NULL, 10) : (uint64_t)time(NULL);
    if (!rng_state) rng_state = 1;
    fprintf(stderr, "driver: seed %llu, %.0f s\n", (unsigned long long)rng_state, seconds);
    static uint8_t buf[1 << 16];
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    unsigned long iters = 0;
    for (;;) {
        size_t size = (size_t)(rng() % 4096);
        unsigned mode = (unsigned)(rng() % 4);
        for (size_t i = 0; i < size; i++) {
            uint64_t r = rng();
            /* bias toward small bytes / protocol-ish values */
            buf[i] = mode == 0 ? (uint8_t)r : mode == 1 ? (uint8_t)(r % 4) :
                     mode == 2 ? (uint8_t)((r & 1) ? 0x80 | (r >> 8) : (r >> 8) % 16) : 0;
            if (mode == 3 && r % 5 == 0) buf[i] = (uint8_t)(r >> 16);
        }
        LLVMFuzzerTestOneInput(buf, size);
        iters++;
        if ((iters & 1023) == 0) {
            clock_gettime(CLOCK_MONOTONIC, &t);
            if ((double)(t.tv_sec - t0.tv_sec) + (t.tv_nsec - t0.tv_nsec) / 1e9 >= seconds) break;
        }
    }
    fprintf(stderr, "driver: %lu inputs, no crash\n", iters);
    return 0;
}
