/* Non-blocking PostgreSQL on the libuv loop.
 *
 * One connection in pipeline mode, driven by PQconnectPoll / PQsendQueryPrepared /
 * PQconsumeInput from a uv_poll on PQsocket: nothing here blocks the loop.
 * Queries are queued and run in order, in groups (db_set_group_max). When the connection is lost (server
 * restart, network), the query in flight and everything queued stay queued;
 * the module reconnects with backoff, logging each attempt, and sends them
 * again. Callers therefore only queue statements that are safe to run twice
 * (every statement of the worker's ledger is). */
#ifndef HELMQ_DB_H
#define HELMQ_DB_H

#include <libpq-fe.h>
#include <uv.h>

typedef struct db db_t;

/* Called once per query. res is the query's result (owned by the module;
 * valid only during the call), err NULL on success or PostgreSQL's message
 * when the statement itself failed (the connection being fine). */
typedef void (*db_cb)(void *arg, const PGresult *res, const char *err);

/* Starts connecting to conninfo (copied). Returns NULL on out of memory. */
db_t *db_new(uv_loop_t *loop, const char *conninfo);

/* Queues sql with n text
 * parameters (copied; NULL entries are SQL NULLs). Binary parameters: give
 * lengths[i] > 0 with formats[i] = 1 (lengths/formats may be NULL).
 * sql must be a static string: each connection prepares a statement the first
 * time it sees an sql pointer and reuses it for the same pointer after. */
void db_query(db_t *db, const char *sql, int n, const char *const *values, const int *lengths,
              const int *formats, db_cb cb, void *arg);

/* Queries queued while a group is in flight are sent together, up to n in
 * one transaction (default 1: each on its own). Their callbacks run once the
 * transaction has committed, in the order queued. When one fails, the
 * transaction rolls back: its caller gets the error (first) and the group's
 * others are sent again, on the same session. What a rolled-back statement
 * did outside the transaction stays: a session advisory lock it took is then
 * held once more (the ledger's unlock releases every hold of its key). */
void db_set_group_max(db_t *db, int n);

/* During a query's callback: how many times it ran in a group that then
 * rolled back (on this session), before the run whose result it gets. */
int db_undone_runs(const db_t *db);

/* Whether the connection is up; how many queries wait or run. */
int db_ready(const db_t *db);
int db_pending(const db_t *db);

/* Closes the connection and frees db once the uv handles are closed; queued
 * queries are dropped without their callbacks. Accepts NULL. */
void db_close(db_t *db);

#endif
