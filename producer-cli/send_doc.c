/* The command document of helmq install|upgrade|rollback|uninstall, built
 * from a JSON document (-f) and flags without sending anything: the option
 * table, reading and parsing the document, the flags that override its
 * fields, cmddoc_prepare and validate_command. send.c encodes and publishes
 * what this builds; the fuzz target tests/fuzz/cli_json.c runs the same
 * functions on fuzzed documents and flags. See cli.h. */
#include "cli.h"
#include "cmddoc.h"
#include "config.h"
#include "kafka.h"
#include "validate.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const config_opt_t cli_send_opts[] = {
    {"file", 'f', NULL, CONFIG_STRING, NULL,
     "read the command from this JSON document (- for stdin); flags override its fields"},
    {"tenant-id", 't', "HELMQ_TENANT_ID", CONFIG_STRING, NULL, "tenant UUID (tenantId)"},
    {"namespace", 'n', NULL, CONFIG_STRING, NULL, "Kubernetes namespace (namespace)"},
    {"release-name", 'r', NULL, CONFIG_STRING, NULL,
     "Helm release name (releaseName); also the first argument"},
    {"chart-name", 0, NULL, CONFIG_STRING, NULL, "chart name (chartName; install, upgrade)"},
    {"chart-version", 0, NULL, CONFIG_STRING, NULL, "chart version (chartVersion; install, upgrade)"},
    {"app-version", 0, NULL, CONFIG_STRING, NULL, "application version (appVersion; install, upgrade)"},
    {"values", 0, NULL, CONFIG_STRING, NULL,
     "file holding valuesOverride as a JSON object (install, upgrade)"},
    {"set-values", 0, NULL, CONFIG_STRING, NULL, "valuesOverride as JSON object text (install, upgrade)"},
    {"timeout", 0, NULL, CONFIG_INT, NULL, "seconds to wait for the operation (timeout; schema default 300)"},
    {"atomic", 0, NULL, CONFIG_BOOL, NULL, "roll back automatically on failure (atomic; default false)"},
    {"wait-for-jobs", 0, NULL, CONFIG_BOOL, NULL,
     "wait for resources and hook jobs (waitForJobs; default false)"},
    {"description", 'd', NULL, CONFIG_STRING, NULL, "description recorded in the revision history"},
    {"reason", 0, NULL, CONFIG_STRING, NULL, "why the release is uninstalled (uninstall)"},
    {"revision", 0, NULL, CONFIG_INT, NULL,
     "revision to roll back to (rollback; default the previous deployed one)"},
    {"release-id", 0, NULL, CONFIG_STRING, NULL, "guard: apply only to this release lifecycle (releaseId)"},
    {"command-id", 0, NULL, CONFIG_STRING, NULL,
     "command UUID, the idempotency key (default: a new random UUID)"},
    {"performed-by", 'u', "HELMQ_PERFORMED_BY", CONFIG_STRING, NULL,
     "who asks for the operation (default: the OS user)"},
    {"dry-run", 0, NULL, CONFIG_BOOL, "false", "validate and print the command as JSON; send nothing"},
    {"wait", 'w', NULL, CONFIG_BOOL, "false",
     "wait for the command's terminal event, show progress, print the outcome; exit 3 if it failed or was "
     "rejected"},
    {"wait-timeout", 0, "HELMQ_WAIT_TIMEOUT", CONFIG_INT, NULL,
     "with --wait, give up after this many seconds (exit 1; default: the command's timeout + 120)"},
    {"events-topic", 0, "HELMQ_EVENTS_TOPIC", CONFIG_STRING, KAFKA_TOPIC_EVENTS,
     "topic --wait reads the outcome from"},
    {"brokers", 'b', "HELMQ_BROKERS", CONFIG_STRING, KAFKA_DEFAULT_BROKERS, "Kafka bootstrap servers"},
    {"commands-topic", 0, "HELMQ_COMMANDS_TOPIC", CONFIG_STRING, KAFKA_TOPIC_COMMANDS,
     "topic the command is published to"},
    {"delivery-timeout-ms", 0, "HELMQ_DELIVERY_TIMEOUT_MS", CONFIG_INT, "30000",
     "give up delivering after this many ms (exit 1)"},
    {NULL, 0, NULL, 0, NULL, NULL},
};

/* Flag name -> command field, for the flags that copy straight over. */
static const struct {
    const char *flag, *field;
    int integer;
} flag_fields[] = {
    {"tenant-id", "tenantId", 0},   {"namespace", "namespace", 0},        {"release-name", "releaseName", 0},
    {"chart-name", "chartName", 0}, {"chart-version", "chartVersion", 0}, {"app-version", "appVersion", 0},
    {"timeout", "timeout", 1},      {"description", "description", 0},    {"reason", "reason", 0},
    {"revision", "revision", 1},    {"release-id", "releaseId", 0},       {"command-id", "commandId", 0},
};

json_t *cli_load_document(const char *path, const char *field, size_t max, validate_error_t *err) {
    size_t len;
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "r");
    if (!f) {
        validate_fail(err, field, "read", "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    char *text = cli_read_all(f, max, &len);
    int io_error = !text && ferror(f);
    if (f != stdin)
        fclose(f);
    if (!text) {
        if (io_error)
            validate_fail(err, field, "read", "%s: cannot read", path);
        else
            validate_fail(err, field, "max-size", "%s is larger than the limit of %zu bytes (%zu KiB)%s",
                          path, max, max / 1024, field ? "" : " for a command document");
        return NULL;
    }
    json_t *doc = cli_document_parse(text, len, path, field, err);
    free(text);
    return doc;
}

json_t *cli_document_parse(const char *text, size_t len, const char *path, const char *field,
                           validate_error_t *err) {
    json_error_t jerr;
    json_t *doc = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!doc) {
        validate_fail(err, field, "json", "%s: invalid JSON at line %d, column %d: %s", path, jerr.line,
                      jerr.column, jerr.text);
        return NULL;
    }
    if (!json_is_object(doc)) {
        validate_fail(err, field, "json-object", "%s: the document must be a JSON object", path);
        json_decref(doc);
        return NULL;
    }
    return doc;
}

/* Sets doc[field] to the text v of a flag (or argument), refusing what is not
 * UTF-8: jansson would turn it into a missing field, silently. */
static int set_text(json_t *doc, const char *field, const char *v, validate_error_t *err) {
    if (validate_utf8(field, v, strlen(v), err) < 0)
        return -1;
    json_object_set_new(doc, field, json_string(v));
    return 0;
}

int cli_command_build(json_t *doc, const char *verb, const config_t *cfg, const char *user,
                      validate_error_t *err) {
    if (cfg->nargs == 1 && set_text(doc, "releaseName", cfg->args[0], err) < 0)
        return -1;
    for (size_t i = 0; i < sizeof(flag_fields) / sizeof(flag_fields[0]); i++) {
        const char *v = config_get(cfg, flag_fields[i].flag);
        if (v && flag_fields[i].integer) {
            json_object_set_new(doc, flag_fields[i].field,
                                json_integer(config_int(cfg, flag_fields[i].flag)));
        } else if (v && set_text(doc, flag_fields[i].field, v, err) < 0)
            return -1;
    }
    if (config_get(cfg, "atomic"))
        json_object_set_new(doc, "atomic", json_boolean(config_bool(cfg, "atomic")));
    if (config_get(cfg, "wait-for-jobs"))
        json_object_set_new(doc, "waitForJobs", json_boolean(config_bool(cfg, "wait-for-jobs")));
    const char *values_file = config_get(cfg, "values");
    const char *values_text = config_get(cfg, "set-values");
    if (values_file || values_text) {
        /* The text as given: validate_values checks it as valuesOverride is
         * checked everywhere (syntax with line and column, object, size of
         * the compact form, depth). A file may be pretty-printed, so it is
         * read up to the document limit; its compact form is what counts. */
        json_t *values = values_file ? cli_load_document(values_file, "valuesOverride", CLI_MAX_DOCUMENT, err)
                                     : validate_values(values_text, err);
        if (!values) {
            if (values_file && strcmp(err->rule, "max-size") == 0)
                validate_fail(
                    err, "valuesOverride", "max-size",
                    "%s is larger than %d bytes: valuesOverride may be at most %d bytes (%d KiB) of "
                    "compact JSON",
                    values_file, CLI_MAX_DOCUMENT, VALIDATE_VALUES_MAX_BYTES,
                    VALIDATE_VALUES_MAX_BYTES / 1024);
            return -1;
        }
        json_object_set_new(doc, "valuesOverride", values);
    }
    const char *by = config_get(cfg, "performed-by");
    if (by && set_text(doc, "performedBy", by, err) < 0)
        return -1;
    if (cmddoc_prepare(doc, verb, user, err) < 0)
        return -1;
    return validate_command(doc, err);
}
