/* Unit tests of codec_decode_flat, the projector's decoder in place, on the
 * records it must decline: every byte string codec_decode refuses (a
 * command, a bad header, an unknown fingerprint, every truncation, trailing
 * bytes, bad UTF-8, NUL, indexes, lengths and counts out of range), and a
 * sweep of byte mutations finds no bytes on which the two disagree. Where it
 * accepts a variant, every value is codec_decode's. What it takes is in
 * test_codec_flat.c; the fixtures in support/codec_flat_fixture.c. */
#include "codec.h"
#include "support/codec_flat_fixture.h"
#include "tap.h"

#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>

/* --- codec_decode_flat against codec_decode ----------------------------------- */

static void diag_bytes(const unsigned char *buf, size_t len) {
    printf("#   bytes (%zu):", len);
    for (size_t i = 0; i < len && i < 160; i++)
        printf(" %02x", buf[i]);
    printf("%s\n", len > 160 ? " ..." : "");
}

/* Runs codec_decode and codec_decode_flat (as an event) on the same bytes.
 * Returns 1 when flat breaks its contract: a return other than 0 or -1, an
 * acceptance of bytes codec_decode refuses (or decodes as a command), or a
 * value other than codec_decode's; why says which. */
static int disagree(const unsigned char *buf, size_t len, codec_flat_t *f, int *flat_rc, int *dec_rc,
                    char *why, size_t whyn) {
    codec_type_t t = CODEC_COMMAND;
    json_t *doc = NULL;
    char err[512] = "";
    int rc = codec_decode(buf, len, &t, &doc, err, sizeof(err));
    int frc = codec_decode_flat(buf, len, CODEC_EVENT, f);
    int broken = 0;
    if (flat_rc)
        *flat_rc = frc;
    if (dec_rc)
        *dec_rc = rc == 0 && t != CODEC_EVENT ? -100 : rc;
    if (frc != 0 && frc != -1) {
        snprintf(why, whyn, "codec_decode_flat returned %d", frc);
        broken = 1;
    } else if (frc == 0 && rc != 0) {
        snprintf(why, whyn, "flat accepts what codec_decode refuses (%s: %s)", codec_strerror(rc), err);
        broken = 1;
    } else if (frc == 0 && t != CODEC_EVENT) {
        snprintf(why, whyn, "flat accepts a command as an event");
        broken = 1;
    } else if (frc == 0) {
        char w[512];
        int n = cff_compare_flat(f, doc, NULL, NULL, w, sizeof(w));
        if (n) {
            snprintf(why, whyn, "%d values differ; first: %s", n, w);
            broken = 1;
        }
    }
    json_decref(doc);
    return broken;
}

/* Both refuse: codec_decode fails and codec_decode_flat declines. */
static void both_refuse(const unsigned char *buf, size_t len, codec_flat_t *f, const char *what) {
    codec_type_t t;
    json_t *doc = NULL;
    char err[512] = "";
    int rc = codec_decode(buf, len, &t, &doc, err, sizeof(err));
    ok(rc < 0, "%s: codec_decode refuses it (%s)", what, rc < 0 ? codec_strerror(rc) : "it accepted");
    if (rc == 0)
        json_decref(doc);
    int frc = codec_decode_flat(buf, len, CODEC_EVENT, f);
    is_int(frc, -1, "%s: codec_decode_flat declines it", what);
    if (rc == 0 || frc != -1)
        diag_bytes(buf, len);
}

/* Both accept and agree on every value. */
static void both_accept(const unsigned char *buf, size_t len, codec_flat_t *f, const char *what) {
    codec_type_t t = CODEC_COMMAND;
    json_t *doc = NULL;
    char err[512] = "", why[512] = "";
    int rc = codec_decode(buf, len, &t, &doc, err, sizeof(err));
    ok(rc == 0 && t == CODEC_EVENT, "%s: codec_decode takes it as an event (%s)", what, rc ? err : "ok");
    int frc = codec_decode_flat(buf, len, CODEC_EVENT, f);
    is_int(frc, 0, "%s: codec_decode_flat takes it", what);
    if (rc == 0 && frc == 0) {
        int n = cff_compare_flat(f, doc, NULL, NULL, why, sizeof(why));
        ok(n == 0, "%s: every field is codec_decode's%s%s", what, n ? ": " : "", why);
    }
    if (rc != 0 || frc != 0)
        diag_bytes(buf, len);
    json_decref(doc);
}

/* --- building records -------------------------------------------------------- */

typedef struct bytes {
    unsigned char *p;
    size_t len, cap;
} bytes_t;

static void put(bytes_t *b, const void *src, size_t n) {
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n)
            cap *= 2;
        b->p = realloc(b->p, cap);
        if (!b->p)
            abort();
        b->cap = cap;
    }
    if (n)
        memcpy(b->p + b->len, src, n);
    b->len += n;
}

static void put_byte(bytes_t *b, unsigned char c) {
    put(b, &c, 1);
}

/* An Avro long: zigzag, then a little-endian base-128 varint. */
static void put_long(bytes_t *b, int64_t v) {
    uint64_t z = ((uint64_t)v << 1) ^ (v < 0 ? UINT64_MAX : 0);
    while (z >= 0x80) {
        put_byte(b, (unsigned char)(z | 0x80));
        z >>= 7;
    }
    put_byte(b, (unsigned char)z);
}

/* buf with drop bytes at `at` replaced by the n bytes of ins. */
static bytes_t splice(const unsigned char *buf, size_t len, size_t at, size_t drop, const void *ins,
                      size_t n) {
    bytes_t b = {0};
    put(&b, buf, at);
    put(&b, ins, n);
    put(&b, buf + at + drop, len - at - drop);
    return b;
}

/* --- declines ---------------------------------------------------------- */

static json_t *seed_command(void) {
    return json_pack("{s:s,s:s,s:s,s:s,s:s,s:s,s:I,s:s,s:s,s:s,s:s,s:i,s:b,s:b}", "operation", "install",
                     "commandId", CFF_COMMAND_ID, "tenantId", CFF_TENANT_ID, "namespace", "tenant-acme",
                     "releaseName", "acme-ai-service", "performedBy", "alice", "requestedAt",
                     (json_int_t)1764000000000LL, "chartName", "matih-ai-service", "chartVersion", "1.0.0",
                     "appVersion", "2.0.0", "valuesOverride", "{\"replicaCount\":2}", "timeout", 600,
                     "atomic", 1, "waitForJobs", 1);
}

static void test_command_and_header(codec_flat_t *f) {
    char err[512] = "";
    unsigned char *buf = NULL;
    size_t len = 0;
    json_t *cmd = seed_command();
    is_int(codec_encode(CODEC_COMMAND, cmd, &buf, &len, err, sizeof(err)), 0, "encode a command (%s)", err);
    json_decref(cmd);
    if (!buf)
        return;
    codec_type_t t = CODEC_EVENT;
    json_t *doc = NULL;
    is_int(codec_decode(buf, len, &t, &doc, err, sizeof(err)), 0, "codec_decode takes the command");
    is_int(t, CODEC_COMMAND, "as a command");
    json_decref(doc);
    is_int(codec_decode_flat(buf, len, CODEC_EVENT, f), -1, "a command asked as an event: flat declines");
    free(buf);

    const cff_sample_t *ev = &cff_samples[2];
    is_int(codec_decode_flat(ev->buf, ev->len, CODEC_COMMAND, f), -1,
           "an event asked as a command: flat declines");

    unsigned char *b = malloc(ev->len);
    memcpy(b, ev->buf, ev->len);
    b[0] = 0x00;
    both_refuse(b, ev->len, f, "first header byte 00, not C3");
    b[0] = 0xC3;
    b[1] = 0x02;
    both_refuse(b, ev->len, f, "second header byte 02, not 01");
    b[1] = 0x01;
    for (int i = 2; i < 10; i++) {
        char what[96];
        b[i] ^= 0x5A;
        snprintf(what, sizeof(what), "fingerprint byte %d changed: unknown fingerprint", i - 2);
        both_refuse(b, ev->len, f, what);
        b[i] ^= 0x5A;
    }
    {
        int rc = codec_decode(b, ev->len, &t, &doc, err, sizeof(err));
        is_int(rc, 0, "(restored, the record decodes again)");
        if (rc == 0)
            json_decref(doc);
    }
    b[5] ^= 0xFF;
    is_int(codec_decode(b, ev->len, &t, &doc, err, sizeof(err)), CODEC_ERR_FINGERPRINT,
           "codec_decode names the unknown fingerprint");
    free(b);
    both_refuse((const unsigned char *)"", 0, f, "no bytes at all");
    both_refuse((const unsigned char *)"\xc3\x01", 2, f, "a header without a fingerprint");
}

static void test_truncated_and_trailing(codec_flat_t *f) {
    for (int s = 0; s < cff_nsamples; s++) {
        const cff_sample_t *sm = &cff_samples[s];
        size_t flat_took = 0, dec_took = 0, first_flat = 0, first_dec = 0;
        for (size_t l = 0; l < sm->len; l++) {
            codec_type_t t;
            json_t *doc = NULL;
            char err[512];
            if (codec_decode(sm->buf, l, &t, &doc, err, sizeof(err)) == 0) {
                if (!dec_took++)
                    first_dec = l;
                json_decref(doc);
            }
            if (codec_decode_flat(sm->buf, l, CODEC_EVENT, f) != -1 && !flat_took++)
                first_flat = l;
        }
        ok(flat_took == 0, "%s: flat declines all %zu proper prefixes", sm->label, sm->len);
        if (flat_took)
            printf("#   %zu taken, the first of %zu bytes\n", flat_took, first_flat);
        ok(dec_took == 0, "%s: codec_decode refuses them all too", sm->label);
        if (dec_took)
            printf("#   %zu taken, the first of %zu bytes\n", dec_took, first_dec);

        unsigned char *longer = malloc(sm->len + 1);
        memcpy(longer, sm->buf, sm->len);
        longer[sm->len] = 0x00;
        char what[160];
        snprintf(what, sizeof(what), "%s + one trailing byte", sm->label);
        both_refuse(longer, sm->len + 1, f, what);
        free(longer);
    }
}

/* A string of an encoded event patched in place: both must refuse it. */
static void patch_text(const cff_sample_t *sm, const char *needle, size_t at, unsigned char byte,
                       codec_flat_t *f, const char *what) {
    const unsigned char *p = memmem(sm->buf, sm->len, needle, strlen(needle));
    ok(p != NULL, "%s: \"%s\" is in the record", sm->label, needle);
    if (!p)
        return;
    unsigned char *b = malloc(sm->len);
    memcpy(b, sm->buf, sm->len);
    b[(size_t)(p - sm->buf) + at] = byte;
    char label[256];
    snprintf(label, sizeof(label), "%s: %s", sm->label, what);
    both_refuse(b, sm->len, f, label);
    free(b);
}

static void test_bad_text_in_events(codec_flat_t *f) {
    const cff_sample_t *full = &cff_samples[2], *rich = &cff_samples[3];
    patch_text(full, "tenant-acme", 0, 0xFF, f, "namespace's first byte 0xFF (invalid UTF-8)");
    patch_text(full, "tenant-acme", 6, 0x00, f, "namespace with an embedded NUL");
    patch_text(full, "Install failed", 4, 0xFF, f, "a nullable description with a 0xFF byte");
    patch_text(full, "Install failed", 13, 0x00, f, "a nullable description ending in NUL");
    patch_text(full, "HELM_FAILED", 0, 0x00, f, "errorCode (after the history) starting with NUL");
    patch_text(rich, "atomic-rollback", 3, 0xFF, f, "a history item's operation with a 0xFF byte");
    patch_text(rich, "atomic-rollback", 3, 0x00, f, "a history item's operation with a NUL");
    patch_text(rich, "superseded", 0, 0xFF, f, "the second history item's status with a 0xFF byte");
    /* "é" is C3 A9: a continuation byte replaced, a lead byte alone. */
    patch_text(rich, "\xc3\xa9quipe", 1, 'X', f, "a 2-byte sequence cut short (C3 58)");
    patch_text(rich, "\xc3\xa9quipe", 0, 0x80, f, "a lone continuation byte (80 A9)");
    /* "🚀" is F0 9F 9A 80. */
    patch_text(rich, "\xf0\x9f\x9a\x80", 0, 0xF5, f, "a 4-byte lead above F4");
    patch_text(rich, "\xf0\x9f\x9a\x80", 3, 0xC0, f,
               "a 4-byte sequence whose last byte is not a continuation");
}

/* A 41-byte event whose layout is known, so that single fields can be patched. */
static const unsigned char minimal_datum[] = {
    0x02, 'e',  0x02, 'c',        /* eventId, commandId */
    0x0A, 0x01, 0x00,             /* eventType rejected (5), terminal true, releaseId null */
    0x02, 't',  0x02, 'n',  0x02, /* tenantId, namespace, releaseName... */
    'r',  0x00, 0x02, 's',        /* ...releaseName, operation install (0), status */
    0x00, 0x00, 0x00, 0x00,       /* revision 0, chartName, chartVersion, appVersion null */
    0x00, 0x02, 'p',  0x02,       /* description null, performedBy, occurredAt 1 */
    0x02, 0x00, 0x00, 0x00,       /* requestedAt 1, reason, valuesDigest, valuesRedacted null */
    0x00, 0x00, 0x00,             /* history [], errorCode null, errorMessage null */
};
enum {
    OFF_EVENT_TYPE = 14,
    OFF_TERMINAL = 15,
    OFF_RELEASE_ID = 16,
    OFF_NAMESPACE = 19,
    OFF_OPERATION = 23,
    OFF_REVISION = 26,
    OFF_CHART_NAME = 27,
    OFF_OCCURRED_AT = 33,
    OFF_HISTORY = 38,
    OFF_ERROR_MESSAGE = 40,
    MINIMAL_LEN = 41
};

static unsigned char minimal[MINIMAL_LEN];

static int make_minimal(void) {
    char err[512] = "";
    unsigned char *buf = NULL;
    size_t len = 0;
    json_t *ev =
        json_pack("{s:s,s:s,s:s,s:b,s:s,s:s,s:s,s:s,s:s,s:i,s:s,s:I,s:I}", "eventId", "e", "commandId", "c",
                  "eventType", "rejected", "terminal", 1, "tenantId", "t", "namespace", "n", "releaseName",
                  "r", "operation", "install", "status", "s", "revision", 0, "performedBy", "p", "occurredAt",
                  (json_int_t)1, "requestedAt", (json_int_t)1);
    is_int(codec_encode(CODEC_EVENT, ev, &buf, &len, err, sizeof(err)), 0, "encode a minimal event (%s)",
           err);
    json_decref(ev);
    int as_assumed = buf && len == MINIMAL_LEN && memcmp(buf + 10, minimal_datum, sizeof(minimal_datum)) == 0;
    ok(as_assumed, "the minimal event's bytes are laid out as the patches below assume");
    if (buf && !as_assumed)
        diag_bytes(buf, len);
    if (as_assumed)
        memcpy(minimal, buf, MINIMAL_LEN);
    free(buf);
    return as_assumed;
}

static void patch_byte(size_t at, unsigned char byte, codec_flat_t *f, const char *what) {
    unsigned char b[MINIMAL_LEN];
    memcpy(b, minimal, sizeof(b));
    b[at] = byte;
    both_refuse(b, sizeof(b), f, what);
}

/* The minimal event with drop bytes at `at` replaced by those of ins. */
/* Bytes from hex pairs, spaces ignored ("04 00000000"). */
static bytes_t from_hex(const char *hex) {
    bytes_t b = {0};
    for (const char *h = hex; *h;) {
        if (*h == ' ') {
            h++;
            continue;
        }
        unsigned int x;
        sscanf(h, "%2x", &x);
        put_byte(&b, (unsigned char)x);
        h += 2;
    }
    return b;
}

static bytes_t minimal_with(size_t at, size_t drop, const bytes_t *ins) {
    return splice(minimal, MINIMAL_LEN, at, drop, ins->p, ins->len);
}

static void test_bad_datum(codec_flat_t *f) {
    both_accept(minimal, MINIMAL_LEN, f, "the minimal event");
    patch_byte(OFF_EVENT_TYPE, 0x0C, f, "eventType index 6 (6 symbols)");
    patch_byte(OFF_EVENT_TYPE, 0x01, f, "eventType index -1");
    patch_byte(OFF_OPERATION, 0x08, f, "operation index 4 (4 symbols)");
    patch_byte(OFF_TERMINAL, 0x02, f, "terminal byte 2");
    patch_byte(OFF_TERMINAL, 0xFF, f, "terminal byte FF");
    patch_byte(OFF_RELEASE_ID, 0x04, f, "releaseId union branch 2");
    patch_byte(OFF_RELEASE_ID, 0x01, f, "releaseId union branch -1");
    patch_byte(OFF_CHART_NAME, 0x04, f, "chartName union branch 2");
    patch_byte(OFF_ERROR_MESSAGE, 0x04, f, "errorMessage union branch 2");
    patch_byte(OFF_NAMESPACE, 0x01, f, "namespace length -1");
    patch_byte(OFF_NAMESPACE, 0x7E, f, "namespace length 63, beyond the record");
    patch_byte(OFF_NAMESPACE, 0x80, f, "namespace length varint running off the record");
    patch_byte(OFF_NAMESPACE + 1, 0xFF, f, "namespace 0xFF");
    patch_byte(OFF_NAMESPACE + 1, 0x00, f, "namespace NUL");
    patch_byte(OFF_HISTORY, 0x01, f, "history block count -1 without its size");

    /* Numbers out of range, varints too long. */
    struct {
        size_t at;
        int64_t value;
        const char *what;
    } longs[] = {
        {OFF_REVISION, (int64_t)INT32_MAX + 1, "revision 2^31 (int overflows)"},
        {OFF_REVISION, (int64_t)INT32_MIN - 1, "revision -2^31-1 (int overflows)"},
        {OFF_REVISION, INT64_MAX, "revision INT64_MAX (int overflows)"},
        {OFF_EVENT_TYPE, 1LL << 40, "eventType index 2^40"},
        {OFF_RELEASE_ID, 1LL << 33, "releaseId union branch 2^33"},
        {OFF_HISTORY, INT64_MIN, "history block count INT64_MIN"},
        {OFF_HISTORY, 1LL << 40, "history block count 2^40"},
        {OFF_HISTORY, 2000000, "history block count 2,000,000 with no items"},
    };
    for (size_t i = 0; i < sizeof(longs) / sizeof(longs[0]); i++) {
        bytes_t ins = {0};
        put_long(&ins, longs[i].value);
        bytes_t b = minimal_with(longs[i].at, 1, &ins);
        both_refuse(b.p, b.len, f, longs[i].what);
        free(b.p);
        free(ins.p);
    }
    {
        static const unsigned char eleven[] = {0x80, 0x80, 0x80, 0x80, 0x80, 0x80,
                                               0x80, 0x80, 0x80, 0x80, 0x00};
        bytes_t ins = {0};
        put(&ins, eleven, sizeof(eleven));
        bytes_t b = minimal_with(OFF_OCCURRED_AT, 1, &ins);
        both_refuse(b.p, b.len, f, "occurredAt as an 11-byte varint");
        free(b.p);
        free(ins.p);
    }

    /* History blocks: the counted and the sized forms, several blocks, items
     * with bad values. An item of zeros: revision 0, four empty strings or
     * nulls, createdAt 0 (8 bytes). */
    struct {
        const char *what;
        const char *hex;
        int good;
    } hist[] = {
        {"history: one block of one item", "02 00000000 00000000 00", 1},
        {"history: a sized block (count -1, 8 bytes)", "01 10 00000000 00000000 00", 1},
        {"history: blocks of 1 and 2 items", "02 0000000000000000 04 0000000000000000 0000000000000000 00",
         1},
        {"history: an item with text and a set appVersion",
         "02 08 02 41 04 c3a9 00 02 02 62 02 43 02 08 f09f9a80 01 00", 1},
        {"history: a sized block whose size runs past the record", "01 7e 00000000 00000000 00", 0},
        {"history: an item's appVersion union branch 2", "02 00 00 00 00 04 00 00 00 00", 0},
        {"history: an item's status 0xFF", "02 00 02 ff 00 00 00 00 00 00 00", 0},
        {"history: an item's status NUL", "02 00 02 00 00 00 00 00 00 00 00", 0},
        {"history: an item's revision 2^31", "02 8080808010 00 00 00 00 00 00 00 00", 0},
        {"history: two items announced, one given", "04 00000000 00000000 00", 0},
    };
    for (size_t i = 0; i < sizeof(hist) / sizeof(hist[0]); i++) {
        bytes_t ins = from_hex(hist[i].hex);
        bytes_t b = minimal_with(OFF_HISTORY, 1, &ins);
        if (hist[i].good)
            both_accept(b.p, b.len, f, hist[i].what);
        else
            both_refuse(b.p, b.len, f, hist[i].what);
        free(b.p);
        free(ins.p);
    }
}

/* The minimal event's namespace replaced by the n bytes of s. */
static bytes_t minimal_namespace(const char *s, size_t n) {
    bytes_t ins = {0};
    put_long(&ins, (int64_t)n);
    put(&ins, s, n);
    bytes_t b = minimal_with(OFF_NAMESPACE, 2, &ins);
    free(ins.p);
    return b;
}

static void test_utf8(codec_flat_t *f) {
    struct {
        const char *s;
        size_t n;
        const char *what;
    } good[] = {
        {"\x7f", 1, "DEL"},
        {"\xc2\x80", 2, "U+0080, the first 2-byte"},
        {"\xc3\xa9", 2, "U+00E9"},
        {"\xdf\xbf", 2, "U+07FF, the last 2-byte"},
        {"\xe0\xa0\x80", 3, "U+0800, the first 3-byte"},
        {"\xe6\x97\xa5", 3, "U+65E5"},
        {"\xed\x9f\xbf", 3, "U+D7FF, below the surrogates"},
        {"\xee\x80\x80", 3, "U+E000, above the surrogates"},
        {"\xef\xbf\xbf", 3, "U+FFFF"},
        {"\xf0\x90\x80\x80", 4, "U+10000, the first 4-byte"},
        {"\xf0\x9f\x9a\x80", 4, "U+1F680"},
        {"\xf4\x8f\xbf\xbf", 4, "U+10FFFF, the last"},
        {"a\tb\nc\\d\"e", 9, "tab, newline, backslash, quote"},
    };
    struct {
        const char *s;
        size_t n;
        const char *what;
    } bad[] = {
        {"\xff", 1, "FF"},
        {"\xfe", 1, "FE"},
        {"\x00", 1, "NUL alone"},
        {"a\x00z", 3, "an embedded NUL"},
        {"abc\x00", 4, "a trailing NUL"},
        {"\x80", 1, "a lone continuation byte"},
        {"\xbf", 1, "a lone continuation byte BF"},
        {"\xc0\x80", 2, "overlong NUL (C0 80)"},
        {"\xc1\xbf", 2, "overlong 2-byte (C1 BF)"},
        {"\xe0\x80\x80", 3, "overlong 3-byte (E0 80 80)"},
        {"\xe0\x9f\xbf", 3, "overlong 3-byte (E0 9F BF)"},
        {"\xed\xa0\x80", 3, "surrogate U+D800"},
        {"\xed\xbf\xbf", 3, "surrogate U+DFFF"},
        {"\xf0\x80\x80\x80", 4, "overlong 4-byte (F0 80 80 80)"},
        {"\xf0\x8f\xbf\xbf", 4, "overlong 4-byte (F0 8F BF BF)"},
        {"\xf4\x90\x80\x80", 4, "above U+10FFFF (F4 90 80 80)"},
        {"\xf5\x80\x80\x80", 4, "lead byte F5"},
        {"\xf8\x88\x80\x80\x80", 5, "a 5-byte form"},
        {"\xc3", 1, "a 2-byte sequence cut at the end"},
        {"\xe6\x97", 2, "a 3-byte sequence cut at the end"},
        {"\xf0\x9f\x9a", 3, "a 4-byte sequence cut at the end"},
        {"\xc3\x41", 2, "a lead followed by ASCII"},
        {"\xe6\x41\xa5", 3, "a 3-byte sequence broken in the middle"},
        {"\xc3\xa9\xa9", 3, "one continuation byte too many"},
    };
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        char what[128];
        snprintf(what, sizeof(what), "namespace %s", good[i].what);
        bytes_t b = minimal_namespace(good[i].s, good[i].n);
        both_accept(b.p, b.len, f, what);
        free(b.p);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char what[128];
        snprintf(what, sizeof(what), "namespace %s", bad[i].what);
        bytes_t b = minimal_namespace(bad[i].s, bad[i].n);
        both_refuse(b.p, b.len, f, what);
        free(b.p);
    }
}

/* Varints that are not the shortest form: codec_decode takes some of them
 * (tests/fuzz/FINDINGS.md F4); flat must not take one that it refuses, nor
 * read another value. */
static void test_long_varints(codec_flat_t *f) {
    struct {
        size_t at;
        const char *hex;
        const char *what;
    } cases[] = {
        {OFF_REVISION, "80 00", "revision 0 in 2 bytes"},
        {OFF_REVISION, "82 80 80 80 00", "revision 1 in 5 bytes"},
        {OFF_REVISION, "82 80 80 80 80 00", "revision 1 in 6 bytes"},
        {OFF_REVISION, "82 80 80 80 80 80 80 80 80 00", "revision 1 in 10 bytes"},
        {OFF_OCCURRED_AT, "82 80 80 80 80 80 80 80 80 00", "occurredAt 1 in 10 bytes"},
        {OFF_OCCURRED_AT, "82 80 80 80 80 80 80 80 80 7f", "occurredAt, a 10th byte with bits beyond 64"},
        {OFF_EVENT_TYPE, "8a 80 00", "eventType index 5 in 3 bytes"},
        {OFF_RELEASE_ID, "80 80 00", "releaseId branch 0 in 3 bytes"},
        {OFF_NAMESPACE, "82 00 6e", "namespace length 1 in 2 bytes"},
        {OFF_HISTORY, "80 80 00", "history end of blocks in 3 bytes"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        bytes_t ins = from_hex(cases[i].hex);
        size_t drop = cases[i].at == OFF_NAMESPACE ? 2 : 1;
        bytes_t b = minimal_with(cases[i].at, drop, &ins);
        int frc, drc;
        char why[512] = "";
        int broken = disagree(b.p, b.len, f, &frc, &drc, why, sizeof(why));
        ok(!broken, "%s: flat keeps its contract (flat %d, codec_decode %d)%s%s", cases[i].what, frc, drc,
           broken ? ": " : "", why);
        if (broken)
            diag_bytes(b.p, b.len);
        free(b.p);
        free(ins.p);
    }
}

/* n history items of 8 zero bytes each (revision 0, empty strings, nulls,
 * createdAt 0) in one block. codec_decode's datum check counts every value
 * (record, field, union branch: 11 per such item) against CODEC_MAX_ITEMS
 * (1,000,000), so it refuses from 90,906 items on; flat must count the same
 * way (it once counted 8 slots per item and took up to 125,000). */
static void test_many_items(codec_flat_t *f, int64_t n, int expect_refused) {
    bytes_t b = {0};
    put(&b, minimal, OFF_HISTORY);
    put_long(&b, n);
    for (int64_t i = 0; i < n; i++)
        put(&b, "\0\0\0\0\0\0\0\0", 8);
    put(&b, "\0\0\0", 3);
    int frc, drc;
    char why[512] = "", what[128];
    snprintf(what, sizeof(what), "%" PRId64 " history items of zeros (%zu bytes)", n, b.len);
    int broken = disagree(b.p, b.len, f, &frc, &drc, why, sizeof(why));
    ok(!broken, "%s: flat keeps its contract (flat %d, codec_decode %d)%s%s", what, frc, drc,
       broken ? ": " : "", why);
    if (expect_refused)
        ok(drc < 0, "%s: codec_decode refuses them (%d)", what, drc);
    else
        ok(drc == 0 && frc == 0 && f->items == n, "%s: both take them (flat %d, %d items; codec_decode %d)",
           what, frc, f->items, drc);
    free(b.p);
}

/* Every byte of some events set to bytes likely to matter, removed, or
 * preceded by another: flat never takes what codec_decode refuses, and on
 * what it takes holds codec_decode's values. */
static void test_mutations(codec_flat_t *f) {
    static const unsigned char values[] = {0x00, 0x01, 0x02, 0x03, 0x04, 0x0A, 0x0C, 0x7E, 0x7F, 0x80,
                                           0x81, 0xA9, 0xBF, 0xC0, 0xC3, 0xE0, 0xED, 0xF0, 0xF4, 0xFF};
    const cff_sample_t *list[4] = {&cff_samples[0], &cff_samples[2], &cff_samples[3], &cff_samples[4]};
    for (int s = 0; s < 4; s++) {
        const cff_sample_t *sm = list[s];
        unsigned char *b = malloc(sm->len + 1);
        int tried = 0, broken = 0, both = 0, declined = 0;
        char first[512] = "";
        size_t first_at = 0;
        unsigned char first_byte = 0;
        const char *first_kind = "";
        for (size_t at = 0; at < sm->len; at++) {
            for (size_t v = 0; v < sizeof(values) + 3; v++) {
                size_t len = sm->len;
                memcpy(b, sm->buf, sm->len);
                const char *kind = "set";
                unsigned char byte;
                if (v < sizeof(values)) {
                    byte = values[v];
                    if (byte == sm->buf[at])
                        continue;
                    b[at] = byte;
                } else if (v == sizeof(values)) {
                    kind = "remove";
                    byte = sm->buf[at];
                    memmove(b + at, b + at + 1, sm->len - at - 1);
                    len--;
                } else {
                    kind = "insert";
                    byte = v == sizeof(values) + 1 ? 0x00 : 0x02;
                    memmove(b + at + 1, b + at, sm->len - at);
                    b[at] = byte;
                    len++;
                }
                int frc, drc;
                char why[512];
                tried++;
                if (disagree(b, len, f, &frc, &drc, why, sizeof(why))) {
                    if (!broken++) {
                        snprintf(first, sizeof(first), "%s", why);
                        first_at = at;
                        first_byte = byte;
                        first_kind = kind;
                    }
                } else if (frc == 0)
                    both++;
                else if (drc == 0)
                    declined++;
            }
        }
        ok(broken == 0, "%s: %d mutations, flat keeps its contract on each (%d taken by both)", sm->label,
           tried, both);
        if (broken)
            printf("#   %d broken; the first: %s byte %02x at %zu: %s\n", broken, first_kind, first_byte,
                   first_at, first);
        if (declined)
            printf("#   (flat declined %d that codec_decode took: allowed)\n", declined);
        free(b);
    }
}
int main(void) {
    char err[512] = "";
    /* The setup's own assertions are test_codec_flat.c's; here only its
     * failures show. */
    if (codec_init(err, sizeof(err)) < 0) {
        ok(0, "codec_init (%s)", err);
        return tap_done();
    }
    cff_schema_load();
    if (!cff_array_name || !cff_item_fields) {
        ok(0, "the event schema has an array of records");
        return tap_done();
    }
    if (cff_samples_build(NULL) < 7) {
        ok(0, "the sample events were built");
        return tap_done();
    }
    codec_flat_t f;
    memset(&f, 0, sizeof(f));
    test_command_and_header(&f);
    test_truncated_and_trailing(&f);
    test_bad_text_in_events(&f);
    if (make_minimal()) {
        test_bad_datum(&f);
        test_utf8(&f);
        test_long_varints(&f);
        test_many_items(&f, 1000, 0);
        test_many_items(&f, 90905, 0);
        test_many_items(&f, 90906, 1);
        test_many_items(&f, 100000, 1);
        test_many_items(&f, 125001, 1);
    }
    test_mutations(&f);
    codec_flat_free(&f);
    cff_samples_free();
    cff_schema_free();
    codec_term();
    return tap_done();
}
