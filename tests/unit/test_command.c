/* Unit tests of the command state machine (command.h) with a fake ledger and
 * a fake executor: no PostgreSQL, no Kafka, no helm. Each row of the table
 * is one command: what the ledger's begin answers, what each helm step
 * answers in turn, and what must come out: the helm steps run, the one
 * terminal event's eventType, status and errorCode, the ledger's finish. */
#include "command.h"

#include "codec.h"
#include "log.h"
#include "tap.h"

#include <libpq-fe.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#define TENANT "3f1d2c4b-5a69-4e7f-8a9b-0c1d2e3f4a5b"
#define NS "tenant-acme"
#define NAME "acme-ai-service"
#define KEY TENANT "/" NS "/" NAME
#define COMMAND_ID "8a4c7a3e-6b47-4c5e-9d2f-6f3f0f1c2b11"
#define RELEASE_ID "0b8f6c1e-2d3a-4b5c-8d9e-0f1a2b3c4d5e"

/* --- the fakes' queues: run in order by pump() ---------------------------- */

typedef struct item {
    int kind; /* 0: later, 1: ledger reply, 2: helm exit, 3: delivery */
    void (*fn)(void *);
    void *arg;
    db_cb cb;
    PGresult *res;
    helm_run_t *run;
    command_produce_cb pcb;
    command_t *c;
} item_t;

static item_t queue[256];
static size_t q_head, q_tail;

static void enqueue(item_t it) {
    if (q_tail == sizeof(queue) / sizeof(queue[0]))
        abort();
    queue[q_tail++] = it;
}

/* --- what a row expects and what the fakes saw ----------------------------- */

typedef struct helm_reply {
    const char *sub; /* the subcommand helm is expected to run */
    int exit_status;
    int timed_out;
    const char *out, *err;
} helm_reply_t;

typedef struct row {
    const char *name;
    const char *op;
    int atomic;
    const char *begin_state; /* "new", "running", "finished" */
    const char *release;     /* the registry row at begin (JSON), or NULL */
    const char *ledger;      /* the ledger row of a running command (JSON), or NULL */
    const char *ns;          /* the namespace (NULL: NS) */
    helm_reply_t helm[6];    /* sub NULL ends */
    const char *want_helm;   /* the subcommands run, space-separated */
    const char *want_type;   /* the terminal eventType */
    const char *want_status; /* its status */
    const char *want_code;   /* its errorCode (NULL: none) */
    int want_finish;         /* ledger finishes */
} row_t;

static const row_t *cur;
static int helm_i, finishes, starts, terminals, started_events, dones;
static char helm_seen[256], got_type[32], got_status[32], got_code[64];
static unsigned char *recorded_event; /* the last finish's terminal event */
static size_t recorded_len;

/* --- the fake host (the dispatcher and the ledger) -------------------------- */

static void host_done(void *ctx, command_t *c) {
    dones++;
    c->phase = PHASE_DONE;
}

static void host_given_back(void *ctx, command_t *c) {}

static void host_produce(void *ctx, const char *topic, command_t *c, const void *key, size_t key_len,
                         const void *value, size_t value_len, rd_kafka_headers_t *headers,
                         command_produce_cb cb) {
    char errstr[256];
    codec_type_t t;
    json_t *ev = NULL;
    if (headers)
        rd_kafka_headers_destroy(headers);
    if (codec_decode(value, value_len, &t, &ev, errstr, sizeof(errstr)) != 0) {
        printf("# undecodable event: %s\n", errstr);
        terminals += cb ? 100 : 0;
        return;
    }
    if (cb) {
        terminals++;
        snprintf(got_type, sizeof(got_type), "%s", json_string_value(json_object_get(ev, "eventType")));
        snprintf(got_status, sizeof(got_status), "%s", json_string_value(json_object_get(ev, "status")));
        const char *code = json_string_value(json_object_get(ev, "errorCode"));
        snprintf(got_code, sizeof(got_code), "%s", code ? code : "");
        enqueue((item_t){.kind = 3, .pcb = cb, .c = c});
    } else {
        started_events++;
    }
    json_decref(ev);
}

static void host_later(void *ctx, void (*fn)(void *), void *arg) {
    enqueue((item_t){.kind = 0, .fn = fn, .arg = arg});
}

/* A one-row result of n text columns (NULL: SQL null). */
static PGresult *result(int n, const char *const *vals) {
    PGresult *r = PQmakeEmptyPGresult(NULL, PGRES_TUPLES_OK);
    PGresAttDesc att[8];
    memset(att, 0, sizeof(att));
    for (int i = 0; i < n; i++) {
        att[i].name = (char *)"c";
        att[i].typid = 25;
        att[i].typlen = -1;
        att[i].atttypmod = -1;
    }
    PQsetResultAttrs(r, n, att);
    for (int i = 0; i < n; i++)
        PQsetvalue(r, 0, i, (char *)vals[i], vals[i] ? (int)strlen(vals[i]) : -1);
    return r;
}

static char *bytea_hex(const unsigned char *b, size_t n) {
    char *s = malloc(2 * n + 3);
    strcpy(s, "\\x");
    for (size_t i = 0; i < n; i++)
        sprintf(s + 2 + 2 * i, "%02x", b[i]);
    return s;
}

static void host_query(void *ctx, const char *key, const char *sql, int n, const char *const *values,
                       const int *lengths, const int *formats, db_cb cb, void *arg) {
    PGresult *res;
    if (strstr(sql, "command_begin")) {
        char *ev = NULL;
        if (strcmp(cur->begin_state, "finished") == 0)
            ev = bytea_hex(recorded_event, recorded_len);
        const char *v[7] = {cur->begin_state, ev, cur->release, NULL, cur->ledger, NULL, "f"};
        res = result(7, v);
        free(ev);
    } else if (strstr(sql, "command_start")) {
        starts++;
        const char *v[2] = {"t", NULL};
        res = result(2, v);
    } else if (strstr(sql, "command_finish")) {
        finishes++;
        free(recorded_event);
        recorded_len = (size_t)lengths[4];
        recorded_event = malloc(recorded_len);
        memcpy(recorded_event, values[4], recorded_len);
        const char *v[1] = {""};
        res = result(1, v);
    } else {
        const char *v[1] = {""};
        res = result(1, v);
    }
    enqueue((item_t){.kind = 1, .cb = cb, .arg = arg, .res = res});
}

static int host_undone_runs(void *ctx, const char *key) {
    return 0;
}

/* --- the fake executor -------------------------------------------------------- */

static helm_run_t *fake_start(uv_loop_t *loop, helm_argv_t *argv, int pass_fd, uint64_t deadline_ms,
                              int kill_grace_ms, const char *marker, helm_done_cb spawned, helm_done_cb done,
                              void *data) {
    helm_run_t *run = calloc(1, sizeof(*run));
    const char *sub = argv->argc > 1 ? argv->argv[1] : "?";
    const helm_reply_t *r = &cur->helm[helm_i];
    snprintf(helm_seen + strlen(helm_seen), sizeof(helm_seen) - strlen(helm_seen), "%s%s",
             helm_seen[0] ? " " : "", sub);
    if (r->sub && strcmp(r->sub, sub) == 0) {
        helm_i++;
        run->exit_status = r->exit_status;
        run->timed_out = r->timed_out;
        run->term_signal = r->timed_out ? SIGTERM : 0;
        run->out = strdup(r->out ? r->out : "");
        snprintf(run->err, sizeof(run->err), "%s", r->err ? r->err : "");
    } else { /* not scripted: fails, and the row's helm list shows it */
        run->exit_status = 1;
        run->out = strdup("");
        snprintf(run->err, sizeof(run->err), "Error: unexpected helm %s", sub);
    }
    run->pid = 0;
    run->done = done;
    run->data = data;
    helm_argv_free(argv);
    enqueue((item_t){.kind = 2, .run = run});
    return run;
}

static void fake_signal(helm_run_t *run, int sig) {}

static void fake_free(helm_run_t *run) {
    if (!run)
        return;
    free(run->out);
    free(run);
}

static int fake_marked(const char *marker, int sig, int *pgid) {
    return 0;
}

static const command_helm_ops_t fake_helm = {
    .start = fake_start, .signal = fake_signal, .free = fake_free, .marked = fake_marked};

/* --- running a row ------------------------------------------------------------ */

static uv_loop_t loop;
static command_ctx_t ctx;

static void pump(void) {
    for (int guard = 0; guard < 10000; guard++) {
        if (q_head < q_tail) {
            item_t it = queue[q_head++];
            if (q_head == q_tail)
                q_head = q_tail = 0;
            if (it.kind == 0)
                it.fn(it.arg);
            else if (it.kind == 1) {
                it.cb(it.arg, it.res, NULL);
                PQclear(it.res);
            } else if (it.kind == 2)
                it.run->done(it.run);
            else
                it.pcb(it.c, 0);
            continue;
        }
        if (!uv_run(&loop, UV_RUN_NOWAIT))
            break;
    }
}

static json_t *command_doc(const row_t *r) {
    json_t *d = json_pack("{s:s,s:s,s:s,s:s,s:s,s:s,s:I}", "operation", r->op, "commandId", COMMAND_ID,
                          "tenantId", TENANT, "namespace", r->ns ? r->ns : NS, "releaseName", NAME,
                          "performedBy", "alice", "requestedAt", (json_int_t)1764000000000);
    if (strcmp(r->op, "install") == 0 || strcmp(r->op, "upgrade") == 0) {
        json_object_set_new(d, "chartName", json_string("matih-ai-service"));
        json_object_set_new(d, "chartVersion", json_string("1.0.0"));
        json_object_set_new(d, "valuesOverride", json_string("{\"replicaCount\":2}"));
        json_object_set_new(d, "atomic", json_boolean(r->atomic));
    }
    char errstr[256];
    if (codec_fill_defaults(CODEC_COMMAND, d, errstr, sizeof(errstr)) < 0)
        printf("# defaults: %s\n", errstr);
    return d;
}

static void run_row(const row_t *r) {
    const char *key = r->ns ? TENANT "/kube-system/" NAME : KEY;
    cur = r;
    helm_i = finishes = starts = terminals = started_events = dones = 0;
    helm_seen[0] = got_type[0] = got_status[0] = got_code[0] = '\0';
    command_t *c = command_new(&ctx, 42);
    c->partition = 0;
    c->key_name = key;
    c->kafka_key = strdup(key);
    c->kafka_key_len = strlen(key);
    c->doc = command_doc(r);
    c->op = json_string_value(json_object_get(c->doc, "operation"));
    snprintf(c->id, sizeof(c->id), "%s", COMMAND_ID);
    command_run(c);
    pump();
    is_int(dones, 1, "%s: done once", r->name);
    is_int(terminals, 1, "%s: exactly one terminal event", r->name);
    is_str(helm_seen, r->want_helm, "%s: helm steps", r->name);
    is_str(got_type, r->want_type, "%s: eventType", r->name);
    is_str(got_status, r->want_status, "%s: status", r->name);
    is_str(got_code, r->want_code ? r->want_code : "", "%s: errorCode", r->name);
    is_int(finishes, r->want_finish, "%s: outcomes recorded", r->name);
    is_int(ctx.helm_running, 0, "%s: no slot of the helm pool left held", r->name);
    command_free(c);
    pump();
}

/* helm's answers */
#define INSTALLED                                                                                            \
    "{\"name\":\"" NAME "\",\"version\":1,\"info\":{\"status\":\"deployed\",\"description\":\"Install "      \
    "complete\"},\"chart\":{\"metadata\":{\"name\":\"matih-ai-service\",\"version\":\"1.0.0\"}},"            \
    "\"config\":{\"replicaCount\":2}}"
#define UPGRADED                                                                                             \
    "{\"name\":\"" NAME "\",\"version\":4,\"info\":{\"status\":\"deployed\",\"description\":\"Upgrade "      \
    "complete\"},\"chart\":{\"metadata\":{\"name\":\"matih-ai-service\",\"version\":\"1.0.0\"}},"            \
    "\"config\":{\"replicaCount\":2}}"
#define HISTORY(rev, status)                                                                                 \
    "[{\"revision\":" #rev ",\"status\":\"" status "\",\"chart\":\"matih-ai-service-1.0.0\","                \
    "\"description\":\"x\"}]"
#define DEPLOYED_REGISTRY                                                                                    \
    "{\"release_id\":\"" RELEASE_ID "\",\"tenant_id\":\"" TENANT "\",\"namespace\":\"" NS                    \
    "\",\"release_name\":\"" NAME "\",\"status\":\"deployed\",\"revision\":1,\"deployed_revision\":1,"       \
    "\"chart_name\":\"matih-ai-service\",\"chart_version\":\"1.0.0\"}"
#define FAIL(what) "Error: " what " FAILED: boom"

static const row_t rows[] = {
    {"install succeeds",
     "install",
     0,
     "new",
     NULL,
     NULL,
     NULL,
     {{"install", 0, 0, INSTALLED, NULL}},
     "install",
     "succeeded",
     "deployed",
     NULL,
     1},
    /* the next row replays the event the row above recorded */
    {"redelivered after it finished: no helm, its recorded outcome again",
     "install",
     0,
     "finished",
     NULL,
     NULL,
     NULL,
     {{NULL, 0, 0, NULL, NULL}},
     "",
     "succeeded",
     "deployed",
     NULL,
     0},
    {"install fails",
     "install",
     0,
     "new",
     NULL,
     NULL,
     NULL,
     {{"install", 1, 0, NULL, FAIL("INSTALLATION")}, {"history", 0, 0, HISTORY(1, "failed"), NULL}},
     "install history",
     "failed",
     "failed",
     "HELM_FAILED",
     1},
    {"install times out",
     "install",
     0,
     "new",
     NULL,
     NULL,
     NULL,
     {{"install", -1, 1, NULL, ""}, {"history", 0, 0, HISTORY(1, "failed"), NULL}},
     "install history",
     "failed",
     "failed",
     "TIMEOUT",
     1},
    {"atomic install fails: uninstalled",
     "install",
     1,
     "new",
     NULL,
     NULL,
     NULL,
     {{"install", 1, 0, NULL, FAIL("INSTALLATION")},
      {"history", 0, 0, HISTORY(1, "failed"), NULL},
      {"uninstall", 0, 0, "", NULL}},
     "install history uninstall",
     "rolled_back",
     "uninstalled",
     "HELM_FAILED",
     1},
    {"atomic install fails before creating anything",
     "install",
     1,
     "new",
     NULL,
     NULL,
     NULL,
     {{"install", 1, 0, NULL, FAIL("INSTALLATION")}, {"history", 1, 0, NULL, "Error: release: not found"}},
     "install history",
     "rolled_back",
     "uninstalled",
     "HELM_FAILED",
     1},
    {"install fails and helm left it pending-install: uninstalled",
     "install",
     0,
     "new",
     NULL,
     NULL,
     NULL,
     {{"install", 1, 0, NULL, FAIL("INSTALLATION")},
      {"history", 0, 0, HISTORY(1, "pending-install"), NULL},
      {"uninstall", 0, 0, "", NULL}},
     "install history uninstall",
     "failed",
     "uninstalled",
     "HELM_FAILED",
     1},
    {"atomic upgrade fails: rolled back",
     "upgrade",
     1,
     "new",
     DEPLOYED_REGISTRY,
     NULL,
     NULL,
     {{"upgrade", 1, 0, NULL, FAIL("UPGRADE")},
      {"history", 0, 0, HISTORY(2, "failed"), NULL},
      {"rollback", 0, 0, "", NULL},
      {"history", 0, 0, HISTORY(3, "deployed"), NULL}},
     "upgrade history rollback history",
     "rolled_back",
     "deployed",
     "HELM_FAILED",
     1},
    {"atomic upgrade fails, its rollback fails too",
     "upgrade",
     1,
     "new",
     DEPLOYED_REGISTRY,
     NULL,
     NULL,
     {{"upgrade", 1, 0, NULL, FAIL("UPGRADE")},
      {"history", 0, 0, HISTORY(2, "failed"), NULL},
      {"rollback", 1, 0, NULL, FAIL("ROLLBACK")},
      {"history", 0, 0, HISTORY(2, "failed"), NULL}},
     "upgrade history rollback history",
     "failed",
     "failed",
     "HELM_FAILED",
     1},
    {"stale pending-upgrade: unlocked, then upgraded",
     "upgrade",
     0,
     "new",
     DEPLOYED_REGISTRY,
     NULL,
     NULL,
     {{"upgrade", 1, 0, NULL,
       "Error: UPGRADE FAILED: another operation (install/upgrade/rollback) is in progress"},
      {"history", 0, 0, HISTORY(2, "pending-upgrade"), NULL},
      {"rollback", 0, 0, "", NULL},
      {"upgrade", 0, 0, UPGRADED, NULL}},
     "upgrade history rollback upgrade",
     "succeeded",
     "deployed",
     NULL,
     1},
    {"uninstall succeeds",
     "uninstall",
     0,
     "new",
     DEPLOYED_REGISTRY,
     NULL,
     NULL,
     {{"uninstall", 0, 0, "", NULL}},
     "uninstall",
     "succeeded",
     "uninstalled",
     NULL,
     1},
    {"upgrade of no release: rejected",
     "upgrade",
     0,
     "new",
     NULL,
     NULL,
     NULL,
     {{NULL, 0, 0, NULL, NULL}},
     "",
     "rejected",
     "rejected",
     "RELEASE_NOT_FOUND",
     1},
    {"protected namespace: rejected",
     "install",
     0,
     "new",
     NULL,
     NULL,
     "kube-system",
     {{NULL, 0, 0, NULL, NULL}},
     "",
     "rejected",
     "rejected",
     "PROTECTED_NAMESPACE",
     1},
    {"interrupted by a crash, helm finished it: reconciled",
     "install",
     0,
     "running",
     NULL,
     "{\"release_id\":\"" RELEASE_ID "\",\"base_revision\":0,\"base_deployed\":0}",
     NULL,
     {{"history", 0, 0, HISTORY(1, "deployed"), NULL}},
     "history",
     "succeeded",
     "deployed",
     NULL,
     1},
    {"interrupted by a crash, left pending-install: uninstalled",
     "install",
     0,
     "running",
     NULL,
     "{\"release_id\":\"" RELEASE_ID "\",\"base_revision\":0,\"base_deployed\":0}",
     NULL,
     {{"history", 0, 0, HISTORY(1, "pending-install"), NULL}, {"uninstall", 0, 0, "", NULL}},
     "history uninstall",
     "failed",
     "uninstalled",
     "INTERRUPTED",
     1},
};

int main(void) {
    char errstr[256];
    log_init("test_command", "error");
    if (codec_init(errstr, sizeof(errstr)) < 0) {
        printf("Bail out! codec_init: %s\n", errstr);
        return 1;
    }
    uv_loop_init(&loop);
    ctx.loop = &loop;
    ctx.host = (command_host_t){.ctx = &ctx,
                                .done = host_done,
                                .given_back = host_given_back,
                                .produce = host_produce,
                                .later = host_later,
                                .query = host_query,
                                .undone_runs = host_undone_runs};
    ctx.helm_ops = &fake_helm;
    ctx.helmc.helm = "helm";
    ctx.tmpdir = "/tmp";
    ctx.commands_topic = "helm.release.commands";
    ctx.events_topic = "helm.release.events";
    ctx.dlq_topic = "helm.release.commands.dlq";
    ctx.concurrency = 2;
    ctx.timeout_grace_ms = 1000;
    ctx.kill_grace_ms = 1000;

    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++)
        run_row(&rows[i]);

    is_u64(ctx.counters.helm, 29, "helm runs counted (the rows' helm steps)");
    ok(ctx.counters.outcome[0] >= 4, "succeeded outcomes counted (%llu)",
       (unsigned long long)ctx.counters.outcome[0]);

    free(recorded_event);
    command_ctx_free(&ctx);
    is_int(uv_loop_close(&loop), 0, "the loop closes: nothing leaked");
    codec_term();
    return tap_done();
}
