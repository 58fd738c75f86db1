/* Building a command document before it is sent: shared by the CLI and the
 * HTTP API so both produce the same records from the same input. */
#ifndef HELMQ_CMDDOC_H
#define HELMQ_CMDDOC_H

#include <jansson.h>
#include <stddef.h>

/* Completes doc (natural JSON, modified in place) as a command of operation
 * op: sets "operation", turns a valuesOverride object into its canonical
 * JSON text (compact, sorted keys: the same values give the same bytes and
 * digest), and fills commandId (a new UUID), performedBy (performed_by, when
 * doc has none) and requestedAt (now) when absent. Returns 0, or -1 with
 * errstr naming the field and rule. Validation is separate
 * (validate_command). */
int cmddoc_prepare(json_t *doc, const char *op, const char *performed_by, char *errstr, size_t errstr_size);

#endif
