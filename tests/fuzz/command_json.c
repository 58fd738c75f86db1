/* libFuzzer target: JSON command documents, on the path the CLI (and the
 * API) and the worker take:
 *
 *   bytes -> json_loadb (JSON_REJECT_DUPLICATES, as the CLI reads -f)
 *     -> helmq encode's path: codec_encode of the document as given, as a
 *        command and as an event, without validation; what encodes must
 *        decode to the same values (fuzz_check_encode);
 *     -> the send path: cmddoc_prepare (operation, valuesOverride object to
 *        text, ...) -> validate_command -> if valid: codec_encode(COMMAND)
 *        -> codec_decode -> the decoded command validates too and carries
 *        every value of the sent one (round-trip stability);
 *     -> helmq-worker argv's path: validate_command on the document as
 *        given, then the same round trip.
 *
 * A validated command that does not survive encode/decode abort()s: that
 * is a real bug (the CLI would send a record the worker rejects, or refuse
 * a command validation accepted). See tests/fuzz/README.md. */
#include "cmddoc.h"
#include "codec.h"
#include "validate.h"

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* tests/fuzz/fuzz_common.c */
void fuzz_init(void);
void fuzz_fail(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
void fuzz_check_decoded(codec_type_t type, const json_t *doc, const char *origin);
void fuzz_check_encode(codec_type_t type, const json_t *doc);
void fuzz_command_round_trip(const json_t *doc, const char *origin);

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    fuzz_init();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    json_error_t jerr;
    json_t *doc = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, &jerr);
    if (!doc)
        return 0;

    fuzz_check_encode(CODEC_COMMAND, doc);
    fuzz_check_encode(CODEC_EVENT, doc);
    fuzz_command_round_trip(doc, "as-given");

    if (json_is_object(doc)) {
        /* The send path. A fixed commandId and requestedAt where absent keep
         * the target deterministic (cmddoc_prepare would take a random UUID
         * and the clock). */
        json_t *cmd = json_deep_copy(doc);
        const char *op = json_string_value(json_object_get(cmd, "operation"));
        char verb[16];
        snprintf(verb, sizeof(verb), "%s", op ? op : "install");
        if (!json_object_get(cmd, "commandId"))
            json_object_set_new(cmd, "commandId", json_string("8a4c7a3e-6b47-4c5e-9d2f-6f3f0f1c2b11"));
        if (!json_object_get(cmd, "requestedAt"))
            json_object_set_new(cmd, "requestedAt", json_integer(1764000000000));
        validate_error_t perr;
        if (cmddoc_prepare(cmd, verb, "fuzz", &perr) == 0)
            fuzz_command_round_trip(cmd, "prepared");
        else if ((!perr.field[0] && !perr.whole) || !perr.rule[0] || !perr.message[0])
            fuzz_fail("cmddoc_prepare failed without naming a field, a rule and why");
        json_decref(cmd);
    }
    json_decref(doc);
    return 0;
}
