/* The helmq command-line tool: subcommands share these entry points. Each
 * returns the process exit code: 0 success, 1 a runtime failure (delivery,
 * connection), 2 bad usage or invalid input (nothing was sent). */
#ifndef HELMQ_CLI_H
#define HELMQ_CLI_H

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

#endif
