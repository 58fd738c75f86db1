/* The codec's direct encoder: natural JSON to Avro binary, walking the
 * parsed schema and the document together and writing zig-zag varints,
 * lengths, union branch and enum indexes into a growing buffer. It mirrors
 * codec_json.c's to_avro field for field (the same order of checks, the
 * same defaults, the same error texts), so codec_encode_reference and
 * codec_encode agree byte for byte (tests/unit/test_codec_write.c). Going
 * through avro-c's generic values cost ~71,000 instructions per encode,
 * about a fifth of the worker's CPU per command (docs/PERFORMANCE.md). See
 * codec_write.h. */
#include "codec_write.h"

#include "codec_datum.h"
#include "codec_json.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* --- the buffer ------------------------------------------------------------ */

/* Room for n more bytes at w->p + w->len; 0, or -1 (w->oom set). */
static int reserve(codec_wbuf_t *w, size_t n) {
    if (w->oom)
        return -1;
    if (w->cap - w->len >= n)
        return 0;
    size_t cap = w->cap ? w->cap : 256;
    while (cap - w->len < n)
        cap *= 2;
    unsigned char *p = realloc(w->p, cap);
    if (!p) {
        w->oom = 1;
        return -1;
    }
    w->p = p;
    w->cap = cap;
    return 0;
}

/* An Avro int or long: zig-zag, then 7 bits a byte, low first. */
static void put_long(codec_wbuf_t *w, int64_t n) {
    if (reserve(w, 10) < 0)
        return;
    uint64_t z = ((uint64_t)n << 1) ^ (uint64_t)(n >> 63);
    unsigned char *p = w->p + w->len;
    while (z > 0x7f) {
        *p++ = (unsigned char)(z | 0x80);
        z >>= 7;
    }
    *p++ = (unsigned char)z;
    w->len = (size_t)(p - w->p);
}

static void put_raw(codec_wbuf_t *w, const void *src, size_t n) {
    if (n == 0 || reserve(w, n) < 0)
        return;
    memcpy(w->p + w->len, src, n);
    w->len += n;
}

/* Avro's string and bytes: the length, then the bytes. */
static void put_bytes(codec_wbuf_t *w, const void *src, size_t n) {
    put_long(w, (int64_t)n);
    put_raw(w, src, n);
}

/* float and double: their IEEE 754 bits, little-endian. */
static void put_fixed_le(codec_wbuf_t *w, uint64_t bits, int n) {
    if (reserve(w, (size_t)n) < 0)
        return;
    for (int i = 0; i < n; i++)
        w->p[w->len++] = (unsigned char)(bits >> (8 * i));
}

/* --- the walk ------------------------------------------------------------- */

static int write_value(const codec_schema_t *cs, const json_t *j, avro_schema_t s, codec_wbuf_t *w,
                       const codec_field_path_t *path, int depth, char *errstr, size_t errstr_size);

/* rs is a dereferenced record schema. A flattened union field (codec.h)
 * takes its branch from the discriminator field of the same name and the
 * branch's fields from obj itself. */
static int write_record(const codec_schema_t *cs, const json_t *obj, avro_schema_t rs, codec_wbuf_t *w,
                        const codec_field_path_t *path, int depth, char *errstr, size_t errstr_size) {
    char pt[256];
    if (!json_is_object(obj)) {
        snprintf(errstr, errstr_size, "%s: expected a JSON object", codec_path_text(path, pt, sizeof(pt)));
        return -1;
    }
    size_t n = avro_schema_record_size(rs);
    for (size_t i = 0; i < n; i++) {
        const char *name = avro_schema_record_field_name(rs, (int)i);
        avro_schema_t fs = avro_schema_record_field_get_by_index(rs, (int)i);
        if (codec_is_flattened_union(fs)) {
            const char *disc = json_string_value(json_object_get(obj, name));
            avro_schema_t us = codec_deref(fs);
            size_t b = 0, nb = avro_schema_union_size(us);
            if (!disc) {
                snprintf(errstr, errstr_size,
                         "%s: missing required field (one of the schema's record names in lower case)", name);
                return -1;
            }
            for (; b < nb; b++)
                if (codec_name_matches_lower(
                        avro_schema_type_name(codec_deref(avro_schema_union_branch(us, (int)b))), disc))
                    break;
            if (b == nb) {
                snprintf(errstr, errstr_size, "%s: unknown value \"%s\"", name, disc);
                return -1;
            }
            put_long(w, (int64_t)b);
            if (write_record(cs, obj, codec_deref(avro_schema_union_branch(us, (int)b)), w, path, depth + 1,
                             errstr, errstr_size) < 0)
                return -1;
            continue;
        }
        const json_t *jv = json_object_get(obj, name);
        if (!jv) {
            jv = codec_schema_field_default_at(cs, rs, i);
            if (!jv) {
                snprintf(errstr, errstr_size, "%s: missing required field", name);
                return -1;
            }
        }
        codec_field_path_t sub = {path, name};
        if (write_value(cs, jv, fs, w, &sub, depth + 1, errstr, errstr_size) < 0)
            return -1;
    }
    return 0;
}

static int write_value(const codec_schema_t *cs, const json_t *j, avro_schema_t s, codec_wbuf_t *w,
                       const codec_field_path_t *path, int depth, char *errstr, size_t errstr_size) {
    char pt[256];
    s = codec_deref(s);
    if (depth > CODEC_MAX_DEPTH) {
        snprintf(errstr, errstr_size, "%s: nested too deeply", codec_path_text(path, pt, sizeof(pt)));
        return -1;
    }
    switch (avro_typeof(s)) {
    case AVRO_NULL:
        if (!json_is_null(j))
            goto mismatch;
        return 0;
    case AVRO_BOOLEAN:
        if (!json_is_boolean(j))
            goto mismatch;
        put_fixed_le(w, json_is_true(j) ? 1 : 0, 1);
        return 0;
    case AVRO_INT32: {
        if (!json_is_integer(j))
            goto mismatch;
        json_int_t x = json_integer_value(j);
        if (x < INT32_MIN || x > INT32_MAX) {
            snprintf(errstr, errstr_size, "%s: %" JSON_INTEGER_FORMAT " is out of range for an int",
                     codec_path_text(path, pt, sizeof(pt)), x);
            return -1;
        }
        put_long(w, (int64_t)x);
        return 0;
    }
    case AVRO_INT64:
        if (!json_is_integer(j))
            goto mismatch;
        put_long(w, (int64_t)json_integer_value(j));
        return 0;
    case AVRO_FLOAT: {
        if (!json_is_number(j))
            goto mismatch;
        float f = (float)json_number_value(j);
        uint32_t bits;
        memcpy(&bits, &f, sizeof(bits));
        put_fixed_le(w, bits, 4);
        return 0;
    }
    case AVRO_DOUBLE: {
        if (!json_is_number(j))
            goto mismatch;
        double d = json_number_value(j);
        uint64_t bits;
        memcpy(&bits, &d, sizeof(bits));
        put_fixed_le(w, bits, 8);
        return 0;
    }
    case AVRO_STRING:
        if (!json_is_string(j))
            goto mismatch;
        if (memchr(json_string_value(j), '\0', json_string_length(j))) {
            snprintf(errstr, errstr_size, "%s: contains a NUL character",
                     codec_path_text(path, pt, sizeof(pt)));
            return -1;
        }
        put_bytes(w, json_string_value(j), json_string_length(j));
        return 0;
    case AVRO_BYTES:
        if (!json_is_string(j))
            goto mismatch;
        put_bytes(w, json_string_value(j), json_string_length(j));
        return 0;
    case AVRO_ENUM: {
        int idx = json_is_string(j) ? avro_schema_enum_get_by_name(s, json_string_value(j)) : -1;
        if (idx < 0) {
            snprintf(errstr, errstr_size, "%s: not one of the allowed symbols",
                     codec_path_text(path, pt, sizeof(pt)));
            return -1;
        }
        put_long(w, idx);
        return 0;
    }
    case AVRO_RECORD: return write_record(cs, j, s, w, path, depth, errstr, errstr_size);
    case AVRO_ARRAY: {
        if (!json_is_array(j))
            goto mismatch;
        size_t n = json_array_size(j);
        avro_schema_t items = avro_schema_array_items(s);
        /* One block of n items, then the empty block (avro-c's layout). */
        if (n > 0)
            put_long(w, (int64_t)n);
        for (size_t i = 0; i < n; i++)
            if (write_value(cs, json_array_get(j, i), items, w, path, depth + 1, errstr, errstr_size) < 0)
                return -1;
        put_long(w, 0);
        return 0;
    }
    case AVRO_MAP: {
        const char *key;
        json_t *val;
        if (!json_is_object(j))
            goto mismatch;
        size_t n = json_object_size(j);
        avro_schema_t values = avro_schema_map_values(s);
        if (n > 0)
            put_long(w, (int64_t)n);
        json_object_foreach((json_t *)j, key, val) {
            put_bytes(w, key, strlen(key));
            if (write_value(cs, val, values, w, path, depth + 1, errstr, errstr_size) < 0)
                return -1;
        }
        put_long(w, 0);
        return 0;
    }
    case AVRO_UNION: {
        int b = codec_union_branch_for(s, j);
        if (b < 0)
            goto mismatch;
        put_long(w, b);
        return write_value(cs, j, avro_schema_union_branch(s, b), w, path, depth + 1, errstr, errstr_size);
    }
    default:
        snprintf(errstr, errstr_size, "%s: unsupported schema type", codec_path_text(path, pt, sizeof(pt)));
        return -1;
    }
mismatch:
    snprintf(errstr, errstr_size, "%s: expected %s", codec_path_text(path, pt, sizeof(pt)),
             avro_typeof(s) == AVRO_UNION ? "a value of one of the union's types" : avro_schema_type_name(s));
    return -1;
}

int codec_write_datum(const codec_schema_t *cs, const json_t *doc, codec_wbuf_t *w, char *errstr,
                      size_t errstr_size) {
    if (write_record(cs, doc, codec_deref(cs->schema), w, NULL, 0, errstr, errstr_size) < 0)
        return -1;
    if (w->oom) {
        snprintf(errstr, errstr_size, "out of memory");
        return -1;
    }
    return 0;
}
