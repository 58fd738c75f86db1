/* Command validation rules; see validate.h. The patterns are helm's own:
 * release names must match helm's chartutil release-name rule and namespaces
 * are Kubernetes DNS-1123 labels. Anything that reaches a helm argv must not
 * begin with '-' and holds no control characters; the rules below ensure it. */
#include "validate.h"

#include "codec.h"
#include "util.h"

#include <regex.h>
#include <stdint.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* SemVer 2.0.0 (semver.org), as its own regular expression: MAJOR.MINOR.PATCH
 * without leading zeros; a pre-release of dot-separated identifiers, numeric
 * ones without leading zeros; build metadata of non-empty identifiers. */
#define SEMVER_NUM "(0|[1-9][0-9]*)"
#define SEMVER_PRE_ID "(0|[1-9][0-9]*|[0-9]*[A-Za-z-][0-9A-Za-z-]*)"
#define SEMVER_PATTERN                                                                                       \
    "^" SEMVER_NUM "\\." SEMVER_NUM "\\." SEMVER_NUM "(-" SEMVER_PRE_ID "(\\." SEMVER_PRE_ID ")*)?"          \
    "(\\+[0-9A-Za-z-]+(\\.[0-9A-Za-z-]+)*)?$"

static regex_t re_release, re_label, re_chart, re_semver;
static int re_ready;

static int compile_patterns(void) {
    if (re_ready)
        return 0;
    if (regcomp(&re_release, "^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$",
                REG_EXTENDED | REG_NOSUB) ||
        regcomp(&re_label, "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", REG_EXTENDED | REG_NOSUB) ||
        regcomp(&re_chart, "^[a-z0-9]([-a-z0-9_.]*[a-z0-9])?$", REG_EXTENDED | REG_NOSUB) ||
        regcomp(&re_semver, SEMVER_PATTERN, REG_EXTENDED | REG_NOSUB))
        return -1;
    re_ready = 1;
    return 0;
}

int validate_namespace(const char *ns, validate_error_t *err) {
    if (compile_patterns() < 0)
        return validate_fail(err, NULL, "internal", "cannot compile the validation patterns");
    if (strlen(ns) > 63 || regexec(&re_label, ns, 0, NULL, 0) != 0)
        return validate_fail(
            err, "namespace", "dns-1123-label",
            "namespace \"%.80s\" must be a DNS-1123 label: at most 63 lower-case letters, digits and '-', "
            "starting and ending with a letter or digit",
            ns);
    return 0;
}

int validate_fail(validate_error_t *err, const char *field, const char *rule, const char *fmt, ...) {
    va_list ap;
    err->whole = field == NULL;
    snprintf(err->field, sizeof(err->field), "%s", field ? field : "");
    utf8_sanitize(err->field); /* a key longer than field: cut at a character boundary */
    snprintf(err->rule, sizeof(err->rule), "%s", rule);
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof(err->message), fmt, ap);
    va_end(ap);
    utf8_sanitize(err->message); /* it quotes values: a cut must not split a character */
    return -1;
}

const char *validate_field_text(const validate_error_t *err, char *buf, size_t size) {
    const char *f = err->field;
    int name = !err->whole && ((*f >= 'A' && *f <= 'Z') || (*f >= 'a' && *f <= 'z') || *f == '_');
    for (const char *q = f; name && *q; q++)
        name = (*q >= 'A' && *q <= 'Z') || (*q >= 'a' && *q <= 'z') || (*q >= '0' && *q <= '9') || *q == '_';
    char *quoted = NULL;
    if (!err->whole && !name) {
        json_t *s = json_string(f);
        quoted = s ? json_dumps(s, JSON_ENCODE_ANY) : NULL;
        json_decref(s);
    }
    snprintf(buf, size, "%s", err->whole ? "" : quoted ? quoted : f);
    free(quoted);
    utf8_sanitize(buf);
    return buf;
}

static int has_control(const char *s) {
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            return 1;
    return 0;
}

/* Required text field: present, a string, non-empty. */
static const char *req_string(const json_t *cmd, const char *field, validate_error_t *err) {
    const json_t *v = json_object_get(cmd, field);
    if (!v || json_is_null(v)) {
        validate_fail(err, field, "required", "%s is required", field);
        return NULL;
    }
    if (!json_is_string(v)) {
        validate_fail(err, field, "type", "%s must be a string", field);
        return NULL;
    }
    if (json_string_length(v) == 0) {
        validate_fail(err, field, "required", "%s must not be empty", field);
        return NULL;
    }
    return json_string_value(v);
}

static int check_text(const json_t *cmd, const char *field, int required, validate_error_t *err) {
    const json_t *v = json_object_get(cmd, field);
    if (!required && (!v || json_is_null(v)))
        return 0;
    const char *s = req_string(cmd, field, err);
    if (!s)
        return -1;
    if (strlen(s) > VALIDATE_TEXT_MAX)
        return validate_fail(err, field, "max-length", "%s is longer than %d bytes", field,
                             VALIDATE_TEXT_MAX);
    if (has_control(s))
        return validate_fail(err, field, "no-control-characters", "%s must not contain control characters",
                             field);
    return 0;
}

static int json_depth(const json_t *v, int depth) {
    int max = depth;
    if (depth > VALIDATE_VALUES_MAX_DEPTH)
        return depth;
    if (json_is_object(v)) {
        const char *k;
        json_t *c;
        json_object_foreach((json_t *)v, k, c) {
            int d = json_depth(c, depth + 1);
            if (d > max)
                max = d;
        }
    } else if (json_is_array(v)) {
        for (size_t i = 0; i < json_array_size(v); i++) {
            int d = json_depth(json_array_get(v, i), depth + 1);
            if (d > max)
                max = d;
        }
    }
    return max;
}

int validate_utf8(const char *field, const char *s, size_t len, validate_error_t *err) {
    for (size_t i = 0; i < len;) {
        size_t n = s[i] ? utf8_char_len((const unsigned char *)s + i, len - i) : 0;
        if (n == 0)
            return validate_fail(err, field, "utf-8", "%s must be valid UTF-8 text: byte %zu (0x%02x) is not",
                                 field, i, (unsigned char)s[i]);
        i += n;
    }
    return 0;
}

json_t *validate_values(const char *text, validate_error_t *err) {
    json_error_t jerr;
    size_t len = strlen(text);
    if (len > VALIDATE_VALUES_MAX_BYTES) {
        validate_fail(err, "valuesOverride", "max-size",
                      "valuesOverride is %zu bytes as compact JSON, more than the limit of %d bytes (%d KiB)",
                      len, VALIDATE_VALUES_MAX_BYTES, VALIDATE_VALUES_MAX_BYTES / 1024);
        return NULL;
    }
    /* jansson's own depth limit (2048) stops hostile nesting while parsing;
     * ours is tighter and checked after. */
    json_t *v = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!v) {
        validate_fail(err, "valuesOverride", "json",
                      "valuesOverride is not valid JSON: line %d, column %d: %s", jerr.line, jerr.column,
                      jerr.text);
        return NULL;
    }
    if (!json_is_object(v)) {
        json_decref(v);
        validate_fail(err, "valuesOverride", "json-object", "valuesOverride must be a JSON object");
        return NULL;
    }
    if (json_depth(v, 1) > VALIDATE_VALUES_MAX_DEPTH) {
        json_decref(v);
        validate_fail(err, "valuesOverride", "max-depth", "valuesOverride is nested deeper than %d levels",
                      VALIDATE_VALUES_MAX_DEPTH);
        return NULL;
    }
    return v;
}

int validate_command(const json_t *cmd, validate_error_t *err) {
    const char *key;
    json_t *val;
    memset(err, 0, sizeof(*err));
    if (compile_patterns() < 0)
        return validate_fail(err, NULL, "internal", "cannot compile the validation patterns");
    if (!json_is_object(cmd))
        return validate_fail(err, NULL, "json-object", "a command must be a JSON object");

    const char *op = req_string(cmd, "operation", err);
    if (!op)
        return -1;
    if (strcmp(op, "install") && strcmp(op, "upgrade") && strcmp(op, "rollback") && strcmp(op, "uninstall"))
        return validate_fail(err, "operation", "enum",
                             "operation must be install, upgrade, rollback or uninstall, not \"%s\"", op);
    json_object_foreach((json_t *)cmd, key, val) {
        if (!codec_command_field_known(op, key))
            return validate_fail(err, key, "unknown-field", "unknown field \"%s\" for %s", key, op);
    }

    static const char *const uuids[] = {"commandId", "tenantId"};
    for (int i = 0; i < 2; i++) {
        const char *s = req_string(cmd, uuids[i], err);
        if (!s)
            return -1;
        if (!uuid_valid(s))
            return validate_fail(err, uuids[i], "uuid",
                                 "%s must be a UUID (8-4-4-4-12 hex digits), not \"%s\"", uuids[i], s);
    }
    const json_t *rid = json_object_get(cmd, "releaseId");
    if (rid && !json_is_null(rid) && (!json_is_string(rid) || !uuid_valid(json_string_value(rid))))
        return validate_fail(err, "releaseId", "uuid", "releaseId must be a UUID when given");

    const char *name = req_string(cmd, "releaseName", err);
    if (!name)
        return -1;
    if (strlen(name) > 53 || regexec(&re_release, name, 0, NULL, 0) != 0)
        return validate_fail(
            err, "releaseName", "helm-release-name",
            "releaseName \"%.80s\" must be at most 53 characters of lower-case letters, digits, '-' and '.', "
            "starting and ending with a letter or digit",
            name);
    if (strcmp(name, "helmq-tenant-access") == 0)
        return validate_fail(
            err, "releaseName", "reserved-release-name",
            "releaseName \"%s\" is reserved: it holds the namespace's tenant access, set up by "
            "helmq's worker",
            name);
    const char *ns = req_string(cmd, "namespace", err);
    if (!ns)
        return -1;
    if (validate_namespace(ns, err) < 0)
        return -1;
    if (check_text(cmd, "performedBy", 1, err) < 0 || check_text(cmd, "description", 0, err) < 0)
        return -1;
    const json_t *req = json_object_get(cmd, "requestedAt");
    if (!json_is_integer(req) || json_integer_value(req) < 0)
        return validate_fail(err, "requestedAt", "timestamp-millis",
                             "requestedAt must be milliseconds since the epoch");

    const json_t *t = json_object_get(cmd, "timeout");
    if (t) {
        if (!json_is_integer(t))
            return validate_fail(err, "timeout", "type", "timeout must be an integer number of seconds");
        if (json_integer_value(t) <= 0 || json_integer_value(t) > VALIDATE_TIMEOUT_MAX)
            return validate_fail(err, "timeout", "range",
                                 "timeout must be between 1 and %d seconds, not %" JSON_INTEGER_FORMAT,
                                 VALIDATE_TIMEOUT_MAX, json_integer_value(t));
    }
    if (strcmp(op, "install") == 0 || strcmp(op, "upgrade") == 0) {
        const char *chart = req_string(cmd, "chartName", err);
        if (!chart)
            return -1;
        if (strlen(chart) > 250 || regexec(&re_chart, chart, 0, NULL, 0) != 0)
            return validate_fail(
                err, "chartName", "chart-name",
                "chartName \"%.80s\" must be lower-case letters, digits, '-', '_' and '.', starting "
                "and ending "
                "with a letter or digit",
                chart);
        const char *ver = req_string(cmd, "chartVersion", err);
        if (!ver)
            return -1;
        if (strlen(ver) > 128 || regexec(&re_semver, ver, 0, NULL, 0) != 0)
            return validate_fail(
                err, "chartVersion", "semver",
                "chartVersion \"%.80s\" must be a SemVer 2.0.0 version such as 1.2.3 or 1.2.3-rc.1 "
                "(MAJOR.MINOR.PATCH, no leading zeros, no leading 'v', not a range)",
                ver);
        if (check_text(cmd, "appVersion", 0, err) < 0)
            return -1;
        const json_t *app = json_object_get(cmd, "appVersion");
        if (json_is_string(app) && json_string_value(app)[0] == '-')
            return validate_fail(err, "appVersion", "no-leading-dash", "appVersion must not begin with '-'");
        const json_t *values = json_object_get(cmd, "valuesOverride");
        if (values && !json_is_string(values))
            return validate_fail(err, "valuesOverride", "json-object",
                                 "valuesOverride must be a JSON object");
        if (values) {
            json_t *obj = validate_values(json_string_value(values), err);
            if (!obj)
                return -1;
            json_decref(obj);
        }
    } else if (strcmp(op, "rollback") == 0) {
        const json_t *rev = json_object_get(cmd, "revision");
        if (rev && !json_is_null(rev) &&
            (!json_is_integer(rev) || json_integer_value(rev) < 1 || json_integer_value(rev) > INT32_MAX))
            return validate_fail(err, "revision", "range",
                                 "revision must be an integer from 1 to 2147483647 when given");
    } else if (check_text(cmd, "reason", 0, err) < 0) {
        return -1;
    }
    static const char *const bools[] = {"atomic", "waitForJobs"};
    for (int i = 0; i < 2; i++) {
        const json_t *b = json_object_get(cmd, bools[i]);
        if (b && !json_is_boolean(b))
            return validate_fail(err, bools[i], "type", "%s must be true or false", bools[i]);
    }
    return 0;
}
