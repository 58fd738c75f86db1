/* Unit tests of codec_decode_flat, the projector's decoder in place, on the
 * records it takes: on every sample event each field of the current event
 * schema (and of each history item) holds what codec_decode's natural JSON
 * holds for the same bytes, and every string is a slice of the record; the
 * storage is reused from record to record; codec_flat_index finds each field
 * at its schema position. The field names are read from the schema itself
 * (its canonical form), never listed here. What it declines is in
 * test_codec_flat_declines.c; the fixtures in support/codec_flat_fixture.c. */
#include "codec.h"
#include "support/codec_flat_fixture.h"
#include "tap.h"

#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>

/* The fixtures' TAP lines, counted with this file's. */
static void tap_report(int pass, const char *desc) {
    ok(pass, "%s", desc);
}

/* --- 1. events: every field is codec_decode's ------------------------------- */

static void test_values(codec_flat_t *f) {
    cff_samples_build(tap_report);
    for (int s = 0; s < cff_nsamples; s++) {
        const cff_sample_t *sm = &cff_samples[s];
        codec_type_t t = CODEC_COMMAND;
        json_t *doc = NULL;
        char err[512] = "";
        int rc = codec_decode(sm->buf, sm->len, &t, &doc, err, sizeof(err));
        ok(rc == 0 && t == CODEC_EVENT, "%s: codec_decode takes it as an event (%s)", sm->label,
           rc ? err : "ok");
        int frc = codec_decode_flat(sm->buf, sm->len, CODEC_EVENT, f);
        is_int(frc, 0, "%s: codec_decode_flat takes it", sm->label);
        if (rc != 0 || frc != 0) {
            json_decref(doc);
            continue;
        }
        cff_compare_flat(f, doc, tap_report, sm->label, NULL, 0);
        /* The strings are slices of the record; the enums the schema's symbols. */
        int inside = 1;
        for (size_t i = 0; i < json_array_size(cff_fields); i++) {
            const codec_val_t *v = &f->v[i];
            if (v->kind == CODEC_V_TEXT && !cff_field_is_enum(i) &&
                (v->text < (const char *)sm->buf + 10 || v->text + v->len > (const char *)sm->buf + sm->len))
                inside = 0;
        }
        for (int it = 0; it < f->items; it++)
            for (int k = 0; k < f->item_fields; k++) {
                const codec_val_t *v = codec_flat_item(f, it, k);
                if (v->kind == CODEC_V_TEXT && (v->text < (const char *)sm->buf + 10 ||
                                                v->text + v->len > (const char *)sm->buf + sm->len))
                    inside = 0;
            }
        ok(inside, "%s: every string is a slice of the record's bytes", sm->label);
        json_decref(doc);
    }
}

/* --- 2. storage reuse ------------------------------------------------------ */

static void test_reuse(void) {
    codec_flat_t f;
    memset(&f, 0, sizeof(f));
    const cff_sample_t *three = &cff_samples[3], *none = &cff_samples[1];
    char why[512] = "";
    is_int(codec_decode_flat(three->buf, three->len, CODEC_EVENT, &f), 0, "reuse: a 3-history event");
    is_int(f.items, 3, "reuse: 3 items");
    ok(f.cap >= f.nfields + f.items * f.item_fields, "reuse: cap %d holds the fields and the items", f.cap);
    int cap = f.cap;
    is_int(codec_decode_flat(none->buf, none->len, CODEC_EVENT, &f), 0, "reuse: then a 0-history event");
    is_int(f.items, 0, "reuse: no items left from the first");
    ok(f.cap >= cap, "reuse: the storage is kept (cap %d, was %d)", f.cap, cap);
    codec_type_t t;
    json_t *doc = NULL;
    char err[512];
    if (codec_decode(none->buf, none->len, &t, &doc, err, sizeof(err)) == 0) {
        int n = cff_compare_flat(&f, doc, NULL, NULL, why, sizeof(why));
        ok(n == 0, "reuse: the second event's values are its own%s%s", n ? ": " : "", why);
        json_decref(doc);
    }
    /* A refused record between two good ones leaves nothing behind. */
    is_int(codec_decode_flat(three->buf, three->len - 1, CODEC_EVENT, &f), -1, "reuse: a truncated event");
    is_int(codec_decode_flat(three->buf, three->len, CODEC_EVENT, &f), 0, "reuse: the 3-history event again");
    if (codec_decode(three->buf, three->len, &t, &doc, err, sizeof(err)) == 0) {
        int n = cff_compare_flat(&f, doc, NULL, NULL, why, sizeof(why));
        ok(n == 0, "reuse: its values are its own%s%s", n ? ": " : "", why);
        json_decref(doc);
    }
    codec_flat_free(&f);
    ok(f.v == NULL && f.nfields == 0 && f.item_fields == 0 && f.items == 0 && f.cap == 0,
       "codec_flat_free leaves it zeroed");
    codec_flat_free(&f);
    ok(f.v == NULL && f.cap == 0, "codec_flat_free twice is harmless");
    is_int(codec_decode_flat(three->buf, three->len, CODEC_EVENT, &f), 0,
           "after free: decodes from zero again");
    is_int(f.items, 3, "after free: 3 items");
    codec_flat_free(&f);
}

/* --- 3. codec_flat_index ----------------------------------------------------- */

static void test_index(void) {
    size_t nf = json_array_size(cff_fields), nk = json_array_size(cff_item_fields);
    int in_order = 1;
    for (size_t i = 0; i < nf; i++)
        if (codec_flat_index(CODEC_EVENT, cff_field_name(cff_fields, i), NULL) != (int)i)
            in_order = 0;
    ok(in_order, "every event field's index is its position in the schema");
    in_order = 1;
    for (size_t k = 0; k < nk; k++)
        if (codec_flat_index(CODEC_EVENT, cff_array_name, cff_field_name(cff_item_fields, k)) != (int)k)
            in_order = 0;
    ok(in_order, "every history item field's index is its position in the item record");
    is_int(codec_flat_index(CODEC_EVENT, "eventId", NULL), 0, "eventId is field 0");
    is_int(codec_flat_index(CODEC_EVENT, "noSuchField", NULL), -1, "an unknown field: -1");
    is_int(codec_flat_index(CODEC_EVENT, "", NULL), -1, "an empty field name: -1");
    is_int(codec_flat_index(CODEC_EVENT, "Eventid", NULL), -1, "names are case-sensitive: -1");
    is_int(codec_flat_index(CODEC_EVENT, "history", "noSuchItem"), -1, "history with an unknown item: -1");
    is_int(codec_flat_index(CODEC_EVENT, "noSuchField", "revision"), -1, "an unknown array with an item: -1");
    is_int(codec_flat_index(CODEC_EVENT, "revision", "revision"), -1, "a scalar int used as the array: -1");
    is_int(codec_flat_index(CODEC_EVENT, "namespace", "status"), -1, "a scalar string used as the array: -1");
    is_int(codec_flat_index(CODEC_EVENT, "chartName", "chartName"), -1, "a nullable used as the array: -1");
    is_int(codec_flat_index(CODEC_EVENT, "eventType", "revision"), -1, "an enum used as the array: -1");
    is_int(codec_flat_index(CODEC_COMMAND, "operation", "chartName"), -1,
           "the command's union of records is no array: -1");
    is_int(codec_flat_index(CODEC_COMMAND, "commandId", NULL), 0, "the command's commandId is its field 0");
}

int main(void) {
    char err[512] = "";
    is_int(codec_init(err, sizeof(err)), 0, "codec_init (%s)", err);
    cff_schema_load();
    ok(json_array_size(cff_fields) >= 20, "the event schema has %zu fields", json_array_size(cff_fields));
    is_str(cff_array_name, "history", "its array of records is history");
    ok(json_array_size(cff_item_fields) >= 5, "a history item has %zu fields",
       json_array_size(cff_item_fields));
    if (!cff_array_name || !cff_item_fields)
        return tap_done(); /* failed above: no array of records to test */
    codec_flat_t f;
    memset(&f, 0, sizeof(f));
    test_values(&f);
    codec_flat_free(&f);
    if (cff_nsamples < 7) {
        ok(0, "the sample events were built");
        return tap_done();
    }
    test_reuse();
    test_index();
    cff_samples_free();
    cff_schema_free();
    codec_term();
    return tap_done();
}
