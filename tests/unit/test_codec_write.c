/* Unit tests of codec_write.c, the direct encoder behind codec_encode,
 * against codec_encode_reference (the same documents through avro-c's
 * generic values and avro_value_write): for every command and event
 * document the other codec tests and the fixtures use, and for generated
 * variations of each (every field absent, null, empty, long enough for 2-
 * and 3-byte length varints, non-ASCII, with a NUL, at the edges of int and
 * long, of the wrong JSON type; every enum symbol and union branch; history
 * arrays of 0, 1 and many entries; random combinations of these), both
 * encoders must either produce the same bytes or refuse the document with
 * the same errstr. The schemas have no map type, so maps are not reached. */
#include "codec.h"
#include "codec_write.h"
#include "support/codec_flat_fixture.h"
#include "tap.h"

#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* --- comparing the two encoders on one document --------------------------- */

static int n_same_bytes, n_same_refusal;

/* 1 when both encoders agree on doc (same bytes, or both refuse it with the
 * same errstr); otherwise 0 with what differed in why. */
static int agree(codec_type_t type, const json_t *doc, char *why, size_t whyn) {
    char e1[512] = "", e2[512] = "";
    unsigned char *b1 = NULL, *b2 = NULL;
    size_t l1 = 0, l2 = 0;
    int r1 = codec_encode(type, doc, &b1, &l1, e1, sizeof(e1));
    int r2 = codec_encode_reference(type, doc, &b2, &l2, e2, sizeof(e2));
    int same = 0;
    if (r1 != r2)
        snprintf(why, whyn, "direct returned %d (%s), avro-c %d (%s)", r1, r1 ? e1 : "ok", r2,
                 r2 ? e2 : "ok");
    else if (r1 != 0 && strcmp(e1, e2) != 0)
        snprintf(why, whyn, "both refuse it, but direct says \"%s\", avro-c \"%s\"", e1, e2);
    else if (r1 == 0 && (l1 != l2 || memcmp(b1, b2, l1) != 0)) {
        size_t k = 0;
        while (k < l1 && k < l2 && b1[k] == b2[k])
            k++;
        snprintf(why, whyn, "%zu vs %zu bytes, first difference at byte %zu", l1, l2, k);
    } else {
        same = 1;
        if (r1 == 0)
            n_same_bytes++;
        else
            n_same_refusal++;
    }
    if (r1 == 0)
        free(b1);
    if (r2 == 0)
        free(b2);
    return same;
}

static void check_doc(codec_type_t type, const json_t *doc, const char *label) {
    char why[1200] = "";
    ok(agree(type, doc, why, sizeof(why)), "%s: same bytes or same refusal%s%s", label, *why ? ": " : "",
       why);
}

/* --- the variations ----------------------------------------------------------- */

#define N_VALUES 48

static char *long_mid, *long_big; /* 100 and 20,000 bytes: 2- and 3-byte lengths */

/* Variation v (0 <= v < N_VALUES) of a field's value, a new reference; NULL
 * is "the field absent". */
static json_t *variant(int v) {
    static const char *symbols[] = {"install",     "upgrade",  "rollback",  "uninstall",
                                    "accepted",    "started",  "succeeded", "failed",
                                    "rolled_back", "rejected", "INSTALL",   "explode"};
    static const json_int_t ints[] = {0,
                                      1,
                                      -1,
                                      63,
                                      64,
                                      -64,
                                      -65,
                                      8191,
                                      8192,
                                      -8193,
                                      INT32_MAX,
                                      INT32_MIN,
                                      (json_int_t)INT32_MAX + 1,
                                      (json_int_t)INT32_MIN - 1,
                                      INT64_MAX,
                                      INT64_MIN,
                                      1764000000000LL};
    const int nsym = (int)(sizeof(symbols) / sizeof(symbols[0]));
    const int nint = (int)(sizeof(ints) / sizeof(ints[0]));
    if (v < nsym)
        return json_string(symbols[v]);
    v -= nsym;
    if (v < nint)
        return json_integer(ints[v]);
    v -= nint;
    switch (v) {
    case 0: return NULL;
    case 1: return json_null();
    case 2: return json_string("");
    case 3: return json_string(long_mid);
    case 4: return json_string(long_big);
    case 5: return json_string("équipe — 日本語 ✓ 🚀 𝄞");
    case 6: return json_stringn("a\0b", 3);
    case 7: return json_real(1.5);
    case 8: return json_true();
    case 9: return json_false();
    case 10: return json_array();
    case 11: return json_pack("[i]", 1);
    case 12: return json_object();
    case 13: return json_pack("{s:i}", "a", 1);
    case 14: return json_string("line\n\ttab \"q\" \\");
    case 15: return json_string("x");
    case 16: return json_integer(-123456789012LL);
    case 17: return json_string("00000000-0000-5000-8000-000000000001");
    case 18: return json_real(-0.0);
    default: return json_null();
    }
}

/* A copy of base with field name set to variant v (deleted when absent). */
static json_t *with_field(const json_t *base, const char *name, int v) {
    json_t *doc = json_deep_copy(base);
    json_t *val = variant(v);
    if (val)
        json_object_set_new(doc, name, val);
    else
        json_object_del(doc, name);
    return doc;
}

/* Every variation of every field of base (and of the fields its "history"
 * items have), plus those the schema has that base lacks (fields). One TAP
 * line per field; returns the number of documents compared. */
static int vary_fields(codec_type_t type, const json_t *base, const char *label) {
    static const char *also[] = {"operation", "description", "releaseId",   "appVersion",   "valuesOverride",
                                 "timeout",   "atomic",      "waitForJobs", "revision",     "reason",
                                 "history",   "chartName",   "errorCode",   "valuesDigest", "bogus"};
    json_t *names = json_array();
    const char *key;
    json_t *val;
    int n = 0;
    json_object_foreach((json_t *)base, key, val) json_array_append_new(names, json_string(key));
    for (size_t k = 0; k < sizeof(also) / sizeof(also[0]); k++)
        if (!json_object_get(base, also[k]))
            json_array_append_new(names, json_string(also[k]));
    for (size_t f = 0; f < json_array_size(names); f++) {
        const char *name = json_string_value(json_array_get(names, f));
        char why[1200] = "";
        int all = 1;
        for (int v = 0; v < N_VALUES && all; v++) {
            json_t *doc = with_field(base, name, v);
            all = agree(type, doc, why, sizeof(why));
            json_decref(doc);
            n++;
        }
        ok(all, "%s: every value of %s%s%s", label, name, *why ? ": " : "", why);
    }
    /* The fields of the first history item, each varied the same way. */
    const json_t *hist = json_object_get(base, "history");
    const json_t *item = json_array_get(hist, 0);
    if (item) {
        json_object_foreach((json_t *)item, key, val) {
            char why[1200] = "";
            int all = 1;
            for (int v = 0; v < N_VALUES && all; v++) {
                json_t *doc = json_deep_copy(base);
                json_t *it = json_array_get(json_object_get(doc, "history"), 0);
                json_t *x = variant(v);
                if (x)
                    json_object_set_new(it, key, x);
                else
                    json_object_del(it, key);
                all = agree(type, doc, why, sizeof(why));
                json_decref(doc);
                n++;
            }
            ok(all, "%s: every value of history[0].%s%s%s", label, key, *why ? ": " : "", why);
        }
    }
    json_decref(names);
    return n;
}

/* --- the documents ---------------------------------------------------------- */

static json_t *load(const char *text) {
    json_error_t e;
    json_t *j = json_loads(text, 0, &e);
    ok(j != NULL, "parse %.50s (%s)", text, j ? "ok" : e.text);
    return j;
}

/* test_codec.c's seed command, the v1 fixture, and one command of each
 * other operation. */
static int commands(json_t **out) {
    int n = 0;
    out[n++] =
        load("{\"operation\":\"install\",\"commandId\":\"8a4c7a3e-6b47-4c5e-9d2f-6f3f0f1c2b11\","
             "\"tenantId\":\"3f1d2c4b-5a69-4e7f-8a9b-0c1d2e3f4a5b\",\"namespace\":\"tenant-acme\","
             "\"releaseName\":\"acme-ai-service\",\"performedBy\":\"alice\",\"requestedAt\":1764000000000,"
             "\"chartName\":\"matih-ai-service\",\"chartVersion\":\"1.0.0\",\"appVersion\":\"2.0.0\","
             "\"valuesOverride\":\"{\\\"replicaCount\\\":2}\",\"timeout\":600,\"atomic\":true,"
             "\"waitForJobs\":true}");
    json_error_t e;
    out[n] = json_load_file("tests/fixtures/command-v1-install.json", 0, &e);
    ok(out[n] != NULL, "tests/fixtures/command-v1-install.json is readable");
    if (out[n])
        n++;
    out[n++] = load("{\"operation\":\"upgrade\",\"commandId\":\"c2\",\"tenantId\":\"t\",\"namespace\":\"n\","
                    "\"releaseName\":\"r\",\"performedBy\":\"bob\",\"requestedAt\":-5,\"description\":\"d\","
                    "\"releaseId\":\"11111111-2222-4333-8444-555555555555\",\"chartName\":\"c\","
                    "\"chartVersion\":\"2.0.0\",\"valuesOverride\":\"{}\"}");
    out[n++] = load("{\"operation\":\"rollback\",\"commandId\":\"c3\",\"tenantId\":\"t\",\"namespace\":\"n\","
                    "\"releaseName\":\"r\",\"performedBy\":\"carol\",\"requestedAt\":1,\"revision\":2,"
                    "\"timeout\":30,\"waitForJobs\":true}");
    out[n++] = load("{\"operation\":\"rollback\",\"commandId\":\"c4\",\"tenantId\":\"t\",\"namespace\":\"n\","
                    "\"releaseName\":\"r\",\"performedBy\":\"carol\",\"requestedAt\":1}");
    out[n++] =
        load("{\"operation\":\"uninstall\",\"commandId\":\"c5\",\"tenantId\":\"t\",\"namespace\":\"n\","
             "\"releaseName\":\"r\",\"performedBy\":\"dave\",\"requestedAt\":0,\"reason\":\"gone\"}");
    return n;
}

/* A history item of revision rev. */
static json_t *item(json_int_t rev) {
    return json_pack("{s:I,s:s,s:s,s:s,s:s,s:I}", "revision", rev, "status", "superseded", "chartName", "c",
                     "chartVersion", "1.0.0", "operation", "upgrade", "createdAt", rev * 1000 - 7);
}

/* test_codec.c's events, the projector fixtures' samples, and histories of
 * 0, 1 and 70 entries (70 takes a 2-byte count). */
static int events(json_t **out) {
    int n = 0;
    out[n++] = load(
        "{\"eventId\":\"00000000-0000-5000-8000-000000000001\",\"commandId\":\"8a4c7a3e-6b47-4c5e-9d2f-"
        "6f3f0f1c2b11\",\"eventType\":\"succeeded\",\"terminal\":true,\"releaseId\":\"11111111-2222-4333-"
        "8444-555555555555\",\"tenantId\":\"3f1d2c4b-5a69-4e7f-8a9b-0c1d2e3f4a5b\",\"namespace\":\"tenant-"
        "acme\",\"releaseName\":\"a\",\"operation\":\"install\",\"status\":\"deployed\",\"revision\":1,"
        "\"performedBy\":\"alice\",\"occurredAt\":1,\"requestedAt\":1,\"history\":[{\"revision\":1,"
        "\"status\":\"deployed\",\"chartName\":\"c\",\"chartVersion\":\"1.0.0\",\"operation\":\"install\","
        "\"createdAt\":1}]}");
    out[n++] = load("{\"eventId\":\"e\",\"commandId\":\"c\",\"eventType\":\"rejected\",\"terminal\":true,"
                    "\"tenantId\":\"t\",\"namespace\":\"n\",\"releaseName\":\"r\",\"operation\":\"install\","
                    "\"status\":\"rejected\",\"revision\":0,\"performedBy\":\"p\",\"occurredAt\":1,"
                    "\"requestedAt\":1}");
    for (int s = 0; s < cff_nsamples; s++)
        out[n++] = json_incref(cff_samples[s].doc);
    for (int len = 0; len <= 70; len += len < 2 ? 1 : 68) {
        json_t *ev = json_deep_copy(out[0]);
        json_t *h = json_array();
        for (int i = 0; i < len; i++)
            json_array_append_new(h, item(i % 2 ? -i * 1000003 : i * 1000003));
        json_object_set_new(ev, "history", h);
        out[n++] = ev;
    }
    return n;
}

/* --- random combinations ----------------------------------------------------- */

static uint64_t rng = 0x9e3779b97f4a7c15ULL;
static unsigned next_rand(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (unsigned)(rng >> 11);
}

/* n documents, each base[i] with three random fields set to random
 * variations; returns how many the two encoders disagreed on. */
static int random_mix(codec_type_t type, json_t **base, int nbase, int n, char *why, size_t whyn) {
    int bad = 0;
    for (int k = 0; k < n; k++) {
        json_t *doc = json_deep_copy(base[next_rand() % (unsigned)nbase]);
        size_t nf = json_object_size(doc);
        for (int m = 0; m < 3 && nf > 0; m++) {
            void *it = json_object_iter(doc);
            for (unsigned skip = next_rand() % (unsigned)nf; skip > 0 && it; skip--)
                it = json_object_iter_next(doc, it);
            json_t *x = variant((int)(next_rand() % N_VALUES));
            const char *key = json_object_iter_key(it);
            if (x)
                json_object_set_new(doc, key, x);
            else {
                json_object_del(doc, key);
                nf--;
            }
        }
        if (!agree(type, doc, why, whyn))
            bad++;
        json_decref(doc);
    }
    return bad;
}

int main(void) {
    char err[512] = "";
    is_int(codec_init(err, sizeof(err)), 0, "codec_init (%s)", err);
    cff_schema_load();
    ok(cff_samples_build(NULL) >= 10, "the projector fixtures' sample events encode");
    long_mid = malloc(101);
    long_big = malloc(20001);
    memset(long_mid, 'm', 100);
    long_mid[100] = '\0';
    memset(long_big, 'b', 20000);
    long_big[20000] = '\0';

    json_t *cmd[16], *ev[64];
    int ncmd = commands(cmd), nev = events(ev);
    char label[128];
    for (int i = 0; i < ncmd; i++) {
        snprintf(label, sizeof(label), "command %d (%s)", i,
                 json_string_value(json_object_get(cmd[i], "operation")));
        check_doc(CODEC_COMMAND, cmd[i], label);
    }
    for (int i = 0; i < nev; i++) {
        snprintf(label, sizeof(label), "event %d (%s, %zu history)", i,
                 json_string_value(json_object_get(ev[i], "eventType")),
                 json_array_size(json_object_get(ev[i], "history")));
        check_doc(CODEC_EVENT, ev[i], label);
    }
    /* The fixture's bytes were codec_encode's; the reference agrees. */
    for (int s = 0; s < cff_nsamples; s++) {
        unsigned char *ref = NULL;
        size_t len = 0;
        int rc = codec_encode_reference(CODEC_EVENT, cff_samples[s].doc, &ref, &len, err, sizeof(err));
        ok(rc == 0 && len == cff_samples[s].len && memcmp(ref, cff_samples[s].buf, len) == 0,
           "%s: the fixture's bytes are the reference encoder's", cff_samples[s].label);
        if (rc == 0)
            free(ref);
    }
    /* An event is not a command and the reverse; neither is a non-object. */
    check_doc(CODEC_EVENT, cmd[0], "a command as an event");
    check_doc(CODEC_COMMAND, ev[0], "an event as a command");
    json_t *odd[] = {json_array(), json_string("x"), json_object(), json_null()};
    for (int i = 0; i < 4; i++) {
        snprintf(label, sizeof(label), "non-record document %d", i);
        check_doc(CODEC_COMMAND, odd[i], label);
        check_doc(CODEC_EVENT, odd[i], label);
        json_decref(odd[i]);
    }

    int compared = 0;
    for (int i = 0; i < ncmd; i++) {
        snprintf(label, sizeof(label), "command %d", i);
        compared += vary_fields(CODEC_COMMAND, cmd[i], label);
    }
    for (int i = 0; i < nev; i++) {
        snprintf(label, sizeof(label), "event %d", i);
        compared += vary_fields(CODEC_EVENT, ev[i], label);
    }
    char why[1200] = "";
    is_int(random_mix(CODEC_COMMAND, cmd, ncmd, 3000, why, sizeof(why)), 0,
           "3000 commands with 3 random fields varied: all agree %s", why);
    *why = '\0';
    is_int(random_mix(CODEC_EVENT, ev, nev, 3000, why, sizeof(why)), 0,
           "3000 events with 3 random fields varied: all agree %s", why);
    printf("# %d field variations compared; %d documents encoded to the same bytes, %d refused alike\n",
           compared, n_same_bytes, n_same_refusal);
    ok(n_same_bytes > 1000 && n_same_refusal > 1000,
       "both outcomes are exercised (%d same bytes, %d refusals)", n_same_bytes, n_same_refusal);

    for (int i = 0; i < ncmd; i++)
        json_decref(cmd[i]);
    for (int i = 0; i < nev; i++)
        json_decref(ev[i]);
    free(long_mid);
    free(long_big);
    cff_samples_free();
    cff_schema_free();
    codec_term();
    return tap_done();
}
