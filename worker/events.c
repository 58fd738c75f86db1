/* Values digests and redaction, helm release JSON, event ids; see events.h. */
#include "events.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Namespace of helmq's version-5 event ids (a fixed random UUID). */
#define HELMQ_EVENT_NS "6f1c3a9e-2b7d-4e58-9a41-0c2d5e7f8b13"

static char *redact_keys[32];
static int redact_count = -1;

void values_set_redact_keys(const char *list) {
    for (int i = 0; i < redact_count; i++)
        free(redact_keys[i]);
    redact_count = 0;
    char *copy = strdup(list ? list : "");
    char *save = NULL;
    for (char *t = strtok_r(copy, ", ", &save); t && redact_count < 32; t = strtok_r(NULL, ", ", &save)) {
        for (char *p = t; *p; p++)
            *p = (char)tolower((unsigned char)*p);
        redact_keys[redact_count++] = strdup(t);
    }
    free(copy);
}

static int key_is_secret(const char *key) {
    char lower[256];
    size_t i = 0;
    if (redact_count < 0)
        values_set_redact_keys("password,secret,token,key,credential");
    for (; key[i] && i + 1 < sizeof(lower); i++)
        lower[i] = (char)tolower((unsigned char)key[i]);
    lower[i] = '\0';
    for (int k = 0; k < redact_count; k++)
        if (strstr(lower, redact_keys[k]))
            return 1;
    return 0;
}

static json_t *redact(const json_t *v, int depth) {
    if (depth > 64)
        return json_string(REDACTED);
    if (json_is_object(v)) {
        json_t *out = json_object();
        const char *k;
        json_t *c;
        json_object_foreach((json_t *)v, k, c) {
            json_object_set_new(out, k, key_is_secret(k) ? json_string(REDACTED) : redact(c, depth + 1));
        }
        return out;
    }
    if (json_is_array(v)) {
        json_t *out = json_array();
        for (size_t i = 0; i < json_array_size(v); i++)
            json_array_append_new(out, redact(json_array_get(v, i), depth + 1));
        return out;
    }
    return json_deep_copy(v);
}

int values_digest_redact(const json_t *values, char digest[65], char **redacted) {
    json_t *empty = NULL;
    if (!values || !json_is_object(values))
        values = empty = json_object();
    char *canon = json_dumps(values, JSON_COMPACT | JSON_SORT_KEYS);
    json_t *r = redact(values, 0);
    *redacted = r ? json_dumps(r, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    json_decref(r);
    json_decref(empty);
    if (!canon || !*redacted) {
        free(canon);
        free(*redacted);
        *redacted = NULL;
        return -1;
    }
    sha256_hex(canon, strlen(canon), digest);
    free(canon);
    return 0;
}

static void copy_str(char *dst, size_t size, const json_t *v) {
    snprintf(dst, size, "%s", json_is_string(v) ? json_string_value(v) : "");
}

/* Whether s is a SemVer version (MAJOR.MINOR.PATCH, then -pre or +build). */
static int looks_semver(const char *s) {
    for (int part = 0; part < 3; part++) {
        if (!isdigit((unsigned char)*s))
            return 0;
        while (isdigit((unsigned char)*s))
            s++;
        if (part < 2 && *s++ != '.')
            return 0;
    }
    return *s == '\0' || *s == '-' || *s == '+';
}

/* helm history's "chart" is NAME-VERSION: the version is what follows the
 * first '-' after which a SemVer version starts (chart names hold no dots;
 * versions may hold '-'). */
static void split_chart(const char *chart, helm_release_t *rel) {
    for (const char *p = strchr(chart, '-'); p; p = strchr(p + 1, '-')) {
        if (looks_semver(p + 1)) {
            snprintf(rel->chart_name, sizeof(rel->chart_name), "%.*s", (int)(p - chart), chart);
            snprintf(rel->chart_version, sizeof(rel->chart_version), "%s", p + 1);
            return;
        }
    }
    snprintf(rel->chart_name, sizeof(rel->chart_name), "%s", chart);
}

/* helm history -o json's last entry: revision, status, chart, app_version,
 * description. No values: config stays NULL. */
static int history_parse(const json_t *arr, helm_release_t *rel) {
    const json_t *last = json_array_get(arr, json_array_size(arr) - 1);
    if (!json_is_object(last) || !json_is_integer(json_object_get(last, "revision")))
        return -1;
    rel->revision = (int)json_integer_value(json_object_get(last, "revision"));
    copy_str(rel->status, sizeof(rel->status), json_object_get(last, "status"));
    copy_str(rel->description, sizeof(rel->description), json_object_get(last, "description"));
    copy_str(rel->app_version, sizeof(rel->app_version), json_object_get(last, "app_version"));
    const json_t *chart = json_object_get(last, "chart");
    if (json_is_string(chart))
        split_chart(json_string_value(chart), rel);
    return 0;
}

int helm_release_parse(const char *text, helm_release_t *rel) {
    memset(rel, 0, sizeof(*rel));
    json_t *root = text ? json_loads(text, JSON_DECODE_ANY, NULL) : NULL;
    if (json_is_array(root)) {
        int rc = history_parse(root, rel);
        json_decref(root);
        return rc;
    }
    if (!json_is_object(root) || !json_is_integer(json_object_get(root, "version"))) {
        json_decref(root);
        return -1;
    }
    const json_t *info = json_object_get(root, "info");
    const json_t *meta = json_object_get(json_object_get(root, "chart"), "metadata");
    rel->revision = (int)json_integer_value(json_object_get(root, "version"));
    copy_str(rel->status, sizeof(rel->status), json_object_get(info, "status"));
    copy_str(rel->description, sizeof(rel->description), json_object_get(info, "description"));
    copy_str(rel->chart_name, sizeof(rel->chart_name), json_object_get(meta, "name"));
    copy_str(rel->chart_version, sizeof(rel->chart_version), json_object_get(meta, "version"));
    copy_str(rel->app_version, sizeof(rel->app_version), json_object_get(meta, "appVersion"));
    json_t *config = json_object_get(root, "config");
    rel->config = json_is_object(config) ? json_incref(config) : json_object();
    json_decref(root);
    return 0;
}

void helm_release_clear(helm_release_t *rel) {
    json_decref(rel->config);
    rel->config = NULL;
}

void event_id(const char *command_id, const char *kind, char out[UUID_STR_LEN]) {
    char name[256];
    int n = snprintf(name, sizeof(name), "%s/%s", command_id, kind);
    uuid_v5(HELMQ_EVENT_NS, name, (size_t)n, out);
}
