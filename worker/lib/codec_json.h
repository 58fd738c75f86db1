/* Private to the codec (codec*.c): the mapping between natural JSON (see
 * codec.h) and avro-c generic values of one schema. Neither direction
 * resolves between schema versions; codec_schema.h does that on the JSON. */
#ifndef HELMQ_CODEC_JSON_H
#define HELMQ_CODEC_JSON_H

#include "codec_schema.h"

#include <avro.h>
#include <jansson.h>
#include <stddef.h>

/* Where a value sits in the record ("history.revision"), for error
 * messages: a chain of field names on the stack, formatted only when an
 * error is reported (formatting it for every field was a measurable part of
 * the worker's CPU, docs/PERFORMANCE.md). NULL is the record itself. Shared
 * by both encoders (codec_json.c's reference path and codec_write.c). */
typedef struct codec_field_path {
    const struct codec_field_path *up;
    const char *name;
} codec_field_path_t;

/* p's field names joined by dots into buf (size bytes); returns buf. */
const char *codec_path_text(const codec_field_path_t *p, char *buf, size_t size);

/* Sets record, a reset generic value of cs's record schema, from doc (not
 * consumed). A field absent from doc takes its default in cs; one without a
 * default is an error naming it. Returns 0, or -1 with errstr filled (the
 * field's path, "history.revision", and what was wrong). */
int codec_json_to_avro(const codec_schema_t *cs, const json_t *doc, avro_value_t *record, char *errstr,
                       size_t errstr_size);

/* The natural JSON of v, a new reference; NULL when v holds a string that is
 * not UTF-8 or has a NUL, an enum index its schema lacks, or is nested more
 * than CODEC_MAX_DEPTH levels. */
json_t *codec_json_from_avro(avro_value_t *v);

#endif
