/* The record codec shared by every helmq program: Avro single-object encoding
 * of commands and events, to and from "natural JSON".
 *
 * Wire format (Avro specification, single-object encoding): the bytes C3 01,
 * the 8-byte little-endian CRC-64-AVRO fingerprint of the writer schema's
 * Parsing Canonical Form, then the Avro binary datum.
 *
 * Natural JSON is the JSON users write: a record is an object, a union with
 * null is the value or null, an enum is its symbol, timestamps are integers
 * (ms since the epoch). A record field whose type is a union of records (the
 * command's `operation`) is flattened: the chosen branch's fields sit in the
 * enclosing object and the field itself holds the branch's name in lower case
 * ("install", "upgrade", ...). So a command is the seed's flat install JSON
 * plus "operation".
 *
 * The schemas are those of schemas/ compiled into the program. Decoding finds
 * the writer schema by fingerprint among every known version and resolves the
 * datum to the current schema of its kind, filling the defaults of fields the
 * writer did not have (avro-c 1.11 cannot do that by itself).
 *
 * Not thread-safe (avro-c keeps its error text in a global): call from one
 * thread. */
#ifndef HELMQ_CODEC_H
#define HELMQ_CODEC_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

typedef enum codec_type { CODEC_COMMAND = 0, CODEC_EVENT = 1 } codec_type_t;

/* Errors codec_decode distinguishes, for the DLQ headers. */
#define CODEC_ERR_HEADER (-2)      /* not single-object encoded (no C3 01 / too short) */
#define CODEC_ERR_FINGERPRINT (-3) /* no known schema has this fingerprint */
#define CODEC_ERR_DATUM (-4)       /* the datum does not decode under its schema */
#define CODEC_ERR_RESOLVE (-5)     /* the writer's record cannot be resolved to the reader */

/* Parses the compiled-in schemas. Call once before anything else; returns 0,
 * or -1 with errstr filled (a broken schema is a build defect). */
int codec_init(char *errstr, size_t errstr_size);
void codec_term(void);

/* Encodes doc (natural JSON, not consumed) with the current schema of type.
 * Fields absent from doc take their schema default; a field without a default
 * that is absent is an error naming it. On success *out is a malloc'd buffer
 * of *out_len bytes the caller frees. Returns 0 or -1 with errstr filled. */
int codec_encode(codec_type_t type, const json_t *doc, unsigned char **out, size_t *out_len, char *errstr,
                 size_t errstr_size);

/* Decodes a single-object record of either type. On success *doc is a new
 * reference the caller owns, shaped by the current schema of *type.
 * Returns 0 or one of the CODEC_ERR_* codes with errstr filled. */
int codec_decode(const void *buf, size_t len, codec_type_t *type, json_t **doc, char *errstr,
                 size_t errstr_size);

/* Name of a CODEC_ERR_* code ("bad-header", "unknown-fingerprint", ...). */
const char *codec_strerror(int code);

/* Fingerprint of the current schema of type, and its Parsing Canonical Form
 * (owned by the codec). */
uint64_t codec_fingerprint(codec_type_t type);
const char *codec_canonical(codec_type_t type);

/* Whether field is a field of the current command schema for operation
 * ("install", ...), either common or of the operation's branch. */
int codec_command_field_known(const char *operation, const char *field);

/* Fills the schema defaults of the current schema into doc (natural JSON,
 * modified in place) without encoding. Returns 0 or -1 with errstr filled. */
int codec_fill_defaults(codec_type_t type, json_t *doc, char *errstr, size_t errstr_size);

/* --- decoding in place (the projector's hot path) ------------------------
 *
 * A record of the current schema of its type, decoded without building JSON:
 * each field a slice of the datum. Holds what codec_decode's natural JSON
 * holds for the same bytes (a string's text, an enum's symbol, a number, a
 * boolean, null), for records whose fields are scalars, unions of null and a
 * scalar, and at most one array of such records. Anything else, an older
 * writer schema, or bytes codec_decode would refuse: codec_decode_flat
 * declines, and the caller takes codec_decode (which says why). */
typedef enum codec_kind { CODEC_V_NULL = 0, CODEC_V_TEXT, CODEC_V_INT, CODEC_V_BOOL } codec_kind_t;

typedef struct codec_val {
    codec_kind_t kind;
    const char *text; /* CODEC_V_TEXT: len bytes (not NUL-terminated), valid UTF-8 without NUL */
    size_t len;
    int64_t num; /* CODEC_V_INT; CODEC_V_BOOL: 0 or 1 */
} codec_val_t;

typedef struct codec_flat {
    codec_val_t *v;  /* the record's fields in schema order, then each array item's fields */
    int nfields;     /* fields of the record */
    int item_fields; /* fields of an array item (0: the schema has no array of records) */
    int items;       /* items of that array */
    int cap;         /* entries allocated in v */
} codec_flat_t;

/* Decodes buf (single-object encoded) into f, whose storage is reused from
 * call to call (zero it first; codec_flat_free releases it). The slices point
 * into buf. Returns 0, or -1 when the flat form declines (see above). */
int codec_decode_flat(const void *buf, size_t len, codec_type_t type, codec_flat_t *f);
void codec_flat_free(codec_flat_t *f);

/* The index in a flat record of the current schema of type of field, or with
 * item non-NULL of field item of the array items' records; -1 when absent. */
int codec_flat_index(codec_type_t type, const char *field, const char *item);

/* Field k of array item i of f. */
static inline const codec_val_t *codec_flat_item(const codec_flat_t *f, int i, int k) {
    return &f->v[f->nfields + i * f->item_fields + k];
}

#endif
