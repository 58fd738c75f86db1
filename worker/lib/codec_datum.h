/* Private to the codec (codec*.c): walking avro-c schemas and reading raw
 * Avro binary datums, with no schema registry and no JSON document behind
 * them. The leaf of the codec: it calls nothing else of helmq.
 *
 * The hot helpers (codec_deref, codec_read_varint, codec_skip_bytes) are
 * static inline: the in-place decoder calls them for every field, and they
 * were static functions of one file before the codec was split. */
#ifndef HELMQ_CODEC_DATUM_H
#define HELMQ_CODEC_DATUM_H

#include <avro.h>
#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

/* Nesting bound of every recursive walk of a schema, a datum or a document. */
#define CODEC_MAX_DEPTH 64
/* Bound on the values one datum may hold (records, items, scalars). */
#define CODEC_MAX_ITEMS 1000000

/* s with its named-type links followed (avro-c represents a reference to a
 * named type as an AVRO_LINK). */
static inline avro_schema_t codec_deref(avro_schema_t s) {
    while (s && avro_typeof(s) == AVRO_LINK)
        s = avro_schema_link_target(s);
    return s;
}

/* Whether s is a union with at least one record branch: natural JSON
 * flattens such a field into its enclosing record (see codec.h). */
int codec_is_flattened_union(avro_schema_t s);

/* Whether name, lowered, is lower: how a flattened union's branch is named
 * in natural JSON ("Install" is "install"). */
int codec_name_matches_lower(const char *name, const char *lower);

/* name in lower case into out (n bytes, always NUL-terminated). */
void codec_lower_name(const char *name, char *out, size_t n);

/* The index of the first branch of union us whose type can hold the JSON
 * value j, or -1 when none can. */
int codec_union_branch_for(avro_schema_t us, const json_t *j);

/* Whether the JSON value j can be held by a schema of this type (the rule a
 * union's branch is chosen by). */
int codec_json_fits(avro_type_t type, const json_t *j);

/* A read position in an Avro binary datum. items counts the values read so
 * far against CODEC_MAX_ITEMS. */
typedef struct codec_cursor {
    const unsigned char *p, *end;
    long items;
} codec_cursor_t;

/* Reads a zig-zag varint (an Avro int or long) at c into *out. Returns 0, or
 * -1 when the buffer ends first or the varint is longer than 10 bytes. */
static inline int codec_read_varint(codec_cursor_t *c, int64_t *out) {
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

/* Skips n bytes at c. Returns 0, or -1 when n is negative or past the end. */
static inline int codec_skip_bytes(codec_cursor_t *c, int64_t n) {
    if (n < 0 || n > c->end - c->p)
        return -1;
    c->p += n;
    return 0;
}

/* Walks one datum of schema s at c without decoding it: every length within
 * the buffer, every enum and union index within its schema, at most
 * CODEC_MAX_ITEMS values and CODEC_MAX_DEPTH levels. avro-c trusts all of
 * these, so a datum is checked before avro-c reads it. Returns 0 with c past
 * the datum, or -1. */
int codec_check_datum(avro_schema_t s, codec_cursor_t *c, int depth);

#endif
