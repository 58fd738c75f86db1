/* The commands of helmq-api's write routes, built without I/O; see
 * api_command.h. */
#include "api_command.h"

#include "cmddoc.h"
#include "codec.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

int api_install_command(const char *body, size_t len, const api_caller_t *who, json_t **out,
                        char release_id[UUID_STR_LEN], validate_error_t *err) {
    json_error_t jerr;
    *out = NULL;
    release_id[0] = '\0';
    json_t *doc = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!doc) {
        validate_fail(err, NULL, "json", "the body is not valid JSON: line %d, column %d: %s", jerr.line,
                      jerr.column, jerr.text);
        return API_COMMAND_INVALID;
    }
    if (!json_is_object(doc)) {
        json_decref(doc);
        validate_fail(err, NULL, "json-object", "the body must be a JSON object");
        return API_COMMAND_INVALID;
    }
    /* The principal is who performs it; the API chooses the ids. */
    json_object_set_new(doc, "performedBy", json_string(who->principal));
    const char *tenant = json_string_value(json_object_get(doc, "tenantId"));
    if (who->tenant && tenant && strcasecmp(tenant, who->tenant) != 0) {
        json_decref(doc);
        return API_COMMAND_NOT_FOUND;
    }
    if (who->tenant && !tenant)
        json_object_set_new(doc, "tenantId", json_string(who->tenant));
    json_object_del(doc, "commandId");
    const json_t *rid = json_object_get(doc, "releaseId");
    if (!rid || json_is_null(rid)) { /* one given is validated, never replaced */
        char fresh[UUID_STR_LEN];
        uuid_v4(fresh);
        json_object_set_new(doc, "releaseId", json_string(fresh));
    }
    if (cmddoc_prepare(doc, "install", who->principal, err) < 0) {
        json_decref(doc);
        return API_COMMAND_INVALID;
    }
    /* As prepared: a given releaseId in its canonical lower case (one that is
     * not a UUID is refused by validation). */
    const char *prepared_rid = json_string_value(json_object_get(doc, "releaseId"));
    snprintf(release_id, UUID_STR_LEN, "%s", prepared_rid ? prepared_rid : "");
    *out = doc;
    return 0;
}

int api_uninstall_command(const char *tenant, const char *ns, const char *name, const char *release_id,
                          const char *reason, size_t reason_len, const api_caller_t *who, json_t **out,
                          validate_error_t *err) {
    *out = NULL;
    /* jansson would drop text that is not UTF-8: the uninstall would lose its reason. */
    if (reason && validate_utf8("reason", reason, reason_len, err) < 0)
        return API_COMMAND_INVALID;
    json_t *doc = json_pack("{s:s,s:s,s:s,s:s}", "tenantId", tenant, "namespace", ns, "releaseName", name,
                            "releaseId", release_id);
    if (!doc) {
        validate_fail(err, NULL, "utf-8", "the release's row is not UTF-8 text");
        return API_COMMAND_INVALID;
    }
    if (reason)
        json_object_set_new(doc, "reason", json_string(reason));
    if (cmddoc_prepare(doc, "uninstall", who->principal, err) < 0) {
        json_decref(doc);
        return API_COMMAND_INVALID;
    }
    *out = doc;
    return 0;
}

const char *api_invalid_answer(const validate_error_t *err, char *msg, size_t msg_size) {
    char field[VALIDATE_FIELD_TEXT_SIZE];
    if (err->whole)
        snprintf(msg, msg_size, "%s", err->message);
    else
        snprintf(msg, msg_size, "invalid %s: %s", validate_field_text(err, field, sizeof(field)),
                 err->message);
    utf8_sanitize(msg); /* a cut must not split a character: the answer is JSON */
    return err->whole ? NULL : err->field;
}

int api_command_encode(const json_t *doc, unsigned char **buf, size_t *len, validate_error_t *err) {
    char errstr[512];
    if (validate_command(doc, err) < 0)
        return API_COMMAND_INVALID;
    if (codec_encode(CODEC_COMMAND, doc, buf, len, errstr, sizeof(errstr)) < 0) {
        validate_fail(err, NULL, "schema", "%s", errstr); /* the schema's message names the field */
        return API_COMMAND_INVALID;
    }
    return 0;
}
