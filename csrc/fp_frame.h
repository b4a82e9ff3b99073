/* fp_frame.h - yamux / mplex frame codecs and streaming decoders, uvarint.
 *
 * Plain C11, no Python.h, no allocation: callers provide every buffer.
 *
 * Ownership contract:
 * - Input buffers (`buf`, `n`) are borrowed for the duration of the call only;
 *   decoders never keep pointers into them. Records refer to payload bytes by
 *   `offset` into the buffer passed to THAT call.
 * - Output arrays (`out`, `cap`) are owned by the caller; the callee writes at
 *   most `cap` records and reports how many through `*nout`.
 * - Decoder structs are caller-allocated (stack, heap, or embedded in a Python
 *   object); *_init() fully initialises them; they own no resources, so there
 *   is no destroy function.
 *
 * Streaming semantics match the pure twins fastp2p/proto/yamux/frame.py and
 * fastp2p/proto/mplex/frame.py (see their docstrings).
 */
#ifndef FP_FRAME_H
#define FP_FRAME_H

#include <stdbool.h>
#include "fp_common.h"

/* ---- uvarint (multiformats unsigned-varint: <= 9 bytes, minimal) ---- */
#define FP_UVARINT_MAX_BYTES 9
#define FP_UVARINT_MAX ((UINT64_C(1) << 63) - 1)

/* Writes the varint of v (< 2^63) to out[0..cap); returns its length or
 * FP_EINVAL (v too large) / FP_ENOBUFS. */
int fp_uvarint_encode(uint64_t v, uint8_t *out, size_t cap);

/* Decodes a varint from buf[0..n). Returns the number of bytes consumed (>0)
 * and stores the value, 0 if buf holds an incomplete varint, FP_EOVERLONG or
 * FP_ENONMINIMAL on malformed input (detected as early as possible). */
int fp_uvarint_decode(const uint8_t *buf, size_t n, uint64_t *value);

/* ---- yamux ---- */
#define FP_YAMUX_HEADER_SIZE 12
#define FP_YAMUX_VERSION 0
#define FP_YAMUX_TYPE_DATA 0
#define FP_YAMUX_TYPE_WINDOW_UPDATE 1
#define FP_YAMUX_TYPE_PING 2
#define FP_YAMUX_TYPE_GO_AWAY 3
#define FP_YAMUX_FLAG_SYN 1
#define FP_YAMUX_FLAG_ACK 2
#define FP_YAMUX_FLAG_FIN 4
#define FP_YAMUX_FLAG_RST 8
#define FP_NO_PAYLOAD SIZE_MAX

typedef struct {
    uint8_t version;
    uint8_t type;
    uint16_t flags;
    uint32_t stream_id;
    uint32_t length;
} fp_yamux_header;

/* Encodes a version-0 header into out[0..12). FP_EINVAL if type > 3. */
int fp_yamux_encode_header(uint8_t out[FP_YAMUX_HEADER_SIZE], uint8_t type, uint16_t flags,
                           uint32_t stream_id, uint32_t length);

/* Parses and validates 12 bytes. FP_EVERSION / FP_ETYPE on bad headers. */
int fp_yamux_decode_header(const uint8_t in[FP_YAMUX_HEADER_SIZE], fp_yamux_header *h);

typedef struct {
    uint8_t type;
    uint16_t flags;
    uint32_t stream_id;
    uint32_t length;  /* payload length of this record (DATA) or header length field */
    size_t offset;    /* payload offset in the fed buffer; FP_NO_PAYLOAD for non-DATA */
} fp_yamux_record;

typedef struct {
    uint8_t hdr[FP_YAMUX_HEADER_SIZE];
    uint8_t hdr_len;      /* bytes of an incomplete header held (< 12) */
    bool first;           /* next DATA record is the frame's first */
    uint16_t flags;       /* current DATA frame */
    uint32_t stream_id;
    uint32_t remaining;   /* DATA payload bytes still to come */
    int error;            /* sticky: first error seen, 0 if alive */
} fp_yamux_decoder;

void fp_yamux_decoder_init(fp_yamux_decoder *d);

/* True when the next n input bytes are all payload of the DATA frame in progress
 * and fp_yamux_decoder_feed would return them as one record with flags 0 (not a
 * first piece carrying SYN/ACK, not a last one carrying FIN/RST); *stream_id is
 * its stream. The caller may then place those bytes itself (open them straight
 * into a reader's buffer) and account them with fp_yamux_decoder_take_payload. */
bool fp_yamux_decoder_in_payload(const fp_yamux_decoder *d, size_t n, uint32_t *stream_id);
void fp_yamux_decoder_take_payload(fp_yamux_decoder *d, size_t n);
/* With the decoder between frames: the header's length (12) when buf[0..n)
 * starts with a valid DATA header without flags whose payload covers the rest
 * of buf and `more` bytes after it (*stream_id names its stream), else 0. It
 * changes nothing: the caller feeds the bytes as usual afterwards (and an
 * invalid header fails there). For opening a Noise frame that holds a header
 * and payload in two parts: the header first, the payload in place. */
size_t fp_yamux_decoder_head(const fp_yamux_decoder *d, const uint8_t *buf, size_t n, size_t more,
                             uint32_t *stream_id);

/* Decodes buf[0..n). Stops when n bytes are consumed or `cap` records were
 * written; *consumed says how far it got (call again with buf + *consumed).
 * Returns 0, or the (sticky) error: FP_EVERSION / FP_ETYPE. */
int fp_yamux_decoder_feed(fp_yamux_decoder *d, const uint8_t *buf, size_t n, size_t *consumed,
                          fp_yamux_record *out, size_t cap, size_t *nout);

/* ---- mplex ---- */
#define FP_MPLEX_MAX_HEADER 18
#define FP_MPLEX_MAX_STREAM_ID ((UINT64_C(1) << 60) - 1)
#define FP_MPLEX_REC_FIRST 1 /* record starts its frame's payload */
#define FP_MPLEX_REC_LAST 2  /* record ends its frame's payload */

/* Writes uvarint(stream_id << 3 | flag) + uvarint(length); returns the length
 * or FP_EINVAL (stream_id >= 2^60, flag > 6, length >= 2^63) / FP_ENOBUFS. */
int fp_mplex_encode_header(uint64_t stream_id, uint8_t flag, uint64_t length, uint8_t *out,
                           size_t cap);

typedef struct {
    uint8_t flag;
    uint8_t bits;        /* FP_MPLEX_REC_FIRST | FP_MPLEX_REC_LAST */
    uint64_t stream_id;
    size_t length;       /* bytes of payload in this record */
    size_t offset;       /* offset in the fed buffer */
} fp_mplex_record;

typedef struct {
    uint8_t hdr[FP_MPLEX_MAX_HEADER];
    uint8_t hdr_len;
    bool first;
    uint8_t flag;
    uint64_t stream_id;
    uint64_t remaining;
    uint64_t max_message_size;
    int error;
} fp_mplex_decoder;

void fp_mplex_decoder_init(fp_mplex_decoder *d, uint64_t max_message_size);

/* Every frame's payload is reported in chunks as it arrives (the caller
 * reassembles control frames using the FIRST/LAST bits). A zero-length frame
 * yields one record with length 0 and both bits. Returns 0 or the sticky error:
 * FP_EOVERLONG / FP_ENONMINIMAL / FP_ETYPE / FP_E2BIG. */
int fp_mplex_decoder_feed(fp_mplex_decoder *d, const uint8_t *buf, size_t n, size_t *consumed,
                          fp_mplex_record *out, size_t cap, size_t *nout);

/* For opening a Noise frame straight into a reader's buffer (as the yamux
 * pair above): true when the next n bytes the decoder would see are all
 * payload of the Message frame (flag 1 or 2) it is in, with no header pending;
 * then *flag / *stream_id name it. take_payload accounts n such bytes as if fed. */
bool fp_mplex_decoder_in_payload(const fp_mplex_decoder *d, size_t n, uint8_t *flag,
                                 uint64_t *stream_id);
void fp_mplex_decoder_take_payload(fp_mplex_decoder *d, size_t n);
/* As fp_yamux_decoder_head, for a Message (flag 1 or 2) header: its length
 * (1..FP_MPLEX_MAX_HEADER bytes), or 0. */
size_t fp_mplex_decoder_head(const fp_mplex_decoder *d, const uint8_t *buf, size_t n, size_t more,
                             uint8_t *flag, uint64_t *stream_id);

#endif /* FP_FRAME_H */
