/* Shared by the helmq fuzz targets (tests/fuzz/README.md): codec set-up,
 * the table of every compiled-in schema with its fingerprint computed here
 * independently of the codec, and the oracles the targets apply.
 *
 * An oracle that fails calls fuzz_fail(), which prints what broke and
 * abort()s, so libFuzzer reports a crash and saves the input. */
#include "avro_canon.h"
#include "codec.h"
#include "embedded.h"
#include "validate.h"

#include <avro.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The API the targets use (declared again at the top of each target). */
void fuzz_init(void);
size_t fuzz_schema_count(void);
uint64_t fuzz_schema_fingerprint(size_t i);
const char *fuzz_schema_path(size_t i);
int fuzz_known(const char *finding);
void fuzz_fail(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
void fuzz_check_decoded(codec_type_t type, const json_t *doc, const char *origin);
void fuzz_check_encode(codec_type_t type, const json_t *doc);
void fuzz_decode(const uint8_t *data, size_t size, const char *origin);
void fuzz_command_round_trip(const json_t *doc, const char *origin);

#define FUZZ_MAX_SCHEMAS 32

typedef struct fuzz_schema {
    const char *path;
    uint64_t fingerprint;
    int event;   /* namespace io.helmq.event */
    int current; /* not under schemas/versions/ */
    avro_schema_t schema; /* parsed here, for the datum model below */
} fuzz_schema_t;

static fuzz_schema_t table[FUZZ_MAX_SCHEMAS];
static size_t table_len;
static int strict;

void fuzz_fail(const char *fmt, ...) {
    va_list ap;
    fprintf(stderr, "\n==helmq-fuzz== ORACLE FAILED: ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n");
    fflush(stderr);
    abort();
}

/* Whether a documented open finding (FINDINGS.md) is tolerated, so that a
 * run goes on past it: yes, unless FUZZ_STRICT=1 asks every oracle to fail
 * (to check that a fix holds). No finding is open, so nothing calls it now;
 * a new tolerance is `if (<the finding's condition> && fuzz_known("F5")) return;`. */
int fuzz_known(const char *finding) {
    (void)finding;
    return !strict;
}

/* avro-c's allocator, as its default (realloc/free), except that a request
 * of 2^62 bytes or more fails at once. Such sizes come only from negative
 * lengths in a datum (read_string allocates length+1 as a size_t); malloc
 * fails on them in production too, and ASan would print a warning for each,
 * millions of times in a run. */
static void *bounded_allocator(void *ud, void *ptr, size_t osize, size_t nsize) {
    (void)ud;
    (void)osize;
    if (nsize == 0) {
        free(ptr);
        return NULL;
    }
    if (nsize >= ((size_t)1 << 62))
        return NULL;
    return realloc(ptr, nsize);
}

void fuzz_init(void) {
    char err[512] = "";
    const char *s = getenv("FUZZ_STRICT");
    strict = s && strcmp(s, "1") == 0;
    avro_set_allocator(bounded_allocator, NULL);
    if (codec_init(err, sizeof(err)) < 0)
        fuzz_fail("codec_init: %s", err);
    /* Every compiled-in schema, in the build's order (the current command,
     * the current event, then schemas/versions/ sorted): fingerprint = CRC-64-AVRO
     * of the Parsing Canonical Form, computed here from the embedded text. */
    for (const embedded_file_t *src = schema_sources; src->path; src++) {
        if (table_len == FUZZ_MAX_SCHEMAS)
            fuzz_fail("more than %d schemas", FUZZ_MAX_SCHEMAS);
        char *canon = avro_canonical_form(src->text, strlen(src->text), err, sizeof(err));
        if (!canon)
            fuzz_fail("%s: no canonical form: %s", src->path, err);
        json_t *j = json_loads(src->text, 0, NULL);
        const char *ns = json_string_value(json_object_get(j, "namespace"));
        fuzz_schema_t *t = &table[table_len++];
        t->path = src->path;
        t->fingerprint = avro_crc64(canon, strlen(canon));
        t->event = ns && strcmp(ns, "io.helmq.event") == 0;
        t->current = strstr(src->path, "/versions/") == NULL;
        if (avro_schema_from_json_length(src->text, strlen(src->text), &t->schema) != 0)
            fuzz_fail("%s: avro-c cannot parse it: %s", src->path, avro_strerror());
        json_decref(j);
        free(canon);
    }
    int old_commands = 0;
    for (size_t i = 0; i < table_len; i++) {
        fuzz_schema_t *t = &table[i];
        codec_type_t type = t->event ? CODEC_EVENT : CODEC_COMMAND;
        if (t->current && t->fingerprint != codec_fingerprint(type))
            fuzz_fail("%s: fingerprint %016llx here, %016llx in the codec", t->path,
                      (unsigned long long)t->fingerprint, (unsigned long long)codec_fingerprint(type));
        if (!t->current && !t->event)
            old_commands++;
    }
    if (old_commands == 0)
        fuzz_fail("no older command schema (schemas/versions/) is compiled in");
    if (getenv("FUZZ_VERBOSE"))
        for (size_t i = 0; i < table_len; i++)
            fprintf(stderr, "helmq-fuzz: schema %zu %s fingerprint %016llx (header bytes little-endian)\n", i,
                    table[i].path, (unsigned long long)table[i].fingerprint);
}

size_t fuzz_schema_count(void) { return table_len; }
uint64_t fuzz_schema_fingerprint(size_t i) { return table[i].fingerprint; }
const char *fuzz_schema_path(size_t i) { return table[i].path; }

static const char *type_name(codec_type_t t) { return t == CODEC_EVENT ? "event" : "command"; }

static char *dump(const json_t *j) {
    char *s = j ? json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY | JSON_SORT_KEYS) : NULL;
    return s ? s : strdup("(null)");
}

/* Whether every value of got is the value of the same place in want:
 * objects by key (keys of got missing from want are schema defaults and
 * pass), arrays element by element, scalars equal. */
static int subsumed(const json_t *got, const json_t *want) {
    if (json_is_object(got)) {
        const char *k;
        json_t *v;
        if (!json_is_object(want))
            return 0;
        json_object_foreach((json_t *)got, k, v) {
            const json_t *w = json_object_get(want, k);
            if (w && !subsumed(v, w))
                return 0;
        }
        return 1;
    }
    if (json_is_array(got)) {
        if (!json_is_array(want) || json_array_size(got) != json_array_size(want))
            return 0;
        for (size_t i = 0; i < json_array_size(got); i++)
            if (!subsumed(json_array_get(got, i), json_array_get(want, i)))
                return 0;
        return 1;
    }
    return json_equal(got, want);
}

/* A document codec_decode returned must be a well-formed document of its
 * type: it re-encodes, the re-encoded record decodes to the same document,
 * and encoding is deterministic. */
void fuzz_check_decoded(codec_type_t type, const json_t *doc, const char *origin) {
    char err[512] = "";
    unsigned char *buf = NULL, *buf2 = NULL;
    size_t len = 0, len2 = 0;
    codec_type_t type2;
    json_t *doc2 = NULL;
    validate_error_t verr;

    if (type != CODEC_COMMAND && type != CODEC_EVENT)
        fuzz_fail("%s: codec_decode returned type %d", origin, (int)type);
    if (!json_is_object(doc))
        fuzz_fail("%s: the decoded %s is not a JSON object", origin, type_name(type));
    if (type == CODEC_COMMAND) {
        const char *op = json_string_value(json_object_get(doc, "operation"));
        const char *k;
        json_t *v;
        if (!op || (strcmp(op, "install") && strcmp(op, "upgrade") && strcmp(op, "rollback") && strcmp(op, "uninstall")))
            fuzz_fail("%s: decoded command has operation %s", origin, op ? op : "(none)");
        json_object_foreach((json_t *)doc, k, v) {
            if (!codec_command_field_known(op, k))
                fuzz_fail("%s: decoded %s command has field \"%s\" not in its schema", origin, op, k);
        }
        /* What the worker does next with a decoded command; any answer is
         * fine, but a refusal names a field and a rule. */
        if (validate_command(doc, &verr) != 0 && (!verr.rule[0] || !verr.message[0]))
            fuzz_fail("%s: validate_command refused without naming a rule", origin);
    }
    if (codec_encode(type, doc, &buf, &len, err, sizeof(err)) != 0) {
        char *d = dump(doc);
        fuzz_fail("%s: a decoded %s does not re-encode: %s\n  document: %s", origin, type_name(type), err, d);
    }
    uint64_t fp = 0;
    for (int i = 0; i < 8; i++)
        fp |= (uint64_t)buf[2 + i] << (8 * i);
    if (len < 10 || buf[0] != 0xC3 || buf[1] != 0x01 || fp != codec_fingerprint(type))
        fuzz_fail("%s: codec_encode wrote a bad single-object header", origin);
    int rc = codec_decode(buf, len, &type2, &doc2, err, sizeof(err));
    if (rc != 0) {
        char *d = dump(doc);
        fuzz_fail("%s: re-encoded %s does not decode (%s): %s\n  document: %s", origin, type_name(type),
                  codec_strerror(rc), err, d);
    }
    if (type2 != type)
        fuzz_fail("%s: re-encoded %s decodes as a %s", origin, type_name(type), type_name(type2));
    if (!json_equal(doc, doc2)) {
        char *a = dump(doc), *b = dump(doc2);
        fuzz_fail("%s: decode(encode(doc)) != doc\n  doc:    %s\n  again:  %s", origin, a, b);
    }
    if (codec_encode(type, doc2, &buf2, &len2, err, sizeof(err)) != 0 || len2 != len || memcmp(buf, buf2, len) != 0)
        fuzz_fail("%s: encoding the same %s twice gives different bytes", origin, type_name(type));
    free(buf);
    free(buf2);
    json_decref(doc2);
}

/* helmq encode's path: encode whatever JSON is given (no validation). What
 * encodes must decode to the given values (plus schema defaults) and pass
 * fuzz_check_decoded. */
void fuzz_check_encode(codec_type_t type, const json_t *doc) {
    char err[512] = "";
    unsigned char *buf = NULL;
    size_t len = 0;
    codec_type_t type2;
    json_t *doc2 = NULL;
    if (codec_encode(type, doc, &buf, &len, err, sizeof(err)) != 0)
        return;
    int rc = codec_decode(buf, len, &type2, &doc2, err, sizeof(err));
    free(buf);
    if (rc != 0) {
        char *d = dump(doc);
        fuzz_fail("encode-then-decode: a %s that encodes does not decode (%s): %s\n  document: %s", type_name(type),
                  codec_strerror(rc), err, d);
    }
    if (type2 != type)
        fuzz_fail("encode-then-decode: a %s decodes as a %s", type_name(type), type_name(type2));
    if (!subsumed(doc2, doc)) {
        char *a = dump(doc), *b = dump(doc2);
        fuzz_fail("encode-then-decode: a %s changed\n  given:   %s\n  decoded: %s", type_name(type), a, b);
    }
    fuzz_check_decoded(type, doc2, "encode-then-decode");
    json_decref(doc2);
}

/* --- a model of the datum ---------------------------------------------------
 *
 * An independent statement of which datums codec_decode must accept under a
 * known writer schema, written from the Avro specification's binary encoding
 * and the codec's contract:
 *
 *  - a boolean is one byte, 0 or 1; an int or a long is a zig-zag varint of at
 *    most 10 bytes (an int within 32 bits), minimal or not; a string or bytes
 *    is a length varint, 0 <= length <= the bytes left, then the bytes; an
 *    enum or a union is an index within the schema's symbols or branches; an
 *    array is blocks of items ending with a count of 0, a negative count -n
 *    announcing n items after a byte size (0 <= size <= the bytes left);
 *  - the datum uses every byte (nothing trailing);
 *  - its strings are UTF-8 without NUL (natural JSON);
 *  - then the record decodes (a v1 command always resolves to the current
 *    schema: every field the v1 lacks has a default).
 *
 * Everything else must be refused before avro-c reads it: avro-c 1.11 leaks
 * the buffer of a string longer than the record (read_string) and returns an
 * uninitialised symbol for an enum index out of range (FINDINGS.md F2, F3).
 * With LeakSanitizer on, a datum that reaches avro-c and fails there shows up
 * as a leak. */
enum { MODEL_OK, MODEL_REJECT, MODEL_UNSURE };

typedef struct walk {
    const uint8_t *p, *end;
    int bad_text, unsure;
    const char *why; /* of the first failure or oddity */
} walk_t;

static int w_fail(walk_t *w, const char *why) {
    if (!w->why)
        w->why = why;
    return -1;
}

static int w_long(walk_t *w, int64_t *out) {
    uint64_t value = 0;
    for (int offset = 0; offset < 10; offset++) {
        if (w->p >= w->end)
            return w_fail(w, "varint cut short");
        uint8_t b = *w->p++;
        value |= (uint64_t)(b & 0x7F) << (7 * offset);
        if (!(b & 0x80)) {
            *out = (int64_t)((value >> 1) ^ (0 - (value & 1)));
            return 0;
        }
    }
    return w_fail(w, "varint longer than 10 bytes");
}

static int utf8_valid(const uint8_t *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        uint32_t cp;
        size_t k;
        if (c < 0x80) {
            i++;
            continue;
        } else if (c >= 0xC2 && c <= 0xDF) {
            k = 2, cp = c & 0x1F;
        } else if (c >= 0xE0 && c <= 0xEF) {
            k = 3, cp = c & 0x0F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            k = 4, cp = c & 0x07;
        } else {
            return 0;
        }
        if (i + k > n)
            return 0;
        for (size_t j = 1; j < k; j++) {
            if ((s[i + j] & 0xC0) != 0x80)
                return 0;
            cp = (cp << 6) | (s[i + j] & 0x3F);
        }
        if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF) || (k == 3 && cp < 0x800) || (k == 4 && cp < 0x10000))
            return 0;
        i += k;
    }
    return 1;
}

static int walk(walk_t *w, avro_schema_t s, int depth) {
    int64_t v;
    while (s && avro_typeof(s) == AVRO_LINK)
        s = avro_schema_link_target(s);
    if (depth > 60) {
        w->unsure = 1;
        return w_fail(w, "model: nested too deeply");
    }
    switch (avro_typeof(s)) {
    case AVRO_NULL:
        return 0;
    case AVRO_BOOLEAN:
        if (w->p >= w->end)
            return w_fail(w, "boolean cut short");
        if (*w->p > 1)
            return w_fail(w, "boolean byte neither 0 nor 1");
        w->p++;
        return 0;
    case AVRO_FLOAT:
    case AVRO_DOUBLE: {
        int n = avro_typeof(s) == AVRO_FLOAT ? 4 : 8;
        if (w->end - w->p < n)
            return w_fail(w, "float or double cut short");
        w->p += n;
        return 0;
    }
    case AVRO_INT32:
        if (w_long(w, &v) < 0)
            return -1;
        return v < INT32_MIN || v > INT32_MAX ? w_fail(w, "int out of range") : 0;
    case AVRO_INT64:
        return w_long(w, &v);
    case AVRO_STRING:
    case AVRO_BYTES:
        if (w_long(w, &v) < 0)
            return -1;
        if (v < 0)
            return w_fail(w, "negative length");
        if ((uint64_t)v > (uint64_t)(w->end - w->p))
            return w_fail(w, "string longer than the bytes left");
        if (avro_typeof(s) == AVRO_STRING && (memchr(w->p, '\0', (size_t)v) || !utf8_valid(w->p, (size_t)v))) {
            w->bad_text = 1;
            if (!w->why)
                w->why = "string with NUL or invalid UTF-8";
        }
        w->p += v;
        return 0;
    case AVRO_FIXED:
        if (w->end - w->p < avro_schema_fixed_size(s))
            return w_fail(w, "fixed cut short");
        w->p += avro_schema_fixed_size(s);
        return 0;
    case AVRO_ENUM:
        if (w_long(w, &v) < 0)
            return -1;
        return v < 0 || v >= avro_schema_enum_number_of_symbols(s) ? w_fail(w, "enum index out of range") : 0;
    case AVRO_UNION:
        if (w_long(w, &v) < 0)
            return -1;
        if (v < 0 || v >= (int64_t)avro_schema_union_size(s))
            return w_fail(w, "union branch out of range");
        return walk(w, avro_schema_union_branch(s, (int)v), depth + 1);
    case AVRO_RECORD:
        for (size_t i = 0; i < avro_schema_record_size(s); i++)
            if (walk(w, avro_schema_record_field_get_by_index(s, (int)i), depth + 1) < 0)
                return -1;
        return 0;
    case AVRO_ARRAY:
        for (;;) {
            if (w_long(w, &v) < 0)
                return -1;
            if (v == 0)
                return 0;
            uint64_t count = (uint64_t)v;
            if (v < 0) {
                int64_t size;
                if (v == INT64_MIN)
                    return w_fail(w, "array block count out of range");
                count = (uint64_t)(-v);
                if (w_long(w, &size) < 0)
                    return -1;
                if (size < 0 || (uint64_t)size > (uint64_t)(w->end - w->p))
                    return w_fail(w, "array block size out of range");
            }
            for (uint64_t i = 0; i < count; i++) {
                const uint8_t *before = w->p;
                if (walk(w, avro_schema_array_items(s), depth + 1) < 0)
                    return -1;
                if (w->p == before) { /* items of no bytes: not in the schemas */
                    w->unsure = 1;
                    return w_fail(w, "model: array items of zero bytes");
                }
            }
        }
    default: /* maps: not in the schemas */
        w->unsure = 1;
        return w_fail(w, "model: unsupported schema type");
    }
}

static int model(avro_schema_t schema, const uint8_t *datum, size_t len, const char **why) {
    walk_t w = {datum, datum + len, 0, 0, NULL};
    int r = walk(&w, schema, 0);
    *why = w.why ? w.why : "well-formed";
    if (w.unsure)
        return MODEL_UNSURE;
    if (r < 0)
        return MODEL_REJECT;
    if (w.p != w.end) {
        *why = "trailing bytes";
        return MODEL_REJECT;
    }
    return w.bad_text ? MODEL_REJECT : MODEL_OK;
}

/* The worker's, the projector's and helmq decode's path: codec_decode on
 * bytes from the wire. Each failure is the one the bytes call for, with a
 * message; each success passes fuzz_check_decoded; a datum under a known
 * schema decodes exactly when the model above says it does. */
void fuzz_decode(const uint8_t *data, size_t size, const char *origin) {
    char err[512] = "";
    codec_type_t type = (codec_type_t)-1;
    json_t *doc = NULL;
    int header_ok = size >= 10 && data[0] == 0xC3 && data[1] == 0x01;
    const fuzz_schema_t *ws = NULL;
    int want = MODEL_UNSURE;
    const char *why = "";
    if (header_ok) {
        uint64_t fp = 0;
        for (int i = 0; i < 8; i++)
            fp |= (uint64_t)data[2 + i] << (8 * i);
        for (size_t i = 0; i < table_len; i++)
            if (table[i].fingerprint == fp)
                ws = &table[i];
    }
    if (ws)
        want = model(ws->schema, data + 10, size - 10, &why);
    int rc = codec_decode(data, size, &type, &doc, err, sizeof(err));
    if (rc != 0) {
        if (doc)
            fuzz_fail("%s: codec_decode failed (%d) but returned a document", origin, rc);
        if (rc != CODEC_ERR_HEADER && rc != CODEC_ERR_FINGERPRINT && rc != CODEC_ERR_DATUM && rc != CODEC_ERR_RESOLVE)
            fuzz_fail("%s: codec_decode returned %d, not a CODEC_ERR_* code", origin, rc);
        if (!err[0] || !memchr(err, '\0', sizeof(err)))
            fuzz_fail("%s: codec_decode failed (%s) without a message", origin, codec_strerror(rc));
        if (!header_ok && rc != CODEC_ERR_HEADER)
            fuzz_fail("%s: bytes without a single-object header gave %s", origin, codec_strerror(rc));
        if (header_ok && !ws && rc != CODEC_ERR_FINGERPRINT)
            fuzz_fail("%s: an unknown fingerprint gave %s", origin, codec_strerror(rc));
        if (ws && (rc == CODEC_ERR_HEADER || rc == CODEC_ERR_FINGERPRINT))
            fuzz_fail("%s: a known fingerprint gave %s", origin, codec_strerror(rc));
        if (ws && want == MODEL_OK)
            fuzz_fail("%s: a well-formed datum under %s was refused: %s: %s", origin, ws->path, codec_strerror(rc), err);
        return;
    }
    if (!ws)
        fuzz_fail("%s: codec_decode accepted bytes without a known single-object header", origin);
    if (!doc)
        fuzz_fail("%s: codec_decode succeeded without a document", origin);
    if (want == MODEL_REJECT)
        fuzz_fail("%s: codec_decode accepted a datum under %s that it must refuse (%s)", origin, ws->path, why);
    if (type != (ws->event ? CODEC_EVENT : CODEC_COMMAND))
        fuzz_fail("%s: a record under %s decoded as the other type", origin, ws->path);
    fuzz_check_decoded(type, doc, origin);
    json_decref(doc);
}

/* Round-trip stability of a command (command_json, api_body, cli_json):
 * validate_command either refuses doc naming a rule, or accepts it; then
 * codec_encode succeeds, codec_decode gives a command that validates too
 * and carries every field of doc unchanged, and the decoder oracles hold. */
void fuzz_command_round_trip(const json_t *doc, const char *origin) {
    validate_error_t verr;
    char err[512] = "";
    unsigned char *buf = NULL;
    size_t len = 0;
    codec_type_t type;
    json_t *dec = NULL;

    if (validate_command(doc, &verr) != 0) {
        if (!verr.rule[0] || !verr.message[0])
            fuzz_fail("%s: validate_command refused without naming a rule", origin);
        return;
    }
    if (codec_encode(CODEC_COMMAND, doc, &buf, &len, err, sizeof(err)) != 0) {
        char *d = dump(doc);
        fuzz_fail("%s: a command validate_command accepted does not encode: %s\n  command: %s", origin, err, d);
    }
    int rc = codec_decode(buf, len, &type, &dec, err, sizeof(err));
    free(buf);
    if (rc != 0) {
        char *d = dump(doc);
        fuzz_fail("%s: decode(encode(x)) failed (%s: %s) for a validated command\n  command: %s", origin,
                  codec_strerror(rc), err, d);
    }
    if (type != CODEC_COMMAND)
        fuzz_fail("%s: an encoded command decodes as an event", origin);
    if (validate_command(dec, &verr) != 0) {
        char *a = dump(doc), *b = dump(dec);
        fuzz_fail("%s: decode(encode(x)) of a validated command fails validation: %s (rule %s): %s\n"
                  "  sent:    %s\n  decoded: %s", origin, verr.field, verr.rule, verr.message, a, b);
    }
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)doc, k, v) {
        const json_t *d = json_object_get(dec, k);
        if (!d || !json_equal(v, d)) {
            char *a = dump(doc), *b = dump(dec);
            fuzz_fail("%s: field \"%s\" changed through encode/decode\n  sent:    %s\n  decoded: %s", origin, k, a, b);
        }
    }
    fuzz_check_decoded(CODEC_COMMAND, dec, origin);
    json_decref(dec);
}
