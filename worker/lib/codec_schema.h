/* Private to the codec (codec*.c): the registry of the compiled-in Avro
 * schemas (every version of the command and the event, parsed once by
 * codec_init), the reader schema's field defaults, and the resolution of a
 * document written under an older schema to the current one.
 *
 * The registry owns every codec_schema_t; pointers into it stay valid until
 * codec_term. Not thread-safe, like the rest of the codec. */
#ifndef HELMQ_CODEC_SCHEMA_H
#define HELMQ_CODEC_SCHEMA_H

#include "codec.h"

#include <avro.h>
#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

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
    /* The encoder's plan of this schema (codec_write.c builds it at the
     * first encode and sets both); codec_term frees it with plan_free. */
    void *plan;
    void (*plan_free)(void *plan);
} codec_schema_t;

/* The current (reader) schema of type, or NULL before codec_init. */
codec_schema_t *codec_schema_current(codec_type_t type);

/* The schema, of any version, whose fingerprint is fp, or NULL. */
codec_schema_t *codec_schema_by_fingerprint(uint64_t fp);

/* The default, as written in cs's .avsc, of field i of record rec (a record
 * schema of cs), or NULL when the field has none. Borrowed from cs. */
const json_t *codec_schema_field_default_at(const codec_schema_t *cs, avro_schema_t rec, size_t i);

/* Resolves w, the natural JSON of a datum of an older writer schema, to the
 * reader schema rd: fields the writer lacked take rd's defaults, values are
 * promoted as Avro resolution allows. Returns a new reference, or NULL with
 * errstr filled when w does not resolve. */
json_t *codec_schema_resolve(const codec_schema_t *rd, const json_t *w, char *errstr, size_t errstr_size);

#endif
