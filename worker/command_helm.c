/* A command's helm steps: the pool of `concurrency` slots a command holds
 * while its helm runs, starting a step through the executor (with its
 * deadline recorded in the ledger for a later reconciliation), taking its
 * end back onto the loop, and helm status, asked again while the cluster
 * cannot be reached. */
#include "command_internal.h"

static const char SQL_HELM_STARTED[] = "SELECT helmq_worker.command_helm_started($1, $2, $3, $4, $5, $6)";

static void cmd_count_helm(command_ctx_t *x, double seconds) {
    for (int i = 0; i < COMMAND_HELM_BUCKETS; i++)
        if (command_helm_bucket_le[i] < 0 || seconds <= command_helm_bucket_le[i])
            x->counters.helm_buckets[i]++;
    x->counters.helm_count++;
    x->counters.helm_seconds += seconds;
}

/* --- helm steps ---------------------------------------------------------------- */

/* The pool: a command holds one of its `concurrency` slots from recording its
 * start (or from a reconciliation's first helm step) until its helm steps
 * are over, so that at most that many helm processes run. Others wait in
 * order. When the worker stops, commands that never held a slot are given
 * back: nothing ran for them, the next worker runs (or reconciles) them
 * again. A command that held one is under way (its start recorded, a helm
 * step run) even when it waits for a slot again, e.g. between a tenant
 * set-up that met another worker's and its next try: it goes on and
 * finishes here, as the next worker would take it for interrupted. */

static void pool_give_back(command_t *c) {
    command_ctx_t *w = c->ctx;
    cmd_log(c, LOG_LEVEL_INFO, "stopping: given back before its helm ran (redelivered to the next worker)");
    /* Its key's lock goes with the ledger session at exit; offsets are only
     * stored up to it, as it never finishes here. */
    w->host.given_back(w->host.ctx, c);
}

/* Runs then(c) once c holds a slot (now, when one is free). */
void cmd_pool_acquire(command_t *c, void (*then)(command_t *)) {
    command_ctx_t *w = c->ctx;
    if (c->has_slot) {
        then(c);
        return;
    }
    if (c->follow_up) { /* the slot its helm just freed */
        w->helm_running++;
        c->has_slot = 1;
        then(c);
        return;
    }
    if (w->stopping && !c->held_slot) {
        pool_give_back(c); /* the tick notices when nothing is left */
        return;
    }
    if (w->helm_running < w->concurrency) {
        w->helm_running++;
        c->has_slot = c->held_slot = 1;
        then(c);
        return;
    }
    c->slot_then = then;
    c->helm_wait_next = NULL;
    if (w->helm_wait_tail)
        w->helm_wait_tail->helm_wait_next = c;
    else
        w->helm_wait_head = c;
    w->helm_wait_tail = c;
}

/* While the worker stops, only commands under way wait (cmd_pool_acquire). */
static void pool_pump(command_ctx_t *w) {
    while (!w->exiting && w->helm_running < w->concurrency && w->helm_wait_head) {
        command_t *n = w->helm_wait_head;
        w->helm_wait_head = n->helm_wait_next;
        if (!w->helm_wait_head)
            w->helm_wait_tail = NULL;
        n->helm_wait_next = NULL;
        w->helm_running++;
        n->has_slot = n->held_slot = 1;
        n->slot_then(n);
    }
}

void cmd_pool_release(command_t *c) {
    if (!c->has_slot)
        return;
    c->has_slot = 0;
    c->ctx->helm_running--;
    pool_pump(c->ctx);
}

void command_pool_stop(command_ctx_t *w) {
    command_t *keep = NULL, **tail = &keep, *last = NULL;
    while (w->helm_wait_head) {
        command_t *c = w->helm_wait_head;
        w->helm_wait_head = c->helm_wait_next;
        c->helm_wait_next = NULL;
        if (c->held_slot) { /* under way: keeps its place */
            *tail = last = c;
            tail = &c->helm_wait_next;
        } else {
            pool_give_back(c);
        }
    }
    w->helm_wait_head = keep;
    w->helm_wait_tail = last;
}

static void helm_finished(void *arg) {
    helm_run_t *run = arg;
    command_t *c = run->data;
    command_ctx_t *w = c->ctx;
    step_cb next = (step_cb)c->helm_next;
    c->run = NULL;
    w->counters.helm++;
    if (run->timed_out)
        w->counters.helm_timeouts++;
    cmd_count_helm(w, (double)(run->ended_ms - run->started_ms) / 1000.0);
    /* The slot is free while the command records its outcome; a next helm
     * step of it (status, atomic rollback) takes it straight back, before
     * the queue gets it. */
    c->has_slot = 0;
    w->helm_running--;
    c->follow_up = 1;
    next(c, run);
    c->follow_up = 0;
    helm_ops(w)->free(run);
    pool_pump(w);
}

/* helm has exited and its output is read: what follows (its outcome, the
 * next step, the slot) runs a few commands per loop iteration. */
static void on_helm_done(helm_run_t *run) {
    command_t *c = run->data;
    c->ctx->host.later(c->ctx->host.ctx, helm_finished, run);
}

static void on_helm_recorded(void *arg, const PGresult *res, const char *err) {
    if (err)
        cmd_log(arg, LOG_LEVEL_WARN,
                "recording helm's deadline failed (after a crash, a worker would wait for it only until "
                "the previous one): %s",
                err);
}

/* Records a helm step's process and deadline in the ledger (the start
 * recorded the operation's), so that after a crash the worker reconciling
 * the command waits for it until then (reconcile; the pid serves workers
 * that predate the marker). Queued on the key's connection before the
 * command's finish, so its callback runs before the command is freed. */
static void record_helm(command_t *c, const helm_run_t *run, uint64_t deadline) {
    char pid[16], ticks[32], host[512], deadline_ms[32];
    unsigned long long t = 0;
    int have_ticks = helm_proc_start_ticks(run->pid, &t) == 0;
    snprintf(pid, sizeof(pid), "%d", run->pid);
    snprintf(ticks, sizeof(ticks), "%llu", t);
    snprintf(deadline_ms, sizeof(deadline_ms), "%lld", (long long)(now_ms() + (int64_t)deadline));
    helm_host_id(host, sizeof(host));
    /* helm runs in its own session: its process group is its pid */
    const char *values[6] = {c->id, pid, pid, have_ticks ? ticks : NULL, host, deadline_ms};
    cmd_ledger_query(c, SQL_HELM_STARTED, 6, values, NULL, NULL, on_helm_recorded, c);
}

/* helm's process exists: the ledger gets its pid and deadline when the
 * start's record does not cover this step. Runs before helm's exit is
 * watched, so before the command's finish is queued. */
static void on_helm_spawned(helm_run_t *run) {
    command_t *c = run->data;
    if (c->helm_record_pending)
        record_helm(c, run, c->helm_deadline);
    c->helm_record_pending = 0;
}

/* Starts the command's helm step: it holds a slot. Every helm process of the
 * command carries its marker. The ledger already has the deadline when the
 * start recorded it and helm starts within a second of that; a later step
 * (status, atomic rollback, a reconciliation's) records its own. */
static void helm_launch(command_t *c) {
    command_ctx_t *w = c->ctx;
    char line[2048], marker[128];
    helm_argv_format(&c->helm_argv, line, sizeof(line));
    cmd_log(c, LOG_LEVEL_INFO, "helm: %s", line);
    helm_marker(c->id, marker, sizeof(marker));
    int64_t deadline = now_ms() + (int64_t)c->helm_deadline;
    int recorded = c->recorded_deadline_ms && deadline - c->recorded_deadline_ms <= 1000;
    c->recorded_deadline_ms = 0; /* it covers this step only */
    c->helm_record_pending = c->helm_records && !recorded;
    c->run = helm_ops(w)->start(w->loop, &c->helm_argv, c->values_fd, c->helm_deadline, w->kill_grace_ms,
                                marker, on_helm_spawned, on_helm_done, c);
    helm_argv_free(&c->helm_argv);
    if (!c->run)
        abort();
}

/* Runs argv (taken over) once the command holds a slot of the pool; next
 * gets the finished run (freed after next returns). The timeout counts from
 * helm's start. */
void cmd_helm_step(command_t *c, helm_argv_t *argv, long timeout_s, step_cb next) {
    c->helm_next = (void (*)(void))next;
    c->helm_argv = *argv;
    *argv = (helm_argv_t){0};
    /* helm history (the status step) changes nothing: a crash while it runs needs no waiting */
    c->helm_records = c->helm_argv.argc > 1 && strcmp(c->helm_argv.argv[1], "history") != 0;
    c->helm_deadline = (uint64_t)timeout_s * 1000 + (uint64_t)c->ctx->timeout_grace_ms;
    cmd_pool_acquire(c, helm_launch);
}

void cmd_helm_simple(command_t *c, const char *sub, int revision, long timeout_s, step_cb next) {
    helm_argv_t a = {0};
    helm_argv_simple(&a, &c->ctx->helmc, sub, c->doc, revision, timeout_s);
    cmd_helm_step(c, &a, strcmp(sub, "status") == 0 ? 60 : timeout_s, next);
}

static void on_status_retry_timer(uv_timer_t *t);

/* helm status: fills c->helm / c->helm_found, then next. A status that
 * cannot reach the cluster says nothing about the release: helm may have
 * left it pending-* (an API server lost mid-operation), and what follows a
 * failure or a crash depends on that. It is asked again, 0.5 s, 1 s, 2 s,
 * then every 5 s, for up to STATUS_WAIT_MS; only then does the command go on
 * without the release's state (logged as an error). */
#define STATUS_WAIT_MS (5 * 60 * 1000)

static void on_status(command_t *c, helm_run_t *run) {
    helm_release_clear(&cmd_rs(c)->helm);
    c->helm_found =
        run->exit_status == 0 && !run->term_signal && helm_release_parse(run->out, &cmd_rs(c)->helm) == 0;
    if (!c->helm_found && !strstr(run->err, "not found")) {
        char e[512];
        helm_error_text(run, e, sizeof(e));
        if (strcmp(helm_failure_code(e), "CLUSTER_UNAVAILABLE") == 0) {
            int64_t now = now_ms();
            if (!c->status_wait_since)
                c->status_wait_since = now;
            if (now - c->status_wait_since < STATUS_WAIT_MS) {
                c->status_retry_ms = c->status_retry_ms ? c->status_retry_ms * 2 : 500;
                if (c->status_retry_ms > 5000)
                    c->status_retry_ms = 5000;
                cmd_log(
                    c, LOG_LEVEL_WARN,
                    "helm status cannot reach the cluster (%s): asking again in %d ms, the release's state "
                    "decides what follows",
                    e, c->status_retry_ms);
                cmd_retry_later(c, (uint64_t)c->status_retry_ms, on_status_retry_timer);
                return;
            }
            cmd_log(
                c, LOG_LEVEL_ERROR,
                "helm status could not reach the cluster for %d s (%s): going on without the release's state",
                STATUS_WAIT_MS / 1000, e);
        } else {
            cmd_log(c, LOG_LEVEL_WARN, "helm status failed: %s", e);
        }
    }
    c->status_wait_since = 0;
    c->status_retry_ms = 0;
    ((void (*)(command_t *))c->status_then)(c);
}

void cmd_helm_status(command_t *c, void (*then)(command_t *)) {
    c->phase = PHASE_STATUS;
    c->status_then = (void (*)(void))then;
    cmd_helm_simple(c, "status", 0, 60, on_status);
}

static void on_status_retry_timer(uv_timer_t *t) {
    command_t *c = t->data;
    cmd_helm_status(c, (void (*)(command_t *))c->status_then);
}
