/* Command validation, shared by the producer CLI (before anything is sent)
 * and the worker (before anything runs), so both apply the same rules.
 *
 * A command is natural JSON as codec.h describes it. Each failure names the
 * field and the rule it breaks. */
#ifndef HELMQ_VALIDATE_H
#define HELMQ_VALIDATE_H

#include <jansson.h>
#include <stddef.h>

#define VALIDATE_VALUES_MAX_BYTES (512 * 1024) /* valuesOverride as JSON text */
#define VALIDATE_VALUES_MAX_DEPTH 32
#define VALIDATE_TIMEOUT_MAX 86400 /* seconds: one day */
#define VALIDATE_TEXT_MAX 1024     /* description, reason, performedBy */

typedef struct validate_error {
    char field[64];    /* the offending field, e.g. "releaseName" */
    char rule[64];     /* the rule, e.g. "helm-release-name" */
    char message[512]; /* a sentence for people */
} validate_error_t;

/* Checks every rule on cmd: required fields, no unknown fields, UUIDs, helm's
 * release-name rule (at most 53 characters), DNS-1123 label namespace (at
 * most 63), chart name and a strict SemVer 2.0.0 chart version
 * (MAJOR.MINOR.PATCH[-prerelease][+build], no leading zeros, no 'v': helm
 * itself takes ranges and a 'v', a command names one version), valuesOverride a JSON object
 * within size and depth limits, 0 < timeout <= VALIDATE_TIMEOUT_MAX, text
 * fields without control characters. Returns 0, or -1 with *err filled. */
int validate_command(const json_t *cmd, validate_error_t *err);

/* Checks that ns is a namespace a command may name: a DNS-1123 label of at
 * most 63 characters. Returns 0, or -1 with *err filled (field "namespace",
 * rule "dns-1123-label"). */
int validate_namespace(const char *ns, validate_error_t *err);

/* Parses a valuesOverride text into a JSON object (new reference), or NULL
 * with *err filled (not JSON: with jansson's line, column and message; not an
 * object; larger than VALIDATE_VALUES_MAX_BYTES; deeper than
 * VALIDATE_VALUES_MAX_DEPTH). */
json_t *validate_values(const char *text, validate_error_t *err);

/* Checks that the text s[0..len) given for field (a flag, a query parameter:
 * input that has not been through a JSON parser) is well-formed UTF-8 without
 * a NUL. Returns 0, or -1 with *err filled (rule "utf-8"). */
int validate_utf8(const char *field, const char *s, size_t len, validate_error_t *err);

/* Fills *err (field, rule, then a printf message) and returns -1: for callers
 * that refuse input with the same shape of error. */
int validate_fail(validate_error_t *err, const char *field, const char *rule, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#endif
