/* The codec's in-place decoder (the projector's hot path): a record of the
 * current schema read field by field into codec_flat_t slices of the buffer,
 * without avro-c values or JSON. It declines whatever codec_decode would
 * refuse or that is not flat; see codec.h for the contract. */
#include "codec.h"

#include "codec_datum.h"
#include "codec_schema.h"

#include <stdlib.h>
#include <string.h>

/* Text as codec_json_from_avro and jansson take it: strict UTF-8 (no overlong form, no
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
 * Values are counted as codec_check_datum counts them, against the same bound. */
static int flat_scalar(avro_schema_t s, codec_cursor_t *c, codec_val_t *out) {
    int64_t n;
    s = codec_deref(s);
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
        if (codec_read_varint(c, &n) < 0 ||
            (avro_typeof(s) == AVRO_INT32 && (n < INT32_MIN || n > INT32_MAX)))
            return -1;
        out->kind = CODEC_V_INT;
        out->num = n;
        return 0;
    case AVRO_STRING:
        if (codec_read_varint(c, &n) < 0 || n < 0 || n > c->end - c->p || !text_ok(c->p, (size_t)n))
            return -1;
        out->kind = CODEC_V_TEXT;
        out->text = (const char *)c->p;
        out->len = (size_t)n;
        c->p += n;
        return 0;
    case AVRO_ENUM: {
        if (codec_read_varint(c, &n) < 0 || n < 0 || n >= avro_schema_enum_number_of_symbols(s))
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
        if (codec_read_varint(c, &n) < 0 || n < 0 || n >= (int64_t)avro_schema_union_size(s))
            return -1;
        s = codec_deref(avro_schema_union_branch(s, (int)n));
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
static int flat_items(avro_schema_t item, codec_cursor_t *c, codec_flat_t *f) {
    int nk = (int)avro_schema_record_size(item);
    if (nk == 0)
        return -1;
    f->item_fields = nk;
    for (;;) {
        int64_t n, size;
        if (codec_read_varint(c, &n) < 0)
            return -1;
        if (n == 0)
            return 0;
        if (n < 0 && (n == INT64_MIN || codec_read_varint(c, &size) < 0 || size < 0 || size > c->end - c->p))
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
    codec_schema_t *cs = codec_schema_current(type);
    uint64_t fp = 0;
    if (!cs || len < 10 || p[0] != 0xC3 || p[1] != 0x01)
        return -1;
    for (int i = 0; i < 8; i++)
        fp |= (uint64_t)p[2 + i] << (8 * i);
    avro_schema_t rec = codec_deref(cs->schema);
    if (fp != cs->fingerprint || !is_avro_record(rec))
        return -1;
    codec_cursor_t c = {p + 10, p + len, 1}; /* the record counts as codec_check_datum counts it */
    int nf = (int)avro_schema_record_size(rec), array_seen = 0;
    f->nfields = nf;
    f->item_fields = f->items = 0;
    if (flat_reserve(f, nf) < 0)
        return -1;
    for (int i = 0; i < nf; i++) {
        avro_schema_t fs = codec_deref(avro_schema_record_field_get_by_index(rec, i));
        if (is_avro_array(fs)) {
            avro_schema_t item = codec_deref(avro_schema_array_items(fs));
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
    const codec_schema_t *cs = codec_schema_current(type);
    if (!cs)
        return -1;
    avro_schema_t rec = codec_deref(cs->schema);
    int i = is_avro_record(rec) ? avro_schema_record_field_get_index(rec, field) : -1;
    if (i < 0 || !item)
        return i;
    avro_schema_t fs = codec_deref(avro_schema_record_field_get_by_index(rec, i));
    if (!is_avro_array(fs) || !is_avro_record(codec_deref(avro_schema_array_items(fs))))
        return -1;
    return avro_schema_record_field_get_index(codec_deref(avro_schema_array_items(fs)), item);
}
