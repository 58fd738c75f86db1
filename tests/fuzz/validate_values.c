/* libFuzzer target: validate_values() on arbitrary text (valuesOverride as
 * the worker and the CLI check it), against an independent statement of its
 * rule: accepted exactly when the text is at most VALIDATE_VALUES_MAX_BYTES,
 * parses as JSON without duplicate keys, is an object, and is nested at most
 * VALIDATE_VALUES_MAX_DEPTH levels (a scalar or an empty container is one
 * level; a container is one more than its deepest member). Every refusal
 * names the field and a rule. See tests/fuzz/README.md. */
#include "validate.h"

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* tests/fuzz/fuzz_common.c */
void fuzz_init(void);
void fuzz_fail(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    fuzz_init();
    return 0;
}

static int depth(const json_t *v) {
    int max = 0;
    if (json_is_object(v)) {
        const char *k;
        json_t *c;
        json_object_foreach((json_t *)v, k, c) {
            int d = depth(c);
            if (d > max)
                max = d;
        }
    } else if (json_is_array(v)) {
        for (size_t i = 0; i < json_array_size(v); i++) {
            int d = depth(json_array_get(v, i));
            if (d > max)
                max = d;
        }
    }
    return max + 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    /* The text as a C string: the worker and the CLI pass NUL-terminated
     * text, so what follows an embedded NUL is not part of it. */
    char *text = malloc(size + 1);
    if (!text)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    size_t len = strlen(text);

    validate_error_t err;
    memset(&err, 0, sizeof(err));
    json_t *got = validate_values(text, &err);

    json_t *ref = len <= VALIDATE_VALUES_MAX_BYTES ? json_loadb(text, len, JSON_REJECT_DUPLICATES, NULL) : NULL;
    int want = ref && json_is_object(ref) && depth(ref) <= VALIDATE_VALUES_MAX_DEPTH;

    if (got && !want)
        fuzz_fail("validate_values accepted what the rule refuses (depth %d)", ref ? depth(ref) : -1);
    if (!got && want)
        fuzz_fail("validate_values refused (%s, rule %s: %s) what the rule accepts", err.field, err.rule, err.message);
    if (got && !json_equal(got, ref))
        fuzz_fail("validate_values returned other values than the text holds");
    if (!got && (strcmp(err.field, "valuesOverride") != 0 || !err.rule[0] || !err.message[0]))
        fuzz_fail("validate_values refused without naming valuesOverride and a rule");
    json_decref(got);
    json_decref(ref);
    free(text);
    return 0;
}
