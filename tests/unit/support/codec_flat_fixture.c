/* Fixtures shared by the unit tests of codec_decode_flat: the event
 * schema's fields, the flat-versus-natural-JSON comparison and the sample
 * events. See codec_flat_fixture.h. */
#include "support/codec_flat_fixture.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* One TAP line through tap, formatted here. */
__attribute__((format(printf, 3, 4))) static void tap_line(cff_tap_fn tap, int pass, const char *fmt, ...) {
    char desc[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(desc, sizeof(desc), fmt, ap);
    va_end(ap);
    tap(pass, desc);
}

/* As tap.h's is_int: on a mismatch, both values as a diagnostic. */
__attribute__((format(printf, 4, 5))) static void tap_int(cff_tap_fn tap, long long got, long long want,
                                                          const char *fmt, ...) {
    char desc[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(desc, sizeof(desc), fmt, ap);
    va_end(ap);
    tap(got == want, desc);
    if (got != want)
        printf("#   expected: %lld\n#        got: %lld\n", want, got);
}

/* --- the current event schema's fields, from its canonical form ----------- */

static json_t *canon; /* the parsed Parsing Canonical Form */
const json_t *cff_fields;
const json_t *cff_item_fields;
const char *cff_array_name;

const char *cff_field_name(const json_t *list, size_t i) {
    return json_string_value(json_object_get(json_array_get(list, i), "name"));
}

static int type_is(const json_t *t, const char *name) {
    const char *s = json_is_string(t) ? json_string_value(t) : json_string_value(json_object_get(t, "type"));
    return s && strcmp(s, name) == 0;
}

void cff_schema_load(void) {
    json_error_t e;
    canon = json_loads(codec_canonical(CODEC_EVENT), 0, &e);
    cff_fields = json_object_get(canon, "fields");
    for (size_t i = 0; i < json_array_size(cff_fields); i++) {
        const json_t *t = json_object_get(json_array_get(cff_fields, i), "type");
        if (json_is_object(t) && type_is(t, "array") && type_is(json_object_get(t, "items"), "record")) {
            cff_array_name = cff_field_name(cff_fields, i);
            cff_item_fields = json_object_get(json_object_get(t, "items"), "fields");
        }
    }
}

void cff_schema_free(void) {
    json_decref(canon);
    canon = NULL;
    cff_fields = cff_item_fields = NULL;
    cff_array_name = NULL;
}

int cff_field_is_enum(size_t i) {
    return type_is(json_object_get(json_array_get(cff_fields, i), "type"), "enum");
}
/* --- comparing a flat record with codec_decode's natural JSON ------------- */

static void text_escaped(const char *s, size_t n, char *out, size_t outn) {
    size_t o = 0;
    for (size_t i = 0; i < n && o + 6 < outn; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c < 0x7f && c != '\\')
            out[o++] = (char)c;
        else
            o += (size_t)snprintf(out + o, outn - o, "\\x%02x", c);
        if (i + 1 < n && o + 10 >= outn) {
            o += (size_t)snprintf(out + o, outn - o, "...");
            break;
        }
    }
    out[o < outn ? o : outn - 1] = '\0';
}

static void describe_val(const codec_val_t *v, char *out, size_t n) {
    char t[160];
    switch (v->kind) {
    case CODEC_V_NULL: snprintf(out, n, "null"); break;
    case CODEC_V_TEXT:
        text_escaped(v->text, v->len, t, sizeof(t));
        snprintf(out, n, "text[%zu] \"%s\"", v->len, t);
        break;
    case CODEC_V_INT: snprintf(out, n, "int %" PRId64, v->num); break;
    case CODEC_V_BOOL: snprintf(out, n, "bool %" PRId64, v->num); break;
    default: snprintf(out, n, "kind %d", (int)v->kind); break;
    }
}

static void describe_json(const json_t *j, char *out, size_t n) {
    char *s = j ? json_dumps(j, JSON_ENCODE_ANY) : NULL;
    if (s && strlen(s) > 100)
        snprintf(out, n, "%.100s...", s);
    else
        snprintf(out, n, "%s", s ? s : "(absent)");
    free(s);
}

/* Whether v holds what j, a scalar of natural JSON, holds. */
static int same_value(const codec_val_t *v, const json_t *j) {
    if (!j)
        return 0;
    switch (json_typeof(j)) {
    case JSON_NULL: return v->kind == CODEC_V_NULL;
    case JSON_STRING:
        return v->kind == CODEC_V_TEXT && v->len == json_string_length(j) &&
               (v->len == 0 || memcmp(v->text, json_string_value(j), v->len) == 0);
    case JSON_INTEGER: return v->kind == CODEC_V_INT && v->num == (int64_t)json_integer_value(j);
    case JSON_TRUE: return v->kind == CODEC_V_BOOL && v->num == 1;
    case JSON_FALSE: return v->kind == CODEC_V_BOOL && v->num == 0;
    default: return 0;
    }
}

__attribute__((format(printf, 4, 5))) static void mismatch(int *bad, char *why, size_t whyn, const char *fmt,
                                                           ...) {
    if ((*bad)++ || !why)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, whyn, fmt, ap);
    va_end(ap);
}

/* One value of f against j: with label, one TAP line; a mismatch counts in
 * *bad (the first described in why). */
static void check_value(const codec_val_t *v, const json_t *j, cff_tap_fn tap, const char *label,
                        const char *field, int item, int *bad, char *why, size_t whyn) {
    char vd[256], jd[256];
    int same = same_value(v, j);
    describe_json(j, jd, sizeof(jd));
    if (label) {
        if (item >= 0)
            tap_line(tap, same, "%s: %s[%d].%s is %s", label, cff_array_name, item, field, jd);
        else
            tap_line(tap, same, "%s: %s is %s", label, field, jd);
    }
    if (same)
        return;
    describe_val(v, vd, sizeof(vd));
    if (label)
        printf("#   flat holds %s\n", vd);
    if (item >= 0)
        mismatch(bad, why, whyn, "%s[%d].%s: flat holds %s, codec_decode %s", cff_array_name, item, field, vd,
                 jd);
    else
        mismatch(bad, why, whyn, "%s: flat holds %s, codec_decode %s", field, vd, jd);
}

int cff_compare_flat(const codec_flat_t *f, const json_t *doc, cff_tap_fn tap, const char *label, char *why,
                     size_t whyn) {
    if (!tap)
        label = NULL;
    int bad = 0;
    size_t nf = json_array_size(cff_fields), nk = json_array_size(cff_item_fields);
    const json_t *hist = json_object_get(doc, cff_array_name);
    if (why && whyn)
        why[0] = '\0';
    if (f->nfields != (int)nf)
        mismatch(&bad, why, whyn, "nfields %d, the schema has %zu", f->nfields, nf);
    if (f->item_fields != (int)nk)
        mismatch(&bad, why, whyn, "item_fields %d, a history item has %zu", f->item_fields, nk);
    if (!json_is_array(hist) || f->items != (int)json_array_size(hist))
        mismatch(&bad, why, whyn, "items %d, codec_decode's history has %zu", f->items,
                 json_array_size(hist));
    if (label) {
        tap_int(tap, f->nfields, (long long)nf, "%s: nfields is the schema's field count", label);
        tap_int(tap, f->items, (long long)json_array_size(hist), "%s: items is the history's length", label);
    }
    if (bad && (f->nfields != (int)nf || f->item_fields != (int)nk))
        return bad; /* the indexes below would be meaningless */
    for (size_t i = 0; i < nf; i++) {
        const char *name = cff_field_name(cff_fields, i);
        int idx = codec_flat_index(CODEC_EVENT, name, NULL);
        if (idx != (int)i) {
            mismatch(&bad, why, whyn, "codec_flat_index(%s) is %d, not its schema position %zu", name, idx,
                     i);
            if (label)
                tap_line(tap, 0, "%s: codec_flat_index(%s) is %d, its position is %zu", label, name, idx, i);
            continue;
        }
        if (strcmp(name, cff_array_name) == 0)
            continue; /* the items follow the record's fields */
        check_value(&f->v[idx], json_object_get(doc, name), tap, label, name, -1, &bad, why, whyn);
    }
    int items = f->items < (int)json_array_size(hist) ? f->items : (int)json_array_size(hist);
    for (int it = 0; it < items; it++) {
        const json_t *jit = json_array_get(hist, (size_t)it);
        for (size_t k = 0; k < nk; k++) {
            const char *name = cff_field_name(cff_item_fields, k);
            int idx = codec_flat_index(CODEC_EVENT, cff_array_name, name);
            if (idx != (int)k) {
                mismatch(&bad, why, whyn, "codec_flat_index(%s, %s) is %d, not %zu", cff_array_name, name,
                         idx, k);
                if (label)
                    tap_line(tap, 0, "%s: codec_flat_index(%s, %s) is %d, its position is %zu", label,
                             cff_array_name, name, idx, k);
                continue;
            }
            check_value(codec_flat_item(f, it, idx), json_object_get(jit, name), tap, label, name, it, &bad,
                        why, whyn);
        }
    }
    return bad;
}
/* --- the sample events ------------------------------------------------------- */

static json_t *revision_item(json_int_t rev, const char *status, const char *app, const char *op,
                             const char *desc, json_int_t created) {
    return json_pack("{s:I,s:s,s:s,s:s,s:s?,s:s,s:s?,s:I}", "revision", rev, "status", status, "chartName",
                     "matih-ai-service", "chartVersion", "1.2.3", "appVersion", app, "operation", op,
                     "description", desc, "createdAt", created);
}

/* A rejected event: every nullable field and the history absent (their
 * defaults apply). */
static json_t *event_bare(void) {
    return json_pack("{s:s,s:s,s:s,s:b,s:s,s:s,s:s,s:s,s:s,s:i,s:s,s:I,s:I}", "eventId", CFF_EVENT_ID,
                     "commandId", CFF_COMMAND_ID, "eventType", "rejected", "terminal", 1, "tenantId",
                     CFF_TENANT_ID, "namespace", "tenant-acme", "releaseName", "acme-ai-service", "operation",
                     "install", "status", "rejected", "revision", 0, "performedBy", "alice", "occurredAt",
                     (json_int_t)1764000000123LL, "requestedAt", (json_int_t)1764000000000LL);
}

/* A started event as the bench writes it: nullable fields explicitly null
 * or set, an empty history. */
static json_t *event_started(void) {
    return json_pack("{s:s,s:s,s:s,s:b,s:s,s:s,s:s,s:s,s:s,s:s,s:i,s:s,s:s,s:n,s:n,s:s,s:I,s:I,"
                     "s:n,s:n,s:n,s:[],s:n,s:n}",
                     "eventId", CFF_EVENT_ID, "commandId", CFF_COMMAND_ID, "eventType", "started", "terminal",
                     0, "releaseId", CFF_RELEASE_ID, "tenantId", CFF_TENANT_ID, "namespace", "tenant-acme",
                     "releaseName", "acme-ai-service", "operation", "upgrade", "status", "pending-upgrade",
                     "revision", 1, "chartName", "matih-ai-service", "chartVersion", "1.0.1", "appVersion",
                     "description", "performedBy", "bench", "occurredAt", (json_int_t)1764000000200LL,
                     "requestedAt", (json_int_t)1764000000195LL, "reason", "valuesDigest", "valuesRedacted",
                     "history", "errorCode", "errorMessage");
}

/* Every nullable field set, one history entry. */
static json_t *event_full(void) {
    return json_pack(
        "{s:s,s:s,s:s,s:b,s:s,s:s,s:s,s:s,s:s,s:s,s:i,s:s,s:s,s:s,s:s,s:s,s:I,s:I,"
        "s:s,s:s,s:s,s:[o],s:s,s:s}",
        "eventId", CFF_EVENT_ID, "commandId", CFF_COMMAND_ID, "eventType", "failed", "terminal", 1,
        "releaseId", CFF_RELEASE_ID, "tenantId", CFF_TENANT_ID, "namespace", "tenant-acme", "releaseName",
        "acme-ai-service", "operation", "install", "status", "failed", "revision", 1, "chartName",
        "matih-ai-service", "chartVersion", "1.0.0", "appVersion", "2.0.0", "description", "Install failed",
        "performedBy", "alice", "occurredAt", (json_int_t)1764000000300LL, "requestedAt",
        (json_int_t)1764000000000LL, "reason", "cleanup", "valuesDigest", CFF_DIGEST, "valuesRedacted",
        "{\"replicaCount\":2}", "history",
        revision_item(1, "failed", "2.0.0", "install", "Install failed", 1764000000300LL), "errorCode",
        "HELM_FAILED", "errorMessage", "Error: timed out waiting for the condition");
}

/* Three history entries (with and without their nullable fields), non-ASCII
 * UTF-8 (2, 3 and 4-byte sequences) and tab, newline, backslash and quotes. */
static json_t *event_rich(void) {
    return json_pack(
        "{s:s,s:s,s:s,s:b,s:s,s:s,s:s,s:s,s:s,s:s,s:i,s:s,s:s,s:s,s:s,s:s,s:I,s:I,"
        "s:s,s:s,s:s,s:[o,o,o],s:s,s:s}",
        "eventId", CFF_EVENT_ID, "commandId", CFF_COMMAND_ID, "eventType", "rolled_back", "terminal", 1,
        "releaseId", CFF_RELEASE_ID, "tenantId", CFF_TENANT_ID, "namespace", "équipe-données", "releaseName",
        "日本語-リリース", "operation", "upgrade", "status", "deployed", "revision", 3, "chartName",
        "chärt-🚀", "chartVersion", "1.0.0-βeta", "appVersion", "2.0.0", "description",
        "Mise à jour annulée — ✓ 🚀 𝄞", "performedBy", "zoë\tthe \"admin\"", "occurredAt",
        (json_int_t)1764000000400LL, "requestedAt", (json_int_t)1764000000000LL, "reason",
        "line one\nline two\r\n\ttabbed \\ back\\slash \"q\"", "valuesDigest", CFF_DIGEST, "valuesRedacted",
        "{\"password\":\"[REDACTED]\",\"path\":\"C:\\\\tmp\\n\"}", "history",
        revision_item(2, "failed", "2.0.1", "upgrade", "Upgrade \"failed\"\n\ttimeout", 1764000000350LL),
        revision_item(1, "superseded", NULL, "install", NULL, 1764000000100LL),
        revision_item(3, "deployed", "ünïcödé ✓", "atomic-rollback", "Rollback to 1 — 完了 🚀",
                      1764000000400LL),
        "errorCode", "TIMEOUT", "errorMessage", "Error: UPGRADE FAILED:\n\tcontext deadline exceeded\\");
}

/* Numbers at the edges of int and long, negative ones among them. */
static json_t *event_numbers(void) {
    return json_pack("{s:s,s:s,s:s,s:b,s:s,s:s,s:s,s:s,s:s,s:I,s:s,s:I,s:I,s:[o,o,o]}", "eventId",
                     CFF_EVENT_ID, "commandId", CFF_COMMAND_ID, "eventType", "succeeded", "terminal", 0,
                     "tenantId", CFF_TENANT_ID, "namespace", "n", "releaseName", "r", "operation", "rollback",
                     "status", "deployed", "revision", (json_int_t)INT32_MAX, "performedBy", "p",
                     "occurredAt", (json_int_t)INT64_MAX, "requestedAt", (json_int_t)INT64_MIN, "history",
                     revision_item(INT32_MIN, "a", NULL, "rollback", NULL, -1),
                     revision_item(-1, "b", "x", "rollback", "y", (json_int_t)INT64_MIN),
                     revision_item(0, "c", NULL, "rollback", NULL, (json_int_t)4102444800000LL));
}

/* Empty strings wherever a string goes, a negative revision. */
static json_t *event_empty_strings(void) {
    return json_pack("{s:s,s:s,s:s,s:b,s:s,s:s,s:s,s:s,s:s,s:s,s:i,s:s,s:s,s:s,s:s,s:s,s:I,s:I,"
                     "s:s,s:s,s:s,s:[o],s:s,s:s}",
                     "eventId", "", "commandId", "", "eventType", "accepted", "terminal", 0, "releaseId", "",
                     "tenantId", "", "namespace", "", "releaseName", "", "operation", "uninstall", "status",
                     "", "revision", -1, "chartName", "", "chartVersion", "", "appVersion", "", "description",
                     "", "performedBy", "", "occurredAt", (json_int_t)0, "requestedAt", (json_int_t)-1,
                     "reason", "", "valuesDigest", "", "valuesRedacted", "", "history",
                     revision_item(0, "", "", "", "", 0), "errorCode", "", "errorMessage", "");
}

/* Strings long enough for 2- and 3-byte length varints. */
static json_t *event_long_strings(void) {
    static char mid[300], big[20000];
    memset(mid, 'm', sizeof(mid) - 1);
    memset(big, 'b', sizeof(big) - 1);
    big[100] = '\n';
    big[5000] = '\\';
    json_t *ev = event_full();
    json_object_set_new(ev, "description", json_string(mid));
    json_object_set_new(ev, "valuesRedacted", json_string(big));
    json_object_set_new(json_array_get(json_object_get(ev, "history"), 0), "description", json_string(mid));
    return ev;
}

cff_sample_t cff_samples[CFF_MAX_SAMPLES];
int cff_nsamples;

static void add_sample(cff_tap_fn tap, const char *label, json_t *ev) {
    char err[512] = "";
    cff_sample_t *s = &cff_samples[cff_nsamples];
    snprintf(s->label, sizeof(s->label), "%s", label);
    if (tap)
        tap_line(tap, ev != NULL, "%s: json_pack built it", label);
    int rc = ev ? codec_encode(CODEC_EVENT, ev, &s->buf, &s->len, err, sizeof(err)) : -1;
    if (tap)
        tap_int(tap, rc, 0, "%s: codec_encode (%s)", label, rc ? err : "ok");
    if (rc == 0) {
        s->doc = ev; /* kept for test_codec_write.c's byte comparison */
        cff_nsamples++;
    } else
        json_decref(ev);
}

int cff_samples_build(cff_tap_fn tap) {
    static const char *types[] = {"accepted", "started", "succeeded", "failed", "rolled_back", "rejected"};
    static const char *ops[] = {"install", "upgrade", "rollback", "uninstall"};
    add_sample(tap, "bare rejected event (nullables and history absent)", event_bare());
    add_sample(tap, "started event (nullables null, history [])", event_started());
    add_sample(tap, "failed event (every nullable set, 1 history entry)", event_full());
    add_sample(tap, "rolled_back event (3 history entries, UTF-8, escapes)", event_rich());
    add_sample(tap, "numbers at the edges of int and long", event_numbers());
    add_sample(tap, "empty strings, negative revision", event_empty_strings());
    add_sample(tap, "long strings (multi-byte lengths)", event_long_strings());
    for (int i = 0; i < 6; i++) {
        char label[96];
        json_t *ev = event_started();
        json_object_set_new(ev, "eventType", json_string(types[i]));
        json_object_set_new(ev, "operation", json_string(ops[(i + 1) % 4]));
        json_object_set_new(ev, "terminal", json_boolean(i % 2));
        snprintf(label, sizeof(label), "enums %s/%s", types[i], ops[(i + 1) % 4]);
        add_sample(tap, label, ev);
    }
    return cff_nsamples;
}

void cff_samples_free(void) {
    for (int s = 0; s < cff_nsamples; s++) {
        free(cff_samples[s].buf);
        json_decref(cff_samples[s].doc);
    }
    memset(cff_samples, 0, sizeof(cff_samples));
    cff_nsamples = 0;
}