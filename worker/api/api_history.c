/* History paging parameters and the next page's link (api_history.h). */
#include "api_history.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A decimal integer of 1..10 digits within [min, max]: 0 and *v, else -1. */
static int parse_int(const char *s, size_t len, long min, long max, long *v) {
    if (len == 0 || len > 10 || strlen(s) != len)
        return -1;
    for (size_t i = 0; i < len; i++)
        if (s[i] < '0' || s[i] > '9')
            return -1;
    long n = strtol(s, NULL, 10);
    if (n < min || n > max)
        return -1;
    *v = n;
    return 0;
}

int api_history_page_parse(const http_req_t *req, api_history_page_t *pg, const char **field,
                           const char **msg) {
    size_t len = 0;
    long v = API_HISTORY_LIMIT_DEFAULT;
    char *s = httpd_query_param(req, "limit", &len);
    int bad = s && parse_int(s, len, 1, API_HISTORY_LIMIT_MAX, &v) < 0;
    free(s);
    if (bad) {
        *field = "limit";
        *msg = "limit must be an integer from 1 to 1000";
        return -1;
    }
    pg->limit = (int)v;
    snprintf(pg->limit_s, sizeof(pg->limit_s), "%d", pg->limit);
    pg->after_s[0] = '\0';
    s = httpd_query_param(req, "after", &len);
    bad = s && parse_int(s, len, 0, 2147483647L, &v) < 0;
    if (s && !bad)
        snprintf(pg->after_s, sizeof(pg->after_s), "%ld", v);
    free(s);
    if (bad) {
        *field = "after";
        *msg = "after must be a revision: an integer from 0 to 2147483647";
        return -1;
    }
    return 0;
}

void api_history_next_link(const char *prefix, const char *release_id, int limit, const char *next_after,
                           char *buf, size_t size) {
    snprintf(buf, size, "<%s/%s/history?limit=%d&after=%s>; rel=\"next\"", prefix, release_id, limit,
             next_after);
}
