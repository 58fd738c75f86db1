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
} db_query_t;

typedef enum { DB_DOWN, DB_CONNECTING, DB_READY } db_state_t;

#define DB_PREPARED_MAX 32

struct db {
    uv_loop_t *loop;
    char *conninfo;
    PGconn *conn;
    uv_poll_t *poll; /* allocated: its socket may change between connections */
    int poll_fd;
    uv_timer_t retry;
    db_state_t state;
    int sent;         /* the head query has been sent */
    PGresult *result; /* first result of the head query */
    db_query_t *head, *tail;
    int pending;
    unsigned backoff_ms;
    int closing;
    /* Statements prepared on this connection, by SQL text pointer (callers
     * pass static strings): parsed and planned once per connection rather
     * than on every call. The head query's Prepare is in flight when
     * preparing is set. */
    const char *prepared[DB_PREPARED_MAX];
    int nprepared, preparing;
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
    }
    return uv_poll_start(db->poll, events, on_poll);
}

static void on_retry(uv_timer_t *t) {
    db_connect(t->data);
}

/* The connection is gone: keep every query (the head one is sent again) and
 * reconnect after a backoff. */
static void db_lost(db_t *db, const char *why_in) {
    char why[512]; /* why_in may point into the connection freed below */
    snprintf(why, sizeof(why), "%s", why_in);
    why[strcspn(why, "\n")] = '\0';
    poll_stop(db);
    if (db->result) {
        PQclear(db->result);
        db->result = NULL;
    }
    if (db->conn) {
        PQfinish(db->conn);
        db->conn = NULL;
    }
    db->sent = 0;
    db->nprepared = 0;
    db->preparing = 0;
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
        if (PQsetnonblocking(db->conn, 1) != 0) {
            db_lost(db, "cannot set non-blocking mode");
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

/* Sends the head query, flushes, and reads results as they come. */
static void db_drive(db_t *db) {
    if (db->state != DB_READY)
        return;
    for (;;) {
        db_query_t *q = db->head;
        if (!q) {
            poll_watch(db, UV_READABLE); /* notice the server closing on us */
            return;
        }
        if (!db->sent) {
            int slot = -1, ok;
            char name[16];
            for (int i = 0; i < db->nprepared; i++)
                if (db->prepared[i] == q->sql)
                    slot = i;
            if (slot >= 0) {
                snprintf(name, sizeof(name), "hq%d", slot);
                ok = PQsendQueryPrepared(db->conn, name, q->n, (const char *const *)q->values, q->lengths,
                                         q->formats, 0);
            } else if (db->nprepared < DB_PREPARED_MAX) {
                snprintf(name, sizeof(name), "hq%d", db->nprepared);
                ok = PQsendPrepare(db->conn, name, q->sql, q->n, NULL);
                db->preparing = 1;
            } else {
                ok = PQsendQueryParams(db->conn, q->sql, q->n, NULL, (const char *const *)q->values,
                                       q->lengths, q->formats, 0);
            }
            if (!ok) {
                db_lost(db, PQerrorMessage(db->conn));
                return;
            }
            db->sent = 1;
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
        while (!PQisBusy(db->conn)) {
            PGresult *r = PQgetResult(db->conn);
            if (!r)
                goto complete;
            if (!db->result)
                db->result = r;
            else
                PQclear(r);
        }
        poll_watch(db, UV_READABLE);
        return;
    complete:
        if (PQstatus(db->conn) == CONNECTION_BAD) {
            db_lost(db, "connection lost during a query");
            return;
        }
        if (db->preparing) {
            PGresult *pr = db->result;
            db->result = NULL;
            db->sent = 0;
            db->preparing = 0;
            if (pr && PQresultStatus(pr) == PGRES_COMMAND_OK) {
                db->prepared[db->nprepared++] = q->sql;
                PQclear(pr);
                continue; /* now execute it */
            }
            /* A statement that does not prepare would not run either: its
             * error goes to the caller as the query's result. */
            db->result = pr;
        }
        {
            PGresult *res = db->result;
            db->result = NULL;
            db->sent = 0;
            db->head = q->next;
            if (!db->head)
                db->tail = NULL;
            db->pending--;
            ExecStatusType st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
            const char *err = NULL;
            if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
                err = res ? PQresultErrorMessage(res) : "no result";
            /* A connection-level failure (e.g. an administrator shutdown)
             * arrives as a fatal result on a connection that is now bad. */
            if (err && PQstatus(db->conn) == CONNECTION_BAD) {
                db->head = q;
                if (!db->tail)
                    db->tail = q;
                db->pending++;
                PQclear(res);
                db_lost(db, err);
                return;
            }
            q->cb(q->arg, res, err);
            PQclear(res);
            query_free(q);
        }
        if (db->state != DB_READY)
            return;
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
    uv_timer_init(loop, &db->retry);
    db->retry.data = db;
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

int db_ready(const db_t *db) {
    return db->state == DB_READY;
}
int db_pending(const db_t *db) {
    return db->pending;
}

static void retry_closed(uv_handle_t *h) {
    db_t *db = h->data;
    free(db->conninfo);
    free(db);
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
    uv_close((uv_handle_t *)&db->retry, retry_closed);
}
