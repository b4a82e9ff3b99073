/* libFuzzer harness: attacker-chosen plaintext through the Noise transport
 * layer and on into the muxer decoders.
 *
 * A fixed, known key stands in for a completed handshake, so the fuzzer is past
 * authentication: the input's plaintext is sealed into transport frames (split
 * into input-chosen segments, i.e. frames of many sizes), the frames are opened
 * again by a second context fed in input-chosen chunks (partial frames carried
 * over), and the plaintext that comes out drives the yamux and mplex decoders of
 * fuzz_frame.c in input-chosen pieces.
 *
 * Input: [0] chunking seed, [1] segmenting seed (bit 7: also tamper), [2..] plaintext.
 *
 * Invariants checked (abort on violation): the round trip is exact (every
 * frame consumed, plaintext identical), open_frames never reports more
 * plaintext than ciphertext consumed, and any single flipped byte of the sealed
 * stream is caught (FP_EAUTH / FP_EFRAME, or a frame left incomplete) rather
 * than delivered, also when each frame is opened in two parts (header first,
 * as the demux does); the parallel open (fp_aead_open_frames_par, on fp_par's
 * threads) gives the serial open's status, counts and plaintext exactly, on the
 * sealed stream, the tampered one and the raw input read as frames; plus the
 * decoder invariants of fuzz_frame.c.
 */
#define LLVMFuzzerTestOneInput fp_fuzz_frame_entry
#include "fuzz_frame.c"
#undef LLVMFuzzerTestOneInput

static const uint8_t KNOWN_KEY[FP_AEAD_KEY_SIZE] = "fastp2p fuzz: a known Noise key";

static size_t seal_segments(const uint8_t *p, size_t n, uint8_t seed, uint8_t *wire, size_t cap) {
    fp_aead tx;
    FP_FUZZ_CHECK(fp_aead_init(&tx, KNOWN_KEY, 0, 1) == 0);
    size_t off = 0, w = 0;
    unsigned k = 0;
    do {
        size_t seg = (seed & 0x7f) ? 1 + ((size_t)(seed & 0x7f) * (k + 1) * 37) % 1031 : n;
        if (seg > n - off) seg = n - off;
        fp_iovec iov = {p + off, seg};
        size_t outlen = 0;
        FP_FUZZ_CHECK(fp_aead_seal_frames(&tx, &iov, 1, wire + w, cap - w, &outlen) == 0);
        FP_FUZZ_CHECK(outlen == fp_aead_sealed_size(seg));
        w += outlen;
        off += seg;
        k++;
    } while (off < n);
    fp_aead_free(&tx);
    return w;
}

/* Opens every frame of wire[0..wlen) in two parts (the first `head` plaintext
 * bytes, then the rest) into plain; the plaintext length, or -1 when a frame is
 * short, incomplete or not authentic. */
static long open_in_parts(const uint8_t *wire, size_t wlen, size_t head, uint8_t *plain) {
    fp_aead rx;
    size_t pos = 0, opos = 0;
    long out = -1;
    FP_FUZZ_CHECK(fp_aead_init(&rx, KNOWN_KEY, 0, 0) == 0);
    while (pos < wlen) {
        if (wlen - pos < 2) goto done;
        size_t flen = (size_t)wire[pos] << 8 | wire[pos + 1];
        if (wlen - pos - 2 < flen) goto done;
        if (fp_aead_open_begin(&rx, wire + pos + 2, flen) != 0) goto done;
        size_t plen = flen - FP_AEAD_TAG_SIZE, h = head < plen ? head : plen;
        FP_FUZZ_CHECK(fp_aead_open_update(&rx, wire + pos + 2, h, plain + opos) == 0);
        FP_FUZZ_CHECK(fp_aead_open_update(&rx, wire + pos + 2 + h, plen - h, plain + opos + h) == 0);
        if (fp_aead_open_end(&rx) != 0) goto done;
        pos += 2 + flen;
        opos += plen;
    }
    out = (long)opos;
done:
    fp_aead_free(&rx);
    return out;
}

/* The serial and the parallel open of wire[0..wlen) (nclones pool contexts) agree
 * exactly: status, bytes consumed, plaintext length and bytes. */
static void open_both(const uint8_t *wire, size_t wlen, size_t nclones) {
    fp_aead rs, rp, clones[4];
    uint8_t *p1 = malloc(wlen + 1), *p2 = malloc(wlen + 1);
    FP_FUZZ_CHECK(p1 && p2 && nclones <= 4);
    FP_FUZZ_CHECK(fp_aead_init(&rs, KNOWN_KEY, 0, 0) == 0);
    FP_FUZZ_CHECK(fp_aead_init(&rp, KNOWN_KEY, 0, 0) == 0);
    for (size_t i = 0; i < nclones; i++) FP_FUZZ_CHECK(fp_aead_clone(&clones[i], &rp) == 0);
    size_t u1 = 0, u2 = 0, l1 = 0, l2 = 0, parts = 0;
    int r1 = fp_aead_open_frames(&rs, wire, wlen, &u1, p1, wlen, &l1);
    int r2 = fp_aead_open_frames_par(&rp, clones, nclones, wire, wlen, &u2, p2, wlen, &l2, &parts);
    FP_FUZZ_CHECK(r1 == r2 && u1 == u2 && l1 == l2 && parts >= 1 && parts <= nclones + 1);
    FP_FUZZ_CHECK(l1 == 0 || memcmp(p1, p2, l1) == 0);
    if (r1 == 0) FP_FUZZ_CHECK(rs.nonce == rp.nonce);
    for (size_t i = 0; i < nclones; i++) fp_aead_free(&clones[i]);
    fp_aead_free(&rs);
    fp_aead_free(&rp);
    free(p1);
    free(p2);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 2) return 0;
    uint8_t rs = data[0], fs = data[1];
    const uint8_t *p = data + 2;
    size_t n = size - 2;
    /* at most one frame per plaintext byte (+1 for an empty input) */
    size_t cap = n + (n + 1) * (FP_AEAD_TAG_SIZE + FP_AEAD_LEN_SIZE);
    uint8_t *wire = malloc(cap), *plain = malloc(cap);
    FP_FUZZ_CHECK(wire && plain);
    size_t wlen = seal_segments(p, n, fs, wire, cap);

    /* open in chunks: a partial frame stays with the caller and is fed again */
    fp_aead rx;
    FP_FUZZ_CHECK(fp_aead_init(&rx, KNOWN_KEY, 0, 0) == 0);
    size_t chunk = rs ? 1 + (size_t)rs % 61 : wlen, start = 0, end = 0, outlen = 0;
    while (start < wlen) {
        end = end + chunk < wlen ? end + chunk : wlen;
        size_t consumed = 0, got = 0;
        int rc = fp_aead_open_frames(&rx, wire + start, end - start, &consumed, plain + outlen,
                                     cap - outlen, &got);
        FP_FUZZ_CHECK(rc == 0);
        FP_FUZZ_CHECK(consumed <= end - start && got <= consumed);
        start += consumed;
        outlen += got;
        if (end == wlen && consumed == 0) break;
    }
    fp_aead_free(&rx);
    FP_FUZZ_CHECK(start == wlen && outlen == n);
    FP_FUZZ_CHECK(n == 0 || memcmp(plain, p, n) == 0);

    /* on the pool: the same, and the raw input read as frames fails the same way */
    open_both(wire, wlen, 1 + rs % 4);
    open_both(p, n, 1 + rs % 4);

    /* frame by frame in two parts (the demux's header-first open): the same plaintext */
    size_t head = (size_t)rs % 20;
    FP_FUZZ_CHECK(open_in_parts(wire, wlen, head, plain) == (long)n);
    FP_FUZZ_CHECK(n == 0 || memcmp(plain, p, n) == 0);

    /* the authenticated plaintext drives the muxer decoders */
    size_t step = (size_t)(rs % 17) + 1;
    fuzz_yamux(plain, n, step);
    fuzz_yamux(plain, n, n ? n : 1);
    fuzz_mplex(plain, n, step, (uint64_t)rs * 64);
    fuzz_mplex(plain, n, n ? n : 1, (uint64_t)1 << 20);

    /* integrity: one flipped byte anywhere is never delivered as a good stream */
    if ((fs & 0x80) && wlen) {
        size_t at = ((size_t)rs * 131 + n) % wlen;
        wire[at] ^= (uint8_t)(1u << (rs % 8));
        FP_FUZZ_CHECK(fp_aead_init(&rx, KNOWN_KEY, 0, 0) == 0);
        size_t consumed = 0, got = 0;
        int rc = fp_aead_open_frames(&rx, wire, wlen, &consumed, plain, cap, &got);
        FP_FUZZ_CHECK(rc == FP_EAUTH || rc == FP_EFRAME || (rc == 0 && consumed < wlen));
        fp_aead_free(&rx);
        FP_FUZZ_CHECK(open_in_parts(wire, wlen, (size_t)rs % 20, plain) == -1);
        open_both(wire, wlen, 1 + rs % 4);
    }
    free(wire);
    free(plain);
    return 0;
}
