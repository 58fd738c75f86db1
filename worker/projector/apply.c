/* The SQL apply step of a batch: one transaction per batch, its COPY rows
 * (batch.c) sent whole and its outcome read later, so the next batch is
 * gathered meanwhile. Errors retrying can fix (connection lost,
 * serialization failure, deadlock, shutdown, resources) are retried with
 * backoff; so are errors no event can cause (a missing function, a revoked
 * grant: parking would swallow every event), while a rebuild gives up on
 * those. A batch refused because of an event (SQLSTATE classes 22, 23, ...)
 * is split in halves, recursively, until the refused events stand alone:
 * every other event is applied, in topic order, and each refused one is
 * parked in helmq.parked_events with its error (sql/0002), logged and
 * counted. */
#include "projector.h"

#include "log.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

apply_counters_t apply_counters;
const long apply_batch_le[6] = {1, 10, 100, 1000, 10000, -1};

static void metrics_batch(int n) {
    atomic_fetch_add(&apply_counters.events, (unsigned long long)n);
    atomic_fetch_add(&apply_counters.batches, 1);
    for (int i = 0; i < 6; i++)
        if (apply_batch_le[i] < 0 || n <= apply_batch_le[i])
            atomic_fetch_add(&apply_counters.batch_buckets[i], 1);
}

/* A connection that is up, reconnecting with backoff (logged) until it is or
 * *stop is set. */
PGconn *apply_db_ensure(PGconn *c, const char *url, const volatile sig_atomic_t *stop) {
    unsigned backoff = 100;
    while (!*stop) {
        if (c && PQstatus(c) == CONNECTION_OK) {
            atomic_store(&apply_counters.pg_up, 1);
            return c;
        }
        atomic_store(&apply_counters.pg_up, 0);
        if (c) {
            PQreset(c);
            if (PQstatus(c) == CONNECTION_OK) {
                atomic_store(&apply_counters.pg_up, 1);
                log_info("postgresql: connected again");
                return c;
            }
        } else {
            c = PQconnectdb(url);
            if (PQstatus(c) == CONNECTION_OK) {
                atomic_store(&apply_counters.pg_up, 1);
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
 * staged form (sql/0002): every event into pg_temp.helmq_stage, applied by
 * helmq.apply_staged(). The direct form (sql/0002): a batch's new events,
 * history rows and releases computed by the projector, COPY'd straight into
 * the tables (the releases through pg_temp.helmq_direct_releases), in COPY's
 * binary format (copybin.c). */
static const char sql_staged[] =
    "BEGIN; COPY pg_temp.helmq_stage FROM STDIN; SELECT helmq.apply_staged(); COMMIT";
static const char sql_direct[] =
    "BEGIN; "
    "COPY helmq.applied_events (event_id, command_id, release_id, tenant_id, event_type, status, revision, "
    "occurred_at, error_code, error_message) FROM STDIN (FORMAT binary); "
    "COPY helmq.release_history (release_id, revision, tenant_id, chart_name, chart_version, app_version, "
    "status, operation, description, performed_by, command_id, error, values_digest, values_redacted, "
    "created_at) FROM STDIN (FORMAT binary); "
    "COPY pg_temp.helmq_direct_releases FROM STDIN (FORMAT binary); "
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
    atomic_store(&apply_counters.pg_up, PQstatus(p->db) == CONNECTION_OK);
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
    batch_stage_rows(recs, lo, hi, &rows);
    int n = hi - lo, rc = -1;
    unsigned backoff = 100;
    while (!*p->stop) {
        p->db = apply_db_ensure(p->db, p->url, p->stop);
        if (*p->stop)
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
    while (!*p->stop) {
        p->db = apply_db_ensure(p->db, p->url, p->stop);
        if (*p->stop)
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
        atomic_store(&apply_counters.pg_up, PQstatus(p->db) == CONNECTION_OK);
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
        atomic_fetch_add(sqlstate ? &apply_counters.parked_refused : &apply_counters.parked_undecodable, 1);
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

/* Sends a prepared batch's rows, without waiting (see projector.h). */
void apply_start(projector_t *p, batch_t *b) {
    if (b->nevents == 0 || !p->db || PQstatus(p->db) != CONNECTION_OK)
        return;
    PGresult *r = b->direct ? stage_send(p, sql_direct, &b->drows[0]) : stage_send(p, sql_staged, &b->rows);
    if (!r)
        b->in_flight = 1;
    PQclear(r);
}

/* Ends applying a whole batch: the decoded events in order, the records that
 * did not decode parked. When the rows sent by apply_start did not
 * commit (refused, or PostgreSQL lost), the batch is applied again the slow
 * way: retried with backoff, split to isolate refused events. Returns 0 once
 * everything is in PostgreSQL (the offsets may then be committed), -1 when
 * stopped first. */
int apply_finish(projector_t *p, batch_t *b) {
    int rc = 0, done = 0;
    if (b->in_flight) {
        b->in_flight = 0;
        PGresult *r = stage_finish(p, b->direct ? &b->drows[1] : NULL, b->direct ? 2 : 0);
        if (PQresultStatus(r) == PGRES_TUPLES_OK) {
            if (b->direct) {
                log_debug("applied %d events in the direct form (%d new, %s releases written)", b->nevents,
                          b->fresh, PQgetvalue(r, 0, 0));
                atomic_fetch_add(&apply_counters.direct_batches, 1);
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
                atomic_fetch_add(&apply_counters.direct_retried, 1);
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
