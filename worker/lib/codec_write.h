/* Private to the codec (codec*.c): encoding a natural JSON document (see
 * codec.h) straight to Avro binary by walking the parsed schema alongside
 * it, without avro-c's generic values. codec_encode uses it; the avro-c path
 * (codec_json_to_avro + avro_value_write) stays as codec_encode_reference,
 * which tests/unit/test_codec_write.c holds it byte for byte against. */
#ifndef HELMQ_CODEC_WRITE_H
#define HELMQ_CODEC_WRITE_H

#include "codec_schema.h"

#include <jansson.h>
#include <stddef.h>

/* A growing output buffer. p is malloc'd and owned by whoever set it up;
 * oom is set (and nothing more written) once an allocation failed. */
typedef struct codec_wbuf {
    unsigned char *p;
    size_t len, cap;
    int oom;
} codec_wbuf_t;

/* Appends the Avro binary datum of doc (not consumed) under cs's record
 * schema to w. A field absent from doc takes its default in cs, exactly as
 * codec_json_to_avro applies it; the same documents are refused with the
 * same errstr. The first call for cs builds its plan (cs->plan). Returns 0, or -1 with errstr filled (w->len
 * is then unspecified). */
int codec_write_datum(codec_schema_t *cs, const json_t *doc, codec_wbuf_t *w, char *errstr,
                      size_t errstr_size);

/* codec_encode through avro-c's generic values: the reference encoder, for
 * the unit test only. Same contract as codec_encode (codec.h). */
int codec_encode_reference(codec_type_t type, const json_t *doc, unsigned char **out, size_t *out_len,
                           char *errstr, size_t errstr_size);

#endif
