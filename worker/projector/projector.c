/* helmq-projector: release events into the PostgreSQL projection.
 *
 * Its own consumer group on the events topic. Events are applied in batches,
 * one transaction per batch: the decoded events are streamed with COPY into
 * a TEMP staging table and applied by helmq.apply_staged (sql/0002_projection_baseline.sql: the
 * semantics of helmq.apply_events, idempotent by eventId, an older revision
 * never overwriting newer state). The consumer's offsets are stored and
 * committed only for batches PostgreSQL has committed. PostgreSQL down: the
 * batch is kept and retried with backoff; nothing is lost.
 *
 * A batch PostgreSQL refuses because of an event in it (a constraint
 * violation, a value the SQL cannot take: SQLSTATE classes 22, 23, ...) is
 * split in halves, recursively, until the refused events are isolated: every
 * other event is applied, in topic order, and each refused one is parked in
 * helmq.parked_events with its error (sql/0002_projection_baseline.sql), logged and counted, before
 * the offsets move past it. A record that does not decode as a helmq event is
 * parked the same way. Errors that retrying can fix (connection lost,
 * serialization failure, deadlock, shutdown, resources) are retried with
 * backoff; so are errors no event can cause (a missing function, a revoked
 * grant), since parking would then swallow every event: the projector waits,
 * logging, for an operator (a rebuild gives up instead).
 *
 * A plain loop rather than an event loop, with one overlap: while PostgreSQL
 * applies a batch (sent whole, its outcome read later), the next batch is
 * gathered, decoded and written as COPY rows. Everything else (a refused
 * batch split, parking, retries) runs one step at a time, after the batch in
 * flight has finished. */
#include "codec.h"
#include "config.h"
#include "httpd.h"
#include "kafka.h"
#include "log.h"
#include "migrate.h"
#include "util.h"

#include <jansson.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const config_opt_t projector_opts[] = {
    {"brokers", 'b', "HELMQ_BROKERS", CONFIG_STRING, KAFKA_DEFAULT_BROKERS, "Kafka bootstrap servers"},
    {"database-url", 'd', "HELMQ_DATABASE_URL", CONFIG_STRING, "dbname=helmq",
     "PostgreSQL connection string or URI (the projection, schema helmq)"},
    {"group-id", 'g', "HELMQ_PROJECTOR_GROUP_ID", CONFIG_STRING, "helmq-projector",
     "Kafka consumer group of the projectors"},
    {"events-topic", 0, "HELMQ_EVENTS_TOPIC", CONFIG_STRING, KAFKA_TOPIC_EVENTS,
     "topic of the release events"},
    {"batch-size", 0, "HELMQ_PROJECTOR_BATCH_SIZE", CONFIG_INT, "5000",
     "most events written in one transaction"},
    {"batch-wait-ms", 0, "HELMQ_PROJECTOR_BATCH_WAIT_MS", CONFIG_INT, "0",
     "how long to gather a batch once the first event arrived (0: take what has arrived; batches grow by "
     "themselves while PostgreSQL works)"},
    {"http-listen", 0, "HELMQ_PROJECTOR_HTTP", CONFIG_STRING, "",
     "serve /metrics and /healthz on ADDRESS:PORT (empty: off)"},
    {"log-level", 0, "HELMQ_LOG_LEVEL", CONFIG_STRING, "info", "error, warn, info or debug"},
    {NULL, 0, NULL, 0, NULL, NULL},
};

static volatile sig_atomic_t stop;

/* Metrics, written by the projecting thread and read by the HTTP thread. */
static atomic_ullong m_events, m_batches, m_batch_buckets[6]; /* batch sizes <=1,10,100,1000,10000,+Inf */
static atomic_ullong m_parked_refused, m_parked_undecodable;
static atomic_ullong m_direct_batches,
    m_direct_retried; /* the direct form: committed, applied again staged */
static atomic_int m_pg_up, m_kafka_up = -1;
static atomic_llong m_lag = -1;
static const long batch_le[6] = {1, 10, 100, 1000, 10000, -1};

static void metrics_batch(int n) {
    atomic_fetch_add(&m_events, (unsigned long long)n);
    atomic_fetch_add(&m_batches, 1);
    for (int i = 0; i < 6; i++)
        if (batch_le[i] < 0 || n <= batch_le[i])
            atomic_fetch_add(&m_batch_buckets[i], 1);
}

static int stats_cb(rd_kafka_t *rk, char *json, size_t len, void *opaque) {
    json_t *st = json_loadb(json, len, 0, NULL);
    const char *name, *pname;
    json_t *t, *p;
    long long lag = 0;
    int up = 0;
    json_object_foreach(json_object_get(st, "topics"), name, t) {
        json_object_foreach(json_object_get(t, "partitions"), pname, p) {
            json_int_t l = json_integer_value(json_object_get(p, "consumer_lag"));
            if (strcmp(pname, "-1") != 0 && l > 0)
                lag += l;
        }
    }
    json_object_foreach(json_object_get(st, "brokers"), name, t) {
        const char *state = json_string_value(json_object_get(t, "state"));
        if (state && strcmp(state, "UP") == 0 && json_integer_value(json_object_get(t, "nodeid")) >= 0)
            up++;
    }
    atomic_store(&m_lag, lag);
    atomic_store(&m_kafka_up, up);
    json_decref(st);
    return 0;
}

typedef struct http_thread {
    uv_loop_t loop;
    uv_async_t wake;
    httpd_t *http;
    pthread_t thread;
} http_thread_t;

static void serve(http_req_t *req, void *ctx) {
    int pg = atomic_load(&m_pg_up), kafka = atomic_load(&m_kafka_up) != 0;
    if (strcmp(req->path, "/healthz") == 0) {
        char body[128];
        int n = snprintf(body, sizeof(body), "{\"status\":\"%s\",\"postgres\":%s,\"kafka\":%s}",
                         pg && kafka ? "ok" : "degraded", pg ? "true" : "false", kafka ? "true" : "false");
        httpd_respond(req, pg && kafka ? 200 : 503, "application/json", body, (size_t)n);
        return;
    }
    if (strcmp(req->path, "/metrics") != 0) {
        httpd_error(req, 404, "try /metrics or /healthz", NULL, NULL);
        return;
    }
    char body[4096];
    size_t n = 0;
#define OUT(...) n += (size_t)snprintf(body + n, sizeof(body) - n, __VA_ARGS__)
    OUT("# HELP helmq_projector_events_total Events applied (including duplicates recognised).\n"
        "# TYPE helmq_projector_events_total counter\nhelmq_projector_events_total %llu\n",
        atomic_load(&m_events));
    OUT("# HELP helmq_projector_batch_size Events per PostgreSQL transaction.\n"
        "# TYPE helmq_projector_batch_size histogram\n");
    for (int i = 0; i < 6; i++) {
        if (batch_le[i] < 0)
            OUT("helmq_projector_batch_size_bucket{le=\"+Inf\"} %llu\n", atomic_load(&m_batch_buckets[i]));
        else
            OUT("helmq_projector_batch_size_bucket{le=\"%ld\"} %llu\n", batch_le[i],
                atomic_load(&m_batch_buckets[i]));
    }
    OUT("helmq_projector_batch_size_sum %llu\nhelmq_projector_batch_size_count %llu\n",
        atomic_load(&m_events), atomic_load(&m_batches));
    OUT("# HELP helmq_projector_direct_batches_total Batches committed in the direct form (COPY straight "
        "into the tables).\n# TYPE helmq_projector_direct_batches_total counter\n"
        "helmq_projector_direct_batches_total %llu\n"
        "# HELP helmq_projector_direct_retried_total Batches the direct form could not take (events applied "
        "before: a replay), applied again staged.\n# TYPE helmq_projector_direct_retried_total counter\n"
        "helmq_projector_direct_retried_total %llu\n",
        atomic_load(&m_direct_batches), atomic_load(&m_direct_retried));
    OUT("# HELP helmq_projector_events_parked_total Records parked in helmq.parked_events instead of "
        "applied: refused by PostgreSQL, or not decodable as an event.\n"
        "# TYPE helmq_projector_events_parked_total counter\n"
        "helmq_projector_events_parked_total{reason=\"refused\"} %llu\n"
        "helmq_projector_events_parked_total{reason=\"undecodable\"} %llu\n",
        atomic_load(&m_parked_refused), atomic_load(&m_parked_undecodable));
    OUT("# HELP helmq_projector_consumer_lag Events behind on the events topic.\n"
        "# TYPE helmq_projector_consumer_lag gauge\nhelmq_projector_consumer_lag %lld\n",
        atomic_load(&m_lag));
    OUT("# HELP helmq_postgres_up Whether the PostgreSQL connection is up.\n# TYPE helmq_postgres_up gauge\n"
        "helmq_postgres_up %d\n",
        pg);
    OUT("# HELP helmq_kafka_brokers_up Kafka brokers connected.\n# TYPE helmq_kafka_brokers_up gauge\n"
        "helmq_kafka_brokers_up %d\n",
        atomic_load(&m_kafka_up));
#undef OUT
    httpd_respond(req, 200, "text/plain; version=0.0.4", body, n < sizeof(body) ? n : sizeof(body) - 1);
}

static void *http_main(void *arg) {
    http_thread_t *h = arg;
    uv_run(&h->loop, UV_RUN_DEFAULT);
    return NULL;
}

static void http_wake(uv_async_t *a) {
    http_thread_t *h = a->data;
    httpd_stop(h->http);
    uv_close((uv_handle_t *)&h->wake, NULL);
}

/* Serves /metrics and /healthz from a thread of their own (the projector's
 * loop blocks on Kafka and PostgreSQL by design). */
static http_thread_t *http_start(const char *listen) {
    char errstr[256];
    http_thread_t *h = calloc(1, sizeof(*h));
    uv_loop_init(&h->loop);
    httpd_limits_t limits = {
        .max_body = 4096, .max_header = HTTPD_MAX_HEADER, .timeout_ms = 10000, .max_connections = 64};
    h->http = httpd_start(&h->loop, listen, &limits, serve, NULL, errstr, sizeof(errstr));
    if (!h->http) {
        log_error("%s", errstr);
        uv_loop_close(&h->loop);
        free(h);
        return NULL;
    }
    uv_async_init(&h->loop, &h->wake, http_wake);
    h->wake.data = h;
    log_info("metrics on port %d: /metrics, /healthz", httpd_port(h->http));
    pthread_create(&h->thread, NULL, http_main, h);
    return h;
}

static void http_stop(http_thread_t *h) {
    if (!h)
        return;
    uv_async_send(&h->wake);
    pthread_join(h->thread, NULL);
    uv_loop_close(&h->loop);
    free(h);
}
static void on_signal(int sig) {
    stop = sig;
}

static void usage(FILE *out) {
    fprintf(out,
            "Usage: helmq-projector [OPTIONS]            project events into PostgreSQL until stopped\n"
            "       helmq-projector migrate [OPTIONS]    apply the database migrations and exit\n"
            "       helmq-projector rebuild [OPTIONS]    empty the projection and replay the events topic\n"
            "                                            from the beginning, then exit\n\n"
            "Events PostgreSQL refuses (a constraint violation, an invalid value) and records that do\n"
            "not decode are parked in the table helmq.parked_events with their error; every other\n"
            "event is applied and the projector goes on. rebuild exits 0 when every record was\n"
            "applied, 3 when the rebuild finished but parked some (the log and helmq.parked_events\n"
            "say which), 1 when it could not finish, 2 on bad usage. A finished rebuild deletes the\n"
            "parked rows of records it applied this time.\n\n"
            "Options:\n");
    config_usage(projector_opts, out);
}

static uint64_t mono_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* A connection that is up, reconnecting with backoff (logged) until it is or
 * a signal arrives. */
static PGconn *db_ensure(PGconn *c, const char *url) {
    unsigned backoff = 100;
    while (!stop) {
        if (c && PQstatus(c) == CONNECTION_OK) {
            atomic_store(&m_pg_up, 1);
            return c;
        }
        atomic_store(&m_pg_up, 0);
        if (c) {
            PQreset(c);
            if (PQstatus(c) == CONNECTION_OK) {
                atomic_store(&m_pg_up, 1);
                log_info("postgresql: connected again");
                return c;
            }
        } else {
            c = PQconnectdb(url);
            if (PQstatus(c) == CONNECTION_OK) {
                atomic_store(&m_pg_up, 1);
                log_info("postgresql: connected");
                return c;
            }
        }
        char msg[512];
        snprintf(msg, sizeof(msg), "%s", PQerrorMessage(c));
        msg[strcspn(msg, "\n")] = '\0';
        log_warn("postgresql: %s; retrying in %u ms", msg, backoff);
        usleep(backoff * 1000);
        backoff = backoff < 5000 ? backoff * 2 : 5000;
    }
    return c;
}

/* One record of a batch: the Kafka message (kept until the batch is done, for
 * its key, value and place when it has to be parked) and the event decoded in
 * place (codec_decode_flat: slices of the message, no JSON built), or why it
 * did not decode. The flat storage stays with the slot, reused batch after
 * batch. */
typedef struct batch_record {
    rd_kafka_message_t *msg;
    int is_event;
    codec_flat_t ev;
    unsigned char *reencoded; /* an event of an older schema, encoded again with the current one */
    char *decode_error;
} batch_record_t;

/* What the projector is doing: its connection, and what a run has parked. */
typedef struct projector {
    PGconn *db;
    const char *url;
    const char *topic;
    int rebuild;
    unsigned long long parked;
    int staged_pid;   /* the backend whose staging tables exist (helmq.stage_create), 0 when unknown */
    int direct_pause; /* batches to stage before trying the direct form again */
} projector_t;

typedef enum pg_error_kind {
    PG_ERROR_TRANSIENT, /* retrying the same statement later can work */
    PG_ERROR_EVENT,     /* caused by the data of an event: retrying cannot work */
    PG_ERROR_SETUP,     /* not caused by any event (schema, grants, server): an operator must act */
} pg_error_kind_t;

/* Classifies a failed statement by its SQLSTATE. Without one, the error is
 * libpq's own (the connection, memory), so it is retried. */
static pg_error_kind_t pg_error_kind(PGconn *c, const PGresult *r) {
    const char *s = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    if (PQstatus(c) != CONNECTION_OK || !s || strlen(s) != 5)
        return PG_ERROR_TRANSIENT;
    if (strcmp(s, "40001") == 0 || strcmp(s, "40P01") == 0 || strncmp(s, "57P", 3) == 0 ||
        strncmp(s, "08", 2) == 0 || strncmp(s, "53", 2) == 0)
        return PG_ERROR_TRANSIENT;
    /* Cardinality, data exceptions, integrity constraints, triggered data
     * changes, routine exceptions, WITH CHECK OPTION, program limits (an index
     * row too large) and PL/pgSQL's RAISE: what an event's values can cause. */
    static const char *event_classes[] = {"21", "22", "23", "27", "2F", "38", "39", "44", "54", "P0"};
    for (size_t i = 0; i < sizeof(event_classes) / sizeof(event_classes[0]); i++)
        if (strncmp(s, event_classes[i], 2) == 0)
            return PG_ERROR_EVENT;
    return PG_ERROR_SETUP;
}

/* PostgreSQL's message for r on one line, with its SQLSTATE copied to
 * sqlstate (6 bytes; empty when there is none). */
static void pg_error_text(const PGresult *r, PGconn *c, char sqlstate[6], char *msg, size_t msg_size) {
    const char *s = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    const char *primary = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
    const char *detail = PQresultErrorField(r, PG_DIAG_MESSAGE_DETAIL);
    snprintf(sqlstate, 6, "%s", s ? s : "");
    if (primary)
        snprintf(msg, msg_size, "%s%s%s", primary, detail ? " " : "", detail ? detail : "");
    else
        snprintf(msg, msg_size, "%s", r ? PQresultErrorMessage(r) : PQerrorMessage(c));
    for (char *p = msg; *p; p++)
        if (*p == '\n' || *p == '\r')
            *p = ' ';
}

/* A printable copy of a record key for the log (binary keys are possible). */
static void key_text(const rd_kafka_message_t *m, char *out, size_t out_size) {
    size_t n = 0;
    const unsigned char *k = m->key;
    for (size_t i = 0; k && i < m->key_len && n + 1 < out_size; i++)
        out[n++] = k[i] >= 0x20 && k[i] < 0x7f ? (char)k[i] : '?';
    out[n] = '\0';
}

static void backoff_sleep(unsigned *backoff) {
    usleep(*backoff * 1000);
    *backoff = *backoff < 5000 ? *backoff * 2 : 5000;
}

/* A growing buffer of COPY text-format rows. */
typedef struct copy_buf {
    char *data;
    size_t len, cap;
} copy_buf_t;

static void copy_reserve(copy_buf_t *b, size_t n) {
    if (b->len + n <= b->cap)
        return;
    size_t cap = b->cap ? b->cap : 65536;
    while (cap < b->len + n)
        cap *= 2;
    char *d = realloc(b->data, cap);
    if (!d) {
        log_error("out of memory building a batch of %zu bytes", cap);
        abort();
    }
    b->data = d;
    b->cap = cap;
}

static void copy_raw(copy_buf_t *b, const char *s, size_t n) {
    copy_reserve(b, n);
    memcpy(b->data + b->len, s, n);
    b->len += n;
}

/* One column, escaped for COPY's text format: backslash, tab, newline and
 * CR as backslash sequences, NUL as \000 (which PostgreSQL then refuses as
 * text, as it refuses \u0000 in jsonb: such an event is parked). */
static void copy_text(copy_buf_t *b, const char *s, size_t n) {
    copy_reserve(b, 4 * n + 1);
    char *o = b->data + b->len;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        switch (ch) {
        case '\\':
            *o++ = '\\';
            *o++ = '\\';
            break;
        case '\t':
            *o++ = '\\';
            *o++ = 't';
            break;
        case '\n':
            *o++ = '\\';
            *o++ = 'n';
            break;
        case '\r':
            *o++ = '\\';
            *o++ = 'r';
            break;
        case '\0':
            memcpy(o, "\\000", 4);
            o += 4;
            break;
        default: *o++ = ch;
        }
    }
    b->len = (size_t)(o - b->data);
}

/* The columns of pg_temp.helmq_stage after ord and ho (helmq.stage_create): the event
 * field each takes in an event's row, and in a row of its history (NULL: the
 * column is null in such rows). */
static const struct stage_column {
    const char *event, *history;
} stage_columns[] = {
    {"eventId", NULL},
    {"commandId", NULL},
    {"releaseId", NULL},
    {"tenantId", NULL},
    {"eventType", NULL},
    {"terminal", NULL},
    {"namespace", NULL},
    {"releaseName", NULL},
    {"status", "status"},
    {"revision", "revision"},
    {"chartName", "chartName"},
    {"chartVersion", "chartVersion"},
    {"appVersion", "appVersion"},
    {NULL, "operation"},
    {"description", "description"},
    {"performedBy", NULL},
    {"occurredAt", "createdAt"},
    {"reason", NULL},
    {"valuesDigest", NULL},
    {"valuesRedacted", NULL},
    {"errorCode", NULL},
    {"errorMessage", NULL},
};
#define NCOLUMNS (sizeof(stage_columns) / sizeof(stage_columns[0]))

/* Where each column's field sits in a flat event (codec_flat_index), -1 for
 * none; and the history array's. */
static int col_event[NCOLUMNS], col_history[NCOLUMNS], ix_history;

static int stage_columns_init(void) {
    ix_history = codec_flat_index(CODEC_EVENT, "history", NULL);
    for (size_t c = 0; c < NCOLUMNS; c++) {
        const struct stage_column *sc = &stage_columns[c];
        col_event[c] = sc->event ? codec_flat_index(CODEC_EVENT, sc->event, NULL) : -1;
        col_history[c] = sc->history ? codec_flat_index(CODEC_EVENT, "history", sc->history) : -1;
        if ((sc->event && col_event[c] < 0) || (sc->history && col_history[c] < 0)) {
            log_error("the event schema has no field %s%s", sc->event ? sc->event : "history.",
                      sc->event ? "" : sc->history);
            return -1;
        }
    }
    return ix_history < 0 ? -1 : 0;
}

/* A flat event's value as a column, as jsonb's ->> gives the same field of
 * its natural JSON: a string's text (an enum's symbol), a number's digits,
 * true/false, and \N for null. sep is the character after it (tab, or the
 * newline ending the row). */
static void copy_val(copy_buf_t *b, const codec_val_t *v, char sep) {
    char num[32];
    int n;
    switch (v ? v->kind : CODEC_V_NULL) {
    case CODEC_V_TEXT: copy_text(b, v->text, v->len); break;
    case CODEC_V_INT:
        n = snprintf(num, sizeof(num), "%lld", (long long)v->num);
        copy_raw(b, num, (size_t)n);
        break;
    case CODEC_V_BOOL: copy_raw(b, v->num ? "true" : "false", v->num ? 4 : 5); break;
    default: copy_raw(b, "\\N", 2);
    }
    copy_raw(b, &sep, 1);
}

/* The staging rows of events [lo, hi), appended to rows. */
static void stage_rows(const batch_record_t *recs, int lo, int hi, copy_buf_t *rows) {
    char num[32];
    for (int i = lo; i < hi; i++) {
        const codec_flat_t *e = &recs[i].ev;
        int ord = i - lo + 1;
        int n = snprintf(num, sizeof(num), "%d\t0\t", ord);
        copy_raw(rows, num, (size_t)n);
        for (size_t c = 0; c < NCOLUMNS; c++)
            copy_val(rows, col_event[c] >= 0 ? &e->v[col_event[c]] : NULL, c + 1 < NCOLUMNS ? '\t' : '\n');
        for (int k = 0; k < e->items; k++) {
            n = snprintf(num, sizeof(num), "%d\t%d\t", ord, k + 1);
            copy_raw(rows, num, (size_t)n);
            for (size_t c = 0; c < NCOLUMNS; c++)
                copy_val(rows, col_history[c] >= 0 ? codec_flat_item(e, k, col_history[c]) : NULL,
                         c + 1 < NCOLUMNS ? '\t' : '\n');
        }
    }
}

/* Ends a failed batch transaction and hands r back. */
static PGresult *rollback(PGconn *c, PGresult *r) {
    if (PQstatus(c) == CONNECTION_OK && PQtransactionStatus(c) != PQTRANS_IDLE)
        PQclear(PQexec(c, "ROLLBACK"));
    return r;
}

/* Sends one COPY's rows; returns 1 when libpq took them all. */
static int copy_put(PGconn *c, const copy_buf_t *rows) {
    int sent = 1;
    for (size_t off = 0; sent && off < rows->len;) {
        size_t chunk = rows->len - off < (1u << 20) ? rows->len - off : (1u << 20);
        sent = PQputCopyData(c, rows->data + off, (int)chunk) == 1;
        off += chunk;
    }
    return PQputCopyEnd(c, sent ? NULL : "the projector could not send the batch") == 1 && sent;
}

/* Reads the results of the statement in flight up to the end, sending the
 * rows of its further COPYs (more[0..nmore)) as PostgreSQL asks for them.
 * Returns the first query result (helmq.apply_staged()'s count of new
 * events, or helmq.apply_direct_releases()'s rows) when every statement
 * succeeded, else the first failed result, with the transaction rolled back;
 * the caller clears it either way. */
static PGresult *stage_finish(projector_t *p, const copy_buf_t *more, int nmore) {
    PGresult *r, *failed = NULL, *applied = NULL;
    while ((r = PQgetResult(p->db))) {
        ExecStatusType st = PQresultStatus(r);
        if (!failed && st == PGRES_TUPLES_OK && !applied)
            applied = r;
        else if (!failed && st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK && st != PGRES_COPY_IN)
            failed = r;
        else
            PQclear(r);
        if (st == PGRES_COPY_IN && nmore > 0 && !failed) {
            if (!copy_put(p->db, more) && !failed)
                failed = PQmakeEmptyPGresult(p->db, PGRES_FATAL_ERROR);
            more++;
            nmore--;
        } else if (st == PGRES_COPY_IN) /* not expected here: end it so the connection can go on */
            PQputCopyEnd(p->db, "unexpected COPY");
    }
    if (!failed && !applied)
        failed = PQmakeEmptyPGresult(p->db, PGRES_FATAL_ERROR);
    if (failed) {
        PQclear(applied);
        return rollback(p->db, failed);
    }
    return applied;
}

/* The statements of a batch, each one query string in one transaction. The
 * staged form (sql/0002_projection_baseline.sql): every event into pg_temp.helmq_stage, applied by
 * helmq.apply_staged(). The direct form (the same file): a batch's new events,
 * history rows and releases computed by the projector, COPY'd straight into
 * the tables (the releases through pg_temp.helmq_direct_releases). */
static const char sql_staged[] =
    "BEGIN; COPY pg_temp.helmq_stage FROM STDIN; SELECT helmq.apply_staged(); COMMIT";
static const char sql_direct[] =
    "BEGIN; "
    "COPY helmq.applied_events (event_id, command_id, release_id, tenant_id, event_type, status, revision, "
    "occurred_at, error_code, error_message) FROM STDIN; "
    "COPY helmq.release_history (release_id, revision, tenant_id, chart_name, chart_version, app_version, "
    "status, operation, description, performed_by, command_id, error, values_digest, values_redacted, "
    "created_at) FROM STDIN; "
    "COPY pg_temp.helmq_direct_releases FROM STDIN; "
    "SELECT helmq.apply_direct_releases(); COMMIT";

/* Sends sql (one of the above) with the rows of its first COPY, without
 * waiting for PostgreSQL to apply them. Returns NULL once sent (stage_finish
 * then sends the further COPYs' rows and reads the outcome), else the failed
 * result (the caller clears it). */
static PGresult *stage_send(projector_t *p, const char *sql, const copy_buf_t *rows) {
    PGresult *r;
    if (p->staged_pid != PQbackendPID(p->db)) {
        r = PQexec(p->db, "SELECT helmq.stage_create(), helmq.stage_create_direct()");
        if (PQresultStatus(r) != PGRES_TUPLES_OK)
            return r;
        PQclear(r);
        p->staged_pid = PQbackendPID(p->db);
    }
    if (!PQsendQuery(p->db, sql))
        return PQmakeEmptyPGresult(p->db, PGRES_FATAL_ERROR);
    /* BEGIN's result, then the COPY's invitation. */
    for (int i = 0; i < 2; i++) {
        r = PQgetResult(p->db);
        if (PQresultStatus(r) != (i == 0 ? PGRES_COMMAND_OK : PGRES_COPY_IN)) {
            PGresult *rest = stage_finish(p, NULL, 0);
            PQclear(rest);
            return rollback(p->db, r ? r : PQmakeEmptyPGresult(p->db, PGRES_FATAL_ERROR));
        }
        PQclear(r);
    }
    if (!copy_put(p->db, rows)) {
        PGresult *rest = stage_finish(p, NULL, 0);
        if (PQresultStatus(rest) == PGRES_FATAL_ERROR)
            return rest;
        PQclear(rest);
        return rollback(p->db, PQmakeEmptyPGresult(p->db, PGRES_FATAL_ERROR));
    }
    return NULL;
}

/* Classifies a failed apply of n events, logging what is retried. Returns
 * 1 when an event's data caused it (sqlstate and msg say why), 0 when it is
 * worth retrying after a backoff, -1 when a rebuild must give up. Clears r. */
static int apply_failed(projector_t *p, PGresult *r, int n, unsigned backoff, char sqlstate[6], char *msg,
                        size_t msg_size) {
    pg_error_kind_t kind = pg_error_kind(p->db, r);
    pg_error_text(r, p->db, sqlstate, msg, msg_size);
    PQclear(r);
    atomic_store(&m_pg_up, PQstatus(p->db) == CONNECTION_OK);
    if (kind == PG_ERROR_EVENT)
        return 1;
    p->staged_pid = 0; /* after an error no event caused, check the staging table again */
    if (PQstatus(p->db) != CONNECTION_OK)
        log_warn("postgresql lost while writing %d events (%s); the batch is kept and retried", n, msg);
    else if (kind == PG_ERROR_TRANSIENT)
        log_warn("writing %d events failed (SQLSTATE %s: %s); retrying in %u ms", n, sqlstate, msg, backoff);
    else if (p->rebuild) {
        log_error("writing %d events failed (SQLSTATE %s: %s), not because of an event: giving up", n,
                  sqlstate, msg);
        return -1;
    } else
        log_error("writing %d events failed (SQLSTATE %s: %s), not because of an event (check the "
                  "projection's schema and grants); retrying in %u ms",
                  n, sqlstate, msg, backoff);
    return 0;
}

/* Applies events [lo, hi) of the batch in one transaction, retrying transient
 * errors with backoff. Returns 0 once PostgreSQL committed them; 1 when
 * PostgreSQL refused them because of an event's data (sqlstate and msg say
 * why); -1 when stopped first, or, in a rebuild, on an error no event caused. */
static int apply_range(projector_t *p, batch_record_t *recs, int lo, int hi, char sqlstate[6], char *msg,
                       size_t msg_size) {
    copy_buf_t rows = {0};
    stage_rows(recs, lo, hi, &rows);
    int n = hi - lo, rc = -1;
    unsigned backoff = 100;
    while (!stop) {
        p->db = db_ensure(p->db, p->url);
        if (stop)
            break;
        PGresult *r = stage_send(p, sql_staged, &rows);
        if (!r)
            r = stage_finish(p, NULL, 0);
        if (PQresultStatus(r) == PGRES_TUPLES_OK) {
            log_debug("applied %d events (%s new)", n, PQgetvalue(r, 0, 0));
            PQclear(r);
            metrics_batch(n);
            rc = 0;
            break;
        }
        int kind = apply_failed(p, r, n, backoff, sqlstate, msg, msg_size);
        if (kind != 0) {
            rc = kind;
            break;
        }
        backoff_sleep(&backoff);
    }
    free(rows.data);
    return rc;
}

/* Records one record in helmq.parked_events, retrying until PostgreSQL has
 * it, then logs and counts it. sqlstate is NULL for a record that did not
 * decode. Returns 0, or -1 when stopped first (or a rebuild gave up). */
static int park(projector_t *p, const batch_record_t *rec, const char *sqlstate, const char *why) {
    const rd_kafka_message_t *m = rec->msg;
    char partition[16], offset[32], key[256];
    /* The event's natural JSON, for the operator reading parked_events. */
    json_t *event = NULL;
    codec_type_t type;
    char errstr[256];
    if (rec->is_event && codec_decode(m->payload, m->len, &type, &event, errstr, sizeof(errstr)) != 0)
        event = NULL;
    char *payload = event ? json_dumps(event, JSON_COMPACT) : NULL;
    snprintf(partition, sizeof(partition), "%d", (int)m->partition);
    snprintf(offset, sizeof(offset), "%lld", (long long)m->offset);
    key_text(m, key, sizeof(key));
    const char *params[8] = {
        p->topic, partition, offset, m->key, m->payload, payload, sqlstate && *sqlstate ? sqlstate : NULL,
        why};
    int lengths[8] = {0, 0, 0, (int)m->key_len, (int)m->len, 0, 0, 0};
    int formats[8] = {0, 0, 0, 1, 1, 0, 0, 0};
    unsigned backoff = 100;
    int rc = -1;
    while (!stop) {
        p->db = db_ensure(p->db, p->url);
        if (stop)
            break;
        PGresult *r = PQexecParams(p->db, "SELECT helmq.park_event($1, $2, $3, $4, $5, $6, $7, $8)", 8, NULL,
                                   params, lengths, formats, 0);
        if (PQresultStatus(r) == PGRES_TUPLES_OK) {
            PQclear(r);
            rc = 0;
            break;
        }
        char st[6], msg[1024];
        pg_error_kind_t kind = pg_error_kind(p->db, r);
        pg_error_text(r, p->db, st, msg, sizeof(msg));
        PQclear(r);
        atomic_store(&m_pg_up, PQstatus(p->db) == CONNECTION_OK);
        if (p->rebuild && kind != PG_ERROR_TRANSIENT) {
            log_error("%s[%d]@%lld: parking the record failed (SQLSTATE %s: %s): giving up", p->topic,
                      (int)m->partition, (long long)m->offset, st, msg);
            break;
        }
        log_error("%s[%d]@%lld: parking the record failed (SQLSTATE %s: %s); retrying in %u ms", p->topic,
                  (int)m->partition, (long long)m->offset, st, msg, backoff);
        backoff_sleep(&backoff);
    }
    if (rc == 0) {
        const char *event_id = json_string_value(json_object_get(event, "eventId"));
        const char *command_id = json_string_value(json_object_get(event, "commandId"));
        log_error("%s[%d]@%lld key=%s eventId=%s commandId=%s: %s%s%s: %s; parked in helmq.parked_events, "
                  "going on",
                  p->topic, (int)m->partition, (long long)m->offset, key, event_id ? event_id : "-",
                  command_id ? command_id : "-",
                  sqlstate ? "refused by PostgreSQL (SQLSTATE " : "not a helmq event",
                  sqlstate ? sqlstate : "", sqlstate ? ")" : "", why);
        atomic_fetch_add(sqlstate ? &m_parked_refused : &m_parked_undecodable, 1);
        p->parked++;
    }
    free(payload);
    json_decref(event);
    return rc;
}

/* Applies events [lo, hi) in topic order, parking those PostgreSQL refuses:
 * a refused range is split in halves until each refused event stands alone.
 * Returns 0 when every event is applied or parked, -1 when stopped first. */
static int project_range(projector_t *p, batch_record_t *recs, int lo, int hi, int depth) {
    char sqlstate[6], msg[1024];
    int rc = apply_range(p, recs, lo, hi, sqlstate, msg, sizeof(msg));
    if (rc <= 0)
        return rc;
    if (hi - lo == 1)
        return park(p, &recs[lo], sqlstate, msg);
    if (depth == 0)
        log_warn("a batch of %d events was refused (SQLSTATE %s: %s); splitting it to find the event",
                 hi - lo, sqlstate, msg);
    else
        log_debug("%d events of a batch refused (SQLSTATE %s); splitting them", hi - lo, sqlstate);
    int mid = lo + (hi - lo) / 2;
    if (project_range(p, recs, lo, mid, depth + 1) < 0)
        return -1;
    return project_range(p, recs, mid, hi, depth + 1);
}

/* --- the direct form (helmq.apply_direct_releases) -------------------- */

/* The columns of stage_columns, by name. */
enum {
    C_EVENT_ID,
    C_COMMAND_ID,
    C_RELEASE_ID,
    C_TENANT_ID,
    C_EVENT_TYPE,
    C_TERMINAL,
    C_NAMESPACE,
    C_RELEASE_NAME,
    C_STATUS,
    C_REVISION,
    C_CHART_NAME,
    C_CHART_VERSION,
    C_APP_VERSION,
    C_OPERATION,
    C_DESCRIPTION,
    C_PERFORMED_BY,
    C_AT,
    C_REASON,
    C_DIGEST,
    C_REDACTED,
    C_ERROR_CODE,
    C_ERROR_MESSAGE,
};

static const codec_val_t val_null = {CODEC_V_NULL, NULL, 0, 0};

static const codec_val_t *ev_val(const codec_flat_t *e, int c) {
    return col_event[c] >= 0 ? &e->v[col_event[c]] : &val_null;
}
static const codec_val_t *hist_val(const codec_flat_t *e, int k, int c) {
    return col_history[c] >= 0 ? codec_flat_item(e, k, col_history[c]) : &val_null;
}
static int val_is(const codec_val_t *v, const char *text) {
    size_t n = strlen(text);
    return v->kind == CODEC_V_TEXT && v->len == n && memcmp(v->text, text, n) == 0;
}

/* The direct form writes timestamps as text; the staged form converts ms
 * with to_timestamp(ms / 1000.0), whose float arithmetic gives the exact
 * millisecond only within a range: outside it, the batch is staged. */
#define DIRECT_MS_MAX 4102444800000LL /* 2100-01-01 */

/* A timestamp column from ms since the epoch (util.c's ISO 8601 form, which
 * COPY reads as timestamptz); -1 when out of range. */
static int copy_ts(copy_buf_t *b, const codec_val_t *v, char sep) {
    if (v->kind != CODEC_V_INT || v->num < 0 || v->num >= DIRECT_MS_MAX)
        return -1;
    char text[48];
    format_time_ms(v->num, text, sizeof(text));
    copy_raw(b, text, strlen(text));
    copy_raw(b, &sep, 1);
    return 0;
}

/* A set of (text, number) keys with an int each, for one batch: eventIds,
 * (releaseId, revision) history keys, releaseIds. Open addressing; the
 * texts are slices of the batch's messages. */
typedef struct key_slot {
    const char *text;
    size_t len;
    int64_t num;
    int val;
} key_slot_t;

typedef struct key_set {
    key_slot_t *slots;
    size_t mask;
} key_set_t;

static void key_set_reset(key_set_t *ks, int n) {
    size_t cap = 16;
    while (cap < (size_t)n * 2)
        cap *= 2;
    if (cap > ks->mask + 1 || !ks->slots) {
        free(ks->slots);
        ks->slots = malloc(cap * sizeof(*ks->slots));
        if (!ks->slots) {
            log_error("out of memory for a batch of %d events", n);
            abort();
        }
        ks->mask = cap - 1;
    }
    for (size_t i = 0; i <= ks->mask; i++)
        ks->slots[i].text = NULL;
}

/* The slot of (text, num), added with val when new; *found says which. */
static key_slot_t *key_set_put(key_set_t *ks, const codec_val_t *text, int64_t num, int val, int *found) {
    uint64_t h = 1469598103934665603ULL ^ (uint64_t)num;
    for (size_t i = 0; i < text->len; i++)
        h = (h ^ (unsigned char)text->text[i]) * 1099511628211ULL;
    for (size_t i = (size_t)(h ^ (h >> 29)) & ks->mask;; i = (i + 1) & ks->mask) {
        key_slot_t *s = &ks->slots[i];
        if (!s->text) {
            *s = (key_slot_t){text->text, text->len, num, val};
            *found = 0;
            return s;
        }
        if (s->num == num && s->len == text->len && memcmp(s->text, text->text, text->len) == 0) {
            *found = 1;
            return s;
        }
    }
}

/* A release of the batch: its winning event and its first one. */
typedef struct winner {
    int ev, first;
} winner_t;

static int winner_cmp(const void *a, const void *b) {
    return ((const winner_t *)a)->ev - ((const winner_t *)b)->ev;
}

/* What the direct form needs beyond the batch, reused batch after batch. */
typedef struct direct_work {
    key_set_t ids, history, releases;
    winner_t *winners;
    int cap;
} direct_work_t;

static direct_work_t direct_work;

static void direct_work_free(direct_work_t *w) {
    free(w->ids.slots);
    free(w->history.slots);
    free(w->releases.slots);
    free(w->winners);
}

/* The batch's events in the direct form: rows[0] for helmq.applied_events,
 * rows[1] for helmq.release_history, rows[2] for
 * pg_temp.helmq_direct_releases, exactly what helmq.apply_staged_rows writes
 * for a batch all of whose events and history rows are new (see
 * sql/0002_projection_baseline.sql). Returns the number of new events, or -1 when the batch must be
 * staged (a value only the staged form converts exactly). */
static int direct_rows(const batch_record_t *evs, int n, direct_work_t *w, copy_buf_t rows[3]) {
    int nhist = 0, nwin = 0, fresh = 0, found;
    for (int i = 0; i < n; i++)
        nhist += evs[i].ev.items;
    key_set_reset(&w->ids, n);
    key_set_reset(&w->history, nhist);
    key_set_reset(&w->releases, n);
    if (w->cap < n) {
        free(w->winners);
        w->winners = malloc((size_t)n * sizeof(*w->winners));
        if (!w->winners) {
            log_error("out of memory for a batch of %d events", n);
            abort();
        }
        w->cap = n;
    }
    for (int k = 0; k < 3; k++)
        rows[k].len = 0;
    for (int i = 0; i < n; i++) {
        const codec_flat_t *e = &evs[i].ev;
        const codec_val_t *id = ev_val(e, C_EVENT_ID), *rid = ev_val(e, C_RELEASE_ID);
        if (id->kind != CODEC_V_TEXT)
            return -1;
        key_set_put(&w->ids, id, 0, i, &found);
        if (found) /* a duplicate within the batch counts once, at its first place */
            continue;
        fresh++;
        static const int applied_cols[] = {C_EVENT_ID,   C_COMMAND_ID, C_RELEASE_ID, C_TENANT_ID,
                                           C_EVENT_TYPE, C_STATUS,     C_REVISION};
        for (size_t c = 0; c < sizeof(applied_cols) / sizeof(applied_cols[0]); c++)
            copy_val(&rows[0], ev_val(e, applied_cols[c]), '\t');
        if (copy_ts(&rows[0], ev_val(e, C_AT), '\t') < 0)
            return -1;
        copy_val(&rows[0], ev_val(e, C_ERROR_CODE), '\t');
        copy_val(&rows[0], ev_val(e, C_ERROR_MESSAGE), '\n');
        const codec_val_t *terminal = ev_val(e, C_TERMINAL), *revision = ev_val(e, C_REVISION);
        if (!(terminal->kind == CODEC_V_BOOL && terminal->num) ||
            val_is(ev_val(e, C_EVENT_TYPE), "rejected") || rid->kind != CODEC_V_TEXT)
            continue;
        if (revision->kind != CODEC_V_INT || ev_val(e, C_AT)->kind != CODEC_V_INT)
            return -1;
        /* History: each (release, revision) once, the first in topic order. */
        for (int k = 0; k < e->items; k++) {
            const codec_val_t *hrev = hist_val(e, k, C_REVISION);
            if (hrev->kind != CODEC_V_INT)
                return -1;
            key_set_put(&w->history, rid, hrev->num, 0, &found);
            if (found)
                continue;
            int own = hrev->num == revision->num;
            copy_val(&rows[1], rid, '\t');
            copy_val(&rows[1], hrev, '\t');
            copy_val(&rows[1], ev_val(e, C_TENANT_ID), '\t');
            static const int hist_cols[] = {C_CHART_NAME, C_CHART_VERSION, C_APP_VERSION,
                                            C_STATUS,     C_OPERATION,     C_DESCRIPTION};
            for (size_t c = 0; c < sizeof(hist_cols) / sizeof(hist_cols[0]); c++)
                copy_val(&rows[1], hist_val(e, k, hist_cols[c]), '\t');
            copy_val(&rows[1], ev_val(e, C_PERFORMED_BY), '\t');
            copy_val(&rows[1], ev_val(e, C_COMMAND_ID), '\t');
            copy_val(&rows[1], val_is(hist_val(e, k, C_STATUS), "failed") ? ev_val(e, C_ERROR_MESSAGE) : NULL,
                     '\t');
            copy_val(&rows[1], own ? ev_val(e, C_DIGEST) : NULL, '\t');
            copy_val(&rows[1], own ? ev_val(e, C_REDACTED) : NULL, '\t');
            if (copy_ts(&rows[1], hist_val(e, k, C_AT), '\n') < 0)
                return -1;
        }
        /* The release's winner: the highest (revision, occurredAt), the
         * later in topic order on a tie. */
        key_slot_t *slot = key_set_put(&w->releases, rid, 0, nwin, &found);
        if (!found) {
            w->winners[nwin++] = (winner_t){i, i};
            continue;
        }
        winner_t *win = &w->winners[slot->val];
        const codec_flat_t *we = &evs[win->ev].ev;
        int64_t wrev = ev_val(we, C_REVISION)->num, wat = ev_val(we, C_AT)->num;
        if (revision->num > wrev || (revision->num == wrev && ev_val(e, C_AT)->num >= wat))
            win->ev = i;
    }
    /* The releases, in the topic order of their winning events. */
    if (nwin > 1)
        qsort(w->winners, (size_t)nwin, sizeof(*w->winners), winner_cmp);
    for (int r = 0; r < nwin; r++) {
        const codec_flat_t *e = &evs[w->winners[r].ev].ev;
        char num[16];
        int len = snprintf(num, sizeof(num), "%d\t", w->winners[r].ev + 1);
        copy_raw(&rows[2], num, (size_t)len);
        static const int rel_cols[] = {C_RELEASE_ID, C_TENANT_ID,     C_NAMESPACE,   C_RELEASE_NAME,
                                       C_CHART_NAME, C_CHART_VERSION, C_APP_VERSION, C_STATUS,
                                       C_REVISION,   C_DESCRIPTION,   C_DIGEST,      C_REDACTED};
        for (size_t c = 0; c < sizeof(rel_cols) / sizeof(rel_cols[0]); c++)
            copy_val(&rows[2], ev_val(e, rel_cols[c]), '\t');
        copy_val(&rows[2], val_is(ev_val(e, C_STATUS), "uninstalled") ? ev_val(e, C_REASON) : NULL, '\t');
        copy_val(&rows[2], ev_val(e, C_ERROR_MESSAGE), '\t');
        copy_val(&rows[2], ev_val(e, C_EVENT_ID), '\t');
        if (copy_ts(&rows[2], ev_val(&evs[w->winners[r].first].ev, C_AT), '\t') < 0 ||
            copy_ts(&rows[2], ev_val(e, C_AT), '\n') < 0)
            return -1;
    }
    return fresh;
}

/* Batches staged rather than tried in the direct form after one failed
 * there (a replay: events already applied; a concurrent writer): a replay
 * goes on for a while, and each failed try costs a round trip. */
#define DIRECT_PAUSE 16

/* A batch: its records in topic order, and the decoded events among them. */
typedef struct batch {
    batch_record_t *recs;
    batch_record_t *events;
    int n, nevents;
    copy_buf_t rows;     /* the staged form: the events' rows for pg_temp.helmq_stage */
    copy_buf_t drows[3]; /* the direct form: see direct_rows */
    int direct;          /* the direct form's rows were made */
    int fresh;           /* the direct form: the batch's new events */
    int in_flight;       /* its rows were sent and their outcome not yet read */
} batch_t;

/* Prepares a gathered batch: picks its decoded events and writes their rows
 * in the direct form, or the staged one while the direct form pauses (done
 * while PostgreSQL still applies the batch before). */
static void batch_prepare(projector_t *p, batch_t *b) {
    b->nevents = 0;
    b->in_flight = 0;
    b->rows.len = 0;
    for (int i = 0; i < b->n; i++)
        if (b->recs[i].is_event)
            b->events[b->nevents++] = b->recs[i];
    int fresh = -1; /* a batch without events sends nothing: see batch_start */
    if (b->nevents > 0 && p->direct_pause > 0)
        p->direct_pause--;
    else if (b->nevents > 0)
        fresh = direct_rows(b->events, b->nevents, &direct_work, b->drows);
    b->direct = fresh >= 0;
    b->fresh = fresh;
    if (!b->direct)
        stage_rows(b->events, 0, b->nevents, &b->rows);
}

/* Starts applying a prepared batch: its staged rows are sent to PostgreSQL,
 * which applies them while the caller gathers and decodes the next batch;
 * batch_finish reads the outcome. Nothing is sent when PostgreSQL is
 * unreachable or refuses at once: batch_finish then takes the slow path. */
static void batch_start(projector_t *p, batch_t *b) {
    if (b->nevents == 0 || !p->db || PQstatus(p->db) != CONNECTION_OK)
        return;
    PGresult *r = b->direct ? stage_send(p, sql_direct, &b->drows[0]) : stage_send(p, sql_staged, &b->rows);
    if (!r)
        b->in_flight = 1;
    PQclear(r);
}

/* Ends applying a whole batch: the decoded events in order, the records that
 * did not decode parked. When the staged rows sent by batch_start did not
 * commit (refused, or PostgreSQL lost), the batch is applied again the slow
 * way: retried with backoff, split to isolate refused events. Returns 0 once
 * everything is in PostgreSQL (the offsets may then be committed), -1 when
 * stopped first. */
static int batch_finish(projector_t *p, batch_t *b) {
    int rc = 0, done = 0;
    if (b->in_flight) {
        b->in_flight = 0;
        PGresult *r = stage_finish(p, b->direct ? &b->drows[1] : NULL, b->direct ? 2 : 0);
        if (PQresultStatus(r) == PGRES_TUPLES_OK) {
            if (b->direct) {
                log_debug("applied %d events in the direct form (%d new, %s releases written)", b->nevents,
                          b->fresh, PQgetvalue(r, 0, 0));
                atomic_fetch_add(&m_direct_batches, 1);
            } else
                log_debug("applied %d events (%s new)", b->nevents, PQgetvalue(r, 0, 0));
            metrics_batch(b->nevents);
            done = 1;
        } else {
            char sqlstate[6], msg[1024];
            pg_error_text(r, p->db, sqlstate, msg, sizeof(msg));
            if (pg_error_kind(p->db, r) != PG_ERROR_EVENT)
                p->staged_pid = 0;
            if (b->direct) {
                p->direct_pause = DIRECT_PAUSE;
                atomic_fetch_add(&m_direct_retried, 1);
            }
            log_debug(
                "a batch of %d events failed in the %s form (SQLSTATE %s: %s); applying it again, staged",
                b->nevents, b->direct ? "direct" : "staged", sqlstate, msg);
        }
        PQclear(r);
    }
    if (!done && b->nevents > 0)
        rc = project_range(p, b->events, 0, b->nevents, 0);
    for (int i = 0; rc == 0 && i < b->n; i++)
        if (!b->recs[i].is_event)
            rc = park(p, &b->recs[i], NULL, b->recs[i].decode_error);
    return rc;
}

/* Adds a record to the batch, taking m: decoded, or with why it is not a
 * helmq event. */
static void batch_add(batch_record_t *rec, rd_kafka_message_t *m) {
    char errstr[512];
    codec_type_t t;
    json_t *doc = NULL;
    rec->msg = m;
    rec->is_event = 0;
    rec->reencoded = NULL;
    rec->decode_error = NULL;
    if (codec_decode_flat(m->payload, m->len, CODEC_EVENT, &rec->ev) == 0) {
        rec->is_event = 1;
        return;
    }
    /* Not an event of the current schema read in place: the full decoder
     * says why, or resolves an older schema's event, which is then read in
     * place from its encoding with the current one. */
    size_t len;
    if (codec_decode(m->payload, m->len, &t, &doc, errstr, sizeof(errstr)) != 0)
        rec->decode_error = strdup(errstr);
    else if (t != CODEC_EVENT)
        rec->decode_error = strdup("a command, not an event");
    else if (codec_encode(CODEC_EVENT, doc, &rec->reencoded, &len, errstr, sizeof(errstr)) != 0)
        rec->decode_error = strdup(errstr);
    else if (codec_decode_flat(rec->reencoded, len, CODEC_EVENT, &rec->ev) != 0)
        rec->decode_error = strdup("the event does not decode in place (a schema the projector cannot read)");
    else
        rec->is_event = 1;
    json_decref(doc);
}

static void batch_clear(batch_record_t *recs, int n) {
    for (int i = 0; i < n; i++) {
        rd_kafka_message_destroy(recs[i].msg);
        free(recs[i].reencoded);
        recs[i].reencoded = NULL;
        free(recs[i].decode_error);
    }
}

static rd_kafka_t *consumer_new(const config_t *cfg, int rebuild, char *errstr, size_t errstr_size) {
    rd_kafka_conf_t *conf = kafka_conf_new(cfg, config_get(cfg, "brokers"), errstr, errstr_size);
    if (!conf)
        return NULL;
    if (kafka_conf_set(conf, "group.id", rebuild ? "helmq-projector-rebuild" : config_get(cfg, "group-id"),
                       errstr, errstr_size) < 0 ||
        kafka_conf_set(conf, "enable.auto.commit", "false", errstr, errstr_size) < 0 ||
        kafka_conf_set(conf, "enable.auto.offset.store", "false", errstr, errstr_size) < 0 ||
        kafka_conf_set(conf, "auto.offset.reset", "earliest", errstr, errstr_size) < 0 ||
        kafka_conf_set(conf, "enable.partition.eof", rebuild ? "true" : "false", errstr, errstr_size) < 0 ||
        kafka_conf_set(conf, "client.id", "helmq-projector", errstr, errstr_size) < 0 ||
        kafka_conf_set(conf, "statistics.interval.ms", "5000", errstr, errstr_size) < 0) {
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    for (int i = 0; i < cfg->kafka_count; i++) { /* pass-through wins */
        char *kv = strdup(cfg->kafka_props[i]);
        char *eq = strchr(kv, '=');
        *eq = '\0';
        rd_kafka_conf_set(conf, kv, eq + 1, errstr, errstr_size);
        free(kv);
    }
    rd_kafka_conf_set_stats_cb(conf, stats_cb);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, errstr_size);
    if (!rk) {
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    rd_kafka_poll_set_consumer(rk);
    return rk;
}

/* Assigns every partition of topic from the beginning (for rebuild). */
static int assign_all(rd_kafka_t *rk, const char *topic, int *nparts, char *errstr, size_t errstr_size) {
    const rd_kafka_metadata_t *md = NULL;
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
    rd_kafka_resp_err_t err = rd_kafka_metadata(rk, 0, rkt, &md, 10000);
    rd_kafka_topic_destroy(rkt);
    if (err || md->topic_cnt != 1 || md->topics[0].err) {
        snprintf(errstr, errstr_size, "no metadata for %s: %s", topic,
                 err ? rd_kafka_err2str(err) : rd_kafka_err2str(md->topics[0].err));
        if (md)
            rd_kafka_metadata_destroy(md);
        return -1;
    }
    *nparts = md->topics[0].partition_cnt;
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(*nparts);
    for (int i = 0; i < *nparts; i++)
        rd_kafka_topic_partition_list_add(l, topic, md->topics[0].partitions[i].id)->offset =
            RD_KAFKA_OFFSET_BEGINNING;
    rd_kafka_metadata_destroy(md);
    rd_kafka_assign(rk, l);
    rd_kafka_topic_partition_list_destroy(l);
    return 0;
}

static int run(const config_t *cfg, int rebuild) {
    char errstr[512];
    const char *url = config_get(cfg, "database-url");
    const char *topic = config_get(cfg, "events-topic");
    int batch_size = (int)config_int(cfg, "batch-size");
    uint64_t batch_wait = (uint64_t)config_int(cfg, "batch-wait-ms");
    PGconn *db = db_ensure(NULL, url);
    if (stop)
        return 1;
    char rebuild_began[64] = ""; /* when the rebuild emptied the projection (helmq.rebuild_begin) */
    if (rebuild) {
        PGresult *r = PQexec(db, "SELECT helmq.rebuild_begin()");
        int ok = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1;
        if (!ok)
            log_error("emptying the projection: %s", PQresultErrorMessage(r));
        else
            snprintf(rebuild_began, sizeof(rebuild_began), "%s", PQgetvalue(r, 0, 0));
        PQclear(r);
        if (!ok) {
            PQfinish(db);
            return 1;
        }
        log_info("projection emptied; replaying %s from the beginning", topic);
    }
    rd_kafka_t *rk = consumer_new(cfg, rebuild, errstr, sizeof(errstr));
    if (!rk) {
        log_error("kafka: %s", errstr);
        PQfinish(db);
        return 1;
    }
    int nparts = 0, eofs = 0;
    if (rebuild) {
        if (assign_all(rk, topic, &nparts, errstr, sizeof(errstr)) < 0) {
            log_error("kafka: %s", errstr);
            rd_kafka_destroy(rk);
            PQfinish(db);
            return 1;
        }
    } else {
        rd_kafka_topic_partition_list_t *t = rd_kafka_topic_partition_list_new(1);
        rd_kafka_topic_partition_list_add(t, topic, RD_KAFKA_PARTITION_UA);
        rd_kafka_resp_err_t err = rd_kafka_subscribe(rk, t);
        rd_kafka_topic_partition_list_destroy(t);
        if (err) {
            log_error("subscribe to %s: %s", topic, rd_kafka_err2str(err));
            rd_kafka_destroy(rk);
            PQfinish(db);
            return 1;
        }
        log_info("projecting %s as group %s from %s into PostgreSQL", topic, config_get(cfg, "group-id"),
                 config_get(cfg, "brokers"));
    }
    projector_t p = {.db = db, .url = url, .topic = topic, .rebuild = rebuild};
    db = NULL;
    /* Two batches: one PostgreSQL applies while the next is gathered and
     * decoded. */
    batch_t bufs[2], *cur = &bufs[0], *next = &bufs[1];
    for (int i = 0; i < 2; i++) {
        bufs[i].recs = calloc((size_t)batch_size, sizeof(batch_record_t));
        bufs[i].events = malloc(sizeof(batch_record_t) * (size_t)batch_size);
        bufs[i].n = bufs[i].nevents = bufs[i].in_flight = 0;
        bufs[i].rows = (copy_buf_t){0};
        memset(bufs[i].drows, 0, sizeof(bufs[i].drows));
    }
    unsigned long long total = 0, batches = 0;
    int status = 0, gave_up = 0, applied_since_exit_commit = 0;
    for (;;) {
        int n = 0;
        uint64_t first = 0;
        /* While cur is applied, take only what has arrived. */
        while (!stop && n < batch_size && !(rebuild && eofs >= nparts)) {
            int wait = cur->n  ? 0
                       : first ? (int)(batch_wait > mono_ms() - first ? batch_wait - (mono_ms() - first) : 0)
                               : 500;
            rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, wait);
            if (!m) {
                if (first || rebuild || cur->n)
                    break;
                continue;
            }
            if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
                eofs++;
                rd_kafka_message_destroy(m);
                continue;
            }
            if (m->err) {
                log_warn("consumer: %s", rd_kafka_message_errstr(m));
                rd_kafka_message_destroy(m);
                continue;
            }
            batch_add(&next->recs[n++], m);
            if (!first)
                first = mono_ms();
        }
        next->n = n;
        batch_prepare(&p, next);
        if (cur->n > 0) {
            int rc = batch_finish(&p, cur);
            if (rc == 0 && !rebuild) {
                /* Only the offsets of applied batches are stored, then
                 * committed asynchronously: the next batch is gathered while
                 * the broker answers (a commit lost in a crash only
                 * re-applies the batch, harmlessly); the last one is waited
                 * for before exiting. */
                for (int i = 0; i < cur->n; i++)
                    rd_kafka_offset_store(cur->recs[i].msg->rkt, cur->recs[i].msg->partition,
                                          cur->recs[i].msg->offset);
                rd_kafka_resp_err_t err = rd_kafka_commit(rk, NULL, 1);
                if (err && err != RD_KAFKA_RESP_ERR__NO_OFFSET)
                    log_warn("committing offsets after a batch of %d: %s (the batch will be re-applied, "
                             "harmlessly)",
                             cur->n, rd_kafka_err2str(err));
                applied_since_exit_commit = 1;
            }
            if (rc == 0) {
                total += (unsigned long long)cur->n;
                batches++;
                if (batches % 100 == 0 || rebuild)
                    log_info("%llu events in %llu batches", total, batches);
            }
            batch_clear(cur->recs, cur->n);
            cur->n = 0;
            if (rc < 0) {
                gave_up = !stop;
                /* stopped before PostgreSQL took it all: not committed, so replayed later */
                batch_clear(next->recs, next->n);
                next->n = 0;
                break;
            }
        }
        if (stop && next->n > 0) { /* gathered, never sent: not committed, so replayed later */
            batch_clear(next->recs, next->n);
            next->n = 0;
        }
        if (next->n == 0 && (stop || (rebuild && eofs >= nparts)))
            break;
        batch_t *t = cur;
        cur = next;
        next = t;
        if (cur->n > 0)
            batch_start(&p, cur);
    }
    direct_work_free(&direct_work);
    for (int i = 0; i < 2; i++) {
        free(bufs[i].drows[0].data);
        free(bufs[i].drows[1].data);
        free(bufs[i].drows[2].data);
        for (int k = 0; k < batch_size; k++)
            codec_flat_free(&bufs[i].recs[k].ev);
        free(bufs[i].recs);
        free(bufs[i].events);
        free(bufs[i].rows.data);
    }
    if (!rebuild && applied_since_exit_commit) {
        /* The offsets stored are those of applied batches: commit them and
         * wait. */
        rd_kafka_resp_err_t err = rd_kafka_commit(rk, NULL, 0);
        if (err && err != RD_KAFKA_RESP_ERR__NO_OFFSET)
            log_warn(
                "committing offsets before exiting: %s (the last batches will be re-applied, harmlessly)",
                rd_kafka_err2str(err));
    }
    if (rebuild && !stop && !gave_up) {
        /* Parked rows the replay did not park again are obsolete: their
         * records were applied this time. */
        const char *params[] = {topic, rebuild_began};
        PGresult *r =
            PQexecParams(p.db, "SELECT helmq.rebuild_finish($1, $2)", 2, NULL, params, NULL, NULL, 0);
        if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1) {
            if (strcmp(PQgetvalue(r, 0, 0), "0") != 0)
                log_info(
                    "rebuild: %s records parked before are applied now; their rows in helmq.parked_events "
                    "are deleted",
                    PQgetvalue(r, 0, 0));
        } else {
            log_error("rebuild: deleting the obsolete rows of helmq.parked_events: %s (they stay; the "
                      "projection is complete)",
                      PQresultErrorMessage(r));
        }
        PQclear(r);
    }
    if (rebuild && !stop && !gave_up && p.parked == 0)
        log_info("rebuild done: %llu events replayed", total);
    else if (rebuild && !stop && !gave_up)
        log_error(
            "rebuild done, but %llu of the %llu records replayed were parked instead of applied (refused "
            "by PostgreSQL or not decodable; see the errors above and helmq.parked_events)",
            p.parked, total);
    else if (rebuild)
        log_error("rebuild stopped before the end of %s after %llu events: the projection is incomplete",
                  topic, total);
    else
        log_info("stopping after %llu events in %llu batches (%llu parked)", total, batches, p.parked);
    if (rebuild && (stop || gave_up))
        status = 1;
    else if (rebuild && p.parked > 0)
        status = 3;
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    PQfinish(p.db);
    return status;
}

int main(int argc, char **argv) {
    char errstr[1024];
    config_t cfg;
    int first = 1;
    const char *mode = "run";
    if (argc > 1 && (strcmp(argv[1], "migrate") == 0 || strcmp(argv[1], "rebuild") == 0)) {
        mode = argv[1];
        first = 2;
    }
    if (argc > 1 && strcmp(argv[1], "--help-markdown") == 0) {
        config_usage_markdown(projector_opts, stdout);
        return 0;
    }
    int rc = config_parse(&cfg, projector_opts, argc, argv, first, errstr, sizeof(errstr));
    if (rc == CONFIG_HELP) {
        usage(stdout);
        config_free(&cfg);
        return 0;
    }
    if (rc < 0 || cfg.nargs) {
        fprintf(stderr, "helmq-projector: %s\n", rc < 0 ? errstr : "unexpected argument (see --help)");
        config_free(&cfg);
        return 2;
    }
    if (log_init("helmq-projector", config_get(&cfg, "log-level")) < 0 ||
        config_int(&cfg, "batch-size") < 1) {
        fprintf(stderr, "helmq-projector: bad --log-level or --batch-size\n");
        config_free(&cfg);
        return 2;
    }
    if (codec_init(errstr, sizeof(errstr)) < 0) {
        log_error("schemas: %s", errstr);
        config_free(&cfg);
        return 1;
    }
    if (stage_columns_init() < 0) {
        codec_term();
        config_free(&cfg);
        return 1;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    for (unsigned backoff = 200; !stop; backoff = backoff < 5000 ? backoff * 2 : 5000) {
        int n = migrate_apply(config_get(&cfg, "database-url"), errstr, sizeof(errstr));
        if (n >= 0) {
            log_info("database ready (%d migrations applied now)", n);
            break;
        }
        if (strcmp(mode, "migrate") == 0 || !strstr(errstr, "connect")) {
            log_error("%s", errstr);
            codec_term();
            config_free(&cfg);
            return 1;
        }
        log_warn("%s; retrying in %u ms", errstr, backoff);
        usleep(backoff * 1000);
    }
    http_thread_t *http = NULL;
    const char *listen = config_get(&cfg, "http-listen");
    if (strcmp(mode, "run") == 0 && listen && *listen && !(http = http_start(listen))) {
        codec_term();
        config_free(&cfg);
        return 1;
    }
    rc = strcmp(mode, "migrate") == 0 ? 0 : run(&cfg, strcmp(mode, "rebuild") == 0);
    http_stop(http);
    codec_term();
    config_free(&cfg);
    return rc;
}
