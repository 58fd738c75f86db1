/* Unit tests of the codec: canonical forms and fingerprints against the Avro
 * project's published vectors, single-object round trips, schema evolution
 * from the v1 command, and every way a record can be undecodable. */
#include "avro_canon.h"
#include "codec.h"
#include "tap.h"

#include <jansson.h>
#include <stdlib.h>

static void test_vectors(void) {
    FILE *f = fopen("tests/fixtures/avro-schema-tests.tsv", "r");
    ok(f != NULL, "the Avro schema-tests vectors are readable");
    if (!f)
        return;
    char line[8192];
    int n = 0;
    while (fgets(line, sizeof(line), f)) {
        char *input = line, *canon = strchr(line, '\t');
        if (!canon)
            continue;
        *canon++ = '\0';
        char *fp = strchr(canon, '\t');
        if (!fp)
            continue;
        *fp++ = '\0';
        char err[256] = "";
        char *got = avro_canonical_form(input, strlen(input), err, sizeof(err));
        n++;
        is_str(got, canon, "vector %d: canonical form of %.60s", n, input);
        uint64_t want = strtoull(fp, NULL, 10);
        is_u64(got ? avro_crc64(got, strlen(got)) : 0, want, "vector %d: CRC-64-AVRO fingerprint", n);
        free(got);
    }
    fclose(f);
    ok(n >= 30, "read %d vectors", n);
}

static json_t *seed_command(void) {
    json_error_t e;
    return json_loads(
        "{\"operation\":\"install\",\"commandId\":\"8a4c7a3e-6b47-4c5e-9d2f-6f3f0f1c2b11\","
        "\"tenantId\":\"3f1d2c4b-5a69-4e7f-8a9b-0c1d2e3f4a5b\",\"namespace\":\"tenant-acme\","
        "\"releaseName\":\"acme-ai-service\",\"performedBy\":\"alice\",\"requestedAt\":1764000000000,"
        "\"chartName\":\"matih-ai-service\",\"chartVersion\":\"1.0.0\",\"appVersion\":\"2.0.0\","
        "\"valuesOverride\":\"{\\\"replicaCount\\\":2}\",\"timeout\":600,\"atomic\":true,"
        "\"waitForJobs\":true}",
        0, &e);
}

static void test_roundtrip(void) {
    char err[512];
    json_t *cmd = seed_command();
    unsigned char *buf = NULL;
    size_t len = 0;
    is_int(codec_encode(CODEC_COMMAND, cmd, &buf, &len, err, sizeof(err)), 0, "encode the seed command");
    ok(len > 10 && buf[0] == 0xC3 && buf[1] == 0x01, "single-object header C3 01");
    uint64_t fp = 0;
    for (int i = 0; i < 8; i++)
        fp |= (uint64_t)buf[2 + i] << (8 * i);
    is_u64(fp, codec_fingerprint(CODEC_COMMAND),
           "the header carries the command schema's fingerprint, little-endian");
    codec_type_t t;
    json_t *back = NULL;
    is_int(codec_decode(buf, len, &t, &back, err, sizeof(err)), 0, "decode it back");
    is_int(t, CODEC_COMMAND, "recognised as a command");
    json_object_set_new(cmd, "description", json_null());
    json_object_set_new(cmd, "releaseId", json_null());
    ok(json_equal(cmd, back), "decode(encode(x)) == x with defaults filled");
    json_decref(back);

    /* Defaults filled at encode time for absent fields. */
    json_object_del(cmd, "timeout");
    json_object_del(cmd, "atomic");
    json_object_del(cmd, "waitForJobs");
    free(buf);
    is_int(codec_encode(CODEC_COMMAND, cmd, &buf, &len, err, sizeof(err)), 0, "encode without the options");
    codec_decode(buf, len, &t, &back, err, sizeof(err));
    is_int(json_integer_value(json_object_get(back, "timeout")), 300, "timeout defaults to 300");
    ok(json_is_false(json_object_get(back, "atomic")), "atomic defaults to false");
    ok(json_is_false(json_object_get(back, "waitForJobs")), "waitForJobs defaults to false");
    json_decref(back);

    /* Every way of being undecodable has its own code. */
    is_int(codec_decode(buf, 5, &t, &back, err, sizeof(err)), CODEC_ERR_HEADER, "too short: bad header (%s)",
           err);
    buf[0] = 0x00;
    is_int(codec_decode(buf, len, &t, &back, err, sizeof(err)), CODEC_ERR_HEADER, "no C3 01: bad header");
    buf[0] = 0xC3;
    buf[5] ^= 0xff;
    is_int(codec_decode(buf, len, &t, &back, err, sizeof(err)), CODEC_ERR_FINGERPRINT,
           "unknown fingerprint (%s)", err);
    buf[5] ^= 0xff;
    is_int(codec_decode(buf, len - 7, &t, &back, err, sizeof(err)), CODEC_ERR_DATUM, "truncated datum (%s)",
           err);
    unsigned char *longer = malloc(len + 3);
    memcpy(longer, buf, len);
    memcpy(longer + len, "xyz", 3);
    is_int(codec_decode(longer, len + 3, &t, &back, err, sizeof(err)), CODEC_ERR_DATUM, "trailing bytes (%s)",
           err);
    free(longer);
    free(buf);

    /* Encoding errors name the field. */
    json_object_set_new(cmd, "timeout", json_string("soon"));
    is_int(codec_encode(CODEC_COMMAND, cmd, &buf, &len, err, sizeof(err)), -1, "a string timeout is refused");
    ok(strstr(err, "timeout") != NULL, "the error names the field: %s", err);
    json_object_set_new(cmd, "timeout", json_integer(600));
    json_object_del(cmd, "tenantId");
    is_int(codec_encode(CODEC_COMMAND, cmd, &buf, &len, err, sizeof(err)), -1,
           "a missing tenantId is refused");
    ok(strstr(err, "tenantId") != NULL, "the error names the field: %s", err);
    json_object_set_new(cmd, "tenantId", json_string("3f1d2c4b-5a69-4e7f-8a9b-0c1d2e3f4a5b"));
    json_object_set_new(cmd, "operation", json_string("explode"));
    is_int(codec_encode(CODEC_COMMAND, cmd, &buf, &len, err, sizeof(err)), -1,
           "an unknown operation is refused");
    json_decref(cmd);
}

static void test_evolution(void) {
    char err[512];
    FILE *f = fopen("tests/fixtures/command-v1-install.avro", "rb");
    ok(f != NULL, "the v1 fixture is readable");
    if (!f)
        return;
    unsigned char buf[4096];
    size_t len = fread(buf, 1, sizeof(buf), f);
    fclose(f);
    codec_type_t t;
    json_t *doc = NULL;
    is_int(codec_decode(buf, len, &t, &doc, err, sizeof(err)), 0,
           "a v1 record decodes under the current schema (%s)", err);
    if (!doc)
        return;
    ok(json_is_null(json_object_get(doc, "description")), "description (added in v2) defaults to null");
    ok(json_is_null(json_object_get(doc, "releaseId")), "releaseId (added in v2) defaults to null");
    ok(json_is_false(json_object_get(doc, "waitForJobs")), "waitForJobs (added in v2) defaults to false");
    is_str(json_string_value(json_object_get(doc, "releaseName")), "acme-legacy",
           "v1 fields keep their values");
    is_int(json_integer_value(json_object_get(doc, "timeout")), 450, "v1 timeout kept");
    ok(json_is_true(json_object_get(doc, "atomic")), "v1 atomic kept");
    is_str(json_string_value(json_object_get(doc, "operation")), "install",
           "operation branch resolved by name");
    json_decref(doc);
}

static void test_event(void) {
    char err[512];
    json_error_t e;
    json_t *ev = json_loads(
        "{\"eventId\":\"00000000-0000-5000-8000-000000000001\",\"commandId\":\"8a4c7a3e-6b47-4c5e-9d2f-"
        "6f3f0f1c2b11\","
        "\"eventType\":\"succeeded\",\"terminal\":true,\"releaseId\":\"11111111-2222-4333-8444-"
        "555555555555\","
        "\"tenantId\":\"3f1d2c4b-5a69-4e7f-8a9b-0c1d2e3f4a5b\",\"namespace\":\"tenant-acme\",\"releaseName\":"
        "\"a\","
        "\"operation\":\"install\",\"status\":\"deployed\",\"revision\":1,\"performedBy\":\"alice\","
        "\"occurredAt\":1,\"requestedAt\":1,\"history\":[{\"revision\":1,\"status\":\"deployed\","
        "\"chartName\":\"c\",\"chartVersion\":\"1.0.0\",\"operation\":\"install\",\"createdAt\":1}]}",
        0, &e);
    unsigned char *buf;
    size_t len;
    codec_type_t t;
    json_t *back;
    is_int(codec_encode(CODEC_EVENT, ev, &buf, &len, err, sizeof(err)), 0, "encode an event (%s)", err);
    is_int(codec_decode(buf, len, &t, &back, err, sizeof(err)), 0, "decode it");
    is_int(t, CODEC_EVENT, "recognised as an event");
    is_int(
        json_integer_value(json_object_get(json_array_get(json_object_get(back, "history"), 0), "revision")),
        1, "nested history records survive");
    json_object_set_new(ev, "eventType", json_string("exploded"));
    free(buf);
    is_int(codec_encode(CODEC_EVENT, ev, &buf, &len, err, sizeof(err)), -1,
           "an unknown enum symbol is refused");
    ok(strncmp(err, "eventType: ", 11) == 0, "the error names the field: %s", err);
    json_object_set_new(ev, "eventType", json_string("succeeded"));
    json_object_set_new(json_array_get(json_object_get(ev, "history"), 0), "revision", json_string("one"));
    is_int(codec_encode(CODEC_EVENT, ev, &buf, &len, err, sizeof(err)), -1,
           "a string revision in history is refused");
    ok(strncmp(err, "history.revision: expected int", 30) == 0, "the error names the nested field's path: %s",
       err);
    json_decref(back);
    json_decref(ev);
}

/* Hostile datums behind a valid header: each refused before avro-c reads it
 * (avro-c trusts lengths and indexes: a string longer than the record leaked
 * its allocation, an enum index out of range gave an uninitialised symbol). */
static void test_hostile(void) {
    char err[512];
    codec_type_t t;
    json_t *doc = NULL;
    unsigned char buf[64];
    uint64_t fp = codec_fingerprint(CODEC_COMMAND);
    buf[0] = 0xC3;
    buf[1] = 0x01;
    for (int i = 0; i < 8; i++)
        buf[2 + i] = (unsigned char)(fp >> (8 * i));
    /* commandId claims 1 GiB. */
    memcpy(buf + 10, "\x80\x80\x80\x80\x08", 5);
    is_int(codec_decode(buf, 15, &t, &doc, err, sizeof(err)), CODEC_ERR_DATUM,
           "a string longer than the record: bad datum");
    /* commandId claims a negative length. */
    buf[10] = 0x01;
    is_int(codec_decode(buf, 11, &t, &doc, err, sizeof(err)), CODEC_ERR_DATUM,
           "a negative string length: bad datum");
    /* A varint that never ends. */
    memset(buf + 10, 0xff, 20);
    is_int(codec_decode(buf, 30, &t, &doc, err, sizeof(err)), CODEC_ERR_DATUM,
           "an endless varint: bad datum");

    /* An event whose eventType index is out of range (6 symbols). */
    json_error_t e;
    json_t *ev = json_loads(
        "{\"eventId\":\"e\",\"commandId\":\"c\",\"eventType\":\"rejected\",\"terminal\":true,"
        "\"tenantId\":\"t\",\"namespace\":\"n\",\"releaseName\":\"r\",\"operation\":\"install\","
        "\"status\":\"rejected\",\"revision\":0,\"performedBy\":\"p\",\"occurredAt\":1,\"requestedAt\":1}",
        0, &e);
    unsigned char *out;
    size_t len;
    is_int(codec_encode(CODEC_EVENT, ev, &out, &len, err, sizeof(err)), 0, "encode an event");
    /* eventId "e" and commandId "c" are 2 bytes each: the enum index is at 14. */
    is_int(out[14], 10, "(the rejected symbol's index, 5, zigzag-encoded)");
    out[14] = 0x14; /* index 10 */
    is_int(codec_decode(out, len, &t, &doc, err, sizeof(err)), CODEC_ERR_DATUM,
           "an enum index out of range: bad datum");
    free(out);
    json_decref(ev);
}

int main(void) {
    char err[512];
    is_int(codec_init(err, sizeof(err)), 0, "codec_init (%s)", err);
    test_vectors();
    test_roundtrip();
    test_evolution();
    test_event();
    test_hostile();
    ok(codec_command_field_known("install", "chartName"), "chartName is an install field");
    ok(!codec_command_field_known("uninstall", "chartName"), "chartName is not an uninstall field");
    ok(codec_command_field_known("uninstall", "reason"), "reason is an uninstall field");
    codec_term();
    return tap_done();
}
