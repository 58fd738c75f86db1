/* HTTP/1.1 connections on libuv; requests are parsed by http_request.c. See httpd.h. */
#include "httpd.h"

#include "log.h"
#include "util.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <linux/sockios.h>

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
    http_reqparser_t rp; /* http_request.h: the request being parsed, the head and body limits */
    http_req_t *handed;  /* handed to the handler, not answered yet */
    int answering;       /* a request is being answered */
    int keep_alive;
    int closing;
    int eof;            /* the client half-closed: answer what was asked, then close */
    int writing;        /* an answer is being written */
    size_t write_left;  /* its bytes still queued when the timer last looked */
    uint64_t active;    /* uv_now when accepted, a request began or an answer went out */
    char *pending;      /* bytes read but not parsed yet (pipelining) */
    size_t pending_off; /* where they start in pending: parsed requests are skipped, not copied */
    size_t pending_len; /* how many there are from pending_off */
    int open_handles;
    /* A streamed answer (httpd_stream_begin): */
    int streaming;
    int stream_ending; /* httpd_stream_end without cut: close once the writes are done */
    unsigned writes;   /* stream writes not completed */
    httpd_stream_closed_cb on_stream_closed;
    void *stream_arg;
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

/* Answers the request being parsed (or a new one) with an error, then closes. */
static void conn_fail(http_conn_t *c, int status, const char *message, const char *rule) {
    http_req_t *r = http_reqparser_take(&c->rp);
    if (!r)
        r = calloc(1, sizeof(http_req_t));
    r->conn = c;
    c->handed = r;
    c->answering = 1;
    c->keep_alive = 0;
    httpd_error(r, status, message, NULL, rule);
}

static void on_request_begin(void *owner) {
    http_conn_t *c = owner;
    conns_touch(c);
    uv_timer_again(&c->timer);
}

/* A complete request: the parser is paused until it is answered. */
static void on_request(http_req_t *r, int keep_alive, const char *bad_path, void *owner) {
    http_conn_t *c = owner;
    r->conn = c;
    c->keep_alive = keep_alive && !c->eof;
    c->answering = 1;
    c->handed = r;
    uv_timer_stop(&c->timer);
    if (bad_path)
        httpd_error(r, 400, bad_path, "path", "path-segment");
    else
        c->h->handler(r, c->h->ctx);
}

/* Parses data: bytes just read, or (from_pending) the unparsed part of
 * c->pending. The parser pauses after each complete request, so a pipelined
 * read is parsed one request per answer: what follows the request stays in
 * pending, and a later call starts further into the same buffer (copying the
 * rest once per request would make a 64 KB read of small requests cost
 * megabytes of copying). */
static void feed(http_conn_t *c, const char *data, size_t len, int from_pending) {
    enum http_errno err;
    size_t n = http_reqparser_execute(&c->rp, data, len, &err);
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
    if (err != HPE_OK && !c->answering && !c->closing) /* closes once the answer is written */
        conn_fail(c, c->rp.status, c->rp.error, c->rp.rule);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
    buf->base = malloc(suggested);
    buf->len = buf->base ? suggested : 0;
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
    http_conn_t *c = (http_conn_t *)s;
    if (c->streaming) { /* what a stream's client sends is discarded; its end ends the stream */
        free(buf->base);
        if (n < 0)
            conn_close(c);
        return;
    }
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
    if (c->streaming) /* the stream's owner bounds it (httpd_stream_unsent) */
        return;
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
    if (http_reqparser_busy(&c->rp)) { /* a request started and did not finish in time */
        conn_fail(c, 408, "request timeout", NULL);
        return;
    }
    conn_close(c);
}

static void conn_handle_closed(uv_handle_t *h) {
    http_conn_t *c = h->data;
    if (--c->open_handles > 0)
        return;
    http_reqparser_free(&c->rp);
    free(c->pending);
    free(c);
}

static void conn_close(http_conn_t *c) {
    if (c->closing)
        return;
    c->closing = 1;
    if (c->handed) /* the handler may still answer: it must not touch c */
        c->handed->conn = NULL;
    if (c->on_stream_closed) {
        httpd_stream_closed_cb cb = c->on_stream_closed;
        c->on_stream_closed = NULL;
        cb(c->stream_arg);
    }
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
    if (c->streaming) {
        c->writes--;
        if (status < 0 || (c->stream_ending && c->writes == 0))
            conn_close(c);
        return;
    }
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
    http_reqparser_resume(&c->rp);
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
        http_req_free(req);
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
    http_req_free(req);
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

http_conn_t *httpd_stream_begin(http_req_t *req, const char *content_type, httpd_stream_closed_cb on_closed,
                                void *arg) {
    http_conn_t *c = req->conn;
    if (c)
        c->handed = NULL;
    if (!c || c->closing) {
        http_req_free(req);
        return NULL;
    }
    c->streaming = 1;
    c->keep_alive = 0;
    uv_timer_stop(&c->timer);
    char head[512];
    int hn = snprintf(head, sizeof(head), "HTTP/1.1 200 OK\r\nContent-Type: %s\r\nConnection: close\r\n",
                      content_type);
    size_t total = (size_t)hn + req->headers_len + 2;
    char *buf = malloc(total);
    if (!buf)
        abort();
    memcpy(buf, head, (size_t)hn);
    if (req->headers_len)
        memcpy(buf + hn, req->headers, req->headers_len);
    memcpy(buf + (size_t)hn + req->headers_len, "\r\n", 2);
    http_req_free(req);
    c->on_stream_closed = on_closed;
    c->stream_arg = arg;
    int rc = httpd_stream_write(c, buf, total);
    free(buf);
    return rc < 0 ? NULL : c;
}

int httpd_stream_write(http_conn_t *c, const char *data, size_t len) {
    if (c->closing)
        return -1;
    write_req_t *wr = calloc(1, sizeof(*wr));
    wr->buf = malloc(len ? len : 1);
    if (!wr || !wr->buf)
        abort();
    memcpy(wr->buf, data, len);
    wr->conn = c;
    uv_buf_t b = uv_buf_init(wr->buf, (unsigned)len);
    if (uv_write(&wr->w, (uv_stream_t *)&c->tcp, &b, 1, on_written) != 0) {
        free(wr->buf);
        free(wr);
        conn_close(c);
        return -1;
    }
    c->writes++;
    return 0;
}

size_t httpd_stream_unsent(const http_conn_t *c) {
    size_t n = uv_stream_get_write_queue_size((const uv_stream_t *)&c->tcp);
    uv_os_fd_t fd;
    int outq = 0;
    if (uv_fileno((const uv_handle_t *)&c->tcp, &fd) == 0 && ioctl(fd, SIOCOUTQ, &outq) == 0 && outq > 0)
        n += (size_t)outq;
    return n;
}

void httpd_stream_end(http_conn_t *c, int cut) {
    c->on_stream_closed = NULL;
    if (cut || c->writes == 0)
        conn_close(c);
    else
        c->stream_ending = 1;
}

void httpd_error(http_req_t *req, int status, const char *message, const char *field, const char *rule) {
    /* The texts may quote what a client sent. Text that is not UTF-8 makes
     * no JSON string (json_pack returned NULL, and the strlen of no document
     * killed the process: fuzz finding F7), so it is sanitized here too. */
    char *msg = strdup(message), *fld = field ? strdup(field) : NULL;
    if (!msg || (field && !fld))
        abort();
    utf8_sanitize(msg);
    if (fld)
        utf8_sanitize(fld);
    json_t *e = json_pack("{s:s}", "error", msg);
    if (!e)
        abort();
    if (fld || status == 400)
        json_object_set_new(e, "field", fld ? json_string(fld) : json_null());
    if (rule || status == 400)
        json_object_set_new(e, "rule", rule ? json_string(rule) : json_null());
    char *s = json_dumps(e, JSON_COMPACT);
    if (!s)
        abort();
    httpd_respond(req, status, "application/json", s, strlen(s));
    free(s);
    json_decref(e);
    free(msg);
    free(fld);
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
    http_reqparser_init(&c->rp, h->limits.max_body, h->limits.max_header, on_request_begin, on_request, c);
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
