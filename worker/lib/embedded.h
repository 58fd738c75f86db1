/* Files of the source tree compiled into every program by the build
 * (tests/lib/embed.sh): the Avro schemas of schemas/ and the migrations of
 * sql/, so the programs never depend on a second hand-written copy. */
#ifndef HELMQ_EMBEDDED_H
#define HELMQ_EMBEDDED_H

typedef struct embedded_file {
    const char *path; /* e.g. "schemas/helm-release-command.avsc"; NULL ends a table */
    const char *text; /* the file's contents */
} embedded_file_t;

extern const embedded_file_t schema_sources[]; /* schemas/ */
extern const embedded_file_t sql_migrations[]; /* sql/, in order */

#endif
