/* Fixtures shared by the unit tests of codec_decode_flat
 * (tests/unit/test_codec_flat*.c): the current event schema's field names,
 * read from its canonical form; the comparison of a flat record with
 * codec_decode's natural JSON of the same bytes; and the sample events.
 *
 * tap.h's counters are static to each test file, so nothing here asserts by
 * itself: where a helper produces TAP lines, it hands each to the test's
 * cff_tap_fn, which calls ok(). Call cff_schema_load after codec_init. */
#ifndef HELMQ_TEST_CODEC_FLAT_FIXTURE_H
#define HELMQ_TEST_CODEC_FLAT_FIXTURE_H

#include "codec.h"

#include <jansson.h>
#include <stddef.h>

/* One TAP assertion: pass or not, and its description. */
typedef void (*cff_tap_fn)(int pass, const char *desc);

/* --- the current event schema's fields, from its canonical form ----------- */

extern const json_t *cff_fields;      /* the event record's "fields" */
extern const json_t *cff_item_fields; /* the fields of the array's item record */
extern const char *cff_array_name;    /* the array field ("history") */

/* Parses codec_canonical(CODEC_EVENT) into the three above (NULL where the
 * schema lacks them); cff_schema_free releases it. */
void cff_schema_load(void);
void cff_schema_free(void);

/* The name of field i of a "fields" list. */
const char *cff_field_name(const json_t *list, size_t i);

/* Whether field i of the event schema is an enum (its text is the schema's
 * symbol, not a slice of the record). */
int cff_field_is_enum(size_t i);

/* --- comparing a flat record with codec_decode's natural JSON ------------- */

/* Compares every field of f, and of each of its history items, with doc (the
 * natural JSON of the same bytes), finding each by codec_flat_index from the
 * schema's field names. With label (and tap), one TAP line per field.
 * Returns the number of mismatches, the first described in why. */
int cff_compare_flat(const codec_flat_t *f, const json_t *doc, cff_tap_fn tap, const char *label, char *why,
                     size_t whyn);

/* --- the sample events ------------------------------------------------------- */

#define CFF_EVENT_ID "00000000-0000-5000-8000-000000000001"
#define CFF_COMMAND_ID "8a4c7a3e-6b47-4c5e-9d2f-6f3f0f1c2b11"
#define CFF_RELEASE_ID "11111111-2222-4333-8444-555555555555"
#define CFF_TENANT_ID "3f1d2c4b-5a69-4e7f-8a9b-0c1d2e3f4a5b"
#define CFF_DIGEST "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"

typedef struct cff_sample {
    char label[96];
    unsigned char *buf; /* single-object encoded, owned */
    size_t len;
    json_t *doc; /* the document it was encoded from, owned */
} cff_sample_t;

#define CFF_MAX_SAMPLES 24
extern cff_sample_t cff_samples[CFF_MAX_SAMPLES];
extern int cff_nsamples;

/* Encodes the sample events into cff_samples, in a fixed order: [0] bare
 * rejected, [1] started (history []), [2] failed (every nullable, one
 * history entry), [3] rolled_back (3 entries, UTF-8, escapes), [4] numbers
 * at the edges, [5] empty strings, [6] long strings, then one per event
 * type. With tap, two TAP lines per sample (built, encoded). Returns
 * cff_nsamples, the samples that encoded; cff_samples_free releases them. */
int cff_samples_build(cff_tap_fn tap);
void cff_samples_free(void);

#endif
