/* Plain-assert unit tests for fp_frame.c (built by ci/test_c.sh under ASan/UBSan). */
#undef NDEBUG
#include <assert.h>
#include <stdio.h>
#include <stdlib.h>

#include "fp_frame.h"

static void test_uvarint(void) {
    uint8_t b[16];
    uint64_t v;
    assert(fp_uvarint_encode(0, b, sizeof b) == 1 && b[0] == 0);
    assert(fp_uvarint_encode(300, b, sizeof b) == 2 && b[0] == 0xAC && b[1] == 0x02);
    assert(fp_uvarint_decode(b, 2, &v) == 2 && v == 300);
    assert(fp_uvarint_decode(b, 1, &v) == 0);
    assert(fp_uvarint_encode(FP_UVARINT_MAX, b, sizeof b) == 9);
    assert(fp_uvarint_decode(b, 9, &v) == 9 && v == FP_UVARINT_MAX);
    assert(fp_uvarint_encode(FP_UVARINT_MAX + 1, b, sizeof b) == FP_EINVAL);
    assert(fp_uvarint_encode(300, b, 1) == FP_ENOBUFS);
    const uint8_t nonmin[] = {0x80, 0x00};
    assert(fp_uvarint_decode(nonmin, 2, &v) == FP_ENONMINIMAL);
    const uint8_t overlong[] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01};
    assert(fp_uvarint_decode(overlong, sizeof overlong, &v) == FP_EOVERLONG);
    assert(fp_uvarint_decode(overlong, 8, &v) == 0);
    for (uint64_t x = 1; x && x <= FP_UVARINT_MAX; x = x * 3 + 1) {
        int n = fp_uvarint_encode(x, b, sizeof b);
        assert(n > 0 && fp_uvarint_decode(b, (size_t)n, &v) == n && v == x);
    }
}

static void test_yamux_header(void) {
    uint8_t h[12];
    fp_yamux_header hd;
    assert(fp_yamux_encode_header(h, 1, 1, 1, 262144) == 0);
    const uint8_t want[12] = {0, 1, 0, 1, 0, 0, 0, 1, 0, 4, 0, 0};
    assert(memcmp(h, want, 12) == 0);
    assert(fp_yamux_decode_header(h, &hd) == 0);
    assert(hd.type == 1 && hd.flags == 1 && hd.stream_id == 1 && hd.length == 262144);
    assert(fp_yamux_encode_header(h, 4, 0, 0, 0) == FP_EINVAL);
    h[0] = 1;
    assert(fp_yamux_decode_header(h, &hd) == FP_EVERSION);
    h[0] = 0;
    h[1] = 4;
    assert(fp_yamux_decode_header(h, &hd) == FP_ETYPE);
}

static void test_yamux_decoder(void) {
    uint8_t buf[64];
    size_t n = 0, consumed, nout;
    fp_yamux_record r[8];
    fp_yamux_decoder d;
    fp_yamux_encode_header(buf, 0, FP_YAMUX_FLAG_SYN | FP_YAMUX_FLAG_FIN, 7, 5);
    memcpy(buf + 12, "hello", 5);
    fp_yamux_encode_header(buf + 17, 2, 0, 0, 99);
    n = 29;

    fp_yamux_decoder_init(&d);
    assert(fp_yamux_decoder_feed(&d, buf, n, &consumed, r, 8, &nout) == 0);
    assert(consumed == n && nout == 2);
    assert(r[0].type == 0 && r[0].flags == 5 && r[0].length == 5 && r[0].offset == 12);
    assert(r[1].type == 2 && r[1].length == 99 && r[1].offset == FP_NO_PAYLOAD);

    /* byte by byte: SYN on the first chunk, FIN on the last */
    fp_yamux_decoder_init(&d);
    size_t data_recs = 0;
    for (size_t i = 0; i < n; i++) {
        assert(fp_yamux_decoder_feed(&d, buf + i, 1, &consumed, r, 8, &nout) == 0);
        assert(consumed == 1);
        for (size_t k = 0; k < nout; k++) {
            if (r[k].type == 0) {
                assert(r[k].length == 1 && r[k].offset == 0);
                uint16_t want = data_recs == 0 ? FP_YAMUX_FLAG_SYN : data_recs == 4 ? FP_YAMUX_FLAG_FIN : 0;
                assert(r[k].flags == want);
                data_recs++;
            }
        }
        assert(d.hdr_len < 12);
    }
    assert(data_recs == 5);

    /* output array full: stops early, resumes */
    uint8_t many[12 * 10];
    for (int i = 0; i < 10; i++) fp_yamux_encode_header(many + 12 * i, 1, 0, (uint32_t)i, 0);
    fp_yamux_decoder_init(&d);
    assert(fp_yamux_decoder_feed(&d, many, sizeof many, &consumed, r, 3, &nout) == 0);
    assert(nout == 3 && consumed == 36);

    /* errors are sticky */
    fp_yamux_decoder_init(&d);
    uint8_t bad[12] = {1};
    assert(fp_yamux_decoder_feed(&d, bad, 12, &consumed, r, 8, &nout) == FP_EVERSION);
    assert(fp_yamux_decoder_feed(&d, many, 12, &consumed, r, 8, &nout) == FP_EVERSION);
    assert(nout == 0);
}

/* fp_yamux_decoder_in_payload agrees with the records feed would return */
static void test_yamux_in_payload(void) {
    uint8_t h[12];
    size_t consumed, nout;
    fp_yamux_record r[8];
    fp_yamux_decoder d;
    uint32_t sid = 0;
    fp_yamux_decoder_init(&d);
    assert(!fp_yamux_decoder_in_payload(&d, 1, &sid)); /* no frame in progress */
    fp_yamux_encode_header(h, 0, FP_YAMUX_FLAG_SYN, 9, 100);
    assert(fp_yamux_decoder_feed(&d, h, 12, &consumed, r, 8, &nout) == 0 && nout == 0);
    assert(!fp_yamux_decoder_in_payload(&d, 10, &sid)); /* the first piece carries SYN */
    uint8_t body[100] = {0};
    assert(fp_yamux_decoder_feed(&d, body, 10, &consumed, r, 8, &nout) == 0 && r[0].flags == 1);
    assert(fp_yamux_decoder_in_payload(&d, 90, &sid) && sid == 9); /* the rest, no FIN */
    assert(!fp_yamux_decoder_in_payload(&d, 91, &sid));             /* beyond the frame */
    fp_yamux_decoder_take_payload(&d, 40);
    assert(d.remaining == 50);
    /* a FIN frame: the last piece carries it */
    fp_yamux_encode_header(h, 0, FP_YAMUX_FLAG_FIN, 3, 20);
    fp_yamux_decoder_take_payload(&d, 50);
    assert(fp_yamux_decoder_feed(&d, h, 12, &consumed, r, 8, &nout) == 0 && nout == 0);
    assert(fp_yamux_decoder_feed(&d, body, 5, &consumed, r, 8, &nout) == 0 && r[0].flags == 0);
    assert(fp_yamux_decoder_in_payload(&d, 14, &sid) && sid == 3);
    assert(!fp_yamux_decoder_in_payload(&d, 15, &sid));
    /* a partial header held: never */
    fp_yamux_decoder_take_payload(&d, 15);
    assert(fp_yamux_decoder_feed(&d, h, 5, &consumed, r, 8, &nout) == 0);
    assert(!fp_yamux_decoder_in_payload(&d, 1, &sid));
}

/* the header at the start of a frame: only a plain DATA header between frames,
 * whose length covers what follows; nothing changes */
static void test_yamux_head(void) {
    uint8_t h[16];
    size_t consumed, nout;
    fp_yamux_record r[8];
    fp_yamux_decoder d;
    uint32_t sid = 0;
    fp_yamux_decoder_init(&d);
    fp_yamux_encode_header(h, 0, 0, 5, 1000);
    assert(fp_yamux_decoder_head(&d, h, 12, 1000, &sid) == 12 && sid == 5);
    assert(fp_yamux_decoder_head(&d, h, 16, 996, &sid) == 12);  /* 4 payload bytes in buf */
    assert(fp_yamux_decoder_head(&d, h, 16, 997, &sid) == 0);   /* longer than the frame */
    assert(fp_yamux_decoder_head(&d, h, 11, 0, &sid) == 0);     /* no whole header */
    assert(d.remaining == 0 && d.hdr_len == 0);                 /* nothing changed */
    fp_yamux_encode_header(h, 0, FP_YAMUX_FLAG_SYN, 5, 1000);
    assert(fp_yamux_decoder_head(&d, h, 12, 10, &sid) == 0);    /* flags */
    fp_yamux_encode_header(h, 1, 0, 5, 1000);
    assert(fp_yamux_decoder_head(&d, h, 12, 10, &sid) == 0);    /* a window update */
    h[0] = 1;
    assert(fp_yamux_decoder_head(&d, h, 12, 10, &sid) == 0);    /* a bad version */
    fp_yamux_encode_header(h, 0, 0, 5, 1000);
    assert(fp_yamux_decoder_feed(&d, h, 12, &consumed, r, 8, &nout) == 0);
    assert(fp_yamux_decoder_head(&d, h, 12, 10, &sid) == 0);    /* inside a frame */
}

static void test_mplex_head(void) {
    uint8_t buf[32];
    size_t consumed, nout;
    fp_mplex_record r[8];
    fp_mplex_decoder d;
    uint8_t flag = 0;
    uint64_t sid = 0;
    fp_mplex_decoder_init(&d, 1 << 20);
    int a = fp_mplex_encode_header(300, 2, 70000, buf, sizeof buf);
    assert(a == 5);
    assert(fp_mplex_decoder_head(&d, buf, 18, 70000 - 13, &flag, &sid) == 5);
    assert(flag == 2 && sid == 300);
    assert(fp_mplex_decoder_head(&d, buf, 18, 70000 - 12, &flag, &sid) == 0); /* too long */
    assert(fp_mplex_decoder_head(&d, buf, 3, 0, &flag, &sid) == 0);           /* incomplete */
    a = fp_mplex_encode_header(3, 4, 0, buf, sizeof buf);                      /* a Close */
    assert(fp_mplex_decoder_head(&d, buf, 18, 0, &flag, &sid) == 0);
    a = fp_mplex_encode_header(3, 1, 1 << 21, buf, sizeof buf);                /* over the max */
    assert(fp_mplex_decoder_head(&d, buf, 18, 0, &flag, &sid) == 0);
    a = fp_mplex_encode_header(3, 1, 100, buf, sizeof buf);
    assert(fp_mplex_decoder_feed(&d, buf, (size_t)a, &consumed, r, 8, &nout) == 0);
    assert(fp_mplex_decoder_head(&d, buf, 18, 0, &flag, &sid) == 0);           /* inside a frame */
}

static void test_mplex(void) {
    uint8_t buf[64];
    size_t consumed, nout;
    fp_mplex_record r[8];
    fp_mplex_decoder d;
    int h = fp_mplex_encode_header(17, 6, 300, buf, sizeof buf);
    assert(h == 4 && buf[0] == 0x8e && buf[1] == 0x01 && buf[2] == 0xac && buf[3] == 0x02);
    assert(fp_mplex_encode_header(1, 7, 0, buf, sizeof buf) == FP_EINVAL);
    assert(fp_mplex_encode_header(FP_MPLEX_MAX_STREAM_ID + 1, 0, 0, buf, sizeof buf) == FP_EINVAL);

    int a = fp_mplex_encode_header(3, 2, 4, buf, sizeof buf);
    memcpy(buf + a, "abcd", 4);
    int b = fp_mplex_encode_header(3, 4, 0, buf + a + 4, sizeof buf - (size_t)a - 4);
    size_t n = (size_t)a + 4 + (size_t)b;
    fp_mplex_decoder_init(&d, 1 << 20);
    assert(fp_mplex_decoder_feed(&d, buf, n, &consumed, r, 8, &nout) == 0);
    assert(consumed == n && nout == 2);
    assert(r[0].flag == 2 && r[0].stream_id == 3 && r[0].length == 4 && r[0].offset == 2);
    assert(r[0].bits == (FP_MPLEX_REC_FIRST | FP_MPLEX_REC_LAST));
    assert(r[1].flag == 4 && r[1].length == 0);

    /* byte-by-byte header */
    fp_mplex_decoder_init(&d, 1 << 20);
    size_t got = 0;
    for (size_t i = 0; i < n; i++) {
        assert(fp_mplex_decoder_feed(&d, buf + i, 1, &consumed, r, 8, &nout) == 0);
        for (size_t k = 0; k < nout; k++) got += r[k].length;
    }
    assert(got == 4);

    /* errors */
    const uint8_t flag7[] = {0x0f, 0x00};
    fp_mplex_decoder_init(&d, 1 << 20);
    assert(fp_mplex_decoder_feed(&d, flag7, 2, &consumed, r, 8, &nout) == FP_ETYPE);
    assert(fp_mplex_decoder_feed(&d, buf, n, &consumed, r, 8, &nout) == FP_ETYPE);
    fp_mplex_decoder_init(&d, 3);
    assert(fp_mplex_decoder_feed(&d, buf, n, &consumed, r, 8, &nout) == FP_E2BIG);
    const uint8_t nonmin[] = {0x08, 0x80, 0x00};
    fp_mplex_decoder_init(&d, 100);
    assert(fp_mplex_decoder_feed(&d, nonmin, 3, &consumed, r, 8, &nout) == FP_ENONMINIMAL);
}

int main(void) {
    test_uvarint();
    test_yamux_header();
    test_yamux_decoder();
    test_yamux_in_payload();
    test_yamux_head();
    test_mplex_head();
    test_mplex();
    puts("test_frame: ok");
    return 0;
}
