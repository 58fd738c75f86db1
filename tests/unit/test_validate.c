/* Unit tests of command validation: every rule, each with its own field and
 * rule name, and the seed's command accepted. */
#include "codec.h"
#include "tap.h"
#include "validate.h"

#include <jansson.h>
#include <stdlib.h>

static json_t *base(const char *op) {
    json_t *c = json_pack(
        "{s:s,s:s,s:s,s:s,s:s,s:s,s:I}", "operation", op, "commandId", "8a4c7a3e-6b47-4c5e-9d2f-6f3f0f1c2b11",
        "tenantId", "3f1d2c4b-5a69-4e7f-8a9b-0c1d2e3f4a5b", "namespace", "tenant-acme", "releaseName",
        "acme-ai-service", "performedBy", "alice", "requestedAt", (json_int_t)1764000000000);
    if (strcmp(op, "install") == 0 || strcmp(op, "upgrade") == 0) {
        json_object_set_new(c, "chartName", json_string("matih-ai-service"));
        json_object_set_new(c, "chartVersion", json_string("1.0.0"));
        json_object_set_new(c, "valuesOverride", json_string("{\"replicaCount\":2}"));
    }
    return c;
}

/* Sets field to value (a JSON literal, or NULL to delete) and expects the
 * given field and rule in the error. */
static void expect(const char *op, const char *field, const char *value, const char *want_field,
                   const char *want_rule) {
    json_t *c = base(op);
    if (value)
        json_object_set_new(c, field, json_loads(value, JSON_DECODE_ANY, NULL));
    else
        json_object_del(c, field);
    validate_error_t e;
    int rc = validate_command(c, &e);
    is_int(rc, -1, "%s %s=%s is refused", op, field, value ? value : "(absent)");
    is_str(e.field, want_field, "  field named: %s", e.message);
    is_str(e.rule, want_rule, "  rule named");
    json_decref(c);
}

int main(void) {
    char err[256];
    validate_error_t e;
    codec_init(err, sizeof(err));
    const char *ops[] = {"install", "upgrade", "rollback", "uninstall"};
    for (int i = 0; i < 4; i++) {
        json_t *c = base(ops[i]);
        is_int(validate_command(c, &e), 0, "a valid %s passes (%s)", ops[i], e.message);
        json_decref(c);
    }
    expect("install", "tenantId", NULL, "tenantId", "required");
    expect("install", "tenantId", "\"uuid\"", "tenantId", "uuid");
    expect("install", "commandId", "\"not-a-uuid\"", "commandId", "uuid");
    expect("install", "releaseId", "\"x\"", "releaseId", "uuid");
    expect("install", "releaseName", "\"Acme\"", "releaseName", "helm-release-name");
    expect("install", "releaseName", "\"--set\"", "releaseName", "helm-release-name");
    expect("install", "releaseName", "\"../etc\"", "releaseName", "helm-release-name");
    expect("install", "releaseName", "\"a;rm -rf\"", "releaseName", "helm-release-name");
    expect("install", "releaseName", "\"abcdefghij-abcdefghij-abcdefghij-abcdefghij-abcdefghij\"",
           "releaseName", "helm-release-name");
    expect("install", "releaseName", "\"caf\\u00e9\"", "releaseName", "helm-release-name");
    expect("install", "releaseName", "\"helmq-tenant-access\"", "releaseName", "reserved-release-name");
    expect("upgrade", "releaseName", "\"helmq-tenant-access\"", "releaseName", "reserved-release-name");
    expect("install", "namespace", "\"tenant.acme\"", "namespace", "dns-1123-label");
    expect("install", "namespace", "\"-acme\"", "namespace", "dns-1123-label");
    expect("install", "namespace", "\"a123456789a123456789a123456789a123456789a123456789a123456789abcd\"",
           "namespace", "dns-1123-label");
    expect("install", "chartName", NULL, "chartName", "required");
    expect("install", "chartName", "\"--post-renderer\"", "chartName", "chart-name");
    expect("install", "chartVersion", "\"latest\"", "chartVersion", "semver");
    /* SemVer 2.0.0, strictly (issue 21): three numbers, no 'v', no leading zeros. */
    static const char *const not_semver[] = {"1.0",      "v1.0.0", "01.0.0", "1.00.0",
                                             "1.0.0-01", "1.0.0-", "1.0.0+", "1.0.0-a..b",
                                             "1.0.0.0",  "=1.0.0", "1.0.0 ", "^1.2.3"};
    for (size_t i = 0; i < sizeof(not_semver) / sizeof(not_semver[0]); i++) {
        char lit[64];
        snprintf(lit, sizeof(lit), "\"%s\"", not_semver[i]);
        expect("install", "chartVersion", lit, "chartVersion", "semver");
    }
    static const char *const semver[] = {"0.0.0",
                                         "1.2.3",
                                         "10.20.30",
                                         "1.0.0-alpha",
                                         "1.0.0-alpha.1",
                                         "1.0.0-0.3.7",
                                         "1.0.0-x.7.z.92",
                                         "1.0.0-alpha+001",
                                         "1.0.0+20130313144700",
                                         "1.0.0-beta+exp.sha.5114f85",
                                         "1.0.0-0a.-"};
    for (size_t i = 0; i < sizeof(semver) / sizeof(semver[0]); i++) {
        json_t *c = base("install");
        json_object_set_new(c, "chartVersion", json_string(semver[i]));
        is_int(validate_command(c, &e), 0, "chartVersion %s is SemVer 2.0.0 (%s)", semver[i], e.message);
        json_decref(c);
    }
    is_int(validate_utf8("description", "caf\xc3\xa9", 5, &e), 0, "UTF-8 text passes validate_utf8");
    ok(validate_utf8("description", "caf\xe9", 4, &e) == -1 && strcmp(e.rule, "utf-8") == 0 &&
           strcmp(e.field, "description") == 0,
       "Latin-1 text is refused, naming the field and rule utf-8: %s", e.message);
    ok(validate_utf8("reason", "a\0b", 3, &e) == -1, "an embedded NUL is refused");
    expect("install", "valuesOverride", "\"[1,2]\"", "valuesOverride", "json-object");
    expect("install", "valuesOverride", "\"{oops\"", "valuesOverride", "json");
    expect("install", "timeout", "0", "timeout", "range");
    expect("install", "timeout", "-5", "timeout", "range");
    expect("install", "timeout", "86401", "timeout", "range");
    expect("install", "atomic", "\"yes\"", "atomic", "type");
    expect("install", "extra", "1", "extra", "unknown-field");
    expect("uninstall", "chartName", "\"x\"", "chartName", "unknown-field");

    /* Any key is named as it is, told apart from the command as a whole
     * (FINDINGS.md F6: "-" was that marker), and written for people quoted
     * when it does not read as a name. */
    static const struct {
        const char *key, *text;
    } keys[] = {{"-", "\"-\""},         {"", "\"\""},         {"a/b", "\"a/b\""}, {"~0", "\"~0\""},
                {"a\"b", "\"a\\\"b\""}, {"colour", "colour"}, {"_x9", "_x9"},     {"9x", "\"9x\""}};
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        char text[VALIDATE_FIELD_TEXT_SIZE];
        expect("install", keys[i].key, "1", keys[i].key, "unknown-field");
        json_t *c = base("install");
        json_object_set_new(c, keys[i].key, json_integer(1));
        validate_command(c, &e);
        is_int(e.whole, 0, "  the key \"%s\" is not the command as a whole", keys[i].key);
        is_str(validate_field_text(&e, text, sizeof(text)), keys[i].text, "  written for people");
        json_decref(c);
    }
    json_t *arr = json_array();
    ok(validate_command(arr, &e) == -1 && e.whole && e.field[0] == '\0' && strcmp(e.rule, "json-object") == 0,
       "a command that is not an object: the command as a whole, field \"\"");
    json_decref(arr);
    /* A key longer than the field is cut at a character boundary. */
    char key[700] = "";
    for (int i = 0; i < 300; i++)
        strcat(key, "\xc3\xa9");
    json_t *c = base("install");
    json_object_set_new(c, key, json_integer(1));
    validate_command(c, &e);
    ok(strlen(e.field) == 254 && strncmp(e.field, key, 254) == 0,
       "a 600-byte key is named by its first 127 characters (254 bytes), not cut inside one: %zu bytes",
       strlen(e.field));
    json_decref(c);
    expect("install", "description", "\"line\\nbreak\"", "description", "no-control-characters");
    expect("install", "performedBy", "\"\"", "performedBy", "required");
    expect("rollback", "revision", "0", "revision", "range");
    expect("install", "operation", "\"explode\"", "operation", "enum");

    /* Size and depth limits of valuesOverride. */
    size_t big = VALIDATE_VALUES_MAX_BYTES + 16;
    char *text = malloc(big + 1);
    memset(text, ' ', big);
    text[0] = '{';
    text[big - 1] = '}';
    text[big] = '\0';
    ok(validate_values(text, &e) == NULL && strcmp(e.rule, "max-size") == 0, "oversize values refused: %s",
       e.message);
    ok(strstr(e.message, "524288 bytes (512 KiB)") != NULL, "the message names the limit checked: %s",
       e.message);
    ok(validate_values("{\"a\":\n 1,}", &e) == NULL && strcmp(e.rule, "json") == 0 &&
           strstr(e.message, "line 2, column") != NULL,
       "a syntax error names jansson's line and column: %s", e.message);
    free(text);
    char deep[256] = "";
    for (int i = 0; i < 40; i++)
        strcat(deep, "{\"a\":");
    strcat(deep, "1");
    for (int i = 0; i < 40; i++)
        strcat(deep, "}");
    ok(validate_values(deep, &e) == NULL && strcmp(e.rule, "max-depth") == 0, "deep values refused: %s",
       e.message);
    codec_term();
    return tap_done();
}
