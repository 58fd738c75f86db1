/* The .avsc files of schemas/, compiled into every program by the build
 * (tests/lib/embed-schemas.sh generates the table). */
#ifndef HELMQ_SCHEMAS_H
#define HELMQ_SCHEMAS_H

typedef struct schema_source {
    const char *path; /* e.g. "schemas/helm-release-command.avsc"; NULL ends the table */
    const char *json; /* the file's text */
} schema_source_t;

extern const schema_source_t schema_sources[];

#endif
