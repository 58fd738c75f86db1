/* The codec's direct encoder: natural JSON to Avro binary, walking the
 * parsed schema and the document together and writing zig-zag varints,
 * lengths, union branch and enum indexes into a growing buffer. It mirrors
 * codec_json.c's to_avro field for field (the same order of checks, the
 * same defaults, the same error texts), so codec_encode_reference and
 * codec_encode agree byte for byte (tests/unit/test_codec_write.c). Going
 * through avro-c's generic values cost ~35,600 instructions per event
 * encoded, ~9 % of the worker's loop per command; this ~11,600
 * (docs/PERFORMANCE.md, 28). See codec_write.h. */
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

/* --- the plan: each schema node walked once -------------------------------- */

/* avro-c's schema accessors look fields and branches up in hash tables, and
 * which fields are flattened unions and what their defaults are took a walk
 * of their own for every field of every datum: a third of the encoder's
 * instructions. A plan holds all of it per node, built at cs's first encode
 * and kept in cs->plan until codec_term, which frees it through
 * cs->plan_free (a pointer, so that codec_schema.c calls nothing here). */
typedef struct wnode wnode_t;

typedef struct wfield {
    const char *name;
    const json_t *def; /* its default in cs, or NULL */
    int flattened;     /* a union with a record branch (codec.h) */
    wnode_t *node;
} wfield_t;

struct wnode {
    avro_schema_t s; /* dereferenced */
    avro_type_t type;
    size_t n;         /* a record's fields, a union's branches */
    wfield_t *fields; /* a record's */
    wnode_t **sub;    /* a union's branches; an array's items or a map's values in sub[0] */
    wnode_t *next;    /* every node of the plan, for lookup and freeing */
};

typedef struct wplan {
    const codec_schema_t *cs;
    wnode_t *root, *all;
} wplan_t;

/* The node of s in plan p, built on first use (a named type's node is
 * shared by every reference to it, so a recursive schema ends). */
static wnode_t *node_for(wplan_t *p, avro_schema_t s) {
    s = codec_deref(s);
    for (wnode_t *x = p->all; x; x = x->next)
        if (x->s == s)
            return x;
    wnode_t *x = calloc(1, sizeof(*x));
    if (!x)
        return NULL;
    x->s = s;
    x->type = avro_typeof(s);
    x->next = p->all;
    p->all = x;
    switch (x->type) {
    case AVRO_RECORD:
        x->n = avro_schema_record_size(s);
        if (!(x->fields = calloc(x->n ? x->n : 1, sizeof(*x->fields))))
            return NULL;
        for (size_t i = 0; i < x->n; i++) {
            avro_schema_t fs = avro_schema_record_field_get_by_index(s, (int)i);
            x->fields[i].name = avro_schema_record_field_name(s, (int)i);
            x->fields[i].def = codec_schema_field_default_at(p->cs, s, i);
            x->fields[i].flattened = codec_is_flattened_union(fs);
            if (!(x->fields[i].node = node_for(p, fs)))
                return NULL;
        }
        return x;
    case AVRO_UNION:
        x->n = avro_schema_union_size(s);
        if (!(x->sub = calloc(x->n ? x->n : 1, sizeof(*x->sub))))
            return NULL;
        for (size_t b = 0; b < x->n; b++)
            if (!(x->sub[b] = node_for(p, avro_schema_union_branch(s, (int)b))))
                return NULL;
        return x;
    case AVRO_ARRAY:
    case AVRO_MAP:
        if (!(x->sub = calloc(1, sizeof(*x->sub))) ||
            !(x->sub[0] = node_for(p, x->type == AVRO_ARRAY ? avro_schema_array_items(s)
                                                            : avro_schema_map_values(s))))
            return NULL;
        return x;
    default: return x;
    }
}

static void plan_free(void *plan) {
    wplan_t *p = plan;
    while (p->all) {
        wnode_t *x = p->all;
        p->all = x->next;
        free(x->fields);
        free(x->sub);
        free(x);
    }
    free(p);
}

/* cs's plan, built on first use; NULL when out of memory. */
static wplan_t *plan_for(codec_schema_t *cs) {
    if (cs->plan)
        return cs->plan;
    wplan_t *p = calloc(1, sizeof(*p));
    if (!p)
        return NULL;
    p->cs = cs;
    if (!(p->root = node_for(p, cs->schema))) {
        plan_free(p);
        return NULL;
    }
    cs->plan = p;
    cs->plan_free = plan_free;
    return p;
}

/* codec_union_branch_for on the plan's branch types: the first branch that
 * can hold j, or -1. */
static int branch_for(const wnode_t *u, const json_t *j) {
    for (size_t b = 0; b < u->n; b++)
        if (codec_json_fits(u->sub[b]->type, j))
            return (int)b;
    return -1;
}

/* --- the walk ------------------------------------------------------------- */

static int write_value(const json_t *j, const wnode_t *x, codec_wbuf_t *w, const codec_field_path_t *path,
                       int depth, char *errstr, size_t errstr_size);

/* x is a record node. A flattened union field (codec.h) takes its branch
 * from the discriminator field of the same name and the branch's fields from
 * obj itself. */
static int write_record(const json_t *obj, const wnode_t *x, codec_wbuf_t *w, const codec_field_path_t *path,
                        int depth, char *errstr, size_t errstr_size) {
    char pt[256];
    if (!json_is_object(obj)) {
        snprintf(errstr, errstr_size, "%s: expected a JSON object", codec_path_text(path, pt, sizeof(pt)));
        return -1;
    }
    for (size_t i = 0; i < x->n; i++) {
        const wfield_t *f = &x->fields[i];
        if (f->flattened) {
            const char *disc = json_string_value(json_object_get(obj, f->name));
            const wnode_t *u = f->node;
            size_t b = 0;
            if (!disc) {
                snprintf(errstr, errstr_size,
                         "%s: missing required field (one of the schema's record names in lower case)",
                         f->name);
                return -1;
            }
            for (; b < u->n; b++)
                if (codec_name_matches_lower(avro_schema_type_name(u->sub[b]->s), disc))
                    break;
            if (b == u->n) {
                snprintf(errstr, errstr_size, "%s: unknown value \"%s\"", f->name, disc);
                return -1;
            }
            put_long(w, (int64_t)b);
            if (write_record(obj, u->sub[b], w, path, depth + 1, errstr, errstr_size) < 0)
                return -1;
            continue;
        }
        const json_t *jv = json_object_get(obj, f->name);
        if (!jv) {
            jv = f->def;
            if (!jv) {
                snprintf(errstr, errstr_size, "%s: missing required field", f->name);
                return -1;
            }
        }
        codec_field_path_t sub = {path, f->name};
        if (write_value(jv, f->node, w, &sub, depth + 1, errstr, errstr_size) < 0)
            return -1;
    }
    return 0;
}

static int write_value(const json_t *j, const wnode_t *x, codec_wbuf_t *w, const codec_field_path_t *path,
                       int depth, char *errstr, size_t errstr_size) {
    char pt[256];
    if (depth > CODEC_MAX_DEPTH) {
        snprintf(errstr, errstr_size, "%s: nested too deeply", codec_path_text(path, pt, sizeof(pt)));
        return -1;
    }
    switch (x->type) {
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
        json_int_t v = json_integer_value(j);
        if (v < INT32_MIN || v > INT32_MAX) {
            snprintf(errstr, errstr_size, "%s: %" JSON_INTEGER_FORMAT " is out of range for an int",
                     codec_path_text(path, pt, sizeof(pt)), v);
            return -1;
        }
        put_long(w, (int64_t)v);
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
        int idx = json_is_string(j) ? avro_schema_enum_get_by_name(x->s, json_string_value(j)) : -1;
        if (idx < 0) {
            snprintf(errstr, errstr_size, "%s: not one of the allowed symbols",
                     codec_path_text(path, pt, sizeof(pt)));
            return -1;
        }
        put_long(w, idx);
        return 0;
    }
    case AVRO_RECORD: return write_record(j, x, w, path, depth, errstr, errstr_size);
    case AVRO_ARRAY: {
        if (!json_is_array(j))
            goto mismatch;
        size_t n = json_array_size(j);
        /* One block of n items, then the empty block (avro-c's layout). */
        if (n > 0)
            put_long(w, (int64_t)n);
        for (size_t i = 0; i < n; i++)
            if (write_value(json_array_get(j, i), x->sub[0], w, path, depth + 1, errstr, errstr_size) < 0)
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
        if (n > 0)
            put_long(w, (int64_t)n);
        json_object_foreach((json_t *)j, key, val) {
            put_bytes(w, key, strlen(key));
            if (write_value(val, x->sub[0], w, path, depth + 1, errstr, errstr_size) < 0)
                return -1;
        }
        put_long(w, 0);
        return 0;
    }
    case AVRO_UNION: {
        int b = branch_for(x, j);
        if (b < 0)
            goto mismatch;
        put_long(w, b);
        return write_value(j, x->sub[b], w, path, depth + 1, errstr, errstr_size);
    }
    default:
        snprintf(errstr, errstr_size, "%s: unsupported schema type", codec_path_text(path, pt, sizeof(pt)));
        return -1;
    }
mismatch:
    snprintf(errstr, errstr_size, "%s: expected %s", codec_path_text(path, pt, sizeof(pt)),
             x->type == AVRO_UNION ? "a value of one of the union's types" : avro_schema_type_name(x->s));
    return -1;
}

int codec_write_datum(codec_schema_t *cs, const json_t *doc, codec_wbuf_t *w, char *errstr,
                      size_t errstr_size) {
    wplan_t *p = plan_for(cs);
    if (!p) {
        snprintf(errstr, errstr_size, "out of memory");
        return -1;
    }
    if (write_record(doc, p->root, w, NULL, 0, errstr, errstr_size) < 0)
        return -1;
    if (w->oom) {
        snprintf(errstr, errstr_size, "out of memory");
        return -1;
    }
    return 0;
}
