/* The codec's entry points on the wire: Avro single-object framing (C3 01,
 * the writer schema's fingerprint, the datum) around the direct encoder of
 * codec_write.c (and, for the unit test only, codec_encode_reference: the
 * same through codec_json.c's avro-c generic values), and decoding's order of checks (header, fingerprint,
 * datum bounds, avro-c's read, resolution to the current schema), each with its CODEC_ERR_* code. See codec.h
 * for the contract.
 *
 * The rest of the codec, by concern: codec_schema.c (the schema registry,
 * defaults, resolution between versions), codec_write.c (natural JSON ->
 * Avro binary, directly), codec_json.c (natural JSON <-> avro-c values), codec_datum.c (schema walking, the
 * datum bounds check), codec_flat.c (decoding in place). */
#include "codec.h"

#include "codec_datum.h"
#include "codec_json.h"
#include "codec_schema.h"
#include "codec_write.h"

#include <avro.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *codec_strerror(int code) {
    switch (code) {
    case CODEC_ERR_HEADER: return "bad-header";
    case CODEC_ERR_FINGERPRINT: return "unknown-fingerprint";
    case CODEC_ERR_DATUM: return "bad-datum";
    case CODEC_ERR_RESOLVE: return "unresolvable";
    default: return "error";
    }
}

static void put_header(unsigned char *buf, const codec_schema_t *cs) {
    buf[0] = 0xC3;
    buf[1] = 0x01;
    for (int i = 0; i < 8; i++)
        buf[2 + i] = (unsigned char)(cs->fingerprint >> (8 * i));
}

int codec_encode(codec_type_t type, const json_t *doc, unsigned char **out, size_t *out_len, char *errstr,
                 size_t errstr_size) {
    codec_schema_t *cs = codec_schema_current(type);
    codec_wbuf_t w = {malloc(256), 10, 256, 0};
    if (!w.p) {
        snprintf(errstr, errstr_size, "out of memory");
        return -1;
    }
    if (codec_write_datum(cs, doc, &w, errstr, errstr_size) < 0) {
        free(w.p);
        return -1;
    }
    put_header(w.p, cs);
    *out = w.p;
    *out_len = w.len;
    return 0;
}

int codec_encode_reference(codec_type_t type, const json_t *doc, unsigned char **out, size_t *out_len,
                           char *errstr, size_t errstr_size) {
    codec_schema_t *cs = codec_schema_current(type);
    size_t size;
    avro_value_reset(&cs->value);
    if (codec_json_to_avro(cs, doc, &cs->value, errstr, errstr_size) < 0)
        return -1;
    if (avro_value_sizeof(&cs->value, &size) != 0) {
        snprintf(errstr, errstr_size, "sizing the record: %s", avro_strerror());
        return -1;
    }
    unsigned char *buf = malloc(size + 10);
    if (!buf) {
        snprintf(errstr, errstr_size, "out of memory");
        return -1;
    }
    put_header(buf, cs);
    avro_writer_t w = avro_writer_memory((const char *)buf + 10, (int64_t)size);
    int rc = avro_value_write(w, &cs->value);
    avro_writer_free(w);
    if (rc != 0) {
        snprintf(errstr, errstr_size, "writing the record: %s", avro_strerror());
        free(buf);
        return -1;
    }
    *out = buf;
    *out_len = size + 10;
    return 0;
}

int codec_decode(const void *buf, size_t len, codec_type_t *type, json_t **doc, char *errstr,
                 size_t errstr_size) {
    const unsigned char *p = buf;
    uint64_t fp = 0;
    if (len < 10 || p[0] != 0xC3 || p[1] != 0x01) {
        snprintf(errstr, errstr_size,
                 "not Avro single-object encoded (expected C3 01 and an 8-byte fingerprint)");
        return CODEC_ERR_HEADER;
    }
    for (int i = 0; i < 8; i++)
        fp |= (uint64_t)p[2 + i] << (8 * i);
    codec_schema_t *ws = codec_schema_by_fingerprint(fp);
    if (!ws) {
        snprintf(errstr, errstr_size, "unknown schema fingerprint %016llx", (unsigned long long)fp);
        return CODEC_ERR_FINGERPRINT;
    }
    codec_cursor_t cur = {p + 10, p + len, 0};
    if (codec_check_datum(ws->schema, &cur, 0) < 0) {
        snprintf(errstr, errstr_size,
                 "datum does not decode under %s: a length, index or count is out of bounds, "
                 "or the record is truncated",
                 ws->path);
        return CODEC_ERR_DATUM;
    }
    if (cur.p != cur.end) {
        snprintf(errstr, errstr_size, "datum under %s has %zu trailing bytes", ws->path,
                 (size_t)(cur.end - cur.p));
        return CODEC_ERR_DATUM;
    }
    avro_value_reset(&ws->value);
    avro_reader_t r = avro_reader_memory((const char *)p + 10, (int64_t)(len - 10));
    int rc = avro_value_read(r, &ws->value);
    avro_reader_free(r);
    if (rc != 0) {
        snprintf(errstr, errstr_size, "datum does not decode under %s: %s", ws->path, avro_strerror());
        return CODEC_ERR_DATUM;
    }
    json_t *natural = codec_json_from_avro(&ws->value);
    if (!natural) {
        snprintf(errstr, errstr_size, "datum under %s holds invalid text (not UTF-8) or is nested too deeply",
                 ws->path);
        return CODEC_ERR_DATUM;
    }
    codec_schema_t *rd = codec_schema_current(ws->type);
    json_t *resolved = natural;
    if (rd != ws) {
        resolved = codec_schema_resolve(rd, natural, errstr, errstr_size);
        json_decref(natural);
        if (!resolved)
            return CODEC_ERR_RESOLVE;
    }
    *type = ws->type;
    *doc = resolved;
    return 0;
}

int codec_fill_defaults(codec_type_t type, json_t *doc, char *errstr, size_t errstr_size) {
    unsigned char *buf;
    size_t len;
    codec_type_t t;
    json_t *full;
    if (codec_encode(type, doc, &buf, &len, errstr, errstr_size) < 0)
        return -1;
    int rc = codec_decode(buf, len, &t, &full, errstr, errstr_size);
    free(buf);
    if (rc < 0)
        return -1;
    json_object_update(doc, full);
    json_decref(full);
    return 0;
}
