/* The paging of GET /api/v1/helm/releases/:releaseId/history, without I/O:
 * ?limit= (entries per page, 1..API_HISTORY_LIMIT_MAX, default
 * API_HISTORY_LIMIT_DEFAULT) and ?after= (a revision: the page starts after
 * it; none: from the first). The body stays the bare JSON array of entries,
 * by revision; when more follow, api.c adds the next page's
 * Link: <...?limit=N&after=REV>; rel="next" built here. */
#ifndef HELMQ_API_HISTORY_H
#define HELMQ_API_HISTORY_H

#include "http_request.h"

#include <stddef.h>

#define API_HISTORY_LIMIT_DEFAULT 100
#define API_HISTORY_LIMIT_MAX 1000

typedef struct api_history_page {
    int limit;
    char limit_s[12]; /* limit as the query parameter $4 */
    char after_s[12]; /* the revision as $3, "" for none (SQL NULL) */
} api_history_page_t;

/* Reads ?limit= and ?after= of req into pg: 0, or -1 with *field ("limit"
 * or "after") and *msg saying what is wrong (a 400). */
int api_history_page_parse(const http_req_t *req, api_history_page_t *pg, const char **field,
                           const char **msg);

/* The Link header's value for the page after revision next_after of release_id. */
void api_history_next_link(const char *prefix, const char *release_id, int limit, const char *next_after,
                           char *buf, size_t size);

#endif
