/* Non-blocking PostgreSQL client on the libuv loop; see db.h. */
#include "db.h"

#include "log.h"

#include <stdlib.h>
#include <string.h>

typedef struct db_query {
    struct db_query *next;
    const char *sql;
    int n;
    char **values;
    int *lengths;
    int *formats;
    db_cb cb;
    void *arg;
    int prep_slot; /* in the group in flight: the slot it is prepared into, else -1 */
    PGresult *res; /* in the group in flight: its result, once read */
    int undone;    /* times it ran in a group that then rolled back */
} db_query_t;

typedef enum { DB_DOWN, DB_CONNECTING, DB_READY } db_state_t;

#define DB_PREPARED_MAX 32
#define DB_DELIVER_SLICE 4

struct db {
    uv_loop_t *loop;
    char *conninfo;
    PGconn *conn;
    uv_poll_t *poll; /* allocated: its socket may change between connections */
    int poll_fd;
    int poll_events; /* what poll watches (0: stopped) */
    uv_timer_t retry;
    db_state_t state;
    /* The connection is in pipeline mode. Queries go in groups of up to
     * group_max, each group ended by a Sync and so run as one transaction;
     * one group is in flight at a time: the group_n queries at the head,
     * whose results are being read for the query at reading, the read_n-th
     * (its Prepare's first when reading_prep). */
    int group_max, group_n, read_n, reading_prep, group_bad;
    db_query_t *reading;
    db_query_t *head, *tail;
    /* Committed queries whose callbacks have not run yet: a few run per loop
     * iteration (DB_DELIVER_SLICE), so that a group's callbacks, each of
     * which may spawn a process or produce an event, do not hold up timers
     * and other I/O for the whole group. */
    db_query_t *deliver_head, *deliver_tail;
    db_query_t *delivering; /* the query whose callback runs */
    uv_idle_t deliver_idle;
    int handles_open;
    int pending;
    unsigned backoff_ms;
    int closing;
    /* Statements prepared on this connection, by SQL text pointer (callers
     * pass static strings): parsed and planned once per connection rather
     * than on every call. A slot whose Prepare failed holds NULL. */
    const char *prepared[DB_PREPARED_MAX];
    int nprepared;
};

static void db_connect(db_t *db);
static void db_drive(db_t *db);

static void query_free(db_query_t *q) {
    for (int i = 0; i < q->n; i++)
        free(q->values[i]);
    free(q->values);
    free(q->lengths);
    free(q->formats);
    free(q);
}

static void poll_closed(uv_handle_t *h) {
    free(h);
}

static void poll_stop(db_t *db) {
    if (db->poll) {
        uv_poll_stop(db->poll);
        uv_close((uv_handle_t *)db->poll, poll_closed);
        db->poll = NULL;
        db->poll_fd = -1;
    }
}

static void on_poll(uv_poll_t *h, int status, int events);

static int poll_watch(db_t *db, int events) {
    int fd = PQsocket(db->conn);
    if (fd < 0)
        return -1;
    if (db->poll && db->poll_fd != fd)
        poll_stop(db);
    if (!db->poll) {
        db->poll = malloc(sizeof(*db->poll));
        if (!db->poll || uv_poll_init(db->loop, db->poll, fd) != 0) {
            free(db->poll);
            db->poll = NULL;
            return -1;
        }
        db->poll->data = db;
        db->poll_fd = fd;
        db->poll_events = 0;
    }
    /* uv_poll_start stops and starts the watcher: two epoll_ctl calls even
     * when the events stay the same, which is most times here. */
    if (db->poll_events == events)
        return 0;
    int rc = uv_poll_start(db->poll, events, on_poll);
    db->poll_events = rc == 0 ? events : 0;
    return rc;
}

static void on_retry(uv_timer_t *t) {
    db_connect(t->data);
}

/* The connection is gone: keep every query (the group in flight is sent again) and
 * reconnect after a backoff. */
static void db_lost(db_t *db, const char *why_in) {
    char why[512]; /* why_in may point into the connection freed below */
    snprintf(why, sizeof(why), "%s", why_in);
    why[strcspn(why, "\n")] = '\0';
    poll_stop(db);
    for (db_query_t *q = db->head; q; q = q->next)
        if (q->res) {
            PQclear(q->res);
            q->res = NULL;
        }
    db->group_n = 0;
    db->reading = NULL;
    db->group_bad = 0;
    if (db->conn) {
        PQfinish(db->conn);
        db->conn = NULL;
    }
    db->nprepared = 0;
    db->state = DB_DOWN;
    if (db->closing)
        return;
    db->backoff_ms = db->backoff_ms ? db->backoff_ms * 2 : 100;
    if (db->backoff_ms > 5000)
        db->backoff_ms = 5000;
    log_warn("postgresql: %s; %d queries kept, reconnecting in %u ms", why, db->pending, db->backoff_ms);
    uv_timer_start(&db->retry, on_retry, db->backoff_ms, 0);
}

static void connect_step(db_t *db) {
    switch (PQconnectPoll(db->conn)) {
    case PGRES_POLLING_READING:
        if (poll_watch(db, UV_READABLE) < 0)
            db_lost(db, "no socket");
        break;
    case PGRES_POLLING_WRITING:
        if (poll_watch(db, UV_WRITABLE) < 0)
            db_lost(db, "no socket");
        break;
    case PGRES_POLLING_OK:
        if (PQsetnonblocking(db->conn, 1) != 0 || !PQenterPipelineMode(db->conn)) {
            db_lost(db, "cannot set non-blocking pipeline mode");
            break;
        }
        db->state = DB_READY;
        if (db->backoff_ms)
            log_info("postgresql: connected again");
        else
            log_info("postgresql: connected");
        db->backoff_ms = 0;
        db_drive(db);
        break;
    default: {
        char msg[512];
        snprintf(msg, sizeof(msg), "cannot connect: %s", PQerrorMessage(db->conn));
        for (char *p = msg; *p; p++)
            if (*p == '\n')
                *p = ' ';
        db_lost(db, msg);
        break;
    }
    }
}

static void db_connect(db_t *db) {
    db->state = DB_CONNECTING;
    db->conn = PQconnectStart(db->conninfo);
    if (!db->conn || PQstatus(db->conn) == CONNECTION_BAD) {
        db_lost(db, db->conn ? PQerrorMessage(db->conn) : "out of memory");
        return;
    }
    connect_step(db);
}

/* The name of sql's prepared statement on this connection, preparing it in
 * the group being sent when it is new. Returns 1 with name set, 0 when every
 * slot is taken (the statement is then sent unprepared), -1 on a send error. */
static int statement_name(db_t *db, db_query_t *q, char *name, size_t size) {
    for (int i = 0; i < db->nprepared; i++)
        if (db->prepared[i] == q->sql) {
            snprintf(name, size, "hq%d", i);
            return 1;
        }
    if (db->nprepared >= DB_PREPARED_MAX)
        return 0;
    int slot = db->nprepared++;
    snprintf(name, size, "hq%d", slot);
    if (!PQsendPrepare(db->conn, name, q->sql, q->n, NULL))
        return -1;
    /* A later query of the same group may use the name at once: the server
     * parses it before it binds them. */
    db->prepared[slot] = q->sql;
    q->prep_slot = slot;
    return 1;
}

/* Sends the next group: up to group_max queued queries, then one Sync. The
 * server runs a group as one transaction (the extended protocol's implicit
 * transaction ends at the Sync). */
static int group_send(db_t *db) {
    int n = 0;
    for (db_query_t *q = db->head; q && n < db->group_max; q = q->next, n++) {
        char name[16];
        q->prep_slot = -1;
        int named = statement_name(db, q, name, sizeof(name));
        int ok = named < 0 ? 0
                 : named   ? PQsendQueryPrepared(db->conn, name, q->n, (const char *const *)q->values,
                                                 q->lengths, q->formats, 0)
                           : PQsendQueryParams(db->conn, q->sql, q->n, NULL, (const char *const *)q->values,
                                               q->lengths, q->formats, 0);
        if (!ok)
            return -1;
    }
    if (!PQpipelineSync(db->conn))
        return -1;
    db->group_n = n;
    db->read_n = 0;
    db->reading = db->head;
    db->reading_prep = db->head->prep_slot >= 0;
    return 0;
}

/* One result of the group in flight, NULL marking the end of an item's. */
static void group_result(db_t *db, PGresult *r) {
    db_query_t *q = db->reading;
    if (!q) { /* more results than items: kept for the check at the Sync */
        PQclear(r);
        db->group_bad = 1;
        return;
    }
    if (!r) {
        if (db->reading_prep)
            db->reading_prep = 0; /* its Prepare's results are read; its own follow */
        else {
            /* The group ends before the queue does. */
            db->reading = ++db->read_n < db->group_n ? q->next : NULL;
            db->reading_prep = db->reading && db->reading->prep_slot >= 0;
        }
        return;
    }
    ExecStatusType st = PQresultStatus(r);
    if (db->reading_prep) {
        if (st != PGRES_COMMAND_OK) {
            /* The statement did not prepare: its name is not used again, and
             * its error is the query's result (the query is then aborted). */
            db->prepared[q->prep_slot] = NULL;
            if (!q->res)
                q->res = r;
            else
                PQclear(r);
            return;
        }
        PQclear(r);
        return;
    }
    if (!q->res)
        q->res = r;
    else if (PQresultStatus(q->res) == PGRES_PIPELINE_ABORTED && st == PGRES_FATAL_ERROR) {
        PQclear(q->res);
        q->res = r;
    } else
        PQclear(r);
}

static int result_ok(const PGresult *r) {
    ExecStatusType st = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
    return st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
}

/* Runs the callbacks of up to DB_DELIVER_SLICE committed (or failed)
 * queries, in order. */
static void on_deliver(uv_idle_t *h) {
    db_t *db = h->data;
    for (int i = 0; i < DB_DELIVER_SLICE && db->deliver_head; i++) {
        db_query_t *q = db->deliver_head;
        db->deliver_head = q->next;
        if (!db->deliver_head)
            db->deliver_tail = NULL;
        db->pending--;
        const char *err = result_ok(q->res) ? NULL : q->res ? PQresultErrorMessage(q->res) : "no result";
        db->delivering = q;
        q->cb(q->arg, q->res, err);
        db->delivering = NULL;
        PQclear(q->res);
        q->res = NULL;
        query_free(q);
    }
    if (!db->deliver_head)
        uv_idle_stop(&db->deliver_idle);
}

/* The group's Sync arrived: its transaction is over. When every query
 * succeeded they are all committed: each caller gets its result. When one
 * failed, the transaction rolled back: the failed query's caller gets the
 * error; the others ran for nothing and stay queued, first, to be sent again
 * on the same session (session state they changed, such as an advisory lock
 * taken, is not rolled back: see db.h). */
static void group_done(db_t *db) {
    db_query_t *failed = NULL;
    int n = 0;
    for (db_query_t *q = db->head; q && n < db->group_n; q = q->next, n++)
        if (!failed && !result_ok(q->res))
            failed = q;
    if (db->group_bad && !failed) {
        db->group_n = 0;
        db_lost(db, "results out of step with the queries sent");
        return;
    }
    db_query_t *done = db->head, *last = done;
    if (failed) {
        /* Take the failed query out; the others stay queued, first. */
        db_query_t **pp = &db->head;
        while (*pp != failed)
            pp = &(*pp)->next;
        *pp = failed->next;
        if (db->tail == failed)
            db->tail = NULL;
        if (!db->tail)
            for (db_query_t *q = db->head; q; q = q->next)
                db->tail = q;
        failed->next = NULL;
        done = failed;
        n = 1;
        for (db_query_t *q = db->head; q; q = q->next)
            if (q->res) {
                if (result_ok(q->res)) /* it ran (the ones after the failure did not) */
                    q->undone++;
                PQclear(q->res);
                q->res = NULL;
            }
    } else {
        for (int i = 1; i < n; i++)
            last = last->next;
        db->head = last->next;
        if (!db->head)
            db->tail = NULL;
        last->next = NULL;
    }
    db->group_n = 0;
    db->reading = NULL;
    if (db->deliver_tail)
        db->deliver_tail->next = done;
    else
        db->deliver_head = done;
    while (done->next)
        done = done->next;
    db->deliver_tail = done;
    uv_idle_start(&db->deliver_idle, on_deliver);
}

/* Sends queued queries in groups, one group in flight at a time, flushes,
 * and reads results as they come. */
static void db_drive(db_t *db) {
    while (db->state == DB_READY) {
        if (!db->group_n) {
            if (!db->head) {
                poll_watch(db, UV_READABLE); /* notice the server closing on us */
                return;
            }
            if (group_send(db) < 0) {
                db_lost(db, PQerrorMessage(db->conn));
                return;
            }
        }
        int f = PQflush(db->conn);
        if (f < 0) {
            db_lost(db, PQerrorMessage(db->conn));
            return;
        }
        if (f == 1) {
            poll_watch(db, UV_READABLE | UV_WRITABLE);
            return;
        }
        if (!PQconsumeInput(db->conn)) {
            db_lost(db, PQerrorMessage(db->conn));
            return;
        }
        int synced = 0;
        while (!synced && !PQisBusy(db->conn)) {
            PGresult *r = PQgetResult(db->conn);
            if (r && PQresultStatus(r) == PGRES_PIPELINE_SYNC) {
                PQclear(r);
                synced = 1;
            } else if (r && PQstatus(db->conn) == CONNECTION_BAD) {
                char why[512];
                snprintf(why, sizeof(why), "%s", PQresultErrorMessage(r));
                PQclear(r);
                db_lost(db, why[0] ? why : "connection lost during a query");
                return;
            } else
                group_result(db, r);
        }
        if (!synced) {
            if (PQstatus(db->conn) == CONNECTION_BAD) {
                db_lost(db, "connection lost during a query");
                return;
            }
            poll_watch(db, UV_READABLE);
            return;
        }
        if (db->reading) /* fewer results than items */
            db->group_bad = 1;
        group_done(db);
        db->group_bad = 0;
    }
}

static void on_poll(uv_poll_t *h, int status, int events) {
    db_t *db = h->data;
    if (status < 0) {
        db_lost(db, uv_strerror(status));
        return;
    }
    if (db->state == DB_CONNECTING) {
        connect_step(db);
        return;
    }
    if (db->state == DB_READY) {
        if (!db->head) {
            /* Nothing asked: data means a notice or the server going away. */
            if (!PQconsumeInput(db->conn) || PQstatus(db->conn) == CONNECTION_BAD) {
                db_lost(db, "the server closed the connection");
                return;
            }
            PGresult *r;
            while (!PQisBusy(db->conn) && (r = PQgetResult(db->conn)))
                PQclear(r);
            return;
        }
        db_drive(db);
    }
}

db_t *db_new(uv_loop_t *loop, const char *conninfo) {
    db_t *db = calloc(1, sizeof(*db));
    if (!db)
        return NULL;
    db->loop = loop;
    db->conninfo = strdup(conninfo);
    db->poll_fd = -1;
    db->group_max = 1;
    uv_timer_init(loop, &db->retry);
    db->retry.data = db;
    uv_idle_init(loop, &db->deliver_idle);
    db->deliver_idle.data = db;
    db->handles_open = 2;
    db_connect(db);
    return db;
}

void db_query(db_t *db, const char *sql, int n, const char *const *values, const int *lengths,
              const int *formats, db_cb cb, void *arg) {
    db_query_t *q = calloc(1, sizeof(*q));
    if (!q)
        abort();
    q->sql = sql;
    q->n = n;
    q->cb = cb;
    q->arg = arg;
    q->prep_slot = -1;
    if (n) {
        q->values = calloc((size_t)n, sizeof(char *));
        q->lengths = calloc((size_t)n, sizeof(int));
        q->formats = calloc((size_t)n, sizeof(int));
        if (!q->values || !q->lengths || !q->formats)
            abort();
        for (int i = 0; i < n; i++) {
            if (!values[i])
                continue;
            int binary = formats && formats[i];
            size_t len = binary ? (size_t)lengths[i] : strlen(values[i]);
            q->values[i] = malloc(len + 1);
            if (!q->values[i])
                abort();
            memcpy(q->values[i], values[i], len);
            q->values[i][len] = '\0';
            q->lengths[i] = (int)len;
            q->formats[i] = binary;
        }
    }
    if (db->tail)
        db->tail->next = q;
    else
        db->head = q;
    db->tail = q;
    db->pending++;
    if (db->state == DB_READY && db->head == q)
        db_drive(db);
}

void db_set_group_max(db_t *db, int n) {
    db->group_max = n < 1 ? 1 : n;
}

int db_ready(const db_t *db) {
    return db->state == DB_READY;
}
int db_undone_runs(const db_t *db) {
    return db->delivering ? db->delivering->undone : 0;
}

int db_pending(const db_t *db) {
    return db->pending;
}

static void handle_closed(uv_handle_t *h) {
    db_t *db = h->data;
    if (--db->handles_open == 0) {
        free(db->conninfo);
        free(db);
    }
}

void db_close(db_t *db) {
    if (!db)
        return;
    db->closing = 1;
    uv_timer_stop(&db->retry);
    db_lost(db, "closing");
    while (db->head) {
        db_query_t *q = db->head;
        db->head = q->next;
        query_free(q);
    }
    db->tail = NULL;
    while (db->deliver_head) { /* committed, but the caller is going away */
        db_query_t *q = db->deliver_head;
        db->deliver_head = q->next;
        PQclear(q->res);
        query_free(q);
    }
    db->deliver_tail = NULL;
    uv_close((uv_handle_t *)&db->retry, handle_closed);
    uv_close((uv_handle_t *)&db->deliver_idle, handle_closed);
}
