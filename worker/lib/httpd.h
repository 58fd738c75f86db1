/* A small HTTP/1.1 server on the libuv loop, for helmq-api and the /metrics
 * and /healthz endpoints of the worker and the projector.
 *
 * Parsing is http_request.h's (on Debian's http-parser); this module only
 * manages connections: keep-alive, one request at a time per connection
 * (pipelined requests wait their turn), a body size limit (413), an idle and
 * request timeout (408), and responses that may be sent later, from another
 * callback (a database query, a Kafka delivery report). A client that
 * half-closes after its request (shutdown(SHUT_WR)) still gets its answer;
 * the connection closes after it. HEAD is answered as GET without the body.
 *
 * The path is split on literal '/' first, then each segment is
 * percent-decoded strictly: a malformed escape, or a segment that decodes to
 * a NUL or a '/', is answered 400 here and never reaches the handler.
 * http_req_t and httpd_query_param are declared in http_request.h. */
#ifndef HELMQ_HTTPD_H
#define HELMQ_HTTPD_H

#include "http_request.h"

#include <stddef.h>
#include <uv.h>

typedef struct httpd httpd_t;

/* Called once per request; the handler answers with httpd_respond, now or
 * later. The request lives until answered. */
typedef void (*httpd_handler)(http_req_t *req, void *ctx);

/* Listens on address ("HOST:PORT"; port 0 picks a free one). Returns NULL
 * with errstr filled on failure. */
httpd_t *httpd_start(uv_loop_t *loop, const char *address, size_t max_body, unsigned timeout_ms,
                     httpd_handler handler, void *ctx, char *errstr, size_t errstr_size);

/* Adds "name: value" to req's answer (before httpd_respond or httpd_error);
 * name and value are copied and must hold no CR or LF. */
void httpd_add_header(http_req_t *req, const char *name, const char *value);

/* Answers req (and frees it). body may be NULL for an empty body. A HEAD
 * request gets the headers only, with the Content-Length of body. */
void httpd_respond(http_req_t *req, int status, const char *content_type, const char *body, size_t len);
/* Answers with a JSON error document {"error": message[, "field", "rule"]};
 * a 400 always carries "field" and "rule", null when not given. */
void httpd_error(http_req_t *req, int status, const char *message, const char *field, const char *rule);

/* Stops listening and closes every connection. */
void httpd_stop(httpd_t *h);

/* The port actually bound (for port 0). */
int httpd_port(const httpd_t *h);

#endif
