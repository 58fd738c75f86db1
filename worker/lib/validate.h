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
 * most 63), chart name and SemVer chart version, valuesOverride a JSON object
 * within size and depth limits, 0 < timeout <= VALIDATE_TIMEOUT_MAX, text
 * fields without control characters. Returns 0, or -1 with *err filled. */
int validate_command(const json_t *cmd, validate_error_t *err);

/* Parses a valuesOverride text into a JSON object (new reference), or NULL
 * with *err filled (not JSON, not an object, too large or too deep). */
json_t *validate_values(const char *text, validate_error_t *err);

#endif
