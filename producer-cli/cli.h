/* The helmq command-line tool: subcommands share these entry points. Each
 * returns the process exit code: 0 success, 1 a runtime failure (delivery,
 * connection), 2 bad usage or invalid input (nothing was sent). */
#ifndef HELMQ_CLI_H
#define HELMQ_CLI_H

#include "config.h"
#include "validate.h"

#include <jansson.h>
#include <stddef.h>
#include <stdio.h>

#define EXIT_RUNTIME 1
#define EXIT_USAGE 2

int cli_send(const char *verb, int argc, char **argv);
int cli_encode(int argc, char **argv);
int cli_decode(int argc, char **argv);
int cli_events(int argc, char **argv);
int cli_releases(int argc, char **argv);
int cli_namespaces(int argc, char **argv);

/* Reads all of f into a malloc'd buffer (NUL-terminated, length in *len);
 * NULL on error or beyond max bytes. */
char *cli_read_all(FILE *f, size_t max, size_t *len);

/* send_doc.c: the command document of the send verbs, without I/O but the
 * files named by -f and --values. */
#define CLI_MAX_DOCUMENT (4 * 1024 * 1024) /* a command document given with -f */

/* The options of helmq install|upgrade|rollback|uninstall. */
extern const config_opt_t cli_send_opts[];

/* Reads path (- for stdin) as a JSON object for field (NULL for the command
 * document itself, which an error then names as a whole): at most max bytes, whose limit (max, as the check
 * uses it) the message names. Returns a new reference, or NULL with *err filled (rule "read", "max-size", or
 * cli_document_parse's). */
json_t *cli_load_document(const char *path, const char *field, size_t max, validate_error_t *err);

/* Parses text[0..len), read from path, as a JSON object without duplicate
 * keys for field (NULL: the command document). Returns a new reference, or NULL with *err filled (rule
 * "json" with jansson's line and column, or "json-object"). */
json_t *cli_document_parse(const char *text, size_t len, const char *path, const char *field,
                           validate_error_t *err);

/* Completes doc (the -f document, or an empty object) as the command of verb
 * from cfg (parsed with cli_send_opts): the release-name argument and the
 * flags override its fields (text flags must be UTF-8), --values or
 * --set-values give valuesOverride, --performed-by performedBy (user when
 * neither gives one); then cmddoc_prepare and validate_command. Returns 0
 * (doc is the command to encode), or -1 with *err naming the field and the
 * rule. */
int cli_command_build(json_t *doc, const char *verb, const config_t *cfg, const char *user,
                      validate_error_t *err);

#endif
