/* Database migrations: the numbered files of sql/ (compiled in), applied in
 * order, each in its own transaction, recorded in
 * public.helmq_schema_migrations, idempotently, under an advisory lock so
 * that programs starting together do not race. Blocking libpq: call it at
 * start-up, before the event loop runs. */
#ifndef HELMQ_MIGRATE_H
#define HELMQ_MIGRATE_H

#include <stddef.h>

/* Applies every migration not yet recorded. Returns the number applied, or
 * -1 with errstr filled (connection refused, a migration failed: nothing of
 * that migration is kept; or the database records another history than
 * ours, a migration of one of our numbers under another name, such as the
 * pre-baseline sql/0001-0015: nothing is applied, see sql/README.md). */
int migrate_apply(const char *conninfo, char *errstr, size_t errstr_size);

#endif
