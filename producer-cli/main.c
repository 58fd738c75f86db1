/* helmq: the producer CLI. Sends install/upgrade/rollback/uninstall commands
 * to Kafka, converts records between JSON and single-object Avro, queries the
 * projection, and shows and releases namespace claims. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "codec.h"
#include "log.h"

static void usage(FILE *out) {
    fprintf(out, "Usage: helmq COMMAND [OPTIONS]\n\n"
                 "Send Helm release commands to Kafka and inspect helmq records.\n\n"
                 "Commands:\n"
                 "  install     publish an install command (a new release)\n"
                 "  upgrade     publish an upgrade command (a new revision)\n"
                 "  rollback    publish a rollback command (to the previous or a given revision)\n"
                 "  uninstall   publish an uninstall command (record and history are kept)\n"
                 "  encode      JSON on stdin -> single-object Avro on stdout\n"
                 "  decode      single-object Avro on stdin -> JSON on stdout\n"
                 "  events      print the release events as JSON lines\n"
                 "  releases    query the projection: get, list, history, summary\n"
                 "  namespaces  which tenant owns a namespace: get, list; release a claim (operators)\n\n"
                 "Run 'helmq COMMAND --help' for the options of a command.\n"
                 "Exit codes: 0 success, 1 runtime failure (e.g. delivery), 2 invalid input or usage.\n");
}

int main(int argc, char **argv) {
    char errstr[512];
    log_init("helmq", getenv("HELMQ_LOG_LEVEL") ? getenv("HELMQ_LOG_LEVEL") : "warn");
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
        strcmp(argv[1], "help") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? EXIT_USAGE : 0;
    }
    if (codec_init(errstr, sizeof(errstr)) < 0) {
        fprintf(stderr, "helmq: schemas: %s\n", errstr);
        return EXIT_RUNTIME;
    }
    const char *cmd = argv[1];
    int rc;
    if (strcmp(cmd, "install") == 0 || strcmp(cmd, "upgrade") == 0 || strcmp(cmd, "rollback") == 0 ||
        strcmp(cmd, "uninstall") == 0)
        rc = cli_send(cmd, argc, argv);
    else if (strcmp(cmd, "encode") == 0)
        rc = cli_encode(argc, argv);
    else if (strcmp(cmd, "decode") == 0)
        rc = cli_decode(argc, argv);
    else if (strcmp(cmd, "events") == 0)
        rc = cli_events(argc, argv);
    else if (strcmp(cmd, "releases") == 0)
        rc = cli_releases(argc, argv);
    else if (strcmp(cmd, "namespaces") == 0)
        rc = cli_namespaces(argc, argv);
    else {
        fprintf(stderr, "helmq: unknown command \"%s\" (see helmq --help)\n", cmd);
        rc = EXIT_USAGE;
    }
    codec_term();
    return rc;
}
