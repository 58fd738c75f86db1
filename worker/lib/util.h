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

/* Lowers the case of a UUID's hex digits in place: UUIDs are case-insensitive
 * on input and written in lower case (RFC 4122), so the lower-case form is
 * the canonical one for keys and comparisons. Leaves s alone unless it is a
 * UUID (uuid_valid); returns whether it is one. */
int uuid_lower(char *s);

/* The length of the UTF-8 sequence that starts s[0..len): 1 to 4 for a
 * well-formed character (no overlong form, surrogate or code point beyond
 * U+10FFFF), 0 for an invalid or incomplete one (or len 0). */
size_t utf8_char_len(const unsigned char *s, size_t len);

/* The length of the longest prefix of s[0..len) of at most max bytes that
 * does not end inside a well-formed UTF-8 character; an invalid byte counts
 * as a character of its own. */
size_t utf8_prefix_len(const char *s, size_t len, size_t max);

/* The length of s[0..len) without the multi-byte character its end cuts (a
 * lead byte with fewer continuation bytes than it announces), if any: for a
 * text a bounded copy such as vsnprintf has cut. */
size_t utf8_complete_len(const char *s, size_t len);

/* Copies the NUL-terminated src into dst (size bytes with the NUL), cut on a
 * UTF-8 character boundary when it does not fit, so a valid UTF-8 text stays
 * valid. Returns 1 when src was cut, 0 when it fit. size must be at least 1. */
int utf8_copy(char *dst, size_t size, const char *src);

/* Makes the NUL-terminated s valid UTF-8 in place without lengthening it: a
 * character cut at the end (by a bounded copy such as snprintf) is dropped,
 * and each other byte that starts no well-formed character becomes '?'. For
 * text that must fit a UTF-8 field such as an event's. */
void utf8_sanitize(char *s);

/* Hex SHA-256 of buf[0..len) into out (65 bytes with the NUL). */
void sha256_hex(const void *buf, size_t len, char out[65]);

/* Wall-clock milliseconds since the Unix epoch. */
int64_t now_ms(void);

/* Formats ms since the epoch as RFC 3339 UTC with milliseconds. */
void format_time_ms(int64_t ms, char *out, size_t size);

#endif
