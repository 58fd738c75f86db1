/* worker/lib/db.c against a real PostgreSQL (HELMQ_DATABASE_URL; tests/db.t
 * starts one, `make unit` without it skips): queries run in order, each
 * caller gets its own result, in groups of 1, 7 and 64 statements; a
 * statement that fails in a group fails alone while the group's others are
 * sent again on the same session and commit exactly once; callbacks come in
 * the order queued (a failed statement's before its group's others); session
 * state survives a failed group (a lock taken in it is held twice after the
 * rerun, and db_undone_runs tells its caller so); the ledger's key_release
 * (sql/0001_worker_baseline.sql) drops every hold. */
#include "db.h"
#include "log.h"
#include "tap.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *SQL_INSERT =
    "INSERT INTO db_test (group_size, n) VALUES ($1::int, $2::int) RETURNING n + 1";
static const char *SQL_FAIL = "SELECT 1 / ($1::int - $1::int)";
static const char *SQL_LOCK = "SELECT pg_try_advisory_lock(hashtextextended($1, 0))";
static const char *SQL_UNLOCK = "SELECT pg_advisory_unlock(hashtextextended($1, 0))";
static const char *SQL_RELEASE = "SELECT helmq_worker.key_release($1)";
static const char *SQL_SETUP = "CREATE TABLE IF NOT EXISTS db_test (group_size int, n int)";

typedef struct {
    int total, done, errors, wrong, order_broken, last_n, committed_before_cb;
    int undone[8]; /* db_undone_runs seen by the callbacks of queries 0..7 */
    uv_loop_t *loop;
} run_t;

typedef struct {
    run_t *run;
    db_t *db;
    int n, expect_error;
} call_t;

static void on_result(void *arg, const PGresult *r, const char *err) {
    call_t *c = arg;
    run_t *run = c->run;
    if (c->n >= 0 && c->n < 8)
        run->undone[c->n] = db_undone_runs(c->db);
    if (!err) { /* a failed statement's error comes before its group's others */
        if (c->n <= run->last_n)
            run->order_broken++;
        run->last_n = c->n;
    }
    if (err) {
        run->errors++;
        if (!c->expect_error)
            printf("# query %d failed: %s", c->n, err);
    } else if (c->expect_error)
        run->wrong++;
    else if (r && PQntuples(r) == 1 && strcmp(PQgetvalue(r, 0, 0), "t") != 0 &&
             atoi(PQgetvalue(r, 0, 0)) != c->n + 1)
        run->wrong++;
    if (++run->done == run->total)
        uv_stop(run->loop);
    free(c);
}

static void queue(db_t *db, run_t *run, const char *sql, int group, int n, int expect_error) {
    call_t *c = calloc(1, sizeof(*c));
    char g[16], v[16];
    snprintf(g, sizeof(g), "%d", group);
    snprintf(v, sizeof(v), "%d", n);
    const char *values[2] = {g, v};
    c->run = run;
    c->db = db;
    c->n = n;
    c->expect_error = expect_error;
    if (sql == SQL_INSERT)
        db_query(db, sql, 2, values, NULL, NULL, on_result, c);
    else
        db_query(db, sql, 1,
                 sql == SQL_FAIL ? (const char *const *)&values[1] : (const char *const *)&values[0], NULL,
                 NULL, on_result, c);
    run->total++;
}

static PGresult *exec1(PGconn *c, const char *sql) {
    PGresult *r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_TUPLES_OK && PQresultStatus(r) != PGRES_COMMAND_OK)
        printf("# %s: %s", sql, PQresultErrorMessage(r));
    return r;
}

static int count(PGconn *c, int group) {
    char sql[160];
    snprintf(sql, sizeof(sql), "SELECT count(*), count(DISTINCT n) FROM db_test WHERE group_size = %d",
             group);
    PGresult *r = exec1(c, sql);
    int n = PQntuples(r) == 1 && strcmp(PQgetvalue(r, 0, 0), PQgetvalue(r, 0, 1)) == 0
                ? atoi(PQgetvalue(r, 0, 0))
                : -1;
    PQclear(r);
    return n;
}

/* Whether another session can take advisory lock key (then gives it back). */
static int lock_free(PGconn *c, int key) {
    char sql[128];
    snprintf(sql, sizeof(sql),
             "SELECT pg_try_advisory_lock(hashtextextended('%d', 0)) AND "
             "pg_advisory_unlock(hashtextextended('%d', 0))",
             key, key);
    PGresult *r = exec1(c, sql);
    int free_ = PQntuples(r) == 1 && strcmp(PQgetvalue(r, 0, 0), "t") == 0;
    PQclear(r);
    return free_;
}

/* lock_free, waiting up to 5 s for a closed session's backend to exit. */
static int lock_freed(PGconn *c, int key) {
    for (int i = 0; i < 500; i++) {
        if (lock_free(c, key))
            return 1;
        usleep(10000);
    }
    return 0;
}

int main(void) {
    const char *url = getenv("HELMQ_DATABASE_URL");
    if (!url || !*url) {
        printf("1..0 # SKIP HELMQ_DATABASE_URL not set (tests/db.t runs this against a real server)\n");
        return 0;
    }
    log_init("test_db", "warn"); /* the connects are expected; warnings are not */
    PGconn *admin = PQconnectdb(url);
    if (PQstatus(admin) != CONNECTION_OK) {
        printf("Bail out! cannot connect: %s", PQerrorMessage(admin));
        return 1;
    }
    PQclear(exec1(admin, SQL_SETUP));

    static const int groups[] = {1, 7, 64};
    for (size_t gi = 0; gi < sizeof(groups) / sizeof(groups[0]); gi++) {
        int group = groups[gi];
        run_t run = {.loop = uv_default_loop(), .last_n = -1};
        db_t *db = db_new(run.loop, url);
        db_set_group_max(db, group);
        /* 300 inserts; every 50th query fails (division by zero) in the
         * middle of a group; query 120 takes a session lock before it. */
        int fails = 0;
        for (int n = 0; n < 300; n++) {
            if (n % 50 == 25) {
                queue(db, &run, SQL_FAIL, group, n, 1);
                fails++;
            } else if (n == 120)
                queue(db, &run, SQL_LOCK, 4200 + group, n, 0);
            else
                queue(db, &run, SQL_INSERT, group, n, 0);
        }
        uv_run(run.loop, UV_RUN_DEFAULT);
        is_int(run.done, 300, "group %d: every caller called back", group);
        is_int(run.order_broken, 0, "group %d: successful callbacks in the order queued", group);
        is_int(run.errors, fails, "group %d: only the failing statements failed", group);
        is_int(run.wrong, 0, "group %d: each caller got its own statement's result", group);
        is_int(count(admin, group), 300 - fails - 1, "group %d: each insert committed exactly once", group);
        is_int(db_pending(db), 0, "group %d: nothing left queued", group);
        ok(!lock_free(admin, 4200 + group), "group %d: the lock taken by a statement that committed is held",
           group);
        db_close(db);
        uv_run(run.loop, UV_RUN_DEFAULT);
        ok(lock_freed(admin, 4200 + group), "group %d: the lock goes with the session", group);
    }

    /* A lock taken in a group that then fails is held twice after the rerun
     * on the same session; key_release drops every hold. */
    {
        run_t run = {.loop = uv_default_loop(), .last_n = -1};
        db_t *db = db_new(run.loop, url);
        db_set_group_max(db, 64);
        queue(db, &run, SQL_INSERT, 999, 0, 0);
        queue(db, &run, SQL_LOCK, 4300, 1, 0);
        queue(db, &run, SQL_FAIL, 999, 2, 1);
        queue(db, &run, SQL_INSERT, 999, 3, 0);
        uv_run(run.loop, UV_RUN_DEFAULT);
        is_int(run.errors, 1, "failed group: one error");
        is_int(count(admin, 999), 2, "failed group: the inserts around the failure committed once");
        ok(run.undone[0] == 1 && run.undone[1] == 1,
           "failed group: the statements that ran before the failure see one undone run (%d, %d)",
           run.undone[0], run.undone[1]);
        ok(run.undone[2] == 0 && run.undone[3] == 0,
           "failed group: the failed one and the one after it (never run) see none (%d, %d)", run.undone[2],
           run.undone[3]);
        run.total = run.done = 0;
        run.last_n = -1;
        queue(db, &run, SQL_UNLOCK, 4300, 4, 0);
        uv_run(run.loop, UV_RUN_DEFAULT);
        ok(!lock_free(admin, 4300), "failed group: the rolled-back run's hold stays after one unlock");
        run.total = run.done = 0;
        run.last_n = -1;
        queue(db, &run, SQL_LOCK, 4300, 5, 0);
        queue(db, &run, SQL_LOCK, 4300, 6, 0);
        queue(db, &run, SQL_RELEASE, 4300, 7, 0);
        uv_run(run.loop, UV_RUN_DEFAULT);
        ok(lock_free(admin, 4300), "key_release drops every hold of the key");
        db_close(db);
        uv_run(run.loop, UV_RUN_DEFAULT);
    }
    PQfinish(admin);
    return tap_done();
}
