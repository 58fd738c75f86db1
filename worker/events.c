/* Values digests and redaction, helm release JSON, event ids; see events.h. */
#include "events.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Namespace of helmq's version-5 event ids (a fixed random UUID). */
#define HELMQ_EVENT_NS "6f1c3a9e-2b7d-4e58-9a41-0c2d5e7f8b13"

/* A comma-separated list, lower-cased (at most 64 entries). */
typedef struct keylist {
    char *items[64];
    int count; /* -1: not set yet (the default applies) */
} keylist_t;

static keylist_t allow_keys = {.count = -1}, redact_keys = {.count = -1};

static void keylist_set(keylist_t *l, const char *list) {
    for (int i = 0; i < l->count; i++)
        free(l->items[i]);
    l->count = 0;
    char *copy = strdup(list ? list : "");
    char *save = NULL;
    for (char *t = strtok_r(copy, ", ", &save); t && l->count < 64; t = strtok_r(NULL, ", ", &save)) {
        for (char *p = t; *p; p++)
            *p = (char)tolower((unsigned char)*p);
        l->items[l->count++] = strdup(t);
    }
    free(copy);
}

void values_set_allow_keys(const char *list) {
    keylist_set(&allow_keys, list);
}

void values_set_redact_keys(const char *list) {
    keylist_set(&redact_keys, list);
}

static void lower_copy(char *out, size_t size, const char *in) {
    size_t i = 0;
    for (; in[i] && i + 1 < size; i++)
        out[i] = (char)tolower((unsigned char)in[i]);
    out[i] = '\0';
}

/* Whether the key's whole value is secret (a fragment of the redact list). */
static int key_is_secret(const char *key) {
    char lower[256];
    if (redact_keys.count < 0)
        values_set_redact_keys(VALUES_REDACT_KEYS_DEFAULT);
    lower_copy(lower, sizeof(lower), key);
    for (int k = 0; k < redact_keys.count; k++)
        if (strstr(lower, redact_keys.items[k]))
            return 1;
    return 0;
}

/* Whether the key's strings may be shown (on the allowlist). */
static int key_is_allowed(const char *key) {
    if (allow_keys.count < 0)
        values_set_allow_keys(VALUES_ALLOW_KEYS_DEFAULT);
    if (!key || strlen(key) >= 256)
        return 0;
    for (int k = 0; k < allow_keys.count; k++)
        if (strcasecmp(key, allow_keys.items[k]) == 0)
            return 1;
    return 0;
}

/* A run of at least min characters of [A-Za-z0-9_-] starting at s. */
static size_t b64url_run(const char *s, size_t min) {
    size_t n = 0;
    while (isalnum((unsigned char)s[n]) || s[n] == '_' || s[n] == '-')
        n++;
    return n >= min ? n : 0;
}

int values_string_looks_secret(const char *s) {
    static const char *const words[] = {"password", "passwd", "pwd=",    "secret",  "token=",
                                        "key=",     "apikey", "api_key", "bearer ", "-----begin"};
    char lower[4096];
    lower_copy(lower, sizeof(lower), s);
    for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++)
        if (strstr(lower, words[i]))
            return 1;
    for (const char *p = s; *p; p++) {
        /* user:pass@ (a URL's user information, a DSN): a ':' before an '@'
         * within one token (no '/', space or quote between them); a URL's
         * user@ without a password too. */
        if (*p == '@') {
            const char *q = p;
            while (q > s && !strchr("/ \t\"'=,;", q[-1]))
                q--;
            if (memchr(q, ':', (size_t)(p - q)) || (q >= s + 3 && strncmp(q - 3, "://", 3) == 0))
                return 1;
        }
        /* An AWS access key id: AKIA or ASIA and 16 upper-case letters or digits. */
        if ((strncmp(p, "AKIA", 4) == 0 || strncmp(p, "ASIA", 4) == 0)) {
            int n = 0;
            while (n < 16 && (isupper((unsigned char)p[4 + n]) || isdigit((unsigned char)p[4 + n])))
                n++;
            if (n == 16)
                return 1;
        }
        /* A JWT: three base64url parts joined by dots, the first a JSON header. */
        if (strncmp(p, "eyJ", 3) == 0 && (p == s || !isalnum((unsigned char)p[-1]))) {
            size_t a = b64url_run(p, 10);
            size_t b = a && p[a] == '.' ? b64url_run(p + a + 1, 10) : 0;
            if (b && p[a + 1 + b] == '.' && b64url_run(p + a + 2 + b, 10))
                return 1;
        }
    }
    return 0;
}

/* The redacted copy of v, the value of key (NULL at the top; an array's
 * elements have the array's key). */
static json_t *redact(const json_t *v, const char *key, int depth) {
    if (depth > 64)
        return json_string(REDACTED);
    if (json_is_object(v)) {
        json_t *out = json_object();
        const char *k;
        json_t *c;
        json_object_foreach((json_t *)v, k, c) {
            json_object_set_new(out, k, key_is_secret(k) ? json_string(REDACTED) : redact(c, k, depth + 1));
        }
        return out;
    }
    if (json_is_array(v)) {
        json_t *out = json_array();
        for (size_t i = 0; i < json_array_size(v); i++)
            json_array_append_new(out, redact(json_array_get(v, i), key, depth + 1));
        return out;
    }
    if (json_is_string(v))
        return key_is_allowed(key) && !values_string_looks_secret(json_string_value(v))
                   ? json_deep_copy(v)
                   : json_string(REDACTED);
    return json_deep_copy(v); /* numbers, booleans, null */
}

int values_digest_redact(const json_t *values, char digest[65], char **redacted) {
    json_t *empty = NULL;
    if (!values || !json_is_object(values))
        values = empty = json_object();
    char *canon = json_dumps(values, JSON_COMPACT | JSON_SORT_KEYS);
    json_t *r = redact(values, NULL, 0);
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
