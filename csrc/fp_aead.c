/* fp_aead.c - Noise ChaChaPoly / AESGCM over OpenSSL EVP; see fp_aead.h. */
#include "fp_aead.h"
#include "fp_par.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "fp_chacha.h"
#include "fp_gcm.h"

#define CTX(a) ((EVP_CIPHER_CTX *)(a)->ctx)
#define GCM(a) ((fp_gcm *)(a)->ctx)
#define SHORTK(a) ((fp_chacha *)(a)->shortk)

/* Which implementation new contexts of a cipher get (FP_AEAD_IMPL_*): its kernel
 * where the CPU runs it, unless the environment variable `env` says "evp";
 * -1 until first read. Process-wide, for tests and benchmarks. */
typedef struct {
    int pref;
    const char *env;
    int kernel;
    int (*supported)(void);
} fp_impl_choice;

static fp_impl_choice fp_aesgcm_choice = {-1, "FASTP2P_AESGCM", FP_AEAD_IMPL_GCM, fp_gcm_supported};
static fp_impl_choice fp_chacha_choice = {-1, "FASTP2P_CHACHA", FP_AEAD_IMPL_CHACHA_SHORT,
                                          fp_chacha_supported};

static int fp_impl_get(fp_impl_choice *ch) {
    if (ch->pref < 0) {
        const char *env = getenv(ch->env);
        int evp = env && strcmp(env, "evp") == 0;
        ch->pref = !evp && ch->supported() ? ch->kernel : FP_AEAD_IMPL_EVP;
    }
    return ch->pref;
}

static int fp_impl_set(fp_impl_choice *ch, int impl) {
    if (impl == ch->kernel && !ch->supported()) return FP_EINVAL;
    if (impl != ch->kernel && impl != FP_AEAD_IMPL_EVP) return FP_EINVAL;
    ch->pref = impl;
    return FP_OK;
}

int fp_aead_aesgcm_impl(void) { return fp_impl_get(&fp_aesgcm_choice); }
int fp_aead_set_aesgcm_impl(int impl) { return fp_impl_set(&fp_aesgcm_choice, impl); }
int fp_aead_chacha_impl(void) { return fp_impl_get(&fp_chacha_choice); }
int fp_aead_set_chacha_impl(int impl) { return fp_impl_set(&fp_chacha_choice, impl); }

static inline void fp_aead_store_be64(uint8_t *p, uint64_t v) {
    for (int i = 7; i >= 0; i--) {
        p[i] = (uint8_t)v;
        v >>= 8;
    }
}

int fp_aead_init(fp_aead *a, const uint8_t key[FP_AEAD_KEY_SIZE], uint64_t nonce, int encrypt) {
    return fp_aead_init_kind(a, FP_AEAD_CHACHAPOLY, key, nonce, encrypt);
}

int fp_aead_init_kind(fp_aead *a, int kind, const uint8_t key[FP_AEAD_KEY_SIZE], uint64_t nonce,
                      int encrypt) {
    a->ctx = NULL;
    a->shortk = NULL;
    a->nonce = nonce;
    a->encrypt = encrypt ? 1 : 0;
    a->kind = kind;
    a->impl = FP_AEAD_IMPL_EVP;
    a->cur = FP_AEAD_IMPL_EVP;
    const EVP_CIPHER *c;
    if (kind == FP_AEAD_CHACHAPOLY)
        c = EVP_chacha20_poly1305();
    else if (kind == FP_AEAD_AESGCM)
        c = EVP_aes_256_gcm(); /* default IV length is 12 bytes */
    else
        return FP_EINVAL;
    if (kind == FP_AEAD_AESGCM && fp_aead_aesgcm_impl() == FP_AEAD_IMPL_GCM) {
        fp_gcm *g = fp_gcm_new(key);
        if (!g) return FP_ENOMEM;
        a->ctx = g;
        a->impl = FP_AEAD_IMPL_GCM;
        return FP_OK;
    }
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    if (!ctx) return FP_ENOMEM;
    if (EVP_CipherInit_ex(ctx, c, NULL, key, NULL, a->encrypt) != 1) {
        EVP_CIPHER_CTX_free(ctx);
        return FP_ECRYPTO;
    }
    if (kind == FP_AEAD_CHACHAPOLY && fp_aead_chacha_impl() == FP_AEAD_IMPL_CHACHA_SHORT) {
        /* short frames on the kernel, the rest on EVP (fp_aead_start decides) */
        a->shortk = fp_chacha_new(key);
        if (!a->shortk) {
            EVP_CIPHER_CTX_free(ctx);
            return FP_ENOMEM;
        }
        a->impl = FP_AEAD_IMPL_CHACHA_SHORT;
    }
    a->ctx = ctx;
    return FP_OK;
}

void fp_aead_free(fp_aead *a) {
    if (a->ctx) {
        if (a->impl == FP_AEAD_IMPL_GCM)
            fp_gcm_free(GCM(a));
        else
            EVP_CIPHER_CTX_free(CTX(a));
        a->ctx = NULL;
    }
    if (a->shortk) {
        fp_chacha_free(SHORTK(a));
        a->shortk = NULL;
    }
}

size_t fp_aead_sealed_size(size_t n) {
    size_t frames = (n + FP_AEAD_SEAL_PLAINTEXT - 1) / FP_AEAD_SEAL_PLAINTEXT;
    return n + frames * (FP_AEAD_LEN_SIZE + FP_AEAD_TAG_SIZE);
}

int fp_aead_next_segment(const fp_iovec *iov, size_t iovcnt, size_t *pos, size_t *skip, size_t *len) {
    size_t i = *pos, n = 0;
    size_t start = *skip + *len; /* the byte offset of entry *pos */
    while (i < iovcnt && iov[i].len == 0) i++;
    if (i >= iovcnt) {
        *pos = iovcnt;
        return 0;
    }
    if (iov[i].len >= FP_AEAD_ALIGN_MIN) {
        n = iov[i++].len;
    } else {
        while (i < iovcnt && iov[i].len < FP_AEAD_ALIGN_MIN) n += iov[i++].len;
        /* one muxer header rides in the first frame of the large entry after it,
         * unless that entry is long enough for a receiver's pool (see the .h) */
        if (n <= FP_AEAD_JOIN_MAX && i < iovcnt && iov[i].len <= FP_AEAD_JOIN_ENTRY_MAX)
            n += iov[i++].len;
    }
    *pos = i;
    *skip = start;
    *len = n;
    return 1;
}

/* The framed size of the iovec and, in *frames, its frame count (segment by segment). */
static size_t fp_aead_count_iov(const fp_iovec *iov, size_t iovcnt, size_t *frames) {
    size_t pos = 0, skip = 0, len = 0, total = 0;
    *frames = 0;
    while (fp_aead_next_segment(iov, iovcnt, &pos, &skip, &len)) {
        *frames += (len + FP_AEAD_SEAL_PLAINTEXT - 1) / FP_AEAD_SEAL_PLAINTEXT;
        total += fp_aead_sealed_size(len);
    }
    return total;
}

size_t fp_aead_sealed_size_iov(const fp_iovec *iov, size_t iovcnt) {
    size_t frames;
    return fp_aead_count_iov(iov, iovcnt, &frames);
}

/* Re-initialises the context for the next nonce (key kept), for a frame of
 * len plaintext bytes (which picks the ChaCha20-Poly1305 code for it). */
static int fp_aead_start(fp_aead *a, int enc, size_t len) {
    uint8_t iv[12];
    if (FP_UNLIKELY(a->nonce == FP_AEAD_MAX_NONCE)) return FP_ENONCE;
    memset(iv, 0, 4);
    if (a->kind == FP_AEAD_AESGCM)
        fp_aead_store_be64(iv + 4, a->nonce); /* Noise spec 12.4: big-endian counter */
    else
        fp_store_le64(iv + 4, a->nonce); /* Noise spec 12.3: little-endian counter */
    if (a->impl == FP_AEAD_IMPL_GCM) {
        fp_gcm_start(GCM(a), iv);
        a->cur = FP_AEAD_IMPL_GCM;
    } else if (a->shortk && len <= FP_CHACHA_SMALL_MAX) {
        fp_chacha_start(SHORTK(a), iv);
        a->cur = FP_AEAD_IMPL_CHACHA_SHORT;
    } else {
        a->cur = FP_AEAD_IMPL_EVP;
        if (EVP_CipherInit_ex(CTX(a), NULL, NULL, NULL, iv, enc) != 1) return FP_ECRYPTO;
    }
    a->nonce++;
    return FP_OK;
}

/* Encrypts the next n bytes of the frame started by fp_aead_start (in == out allowed). */
static inline int fp_aead_seal_update(fp_aead *a, uint8_t *out, const uint8_t *in, size_t n) {
    if (a->cur == FP_AEAD_IMPL_GCM) {
        fp_gcm_update(GCM(a), in, out, n, 1);
        return FP_OK;
    }
    if (a->cur == FP_AEAD_IMPL_CHACHA_SHORT) {
        fp_chacha_update(SHORTK(a), in, out, n, 1);
        return FP_OK;
    }
    int olen = 0;
    if (EVP_EncryptUpdate(CTX(a), out, &olen, in, (int)n) != 1 || (size_t)olen != n)
        return FP_ECRYPTO;
    return FP_OK;
}

/* Ends the frame: its 16-byte tag into tag. */
static inline int fp_aead_seal_tag(fp_aead *a, uint8_t *tag) {
    if (a->cur == FP_AEAD_IMPL_GCM) {
        fp_gcm_tag(GCM(a), tag);
        return FP_OK;
    }
    if (a->cur == FP_AEAD_IMPL_CHACHA_SHORT) {
        fp_chacha_tag(SHORTK(a), tag);
        return FP_OK;
    }
    uint8_t scratch[32];
    int flen = 0;
    /* stream ciphers: Final writes nothing */
    if (EVP_EncryptFinal_ex(CTX(a), scratch, &flen) != 1 || flen != 0) return FP_ECRYPTO;
    if (EVP_CIPHER_CTX_ctrl(CTX(a), EVP_CTRL_AEAD_GET_TAG, FP_AEAD_TAG_SIZE, tag) != 1)
        return FP_ECRYPTO;
    return FP_OK;
}

int fp_aead_clone(fp_aead *dst, const fp_aead *src) {
    dst->ctx = NULL;
    dst->shortk = NULL;
    dst->nonce = src->nonce;
    dst->encrypt = src->encrypt;
    dst->kind = src->kind;
    dst->impl = src->impl;
    dst->cur = FP_AEAD_IMPL_EVP;
    if (!src->ctx) return FP_EINVAL;
    if (src->shortk && !(dst->shortk = fp_chacha_clone(SHORTK(src)))) return FP_ENOMEM;
    if (src->impl == FP_AEAD_IMPL_GCM) {
        dst->ctx = fp_gcm_clone(GCM(src));
        return dst->ctx ? FP_OK : FP_ENOMEM;
    }
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    if (!ctx) return FP_ENOMEM;
    if (EVP_CIPHER_CTX_copy(ctx, CTX(src)) != 1) {
        EVP_CIPHER_CTX_free(ctx);
        fp_aead_free(dst);
        return FP_ECRYPTO;
    }
    dst->ctx = ctx;
    return FP_OK;
}

/* Seals len bytes starting at byte voff of iov[vi] as contiguous frames into
 * out (room, nonces and the range already checked by the caller); *outlen is
 * the bytes written. */
static int fp_aead_seal_from(fp_aead *a, const fp_iovec *iov, size_t vi, size_t voff, size_t len,
                             uint8_t *out, size_t *outlen) {
    size_t opos = 0, left = len;
    while (left) {
        size_t chunk = left < FP_AEAD_SEAL_PLAINTEXT ? left : FP_AEAD_SEAL_PLAINTEXT;
        int rc = fp_aead_start(a, 1, chunk);
        if (rc) return rc;
        fp_store_be16(out + opos, (uint16_t)(chunk + FP_AEAD_TAG_SIZE));
        opos += FP_AEAD_LEN_SIZE;
        size_t rem = chunk;
        while (iov[vi].len - voff == 0) {
            vi++;
            voff = 0;
        }
        /* A small frame over several iovecs (a muxer header and its payload) is
         * gathered where its ciphertext goes and sealed in place: one update
         * instead of one per piece (each EVP call costs more than the copy). */
        int gather = chunk <= FP_AEAD_GATHER_MAX && iov[vi].len - voff < chunk;
        size_t at = opos;
        while (rem) { /* a frame may span several iovecs */
            while (iov[vi].len - voff == 0) {
                vi++;
                voff = 0;
            }
            size_t take = iov[vi].len - voff;
            if (take > rem) take = rem;
            if (gather) {
                memcpy(out + at, iov[vi].base + voff, take);
                at += take;
            } else {
                rc = fp_aead_seal_update(a, out + opos, iov[vi].base + voff, take);
                if (rc) return rc;
                opos += take;
            }
            voff += take;
            rem -= take;
        }
        if (gather) {
            rc = fp_aead_seal_update(a, out + opos, out + opos, chunk);
            if (rc) return rc;
            opos += chunk;
        }
        rc = fp_aead_seal_tag(a, out + opos);
        if (rc) return rc;
        opos += FP_AEAD_TAG_SIZE;
        left -= chunk;
    }
    *outlen = opos;
    return FP_OK;
}

/* fp_aead_seal_frames once the iovec is counted (``need`` bytes out, ``frames`` frames) */
static int fp_aead_seal_counted(fp_aead *a, const fp_iovec *iov, size_t iovcnt, uint8_t *out,
                                size_t cap, size_t *outlen, size_t need, size_t frames) {
    size_t pos = 0, skip = 0, len = 0, opos = 0;
    *outlen = 0;
    if (!a->ctx) return FP_EINVAL;
    FP_CHECK_BOUNDS(need, cap);
    if (FP_UNLIKELY(frames > FP_AEAD_MAX_NONCE - a->nonce)) return FP_ENONCE;
    size_t first = 0; /* a segment starts at the entry where the last one ended */
    while (fp_aead_next_segment(iov, iovcnt, &pos, &skip, &len)) {
        size_t got = 0;
        int rc = fp_aead_seal_from(a, iov, first, 0, len, out + opos, &got);
        if (rc) return rc;
        opos += got;
        first = pos;
    }
    *outlen = opos;
    return FP_OK;
}

int fp_aead_seal_frames(fp_aead *a, const fp_iovec *iov, size_t iovcnt, uint8_t *out, size_t cap,
                        size_t *outlen) {
    size_t frames, need = fp_aead_count_iov(iov, iovcnt, &frames);
    return fp_aead_seal_counted(a, iov, iovcnt, out, cap, outlen, need, frames);
}

int fp_aead_seal_range(fp_aead *a, const fp_iovec *iov, size_t iovcnt, size_t skip, size_t len,
                       uint8_t *out, size_t cap, size_t *outlen) {
    size_t total = 0;
    *outlen = 0;
    if (!a->ctx) return FP_EINVAL;
    for (size_t i = 0; i < iovcnt; i++) total += iov[i].len;
    if (FP_UNLIKELY(skip > total || len > total - skip)) return FP_EINVAL;
    size_t need = fp_aead_sealed_size(len);
    FP_CHECK_BOUNDS(need, cap);
    size_t frames = (len + FP_AEAD_SEAL_PLAINTEXT - 1) / FP_AEAD_SEAL_PLAINTEXT;
    if (FP_UNLIKELY(frames > FP_AEAD_MAX_NONCE - a->nonce)) return FP_ENONCE;
    size_t vi = 0, voff = skip;
    while (vi < iovcnt && voff >= iov[vi].len) { /* find the iovec holding byte `skip` */
        voff -= iov[vi].len;
        vi++;
    }
    return fp_aead_seal_from(a, iov, vi, voff, len, out, outlen);
}

int fp_aead_open_frame(fp_aead *a, const uint8_t *ct, size_t n, uint8_t *out) {
    int rc = fp_aead_open_begin(a, ct, n);
    if (rc) return rc;
    rc = fp_aead_open_update(a, ct, n - FP_AEAD_TAG_SIZE, out);
    return rc ? rc : fp_aead_open_end(a);
}

int fp_aead_open_begin(fp_aead *a, const uint8_t *ct, size_t n) {
    if (FP_UNLIKELY(!a->ctx)) return FP_EINVAL;
    if (FP_UNLIKELY(n < FP_AEAD_TAG_SIZE)) return FP_EFRAME;
    int rc = fp_aead_start(a, 0, n - FP_AEAD_TAG_SIZE);
    if (rc) return rc;
    if (a->cur != FP_AEAD_IMPL_EVP) {
        memcpy(a->expect, ct + n - FP_AEAD_TAG_SIZE, FP_AEAD_TAG_SIZE);
        return FP_OK;
    }
    if (EVP_CIPHER_CTX_ctrl(CTX(a), EVP_CTRL_AEAD_SET_TAG, FP_AEAD_TAG_SIZE,
                            (void *)(ct + n - FP_AEAD_TAG_SIZE)) != 1)
        return FP_ECRYPTO;
    return FP_OK;
}

int fp_aead_open_update(fp_aead *a, const uint8_t *ct, size_t k, uint8_t *out) {
    int olen = 0;
    if (k == 0) return FP_OK;
    if (a->cur == FP_AEAD_IMPL_GCM) {
        fp_gcm_update(GCM(a), ct, out, k, 0);
        return FP_OK;
    }
    if (a->cur == FP_AEAD_IMPL_CHACHA_SHORT) {
        fp_chacha_update(SHORTK(a), ct, out, k, 0);
        return FP_OK;
    }
    if (EVP_DecryptUpdate(CTX(a), out, &olen, ct, (int)k) != 1) return FP_EAUTH;
    return FP_OK;
}

int fp_aead_open_end(fp_aead *a) {
    uint8_t scratch[16];
    int flen = 0;
    if (a->cur == FP_AEAD_IMPL_GCM) return fp_gcm_verify(GCM(a), a->expect) ? FP_EAUTH : FP_OK;
    if (a->cur == FP_AEAD_IMPL_CHACHA_SHORT)
        return fp_chacha_verify(SHORTK(a), a->expect) ? FP_EAUTH : FP_OK;
    if (EVP_DecryptFinal_ex(CTX(a), scratch, &flen) != 1) return FP_EAUTH;
    return FP_OK;
}

int fp_aead_open_frames(fp_aead *a, const uint8_t *in, size_t n, size_t *consumed, uint8_t *out,
                        size_t cap, size_t *outlen) {
    size_t pos = 0, opos = 0;
    int rc = FP_OK;
    if (!a->ctx) {
        rc = FP_EINVAL;
        goto done;
    }
    while (n - pos >= FP_AEAD_LEN_SIZE) {
        size_t flen = fp_load_be16(in + pos);
        if (FP_UNLIKELY(flen < FP_AEAD_TAG_SIZE)) {
            rc = FP_EFRAME;
            goto done;
        }
        if (n - pos - FP_AEAD_LEN_SIZE < flen) break;
        size_t plen = flen - FP_AEAD_TAG_SIZE;
        if (FP_UNLIKELY(plen > cap - opos)) {
            rc = FP_ENOBUFS;
            goto done;
        }
        rc = fp_aead_open_frame(a, in + pos + FP_AEAD_LEN_SIZE, flen, out + opos);
        if (rc) goto done;
        pos += FP_AEAD_LEN_SIZE + flen;
        opos += plen;
    }
done:
    *consumed = pos;
    *outlen = opos;
    return rc;
}

/* ---- parallel seal and open (fp_par's pool) ----------------------------------- */

/* Jobs per batch: a few per participant, so one that starts late only takes
 * fewer (fp_par.h); at most FP_PAR_JOBS, whole frames each. */
#define FP_PAR_JOBS 128

/* One job of a parallel seal or open: its inputs set before the batch, its
 * results read after it. */
typedef struct {
    const uint8_t *in;   /* open: the job's first frame (length prefix included) */
    uint8_t *out;
    size_t skip, len;    /* seal: its bytes of the iovec's concatenation */
    size_t cap;          /* seal: room at out */
    size_t first;        /* index of its first frame (its nonce: base + first) */
    size_t frames;       /* open: frames in it */
    size_t used, outlen; /* open: input bytes of the frames opened; both: bytes written */
    int rc;
} fp_job;

typedef struct {
    fp_aead *a, *clones; /* slot 0's context, slot s's: clones[s - 1] */
    uint64_t base;       /* the nonce of frame 0 */
    const fp_iovec *iov; /* seal: the data */
    size_t iovcnt;
    fp_job jobs[FP_PAR_JOBS];
} fp_par_batch;

static inline fp_aead *fp_slot(fp_par_batch *b, unsigned slot) {
    return slot ? &b->clones[slot - 1] : b->a;
}

/* Frames per job for `frames` frames on `parts` participants: a few jobs each. */
static size_t fp_par_per(size_t frames, size_t parts) {
    size_t k = 4 * parts;
    if (k > FP_PAR_JOBS) k = FP_PAR_JOBS;
    if (k > frames) k = frames;
    return (frames + k - 1) / k;
}

static void fp_seal_job(void *arg, size_t i, unsigned slot) {
    fp_par_batch *b = arg;
    fp_job *j = &b->jobs[i];
    fp_aead *ctx = fp_slot(b, slot);
    ctx->nonce = b->base + j->first;
    j->rc = fp_aead_seal_range(ctx, b->iov, b->iovcnt, j->skip, j->len, j->out, j->cap, &j->outlen);
}

/* The jobs of a parallel seal of the iovec, `per` frames each at most, none
 * across a segment's end; 0 when they would be more than FP_PAR_JOBS. */
static size_t fp_seal_jobs(fp_par_batch *b, size_t per, uint8_t *out, size_t cap) {
    const size_t P = FP_AEAD_SEAL_PLAINTEXT;
    size_t pos = 0, skip = 0, len = 0, k = 0, frame = 0, opos = 0;
    while (fp_aead_next_segment(b->iov, b->iovcnt, &pos, &skip, &len)) {
        for (size_t off = 0; off < len; off += per * P) {
            if (k == FP_PAR_JOBS) return 0;
            fp_job *j = &b->jobs[k++];
            j->skip = skip + off;
            j->len = len - off < per * P ? len - off : per * P;
            j->first = frame;
            j->out = out + opos;
            j->cap = cap - opos;
            j->outlen = 0;
            j->rc = FP_OK;
            frame += (j->len + P - 1) / P;
            opos += fp_aead_sealed_size(j->len);
        }
    }
    return k;
}

int fp_aead_seal_frames_par(fp_aead *a, fp_aead *clones, size_t nclones, const fp_iovec *iov,
                            size_t iovcnt, uint8_t *out, size_t cap, size_t *outlen,
                            size_t *parts) {
    size_t frames, k = 0;
    *outlen = 0;
    *parts = 1;
    if (nclones > FP_PAR_MAX) nclones = FP_PAR_MAX;
    size_t need = fp_aead_count_iov(iov, iovcnt, &frames);
    if (nclones == 0 || frames < 2 || !a->ctx)
        return fp_aead_seal_counted(a, iov, iovcnt, out, cap, outlen, need, frames);
    FP_CHECK_BOUNDS(need, cap);
    if (FP_UNLIKELY(frames > FP_AEAD_MAX_NONCE - a->nonce)) return FP_ENONCE;
    fp_par_batch b;
    b.a = a;
    b.clones = clones;
    b.base = a->nonce;
    b.iov = iov;
    b.iovcnt = iovcnt;
    /* jobs of whole frames; fewer, longer ones where many segments would need more */
    for (size_t per = fp_par_per(frames, nclones + 1); per <= frames && !k; per *= 2)
        k = fp_seal_jobs(&b, per, out, cap);
    if (k < 2) return fp_aead_seal_counted(a, iov, iovcnt, out, cap, outlen, need, frames);
    *parts = 1 + fp_par_run((unsigned)nclones, fp_seal_job, &b, k);
    int rc = FP_OK;
    for (size_t i = 0; i < k; i++) {
        if (b.jobs[i].rc && !rc) rc = b.jobs[i].rc;
        *outlen += b.jobs[i].outlen;
    }
    a->nonce = rc ? b.base : b.base + frames; /* a failed cipher is dead: the caller drops it */
    return rc;
}

static void fp_open_job(void *arg, size_t i, unsigned slot) {
    fp_par_batch *b = arg;
    fp_job *j = &b->jobs[i];
    fp_aead *ctx = fp_slot(b, slot);
    size_t pos = 0, opos = 0;
    ctx->nonce = b->base + j->first;
    for (size_t f = 0; f < j->frames; f++) {
        size_t flen = fp_load_be16(j->in + pos);
        int rc = fp_aead_open_frame(ctx, j->in + pos + FP_AEAD_LEN_SIZE, flen, j->out + opos);
        if (rc) {
            j->rc = rc;
            break;
        }
        pos += FP_AEAD_LEN_SIZE + flen;
        opos += flen - FP_AEAD_TAG_SIZE;
    }
    j->used = pos;
    j->outlen = opos;
}

int fp_aead_open_frames_par(fp_aead *a, fp_aead *clones, size_t nclones, const uint8_t *in,
                            size_t n, size_t *consumed, uint8_t *out, size_t cap, size_t *outlen,
                            size_t *parts) {
    size_t pos = 0, frames = 0, plain = 0, per;
    int tail = FP_OK; /* what a serial open would stop at after the complete frames */
    *parts = 1;
    if (nclones > FP_PAR_MAX) nclones = FP_PAR_MAX;
    if (nclones == 0 || !a->ctx) return fp_aead_open_frames(a, in, n, consumed, out, cap, outlen);
    while (n - pos >= FP_AEAD_LEN_SIZE) {
        size_t flen = fp_load_be16(in + pos);
        if (FP_UNLIKELY(flen < FP_AEAD_TAG_SIZE)) {
            tail = FP_EFRAME;
            break;
        }
        if (n - pos - FP_AEAD_LEN_SIZE < flen) break;
        pos += FP_AEAD_LEN_SIZE + flen;
        plain += flen - FP_AEAD_TAG_SIZE;
        frames++;
    }
    /* the serial open handles what the jobs cannot: one frame, no room */
    if (frames < 2 || plain > cap || FP_UNLIKELY(frames > FP_AEAD_MAX_NONCE - a->nonce))
        return fp_aead_open_frames(a, in, n, consumed, out, cap, outlen);
    fp_par_batch b;
    b.a = a;
    b.clones = clones;
    b.base = a->nonce;
    per = fp_par_per(frames, nclones + 1);
    size_t k = (frames + per - 1) / per, ipos = 0, opos = 0;
    for (size_t i = 0; i < k; i++) {
        fp_job *j = &b.jobs[i];
        j->first = i * per;
        j->frames = i + 1 < k ? per : frames - i * per;
        j->in = in + ipos;
        j->out = out + opos;
        j->used = j->outlen = 0;
        j->rc = FP_OK;
        for (size_t f = 0; f < j->frames; f++) { /* where the next job starts */
            size_t flen = fp_load_be16(in + ipos);
            ipos += FP_AEAD_LEN_SIZE + flen;
            opos += flen - FP_AEAD_TAG_SIZE;
        }
    }
    *parts = 1 + fp_par_run((unsigned)nclones, fp_open_job, &b, k);
    /* in order: everything up to the first failure, as a serial open */
    *consumed = *outlen = 0;
    for (size_t i = 0; i < k; i++) {
        *consumed += b.jobs[i].used;
        *outlen += b.jobs[i].outlen;
        if (b.jobs[i].rc) return b.jobs[i].rc;
    }
    a->nonce = b.base + frames;
    return tail;
}

int fp_aead_encrypt(fp_aead *a, const uint8_t *in, size_t n, uint8_t *out, size_t cap) {
    fp_iovec v = {in, n};
    if (!a->ctx || n > INT_MAX) return FP_EINVAL;
    FP_CHECK_BOUNDS(n + FP_AEAD_TAG_SIZE, cap);
    int rc = fp_aead_start(a, 1, n);
    if (rc) return rc;
    if (v.len && (rc = fp_aead_seal_update(a, out, v.base, v.len)) != 0) return rc;
    return fp_aead_seal_tag(a, out + n);
}

int fp_aead_decrypt(fp_aead *a, const uint8_t *in, size_t n, uint8_t *out, size_t cap) {
    if (!a->ctx || n > INT_MAX) return FP_EINVAL;
    if (n < FP_AEAD_TAG_SIZE) return FP_EAUTH;
    FP_CHECK_BOUNDS(n - FP_AEAD_TAG_SIZE, cap);
    return fp_aead_open_frame(a, in, n, out);
}

/* -- Noise HKDF ---------------------------------------------------------------------- */

/* HMAC-SHA256 on one SHA-256 fetched once per process: OpenSSL 3's one-shot
 * HMAC() (what Python's hmac.digest calls) fetches the digest and the MAC
 * implementation on every call, most of its cost for the 32-byte inputs of a
 * handshake. */
static CRYPTO_ONCE fp_sha256_once = CRYPTO_ONCE_STATIC_INIT;
static EVP_MD *fp_sha256_md;

static void fp_sha256_fetch(void) { fp_sha256_md = EVP_MD_fetch(NULL, "SHA256", NULL); }

static int fp_sha256_parts(EVP_MD_CTX *ctx, const uint8_t *a, size_t an, const uint8_t *b, size_t bn,
                           const uint8_t *c, size_t cn, uint8_t out[FP_HKDF_HASHLEN]) {
    unsigned int outlen = 0;
    if (EVP_DigestInit_ex2(ctx, fp_sha256_md, NULL) != 1) return FP_ECRYPTO;
    if (an && EVP_DigestUpdate(ctx, a, an) != 1) return FP_ECRYPTO;
    if (bn && EVP_DigestUpdate(ctx, b, bn) != 1) return FP_ECRYPTO;
    if (cn && EVP_DigestUpdate(ctx, c, cn) != 1) return FP_ECRYPTO;
    if (EVP_DigestFinal_ex(ctx, out, &outlen) != 1 || outlen != FP_HKDF_HASHLEN) return FP_ECRYPTO;
    return 0;
}

/* HMAC(key, m1 || m2) (RFC 2104, block size 64). */
static int fp_hmac_sha256(EVP_MD_CTX *ctx, const uint8_t *key, size_t key_len, const uint8_t *m1,
                          size_t n1, const uint8_t *m2, size_t n2, uint8_t out[FP_HKDF_HASHLEN]) {
    uint8_t k0[64], pad[64], inner[FP_HKDF_HASHLEN];
    int rc;
    memset(k0, 0, sizeof k0);
    if (key_len > sizeof k0) {
        if ((rc = fp_sha256_parts(ctx, key, key_len, NULL, 0, NULL, 0, k0)) != 0) return rc;
    } else if (key_len) {
        memcpy(k0, key, key_len);
    }
    for (size_t i = 0; i < sizeof pad; i++) pad[i] = (uint8_t)(k0[i] ^ 0x36);
    rc = fp_sha256_parts(ctx, pad, sizeof pad, m1, n1, m2, n2, inner);
    for (size_t i = 0; rc == 0 && i < sizeof pad; i++) pad[i] = (uint8_t)(k0[i] ^ 0x5c);
    if (rc == 0) rc = fp_sha256_parts(ctx, pad, sizeof pad, inner, sizeof inner, NULL, 0, out);
    OPENSSL_cleanse(k0, sizeof k0);
    OPENSSL_cleanse(pad, sizeof pad);
    OPENSSL_cleanse(inner, sizeof inner);
    return rc;
}

int fp_noise_hkdf2(const uint8_t *ck, size_t ck_len, const uint8_t *ikm, size_t ikm_len,
                   uint8_t out1[FP_HKDF_HASHLEN], uint8_t out2[FP_HKDF_HASHLEN]) {
    static const uint8_t one = 0x01, two = 0x02;
    uint8_t temp[FP_HKDF_HASHLEN];
    EVP_MD_CTX *ctx;
    int rc;
    if (!CRYPTO_THREAD_run_once(&fp_sha256_once, fp_sha256_fetch) || fp_sha256_md == NULL)
        return FP_ECRYPTO;
    if ((ctx = EVP_MD_CTX_new()) == NULL) return FP_ENOMEM;
    rc = fp_hmac_sha256(ctx, ck, ck_len, ikm, ikm_len, NULL, 0, temp);
    if (rc == 0) rc = fp_hmac_sha256(ctx, temp, sizeof temp, &one, 1, NULL, 0, out1);
    if (rc == 0) rc = fp_hmac_sha256(ctx, temp, sizeof temp, out1, FP_HKDF_HASHLEN, &two, 1, out2);
    EVP_MD_CTX_free(ctx);
    OPENSSL_cleanse(temp, sizeof temp);
    return rc;
}
