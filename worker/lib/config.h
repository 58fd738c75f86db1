/* Configuration: one table of options per program drives parsing (defaults,
 * then environment, then flags), --help and the README's reference.
 *
 * librdkafka properties pass through unchanged: `-X key=value` (as kcat) or
 * the environment variable HELMQ_KAFKA_<KEY> with dots written as
 * underscores (HELMQ_KAFKA_SECURITY_PROTOCOL=ssl sets security.protocol). */
#ifndef HELMQ_CONFIG_H
#define HELMQ_CONFIG_H

#include <stdio.h>

typedef enum config_type { CONFIG_STRING, CONFIG_INT, CONFIG_BOOL } config_type_t;

typedef struct config_opt {
    const char *name; /* long flag without dashes, e.g. "brokers" */
    char short_name;  /* e.g. 'f', or 0 */
    const char *env;  /* environment variable, or NULL */
    config_type_t type;
    const char *def;  /* default as text, or NULL for none */
    const char *help; /* one sentence */
} config_opt_t;

typedef struct config {
    const config_opt_t *opts; /* the table, ended by a NULL name; not owned */
    char **values;            /* one per option, NULL when unset */
    char **kafka_props;       /* "key=value" pass-through properties */
    int kafka_count;
    char **args; /* positional arguments (point into argv) */
    int nargs;
} config_t;

#define CONFIG_HELP 1 /* config_parse saw -h/--help */

/* Fills c from opts, the environment and argv[first..argc). Returns 0,
 * CONFIG_HELP when help was asked for, or -1 with errstr filled (unknown
 * flag, missing value, a value of the wrong type). c owns what it holds;
 * free it with config_free even after an error. */
int config_parse(config_t *c, const config_opt_t *opts, int argc, char **argv, int first, char *errstr,
                 size_t errstr_size);
void config_free(config_t *c);

/* The value of option name (NULL when unset and without default). */
const char *config_get(const config_t *c, const char *name);
long config_int(const config_t *c, const char *name);
int config_bool(const config_t *c, const char *name);
/* Whether the option was set by the environment or a flag. */
int config_given(const config_t *c, const char *name);

/* Prints the options as --help lines: flag, value, help, env and default. */
void config_usage(const config_opt_t *opts, FILE *out);
/* Prints the options as a Markdown table, for the README. */
void config_usage_markdown(const config_opt_t *opts, FILE *out);

#endif
