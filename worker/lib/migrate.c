/* Ordered, recorded, idempotent migrations; see migrate.h. */
#include "migrate.h"

#include "embedded.h"
#include "log.h"

#include <libpq-fe.h>
#include <stdio.h>
#include <string.h>

static int exec_ok(PGconn *c, const char *sql, char *errstr, size_t errstr_size) {
    PGresult *r = PQexec(c, sql);
    ExecStatusType st = PQresultStatus(r);
    int ok = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
    if (!ok)
        snprintf(errstr, errstr_size, "%s", PQresultErrorMessage(r));
    PQclear(r);
    return ok ? 0 : -1;
}

int migrate_apply(const char *conninfo, char *errstr, size_t errstr_size) {
    int applied = 0;
    PGconn *c = PQconnectdb(conninfo);
    if (PQstatus(c) != CONNECTION_OK) {
        snprintf(errstr, errstr_size, "cannot connect to PostgreSQL: %s", PQerrorMessage(c));
        PQfinish(c);
        return -1;
    }
    PQclear(PQexec(c, "SET client_min_messages = warning"));
    if (exec_ok(c, "SELECT pg_advisory_lock(7272727272)", errstr, errstr_size) < 0 ||
        exec_ok(c,
                "CREATE TABLE IF NOT EXISTS public.helmq_schema_migrations ("
                " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())",
                errstr, errstr_size) < 0)
        goto fail;
    for (const embedded_file_t *m = sql_migrations; m->path; m++) {
        const char *name = strrchr(m->path, '/') ? strrchr(m->path, '/') + 1 : m->path;
        const char *params[1] = {name};
        PGresult *r = PQexecParams(c, "SELECT 1 FROM public.helmq_schema_migrations WHERE version = $1", 1,
                                   NULL, params, NULL, NULL, 0);
        int done = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1;
        int failed = PQresultStatus(r) != PGRES_TUPLES_OK;
        PQclear(r);
        if (failed) {
            snprintf(errstr, errstr_size, "reading the migrations table: %s", PQerrorMessage(c));
            goto fail;
        }
        if (done)
            continue;
        if (exec_ok(c, "BEGIN", errstr, errstr_size) < 0)
            goto fail;
        if (exec_ok(c, m->text, errstr, errstr_size) < 0) {
            char why[1024];
            snprintf(why, sizeof(why), "%s", errstr);
            snprintf(errstr, errstr_size, "migration %s failed: %s", name, why);
            PQclear(PQexec(c, "ROLLBACK"));
            goto fail;
        }
        r = PQexecParams(c, "INSERT INTO public.helmq_schema_migrations (version) VALUES ($1)", 1, NULL,
                         params, NULL, NULL, 0);
        PQclear(r);
        if (exec_ok(c, "COMMIT", errstr, errstr_size) < 0)
            goto fail;
        log_info("migration %s applied", name);
        applied++;
    }
    PQclear(PQexec(c, "SELECT pg_advisory_unlock(7272727272)"));
    PQfinish(c);
    return applied;
fail:
    PQfinish(c);
    return -1;
}
