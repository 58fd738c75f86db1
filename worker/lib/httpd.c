/* HTTP/1.1 connections on libuv with http-parser; see httpd.h. */
#include "httpd.h"

#include "log.h"

#include <http_parser.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

struct httpd {
    uv_loop_t *loop;
    uv_tcp_t listener;
    httpd_limits_t limits;
    httpd_handler handler;
    void *ctx;
    /* Open connections, most recently active first: the tail is the one
     * idle longest, the first to close when a new one needs room. */
    http_conn_t *conns, *conns_tail;
    httpd_stats_t stats;
    int stopping;
};

struct http_conn {
    uv_tcp_t tcp; /* first: the handle's address is the connection's */
    uv_timer_t timer;
    httpd_t *h;
    http_conn_t *next, *prev;
    http_parser parser;
    http_parser_settings settings;
    http_req_t *req;    /* being parsed */
    http_req_t *handed; /* handed to the handler, not answered yet */
    int answering;      /* a request is being answered */
    int keep_alive;
    int closing;
    int eof;           /* the client half-closed: answer what was asked, then close */
    int writing;       /* an answer is being written */
    size_t write_left; /* its bytes still queued when the timer last looked */
    uint64_t active;   /* uv_now when accepted, a request began or an answer went out */
    size_t head_bytes; /* of the request's URL, header names and values */
    char *url;
    size_t url_len;
    char *hdr_field;
    size_t hdr_field_len;
    int hdr_value_for;  /* 1 authorization, 2 content-type */
    char *pending;      /* bytes read but not parsed yet (pipelining) */
    size_t pending_off; /* where they start in pending: parsed requests are skipped, not copied */
    size_t pending_len; /* how many there are from pending_off */
    int open_handles;
};

static void conn_close(http_conn_t *c);

static void conns_unlink(http_conn_t *c) {
    httpd_t *h = c->h;
    if (c->prev)
        c->prev->next = c->next;
    else
        h->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    else
        h->conns_tail = c->prev;
    c->next = c->prev = NULL;
}

/* c was active now: it moves to the head of the list. */
static void conns_touch(http_conn_t *c) {
    httpd_t *h = c->h;
    c->active = uv_now(h->loop);
    if (h->conns == c)
        return;
    if (c->prev || c->next || h->conns_tail == c)
        conns_unlink(c);
    c->next = h->conns;
    if (h->conns)
        h->conns->prev = c;
    h->conns = c;
    if (!h->conns_tail)
        h->conns_tail = c;
}

static char *append(char *buf, size_t *len, const char *at, size_t n) {
    char *b = realloc(buf, *len + n + 1);
    if (!b)
        abort();
    memcpy(b + *len, at, n);
    *len += n;
    b[*len] = '\0';
    return b;
}

static void req_free(http_req_t *r) {
    if (!r)
        return;
    free(r->path);
    for (int i = 0; i < r->nsegments; i++)
        free(r->segments[i]);
    free(r->segments);
    free(r->headers);
    free(r->query);
    free(r->authorization);
    free(r->content_type);
    free(r->body);
    free(r);
}

/* Answers the request being parsed (or a new one) with an error, then closes. */
static void conn_fail(http_conn_t *c, int status, const char *message, const char *rule) {
    http_req_t *r = c->req ? c->req : calloc(1, sizeof(http_req_t));
    c->req = NULL;
    r->conn = c;
    c->handed = r;
    c->answering = 1;
    c->keep_alive = 0;
    httpd_error(r, status, message, NULL, rule);
}

static int on_message_begin(http_parser *p) {
    http_conn_t *c = p->data;
    req_free(c->req);
    c->req = calloc(1, sizeof(http_req_t));
    if (!c->req)
        abort();
    free(c->url);
    c->url = NULL;
    c->url_len = 0;
    c->head_bytes = 0;
    conns_touch(c);
    uv_timer_again(&c->timer);
    return 0;
}

/* Counts n more bytes of the request's head; past the limit answers 431. */
static int head_grow(http_conn_t *c, size_t n) {
    c->head_bytes += n;
    if (c->head_bytes <= c->h->limits.max_header)
        return 0;
    char msg[96];
    snprintf(msg, sizeof(msg), "request header fields too large (over %zu bytes)", c->h->limits.max_header);
    conn_fail(c, 431, msg, "header-size");
    return -1;
}

static int on_url(http_parser *p, const char *at, size_t n) {
    http_conn_t *c = p->data;
    if (c->url_len + n > HTTPD_MAX_URL) {
        char msg[64];
        snprintf(msg, sizeof(msg), "URI too long (over %d bytes)", HTTPD_MAX_URL);
        conn_fail(c, 414, msg, "uri-size");
        return -1;
    }
    c->url = append(c->url, &c->url_len, at, n);
    return head_grow(c, n);
}

static int on_header_field(http_parser *p, const char *at, size_t n) {
    http_conn_t *c = p->data;
    if (head_grow(c, n) < 0)
        return -1;
    if (c->hdr_value_for >= 0) { /* a new field begins */
        free(c->hdr_field);
        c->hdr_field = NULL;
        c->hdr_field_len = 0;
        c->hdr_value_for = -1;
    }
    c->hdr_field = append(c->hdr_field, &c->hdr_field_len, at, n);
    return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t n) {
    http_conn_t *c = p->data;
    if (head_grow(c, n) < 0)
        return -1;
    if (c->hdr_value_for < 0)
        c->hdr_value_for = strcasecmp(c->hdr_field, "authorization") == 0  ? 1
                           : strcasecmp(c->hdr_field, "content-type") == 0 ? 2
                                                                           : 0;
    size_t len;
    if (c->hdr_value_for == 1) {
        len = c->req->authorization ? strlen(c->req->authorization) : 0;
        c->req->authorization = append(c->req->authorization, &len, at, n);
    } else if (c->hdr_value_for == 2) {
        len = c->req->content_type ? strlen(c->req->content_type) : 0;
        c->req->content_type = append(c->req->content_type, &len, at, n);
    }
    return 0;
}

static int on_headers_complete(http_parser *p) {
    http_conn_t *c = p->data;
    c->hdr_value_for = 0;
    if (p->content_length != ULLONG_MAX && p->content_length > c->h->limits.max_body) {
        conn_fail(c, 413, "request body too large", NULL);
        return -1;
    }
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t n) {
    http_conn_t *c = p->data;
    if (c->req->body_len + n > c->h->limits.max_body) {
        conn_fail(c, 413, "request body too large", NULL);
        return -1;
    }
    c->req->body = append(c->req->body, &c->req->body_len, at, n);
    return 0;
}

static int hexval(char ch) {
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

/* Percent-decodes s[0..n) into a new string (plus_space: '+' is a space);
 * lenient: a malformed escape stays as it is. For query parameters. */
static char *pct_decode(const char *s, size_t n, int plus_space, size_t *out_len) {
    char *out = malloc(n + 1), *o = out;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '%' && i + 2 < n && hexval(s[i + 1]) >= 0 && hexval(s[i + 2]) >= 0) {
            *o++ = (char)(hexval(s[i + 1]) * 16 + hexval(s[i + 2]));
            i += 2;
        } else if (plus_space && s[i] == '+') {
            *o++ = ' ';
        } else {
            *o++ = s[i];
        }
    }
    *o = '\0';
    if (out_len)
        *out_len = (size_t)(o - out);
    return out;
}

/* Percent-decodes one path segment s[0..n) strictly into a new string.
 * Returns NULL with *why set when an escape is malformed or the segment
 * decodes to a NUL or a '/' (which would cut a C string short or act as a
 * separator the router never saw). */
static char *segment_decode(const char *s, size_t n, const char **why) {
    char *out = malloc(n + 1), *o = out;
    if (!out)
        abort();
    for (size_t i = 0; i < n; i++) {
        if (s[i] != '%') {
            *o++ = s[i];
            continue;
        }
        int hi = i + 2 < n ? hexval(s[i + 1]) : -1, lo = i + 2 < n ? hexval(s[i + 2]) : -1;
        if (hi < 0 || lo < 0) {
            *why = "a '%' in the path must be followed by two hex digits";
            free(out);
            return NULL;
        }
        char ch = (char)(hi * 16 + lo);
        if (ch == '\0' || ch == '/') {
            *why = ch ? "a path segment must not hold an encoded '/' (%2F)"
                      : "a path segment must not hold an encoded NUL (%00)";
            free(out);
            return NULL;
        }
        *o++ = ch;
        i += 2;
    }
    *o = '\0';
    return out;
}

/* Splits r->path on '/' into decoded segments. Returns 0, or -1 with *why. */
static int path_split(http_req_t *r, const char **why) {
    const char *s = r->path;
    if (*s == '/')
        s++;
    if (!*s)
        return 0;
    for (;;) {
        const char *slash = strchr(s, '/');
        size_t n = slash ? (size_t)(slash - s) : strlen(s);
        char *seg = segment_decode(s, n, why);
        if (!seg)
            return -1;
        r->segments = realloc(r->segments, sizeof(char *) * (size_t)(r->nsegments + 1));
        if (!r->segments)
            abort();
        r->segments[r->nsegments++] = seg;
        if (!slash)
            return 0;
        s = slash + 1;
    }
}

static int on_message_complete(http_parser *p) {
    http_conn_t *c = p->data;
    http_req_t *r = c->req;
    struct http_parser_url u;
    const char *why = NULL;
    http_parser_url_init(&u);
    r->head = p->method == HTTP_HEAD;
    r->method = r->head ? "GET" : http_method_str((enum http_method)p->method);
    if (!c->url || http_parser_parse_url(c->url, c->url_len, 0, &u) != 0 || !(u.field_set & (1 << UF_PATH))) {
        r->path = strdup("");
        r->query = strdup("");
    } else {
        r->path = strndup(c->url + u.field_data[UF_PATH].off, u.field_data[UF_PATH].len);
        r->query = (u.field_set & (1 << UF_QUERY))
                       ? strndup(c->url + u.field_data[UF_QUERY].off, u.field_data[UF_QUERY].len)
                       : strdup("");
    }
    int bad_path = path_split(r, &why) < 0;
    if (!r->body)
        r->body = strdup("");
    r->conn = c;
    c->keep_alive = http_should_keep_alive(p) && !c->eof;
    c->answering = 1;
    c->handed = r;
    c->req = NULL;
    uv_timer_stop(&c->timer);
    http_parser_pause(p, 1); /* one request at a time: the rest waits in pending */
    if (bad_path)
        httpd_error(r, 400, why, "path", "path-segment");
    else
        c->h->handler(r, c->h->ctx);
    return 0;
}

/* Parses data: bytes just read, or (from_pending) the unparsed part of
 * c->pending. The parser pauses after each complete request, so a pipelined
 * read is parsed one request per answer: what follows the request stays in
 * pending, and a later call starts further into the same buffer (copying the
 * rest once per request would make a 64 KB read of small requests cost
 * megabytes of copying). */
static void feed(http_conn_t *c, const char *data, size_t len, int from_pending) {
    size_t n = http_parser_execute(&c->parser, &c->settings, data, len);
    enum http_errno err = HTTP_PARSER_ERRNO(&c->parser);
    if (from_pending) {
        c->pending_off += n;
        c->pending_len = err == HPE_PAUSED ? len - n : 0;
    }
    if (err == HPE_PAUSED) {
        if (!from_pending && len > n) { /* keep what follows the answered request */
            c->pending = append(c->pending, &c->pending_len, data + n, len - n);
            c->pending_off = 0;
        }
        return;
    }
    if (err == HPE_HEADER_OVERFLOW && !c->answering && !c->closing) /* http-parser's own 80 KB */
        conn_fail(c, 431, "request header fields too large", "header-size");
    else if (err != HPE_OK && !c->answering && !c->closing)
        conn_fail(c, 400, http_errno_description(err), "http"); /* closes once the answer is written */
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
    buf->base = malloc(suggested);
    buf->len = buf->base ? suggested : 0;
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
    http_conn_t *c = (http_conn_t *)s;
    if (n == UV_EOF && !c->closing) {
        /* The client half-closed (shutdown(SHUT_WR)) or closed: it may still
         * read. A request being answered, or complete requests waiting in
         * pending, are answered first; then the connection closes. */
        free(buf->base);
        c->eof = 1;
        c->keep_alive = 0;
        uv_read_stop(s);
        if (!c->answering && !c->pending_len)
            conn_close(c);
        return;
    }
    if (n < 0) {
        free(buf->base);
        conn_close(c);
        return;
    }
    if (n > 0) {
        if (c->answering || c->pending_len) {
            /* Still answering: keep the bytes in order. */
            if (c->pending_off) { /* move the unparsed bytes to the front first */
                memmove(c->pending, c->pending + c->pending_off, c->pending_len);
                c->pending_off = 0;
            }
            c->pending = append(c->pending, &c->pending_len, buf->base, (size_t)n);
            if (c->pending_len > c->h->limits.max_body + 65536) {
                free(buf->base);
                conn_close(c);
                return;
            }
            uv_read_stop(s);
        } else {
            feed(c, buf->base, (size_t)n, 0);
        }
    }
    free(buf->base);
}

static void on_timeout(uv_timer_t *t) {
    http_conn_t *c = t->data;
    if (c->writing) {
        /* An answer is going out: fine while the client reads some of it. */
        size_t left = uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp);
        if (left < c->write_left) {
            c->write_left = left;
            return;
        }
        log_debug("http: closing a connection whose client does not read its answer");
        c->h->stats.timed_out++;
        conn_close(c);
        return;
    }
    if (c->answering) /* the handler's own timeouts apply */
        return;
    c->h->stats.timed_out++;
    if (c->req) { /* a request started and did not finish in time */
        conn_fail(c, 408, "request timeout", NULL);
        return;
    }
    conn_close(c);
}

static void conn_handle_closed(uv_handle_t *h) {
    http_conn_t *c = h->data;
    if (--c->open_handles > 0)
        return;
    req_free(c->req);
    free(c->url);
    free(c->hdr_field);
    free(c->pending);
    free(c);
}

static void conn_close(http_conn_t *c) {
    if (c->closing)
        return;
    c->closing = 1;
    if (c->handed) /* the handler may still answer: it must not touch c */
        c->handed->conn = NULL;
    conns_unlink(c);
    c->h->stats.connections--;
    c->open_handles = 2;
    uv_close((uv_handle_t *)&c->timer, conn_handle_closed);
    uv_close((uv_handle_t *)&c->tcp, conn_handle_closed);
}

typedef struct write_req {
    uv_write_t w;
    char *buf;
    http_conn_t *conn;
    int close_after;
} write_req_t;

static void resume(http_conn_t *c);

static void on_written(uv_write_t *w, int status) {
    write_req_t *wr = (write_req_t *)w;
    http_conn_t *c = wr->conn;
    free(wr->buf);
    free(wr);
    if (c->closing)
        return;
    c->writing = 0;
    if (status < 0 || (!c->keep_alive && !c->eof)) {
        conn_close(c);
        return;
    }
    resume(c);
}

/* The answer went out: parse what waited, or read more. */
static void resume(http_conn_t *c) {
    c->answering = 0;
    http_parser_pause(&c->parser, 0);
    conns_touch(c);
    uv_timer_again(&c->timer);
    if (c->pending_len) {
        feed(c, c->pending + c->pending_off, c->pending_len, 1);
        if (!c->pending_len && !c->closing) {
            free(c->pending);
            c->pending = NULL;
            c->pending_off = 0;
        }
    }
    if (c->closing || c->answering)
        return;
    if (c->eof) /* nothing more will come: every complete request was answered */
        conn_close(c);
    else
        uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

static const char *reason(int status) {
    switch (status) {
    case 200: return "OK";
    case 202: return "Accepted";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 413: return "Payload Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    default: return "Unknown";
    }
}

void httpd_add_header(http_req_t *req, const char *name, const char *value) {
    size_t n = strlen(name) + strlen(value) + 4;
    char *line = malloc(n + 1);
    if (!line)
        abort();
    snprintf(line, n + 1, "%s: %s\r\n", name, value);
    for (char *q = line; q < line + n - 2; q++)
        if (*q == '\r' || *q == '\n')
            *q = ' '; /* no header injection */
    req->headers = append(req->headers, &req->headers_len, line, n);
    free(line);
}

void httpd_respond(http_req_t *req, int status, const char *content_type, const char *body, size_t len) {
    http_conn_t *c = req->conn;
    if (c)
        c->handed = NULL;
    if (!c || c->closing) {
        req_free(req);
        return;
    }
    char head[512];
    int hn = snprintf(head, sizeof(head),
                      "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\nConnection: %s\r\n%s",
                      status, reason(status), content_type ? content_type : "application/json",
                      body ? len : 0, c->keep_alive ? "keep-alive" : "close",
                      status == 401 ? "WWW-Authenticate: Bearer realm=\"helmq\"\r\n" : "");
    /* A HEAD answer has the headers of the GET answer and no body. */
    size_t body_len = body && !req->head ? len : 0;
    size_t total = (size_t)hn + req->headers_len + 2 + body_len;
    write_req_t *wr = calloc(1, sizeof(*wr));
    wr->buf = malloc(total);
    memcpy(wr->buf, head, (size_t)hn);
    if (req->headers_len)
        memcpy(wr->buf + hn, req->headers, req->headers_len);
    memcpy(wr->buf + (size_t)hn + req->headers_len, "\r\n", 2);
    if (body_len)
        memcpy(wr->buf + (size_t)hn + req->headers_len + 2, body, body_len);
    wr->conn = c;
    uv_buf_t b = uv_buf_init(wr->buf, (unsigned)total);
    req_free(req);
    if (uv_write(&wr->w, (uv_stream_t *)&c->tcp, &b, 1, on_written) != 0) {
        free(wr->buf);
        free(wr);
        conn_close(c);
        return;
    }
    /* What the kernel did not take waits in libuv: the timer watches it move. */
    c->writing = 1;
    c->write_left = uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp);
    uv_timer_again(&c->timer);
}

void httpd_error(http_req_t *req, int status, const char *message, const char *field, const char *rule) {
    json_t *e = json_pack("{s:s}", "error", message);
    if (field || status == 400)
        json_object_set_new(e, "field", field ? json_string(field) : json_null());
    if (rule || status == 400)
        json_object_set_new(e, "rule", rule ? json_string(rule) : json_null());
    char *s = json_dumps(e, JSON_COMPACT);
    httpd_respond(req, status, "application/json", s, strlen(s));
    free(s);
    json_decref(e);
}

char *httpd_query_param(const http_req_t *req, const char *name, size_t *len) {
    size_t nl = strlen(name);
    const char *q = req->query;
    while (q && *q) {
        const char *amp = strchr(q, '&');
        size_t seg = amp ? (size_t)(amp - q) : strlen(q);
        if (seg > nl && strncmp(q, name, nl) == 0 && q[nl] == '=')
            return pct_decode(q + nl + 1, seg - nl - 1, 1, len);
        q = amp ? amp + 1 : NULL;
    }
    return NULL;
}

/* Makes room for one more connection: closes the one idle longest, unless it
 * has not had a turn of the loop to send its request yet (a burst of new
 * connections must not close each other before they can speak). Returns 0,
 * or -1 when there is no room. */
static int conns_make_room(httpd_t *h) {
    if (h->stats.connections < h->stats.max_connections)
        return 0;
    for (http_conn_t *c = h->conns_tail; c; c = c->prev) {
        if (c->answering)
            continue;
        if (c->active >= uv_now(h->loop))
            return -1;
        h->stats.evicted++;
        conn_close(c);
        return 0;
    }
    return -1;
}

static void on_connection(uv_stream_t *server, int status) {
    httpd_t *h = server->data;
    if (status < 0) { /* accept failed (libuv handles EMFILE itself, silently) */
        if (h->stats.refused++ % 1000 == 0)
            log_warn("http: accept failed: %s (%llu so far)", uv_strerror(status), h->stats.refused);
        return;
    }
    if (h->stopping)
        return;
    http_conn_t *c = calloc(1, sizeof(*c));
    if (!c)
        abort();
    c->h = h;
    uv_tcp_init(h->loop, &c->tcp);
    c->tcp.data = c;
    if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0 || conns_make_room(h) < 0) {
        h->stats.refused++;
        c->open_handles = 1;
        uv_close((uv_handle_t *)&c->tcp, conn_handle_closed);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    uv_timer_init(h->loop, &c->timer);
    c->timer.data = c;
    uv_timer_start(&c->timer, on_timeout, h->limits.timeout_ms, h->limits.timeout_ms);
    http_parser_init(&c->parser, HTTP_REQUEST);
    c->parser.data = c;
    http_parser_settings_init(&c->settings);
    c->settings.on_message_begin = on_message_begin;
    c->settings.on_url = on_url;
    c->settings.on_header_field = on_header_field;
    c->settings.on_header_value = on_header_value;
    c->settings.on_headers_complete = on_headers_complete;
    c->settings.on_body = on_body;
    c->settings.on_message_complete = on_message_complete;
    conns_touch(c);
    h->stats.connections++;
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

static void listener_closed(uv_handle_t *hd) {
    free(hd->data);
}

/* The connections that fit in the open-file limit, less a reserve. */
static unsigned max_connections_auto(void) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur > 1u << 20)
        return 1u << 20;
    return rl.rlim_cur > 2 * HTTPD_FD_RESERVE ? (unsigned)rl.rlim_cur - HTTPD_FD_RESERVE
                                              : (unsigned)rl.rlim_cur / 2;
}

httpd_t *httpd_start(uv_loop_t *loop, const char *address, const httpd_limits_t *limits,
                     httpd_handler handler, void *ctx, char *errstr, size_t errstr_size) {
    struct sockaddr_in addr;
    char host[256];
    const char *colon = address ? strrchr(address, ':') : NULL;
    char *end = NULL;
    long port = colon ? strtol(colon + 1, &end, 10) : -1;
    if (!colon || !end || *end || end == colon + 1 || port < 0 || port > 65535) {
        snprintf(errstr, errstr_size, "listen address \"%s\" must be HOST:PORT", address ? address : "");
        return NULL;
    }
    snprintf(host, sizeof(host), "%.*s", (int)(colon - address), address);
    int rc = uv_ip4_addr(host, (int)port, &addr);
    if (rc != 0) {
        snprintf(errstr, errstr_size, "bad listen address %s: %s", address, uv_strerror(rc));
        return NULL;
    }
    httpd_t *h = calloc(1, sizeof(*h));
    h->loop = loop;
    h->limits = *limits;
    h->stats.max_connections = limits->max_connections ? limits->max_connections : max_connections_auto();
    h->handler = handler;
    h->ctx = ctx;
    uv_tcp_init(loop, &h->listener);
    h->listener.data = h;
    if ((rc = uv_tcp_bind(&h->listener, (const struct sockaddr *)&addr, 0)) != 0 ||
        (rc = uv_listen((uv_stream_t *)&h->listener, 512, on_connection)) != 0) {
        snprintf(errstr, errstr_size, "cannot listen on %s: %s", address, uv_strerror(rc));
        uv_close((uv_handle_t *)&h->listener, listener_closed);
        return NULL;
    }
    return h;
}

int httpd_port(const httpd_t *h) {
    struct sockaddr_in addr;
    int len = sizeof(addr);
    if (uv_tcp_getsockname(&h->listener, (struct sockaddr *)&addr, &len) != 0)
        return -1;
    return ntohs(addr.sin_port);
}

void httpd_stats_get(const httpd_t *h, httpd_stats_t *out) {
    *out = h->stats;
}

void httpd_stop(httpd_t *h) {
    if (!h)
        return;
    h->stopping = 1;
    while (h->conns) {
        http_conn_t *c = h->conns;
        conn_close(c);
    }
    uv_close((uv_handle_t *)&h->listener, listener_closed);
}
