/* The HTTP request parser of httpd.c, without sockets: bytes in (in chunks
 * of any size), requests out (method, path split into percent-decoded
 * segments, query, the headers the handlers read, body). httpd.c owns the
 * connection, its timers and its answers; this module owns the parsing and
 * the limits on what one request may hold, so that both can be tested and
 * fuzzed byte by byte (tests/fuzz/http_request.c).
 *
 * Parsing is Debian's http-parser (nodejs/http-parser). The parser reports
 * to its owner through the callbacks it declares below: a request has begun
 * (its first byte arrived), or a request is complete. After a complete
 * request the parser is paused (one request at a time):
 * http_reqparser_execute then returns with HPE_PAUSED and the bytes not
 * consumed are the next requests, for the owner to feed once it has
 * answered (after http_reqparser_resume). Bytes it refuses end the
 * connection: execute returns an error, and the parser says which answer
 * the client gets (status, message, rule):
 * - 400 (rule "http"): bytes that are not HTTP/1.x, or a header holding a NUL;
 * - 413: a body over max_body (declared by Content-Length, or received);
 * - 414 ("uri-size"): a request target over max_url bytes;
 * - 431 ("header-size"): a head whose URL, header names and values hold over
 *   max_header bytes (or over http-parser's own 80 KB, whitespace included).
 * The URL counts toward both 414 and 431: the lower limit is checked first,
 * so the answer does not depend on how the reads cut the URL. */
#ifndef HELMQ_HTTP_REQUEST_H
#define HELMQ_HTTP_REQUEST_H

#include <http_parser.h>
#include <stddef.h>

typedef struct http_conn http_conn_t; /* httpd.c's */

#define HTTP_REQUEST_MAX_URL 8192 /* bytes of a request target: 414 beyond */

typedef struct http_req {
    http_conn_t *conn;   /* NULL once the client went away: responding is then a no-op */
    const char *method;  /* "GET", "POST", ...; "GET" for a HEAD request too */
    int head;            /* a HEAD request: httpd_respond sends no body */
    char *path;          /* the path as sent (not decoded), without the query */
    char **segments;     /* the path's segments between '/', each percent-decoded */
    int nsegments;       /* "/" has none; "/a/" has "a" and "" */
    char *query;         /* the raw query string (after '?'), or "" */
    char *authorization; /* the Authorization header, or NULL */
    char *content_type;
    char *last_event_id; /* the Last-Event-ID header (Server-Sent Events), or NULL */
    char *body;          /* NUL-terminated */
    size_t body_len;
    char *headers; /* extra response header lines (httpd_add_header) */
    size_t headers_len;
    void *data; /* the handler's */
} http_req_t;

/* A request is complete: req (owned by the callee from now on) has every
 * field set, conn NULL. keep_alive is http-parser's verdict for the
 * connection. bad_path is NULL, or why the path is refused (a malformed
 * escape, an encoded '/' or NUL in a segment): the owner answers 400 (field
 * "path", rule "path-segment") without routing. */
typedef void (*http_reqparser_request_cb)(http_req_t *req, int keep_alive, const char *bad_path, void *owner);
/* The first byte of a request arrived (e.g. to restart a timer). */
typedef void (*http_reqparser_begin_cb)(void *owner);

typedef struct http_reqparser {
    http_parser parser;
    http_parser_settings settings;
    size_t max_body;   /* bytes of a body: 413 beyond */
    size_t max_header; /* bytes of a head's URL, header names and values: 431 beyond */
    size_t max_url;    /* HTTP_REQUEST_MAX_URL unless changed after init (the fuzz target's is smaller) */
    http_reqparser_begin_cb on_begin;
    http_reqparser_request_cb on_request;
    void *owner;
    http_req_t *req; /* being parsed */
    char *url;
    size_t url_len;
    char *hdr_field;
    size_t hdr_field_len;
    int hdr_value_for; /* 1 authorization, 2 content-type, 3 last-event-id, 0 another, -1 a name being read */
    size_t authorization_len, content_type_len, last_event_id_len; /* of the request's values so far */
    size_t head_bytes; /* of the request's URL, header names and values so far */
    /* The answer to bytes refused (set when execute returns an error): */
    int status;         /* 400, 413, 414 or 431; 500 if a callback failed without saying why (a bug) */
    const char *error;  /* the message: static text or error_buf */
    const char *rule;   /* "http", "uri-size", "header-size", or NULL */
    char error_buf[96]; /* a message naming the limit */
} http_reqparser_t;

/* Initialises p (embedded in its owner) for requests with the limits
 * max_body and max_header (max_url is HTTP_REQUEST_MAX_URL). on_begin may be
 * NULL; on_request may not. */
void http_reqparser_init(http_reqparser_t *p, size_t max_body, size_t max_header,
                         http_reqparser_begin_cb on_begin, http_reqparser_request_cb on_request, void *owner);

/* Parses data[0..len). Returns the bytes consumed and the parser's state in
 * *err: HPE_OK (all consumed; a request may be incomplete), HPE_PAUSED (a
 * request was completed; data[consumed..len) waits for
 * http_reqparser_resume), or an error: p->status, p->error and p->rule are
 * then the answer (see the top of this file), the request being parsed is
 * http_reqparser_take's, and the connection closes after the answer. */
size_t http_reqparser_execute(http_reqparser_t *p, const char *data, size_t len, enum http_errno *err);

/* Lets a paused parser go on (after the request was answered). */
void http_reqparser_resume(http_reqparser_t *p);

/* Takes the request being parsed (NULL when none has begun): for an answer
 * to a request that will not complete (a refusal, a timeout). */
http_req_t *http_reqparser_take(http_reqparser_t *p);

/* Whether a request has begun and is not complete. */
int http_reqparser_busy(const http_reqparser_t *p);

/* Frees what p holds (not p). */
void http_reqparser_free(http_reqparser_t *p);

/* Frees a request and everything it holds; NULL is fine. */
void http_req_free(http_req_t *r);

/* The value of name in the request's query string (decoded, '+' as a space,
 * malloc'd), or NULL. Its decoded length goes to *len (when len is not NULL):
 * an encoded NUL makes it longer than strlen, for the caller to refuse. */
char *httpd_query_param(const http_req_t *req, const char *name, size_t *len);

#endif
