/* A small HTTP/1.1 server on the libuv loop, for helmq-api and the /metrics
 * and /healthz endpoints of the worker and the projector.
 *
 * Parsing is http_request.h's (on Debian's http-parser); this module only
 * manages connections: keep-alive, one request at a time per connection
 * (pipelined requests wait their turn, answered in order), and responses that
 * may be sent later, from another callback (a database query, a Kafka
 * delivery report). A client that half-closes after its request
 * (shutdown(SHUT_WR)) still gets its answer; the connection closes after it.
 * HEAD is answered as GET without the body.
 *
 * Limits (httpd_limits_t), so that no client can hold the server or its
 * memory: a body over max_body gets 413; a URL over HTTP_REQUEST_MAX_URL 414;
 * a head whose URL, header names and values hold over max_header bytes 431
 * (these three are http_request.c's, which also refuses a NUL in a header:
 * 400); a request not received whole within timeout_ms of its first byte
 * 408; each then closes. A connection idle for timeout_ms is closed, and so
 * is one whose answer makes no progress for timeout_ms (a client that does
 * not read). A connection buffers at most one answer and one read. At
 * max_connections open, a new connection closes the one idle longest (not
 * being answered) to make room, or is closed itself when there is none, or
 * that one arrived in the same turn of the loop (a burst must not close its
 * own members before they can speak); accept failing (EMFILE) is left to
 * libuv, which drops the waiting connections without spinning.
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

#define HTTPD_FD_RESERVE 64    /* files kept for the rest of the process when max_connections is 0 */
#define HTTPD_MAX_HEADER 16384 /* the usual max_header */

typedef struct httpd_limits {
    size_t max_body;          /* bytes of a request body */
    size_t max_header;        /* bytes of a request's URL, header names and values */
    unsigned timeout_ms;      /* idle, request and stalled-answer timeout */
    unsigned max_connections; /* 0: the open-file limit less HTTPD_FD_RESERVE */
} httpd_limits_t;

/* What a server has done to its connections, for metrics. */
typedef struct httpd_stats {
    unsigned connections;         /* open now */
    unsigned max_connections;     /* the limit in force */
    unsigned long long timed_out; /* closed by a timeout: idle, slow request, answer not read */
    unsigned long long evicted;   /* idle ones closed to make room for a new one */
    unsigned long long refused;   /* new ones closed at once: no room, or accept failed */
} httpd_stats_t;

/* Called once per request; the handler answers with httpd_respond, now or
 * later. The request lives until answered. */
typedef void (*httpd_handler)(http_req_t *req, void *ctx);

/* Listens on address ("HOST:PORT"; port 0 picks a free one) with limits
 * (copied). Returns NULL with errstr filled on failure. */
httpd_t *httpd_start(uv_loop_t *loop, const char *address, const httpd_limits_t *limits,
                     httpd_handler handler, void *ctx, char *errstr, size_t errstr_size);

/* Adds "name: value" to req's answer (before httpd_respond or httpd_error);
 * name and value are copied and must hold no CR or LF. */
void httpd_add_header(http_req_t *req, const char *name, const char *value);

/* Answers req (and frees it). body may be NULL for an empty body. A HEAD
 * request gets the headers only, with the Content-Length of body. */
void httpd_respond(http_req_t *req, int status, const char *content_type, const char *body, size_t len);
/* Answers with a JSON error document {"error": message[, "field", "rule"]};
 * a 400 always carries "field" and "rule", null when not given. message and
 * field may quote a client's bytes: what is not UTF-8 in them is sent as '?'. */
void httpd_error(http_req_t *req, int status, const char *message, const char *field, const char *rule);

/* --- streamed answers (Server-Sent Events) ------------------------------------
 *
 * httpd_stream_begin answers req with 200, content_type and the headers added
 * with httpd_add_header, no Content-Length and "Connection: close": the body
 * is what httpd_stream_write sends, for as long as the connection lives. A
 * streaming connection is exempt from the idle and stalled-answer timeouts
 * and from eviction (its owner bounds it: httpd_stream_unsent), and what the
 * client sends on it is discarded. on_closed(arg) is called once when the
 * connection closes for any reason but httpd_stream_end (the client went
 * away, a write failed, httpd_stop); the handle is invalid after it, as it is
 * after httpd_stream_end. Returns NULL when the client already went away (req
 * is freed either way; on_closed is not called then). */
typedef void (*httpd_stream_closed_cb)(void *arg);
http_conn_t *httpd_stream_begin(http_req_t *req, const char *content_type, httpd_stream_closed_cb on_closed,
                                void *arg);
/* Queues len bytes of data (copied). Returns 0, or -1 when the write failed
 * at once (the connection is then closed and on_closed called). */
int httpd_stream_write(http_conn_t *c, const char *data, size_t len);
/* Bytes written and not yet sent to the client: libuv's queue and the
 * kernel's send queue (SIOCOUTQ). */
size_t httpd_stream_unsent(const http_conn_t *c);
/* Ends the stream: with cut, closes at once (what is queued is dropped);
 * without, closes once what is queued went to the kernel. */
void httpd_stream_end(http_conn_t *c, int cut);

/* Stops listening and closes every connection. */
void httpd_stop(httpd_t *h);

/* Fills *out with h's counters. */
void httpd_stats_get(const httpd_t *h, httpd_stats_t *out);

/* The port actually bound (for port 0). */
int httpd_port(const httpd_t *h);

#endif
