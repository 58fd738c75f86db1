/* Building a command document before it is sent: shared by the CLI and the
 * HTTP API so both produce the same records from the same input, and by the
 * worker for the canonical form of what it receives. */
#ifndef HELMQ_CMDDOC_H
#define HELMQ_CMDDOC_H

#include "validate.h"

#include <jansson.h>
#include <stddef.h>

/* Completes doc (natural JSON, modified in place) as a command of operation
 * op: sets "operation", turns a valuesOverride object into its canonical
 * JSON text (compact, sorted keys: the same values give the same bytes and
 * digest), and fills commandId (a new UUID), performedBy (performed_by, when
 * doc has none) and requestedAt (now) when absent. Returns 0, or -1 with
 * *err naming the field and the rule, as validation does. Validation is
 * separate (validate_command). */
int cmddoc_prepare(json_t *doc, const char *op, const char *performed_by, validate_error_t *err);

/* Writes the UUID fields of doc (commandId, tenantId, releaseId) in their
 * canonical lower case, in place: a UUID is case-insensitive, so a tenant
 * spelt in upper case is the same tenant, with the same release key
 * (tenantId/namespace/releaseName), ledger rows and event ids. A field that
 * is not a UUID is left as it is, for validation to name. cmddoc_prepare
 * calls it; the worker calls it on every decoded command, whoever sent it. */
void cmddoc_canonical_ids(json_t *doc);

/* The digest (hex sha256, 65 bytes with the NUL) of a command's content, the
 * idempotency check of its commandId: doc's canonical JSON (compact, sorted
 * keys, valuesOverride's JSON text in its canonical form too) without
 * requestedAt, which a re-send of the same command stamps anew. Everything
 * else (tenant, release, operation and its fields, performedBy, description,
 * releaseId) is the command: the same commandId with any of it different is
 * another command. doc is the natural JSON after cmddoc_canonical_ids.
 * Returns 0, or -1 when out of memory. */
int cmddoc_digest(const json_t *doc, char out[65]);

#endif
