/* The HTTP request parser of httpd.c, without sockets: bytes in (in chunks
 * of any size), requests out (method, path split into percent-decoded
 * segments, query, the headers the handlers read, body). httpd.c owns the
 * connection, its timer and its answers; this module owns the parsing, so
 * that it can be tested and fuzzed byte by byte (tests/fuzz/http_request.c).
 *
 * Parsing is Debian's http-parser (nodejs/http-parser). The parser reports
 * to its owner through the callbacks it declares below: a request has begun
 * (its first byte arrived), a request is complete, or the body is too large
 * (413). After a complete request the parser is paused (one request at a
 * time): http_reqparser_execute then returns with HPE_PAUSED and the bytes
 * not consumed are the next requests, for the owner to feed once it has
 * answered (after http_reqparser_resume). */
#ifndef HELMQ_HTTP_REQUEST_H
#define HELMQ_HTTP_REQUEST_H

#include <http_parser.h>
#include <stddef.h>

typedef struct http_conn http_conn_t; /* httpd.c's */

#define HTTP_REQUEST_MAX_URL 8192 /* bytes of a request target (httpd.c's limit); longer is a 400 */

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
    char *body; /* NUL-terminated */
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
/* The request's body is larger than max_body: the owner answers 413 (taking
 * the partial request with http_reqparser_take). Parsing stops with an error. */
typedef void (*http_reqparser_too_large_cb)(void *owner);

typedef struct http_reqparser {
    http_parser parser;
    http_parser_settings settings;
    size_t max_body;
    size_t max_url; /* HTTP_REQUEST_MAX_URL unless changed after init (the fuzz target's is smaller) */
    http_reqparser_begin_cb on_begin;
    http_reqparser_request_cb on_request;
    http_reqparser_too_large_cb on_too_large;
    void *owner;
    http_req_t *req; /* being parsed */
    char *url;
    size_t url_len;
    char *hdr_field;
    size_t hdr_field_len;
    int hdr_value_for; /* 1 authorization, 2 content-type, 0 another, -1 a name being read */
    size_t authorization_len, content_type_len; /* of the request's values so far */
    const char *error; /* why the bytes were refused, when this module refused them (static text) */
} http_reqparser_t;

/* Initialises p (embedded in its owner) for requests. on_begin and
 * on_too_large may be NULL; on_request may not. */
void http_reqparser_init(http_reqparser_t *p, size_t max_body, http_reqparser_begin_cb on_begin,
                         http_reqparser_request_cb on_request, http_reqparser_too_large_cb on_too_large,
                         void *owner);

/* Parses data[0..len). Returns the bytes consumed and the parser's state in
 * *err: HPE_OK (all consumed; a request may be incomplete), HPE_PAUSED (a
 * request was completed; data[consumed..len) waits for
 * http_reqparser_resume), or an error: the connection is answered 400 (413
 * after on_too_large) and closed. p->error says why when this module
 * refused the bytes (a request target over HTTP_REQUEST_MAX_URL, a NUL in a
 * header), http_errno_description otherwise. */
size_t http_reqparser_execute(http_reqparser_t *p, const char *data, size_t len, enum http_errno *err);

/* Lets a paused parser go on (after the request was answered). */
void http_reqparser_resume(http_reqparser_t *p);

/* Takes the request being parsed (NULL when none has begun): for an answer
 * to a request that will not complete (413, 400, a timeout). */
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
