/* libFuzzer harness: yamux + mplex streaming decoders and the Noise frame
 * opener on arbitrary bytes, fed in arbitrary pieces.
 *
 * Invariants checked (abort on violation): records stay inside the fed
 * buffer, DATA payload totals never exceed the header lengths, the held header
 * is bounded, consumed <= n, errors are sticky; the decoders' `head` peek
 * changes nothing, and what it names is what feeding the bytes then gives.
 */
#include <stdlib.h>

#include "fp_aead.h"
#include "fp_frame.h"

#define FP_FUZZ_CHECK(c) \
    do {                 \
        if (!(c)) abort(); \
    } while (0)

static void fuzz_yamux(const uint8_t *data, size_t size, size_t step) {
    fp_yamux_decoder d;
    fp_yamux_record r[7]; /* small on purpose: exercises the resume path */
    fp_yamux_decoder_init(&d);
    size_t pos = 0;
    int err = 0;
    while (pos < size) {
        size_t n = size - pos < step ? size - pos : step;
        size_t off = 0;
        while (off < n || off == 0) {
            size_t consumed = 0, nout = 0;
            fp_yamux_decoder before = d;
            uint32_t sid = 0;
            size_t more = (size_t)data[pos + n - 1] << 8;
            size_t hk = fp_yamux_decoder_head(&d, data + pos + off, n - off, more, &sid);
            FP_FUZZ_CHECK(before.hdr_len == d.hdr_len && before.remaining == d.remaining &&
                          before.stream_id == d.stream_id && before.first == d.first &&
                          before.error == d.error);
            FP_FUZZ_CHECK(hk == 0 || hk == FP_YAMUX_HEADER_SIZE);
            int rc = fp_yamux_decoder_feed(&d, data + pos + off, n - off, &consumed, r, 7, &nout);
            if (hk) { /* a plain DATA header covering the rest of the bytes fed */
                FP_FUZZ_CHECK(rc == 0 && consumed == n - off);
                FP_FUZZ_CHECK(nout <= 1 && (nout == 0 || (r[0].type == 0 && r[0].flags == 0 &&
                                                            r[0].stream_id == sid)));
                if (more || n - off > hk) FP_FUZZ_CHECK(d.remaining >= more && d.stream_id == sid);
            }
            FP_FUZZ_CHECK(consumed <= n - off && nout <= 7);
            for (size_t k = 0; k < nout; k++) {
                if (r[k].offset != FP_NO_PAYLOAD) {
                    FP_FUZZ_CHECK(r[k].type == 0);
                    FP_FUZZ_CHECK(r[k].offset <= n - off && r[k].length <= n - off - r[k].offset);
                }
            }
            FP_FUZZ_CHECK(d.hdr_len < FP_YAMUX_HEADER_SIZE);
            if (rc) {
                FP_FUZZ_CHECK(rc == FP_EVERSION || rc == FP_ETYPE);
                FP_FUZZ_CHECK(!err || rc == err);
                err = rc;
                return;
            }
            off += consumed;
            if (nout < 7) break;
        }
        pos += n;
    }
}

static void fuzz_mplex(const uint8_t *data, size_t size, size_t step, uint64_t max) {
    fp_mplex_decoder d;
    fp_mplex_record r[5];
    fp_mplex_decoder_init(&d, max);
    size_t pos = 0;
    while (pos < size) {
        size_t n = size - pos < step ? size - pos : step;
        size_t off = 0;
        for (;;) {
            size_t consumed = 0, nout = 0;
            fp_mplex_decoder before = d;
            uint8_t flag = 0;
            uint64_t sid = 0;
            size_t more = (size_t)data[pos + n - 1] << 4;
            size_t hk = fp_mplex_decoder_head(&d, data + pos + off, n - off, more, &flag, &sid);
            FP_FUZZ_CHECK(before.hdr_len == d.hdr_len && before.remaining == d.remaining &&
                          before.stream_id == d.stream_id && before.error == d.error);
            FP_FUZZ_CHECK(hk <= n - off && hk < FP_MPLEX_MAX_HEADER + 1);
            int rc = fp_mplex_decoder_feed(&d, data + pos + off, n - off, &consumed, r, 5, &nout);
            if (hk) { /* a Message header covering the rest of the bytes fed */
                FP_FUZZ_CHECK(rc == 0 && consumed == n - off && (flag == 1 || flag == 2));
                FP_FUZZ_CHECK(nout <= 1 && (nout == 0 || (r[0].flag == flag && r[0].stream_id == sid)));
                if (more || n - off > hk) FP_FUZZ_CHECK(d.remaining >= more && d.stream_id == sid);
            }
            FP_FUZZ_CHECK(consumed <= n - off && nout <= 5);
            for (size_t k = 0; k < nout; k++) {
                FP_FUZZ_CHECK(r[k].flag < 7 && r[k].stream_id <= FP_MPLEX_MAX_STREAM_ID);
                FP_FUZZ_CHECK(r[k].length <= max);
                FP_FUZZ_CHECK(r[k].offset <= n - off && r[k].length <= n - off - r[k].offset);
            }
            FP_FUZZ_CHECK(d.hdr_len < FP_MPLEX_MAX_HEADER);
            if (rc) return;
            off += consumed;
            if (nout < 5) break;
        }
        pos += n;
    }
}

static void fuzz_noise(const uint8_t *data, size_t size) {
    static const uint8_t key[32] = {1, 2, 3};
    static uint8_t out[1 << 17];
    fp_aead a;
    if (fp_aead_init(&a, key, 0, 0) != 0) return;
    size_t consumed = 0, outlen = 0;
    int rc = fp_aead_open_frames(&a, data, size, &consumed, out,
                                 size < sizeof out ? size : sizeof out, &outlen);
    FP_FUZZ_CHECK(consumed <= size && outlen <= consumed);
    FP_FUZZ_CHECK(rc == 0 || rc == FP_EAUTH || rc == FP_EFRAME || rc == FP_ENOBUFS);
    fp_aead_free(&a);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size == 0) return 0;
    size_t step = (size_t)(data[0] % 17) + 1;
    fuzz_yamux(data + 1, size - 1, step);
    fuzz_yamux(data + 1, size - 1, size);
    fuzz_mplex(data + 1, size - 1, step, (uint64_t)data[0] * 4);
    fuzz_mplex(data + 1, size - 1, size, UINT64_MAX);
    fuzz_noise(data + 1, size - 1);
    return 0;
}
