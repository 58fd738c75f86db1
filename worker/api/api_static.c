/* The status page, as built into helmq-api; see api_static.h. */
#include "api_static.h"

#include "embedded.h"

#include <string.h>

/* build/static_gen.c: worker/api/static/, in the order the Makefile names. */
extern const embedded_file_t static_sources[];

#define STATIC_DIR "worker/api/static/"

static const char *content_type(const char *name) {
    const char *dot = strrchr(name, '.');
    if (dot && strcmp(dot, ".css") == 0)
        return "text/css; charset=utf-8";
    if (dot && strcmp(dot, ".js") == 0)
        return "text/javascript; charset=utf-8";
    return "text/html; charset=utf-8";
}

int api_static(http_req_t *req, const char *name) {
    const char *want = name ? name : "status.html";
    for (const embedded_file_t *f = static_sources; f->path; f++) {
        const char *base = f->path + strlen(STATIC_DIR);
        if (strcmp(base, want) != 0 || (name && strcmp(base, "status.html") == 0))
            continue;
        /* Only its own scripts and styles, and calls back to this origin. */
        httpd_add_header(req, "Content-Security-Policy",
                         "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
                         "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'");
        httpd_add_header(req, "X-Content-Type-Options", "nosniff");
        httpd_add_header(req, "Cache-Control", "no-cache");
        httpd_respond(req, 200, content_type(base), f->text, strlen(f->text));
        return 0;
    }
    return -1;
}
