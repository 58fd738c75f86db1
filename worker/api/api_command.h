/* The commands of helmq-api's write routes, built from what the request
 * carries, without I/O: POST /api/v1/helm/releases (install, from the JSON
 * body) and DELETE /api/v1/helm/releases/:releaseId (uninstall, from the
 * release's row and ?reason=). api.c sends what these build; the fuzz target
 * tests/fuzz/api_body.c runs the same functions. */
#ifndef HELMQ_API_COMMAND_H
#define HELMQ_API_COMMAND_H

#include "util.h"
#include "validate.h"

#include <jansson.h>
#include <stddef.h>

/* Who asks, from the bearer token: a principal (performedBy), and either a
 * tenant (its UUID) or the admin role (tenant NULL). */
typedef struct api_caller {
    const char *principal;
    const char *tenant;
} api_caller_t;

#define API_COMMAND_INVALID (-1)   /* 400: *err names the field (or whole: the body) and the rule */
#define API_COMMAND_NOT_FOUND (-2) /* 404: the body names another tenant than the caller's */

/* Builds the install command of a POST body[0..len): JSON without duplicate
 * keys, an object; performedBy is the caller's principal, a tenant caller's
 * tenantId is its own (another is 404, as if it did not exist), commandId is
 * new, releaseId new unless given (a given one is validated, never
 * replaced); then cmddoc_prepare. On success *out is the prepared document
 * (the caller's reference) and release_id its releaseId as prepared (""
 * when it is not a string, for validation to refuse). Returns 0,
 * API_COMMAND_INVALID or API_COMMAND_NOT_FOUND. Not yet validated: see
 * api_command_encode. */
int api_install_command(const char *body, size_t len, const api_caller_t *who, json_t **out,
                        char release_id[UUID_STR_LEN], validate_error_t *err);

/* Builds the uninstall command of a release (tenant, namespace and name from
 * its row, release_id from the path), with reason (NULL for none; reason_len
 * its decoded length, which an encoded NUL makes longer than strlen) as the
 * caller gave it. Returns 0 with *out set, or API_COMMAND_INVALID. */
int api_uninstall_command(const char *tenant, const char *ns, const char *name, const char *release_id,
                          const char *reason, size_t reason_len, const api_caller_t *who, json_t **out,
                          validate_error_t *err);

/* Validates doc (validate_command) and encodes it (codec_encode): *buf
 * (malloc'd, the caller frees it) and *len hold the record. Returns 0, or
 * API_COMMAND_INVALID with *err filled: the rule validation names, or rule
 * "schema" for the command as a whole (whole) with the codec's message
 * (which names the field) when the schema refuses what validation passed. */
int api_command_encode(const json_t *doc, unsigned char **buf, size_t *len, validate_error_t *err);

/* The 400 answering err, as api.c sends it: the message goes to msg (of
 * msg_size bytes; UTF-8, cut at a character boundary), "invalid FIELD: why"
 * with the field as validate_field_text writes it, or err's message alone
 * for the body as a whole. Returns the error document's "field": err's
 * field, any key's exact name (up to VALIDATE_FIELD_SIZE - 1 bytes), or NULL
 * (JSON null) for the body as a whole. */
const char *api_invalid_answer(const validate_error_t *err, char *msg, size_t msg_size);

#endif
