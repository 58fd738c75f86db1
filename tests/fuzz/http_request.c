/* libFuzzer target: the HTTP request path of helmq-api (and of the worker's
 * and projector's /metrics), up to routing: bytes from a client, in chunks,
 * through http_request.c (Debian's http-parser, the path split into
 * percent-decoded segments, the headers the handlers read, the body) into
 * requests, fed the way httpd.c feeds them (one request at a time: after a
 * complete request the parser pauses, the request is answered, the rest of
 * the bytes are fed after it; a request without keep-alive or an error ends
 * the connection).
 *
 * Input: one byte that chooses the split, then the bytes the client sends.
 * The split byte s: 0 sends everything in one read; otherwise the reads are
 * 1..2^(s % 12) bytes long (s % 12 == 0: byte by byte), their lengths drawn
 * from a xorshift generator seeded with s. Each read is its own malloc'd
 * buffer of its exact length, so ASan catches a read past it. The split
 * byte's high bit also chooses the head limit (max_header): MAX_HEADER, above
 * the URL limit, or MAX_HEADER_LOW, below it (so that a long URL meets 431
 * before 414, as with helmq-api --max-header-bytes under 8192).
 *
 * Oracles (an abort() when broken):
 * - The same bytes give the same transcript (every request with every
 *   field, every refusal's status, the state at the end) in one read and
 *   in the fuzzer's reads: parsing does not depend on how TCP cuts the
 *   stream. (Not the refusal's message: which of two faults is seen first
 *   may depend on the reads.) A refusal of a callback of http_request.c
 *   says why (its error).
 * - A request is either handed over complete or refused with a 4xx and the
 *   rule that goes with it: 400 http for a syntax error or a NUL in a
 *   header (with a message), 400 path-segment, 413 for a body over the
 *   limit, 414 uri-size for a request target over the limit, 431
 *   header-size for a head over the limit; nothing else (a 500 would be a
 *   callback refusing without saying why). Where the reads may change which
 *   fault is seen first (a syntax error is found at its byte, a size limit
 *   at the end of a read), the two runs may answer 400 and 414 or 431, but
 *   never 414 and 431: the lower limit is checked first.
 * - The method is a known one (HEAD is handed over as GET with head set);
 *   the path is a substring of the bytes sent, within the limit (256 bytes
 *   here, so that the fuzzer reaches it; httpd.c's is 8192); the
 *   segments are exactly those of an independent split-and-decode of the
 *   path (strict %XX), they never hold '/' or NUL, and a path that decodes
 *   to either (or has a malformed escape) is refused 400 path-segment,
 *   never handed over; the body is at most the limit and NUL-terminated;
 *   the path and query, Authorization and Content-Type are each at most the
 *   head limit;
 *   httpd_query_param's decoded length is at least its strlen and at most
 *   the query's. */
#include "http_request.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* tests/fuzz/fuzz_common.c */
void fuzz_fail(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_BODY 1024 /* small, so that 413 is within the fuzzer's reach */
#define MAX_URL 256   /* likewise for the request target's limit (httpd.c: 8192) */
#define MAX_HEADER 512     /* likewise for the head's (helmq-api's default: 16384) */
#define MAX_HEADER_LOW 192 /* a head limit below the URL's */

/* A transcript: what the owner saw, as text, to compare two runs. */
typedef struct transcript {
    char *text;
    size_t len;
} transcript_t;

typedef struct run {
    http_reqparser_t rp;
    transcript_t t;
    const uint8_t *stream; /* all the bytes the client sends */
    size_t stream_len;
    size_t max_header;
    int closed;     /* the connection ended (error, or no keep-alive) */
    int refused;    /* the status of the refusal that ended it, or 0 */
    int last_keep;  /* the keep-alive verdict of the last request */
    int requests;
} run_t;

static void put(transcript_t *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(transcript_t *t, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    t->text = realloc(t->text, t->len + (size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(t->text + t->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    t->len += (size_t)n;
}

static void put_bytes(transcript_t *t, const char *name, const char *s, size_t n) {
    put(t, " %s[%zu]=", name, n);
    t->text = realloc(t->text, t->len + n + 1);
    memcpy(t->text + t->len, s, n);
    t->len += n;
    t->text[t->len] = '\0';
}

static int hexval(char ch) {
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

/* The model: RFC 3986's percent-decoding of one segment, strict. Returns
 * the decoded length, or -1 for a malformed escape, an encoded '/' or NUL. */
static long model_segment(const char *s, size_t n, char *out) {
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] != '%') {
            out[o++] = s[i];
            continue;
        }
        if (n - i < 3 || hexval(s[i + 1]) < 0 || hexval(s[i + 2]) < 0)
            return -1;
        int ch = hexval(s[i + 1]) * 16 + hexval(s[i + 2]);
        if (ch == 0 || ch == '/')
            return -1;
        out[o++] = (char)ch;
        i += 2;
    }
    out[o] = '\0';
    return (long)o;
}

/* Checks r's segments against the model; returns whether the model refuses
 * the path. */
static int check_segments(const http_req_t *r, int refused) {
    const char *p = r->path;
    size_t plen = strlen(p);
    char *buf = malloc(plen + 1);
    int model_refuses = 0, k = 0;
    if (*p == '/')
        p++;
    while (*p && !model_refuses) {
        const char *slash = strchr(p, '/');
        size_t n = slash ? (size_t)(slash - p) : strlen(p);
        long dn = model_segment(p, n, buf);
        if (dn < 0) {
            model_refuses = 1;
            break;
        }
        if (!refused) {
            if (k >= r->nsegments)
                fuzz_fail("http_request: path \"%s\": more segments than the %d handed over", r->path,
                          r->nsegments);
            const char *seg = r->segments[k];
            if (strlen(seg) != (size_t)dn || memcmp(seg, buf, (size_t)dn) != 0)
                fuzz_fail("http_request: path \"%s\": segment %d is \"%s\", the model decodes \"%s\"", r->path, k,
                          seg, buf);
            if (strchr(seg, '/'))
                fuzz_fail("http_request: path \"%s\": segment %d holds a '/'", r->path, k);
        }
        k++;
        if (!slash)
            break;
        p = slash + 1;
        if (!*p) { /* a trailing '/': one empty segment */
            if (!refused && (k >= r->nsegments || r->segments[k][0]))
                fuzz_fail("http_request: path \"%s\": the trailing '/' gives no empty segment", r->path);
            k++;
        }
    }
    if (!refused && !model_refuses && k != r->nsegments)
        fuzz_fail("http_request: path \"%s\": %d segments handed over, the model has %d", r->path, r->nsegments,
                  k);
    free(buf);
    return model_refuses;
}

static int known_method(const char *m) {
    for (int i = 0; i < 64; i++) {
        const char *s = http_method_str((enum http_method)i);
        if (strcmp(s, "<unknown>") == 0)
            break;
        if (strcmp(s, m) == 0)
            return 1;
    }
    return 0;
}

static void check_query(const http_req_t *r, const char *name) {
    size_t len = 0;
    char *v = httpd_query_param(r, name, &len);
    if (v && (len < strlen(v) || len > strlen(r->query)))
        fuzz_fail("http_request: query \"%s\": %s decodes to %zu bytes (strlen %zu)", r->query, name, len,
                  strlen(v));
    free(v);
}

static void on_begin(void *owner) {
    run_t *w = owner;
    if (http_reqparser_busy(&w->rp) == 0)
        fuzz_fail("http_request: a request began without a request being parsed");
}

static void on_request(http_req_t *r, int keep_alive, const char *bad_path, void *owner) {
    run_t *w = owner;
    w->requests++;
    w->last_keep = keep_alive;
    if (r->conn || !r->method || !r->path || !r->query || !r->body)
        fuzz_fail("http_request: a request handed over with a field unset");
    if (!known_method(r->method) || (r->head && strcmp(r->method, "GET") != 0))
        fuzz_fail("http_request: method \"%s\" (head %d)", r->method, r->head);
    size_t plen = strlen(r->path), qlen = strlen(r->query);
    if (plen > MAX_URL || qlen > MAX_URL || plen + qlen > w->max_header)
        fuzz_fail("http_request: a path of %zu bytes and a query of %zu passed the limits of %d (URL) and "
                  "%zu (head)",
                  plen, qlen, MAX_URL, w->max_header);
    if (plen && !memmem(w->stream, w->stream_len, r->path, plen))
        fuzz_fail("http_request: path \"%s\" is not in the bytes sent", r->path);
    if (r->body_len > MAX_BODY || r->body[r->body_len] != '\0')
        fuzz_fail("http_request: body of %zu bytes (limit %d) or not NUL-terminated", r->body_len, MAX_BODY);
    if ((r->authorization && strlen(r->authorization) > w->max_header) ||
        (r->content_type && strlen(r->content_type) > w->max_header))
        fuzz_fail("http_request: a header value beyond the head limit of %zu bytes", w->max_header);
    int model_refuses = check_segments(r, bad_path != NULL);
    if (model_refuses != (bad_path != NULL))
        fuzz_fail("http_request: path \"%s\": %s, the model %s", r->path,
                  bad_path ? bad_path : "handed over", model_refuses ? "refuses it" : "accepts it");
    if (bad_path && r->nsegments)
        ; /* segments before the bad one may be kept; the request is refused whole */
    check_query(r, "reason");
    check_query(r, "tenantId");

    /* The transcript: everything a handler could read. */
    if (bad_path) {
        put(&w->t, "400 path-segment %s", bad_path);
    } else {
        put(&w->t, "REQ %s head=%d", r->method, r->head);
        for (int i = 0; i < r->nsegments; i++)
            put(&w->t, " /%s", r->segments[i]);
    }
    put(&w->t, " keep=%d", keep_alive);
    put_bytes(&w->t, "path", r->path, plen);
    put_bytes(&w->t, "query", r->query, strlen(r->query));
    if (r->authorization)
        put_bytes(&w->t, "auth", r->authorization, strlen(r->authorization));
    if (r->content_type)
        put_bytes(&w->t, "ctype", r->content_type, strlen(r->content_type));
    put_bytes(&w->t, "body", r->body, r->body_len);
    put(&w->t, "\n");
    http_req_free(r);
}

/* A refusal: a status with its rule and a message. In the transcript, 413
 * as it is; 400, 414 and 431 as one class (which fault is seen first may
 * depend on the reads: a size limit is measured at each read's end, a
 * syntax error at its byte), with run() comparing the statuses further. */
static void check_refusal(run_t *w, enum http_errno err) {
    const http_reqparser_t *p = &w->rp;
    const char *want = p->status == 400   ? "http"
                       : p->status == 414 ? "uri-size"
                       : p->status == 431 ? "header-size"
                                          : NULL;
    if (p->status != 400 && p->status != 413 && p->status != 414 && p->status != 431)
        fuzz_fail("http_request: refused (%s) with status %d: %s", http_errno_name(err), p->status,
                  p->error ? p->error : "(no message)");
    if (!p->error || !*p->error)
        fuzz_fail("http_request: a %d without a message (%s)", p->status, http_errno_name(err));
    if ((want == NULL) != (p->rule == NULL) || (want && strcmp(want, p->rule) != 0))
        fuzz_fail("http_request: a %d with rule %s", p->status, p->rule ? p->rule : "(none)");
    if (p->status == 414 && MAX_URL > w->max_header)
        fuzz_fail("http_request: 414 when the head limit (%zu) is below the URL's (%d)", w->max_header,
                  MAX_URL);
    w->refused = p->status;
    put(&w->t, p->status == 413 ? "413\n" : "4xx head or syntax\n");
}

/* httpd.c's feed() and resume(), with the answer given at once: parses
 * data; after a complete request, the rest is fed once it is answered,
 * unless the connection closes after the answer. */
static void feed(run_t *w, const char *data, size_t len) {
    while (!w->closed) {
        enum http_errno err;
        size_t n = http_reqparser_execute(&w->rp, data, len, &err);
        if (n > len)
            fuzz_fail("http_request: %zu bytes consumed of %zu", n, len);
        if (err == HPE_PAUSED) {
            if (!w->last_keep) { /* answered with Connection: close */
                w->closed = 1;
                put(&w->t, "closed after the answer\n");
                return;
            }
            http_reqparser_resume(&w->rp);
            data += n;
            len -= n;
            if (!len)
                return;
            continue;
        }
        if (err != HPE_OK) {
            w->closed = 1;
            check_refusal(w, err);
            /* httpd.c answers with the partial request, then closes. */
            http_req_free(http_reqparser_take(&w->rp));
            return;
        }
        if (n != len)
            fuzz_fail("http_request: parser OK but %zu of %zu bytes consumed", n, len);
        return;
    }
}

static uint32_t xorshift(uint32_t *s) {
    uint32_t x = *s;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return *s = x;
}

/* Runs the stream through a parser in reads chosen by split (0: one read),
 * with a head limit of max_header. */
static void run(run_t *w, const uint8_t *stream, size_t len, uint8_t split, size_t max_header) {
    memset(w, 0, sizeof(*w));
    w->stream = stream;
    w->stream_len = len;
    w->max_header = max_header;
    http_reqparser_init(&w->rp, MAX_BODY, max_header, on_begin, on_request, w);
    w->rp.max_url = MAX_URL;
    uint32_t seed = 0x9e3779b9u ^ split;
    size_t off = 0;
    while (off < len && !w->closed) {
        size_t n = split ? 1 + xorshift(&seed) % ((uint32_t)1 << (split % 12)) : len;
        if (n > len - off)
            n = len - off;
        char *chunk = malloc(n); /* exactly the read: ASan sees a byte beyond it */
        memcpy(chunk, stream + off, n);
        feed(w, chunk, n);
        free(chunk);
        off += n;
    }
    put(&w->t, "END closed=%d busy=%d requests=%d\n", w->closed, http_reqparser_busy(&w->rp), w->requests);
    http_reqparser_free(&w->rp);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1)
        return 0;
    uint8_t split = data[0];
    size_t max_header = split & 0x80 ? MAX_HEADER_LOW : MAX_HEADER;
    run_t whole, parts;
    run(&whole, data + 1, size - 1, 0, max_header);
    if (split) {
        run(&parts, data + 1, size - 1, split, max_header);
        if (whole.t.len != parts.t.len || memcmp(whole.t.text, parts.t.text, whole.t.len) != 0)
            fuzz_fail("http_request: the reads (split %u) change the outcome\n--- one read:\n%s--- in reads:\n%s",
                      split, whole.t.text, parts.t.text);
        if (whole.refused != parts.refused && whole.refused != 400 && parts.refused != 400)
            fuzz_fail("http_request: the reads (split %u) turn a %d into a %d", split, whole.refused,
                      parts.refused);
        free(parts.t.text);
    }
    free(whole.t.text);
    return 0;
}
