/* The HTTP request parser of httpd.c, without sockets; see http_request.h. */
#include "http_request.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static char *append(char *buf, size_t *len, const char *at, size_t n) {
    char *b = realloc(buf, *len + n + 1);
    if (!b)
        abort();
    memcpy(b + *len, at, n);
    *len += n;
    b[*len] = '\0';
    return b;
}

void http_req_free(http_req_t *r) {
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
    free(r->last_event_id);
    free(r->body);
    free(r);
}

/* Refuses the bytes: records the answer the owner gives. Returns -1, for a
 * callback to return (http-parser then stops with an error). */
static int refuse(http_reqparser_t *p, int status, const char *message, const char *rule) {
    p->status = status;
    p->error = message;
    p->rule = rule;
    return -1;
}

static int on_message_begin(http_parser *hp) {
    http_reqparser_t *p = hp->data;
    http_req_free(p->req);
    p->req = calloc(1, sizeof(http_req_t));
    if (!p->req)
        abort();
    free(p->url);
    p->url = NULL;
    p->url_len = 0;
    p->authorization_len = p->content_type_len = p->last_event_id_len = 0;
    p->head_bytes = 0;
    if (p->on_begin)
        p->on_begin(p->owner);
    return 0;
}

/* Counts n more bytes of the request's head; past max_header refuses 431. */
static int head_grow(http_reqparser_t *p, size_t n) {
    p->head_bytes += n;
    if (p->head_bytes <= p->max_header)
        return 0;
    snprintf(p->error_buf, sizeof(p->error_buf), "request header fields too large (over %zu bytes)",
             p->max_header);
    return refuse(p, 431, p->error_buf, "header-size");
}

static int on_url(http_parser *hp, const char *at, size_t n) {
    http_reqparser_t *p = hp->data;
    /* The URL is the head's first part, so head_bytes == url_len here. The
     * lower of the two limits is checked first: crossing it decides the
     * answer, wherever the reads cut the URL. */
    if (p->url_len + n > p->max_url && p->max_url <= p->max_header) {
        snprintf(p->error_buf, sizeof(p->error_buf), "URI too long (over %zu bytes)", p->max_url);
        return refuse(p, 414, p->error_buf, "uri-size");
    }
    if (head_grow(p, n) < 0)
        return -1;
    p->url = append(p->url, &p->url_len, at, n);
    return 0;
}

/* A header holding a NUL byte is refused: RFC 9110 forbids it, and as C
 * text it would end early (http-parser lets one through as the first byte
 * of a value). */
static int refuse_nul(http_reqparser_t *p, const char *at, size_t n) {
    if (!memchr(at, '\0', n))
        return 0;
    return refuse(p, 400, "a header holds a NUL byte", "http");
}

static int on_header_field(http_parser *hp, const char *at, size_t n) {
    http_reqparser_t *p = hp->data;
    if (head_grow(p, n) < 0 || refuse_nul(p, at, n) < 0)
        return -1;
    if (p->hdr_value_for >= 0) { /* a new field begins */
        free(p->hdr_field);
        p->hdr_field = NULL;
        p->hdr_field_len = 0;
        p->hdr_value_for = -1;
    }
    p->hdr_field = append(p->hdr_field, &p->hdr_field_len, at, n);
    return 0;
}

static int on_header_value(http_parser *hp, const char *at, size_t n) {
    http_reqparser_t *p = hp->data;
    if (head_grow(p, n) < 0 || refuse_nul(p, at, n) < 0)
        return -1;
    if (p->hdr_value_for < 0)
        p->hdr_value_for = strcasecmp(p->hdr_field, "authorization") == 0   ? 1
                           : strcasecmp(p->hdr_field, "content-type") == 0  ? 2
                           : strcasecmp(p->hdr_field, "last-event-id") == 0 ? 3
                                                                            : 0;
    /* The lengths are kept: a value may come in pieces, one per read. */
    if (p->hdr_value_for == 1)
        p->req->authorization = append(p->req->authorization, &p->authorization_len, at, n);
    else if (p->hdr_value_for == 2)
        p->req->content_type = append(p->req->content_type, &p->content_type_len, at, n);
    else if (p->hdr_value_for == 3)
        p->req->last_event_id = append(p->req->last_event_id, &p->last_event_id_len, at, n);
    return 0;
}

static int on_headers_complete(http_parser *hp) {
    http_reqparser_t *p = hp->data;
    p->hdr_value_for = 0;
    if (hp->content_length != ULLONG_MAX && hp->content_length > p->max_body)
        return refuse(p, 413, "request body too large", NULL);
    return 0;
}

static int on_body(http_parser *hp, const char *at, size_t n) {
    http_reqparser_t *p = hp->data;
    if (p->req->body_len + n > p->max_body)
        return refuse(p, 413, "request body too large", NULL);
    p->req->body = append(p->req->body, &p->req->body_len, at, n);
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

static int on_message_complete(http_parser *hp) {
    http_reqparser_t *p = hp->data;
    http_req_t *r = p->req;
    struct http_parser_url u;
    const char *why = NULL;
    http_parser_url_init(&u);
    r->head = hp->method == HTTP_HEAD;
    r->method = r->head ? "GET" : http_method_str((enum http_method)hp->method);
    if (!p->url || http_parser_parse_url(p->url, p->url_len, 0, &u) != 0 || !(u.field_set & (1 << UF_PATH))) {
        r->path = strdup("");
        r->query = strdup("");
    } else {
        r->path = strndup(p->url + u.field_data[UF_PATH].off, u.field_data[UF_PATH].len);
        r->query = (u.field_set & (1 << UF_QUERY))
                       ? strndup(p->url + u.field_data[UF_QUERY].off, u.field_data[UF_QUERY].len)
                       : strdup("");
    }
    int bad_path = path_split(r, &why) < 0;
    if (!r->body)
        r->body = strdup("");
    p->req = NULL;
    http_parser_pause(hp, 1); /* one request at a time: the rest waits for resume */
    p->on_request(r, http_should_keep_alive(hp), bad_path ? why : NULL, p->owner);
    return 0;
}

void http_reqparser_init(http_reqparser_t *p, size_t max_body, size_t max_header,
                         http_reqparser_begin_cb on_begin, http_reqparser_request_cb on_request,
                         void *owner) {
    memset(p, 0, sizeof(*p));
    http_parser_init(&p->parser, HTTP_REQUEST);
    p->parser.data = p;
    http_parser_settings_init(&p->settings);
    p->settings.on_message_begin = on_message_begin;
    p->settings.on_url = on_url;
    p->settings.on_header_field = on_header_field;
    p->settings.on_header_value = on_header_value;
    p->settings.on_headers_complete = on_headers_complete;
    p->settings.on_body = on_body;
    p->settings.on_message_complete = on_message_complete;
    p->max_body = max_body;
    p->max_header = max_header;
    p->max_url = HTTP_REQUEST_MAX_URL;
    p->on_begin = on_begin;
    p->on_request = on_request;
    p->owner = owner;
}

size_t http_reqparser_execute(http_reqparser_t *p, const char *data, size_t len, enum http_errno *err) {
    size_t n = http_parser_execute(&p->parser, &p->settings, data, len);
    *err = HTTP_PARSER_ERRNO(&p->parser);
    if (*err == HPE_OK || *err == HPE_PAUSED || p->status)
        return n;
    /* http-parser's own refusal (a callback's set p->status). */
    if (*err == HPE_HEADER_OVERFLOW)
        refuse(p, 431, "request header fields too large", "header-size");
    else if (*err >= HPE_CB_message_begin && *err <= HPE_CB_chunk_complete)
        refuse(p, 500, "the request parser failed", NULL);
    else
        refuse(p, 400, http_errno_description(*err), "http");
    return n;
}

void http_reqparser_resume(http_reqparser_t *p) {
    http_parser_pause(&p->parser, 0);
}

http_req_t *http_reqparser_take(http_reqparser_t *p) {
    http_req_t *r = p->req;
    p->req = NULL;
    return r;
}

int http_reqparser_busy(const http_reqparser_t *p) {
    return p->req != NULL;
}

void http_reqparser_free(http_reqparser_t *p) {
    http_req_free(p->req);
    p->req = NULL;
    free(p->url);
    p->url = NULL;
    free(p->hdr_field);
    p->hdr_field = NULL;
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
