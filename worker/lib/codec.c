/* Avro single-object codec between natural JSON and the wire, with schema
 * resolution by fingerprint. See codec.h for the contract.
 *
 * avro-c does the binary work (generic values, avro_value_read/write); the
 * natural-JSON mapping and schema resolution are done here, on JSON trees,
 * with the reader schema's defaults taken from the .avsc text itself because
 * avro-c does not keep field defaults. */
#include "codec.h"

#include "avro_canon.h"
#include "embedded.h"

#include <avro.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CODEC_MAX_SCHEMAS 16
#define CODEC_MAX_DEPTH 64

typedef struct codec_schema {
    const char *path;
    codec_type_t type;
    int current;          /* the reader schema of its type */
    json_t *json;         /* the parsed .avsc, for field defaults */
    char *canonical;      /* Parsing Canonical Form */
    uint64_t fingerprint; /* CRC-64-AVRO of canonical */
    avro_schema_t schema;
    avro_value_iface_t *iface;
    avro_value_t value; /* reused for every datum of this schema */
} codec_schema_t;

static codec_schema_t schemas[CODEC_MAX_SCHEMAS];
static int schema_count;
static codec_schema_t *current[2];

const char *codec_strerror(int code) {
    switch (code) {
    case CODEC_ERR_HEADER: return "bad-header";
    case CODEC_ERR_FINGERPRINT: return "unknown-fingerprint";
    case CODEC_ERR_DATUM: return "bad-datum";
    case CODEC_ERR_RESOLVE: return "unresolvable";
    default: return "error";
    }
}

/* --- schema helpers --------------------------------------------------- */

static avro_schema_t deref(avro_schema_t s) {
    while (s && avro_typeof(s) == AVRO_LINK)
        s = avro_schema_link_target(s);
    return s;
}

/* A union with at least one record branch is flattened into its record. */
static int is_flattened_union(avro_schema_t s) {
    s = deref(s);
    if (!is_avro_union(s))
        return 0;
    for (size_t i = 0; i < avro_schema_union_size(s); i++)
        if (is_avro_record(deref(avro_schema_union_branch(s, (int)i))))
            return 1;
    return 0;
}

static int name_matches_lower(const char *name, const char *lower) {
    for (; *name && *lower; name++, lower++)
        if (tolower((unsigned char)*name) != *lower)
            return 0;
    return *name == '\0' && *lower == '\0';
}

static void lower_name(const char *name, char *out, size_t n) {
    size_t i = 0;
    for (; name[i] && i + 1 < n; i++)
        out[i] = (char)tolower((unsigned char)name[i]);
    out[i] = '\0';
}

/* Finds the JSON definition of the record named name in a parsed schema. */
static const json_t *find_record_json(const json_t *node, const char *name, int depth) {
    if (depth > CODEC_MAX_DEPTH)
        return NULL;
    if (json_is_array(node)) {
        for (size_t i = 0; i < json_array_size(node); i++) {
            const json_t *r = find_record_json(json_array_get(node, i), name, depth + 1);
            if (r)
                return r;
        }
        return NULL;
    }
    if (!json_is_object(node))
        return NULL;
    const char *t = json_string_value(json_object_get(node, "type"));
    if (t && strcmp(t, "record") == 0) {
        const char *n = json_string_value(json_object_get(node, "name"));
        if (n && strcmp(n, name) == 0)
            return node;
        const json_t *fields = json_object_get(node, "fields");
        for (size_t i = 0; i < json_array_size(fields); i++) {
            const json_t *r =
                find_record_json(json_object_get(json_array_get(fields, i), "type"), name, depth + 1);
            if (r)
                return r;
        }
        return NULL;
    }
    const char *keys[] = {"type", "items", "values"};
    for (int k = 0; k < 3; k++) {
        const json_t *c = json_object_get(node, keys[k]);
        if (json_is_object(c) || json_is_array(c)) {
            const json_t *r = find_record_json(c, name, depth + 1);
            if (r)
                return r;
        }
    }
    return NULL;
}

/* The default of field of record rec in schema cs, or NULL if it has none. */
static const json_t *field_default(const codec_schema_t *cs, avro_schema_t rec, const char *field) {
    const json_t *def = find_record_json(cs->json, avro_schema_name(rec), 0);
    const json_t *fields = json_object_get(def, "fields");
    for (size_t i = 0; i < json_array_size(fields); i++) {
        const json_t *f = json_array_get(fields, i);
        const char *n = json_string_value(json_object_get(f, "name"));
        if (n && strcmp(n, field) == 0)
            return json_object_get(f, "default");
    }
    return NULL;
}

/* field_default for field i of rec, looked up once per record schema: the
 * search through the .avsc text ran for every field a document left out,
 * several per event the worker encodes (docs/PERFORMANCE.md). */
typedef struct default_cache {
    const codec_schema_t *cs;
    avro_schema_t rec;
    size_t n;
    const json_t **def;
    struct default_cache *next;
} default_cache_t;

static default_cache_t *default_caches;

static const json_t *field_default_at(const codec_schema_t *cs, avro_schema_t rec, size_t i) {
    default_cache_t *d = default_caches;
    while (d && (d->cs != cs || d->rec != rec))
        d = d->next;
    if (!d) {
        d = calloc(1, sizeof(*d));
        size_t n = avro_schema_record_size(rec);
        if (!d || !(d->def = calloc(n ? n : 1, sizeof(*d->def)))) {
            free(d);
            return field_default(cs, rec, avro_schema_record_field_name(rec, (int)i));
        }
        d->cs = cs;
        d->rec = rec;
        d->n = n;
        for (size_t k = 0; k < n; k++)
            d->def[k] = field_default(cs, rec, avro_schema_record_field_name(rec, (int)k));
        d->next = default_caches;
        default_caches = d;
    }
    return i < d->n ? d->def[i] : NULL;
}

static void default_caches_free(void) {
    while (default_caches) {
        default_cache_t *d = default_caches;
        default_caches = d->next;
        free(d->def);
        free(d);
    }
}

/* --- natural JSON -> avro value --------------------------------------- */

/* Where a value sits in the record ("history.revision"), for error
 * messages: a chain of field names on the stack, formatted only when an
 * error is reported (formatting it for every field was a measurable part of
 * the worker's CPU, docs/PERFORMANCE.md). NULL is the record itself. */
typedef struct field_path {
    const struct field_path *up;
    const char *name;
} field_path_t;

static const char *path_text(const field_path_t *p, char *buf, size_t size) {
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

static int to_avro(const codec_schema_t *cs, const json_t *j, avro_value_t *v, const field_path_t *path,
                   int depth, char *errstr, size_t errstr_size);

static int record_to_avro(const codec_schema_t *cs, const json_t *obj, avro_value_t *v,
                          const field_path_t *path, int depth, char *errstr, size_t errstr_size) {
    avro_schema_t rs = deref(avro_value_get_schema(v));
    char pt[256];
    if (!json_is_object(obj)) {
        snprintf(errstr, errstr_size, "%s: expected a JSON object", path_text(path, pt, sizeof(pt)));
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
        if (is_flattened_union(fs)) {
            const char *disc = json_string_value(json_object_get(obj, name));
            avro_schema_t us = deref(fs);
            size_t b = 0, nb = avro_schema_union_size(us);
            if (!disc) {
                snprintf(errstr, errstr_size,
                         "%s: missing required field (one of the schema's record names in lower case)", name);
                return -1;
            }
            for (; b < nb; b++)
                if (name_matches_lower(avro_schema_type_name(deref(avro_schema_union_branch(us, (int)b))),
                                       disc))
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
            jv = field_default_at(cs, rs, i);
            if (!jv) {
                snprintf(errstr, errstr_size, "%s: missing required field", name);
                return -1;
            }
        }
        field_path_t sub = {path, name};
        if (to_avro(cs, jv, &child, &sub, depth + 1, errstr, errstr_size) < 0)
            return -1;
    }
    return 0;
}

static int union_branch_for(avro_schema_t us, const json_t *j) {
    size_t nb = avro_schema_union_size(us);
    for (size_t b = 0; b < nb; b++) {
        avro_schema_t bs = deref(avro_schema_union_branch(us, (int)b));
        switch (avro_typeof(bs)) {
        case AVRO_NULL:
            if (json_is_null(j))
                return (int)b;
            break;
        case AVRO_STRING:
        case AVRO_ENUM:
            if (json_is_string(j))
                return (int)b;
            break;
        case AVRO_INT32:
        case AVRO_INT64:
            if (json_is_integer(j))
                return (int)b;
            break;
        case AVRO_FLOAT:
        case AVRO_DOUBLE:
            if (json_is_number(j))
                return (int)b;
            break;
        case AVRO_BOOLEAN:
            if (json_is_boolean(j))
                return (int)b;
            break;
        case AVRO_RECORD:
        case AVRO_MAP:
            if (json_is_object(j))
                return (int)b;
            break;
        case AVRO_ARRAY:
            if (json_is_array(j))
                return (int)b;
            break;
        default: break;
        }
    }
    return -1;
}

static int to_avro(const codec_schema_t *cs, const json_t *j, avro_value_t *v, const field_path_t *path,
                   int depth, char *errstr, size_t errstr_size) {
    avro_schema_t s = deref(avro_value_get_schema(v));
    int rc = 0;
    char pt[256];
    if (depth > CODEC_MAX_DEPTH) {
        snprintf(errstr, errstr_size, "%s: nested too deeply", path_text(path, pt, sizeof(pt)));
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
                     path_text(path, pt, sizeof(pt)), x);
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
            snprintf(errstr, errstr_size, "%s: contains a NUL character", path_text(path, pt, sizeof(pt)));
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
                     path_text(path, pt, sizeof(pt)));
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
        int b = union_branch_for(s, j);
        avro_value_t branch;
        if (b < 0)
            goto mismatch;
        if (avro_value_set_branch(v, b, &branch) != 0)
            return -1;
        return to_avro(cs, j, &branch, path, depth + 1, errstr, errstr_size);
    }
    default:
        snprintf(errstr, errstr_size, "%s: unsupported schema type", path_text(path, pt, sizeof(pt)));
        return -1;
    }
mismatch:
    snprintf(errstr, errstr_size, "%s: expected %s", path_text(path, pt, sizeof(pt)),
             avro_typeof(s) == AVRO_UNION ? "a value of one of the union's types" : avro_schema_type_name(s));
    return -1;
}

/* --- avro value -> natural JSON --------------------------------------- */

static json_t *from_avro(avro_value_t *v, int depth);

static int record_from_avro(avro_value_t *v, json_t *obj, int depth) {
    avro_schema_t rs = deref(avro_value_get_schema(v));
    size_t n = avro_schema_record_size(rs);
    for (size_t i = 0; i < n; i++) {
        const char *name = avro_schema_record_field_name(rs, (int)i);
        avro_value_t child;
        if (avro_value_get_by_index(v, i, &child, NULL) != 0)
            return -1;
        if (is_flattened_union(avro_schema_record_field_get_by_index(rs, (int)i))) {
            avro_value_t branch;
            char lower[128];
            if (avro_value_get_current_branch(&child, &branch) != 0)
                return -1;
            lower_name(avro_schema_type_name(deref(avro_value_get_schema(&branch))), lower, sizeof(lower));
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
        avro_schema_t es = deref(avro_value_get_schema(v));
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

/* --- schema resolution on natural JSON -------------------------------- */

static json_t *resolve_value(const codec_schema_t *rd, const json_t *w, avro_schema_t s, const char *path,
                             int depth, char *errstr, size_t errstr_size);

static int resolve_record_into(const codec_schema_t *rd, const json_t *w, avro_schema_t rs, json_t *out,
                               int depth, char *errstr, size_t errstr_size) {
    size_t n = avro_schema_record_size(rs);
    for (size_t i = 0; i < n; i++) {
        const char *name = avro_schema_record_field_name(rs, (int)i);
        avro_schema_t fs = avro_schema_record_field_get_by_index(rs, (int)i);
        if (is_flattened_union(fs)) {
            const char *disc = json_string_value(json_object_get(w, name));
            avro_schema_t us = deref(fs);
            size_t b = 0, nb = avro_schema_union_size(us);
            for (; disc && b < nb; b++)
                if (name_matches_lower(avro_schema_type_name(deref(avro_schema_union_branch(us, (int)b))),
                                       disc))
                    break;
            if (!disc || b == nb) {
                snprintf(errstr, errstr_size,
                         "%s: the writer's \"%s\" is not a branch of the reader's schema", name,
                         disc ? disc : "(none)");
                return -1;
            }
            json_object_set_new(out, name, json_string(disc));
            if (resolve_record_into(rd, w, deref(avro_schema_union_branch(us, (int)b)), out, depth + 1,
                                    errstr, errstr_size) < 0)
                return -1;
            continue;
        }
        const json_t *wv = json_object_get(w, name);
        json_t *rv;
        if (wv) {
            rv = resolve_value(rd, wv, fs, name, depth + 1, errstr, errstr_size);
        } else {
            const json_t *def = field_default(rd, rs, name);
            if (!def) {
                snprintf(errstr, errstr_size, "%s: reader field missing from the writer and without default",
                         name);
                return -1;
            }
            rv = json_deep_copy(def);
        }
        if (!rv)
            return -1;
        json_object_set_new(out, name, rv);
    }
    return 0;
}

static json_t *resolve_value(const codec_schema_t *rd, const json_t *w, avro_schema_t s, const char *path,
                             int depth, char *errstr, size_t errstr_size) {
    s = deref(s);
    if (depth > CODEC_MAX_DEPTH) {
        snprintf(errstr, errstr_size, "%s: nested too deeply", path);
        return NULL;
    }
    switch (avro_typeof(s)) {
    case AVRO_RECORD: {
        json_t *out = json_object();
        if (!json_is_object(w) || resolve_record_into(rd, w, s, out, depth, errstr, errstr_size) < 0) {
            if (!json_is_object(w))
                snprintf(errstr, errstr_size, "%s: writer value is not a record", path);
            json_decref(out);
            return NULL;
        }
        return out;
    }
    case AVRO_ARRAY: {
        if (!json_is_array(w))
            break;
        json_t *out = json_array();
        for (size_t i = 0; i < json_array_size(w); i++) {
            json_t *e = resolve_value(rd, json_array_get(w, i), avro_schema_array_items(s), path, depth + 1,
                                      errstr, errstr_size);
            if (!e) {
                json_decref(out);
                return NULL;
            }
            json_array_append_new(out, e);
        }
        return out;
    }
    case AVRO_MAP: {
        const char *key;
        json_t *val;
        if (!json_is_object(w))
            break;
        json_t *out = json_object();
        json_object_foreach((json_t *)w, key, val) {
            json_t *e =
                resolve_value(rd, val, avro_schema_map_values(s), path, depth + 1, errstr, errstr_size);
            if (!e) {
                json_decref(out);
                return NULL;
            }
            json_object_set_new(out, key, e);
        }
        return out;
    }
    case AVRO_UNION: {
        int b = union_branch_for(s, w);
        if (b < 0)
            break;
        return resolve_value(rd, w, avro_schema_union_branch(s, b), path, depth + 1, errstr, errstr_size);
    }
    case AVRO_ENUM:
        if (!json_is_string(w) || avro_schema_enum_get_by_name(s, json_string_value(w)) < 0)
            break;
        return json_deep_copy(w);
    case AVRO_INT32:
    case AVRO_INT64:
        if (!json_is_integer(w))
            break;
        return json_deep_copy(w);
    case AVRO_FLOAT:
    case AVRO_DOUBLE: /* int and long promote to float and double */
        if (!json_is_number(w))
            break;
        return json_real(json_number_value(w));
    case AVRO_NULL:
        if (!json_is_null(w))
            break;
        return json_null();
    case AVRO_BOOLEAN:
        if (!json_is_boolean(w))
            break;
        return json_deep_copy(w);
    case AVRO_STRING:
    case AVRO_BYTES:
        if (!json_is_string(w))
            break;
        return json_deep_copy(w);
    default: break;
    }
    snprintf(errstr, errstr_size, "%s: the writer's value does not resolve to the reader's %s", path,
             avro_schema_type_name(s));
    return NULL;
}

/* --- checking a datum before avro-c reads it ------------------------------ */

/* avro-c trusts the lengths and indexes in a datum: a string longer than the
 * record leaks its allocation (read_string), an enum index out of range gives
 * an uninitialised symbol. So every datum is walked first against its writer
 * schema: lengths within the buffer, indexes within their schema, a bounded
 * number of items, and the exact number of bytes it uses. */

#define CODEC_MAX_ITEMS 1000000

typedef struct datum_cursor {
    const unsigned char *p, *end;
    long items;
} datum_cursor_t;

static int read_varint(datum_cursor_t *c, int64_t *out) {
    uint64_t v = 0;
    for (int shift = 0; shift < 70; shift += 7) {
        if (c->p >= c->end)
            return -1;
        unsigned char b = *c->p++;
        v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *out = (int64_t)((v >> 1) ^ (~(v & 1) + 1));
            return 0;
        }
    }
    return -1; /* more than 10 bytes */
}

static int skip_bytes(datum_cursor_t *c, int64_t n) {
    if (n < 0 || n > c->end - c->p)
        return -1;
    c->p += n;
    return 0;
}

static int check_datum(avro_schema_t s, datum_cursor_t *c, int depth) {
    int64_t n;
    s = deref(s);
    if (depth > CODEC_MAX_DEPTH || ++c->items > CODEC_MAX_ITEMS)
        return -1;
    switch (avro_typeof(s)) {
    case AVRO_NULL: return 0;
    case AVRO_BOOLEAN:
        if (c->p >= c->end || *c->p > 1)
            return -1;
        c->p++;
        return 0;
    case AVRO_INT32: return read_varint(c, &n) < 0 || n < INT32_MIN || n > INT32_MAX ? -1 : 0;
    case AVRO_INT64: return read_varint(c, &n);
    case AVRO_FLOAT: return skip_bytes(c, 4);
    case AVRO_DOUBLE: return skip_bytes(c, 8);
    case AVRO_STRING:
    case AVRO_BYTES: return read_varint(c, &n) < 0 ? -1 : skip_bytes(c, n);
    case AVRO_FIXED: return skip_bytes(c, avro_schema_fixed_size(s));
    case AVRO_ENUM:
        return read_varint(c, &n) < 0 || n < 0 || n >= avro_schema_enum_number_of_symbols(s) ? -1 : 0;
    case AVRO_UNION:
        if (read_varint(c, &n) < 0 || n < 0 || n >= (int64_t)avro_schema_union_size(s))
            return -1;
        return check_datum(avro_schema_union_branch(s, (int)n), c, depth + 1);
    case AVRO_RECORD:
        for (size_t i = 0; i < avro_schema_record_size(s); i++)
            if (check_datum(avro_schema_record_field_get_by_index(s, (int)i), c, depth + 1) < 0)
                return -1;
        return 0;
    case AVRO_ARRAY:
    case AVRO_MAP:
        for (;;) {
            if (read_varint(c, &n) < 0)
                return -1;
            if (n == 0)
                return 0;
            if (n < 0) { /* a block with its size in bytes */
                int64_t size;
                if (n == INT64_MIN || read_varint(c, &size) < 0 || size < 0 || size > c->end - c->p)
                    return -1;
                n = -n;
            }
            if (n > CODEC_MAX_ITEMS - c->items)
                return -1;
            for (int64_t i = 0; i < n; i++) {
                int64_t klen;
                if (avro_typeof(s) == AVRO_MAP && (read_varint(c, &klen) < 0 || skip_bytes(c, klen) < 0))
                    return -1;
                avro_schema_t item =
                    avro_typeof(s) == AVRO_MAP ? avro_schema_map_values(s) : avro_schema_array_items(s);
                if (check_datum(item, c, depth + 1) < 0)
                    return -1;
            }
        }
    default: return -1;
    }
}

/* --- decoding in place -------------------------------------------------- */

/* Text as from_avro and jansson take it: strict UTF-8 (no overlong form, no
 * surrogate, nothing above U+10FFFF) without NUL. */
static int text_ok(const unsigned char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        unsigned char c = s[i];
        if (c >= 0x01 && c < 0x80) {
            i++;
            continue;
        }
        size_t len;
        uint32_t cp;
        if (c >= 0xC2 && c <= 0xDF) {
            len = 2;
            cp = c & 0x1F;
        } else if (c >= 0xE0 && c <= 0xEF) {
            len = 3;
            cp = c & 0x0F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            len = 4;
            cp = c & 0x07;
        } else
            return 0; /* NUL, a continuation byte, C0/C1, F5 and above */
        if (n - i < len)
            return 0;
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xC0) != 0x80)
                return 0;
            cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
            (cp >= 0xD800 && cp <= 0xDFFF))
            return 0;
        i += len;
    }
    return 1;
}

/* One scalar (or a union of null and a scalar) at the cursor, into out.
 * Values are counted as check_datum counts them, against the same bound. */
static int flat_scalar(avro_schema_t s, datum_cursor_t *c, codec_val_t *out) {
    int64_t n;
    s = deref(s);
    if (++c->items > CODEC_MAX_ITEMS)
        return -1;
    switch (avro_typeof(s)) {
    case AVRO_NULL: out->kind = CODEC_V_NULL; return 0;
    case AVRO_BOOLEAN:
        if (c->p >= c->end || *c->p > 1)
            return -1;
        out->kind = CODEC_V_BOOL;
        out->num = *c->p++;
        return 0;
    case AVRO_INT32:
    case AVRO_INT64:
        if (read_varint(c, &n) < 0 || (avro_typeof(s) == AVRO_INT32 && (n < INT32_MIN || n > INT32_MAX)))
            return -1;
        out->kind = CODEC_V_INT;
        out->num = n;
        return 0;
    case AVRO_STRING:
        if (read_varint(c, &n) < 0 || n < 0 || n > c->end - c->p || !text_ok(c->p, (size_t)n))
            return -1;
        out->kind = CODEC_V_TEXT;
        out->text = (const char *)c->p;
        out->len = (size_t)n;
        c->p += n;
        return 0;
    case AVRO_ENUM: {
        if (read_varint(c, &n) < 0 || n < 0 || n >= avro_schema_enum_number_of_symbols(s))
            return -1;
        const char *sym = avro_schema_enum_get(s, (int)n);
        if (!sym)
            return -1;
        out->kind = CODEC_V_TEXT;
        out->text = sym;
        out->len = strlen(sym);
        return 0;
    }
    case AVRO_UNION:
        if (read_varint(c, &n) < 0 || n < 0 || n >= (int64_t)avro_schema_union_size(s))
            return -1;
        s = deref(avro_schema_union_branch(s, (int)n));
        return is_avro_union(s) ? -1 : flat_scalar(s, c, out);
    default: return -1; /* bytes, floats, fixed, records, arrays, maps: codec_decode's */
    }
}

static int flat_reserve(codec_flat_t *f, long n) {
    if (n <= f->cap)
        return 0;
    if (n > CODEC_MAX_ITEMS)
        return -1;
    int cap = f->cap ? f->cap : 64;
    while (cap < n)
        cap *= 2;
    codec_val_t *v = realloc(f->v, (size_t)cap * sizeof(*v));
    if (!v)
        return -1;
    f->v = v;
    f->cap = cap;
    return 0;
}

/* The items of an array of records at the cursor, after the record's fields. */
static int flat_items(avro_schema_t item, datum_cursor_t *c, codec_flat_t *f) {
    int nk = (int)avro_schema_record_size(item);
    if (nk == 0)
        return -1;
    f->item_fields = nk;
    for (;;) {
        int64_t n, size;
        if (read_varint(c, &n) < 0)
            return -1;
        if (n == 0)
            return 0;
        if (n < 0 && (n == INT64_MIN || read_varint(c, &size) < 0 || size < 0 || size > c->end - c->p))
            return -1;
        n = n < 0 ? -n : n;
        if (n > CODEC_MAX_ITEMS - c->items)
            return -1;
        for (int64_t j = 0; j < n; j++, f->items++) {
            if (++c->items > CODEC_MAX_ITEMS ||
                flat_reserve(f, (long)f->nfields + (long)(f->items + 1) * nk) < 0)
                return -1;
            for (int k = 0; k < nk; k++)
                if (flat_scalar(avro_schema_record_field_get_by_index(item, k), c,
                                &f->v[f->nfields + f->items * nk + k]) < 0)
                    return -1;
        }
    }
}

int codec_decode_flat(const void *buf, size_t len, codec_type_t type, codec_flat_t *f) {
    const unsigned char *p = buf;
    codec_schema_t *cs = current[type];
    uint64_t fp = 0;
    if (!cs || len < 10 || p[0] != 0xC3 || p[1] != 0x01)
        return -1;
    for (int i = 0; i < 8; i++)
        fp |= (uint64_t)p[2 + i] << (8 * i);
    avro_schema_t rec = deref(cs->schema);
    if (fp != cs->fingerprint || !is_avro_record(rec))
        return -1;
    datum_cursor_t c = {p + 10, p + len, 1}; /* the record counts as check_datum counts it */
    int nf = (int)avro_schema_record_size(rec), array_seen = 0;
    f->nfields = nf;
    f->item_fields = f->items = 0;
    if (flat_reserve(f, nf) < 0)
        return -1;
    for (int i = 0; i < nf; i++) {
        avro_schema_t fs = deref(avro_schema_record_field_get_by_index(rec, i));
        if (is_avro_array(fs)) {
            avro_schema_t item = deref(avro_schema_array_items(fs));
            if (array_seen++ || !is_avro_record(item) || ++c.items > CODEC_MAX_ITEMS)
                return -1;
            f->v[i].kind = CODEC_V_NULL; /* its items follow the record's fields */
            if (flat_items(item, &c, f) < 0)
                return -1;
        } else if (flat_scalar(fs, &c, &f->v[i]) < 0)
            return -1;
    }
    return c.p == c.end ? 0 : -1;
}

void codec_flat_free(codec_flat_t *f) {
    free(f->v);
    memset(f, 0, sizeof(*f));
}

int codec_flat_index(codec_type_t type, const char *field, const char *item) {
    if (!current[type])
        return -1;
    avro_schema_t rec = deref(current[type]->schema);
    int i = is_avro_record(rec) ? avro_schema_record_field_get_index(rec, field) : -1;
    if (i < 0 || !item)
        return i;
    avro_schema_t fs = deref(avro_schema_record_field_get_by_index(rec, i));
    if (!is_avro_array(fs) || !is_avro_record(deref(avro_schema_array_items(fs))))
        return -1;
    return avro_schema_record_field_get_index(deref(avro_schema_array_items(fs)), item);
}

/* --- registry ---------------------------------------------------------- */

int codec_init(char *errstr, size_t errstr_size) {
    if (schema_count)
        return 0;
    for (const embedded_file_t *src = schema_sources; src->path; src++) {
        if (schema_count == CODEC_MAX_SCHEMAS) {
            snprintf(errstr, errstr_size, "too many schemas");
            goto fail;
        }
        codec_schema_t *cs = &schemas[schema_count];
        json_error_t jerr;
        memset(cs, 0, sizeof(*cs));
        cs->path = src->path;
        cs->current = strstr(src->path, "/versions/") == NULL;
        cs->json = json_loads(src->text, 0, &jerr);
        if (!cs->json) {
            snprintf(errstr, errstr_size, "%s: %s", src->path, jerr.text);
            goto fail;
        }
        const char *ns = json_string_value(json_object_get(cs->json, "namespace"));
        cs->type = ns && strcmp(ns, "io.helmq.event") == 0 ? CODEC_EVENT : CODEC_COMMAND;
        cs->canonical = avro_canonical_form(src->text, strlen(src->text), errstr, errstr_size);
        if (!cs->canonical)
            goto fail;
        cs->fingerprint = avro_crc64(cs->canonical, strlen(cs->canonical));
        if (avro_schema_from_json_length(src->text, strlen(src->text), &cs->schema) != 0) {
            snprintf(errstr, errstr_size, "%s: %s", src->path, avro_strerror());
            goto fail;
        }
        cs->iface = avro_generic_class_from_schema(cs->schema);
        if (!cs->iface || avro_generic_value_new(cs->iface, &cs->value) != 0) {
            snprintf(errstr, errstr_size, "%s: %s", src->path, avro_strerror());
            goto fail;
        }
        schema_count++;
        if (cs->current)
            current[cs->type] = cs;
    }
    if (!current[CODEC_COMMAND] || !current[CODEC_EVENT]) {
        snprintf(errstr, errstr_size, "the command or the event schema is missing");
        goto fail;
    }
    return 0;
fail:
    schema_count++;
    codec_term();
    return -1;
}

void codec_term(void) {
    default_caches_free();
    for (int i = 0; i < schema_count; i++) {
        codec_schema_t *cs = &schemas[i];
        if (cs->iface) {
            avro_value_decref(&cs->value);
            avro_value_iface_decref(cs->iface);
        }
        if (cs->schema)
            avro_schema_decref(cs->schema);
        free(cs->canonical);
        json_decref(cs->json);
        memset(cs, 0, sizeof(*cs));
    }
    schema_count = 0;
    current[0] = current[1] = NULL;
}

uint64_t codec_fingerprint(codec_type_t type) {
    return current[type]->fingerprint;
}
const char *codec_canonical(codec_type_t type) {
    return current[type]->canonical;
}

int codec_command_field_known(const char *operation, const char *field) {
    avro_schema_t rs = current[CODEC_COMMAND]->schema;
    size_t n = avro_schema_record_size(rs);
    for (size_t i = 0; i < n; i++) {
        const char *name = avro_schema_record_field_name(rs, (int)i);
        if (strcmp(name, field) == 0)
            return 1;
        avro_schema_t fs = avro_schema_record_field_get_by_index(rs, (int)i);
        if (!is_flattened_union(fs) || !operation)
            continue;
        avro_schema_t us = deref(fs);
        for (size_t b = 0; b < avro_schema_union_size(us); b++) {
            avro_schema_t bs = deref(avro_schema_union_branch(us, (int)b));
            if (!name_matches_lower(avro_schema_type_name(bs), operation))
                continue;
            for (size_t k = 0; k < avro_schema_record_size(bs); k++)
                if (strcmp(avro_schema_record_field_name(bs, (int)k), field) == 0)
                    return 1;
        }
    }
    return 0;
}

int codec_encode(codec_type_t type, const json_t *doc, unsigned char **out, size_t *out_len, char *errstr,
                 size_t errstr_size) {
    codec_schema_t *cs = current[type];
    size_t size;
    avro_value_reset(&cs->value);
    if (record_to_avro(cs, doc, &cs->value, NULL, 0, errstr, errstr_size) < 0)
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
    buf[0] = 0xC3;
    buf[1] = 0x01;
    for (int i = 0; i < 8; i++)
        buf[2 + i] = (unsigned char)(cs->fingerprint >> (8 * i));
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
    codec_schema_t *ws = NULL;
    for (int i = 0; i < schema_count; i++)
        if (schemas[i].fingerprint == fp)
            ws = &schemas[i];
    if (!ws) {
        snprintf(errstr, errstr_size, "unknown schema fingerprint %016llx", (unsigned long long)fp);
        return CODEC_ERR_FINGERPRINT;
    }
    datum_cursor_t cur = {p + 10, p + len, 0};
    if (check_datum(ws->schema, &cur, 0) < 0) {
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
    json_t *natural = from_avro(&ws->value, 0);
    if (!natural) {
        snprintf(errstr, errstr_size, "datum under %s holds invalid text (not UTF-8) or is nested too deeply",
                 ws->path);
        return CODEC_ERR_DATUM;
    }
    codec_schema_t *rd = current[ws->type];
    json_t *resolved = natural;
    if (rd != ws) {
        resolved = resolve_value(rd, natural, rd->schema, "", 0, errstr, errstr_size);
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
