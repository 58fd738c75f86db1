/* helmq encode / helmq decode: records between natural JSON and the wire. */
#include "cli.h"
#include "codec.h"
#include "config.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CLI_MAX_RECORD (16 * 1024 * 1024)

char *cli_read_all(FILE *f, size_t max, size_t *len) {
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        if (n + 1 >= cap) {
            if (cap > max)
                break;
            char *b = realloc(buf, cap * 2);
            if (!b)
                break;
            buf = b;
            cap *= 2;
        }
        size_t r = fread(buf + n, 1, cap - n - 1, f);
        n += r;
        if (r == 0) {
            if (ferror(f))
                break;
            if (n > max)
                break;
            buf[n] = '\0';
            *len = n;
            return buf;
        }
    }
    free(buf);
    return NULL;
}

static const config_opt_t encode_opts[] = {
    {"type", 't', NULL, CONFIG_STRING, "command", "record type: command or event"},
    {NULL, 0, NULL, 0, NULL, NULL},
};

int cli_encode(int argc, char **argv) {
    char errstr[512];
    config_t cfg;
    int rc = config_parse(&cfg, encode_opts, argc, argv, 2, errstr, sizeof(errstr));
    if (rc == CONFIG_HELP) {
        printf("Usage: helmq encode [--type command|event] < record.json > record.avro\n\n"
               "Reads one record as JSON on stdin and writes it in Avro single-object encoding\n"
               "(C3 01, the schema fingerprint, the datum) on stdout. Absent fields take their\n"
               "schema defaults. A command is the document 'helmq <verb> -f' accepts plus\n"
               "\"operation\".\n\nOptions:\n");
        config_usage(encode_opts, stdout);
        config_free(&cfg);
        return 0;
    }
    const char *type = rc == 0 ? config_get(&cfg, "type") : NULL;
    if (rc < 0 || cfg.nargs || (strcmp(type, "command") && strcmp(type, "event"))) {
        fprintf(stderr, "helmq encode: %s\n", rc < 0 ? errstr : "usage: helmq encode [--type command|event]");
        config_free(&cfg);
        return EXIT_USAGE;
    }
    codec_type_t t = strcmp(type, "event") == 0 ? CODEC_EVENT : CODEC_COMMAND;
    config_free(&cfg);

    size_t len;
    char *text = cli_read_all(stdin, CLI_MAX_RECORD, &len);
    if (!text) {
        fprintf(stderr, "helmq encode: cannot read stdin (or more than %d bytes)\n", CLI_MAX_RECORD);
        return EXIT_USAGE;
    }
    json_error_t jerr;
    json_t *doc = json_loadb(text, len, 0, &jerr);
    free(text);
    if (!doc) {
        fprintf(stderr, "helmq encode: stdin: invalid JSON at line %d, column %d: %s\n", jerr.line,
                jerr.column, jerr.text);
        return EXIT_USAGE;
    }
    if (t == CODEC_COMMAND) {
        const char *key;
        json_t *val;
        const char *op = json_string_value(json_object_get(doc, "operation"));
        json_object_foreach(doc, key, val) {
            if (!codec_command_field_known(op, key)) {
                fprintf(stderr, "helmq encode: unknown field \"%s\"%s%s\n", key, op ? " for " : "",
                        op ? op : "");
                json_decref(doc);
                return EXIT_USAGE;
            }
        }
    }
    unsigned char *out;
    size_t out_len;
    rc = codec_encode(t, doc, &out, &out_len, errstr, sizeof(errstr));
    json_decref(doc);
    if (rc < 0) {
        fprintf(stderr, "helmq encode: %s\n", errstr);
        return EXIT_USAGE;
    }
    size_t w = fwrite(out, 1, out_len, stdout);
    free(out);
    if (w != out_len || fflush(stdout) != 0) {
        fprintf(stderr, "helmq encode: cannot write stdout\n");
        return EXIT_RUNTIME;
    }
    return 0;
}

static const config_opt_t decode_opts[] = {
    {"pretty", 0, NULL, CONFIG_BOOL, "false", "indent the JSON output"},
    {NULL, 0, NULL, 0, NULL, NULL},
};

int cli_decode(int argc, char **argv) {
    char errstr[512];
    config_t cfg;
    int rc = config_parse(&cfg, decode_opts, argc, argv, 2, errstr, sizeof(errstr));
    if (rc == CONFIG_HELP) {
        printf("Usage: helmq decode [--pretty] < record.avro\n\n"
               "Reads one Avro single-object record on stdin, finds its writer schema by\n"
               "fingerprint among every known version, resolves it to the current schema\n"
               "(filling defaults) and prints it as JSON.\n\nOptions:\n");
        config_usage(decode_opts, stdout);
        config_free(&cfg);
        return 0;
    }
    if (rc < 0 || cfg.nargs) {
        fprintf(stderr, "helmq decode: %s\n", rc < 0 ? errstr : "usage: helmq decode < record.avro");
        config_free(&cfg);
        return EXIT_USAGE;
    }
    int pretty = config_bool(&cfg, "pretty");
    config_free(&cfg);
    size_t len;
    char *buf = cli_read_all(stdin, CLI_MAX_RECORD, &len);
    if (!buf) {
        fprintf(stderr, "helmq decode: cannot read stdin (or more than %d bytes)\n", CLI_MAX_RECORD);
        return EXIT_USAGE;
    }
    codec_type_t t;
    json_t *doc;
    rc = codec_decode(buf, len, &t, &doc, errstr, sizeof(errstr));
    free(buf);
    if (rc < 0) {
        fprintf(stderr, "helmq decode: %s: %s\n", codec_strerror(rc), errstr);
        return EXIT_USAGE;
    }
    char *out = json_dumps(doc, JSON_PRESERVE_ORDER | (pretty ? JSON_INDENT(2) : JSON_COMPACT));
    json_decref(doc);
    if (!out)
        return EXIT_RUNTIME;
    printf("%s\n", out);
    free(out);
    return fflush(stdout) == 0 ? 0 : EXIT_RUNTIME;
}
