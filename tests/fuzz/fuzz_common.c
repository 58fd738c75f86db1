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

#define FUZZ_MAX_SCHEMAS 32

typedef struct fuzz_schema {
    const char *path;
    uint64_t fingerprint;
    int event;   /* namespace io.helmq.event */
    int current; /* not under schemas/versions/ */
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

/* Whether a documented finding (FINDINGS.md) is tolerated: yes, unless
 * FUZZ_STRICT=1 asks every oracle to fail (to check that a fix holds). */
int fuzz_known(const char *finding) {
    (void)finding;
    return !strict;
}

void fuzz_init(void) {
    char err[512] = "";
    const char *s = getenv("FUZZ_STRICT");
    strict = s && strcmp(s, "1") == 0;
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
        if (validate_command(doc, &verr) != 0 && (!verr.field[0] || !verr.rule[0] || !verr.message[0]))
            fuzz_fail("%s: validate_command refused without naming field and rule", origin);
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

/* The worker's, the projector's and helmq decode's path: codec_decode on
 * bytes from the wire. Each failure is the one the bytes call for, with a
 * message; each success passes fuzz_check_decoded. */
void fuzz_decode(const uint8_t *data, size_t size, const char *origin) {
    char err[512] = "";
    codec_type_t type = (codec_type_t)-1;
    json_t *doc = NULL;
    int rc = codec_decode(data, size, &type, &doc, err, sizeof(err));
    int header_ok = size >= 10 && data[0] == 0xC3 && data[1] == 0x01;
    int known = 0;
    if (header_ok) {
        uint64_t fp = 0;
        for (int i = 0; i < 8; i++)
            fp |= (uint64_t)data[2 + i] << (8 * i);
        for (size_t i = 0; i < table_len; i++)
            known |= table[i].fingerprint == fp;
    }
    if (rc != 0) {
        if (doc)
            fuzz_fail("%s: codec_decode failed (%d) but returned a document", origin, rc);
        if (rc != CODEC_ERR_HEADER && rc != CODEC_ERR_FINGERPRINT && rc != CODEC_ERR_DATUM && rc != CODEC_ERR_RESOLVE)
            fuzz_fail("%s: codec_decode returned %d, not a CODEC_ERR_* code", origin, rc);
        if (!err[0] || !memchr(err, '\0', sizeof(err)))
            fuzz_fail("%s: codec_decode failed (%s) without a message", origin, codec_strerror(rc));
        if (!header_ok && rc != CODEC_ERR_HEADER)
            fuzz_fail("%s: bytes without a single-object header gave %s", origin, codec_strerror(rc));
        if (header_ok && !known && rc != CODEC_ERR_FINGERPRINT)
            fuzz_fail("%s: an unknown fingerprint gave %s", origin, codec_strerror(rc));
        if (header_ok && known && (rc == CODEC_ERR_HEADER || rc == CODEC_ERR_FINGERPRINT))
            fuzz_fail("%s: a known fingerprint gave %s", origin, codec_strerror(rc));
        return;
    }
    if (!header_ok || !known)
        fuzz_fail("%s: codec_decode accepted bytes without a known single-object header", origin);
    if (!doc)
        fuzz_fail("%s: codec_decode succeeded without a document", origin);
    fuzz_check_decoded(type, doc, origin);
    json_decref(doc);
}
