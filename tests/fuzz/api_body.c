/* libFuzzer target: the command routes of helmq-api, through the functions
 * api.c calls (worker/api/api_command.c):
 *
 *   POST /api/v1/helm/releases: the body -> api_install_command (JSON
 *     without duplicate keys, an object, performedBy and tenantId from the
 *     token, a new commandId, releaseId, cmddoc_prepare) ->
 *     api_command_encode (validate_command, codec_encode), as an admin and
 *     as a tenant's token, each input both ways;
 *   DELETE /api/v1/helm/releases/:id?QUERY, for an input that begins with
 *     '?': line 1 is the query (reason= through httpd_query_param, as
 *     api.c's router reads it), lines 2-4 replace the release's tenant,
 *     namespace and name from its row -> api_uninstall_command ->
 *     api_command_encode.
 *
 * (The API has no upgrade or rollback route: those commands come from the
 * CLI, fuzzed by cli_json.)
 *
 * Oracles ("a clear error, nothing lost"): the answer is one of
 * - 404, only for a tenant's token and a body naming another tenantId;
 * - 400 naming a rule and a message, and a field unless the rule is about
 *   the body as a whole (json, json-object; utf-8 for a DELETE's row);
 *   never rule "schema" (the schema refusing what validation passed: the
 *   400 would name no field). Checked on the answer as api.c sends it
 *   (api_invalid_answer, then the JSON document httpd_error builds): valid
 *   UTF-8, "field" null exactly for the body as a whole, and for an unknown
 *   field the key's exact name (or its first characters, for a key longer
 *   than the field holds), whatever the key: "-", "", "a/b" (F6);
 * - a command that carries the token's principal as performedBy, a tenant
 *   token's own tenantId, a new commandId (never the body's), the releaseId
 *   the API reports, operation install (uninstall), the reason as given;
 *   and that encodes to Avro and decodes back equal, field by field, and
 *   validates again (fuzz_command_round_trip). */
#include "api_command.h"
#include "http_request.h"

#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* tests/fuzz/fuzz_common.c */
void fuzz_init(void);
void fuzz_fail(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
void fuzz_command_round_trip(const json_t *doc, const char *origin);

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define TENANT "3f1d2c4b-5a69-4e7f-8a9b-0c1d2e3f4a5b"
#define RELEASE_ID "0b0c1d2e-3f4a-4b5c-8d6e-7f8091a2b3c4"

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    fuzz_init();
    return 0;
}

/* Whether field names one of doc's keys: exactly, or as the first
 * characters of a key longer than validate_error_t's field. */
static int names_a_key(const json_t *doc, const char *field) {
    const char *k;
    json_t *v;
    size_t n = strlen(field);
    json_object_foreach((json_t *)doc, k, v) {
        if (strcmp(k, field) == 0)
            return 1;
        if (strlen(k) >= VALIDATE_FIELD_SIZE && n > VALIDATE_FIELD_SIZE - 5 && strncmp(k, field, n) == 0)
            return 1; /* cut at a character boundary: up to 3 bytes short */
    }
    return 0;
}

/* A refusal (given: the body as parsed, NULL when it is not JSON or for a
 * DELETE), and the 400 api.c would answer with it. */
static void check_refusal(const validate_error_t *e, const json_t *given, const char *origin) {
    int whole_rule = strcmp(e->rule, "json") == 0 || strcmp(e->rule, "json-object") == 0 ||
                     strcmp(e->rule, "utf-8") == 0;
    if (!e->rule[0] || !e->message[0])
        fuzz_fail("%s: a 400 without a rule or a message", origin);
    if (e->whole ? !whole_rule || e->field[0] : !e->field[0] && strcmp(e->rule, "unknown-field") != 0)
        fuzz_fail("%s: a 400 with rule %s, whole %d, field \"%s\": %s", origin, e->rule, e->whole, e->field,
                  e->message);
    if (strcmp(e->rule, "unknown-field") == 0 && (!given || !names_a_key(given, e->field)))
        fuzz_fail("%s: unknown field \"%s\" is none of the body's keys", origin, e->field);

    char msg[VALIDATE_FIELD_TEXT_SIZE + sizeof(e->message) + 16];
    const char *field = api_invalid_answer(e, msg, sizeof(msg));
    if ((field == NULL) != e->whole || (field && strcmp(field, e->field) != 0))
        fuzz_fail("%s: the 400 for field \"%s\" (whole %d) says field %s%s%s", origin, e->field, e->whole,
                  field ? "\"" : "", field ? field : "null", field ? "\"" : "");
    /* httpd_error's document. */
    json_t *doc = json_pack("{s:s,s:o,s:s}", "error", msg, "field", field ? json_string(field) : json_null(), "rule",
                            e->rule);
    const json_t *f = doc ? json_object_get(doc, "field") : NULL;
    if (!doc || !f || (field ? !json_is_string(f) || strcmp(json_string_value(f), field) != 0 : !json_is_null(f)))
        fuzz_fail("%s: the 400 cannot carry its message or field as JSON: \"%s\" (field %s)", origin, msg,
                  field ? field : "null");
    json_decref(doc);
}

static const char *text(const json_t *doc, const char *k) {
    return json_string_value(json_object_get(doc, k));
}

/* The command's answer, as api.c gives it: 400, or the round trip.
 * Returns whether the command would be sent. */
static int encode_and_check(const json_t *doc, const char *origin) {
    validate_error_t e;
    unsigned char *buf = NULL;
    size_t len = 0;
    if (api_command_encode(doc, &buf, &len, &e) < 0) {
        if (strcmp(e.rule, "schema") == 0) {
            char *d = json_dumps(doc, JSON_COMPACT | JSON_SORT_KEYS);
            fuzz_fail("%s: validation passed, the schema refused: %s\n  command: %s", origin, e.message, d);
        }
        check_refusal(&e, doc, origin);
        return 0;
    }
    free(buf);
    fuzz_command_round_trip(doc, origin); /* validates, encodes, decodes, compares */
    return 1;
}

static void post(const char *body, size_t len, const char *tenant) {
    api_caller_t who = {"fuzz-principal", tenant};
    const char *origin = tenant ? "POST as a tenant" : "POST as admin";
    char release_id[UUID_STR_LEN];
    validate_error_t e;
    json_t *doc = NULL;
    json_error_t jerr;
    json_t *given = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
    int rc = api_install_command(body, len, &who, &doc, release_id, &e);
    if (rc == API_COMMAND_NOT_FOUND) {
        const char *t = given ? text(given, "tenantId") : NULL;
        if (!tenant || !t || strcasecmp(t, tenant) == 0)
            fuzz_fail("%s: 404 for a body whose tenantId is the caller's (or absent)", origin);
    } else if (rc < 0) {
        check_refusal(&e, given, origin);
    } else {
        if (!given || !json_is_object(given))
            fuzz_fail("%s: a command from a body that is not a JSON object", origin);
        const char *op = text(doc, "operation"), *by = text(doc, "performedBy");
        const char *cid = text(doc, "commandId"), *rid = text(doc, "releaseId");
        if (!op || strcmp(op, "install") != 0 || !by || strcmp(by, who.principal) != 0)
            fuzz_fail("%s: operation %s, performedBy %s", origin, op ? op : "(none)", by ? by : "(none)");
        if (!cid || !uuid_valid(cid) || (text(given, "commandId") && strcmp(text(given, "commandId"), cid) == 0))
            fuzz_fail("%s: commandId %s is not a new UUID", origin, cid ? cid : "(none)");
        const char *t = text(doc, "tenantId");
        if (tenant && (!t || strcasecmp(t, tenant) != 0))
            fuzz_fail("%s: a tenant's command for tenantId %s", origin, t ? t : "(none)");
        /* The 202 reports release_id: the command's, when it is sent. */
        if (encode_and_check(doc, origin) && strcmp(release_id, rid ? rid : "") != 0)
            fuzz_fail("%s: the API would report releaseId %s for a command with %s", origin, release_id,
                      rid ? rid : "(none)");
    }
    json_decref(given);
    json_decref(doc);
}

/* One line of s[0..n) from *pos (without its '\n'), as a new string. */
static char *line(const char *s, size_t n, size_t *pos) {
    if (*pos >= n)
        return NULL;
    const char *nl = memchr(s + *pos, '\n', n - *pos);
    size_t end = nl ? (size_t)(nl - s) : n;
    char *out = strndup(s + *pos, end - *pos);
    *pos = end + 1;
    return out;
}

static void delete(const char *in, size_t n) {
    size_t pos = 1;
    char *query = line(in, n, &pos), *t = line(in, n, &pos), *ns = line(in, n, &pos), *name = line(in, n, &pos);
    http_req_t req = {0};
    req.query = query;
    size_t reason_len = 0;
    char *reason = httpd_query_param(&req, "reason", &reason_len);
    api_caller_t who = {"fuzz-principal", NULL};
    validate_error_t e;
    json_t *doc = NULL;
    int rc = api_uninstall_command(t ? t : TENANT, ns ? ns : "tenant-acme", name ? name : "acme-ai-service",
                                   RELEASE_ID, reason, reason_len, &who, &doc, &e);
    if (rc < 0) {
        check_refusal(&e, NULL, "DELETE");
    } else {
        const char *r = text(doc, "reason");
        if (reason && (!r || strcmp(r, reason) != 0 || reason_len != strlen(reason)))
            fuzz_fail("DELETE: reason \"%s\" (%zu bytes) became \"%s\"", reason, reason_len, r ? r : "(none)");
        if (strcmp(text(doc, "operation"), "uninstall") != 0 || strcmp(text(doc, "releaseId"), RELEASE_ID) != 0)
            fuzz_fail("DELETE: operation or releaseId changed");
        encode_and_check(doc, "DELETE");
    }
    json_decref(doc);
    free(reason);
    free(query);
    free(t);
    free(ns);
    free(name);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *in = (const char *)data;
    if (size && in[0] == '?') {
        delete(in, size);
        return 0;
    }
    post(in, size, NULL);
    post(in, size, TENANT);
    return 0;
}
