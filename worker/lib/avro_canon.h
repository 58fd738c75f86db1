/* Avro schema identity: the Parsing Canonical Form of a schema and its
 * CRC-64-AVRO fingerprint, as the Avro specification defines them. Built here
 * because avro-c 1.11 offers neither. */
#ifndef HELMQ_AVRO_CANON_H
#define HELMQ_AVRO_CANON_H

#include <stddef.h>
#include <stdint.h>

/* Returns the Parsing Canonical Form of the schema in json[0..len) as a
 * malloc'd NUL-terminated string the caller frees, or NULL with errstr
 * filled when the text is not a valid schema. */
char *avro_canonical_form(const char *json, size_t len, char *errstr, size_t errstr_size);

/* CRC-64-AVRO of buf[0..len) (the fingerprint of a canonical form). */
uint64_t avro_crc64(const void *buf, size_t len);

#endif
