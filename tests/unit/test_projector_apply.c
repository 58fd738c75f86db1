/* The projector's apply step, table-driven. Without a database: records
 * decoded into events (bytes that are no event carry why, for parking), and
 * the COPY rows of the staged form (one per event and history item) and of
 * the direct form (each eventId once, each (release, revision) of the history
 * once, one release row per release whose winner is the highest revision,
 * the uninstall reason kept). With a PostgreSQL (HELMQ_DATABASE_URL; tests/
 * projector_apply.t starts one, migrated; without it those cases skip):
 * batches go through batch_prepare, apply_start and apply_finish and the
 * projection tables are read back: a new release, a later revision, an older
 * revision arriving after a newer one (ignored), a duplicate event
 * (idempotent, also replayed in a later batch), an uninstall (the release and
 * its history stay), and poison records (a value PostgreSQL refuses, bytes
 * that are no event) parked while the good events around them apply. */
#include "projector.h"

#include "codec.h"
#include "log.h"
#include "tap.h"

#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* One record of a test batch. ev: the event number (the same number is the
 * same eventId: a duplicate); rel: the release number of the case. */
typedef struct ev_spec {
    int ev, rel;
    const char *op;     /* install, upgrade, uninstall */
    const char *status; /* the release's status after it */
    int revision;
    int at;     /* occurredAt, seconds after the case's start */
    int poison; /* 1: a releaseId PostgreSQL refuses; 2: bytes that are no event */
} ev_spec_t;

#define END                                                                                                  \
    { 0, 0, NULL, NULL, 0, 0, 0 }
#define INSTALL(ev, at)                                                                                      \
    { ev, 0, "install", "deployed", 1, at, 0 }
#define UPGRADE(ev, rev, at)                                                                                 \
    { ev, 0, "upgrade", "deployed", rev, at, 0 }
#define UNINSTALL(ev, rev, at)                                                                               \
    { ev, 0, "uninstall", "uninstalled", rev, at, 0 }

static const long long T0 = 1767225600000LL; /* 2026-01-01 */
static long long next_offset;
static int case_no;

static void uuid_of(char out[37], int kind, int n) {
    snprintf(out, 37, "00000000-%04d-4000-8000-%012d", kind, case_no * 1000 + n);
}

/* The natural JSON of a terminal "succeeded" event as the worker writes it:
 * an upgrade's history holds its revision and the one it superseded. */
static json_t *event_json(const ev_spec_t *s) {
    char eid[37], cid[37], rid[37], tenant[37], name[32];
    uuid_of(eid, 1, s->ev);
    uuid_of(cid, 2, s->ev);
    uuid_of(rid, 3, s->rel);
    uuid_of(tenant, 4, 0);
    snprintf(name, sizeof(name), "app-%d-%d", case_no, s->rel);
    long long at = T0 + s->at * 1000LL;
    int uninstall = strcmp(s->op, "uninstall") == 0;
    json_t *hist = json_array();
    json_array_append_new(hist, json_pack("{s:i, s:s, s:s, s:s, s:s, s:I}", "revision", s->revision, "status",
                                          uninstall ? "uninstalled" : "deployed", "chartName", "chart",
                                          "chartVersion", "1.0.0", "operation", s->op, "createdAt", at));
    if (strcmp(s->op, "upgrade") == 0)
        json_array_append_new(hist, json_pack("{s:i, s:s, s:s, s:s, s:s, s:I}", "revision", s->revision - 1,
                                              "status", "superseded", "chartName", "chart", "chartVersion",
                                              "1.0.0", "operation", "install", "createdAt", at));
    char chart_version[16];
    snprintf(chart_version, sizeof(chart_version), "1.0.%d", s->revision);
    return json_pack("{s:s, s:s, s:s, s:b, s:s, s:s, s:s, s:s, s:s, s:s, s:i, s:s, s:s, s:s, s:s, s:s, s:I, "
                     "s:I, s:s?, s:o}",
                     "eventId", eid, "commandId", cid, "eventType", "succeeded", "terminal", 1, "releaseId",
                     s->poison == 1 ? "not-a-uuid" : rid, "tenantId", tenant, "namespace", "tenant-apply",
                     "releaseName", name, "operation", s->op, "status", s->status, "revision", s->revision,
                     "chartName", "chart", "chartVersion", chart_version, "appVersion", "2.0.0",
                     "description", "unit test", "performedBy", "tester", "occurredAt", at, "requestedAt", at,
                     "reason", uninstall ? "retired" : NULL, "history", hist);
}

/* A Kafka message as the consumer hands it over (payload and key owned by
 * the test: see record_free). */
static rd_kafka_message_t *message(const ev_spec_t *s) {
    rd_kafka_message_t *m = calloc(1, sizeof(*m));
    char errstr[256];
    if (s->poison == 2) {
        m->payload = strdup("this is no avro");
        m->len = strlen(m->payload);
    } else {
        json_t *doc = event_json(s);
        unsigned char *buf = NULL;
        size_t len = 0;
        if (codec_encode(CODEC_EVENT, doc, &buf, &len, errstr, sizeof(errstr)) != 0)
            printf("# encoding the event failed: %s\n", errstr);
        json_decref(doc);
        m->payload = buf;
        m->len = len;
    }
    m->key = strdup("tenant/tenant-apply/app");
    m->key_len = strlen(m->key);
    m->offset = next_offset++;
    return m;
}

static void record_free(batch_record_t *r) {
    if (r->msg) {
        free(r->msg->payload);
        free(r->msg->key);
        free(r->msg);
    }
    free(r->reencoded);
    free(r->decode_error);
    codec_flat_free(&r->ev);
    memset(r, 0, sizeof(*r));
}

/* A batch of the records of specs (up to END). */
static int batch_of(batch_t *b, const ev_spec_t *specs) {
    int n = 0;
    while (specs[n].op)
        n++;
    memset(b, 0, sizeof(*b));
    b->recs = calloc((size_t)n, sizeof(batch_record_t));
    b->events = calloc((size_t)n, sizeof(batch_record_t));
    for (int i = 0; i < n; i++)
        batch_add(&b->recs[i], message(&specs[i]));
    b->n = n;
    return n;
}

static void batch_free(batch_t *b) {
    for (int i = 0; i < b->n; i++)
        record_free(&b->recs[i]);
    free(b->recs);
    free(b->events);
    free(b->rows.data);
    for (int k = 0; k < 3; k++)
        free(b->drows[k].data);
}

static int lines(const copy_buf_t *b) {
    int n = 0;
    for (size_t i = 0; i < b->len; i++)
        n += b->data[i] == '\n';
    return n;
}

/* Column col of row line of b, copied to out ("" when absent). */
static const char *cell(const copy_buf_t *b, int line, int col, char *out, size_t out_size) {
    size_t i = 0;
    out[0] = '\0';
    for (int l = 0; l < line && i < b->len; i++)
        if (b->data[i] == '\n')
            l++;
    for (int c = 0; c < col && i < b->len; i++)
        if (b->data[i] == '\t')
            c++;
    size_t n = 0;
    while (i < b->len && b->data[i] != '\t' && b->data[i] != '\n' && n + 1 < out_size)
        out[n++] = b->data[i++];
    out[n] = '\0';
    return out;
}

/* The direct form's rows are in COPY's binary format (copybin.c). */
static uint32_t be32(const char *p) {
    const unsigned char *u = (const unsigned char *)p;
    return (uint32_t)u[0] << 24 | (uint32_t)u[1] << 16 | (uint32_t)u[2] << 8 | u[3];
}

/* Field col of tuple row of a binary COPY (-1 length for NULL): its bytes
 * and length; the number of tuples when row < 0. */
static int bin_field(const copy_buf_t *b, int row, int col, const char **out, int32_t *len) {
    size_t i = 19; /* the header */
    if (b->len < 21 || memcmp(b->data, "PGCOPY\n\377\r\n", 11) != 0)
        return -1;
    for (int r = 0;; r++) {
        if (i + 2 > b->len)
            return -1;
        int nf = (int16_t)((unsigned char)b->data[i] << 8 | (unsigned char)b->data[i + 1]);
        i += 2;
        if (nf == -1)
            return i == b->len ? r : -1;
        for (int c = 0; c < nf; c++) {
            int32_t n = (int32_t)be32(b->data + i);
            if (r == row && c == col) {
                *out = b->data + i + 4;
                *len = n;
                return 0;
            }
            i += 4 + (n > 0 ? (size_t)n : 0);
        }
    }
}

static int tuples(const copy_buf_t *b) {
    return bin_field(b, -1, 0, NULL, NULL);
}

/* A binary field as text: \N for NULL, an int4 (is_int) in decimal. */
static const char *bcell(const copy_buf_t *b, int row, int col, int is_int, char *out, size_t out_size) {
    const char *f = NULL;
    int32_t n = 0;
    out[0] = '\0';
    if (bin_field(b, row, col, &f, &n) != 0)
        return out;
    if (n < 0)
        snprintf(out, out_size, "\\N");
    else if (is_int && n == 4)
        snprintf(out, out_size, "%d", (int32_t)be32(f));
    else
        snprintf(out, out_size, "%.*s", n, f);
    return out;
}

/* --- without a database: decoding and rows ------------------------------- */

/* Columns of pg_temp.helmq_direct_releases (sql/0012). */
enum { R_STATUS = 8, R_REVISION = 9, R_REASON = 13 };

static const struct rows_case {
    const char *name;
    ev_spec_t evs[6];
    int fresh, history, releases; /* direct form: new events, history rows, release rows */
    int stage_rows;               /* staged form: one per event and history item */
    const char *status, *revision, *reason;
} rows_cases[] = {
    {"new release", {INSTALL(1, 0), END}, 1, 1, 1, 2, "deployed", "1", "\\N"},
    {"later revision", {INSTALL(1, 0), UPGRADE(2, 2, 10), END}, 2, 2, 1, 5, "deployed", "2", "\\N"},
    {"older revision after a newer one",
     {UPGRADE(2, 2, 10), INSTALL(1, 0), END},
     2,
     2,
     1,
     5,
     "deployed",
     "2",
     "\\N"},
    {"duplicate event", {INSTALL(1, 0), INSTALL(1, 0), END}, 1, 1, 1, 4, "deployed", "1", "\\N"},
    {"uninstall",
     {INSTALL(1, 0), UPGRADE(2, 2, 10), UNINSTALL(3, 2, 20), END},
     3,
     2,
     1,
     7,
     "uninstalled",
     "2",
     "retired"},
};

static void test_rows(void) {
    for (size_t c = 0; c < sizeof(rows_cases) / sizeof(rows_cases[0]); c++) {
        const struct rows_case *t = &rows_cases[c];
        case_no = (int)c + 1;
        batch_t b;
        int n = batch_of(&b, t->evs);
        int decoded = 0;
        for (int i = 0; i < n; i++)
            decoded += b.recs[i].is_event;
        is_int(decoded, n, "%s: every record decodes", t->name);
        projector_t p = {0};
        batch_prepare(&p, &b);
        ok(b.direct, "%s: the direct form takes the batch", t->name);
        is_int(b.fresh, t->fresh, "%s: new events", t->name);
        is_int(tuples(&b.drows[0]), t->fresh, "%s: applied_events rows", t->name);
        is_int(tuples(&b.drows[1]), t->history, "%s: release_history rows", t->name);
        is_int(tuples(&b.drows[2]), t->releases, "%s: release rows", t->name);
        char v[64];
        is_str(bcell(&b.drows[2], 0, R_STATUS, 0, v, sizeof(v)), t->status, "%s: release status", t->name);
        is_str(bcell(&b.drows[2], 0, R_REVISION, 1, v, sizeof(v)), t->revision, "%s: release revision",
               t->name);
        is_str(bcell(&b.drows[2], 0, R_REASON, 0, v, sizeof(v)), t->reason, "%s: uninstall reason", t->name);
        /* The staged form, as a batch takes it while the direct form pauses. */
        p.direct_pause = 1;
        batch_prepare(&p, &b);
        ok(!b.direct, "%s: staged while the direct form pauses", t->name);
        is_int(lines(&b.rows), t->stage_rows, "%s: staging rows", t->name);
        is_str(cell(&b.rows, 0, 1, v, sizeof(v)), "0", "%s: the first staging row is the event's", t->name);
        batch_direct_work_free(&p.direct);
        batch_free(&b);
    }
}

static void test_poison_decode(void) {
    static const ev_spec_t specs[] = {
        INSTALL(1, 0), {2, 0, "install", "deployed", 1, 0, 2}, {3, 0, "install", "deployed", 1, 0, 1}, END};
    case_no = 50;
    batch_t b;
    batch_of(&b, specs);
    ok(b.recs[0].is_event, "a good event decodes");
    ok(!b.recs[1].is_event && b.recs[1].decode_error, "bytes that are no event carry why: %s",
       b.recs[1].decode_error ? b.recs[1].decode_error : "(none)");
    ok(b.recs[2].is_event, "an event PostgreSQL will refuse still decodes (it is parked later)");
    projector_t p = {0};
    batch_prepare(&p, &b);
    is_int(b.nevents, 2, "the batch's events leave the undecodable record out");
    batch_direct_work_free(&p.direct);
    batch_free(&b);
}

/* --- with a database: the apply step ------------------------------------ */

static const struct db_case {
    const char *name;
    ev_spec_t batches[3][6]; /* applied one after the other; an empty one ends */
    const char *status;
    int revision;
    const char *chart_version, *reason;
    int applied, history, parked_refused, parked_undecodable;
} db_cases[] = {
    {"new release", {{INSTALL(1, 0), END}}, "deployed", 1, "1.0.1", NULL, 1, 1, 0, 0},
    {"later revision",
     {{INSTALL(1, 0), END}, {UPGRADE(2, 2, 10), END}},
     "deployed",
     2,
     "1.0.2",
     NULL,
     2,
     2,
     0,
     0},
    {"older revision after a newer one",
     {{UPGRADE(2, 2, 10), END}, {INSTALL(1, 0), END}},
     "deployed",
     2,
     "1.0.2",
     NULL,
     2,
     2,
     0,
     0},
    {"older revision after a newer one, one batch",
     {{UPGRADE(2, 2, 10), INSTALL(1, 0), END}},
     "deployed",
     2,
     "1.0.2",
     NULL,
     2,
     2,
     0,
     0},
    {"duplicate event",
     {{INSTALL(1, 0), INSTALL(1, 0), END}, {INSTALL(1, 0), END}},
     "deployed",
     1,
     "1.0.1",
     NULL,
     1,
     1,
     0,
     0},
    {"uninstall keeps history",
     {{INSTALL(1, 0), UPGRADE(2, 2, 10), END}, {UNINSTALL(3, 2, 20), END}},
     "uninstalled",
     2,
     "1.0.2",
     "retired",
     3,
     2,
     0,
     0},
    {"poison records parked",
     {{INSTALL(1, 0),
       {2, 0, "upgrade", "deployed", 2, 5, 1},
       {3, 0, "upgrade", "deployed", 2, 5, 2},
       UPGRADE(4, 2, 10),
       END}},
     "deployed",
     2,
     "1.0.2",
     NULL,
     2,
     2,
     1,
     1},
};

static PGresult *query(PGconn *db, const char *sql, const char *arg) {
    const char *params[] = {arg};
    PGresult *r = PQexecParams(db, sql, 1, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        printf("# %s: %s", sql, PQresultErrorMessage(r));
    return r;
}

static long long count(PGconn *db, const char *sql, const char *arg) {
    PGresult *r = query(db, sql, arg);
    long long n = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1 ? atoll(PQgetvalue(r, 0, 0)) : -1;
    PQclear(r);
    return n;
}

/* Applies a case's batches through the apply step, then reads the
 * projection back. staged: with the direct form paused throughout, else
 * tried first on every batch (a batch it cannot take, such as a replay, is
 * applied again staged). */
static void db_case_run(projector_t *p, const struct db_case *t, int staged) {
    char name[128];
    snprintf(name, sizeof(name), "%s (%s)", t->name, staged ? "staged" : "direct first");
    unsigned long long refused0 = atomic_load(&apply_counters.parked_refused),
                       undecodable0 = atomic_load(&apply_counters.parked_undecodable);
    int rc = 0;
    for (int k = 0; k < 3 && t->batches[k][0].op; k++) {
        batch_t b;
        batch_of(&b, t->batches[k]);
        p->direct_pause = staged ? 1000 : 0;
        batch_prepare(p, &b);
        apply_start(p, &b);
        rc |= apply_finish(p, &b);
        batch_free(&b);
    }
    is_int(rc, 0, "%s: every batch applied", name);
    char rid[37], tenant[37];
    uuid_of(rid, 3, 0);
    uuid_of(tenant, 4, 0);
    PGresult *r = query(p->db,
                        "SELECT status, revision, chart_version, uninstall_reason FROM helmq.releases "
                        "WHERE release_id = $1",
                        rid);
    int found = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1;
    is_int(found, 1, "%s: the release is projected", name);
    is_str(found ? PQgetvalue(r, 0, 0) : NULL, t->status, "%s: status", name);
    is_int(found ? atoi(PQgetvalue(r, 0, 1)) : -1, t->revision, "%s: revision", name);
    is_str(found ? PQgetvalue(r, 0, 2) : NULL, t->chart_version, "%s: chart version of the newest revision",
           name);
    is_str(found && !PQgetisnull(r, 0, 3) ? PQgetvalue(r, 0, 3) : NULL, t->reason, "%s: uninstall reason",
           name);
    PQclear(r);
    is_int(count(p->db, "SELECT count(*) FROM helmq.applied_events WHERE tenant_id = $1", tenant), t->applied,
           "%s: applied events", name);
    is_int(count(p->db, "SELECT count(*) FROM helmq.release_history WHERE release_id = $1", rid), t->history,
           "%s: history rows", name);
    is_u64(atomic_load(&apply_counters.parked_refused) - refused0, (uint64_t)t->parked_refused,
           "%s: records parked as refused", name);
    is_u64(atomic_load(&apply_counters.parked_undecodable) - undecodable0, (uint64_t)t->parked_undecodable,
           "%s: records parked as undecodable", name);
}

static void test_db(const char *url) {
    static volatile sig_atomic_t stop;
    char topic[64];
    snprintf(topic, sizeof(topic), "test-projector-apply-%ld", (long)getpid());
    projector_t p = {.url = url, .topic = topic, .stop = &stop};
    p.db = apply_db_ensure(NULL, url, &stop);
    for (int staged = 0; staged < 2; staged++)
        for (size_t c = 0; c < sizeof(db_cases) / sizeof(db_cases[0]); c++) {
            case_no = 100 + (int)c + staged * 50;
            db_case_run(&p, &db_cases[c], staged);
        }
    /* Two poison runs, each parking one refused and one undecodable record. */
    is_int(count(p.db, "SELECT count(*) FROM helmq.parked_events WHERE topic = $1", topic), 4,
           "the parked records are in helmq.parked_events");
    is_int(count(p.db,
                 "SELECT count(*) FROM helmq.parked_events WHERE topic = $1 AND error_sqlstate IS NULL "
                 "AND error_message <> ''",
                 topic),
           2, "the undecodable ones with their error and no SQLSTATE");
    ok(p.parked == 4, "the projector counted %llu parked", p.parked);
    batch_direct_work_free(&p.direct);
    PQfinish(p.db);
}

int main(void) {
    char errstr[512];
    log_init("test_projector_apply", getenv("HELMQ_LOG_LEVEL") ? getenv("HELMQ_LOG_LEVEL") : "error");
    if (codec_init(errstr, sizeof(errstr)) < 0 || batch_columns_init() < 0) {
        printf("Bail out! %s\n", errstr);
        return 1;
    }
    test_rows();
    test_poison_decode();
    const char *url = getenv("HELMQ_DATABASE_URL");
    if (url && *url)
        test_db(url);
    else
        printf("ok %d # SKIP the apply step against PostgreSQL: HELMQ_DATABASE_URL not set\n", ++tap_n);
    codec_term();
    return tap_done();
}
