/* fp_frame.c - yamux / mplex frame codecs and streaming decoders, uvarint.
 * See fp_frame.h for the contract; the pure twins are the spec reference. */
#include "fp_frame.h"

#define FP_YAMUX_OPEN_FLAGS (FP_YAMUX_FLAG_SYN | FP_YAMUX_FLAG_ACK)
#define FP_YAMUX_CLOSE_FLAGS (FP_YAMUX_FLAG_FIN | FP_YAMUX_FLAG_RST)

/* ---- uvarint ---- */

int fp_uvarint_encode(uint64_t v, uint8_t *out, size_t cap) {
    if (FP_UNLIKELY(v > FP_UVARINT_MAX)) return FP_EINVAL;
    size_t i = 0;
    while (v >= 0x80) {
        FP_CHECK_BOUNDS(i + 1, cap);
        out[i++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    FP_CHECK_BOUNDS(i + 1, cap);
    out[i++] = (uint8_t)v;
    return (int)i;
}

int fp_uvarint_decode(const uint8_t *buf, size_t n, uint64_t *value) {
    uint64_t v = 0;
    unsigned shift = 0;
    for (size_t i = 0; i < n; i++) {
        uint8_t b = buf[i];
        v |= (uint64_t)(b & 0x7F) << shift;
        if (!(b & 0x80)) {
            if (b == 0 && shift) return FP_ENONMINIMAL;
            *value = v;
            return (int)(i + 1);
        }
        shift += 7;
        if (i + 1 >= FP_UVARINT_MAX_BYTES) return FP_EOVERLONG;
    }
    return 0;
}

/* ---- yamux ---- */

int fp_yamux_encode_header(uint8_t out[FP_YAMUX_HEADER_SIZE], uint8_t type, uint16_t flags,
                           uint32_t stream_id, uint32_t length) {
    if (FP_UNLIKELY(type > FP_YAMUX_TYPE_GO_AWAY)) return FP_EINVAL;
    out[0] = FP_YAMUX_VERSION;
    out[1] = type;
    fp_store_be16(out + 2, flags);
    fp_store_be32(out + 4, stream_id);
    fp_store_be32(out + 8, length);
    return FP_OK;
}

int fp_yamux_decode_header(const uint8_t in[FP_YAMUX_HEADER_SIZE], fp_yamux_header *h) {
    h->version = in[0];
    h->type = in[1];
    h->flags = fp_load_be16(in + 2);
    h->stream_id = fp_load_be32(in + 4);
    h->length = fp_load_be32(in + 8);
    /* yamux spec: version is 0; types 0x0..0x3 */
    if (FP_UNLIKELY(h->version != FP_YAMUX_VERSION)) return FP_EVERSION;
    if (FP_UNLIKELY(h->type > FP_YAMUX_TYPE_GO_AWAY)) return FP_ETYPE;
    return FP_OK;
}

void fp_yamux_decoder_init(fp_yamux_decoder *d) {
    memset(d, 0, sizeof(*d));
    d->first = true;
}

bool fp_yamux_decoder_in_payload(const fp_yamux_decoder *d, size_t n, uint32_t *stream_id) {
    if (d->error || d->hdr_len || n == 0 || d->remaining < n) return false;
    /* the flags fp_yamux_decoder_feed would give this piece (see there) */
    uint16_t f = d->first ? (uint16_t)(d->flags & FP_YAMUX_OPEN_FLAGS) : 0;
    if (d->remaining == n) f = d->first ? d->flags : (uint16_t)(f | (d->flags & FP_YAMUX_CLOSE_FLAGS));
    if (f) return false;
    *stream_id = d->stream_id;
    return true;
}

void fp_yamux_decoder_take_payload(fp_yamux_decoder *d, size_t n) {
    d->first = false;
    d->remaining -= (uint32_t)n;
}

size_t fp_yamux_decoder_head(const fp_yamux_decoder *d, const uint8_t *buf, size_t n, size_t more,
                             uint32_t *stream_id) {
    fp_yamux_header h;
    if (d->error || d->hdr_len || d->remaining || n < FP_YAMUX_HEADER_SIZE) return 0;
    if (fp_yamux_decode_header(buf, &h) != FP_OK) return 0;
    if (h.type != FP_YAMUX_TYPE_DATA || h.flags != 0) return 0;
    if ((uint64_t)h.length < (uint64_t)(n - FP_YAMUX_HEADER_SIZE) + (uint64_t)more) return 0;
    *stream_id = h.stream_id;
    return FP_YAMUX_HEADER_SIZE;
}

int fp_yamux_decoder_feed(fp_yamux_decoder *d, const uint8_t *buf, size_t n, size_t *consumed,
                          fp_yamux_record *out, size_t cap, size_t *nout) {
    size_t pos = 0, k = 0;
    int rc = FP_OK;
    if (FP_UNLIKELY(d->error)) {
        rc = d->error;
        goto done;
    }
    while (k < cap) {
        if (d->remaining) {
            size_t avail = n - pos;
            if (avail == 0) break;
            uint32_t take = d->remaining;
            uint16_t f = d->first ? (uint16_t)(d->flags & FP_YAMUX_OPEN_FLAGS) : 0;
            if (avail >= take) {
                f = d->first ? d->flags : (uint16_t)(f | (d->flags & FP_YAMUX_CLOSE_FLAGS));
            } else {
                take = (uint32_t)avail;
            }
            d->first = false;
            fp_yamux_record *r = &out[k++];
            r->type = FP_YAMUX_TYPE_DATA;
            r->flags = f;
            r->stream_id = d->stream_id;
            r->length = take;
            r->offset = pos;
            pos += take;
            d->remaining -= take;
            continue;
        }
        fp_yamux_header h;
        const uint8_t *hp;
        if (d->hdr_len) {
            size_t need = FP_YAMUX_HEADER_SIZE - d->hdr_len;
            if (n - pos < need) {
                memcpy(d->hdr + d->hdr_len, buf + pos, n - pos);
                d->hdr_len = (uint8_t)(d->hdr_len + (n - pos));
                pos = n;
                break;
            }
            memcpy(d->hdr + d->hdr_len, buf + pos, need);
            pos += need;
            d->hdr_len = 0;
            hp = d->hdr;
        } else {
            if (n - pos < FP_YAMUX_HEADER_SIZE) {
                memcpy(d->hdr, buf + pos, n - pos);
                d->hdr_len = (uint8_t)(n - pos);
                pos = n;
                break;
            }
            hp = buf + pos;
            pos += FP_YAMUX_HEADER_SIZE;
        }
        rc = fp_yamux_decode_header(hp, &h);
        if (FP_UNLIKELY(rc)) {
            d->error = rc;
            d->hdr_len = 0;
            goto done;
        }
        if (h.type != FP_YAMUX_TYPE_DATA || h.length == 0) {
            fp_yamux_record *r = &out[k++];
            r->type = h.type;
            r->flags = h.flags;
            r->stream_id = h.stream_id;
            r->length = h.length;
            r->offset = h.type == FP_YAMUX_TYPE_DATA ? pos : FP_NO_PAYLOAD;
        } else {
            d->remaining = h.length;
            d->flags = h.flags;
            d->stream_id = h.stream_id;
            d->first = true;
        }
    }
done:
    *consumed = pos;
    *nout = k;
    return rc;
}

/* ---- mplex ---- */

int fp_mplex_encode_header(uint64_t stream_id, uint8_t flag, uint64_t length, uint8_t *out,
                           size_t cap) {
    if (FP_UNLIKELY(stream_id > FP_MPLEX_MAX_STREAM_ID || flag > 6 || length > FP_UVARINT_MAX))
        return FP_EINVAL;
    int a = fp_uvarint_encode(stream_id << 3 | flag, out, cap);
    if (a < 0) return a;
    int b = fp_uvarint_encode(length, out + a, cap - (size_t)a);
    if (b < 0) return b;
    return a + b;
}

void fp_mplex_decoder_init(fp_mplex_decoder *d, uint64_t max_message_size) {
    memset(d, 0, sizeof(*d));
    d->max_message_size = max_message_size;
    d->first = true;
}

/* Parses a header from buf[0..n): >0 consumed, 0 incomplete, <0 error.
 * Check order matches the pure twin: varints, then flag 7, then size. */
static int fp_mplex_parse_header(const fp_mplex_decoder *d, const uint8_t *buf, size_t n,
                                 uint8_t *flag, uint64_t *sid, uint64_t *len) {
    uint64_t key;
    int a = fp_uvarint_decode(buf, n, &key);
    if (a <= 0) return a;
    int b = fp_uvarint_decode(buf + a, n - (size_t)a, len);
    if (b <= 0) return b;
    *flag = (uint8_t)(key & 7);
    *sid = key >> 3; /* a 63-bit varint >> 3 always fits in 60 bits */
    if (FP_UNLIKELY(*flag == 7)) return FP_ETYPE;
    if (FP_UNLIKELY(*len > d->max_message_size)) return FP_E2BIG;
    return a + b;
}

bool fp_mplex_decoder_in_payload(const fp_mplex_decoder *d, size_t n, uint8_t *flag,
                                 uint64_t *stream_id) {
    if (d->error || d->hdr_len || n == 0 || d->remaining < n) return false;
    if (d->flag != 1 && d->flag != 2) return false; /* control payloads are collected */
    *flag = d->flag;
    *stream_id = d->stream_id;
    return true;
}

size_t fp_mplex_decoder_head(const fp_mplex_decoder *d, const uint8_t *buf, size_t n, size_t more,
                             uint8_t *flag, uint64_t *stream_id) {
    uint8_t f;
    uint64_t sid, len;
    if (d->error || d->hdr_len || d->remaining) return 0;
    int k = fp_mplex_parse_header(d, buf, n, &f, &sid, &len);
    if (k <= 0 || (f != 1 && f != 2)) return 0;
    if (len < (uint64_t)(n - (size_t)k) + (uint64_t)more) return 0;
    *flag = f;
    *stream_id = sid;
    return (size_t)k;
}

void fp_mplex_decoder_take_payload(fp_mplex_decoder *d, size_t n) {
    d->first = false;
    d->remaining -= n;
}

int fp_mplex_decoder_feed(fp_mplex_decoder *d, const uint8_t *buf, size_t n, size_t *consumed,
                          fp_mplex_record *out, size_t cap, size_t *nout) {
    size_t pos = 0, k = 0;
    int rc = FP_OK;
    if (FP_UNLIKELY(d->error)) {
        rc = d->error;
        goto done;
    }
    while (k < cap) {
        if (d->remaining) {
            size_t avail = n - pos;
            if (avail == 0) break;
            uint8_t bits = d->first ? FP_MPLEX_REC_FIRST : 0;
            size_t take;
            if ((uint64_t)avail >= d->remaining) {
                take = (size_t)d->remaining;
                bits |= FP_MPLEX_REC_LAST;
            } else {
                take = avail;
            }
            d->first = false;
            fp_mplex_record *r = &out[k++];
            r->flag = d->flag;
            r->bits = bits;
            r->stream_id = d->stream_id;
            r->length = take;
            r->offset = pos;
            pos += take;
            d->remaining -= take;
            continue;
        }
        if (pos >= n) break;
        uint8_t flag;
        uint64_t sid, len;
        int c;
        if (d->hdr_len) {
            size_t old = d->hdr_len;
            size_t take = FP_MPLEX_MAX_HEADER - old;
            if (take > n - pos) take = n - pos;
            memcpy(d->hdr + old, buf + pos, take);
            c = fp_mplex_parse_header(d, d->hdr, old + take, &flag, &sid, &len);
            if (c == 0) {
                d->hdr_len = (uint8_t)(old + take);
                pos += take;
                continue;
            }
            if (c > 0) {
                pos += (size_t)c - old;
                d->hdr_len = 0;
            }
        } else {
            size_t avail = n - pos;
            c = fp_mplex_parse_header(d, buf + pos, avail, &flag, &sid, &len);
            if (c == 0) {
                /* incomplete: avail < 18, varint errors would have fired */
                memcpy(d->hdr, buf + pos, avail);
                d->hdr_len = (uint8_t)avail;
                pos = n;
                break;
            }
            if (c > 0) pos += (size_t)c;
        }
        if (FP_UNLIKELY(c < 0)) {
            rc = d->error = c;
            d->hdr_len = 0;
            goto done;
        }
        if (len == 0) {
            fp_mplex_record *r = &out[k++];
            r->flag = flag;
            r->bits = FP_MPLEX_REC_FIRST | FP_MPLEX_REC_LAST;
            r->stream_id = sid;
            r->length = 0;
            r->offset = pos;
        } else {
            d->flag = flag;
            d->stream_id = sid;
            d->remaining = len;
            d->first = true;
        }
    }
done:
    *consumed = pos;
    *nout = k;
    return rc;
}
