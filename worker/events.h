/* Release events and what goes into them: values digests and redaction,
 * helm's release JSON, deterministic event ids.
 *
 * Events never carry raw values: only the sha256 of the values' canonical
 * JSON (compact, sorted keys) and a redacted copy, redacted by default: every
 * string is replaced by "[REDACTED]" unless its key is on the allowlist and
 * the string does not look like a secret; under a secret-looking key the
 * whole value goes, whatever its type. */
#ifndef HELMQ_EVENTS_H
#define HELMQ_EVENTS_H

#include <jansson.h>

#include "util.h"

#define REDACTED "[REDACTED]"

/* The keys whose string values stay visible (exact names, any case). */
#define VALUES_ALLOW_KEYS_DEFAULT                                                                            \
    "image,repository,tag,pullPolicy,replicaCount,enabled,name,type,port,targetPort,protocol,host,hosts,"    \
    "path,"                                                                                                  \
    "pathType,cpu,memory,size,storageClass,storageClassName,ingressClassName,serviceAccountName,schedule,"   \
    "logLevel,version,appVersion,region"
/* Fragments of keys whose whole value is secret, numbers and objects too. */
#define VALUES_REDACT_KEYS_DEFAULT                                                                           \
    "password,passwd,pwd,secret,token,key,credential,auth,cert,private,session,cookie,salt,signature,dsn"

/* Sets the allowlist: comma-separated key names (case-insensitive, exact)
 * whose string values are shown when they do not look secret; every other
 * string leaf is redacted. An array's elements go by the array's key.
 * Default VALUES_ALLOW_KEYS_DEFAULT. */
void values_set_allow_keys(const char *list);

/* Sets the key fragments that make a whole value secret, whatever its type
 * and even on the allowlist (comma-separated, case-insensitive substrings).
 * Default VALUES_REDACT_KEYS_DEFAULT. */
void values_set_redact_keys(const char *list);

/* Whether a string looks like a secret whatever its key: a URL with user
 * information (scheme://user:pass@host), a DSN's user:pass@host or
 * password=..., a PEM block, a JWT, an AWS access key id. */
int values_string_looks_secret(const char *s);

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
