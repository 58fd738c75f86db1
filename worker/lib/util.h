/* Small helpers every program uses: UUIDs, digests, clocks, text checks. */
#ifndef HELMQ_UTIL_H
#define HELMQ_UTIL_H

#include <stddef.h>
#include <stdint.h>

#define UUID_STR_LEN 37 /* 36 characters and the NUL */

/* Writes a random (version 4) UUID into out. Returns 0, or -1 when the
 * system's random source fails. */
int uuid_v4(char out[UUID_STR_LEN]);

/* Writes the name-based (version 5, SHA-1) UUID of name in namespace ns
 * (itself a UUID string): the same inputs always give the same UUID. */
int uuid_v5(const char *ns, const char *name, size_t name_len, char out[UUID_STR_LEN]);

/* Whether s is a UUID in canonical textual form (8-4-4-4-12 hex). */
int uuid_valid(const char *s);

/* Hex SHA-256 of buf[0..len) into out (65 bytes with the NUL). */
void sha256_hex(const void *buf, size_t len, char out[65]);

/* Wall-clock milliseconds since the Unix epoch. */
int64_t now_ms(void);

/* Formats ms since the epoch as RFC 3339 UTC with milliseconds. */
void format_time_ms(int64_t ms, char *out, size_t size);

#endif
