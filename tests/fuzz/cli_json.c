/* libFuzzer target: the CLI's command input (helmq install|upgrade|rollback|
 * uninstall), through the functions send.c calls (producer-cli/send_doc.c):
 * the arguments through config_parse with the send verbs' option table, the
 * -f document through cli_document_parse, then cli_command_build (the
 * release-name argument and the flags override the document's fields,
 * --set-values, --performed-by, cmddoc_prepare, validate_command), then
 * codec_encode as send.c does before publishing.
 *
 * Input: ARGS '\0' DOCUMENT. ARGS is the command line after "helmq", one
 * argument a line: the verb first (install, upgrade, rollback or uninstall;
 * anything else is skipped), then flags and at most one release name.
 * DOCUMENT is the text given with -f (none when empty). An input without a
 * NUL is a document for "helmq install -f". Flags that name files (-f,
 * --values) are skipped: the harness gives the document itself.
 *
 * Oracles ("a clear error, nothing lost"): either the CLI refuses, with a
 * message (bad usage) or a field, a rule and a message (invalid input), or
 * the command it would send has operation = the verb, every text flag's
 * value in its field (UUIDs in lower case), every integer flag's value, the
 * release-name argument, --performed-by's value (or the document's, or the
 * user), and it encodes to Avro and decodes back equal, field by field
 * (fuzz_command_round_trip). */
#include "cli.h"
#include "codec.h"
#include "config.h"

#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* tests/fuzz/fuzz_common.c */
void fuzz_init(void);
void fuzz_fail(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
void fuzz_command_round_trip(const json_t *doc, const char *origin);

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_ARGS 64

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    fuzz_init();
    return 0;
}

static const struct {
    const char *flag, *field;
    int integer, uuid;
} flags[] = {
    {"tenant-id", "tenantId", 0, 1},
    {"namespace", "namespace", 0, 0},
    {"release-name", "releaseName", 0, 0},
    {"chart-name", "chartName", 0, 0},
    {"chart-version", "chartVersion", 0, 0},
    {"app-version", "appVersion", 0, 0},
    {"timeout", "timeout", 1, 0},
    {"description", "description", 0, 0},
    {"reason", "reason", 0, 0},
    {"revision", "revision", 1, 0},
    {"release-id", "releaseId", 0, 1},
    {"command-id", "commandId", 0, 1},
    {"performed-by", "performedBy", 0, 0},
};

/* A refusal names a rule, says why, and names the field (or the document
 * as a whole, for its syntax, its type or its size; "" only for an unknown
 * field whose name is empty); an unknown field is one of the command's
 * keys (doc: the document with the flags' fields), exactly or by its first characters
 * when longer than the field holds (F6). validate_field_text, which send.c
 * prints it with, gives UTF-8 text that reads as that key. */
static void check_refusal(const validate_error_t *e, const json_t *doc) {
    int whole_rule = strcmp(e->rule, "json") == 0 || strcmp(e->rule, "json-object") == 0 ||
                     strcmp(e->rule, "read") == 0 || strcmp(e->rule, "max-size") == 0;
    if (!e->rule[0] || !e->message[0])
        fuzz_fail("cli_json: a refusal without a rule or a message");
    if (e->whole ? !whole_rule || e->field[0] : !e->field[0] && strcmp(e->rule, "unknown-field") != 0)
        fuzz_fail("cli_json: a refusal with rule %s, whole %d, field \"%s\": %s", e->rule, e->whole, e->field,
                  e->message);
    if (e->whole)
        return;
    char text[VALIDATE_FIELD_TEXT_SIZE];
    validate_field_text(e, text, sizeof(text));
    json_error_t jerr;
    json_t *named = text[0] == '"' ? json_loads(text, JSON_DECODE_ANY, &jerr) : json_string(text);
    if (!named || strcmp(json_string_value(named), e->field) != 0)
        fuzz_fail("cli_json: field \"%s\" is written \"%s\", which reads as another", e->field, text);
    json_decref(named);
    if (strcmp(e->rule, "unknown-field") != 0)
        return;
    const char *k;
    json_t *v;
    size_t n = strlen(e->field);
    json_object_foreach((json_t *)doc, k, v) {
        if (strcmp(k, e->field) == 0 ||
            (strlen(k) >= VALIDATE_FIELD_SIZE && n > VALIDATE_FIELD_SIZE - 5 && strncmp(k, e->field, n) == 0))
            return;
    }
    fuzz_fail("cli_json: unknown field \"%s\" is none of the command's keys", e->field);
}

static void check_field(const json_t *doc, const char *field, const char *want, int uuid) {
    const char *got = json_string_value(json_object_get(doc, field));
    if (!got || (uuid ? strcasecmp(got, want) : strcmp(got, want)) != 0)
        fuzz_fail("cli_json: %s is \"%s\", the flag said \"%s\"", field, got ? got : "(none)", want);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *in = (const char *)data;
    const char *nul = memchr(in, '\0', size);
    char *args = nul ? strndup(in, (size_t)(nul - in)) : strdup("install");
    const char *doc_text = nul ? nul + 1 : in;
    size_t doc_len = nul ? size - (size_t)(nul - in) - 1 : size;
    int has_doc = !nul || doc_len > 0;

    char *argv[MAX_ARGS + 2];
    int argc = 0;
    argv[argc++] = "helmq";
    for (char *save = NULL, *a = strtok_r(args, "\n", &save); a && argc < MAX_ARGS; a = strtok_r(NULL, "\n", &save))
        argv[argc++] = a;
    argv[argc] = NULL;
    if (argc < 2 || (strcmp(argv[1], "install") != 0 && strcmp(argv[1], "upgrade") != 0 &&
                     strcmp(argv[1], "rollback") != 0 && strcmp(argv[1], "uninstall") != 0)) {
        free(args);
        return 0;
    }
    const char *verb = argv[1];
    config_t cfg;
    char errstr[512] = "";
    json_t *doc = NULL;
    int rc = config_parse(&cfg, cli_send_opts, argc, argv, 2, errstr, sizeof(errstr));
    if (rc < 0 || cfg.nargs > 1) {
        if (rc < 0 && !errstr[0])
            fuzz_fail("cli_json: config_parse refused the arguments without a message");
        goto out; /* "helmq VERB: ..." and exit 2 */
    }
    if (rc == CONFIG_HELP || config_get(&cfg, "file") || config_get(&cfg, "values"))
        goto out;

    validate_error_t e;
    doc = has_doc ? cli_document_parse(doc_text, doc_len, "fuzz.json", NULL, &e) : json_object();
    if (!doc) {
        check_refusal(&e, NULL);
        goto out;
    }
    json_t *given = json_deep_copy(doc);
    if (cli_command_build(doc, verb, &cfg, "fuzz-user", &e) < 0) {
        check_refusal(&e, doc); /* the document with the flags' fields: --reason is unknown to install */
        json_decref(given);
        goto out;
    }
    /* What the flags and the argument say is what is sent. */
    const char *op = json_string_value(json_object_get(doc, "operation"));
    if (!op || strcmp(op, verb) != 0)
        fuzz_fail("cli_json: helmq %s builds a command with operation %s", verb, op ? op : "(none)");
    if (cfg.nargs == 1 && !config_get(&cfg, "release-name")) /* the flag wins */
        check_field(doc, "releaseName", cfg.args[0], 0);
    for (size_t i = 0; i < sizeof(flags) / sizeof(flags[0]); i++) {
        const char *v = config_get(&cfg, flags[i].flag);
        if (!v)
            continue;
        if (flags[i].integer) {
            const json_t *j = json_object_get(doc, flags[i].field);
            if (!json_is_integer(j) || json_integer_value(j) != config_int(&cfg, flags[i].flag))
                fuzz_fail("cli_json: %s is not --%s's %ld", flags[i].field, flags[i].flag,
                          config_int(&cfg, flags[i].flag));
        } else {
            check_field(doc, flags[i].field, v, flags[i].uuid);
        }
    }
    if (!config_get(&cfg, "performed-by") && !json_is_string(json_object_get(given, "performedBy")))
        check_field(doc, "performedBy", "fuzz-user", 0);
    json_decref(given);

    /* send.c: codec_encode, then publish. A validated command that the
     * schema refuses would exit 2 with a message that names no rule. */
    unsigned char *buf = NULL;
    size_t len = 0;
    if (codec_encode(CODEC_COMMAND, doc, &buf, &len, errstr, sizeof(errstr)) < 0) {
        char *d = json_dumps(doc, JSON_COMPACT | JSON_SORT_KEYS);
        fuzz_fail("cli_json: a command validation passed does not encode: %s\n  command: %s", errstr, d);
    }
    free(buf);
    fuzz_command_round_trip(doc, "cli");
out:
    json_decref(doc);
    config_free(&cfg);
    free(args);
    return 0;
}
