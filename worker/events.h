/* Release events and what goes into them: values digests and redaction,
 * helm's release JSON, deterministic event ids.
 *
 * Events never carry raw values: only the sha256 of the values' canonical
 * JSON (compact, sorted keys) and a copy whose secret-looking keys have their
 * values replaced by "[REDACTED]". */
#ifndef HELMQ_EVENTS_H
#define HELMQ_EVENTS_H

#include <jansson.h>

#include "util.h"

#define REDACTED "[REDACTED]"

/* Sets the key fragments that mark a value secret (comma-separated,
 * case-insensitive substrings; default "password,secret,token,key,credential"). */
void values_set_redact_keys(const char *list);

/* Digest (hex sha256 of the canonical JSON) and redacted copy (JSON text,
 * malloc'd) of values, a JSON object. Returns 0 or -1 (out of memory). */
int values_digest_redact(const json_t *values, char digest[65], char **redacted);

/* What helm reports about a release revision (install/upgrade/status -o json). */
typedef struct helm_release {
    int revision;
    char status[32];
    char description[512];
    char chart_name[256];
    char chart_version[128];
    char app_version[128];
    json_t *config; /* user-supplied values (new reference, may be NULL) */
} helm_release_t;

/* Parses helm's release JSON (text: install/upgrade -o json, with the values
 * in config), or helm history -o json (its last revision; config NULL).
 * Returns 0 or -1 when it is neither. */
int helm_release_parse(const char *text, helm_release_t *rel);
void helm_release_clear(helm_release_t *rel);

/* The deterministic id of a command's event of kind ("started",
 * "terminal"): a version-5 UUID of commandId and kind. */
void event_id(const char *command_id, const char *kind, char out[UUID_STR_LEN]);

#endif
