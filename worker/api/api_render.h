/* Query rows as JSON, rendered by helmq-api instead of PostgreSQL. A tenant's
 * list of 100 releases cost PostgreSQL ~1.0 ms as json_agg(release_json(r))
 * and ~0.4 ms as the rows themselves, a first history page 0.42-0.54 ms
 * against 0.10 (docs/PERFORMANCE.md, issue 25): json_build_object looks up
 * each argument's type and output function on every row. The objects are
 * those of sql/0002's helmq.release_json and helmq.release_history (names,
 * order, values; tests/api.t compares them), without their whitespace. */
#ifndef HELMQ_API_RENDER_H
#define HELMQ_API_RENDER_H

#include <libpq-fe.h>
#include <stddef.h>

/* How a column's text becomes a member's value (SQL NULL is null). */
typedef enum {
    API_JSON_STRING, /* any text: quoted and escaped */
    API_JSON_RAW,    /* the text is JSON already: numbers, to_json() of a timestamp */
} api_json_kind_t;

typedef struct api_json_col {
    const char *name; /* the member's name, plain ASCII */
    api_json_kind_t kind;
} api_json_col_t;

/* A release as helmq.release_json renders it: the columns API_RELEASE_SQL
 * selects from helmq.releases r, in this order. */
#define API_RELEASE_SQL                                                                                      \
    "r.release_id, r.tenant_id, r.release_name, r.namespace, r.chart_name, r.chart_version, "                \
    "r.app_version, r.status, r.revision, r.description, r.uninstall_reason, r.last_error, "                 \
    "r.values_digest, to_json(r.created_at), to_json(r.updated_at)"
extern const api_json_col_t api_release_cols[];
extern const int api_release_ncols;

/* The first nrows rows of res as a JSON array of objects, column i as
 * member cols[i], the first ncols columns. A NUL-terminated string to free();
 * NULL when res has fewer columns or memory ran out. */
char *api_render_rows(const PGresult *res, int nrows, const api_json_col_t *cols, int ncols);

#endif
