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

#define VALIDATE_FIELD_SIZE 256 /* of validate_error_t's field: any name of up to 255 bytes */

typedef struct validate_error {
    /* The offending field, named as the input names it ("releaseName",
     * "colour", "-", "" or "a/b" for a key of those names); a name longer
     * than VALIDATE_FIELD_SIZE - 1 bytes is cut at a character boundary. ""
     * when whole is set. */
    char field[VALIDATE_FIELD_SIZE];
    int whole;         /* the input as a whole is refused (not JSON, not an object, ...), no one field */
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
 * that refuse input with the same shape of error. field NULL: the input as a
 * whole (err->whole). No marker string stands for "the whole": any string
 * can be a key. */
int validate_fail(validate_error_t *err, const char *field, const char *rule, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#define VALIDATE_FIELD_TEXT_SIZE                                                                             \
    (6 * VALIDATE_FIELD_SIZE + 3) /* any field as validate_field_text writes it */

/* Writes err's field into buf (of size bytes; VALIDATE_FIELD_TEXT_SIZE holds
 * any) for a message to people: as it is when it reads as a name (a letter
 * or '_', then letters, digits and '_', as every field of the schemas),
 * otherwise as a JSON string ("-", "", "a b", "a\"b"), so that every key is
 * told apart from every other and from the words around it. "" for an
 * error about the input as a whole: the caller says "input", "body" or
 * "command" then. Returns buf. */
const char *validate_field_text(const validate_error_t *err, char *buf, size_t size);

#endif
