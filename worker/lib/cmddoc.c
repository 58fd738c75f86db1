/* Completing command documents; see cmddoc.h. */
#include "cmddoc.h"

#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void cmddoc_canonical_ids(json_t *doc) {
    static const char *const fields[] = {"commandId", "tenantId", "releaseId"};
    for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
        const char *v = json_string_value(json_object_get(doc, fields[i]));
        char id[UUID_STR_LEN];
        if (!v || strlen(v) != UUID_STR_LEN - 1)
            continue;
        memcpy(id, v, UUID_STR_LEN);
        if (uuid_lower(id) && strcmp(id, v) != 0)
            json_object_set_new(doc, fields[i], json_string(id));
    }
}

int cmddoc_prepare(json_t *doc, const char *op, const char *performed_by, validate_error_t *err) {
    const char *given = json_string_value(json_object_get(doc, "operation"));
    memset(err, 0, sizeof(*err));
    if (json_object_get(doc, "operation") && (!given || strcmp(given, op) != 0))
        return validate_fail(err, "operation", "operation", "the document's operation is not \"%s\"", op);
    json_object_set_new(doc, "operation", json_string(op));
    json_t *v = json_object_get(doc, "valuesOverride");
    if (v && !json_is_string(v)) {
        if (!json_is_object(v))
            return validate_fail(err, "valuesOverride", "json-object",
                                 "valuesOverride must be a JSON object");
        char *text = json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS);
        if (!text)
            return validate_fail(err, "valuesOverride", "json-object", "valuesOverride cannot be serialised");
        json_object_set_new(doc, "valuesOverride", json_string(text));
        free(text);
    }
    if (!json_object_get(doc, "commandId")) {
        char id[UUID_STR_LEN];
        if (uuid_v4(id) < 0)
            return validate_fail(err, "commandId", "uuid", "cannot generate a UUID for commandId");
        json_object_set_new(doc, "commandId", json_string(id));
    }
    if (!json_object_get(doc, "performedBy") && performed_by)
        json_object_set_new(doc, "performedBy", json_string(performed_by));
    if (!json_object_get(doc, "requestedAt"))
        json_object_set_new(doc, "requestedAt", json_integer(now_ms()));
    cmddoc_canonical_ids(doc);
    return 0;
}

int cmddoc_digest(const json_t *doc, char out[65]) {
    json_t *copy = json_deep_copy(doc);
    if (!copy)
        return -1;
    json_object_del(copy, "requestedAt"); /* a re-send is stamped anew */
    const char *values = json_string_value(json_object_get(copy, "valuesOverride"));
    json_t *v = values ? json_loads(values, JSON_REJECT_DUPLICATES, NULL) : NULL;
    char *canon = v ? json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    if (canon)
        json_object_set_new(copy, "valuesOverride", json_string(canon));
    free(canon);
    json_decref(v);
    char *text = json_dumps(copy, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(copy);
    if (!text)
        return -1;
    sha256_hex(text, strlen(text), out);
    free(text);
    return 0;
}
