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

static const char *base_name(const char *path) {
    const char *slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}

/* The number a migration's name starts with ("0001" of "0001_worker_baseline.sql"). */
static size_t number_len(const char *name) {
    size_t n = 0;
    while (name[n] >= '0' && name[n] <= '9')
        n++;
    return n;
}

/* sql/ is append-only: a recorded migration whose number is one of ours under
 * another name means the database has another history than the one compiled
 * in (the one before the baseline of sql/0001-0002, or another branch's), and
 * applying ours on top of it would misapply them. A recorded number we do not
 * have at all is a newer program's migration, and is left alone. Returns -1
 * with errstr filled on such a database, or when it cannot be read. */
static int check_history(PGconn *c, char *errstr, size_t errstr_size) {
    PGresult *r = PQexec(c, "SELECT version FROM public.helmq_schema_migrations ORDER BY version");
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        snprintf(errstr, errstr_size, "reading the migrations table: %s", PQerrorMessage(c));
        PQclear(r);
        return -1;
    }
    for (int i = 0; i < PQntuples(r); i++) {
        const char *recorded = PQgetvalue(r, i, 0);
        size_t n = number_len(recorded);
        for (const embedded_file_t *m = sql_migrations; n > 0 && m->path; m++) {
            const char *name = base_name(m->path);
            if (number_len(name) != n || strncmp(name, recorded, n) != 0 || strcmp(name, recorded) == 0)
                continue;
            snprintf(
                errstr, errstr_size,
                "the database's migrations are not this program's: it records %s where this program "
                "has %s (public.helmq_schema_migrations). A database migrated before sql/0001-0015 were "
                "folded into one baseline per schema (0001_worker_baseline.sql, "
                "0002_projection_baseline.sql) cannot be upgraded in place; nothing was applied. Drop and "
                "recreate the database (or: DROP SCHEMA helmq, helmq_worker CASCADE; DROP TABLE "
                "public.helmq_schema_migrations;), then run the migrations again",
                recorded, name);
            PQclear(r);
            return -1;
        }
    }
    PQclear(r);
    return 0;
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
                errstr, errstr_size) < 0 ||
        check_history(c, errstr, errstr_size) < 0)
        goto fail;
    for (const embedded_file_t *m = sql_migrations; m->path; m++) {
        const char *name = base_name(m->path);
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
