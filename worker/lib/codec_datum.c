/* Schema walking and raw datum checking for the codec: the helpers every
 * other codec file shares (flattened unions, branch names, which union
 * branch a JSON value takes) and the bounds check of a datum before avro-c
 * reads it. See codec_datum.h. */
#include "codec_datum.h"

#include <ctype.h>

/* --- schema helpers --------------------------------------------------- */

/* A union with at least one record branch is flattened into its record. */
int codec_is_flattened_union(avro_schema_t s) {
    s = codec_deref(s);
    if (!is_avro_union(s))
        return 0;
    for (size_t i = 0; i < avro_schema_union_size(s); i++)
        if (is_avro_record(codec_deref(avro_schema_union_branch(s, (int)i))))
            return 1;
    return 0;
}

int codec_name_matches_lower(const char *name, const char *lower) {
    for (; *name && *lower; name++, lower++)
        if (tolower((unsigned char)*name) != *lower)
            return 0;
    return *name == '\0' && *lower == '\0';
}

void codec_lower_name(const char *name, char *out, size_t n) {
    size_t i = 0;
    for (; name[i] && i + 1 < n; i++)
        out[i] = (char)tolower((unsigned char)name[i]);
    out[i] = '\0';
}

int codec_json_fits(avro_type_t type, const json_t *j) {
    switch (type) {
    case AVRO_NULL: return json_is_null(j);
    case AVRO_STRING:
    case AVRO_ENUM: return json_is_string(j);
    case AVRO_INT32:
    case AVRO_INT64: return json_is_integer(j);
    case AVRO_FLOAT:
    case AVRO_DOUBLE: return json_is_number(j);
    case AVRO_BOOLEAN: return json_is_boolean(j);
    case AVRO_RECORD:
    case AVRO_MAP: return json_is_object(j);
    case AVRO_ARRAY: return json_is_array(j);
    default: return 0;
    }
}

int codec_union_branch_for(avro_schema_t us, const json_t *j) {
    size_t nb = avro_schema_union_size(us);
    for (size_t b = 0; b < nb; b++)
        if (codec_json_fits(avro_typeof(codec_deref(avro_schema_union_branch(us, (int)b))), j))
            return (int)b;
    return -1;
}

/* --- checking a datum before avro-c reads it ------------------------------ */

/* avro-c trusts the lengths and indexes in a datum: a string longer than the
 * record leaks its allocation (read_string), an enum index out of range gives
 * an uninitialised symbol. So every datum is walked first against its writer
 * schema: lengths within the buffer, indexes within their schema, a bounded
 * number of items, and the exact number of bytes it uses. */

int codec_check_datum(avro_schema_t s, codec_cursor_t *c, int depth) {
    int64_t n;
    s = codec_deref(s);
    if (depth > CODEC_MAX_DEPTH || ++c->items > CODEC_MAX_ITEMS)
        return -1;
    switch (avro_typeof(s)) {
    case AVRO_NULL: return 0;
    case AVRO_BOOLEAN:
        if (c->p >= c->end || *c->p > 1)
            return -1;
        c->p++;
        return 0;
    case AVRO_INT32: return codec_read_varint(c, &n) < 0 || n < INT32_MIN || n > INT32_MAX ? -1 : 0;
    case AVRO_INT64: return codec_read_varint(c, &n);
    case AVRO_FLOAT: return codec_skip_bytes(c, 4);
    case AVRO_DOUBLE: return codec_skip_bytes(c, 8);
    case AVRO_STRING:
    case AVRO_BYTES: return codec_read_varint(c, &n) < 0 ? -1 : codec_skip_bytes(c, n);
    case AVRO_FIXED: return codec_skip_bytes(c, avro_schema_fixed_size(s));
    case AVRO_ENUM:
        return codec_read_varint(c, &n) < 0 || n < 0 || n >= avro_schema_enum_number_of_symbols(s) ? -1 : 0;
    case AVRO_UNION:
        if (codec_read_varint(c, &n) < 0 || n < 0 || n >= (int64_t)avro_schema_union_size(s))
            return -1;
        return codec_check_datum(avro_schema_union_branch(s, (int)n), c, depth + 1);
    case AVRO_RECORD:
        for (size_t i = 0; i < avro_schema_record_size(s); i++)
            if (codec_check_datum(avro_schema_record_field_get_by_index(s, (int)i), c, depth + 1) < 0)
                return -1;
        return 0;
    case AVRO_ARRAY:
    case AVRO_MAP:
        for (;;) {
            if (codec_read_varint(c, &n) < 0)
                return -1;
            if (n == 0)
                return 0;
            if (n < 0) { /* a block with its size in bytes */
                int64_t size;
                if (n == INT64_MIN || codec_read_varint(c, &size) < 0 || size < 0 || size > c->end - c->p)
                    return -1;
                n = -n;
            }
            if (n > CODEC_MAX_ITEMS - c->items)
                return -1;
            for (int64_t i = 0; i < n; i++) {
                int64_t klen;
                if (avro_typeof(s) == AVRO_MAP &&
                    (codec_read_varint(c, &klen) < 0 || codec_skip_bytes(c, klen) < 0))
                    return -1;
                avro_schema_t item =
                    avro_typeof(s) == AVRO_MAP ? avro_schema_map_values(s) : avro_schema_array_items(s);
                if (codec_check_datum(item, c, depth + 1) < 0)
                    return -1;
            }
        }
    default: return -1;
    }
}
