/* The worker's /metrics (Prometheus text format) and /healthz, served on the
 * worker's own loop. The metrics read counters the modules expose (the
 * command layer's command_counters_t, the dispatcher's fields of worker_t);
 * they call into no module. */
#ifndef HELMQ_METRICS_H
#define HELMQ_METRICS_H

#include <stddef.h>

#include "dispatch.h"

/* Serves on listen ("host:port"; empty or NULL: not at all). Returns 0, or
 * -1 with errstr filled. */
int metrics_start(worker_t *w, const char *listen, char *errstr, size_t errstr_size);
/* Closes the server (nothing when none). */
void metrics_stop(worker_t *w);

#endif
