/* Parsing Canonical Form and CRC-64-AVRO fingerprints (Avro specification,
 * "Parsing Canonical Form for Schemas" and "Schema Fingerprints").
 *
 * The transformation follows the specification's rules in order:
 * PRIMITIVES ({"type":"int"} becomes "int"), FULLNAMES (names resolved
 * against the enclosing namespace), STRIP (only type, name, fields, symbols,
 * items, values and size survive), ORDER (in that order), STRINGS and
 * INTEGERS (as jansson prints them: UTF-8, no leading zeros) and WHITESPACE
 * (none). A named type is written in full at its first occurrence and by its
 * fullname afterwards. */
#include "avro_canon.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct canon_buf {
    char *data;
    size_t len, cap;
    int failed;
} canon_buf_t;

typedef struct canon_names {
    char **names;
    size_t n, cap;
} canon_names_t;

static void buf_put(canon_buf_t *b, const char *s, size_t n) {
    if (b->failed)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 256;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *d = realloc(b->data, cap);
        if (!d) {
            b->failed = 1;
            return;
        }
        b->data = d;
        b->cap = cap;
    }
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
}

static void buf_puts(canon_buf_t *b, const char *s) {
    buf_put(b, s, strlen(s));
}

/* Writes s as a JSON string literal: jansson escapes only what JSON requires
 * and leaves UTF-8 as it is, which is the STRINGS rule. */
static void buf_put_json_string(canon_buf_t *b, const char *s) {
    json_t *str = json_string(s);
    char *out = str ? json_dumps(str, JSON_ENCODE_ANY | JSON_COMPACT) : NULL;
    if (!out)
        b->failed = 1;
    else
        buf_puts(b, out);
    free(out);
    json_decref(str);
}

static int is_primitive(const char *t) {
    static const char *const prims[] = {"null",   "boolean", "int",    "long", "float",
                                        "double", "bytes",   "string", NULL};
    for (int i = 0; prims[i]; i++)
        if (strcmp(t, prims[i]) == 0)
            return 1;
    return 0;
}

static int names_seen(canon_names_t *names, const char *full) {
    for (size_t i = 0; i < names->n; i++)
        if (strcmp(names->names[i], full) == 0)
            return 1;
    return 0;
}

static int names_add(canon_names_t *names, const char *full) {
    if (names->n == names->cap) {
        size_t cap = names->cap ? names->cap * 2 : 16;
        char **n = realloc(names->names, cap * sizeof(*n));
        if (!n)
            return -1;
        names->names = n;
        names->cap = cap;
    }
    names->names[names->n] = strdup(full);
    return names->names[names->n++] ? 0 : -1;
}

/* Fullname of name in namespace ns: a dotted name is already full. */
static char *fullname(const char *name, const char *ns) {
    char *out;
    if (strchr(name, '.') || !ns || !*ns)
        return strdup(name);
    if (asprintf(&out, "%s.%s", ns, name) < 0)
        return NULL;
    return out;
}

static int canon_node(const json_t *node, const char *ns, canon_names_t *names, canon_buf_t *b, char *errstr,
                      size_t errstr_size);

static int canon_named(const json_t *node, const char *type, const char *ns, canon_names_t *names,
                       canon_buf_t *b, char *errstr, size_t errstr_size) {
    const char *name = json_string_value(json_object_get(node, "name"));
    const char *own_ns = json_string_value(json_object_get(node, "namespace"));
    if (!name) {
        snprintf(errstr, errstr_size, "%s without a name", type);
        return -1;
    }
    char *full = fullname(name, own_ns ? own_ns : ns);
    if (!full)
        return -1;
    int rc = 0;
    if (names_seen(names, full)) {
        buf_put_json_string(b, full);
        goto out;
    }
    if (names_add(names, full) < 0) {
        rc = -1;
        goto out;
    }
    /* The namespace of a named type's fullname encloses what it contains. */
    char *inner_ns = NULL;
    const char *dot = strrchr(full, '.');
    if (dot)
        inner_ns = strndup(full, (size_t)(dot - full));
    buf_puts(b, "{\"name\":");
    buf_put_json_string(b, full);
    buf_puts(b, ",\"type\":");
    buf_put_json_string(b, strcmp(type, "error") == 0 ? "error" : type);
    if (strcmp(type, "record") == 0 || strcmp(type, "error") == 0) {
        const json_t *fields = json_object_get(node, "fields");
        if (!json_is_array(fields)) {
            snprintf(errstr, errstr_size, "record %s without fields", full);
            rc = -1;
        } else {
            buf_puts(b, ",\"fields\":[");
            for (size_t i = 0; rc == 0 && i < json_array_size(fields); i++) {
                const json_t *f = json_array_get(fields, i);
                const char *fname = json_string_value(json_object_get(f, "name"));
                if (!fname || !json_object_get(f, "type")) {
                    snprintf(errstr, errstr_size, "record %s: field %zu without name or type", full, i);
                    rc = -1;
                    break;
                }
                if (i)
                    buf_puts(b, ",");
                buf_puts(b, "{\"name\":");
                buf_put_json_string(b, fname);
                buf_puts(b, ",\"type\":");
                rc = canon_node(json_object_get(f, "type"), inner_ns, names, b, errstr, errstr_size);
                buf_puts(b, "}");
            }
            buf_puts(b, "]");
        }
    } else if (strcmp(type, "enum") == 0) {
        const json_t *symbols = json_object_get(node, "symbols");
        buf_puts(b, ",\"symbols\":[");
        for (size_t i = 0; i < json_array_size(symbols); i++) {
            if (i)
                buf_puts(b, ",");
            buf_put_json_string(b, json_string_value(json_array_get(symbols, i)));
        }
        buf_puts(b, "]");
    } else { /* fixed */
        char num[32];
        snprintf(num, sizeof(num), "%" JSON_INTEGER_FORMAT,
                 json_integer_value(json_object_get(node, "size")));
        buf_puts(b, ",\"size\":");
        buf_puts(b, num);
    }
    buf_puts(b, "}");
    free(inner_ns);
out:
    free(full);
    return rc;
}

static int canon_node(const json_t *node, const char *ns, canon_names_t *names, canon_buf_t *b, char *errstr,
                      size_t errstr_size) {
    if (json_is_string(node)) {
        const char *t = json_string_value(node);
        if (is_primitive(t)) {
            buf_put_json_string(b, t);
            return 0;
        }
        char *full = fullname(t, ns);
        if (!full)
            return -1;
        buf_put_json_string(b, full);
        free(full);
        return 0;
    }
    if (json_is_array(node)) {
        buf_puts(b, "[");
        for (size_t i = 0; i < json_array_size(node); i++) {
            if (i)
                buf_puts(b, ",");
            if (canon_node(json_array_get(node, i), ns, names, b, errstr, errstr_size) < 0)
                return -1;
        }
        buf_puts(b, "]");
        return 0;
    }
    if (!json_is_object(node)) {
        snprintf(errstr, errstr_size, "a schema is a string, an array or an object");
        return -1;
    }
    const json_t *type = json_object_get(node, "type");
    if (json_is_object(type) || json_is_array(type))
        return canon_node(type, ns, names, b, errstr, errstr_size);
    const char *t = json_string_value(type);
    if (!t) {
        snprintf(errstr, errstr_size, "schema object without a type");
        return -1;
    }
    if (strcmp(t, "record") == 0 || strcmp(t, "error") == 0 || strcmp(t, "enum") == 0 ||
        strcmp(t, "fixed") == 0)
        return canon_named(node, t, ns, names, b, errstr, errstr_size);
    if (strcmp(t, "array") == 0) {
        buf_puts(b, "{\"type\":\"array\",\"items\":");
        if (canon_node(json_object_get(node, "items"), ns, names, b, errstr, errstr_size) < 0)
            return -1;
        buf_puts(b, "}");
        return 0;
    }
    if (strcmp(t, "map") == 0) {
        buf_puts(b, "{\"type\":\"map\",\"values\":");
        if (canon_node(json_object_get(node, "values"), ns, names, b, errstr, errstr_size) < 0)
            return -1;
        buf_puts(b, "}");
        return 0;
    }
    /* PRIMITIVES: {"type":"int", ...} and references written as objects. */
    return canon_node(type, ns, names, b, errstr, errstr_size);
}

char *avro_canonical_form(const char *json, size_t len, char *errstr, size_t errstr_size) {
    json_error_t jerr;
    json_t *root = json_loadb(json, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
    if (!root) {
        snprintf(errstr, errstr_size, "schema is not JSON: %s (line %d)", jerr.text, jerr.line);
        return NULL;
    }
    canon_buf_t b = {0};
    canon_names_t names = {0};
    int rc = canon_node(root, NULL, &names, &b, errstr, errstr_size);
    if (rc == 0 && b.failed) {
        snprintf(errstr, errstr_size, "out of memory");
        rc = -1;
    }
    for (size_t i = 0; i < names.n; i++)
        free(names.names[i]);
    free(names.names);
    json_decref(root);
    if (rc < 0) {
        free(b.data);
        return NULL;
    }
    return b.data;
}

#define CRC64_AVRO_EMPTY 0xc15d213aa4d7a795ULL

uint64_t avro_crc64(const void *buf, size_t len) {
    static uint64_t table[256];
    static int ready;
    if (!ready) {
        for (int i = 0; i < 256; i++) {
            uint64_t fp = (uint64_t)i;
            for (int j = 0; j < 8; j++)
                fp = (fp >> 1) ^ (CRC64_AVRO_EMPTY & -(fp & 1));
            table[i] = fp;
        }
        ready = 1;
    }
    const unsigned char *p = buf;
    uint64_t fp = CRC64_AVRO_EMPTY;
    for (size_t i = 0; i < len; i++)
        fp = (fp >> 8) ^ table[(fp ^ p[i]) & 0xff];
    return fp;
}
