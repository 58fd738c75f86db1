/* The codec's natural-JSON mapping: a JSON document to an avro-c generic
 * value of the writer schema (encoding) and a decoded generic value back to
 * natural JSON, with flattened unions, enum symbols and schema defaults as
 * codec.h describes them. See codec_json.h. */
#include "codec_json.h"

#include "codec_datum.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* --- natural JSON -> avro value --------------------------------------- */

const char *codec_path_text(const codec_field_path_t *p, char *buf, size_t size) {
    const char *names[CODEC_MAX_DEPTH + 2];
    int n = 0;
    for (; p && n < CODEC_MAX_DEPTH + 2; p = p->up)
        names[n++] = p->name;
    size_t len = 0;
    buf[0] = '\0';
    while (n-- > 0 && len < size)
        len += (size_t)snprintf(buf + len, size - len, "%s%s", len ? "." : "", names[n]);
    return buf;
}

static int to_avro(const codec_schema_t *cs, const json_t *j, avro_value_t *v, const codec_field_path_t *path,
                   int depth, char *errstr, size_t errstr_size);

static int record_to_avro(const codec_schema_t *cs, const json_t *obj, avro_value_t *v,
                          const codec_field_path_t *path, int depth, char *errstr, size_t errstr_size) {
    avro_schema_t rs = codec_deref(avro_value_get_schema(v));
    char pt[256];
    if (!json_is_object(obj)) {
        snprintf(errstr, errstr_size, "%s: expected a JSON object", codec_path_text(path, pt, sizeof(pt)));
        return -1;
    }
    size_t n = avro_schema_record_size(rs);
    for (size_t i = 0; i < n; i++) {
        const char *name = avro_schema_record_field_name(rs, (int)i);
        avro_schema_t fs = avro_schema_record_field_get_by_index(rs, (int)i);
        avro_value_t child;
        if (avro_value_get_by_index(v, i, &child, NULL) != 0) {
            snprintf(errstr, errstr_size, "%s: %s", name, avro_strerror());
            return -1;
        }
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
            avro_value_t branch;
            if (avro_value_set_branch(&child, (int)b, &branch) != 0 ||
                record_to_avro(cs, obj, &branch, path, depth + 1, errstr, errstr_size) < 0)
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
        if (to_avro(cs, jv, &child, &sub, depth + 1, errstr, errstr_size) < 0)
            return -1;
    }
    return 0;
}

static int to_avro(const codec_schema_t *cs, const json_t *j, avro_value_t *v, const codec_field_path_t *path,
                   int depth, char *errstr, size_t errstr_size) {
    avro_schema_t s = codec_deref(avro_value_get_schema(v));
    int rc = 0;
    char pt[256];
    if (depth > CODEC_MAX_DEPTH) {
        snprintf(errstr, errstr_size, "%s: nested too deeply", codec_path_text(path, pt, sizeof(pt)));
        return -1;
    }
    switch (avro_typeof(s)) {
    case AVRO_NULL:
        if (!json_is_null(j))
            goto mismatch;
        return avro_value_set_null(v) ? -1 : 0;
    case AVRO_BOOLEAN:
        if (!json_is_boolean(j))
            goto mismatch;
        return avro_value_set_boolean(v, json_is_true(j)) ? -1 : 0;
    case AVRO_INT32: {
        if (!json_is_integer(j))
            goto mismatch;
        json_int_t x = json_integer_value(j);
        if (x < INT32_MIN || x > INT32_MAX) {
            snprintf(errstr, errstr_size, "%s: %" JSON_INTEGER_FORMAT " is out of range for an int",
                     codec_path_text(path, pt, sizeof(pt)), x);
            return -1;
        }
        return avro_value_set_int(v, (int32_t)x) ? -1 : 0;
    }
    case AVRO_INT64:
        if (!json_is_integer(j))
            goto mismatch;
        return avro_value_set_long(v, json_integer_value(j)) ? -1 : 0;
    case AVRO_FLOAT:
        if (!json_is_number(j))
            goto mismatch;
        return avro_value_set_float(v, (float)json_number_value(j)) ? -1 : 0;
    case AVRO_DOUBLE:
        if (!json_is_number(j))
            goto mismatch;
        return avro_value_set_double(v, json_number_value(j)) ? -1 : 0;
    case AVRO_STRING:
        if (!json_is_string(j))
            goto mismatch;
        if (memchr(json_string_value(j), '\0', json_string_length(j))) {
            snprintf(errstr, errstr_size, "%s: contains a NUL character",
                     codec_path_text(path, pt, sizeof(pt)));
            return -1;
        }
        return avro_value_set_string_len(v, json_string_value(j), json_string_length(j) + 1) ? -1 : 0;
    case AVRO_BYTES:
        if (!json_is_string(j))
            goto mismatch;
        return avro_value_set_bytes(v, (void *)json_string_value(j), json_string_length(j)) ? -1 : 0;
    case AVRO_ENUM: {
        int idx = json_is_string(j) ? avro_schema_enum_get_by_name(s, json_string_value(j)) : -1;
        if (idx < 0) {
            snprintf(errstr, errstr_size, "%s: not one of the allowed symbols",
                     codec_path_text(path, pt, sizeof(pt)));
            return -1;
        }
        return avro_value_set_enum(v, idx) ? -1 : 0;
    }
    case AVRO_RECORD: return record_to_avro(cs, j, v, path, depth, errstr, errstr_size);
    case AVRO_ARRAY:
        if (!json_is_array(j))
            goto mismatch;
        for (size_t i = 0; rc == 0 && i < json_array_size(j); i++) {
            avro_value_t elem;
            if (avro_value_append(v, &elem, NULL) != 0)
                return -1;
            rc = to_avro(cs, json_array_get(j, i), &elem, path, depth + 1, errstr, errstr_size);
        }
        return rc;
    case AVRO_MAP: {
        const char *key;
        json_t *val;
        if (!json_is_object(j))
            goto mismatch;
        json_object_foreach((json_t *)j, key, val) {
            avro_value_t elem;
            if (avro_value_add(v, key, &elem, NULL, NULL) != 0)
                return -1;
            if (to_avro(cs, val, &elem, path, depth + 1, errstr, errstr_size) < 0)
                return -1;
        }
        return 0;
    }
    case AVRO_UNION: {
        int b = codec_union_branch_for(s, j);
        avro_value_t branch;
        if (b < 0)
            goto mismatch;
        if (avro_value_set_branch(v, b, &branch) != 0)
            return -1;
        return to_avro(cs, j, &branch, path, depth + 1, errstr, errstr_size);
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

/* --- avro value -> natural JSON --------------------------------------- */

static json_t *from_avro(avro_value_t *v, int depth);

static int record_from_avro(avro_value_t *v, json_t *obj, int depth) {
    avro_schema_t rs = codec_deref(avro_value_get_schema(v));
    size_t n = avro_schema_record_size(rs);
    for (size_t i = 0; i < n; i++) {
        const char *name = avro_schema_record_field_name(rs, (int)i);
        avro_value_t child;
        if (avro_value_get_by_index(v, i, &child, NULL) != 0)
            return -1;
        if (codec_is_flattened_union(avro_schema_record_field_get_by_index(rs, (int)i))) {
            avro_value_t branch;
            char lower[128];
            if (avro_value_get_current_branch(&child, &branch) != 0)
                return -1;
            codec_lower_name(avro_schema_type_name(codec_deref(avro_value_get_schema(&branch))), lower,
                             sizeof(lower));
            json_object_set_new(obj, name, json_string(lower));
            if (record_from_avro(&branch, obj, depth + 1) < 0)
                return -1;
            continue;
        }
        json_t *jv = from_avro(&child, depth + 1);
        if (!jv)
            return -1;
        json_object_set_new(obj, name, jv);
    }
    return 0;
}

static json_t *from_avro(avro_value_t *v, int depth) {
    if (depth > CODEC_MAX_DEPTH)
        return NULL;
    switch (avro_value_get_type(v)) {
    case AVRO_NULL: return json_null();
    case AVRO_BOOLEAN: {
        int b;
        return avro_value_get_boolean(v, &b) ? NULL : json_boolean(b);
    }
    case AVRO_INT32: {
        int32_t x;
        return avro_value_get_int(v, &x) ? NULL : json_integer(x);
    }
    case AVRO_INT64: {
        int64_t x;
        return avro_value_get_long(v, &x) ? NULL : json_integer(x);
    }
    case AVRO_FLOAT: {
        float x;
        return avro_value_get_float(v, &x) ? NULL : json_real(x);
    }
    case AVRO_DOUBLE: {
        double x;
        return avro_value_get_double(v, &x) ? NULL : json_real(x);
    }
    case AVRO_STRING: {
        const char *s;
        size_t size;
        if (avro_value_get_string(v, &s, &size) != 0 || size == 0 || memchr(s, '\0', size - 1))
            return NULL;
        /* A string with an embedded NUL or invalid UTF-8 is refused here. */
        return json_stringn(s, size - 1);
    }
    case AVRO_BYTES: {
        const void *p;
        size_t size;
        return avro_value_get_bytes(v, &p, &size) ? NULL : json_stringn(p, size);
    }
    case AVRO_ENUM: {
        int idx;
        if (avro_value_get_enum(v, &idx) != 0)
            return NULL;
        /* avro_schema_enum_get leaves its result unset for an index it does
         * not know, so the index is checked first; NULL is refused too. */
        avro_schema_t es = codec_deref(avro_value_get_schema(v));
        if (idx < 0 || idx >= avro_schema_enum_number_of_symbols(es))
            return NULL;
        const char *sym = avro_schema_enum_get(es, idx);
        return sym ? json_string(sym) : NULL;
    }
    case AVRO_RECORD: {
        json_t *obj = json_object();
        if (record_from_avro(v, obj, depth) < 0) {
            json_decref(obj);
            return NULL;
        }
        return obj;
    }
    case AVRO_ARRAY: {
        size_t n = 0;
        if (avro_value_get_size(v, &n) != 0)
            return NULL;
        json_t *arr = json_array();
        for (size_t i = 0; i < n; i++) {
            avro_value_t elem;
            json_t *je = avro_value_get_by_index(v, i, &elem, NULL) ? NULL : from_avro(&elem, depth + 1);
            if (!je) {
                json_decref(arr);
                return NULL;
            }
            json_array_append_new(arr, je);
        }
        return arr;
    }
    case AVRO_MAP: {
        size_t n = 0;
        if (avro_value_get_size(v, &n) != 0)
            return NULL;
        json_t *obj = json_object();
        for (size_t i = 0; i < n; i++) {
            avro_value_t elem;
            const char *key;
            json_t *je = avro_value_get_by_index(v, i, &elem, &key) ? NULL : from_avro(&elem, depth + 1);
            if (!je) {
                json_decref(obj);
                return NULL;
            }
            json_object_set_new(obj, key, je);
        }
        return obj;
    }
    case AVRO_UNION: {
        avro_value_t branch;
        return avro_value_get_current_branch(v, &branch) ? NULL : from_avro(&branch, depth + 1);
    }
    default: return NULL;
    }
}

int codec_json_to_avro(const codec_schema_t *cs, const json_t *doc, avro_value_t *record, char *errstr,
                       size_t errstr_size) {
    return record_to_avro(cs, doc, record, NULL, 0, errstr, errstr_size);
}

json_t *codec_json_from_avro(avro_value_t *v) {
    return from_avro(v, 0);
}
