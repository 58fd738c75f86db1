/* What the command layer's files share and nothing else sees: the steps one
 * file hands to another, the release state a terminal event carries, small
 * accessors. command.c holds the normal path, command_outcome.c the terminal
 * event and the ledger's record of it, command_helm.c the helm pool and
 * steps, command_failure.c the failure paths (atomic rollback, unlocking,
 * reconciliation after a crash), command_tenant.c the namespace set-up,
 * command_base.c what they all use. The files form layers, as the worker's
 * modules do: base below helm and outcome, those below failure and tenant,
 * command.c on top; a lower file goes back up only through the continuations
 * command.c leaves in the command (op_run, op_end, setup_then), so no two
 * object files reference each other. */
#ifndef HELMQ_COMMAND_INTERNAL_H
#define HELMQ_COMMAND_INTERNAL_H

#include "command.h"
#include "tenant_access.h"

#include "codec.h"
#include "log.h"
#include "util.h"

#include <libpq-fe.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define IN_PROGRESS_TEXT "another operation (install/upgrade/rollback) is in progress"
/* helm 3's refusal to install over an existing release ("Error: INSTALLATION
 * FAILED: cannot re-use a name that is still in use"; older helm 3 prints it
 * without the prefix). */
#define NAME_IN_USE_TEXT "cannot re-use a name that is still in use"
/* helm's storage refusing a revision's Secret that another helm created
 * meanwhile (the loser of two helm runs on one release at the same moment:
 * "Error: release: already exists", "Error: UPGRADE FAILED: release: already
 * exists"); nothing of this run was applied. */
#define RELEASE_EXISTS_TEXT "release: already exists"

static inline const char *jstr(const json_t *o, const char *k) {
    return json_string_value(json_object_get(o, k));
}

static inline int jint(const json_t *o, const char *k) {
    const json_t *v = json_object_get(o, k);
    return json_is_integer(v) ? (int)json_integer_value(v) : 0;
}

static inline const char *key_name(const command_t *c) {
    return c->key_name ? c->key_name : "-";
}

static inline int is_install_or_upgrade(const command_t *c) {
    return strcmp(c->op, "install") == 0 || strcmp(c->op, "upgrade") == 0;
}

/* The command's timeout in seconds (default 300). */
static inline long command_timeout(const command_t *c) {
    long t = jint(c->doc, "timeout");
    return t > 0 ? t : 300;
}

static inline const command_helm_ops_t *helm_ops(const command_ctx_t *x) {
    return x->helm_ops ? x->helm_ops : &command_helm_default;
}

/* --- command.c: the normal path ------------------------------------------- */

/* The command's run state, allocated on first use. */
command_rs_t *cmd_rs(command_t *c);
/* Logs with the command's context: commandId, release key, source offset. */
void cmd_log(command_t *c, log_level_t level, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* A ledger statement on the connection of c's release key (host.query). */
void cmd_ledger_query(command_t *c, const char *sql, int n, const char *const *values, const int *lengths,
                      const int *formats, db_cb cb, void *arg);
/* The command is over: its slot goes on, the dispatcher takes over (host.done). */
void cmd_done(command_t *c);
/* Runs cb on c's timer after ms. */
void cmd_retry_later(command_t *c, uint64_t ms, uv_timer_cb cb);
/* Sets the terminal eventType, error code and message. */
void cmd_outcome(command_t *c, const char *event_type, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* --- command_outcome.c: the terminal event ----------------------------------- */

/* The release state a terminal event carries. */
typedef struct rstate {
    int revision, deployed;
    char status[32];
    char chart[256], version[128], app[128], description[512], reason[1024];
    char digest[65];
    char *redacted;
} rstate_t;

/* Appends a revision this command created or changed. */
void cmd_history_add(command_t *c, int revision, const char *status, const char *chart, const char *version,
                     const char *app, const char *operation, const char *description, const char *digest,
                     const char *redacted);
void cmd_rstate_from_registry(rstate_t *s, const json_t *rel);
/* Overlays what helm last reported about the release. */
void cmd_rstate_from_helm(rstate_t *s, command_t *c);
/* Ends the command with the release state s (changed: the registry moves):
 * records the outcome, then publishes. */
void cmd_conclude(command_t *c, rstate_t *s, int changed);
/* A command refused before anything ran (recorded: its start is in the ledger). */
void cmd_reject(command_t *c, int recorded, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
void cmd_publish_terminal(command_t *c);
/* Success, from what helm reported (c->rs->helm, helm_found). */
void cmd_succeed_from_helm(command_t *c);
void cmd_succeed_uninstall(command_t *c, const char *description);
void cmd_publish_started(command_t *c);
/* A JSON column of the first row (NULL: null or not JSON). */
json_t *cmd_field_json(const PGresult *res, int col);
/* A finished command's recorded event, rewritten with the release's current state. */
int cmd_replay_current(command_t *c, const json_t *rel);

/* --- command_helm.c: the helm pool and steps ---------------------------------- */

/* What runs after a helm step; the run is freed after it returns. */
typedef void (*step_cb)(command_t *c, helm_run_t *run);

/* Runs then(c) once c holds a slot of the helm pool. */
void cmd_pool_acquire(command_t *c, void (*then)(command_t *));
/* c's slot (if any) goes to the next waiting command. */
void cmd_pool_release(command_t *c);
/* Runs argv (taken over) once c holds a slot; next gets the finished run. */
void cmd_helm_step(command_t *c, helm_argv_t *argv, long timeout_s, step_cb next);
/* The worker's own steps: status, rollback to revision, uninstall. */
void cmd_helm_simple(command_t *c, const char *sub, int revision, long timeout_s, step_cb next);
/* helm status: fills c->rs->helm and helm_found, then then(c). */
void cmd_helm_status(command_t *c, void (*then)(command_t *));

/* --- command_failure.c: failure paths ----------------------------------------- */

/* After a failed operation: helm status, then the failure's outcome
 * (atomic rollback, uninstall of a stuck install). */
void cmd_after_failure(command_t *c);
/* helm reported another operation in progress: unlock a stale pending-* release. */
void cmd_unlock_status(command_t *c);
/* A command interrupted by a crash (ledger state "running"). */
void cmd_reconcile(command_t *c);

/* --- command_tenant.c: the namespace's tenant set-up ---------------------------- */

/* Before an install: the namespace's set-up, then then(c) (the operation). */
void cmd_tenant_access_setup(command_t *c, void (*then)(command_t *c));
/* The namespace's set-up is no longer trusted. */
void cmd_ns_setup_forget(command_t *c);

#endif
