/* The status page: GET / (worker/api/static/status.html) and GET
 * /static/:file (its CSS and JavaScript), built into helmq-api
 * (tests/lib/embed.sh, build/static_gen.c). No token: the page holds no
 * data; it asks for a bearer token and calls the JSON API with it. */
#ifndef HELMQ_API_STATIC_H
#define HELMQ_API_STATIC_H

#include "httpd.h"

/* Answers req with the page (name NULL) or the asset named name (200) and
 * returns 0; returns -1, answering nothing, when there is no such asset. */
int api_static(http_req_t *req, const char *name);

#endif
