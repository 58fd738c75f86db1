/* The codec's schema registry: parses the compiled-in .avsc files once
 * (codec_init), finds a writer schema by fingerprint, answers questions about
 * the current schemas (fingerprint, canonical form, known command fields),
 * keeps the reader schema's field defaults (avro-c does not keep them, so
 * they are read from the .avsc text), and resolves a document written under
 * an older schema to the current one. See codec_schema.h. */
#include "codec_schema.h"

#include "avro_canon.h"
#include "codec_datum.h"
#include "embedded.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CODEC_MAX_SCHEMAS 16

static codec_schema_t schemas[CODEC_MAX_SCHEMAS];
static int schema_count;
static codec_schema_t *current[2];

/* --- field defaults ----------------------------------------------------- */

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

const json_t *codec_schema_field_default_at(const codec_schema_t *cs, avro_schema_t rec, size_t i) {
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
        if (cs->plan && cs->plan_free)
            cs->plan_free(cs->plan);
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
        if (!codec_is_flattened_union(fs) || !operation)
            continue;
        avro_schema_t us = codec_deref(fs);
        for (size_t b = 0; b < avro_schema_union_size(us); b++) {
            avro_schema_t bs = codec_deref(avro_schema_union_branch(us, (int)b));
            if (!codec_name_matches_lower(avro_schema_type_name(bs), operation))
                continue;
            for (size_t k = 0; k < avro_schema_record_size(bs); k++)
                if (strcmp(avro_schema_record_field_name(bs, (int)k), field) == 0)
                    return 1;
        }
    }
    return 0;
}

codec_schema_t *codec_schema_current(codec_type_t type) {
    return current[type];
}

codec_schema_t *codec_schema_by_fingerprint(uint64_t fp) {
    codec_schema_t *ws = NULL;
    for (int i = 0; i < schema_count; i++)
        if (schemas[i].fingerprint == fp)
            ws = &schemas[i];
    return ws;
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
        if (codec_is_flattened_union(fs)) {
            const char *disc = json_string_value(json_object_get(w, name));
            avro_schema_t us = codec_deref(fs);
            size_t b = 0, nb = avro_schema_union_size(us);
            for (; disc && b < nb; b++)
                if (codec_name_matches_lower(
                        avro_schema_type_name(codec_deref(avro_schema_union_branch(us, (int)b))), disc))
                    break;
            if (!disc || b == nb) {
                snprintf(errstr, errstr_size,
                         "%s: the writer's \"%s\" is not a branch of the reader's schema", name,
                         disc ? disc : "(none)");
                return -1;
            }
            json_object_set_new(out, name, json_string(disc));
            if (resolve_record_into(rd, w, codec_deref(avro_schema_union_branch(us, (int)b)), out, depth + 1,
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
    s = codec_deref(s);
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
        int b = codec_union_branch_for(s, w);
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

json_t *codec_schema_resolve(const codec_schema_t *rd, const json_t *w, char *errstr, size_t errstr_size) {
    return resolve_value(rd, w, rd->schema, "", 0, errstr, errstr_size);
}
