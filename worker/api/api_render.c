/* Query rows as JSON (api_render.h). Two passes over the rows: the first
 * counts the bytes, the second writes them into one allocation. */
#include "api_render.h"

#include <stdlib.h>
#include <string.h>

const api_json_col_t api_release_cols[] = {
    {"releaseId", API_JSON_STRING},       {"tenantId", API_JSON_STRING},
    {"releaseName", API_JSON_STRING},     {"namespace", API_JSON_STRING},
    {"chartName", API_JSON_STRING},       {"chartVersion", API_JSON_STRING},
    {"appVersion", API_JSON_STRING},      {"status", API_JSON_STRING},
    {"revision", API_JSON_RAW},           {"description", API_JSON_STRING},
    {"uninstallReason", API_JSON_STRING}, {"lastError", API_JSON_STRING},
    {"valuesDigest", API_JSON_STRING},    {"createdAt", API_JSON_RAW},
    {"updatedAt", API_JSON_RAW},
};
const int api_release_ncols = (int)(sizeof(api_release_cols) / sizeof(api_release_cols[0]));

/* The letter after the backslash that escapes c in a JSON string, 'u' for
 * \u00XX, 0 when c stands for itself (PostgreSQL's escape_json: the control
 * characters, the quote and the backslash; every other byte as it is). */
static char escape_of(unsigned char c) {
    if (c >= 0x20)
        return c == '"' ? '"' : c == '\\' ? '\\' : 0;
    switch (c) {
    case '\b': return 'b';
    case '\f': return 'f';
    case '\n': return 'n';
    case '\r': return 'r';
    case '\t': return 't';
    default: return 'u';
    }
}

/* s (len bytes) as a JSON string, quoted and escaped as PostgreSQL's
 * escape_json does, into out; returns the bytes written. out may be NULL to
 * count them. */
static size_t json_quote(const char *s, size_t len, char *out) {
    static const char hex[] = "0123456789abcdef";
    if (!out) {
        size_t n = len + 2;
        for (size_t i = 0; i < len; i++) {
            char e = escape_of((unsigned char)s[i]);
            n += e == 0 ? 0 : e == 'u' ? 5 : 1;
        }
        return n;
    }
    size_t n = 0, run = 0; /* run: where the bytes not yet copied start */
    out[n++] = '"';
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        char e = escape_of(c);
        if (!e)
            continue;
        memcpy(out + n, s + run, i - run);
        n += i - run;
        run = i + 1;
        out[n++] = '\\';
        out[n++] = e;
        if (e == 'u') {
            memcpy(out + n, "00", 2);
            out[n + 2] = hex[c >> 4];
            out[n + 3] = hex[c & 15];
            n += 4;
        }
    }
    memcpy(out + n, s + run, len - run);
    n += len - run;
    out[n++] = '"';
    return n;
}

/* One object; returns its length, written to out unless out is NULL. */
static size_t render_row(const PGresult *res, int row, const api_json_col_t *cols, int ncols, char *out) {
    size_t n = 0;
#define EMIT(src, len)                                                                                       \
    do {                                                                                                     \
        if (out)                                                                                             \
            memcpy(out + n, (src), (len));                                                                   \
        n += (len);                                                                                          \
    } while (0)
    EMIT("{", 1);
    for (int c = 0; c < ncols; c++) {
        if (c)
            EMIT(",", 1);
        EMIT("\"", 1); /* names are plain ASCII: nothing to escape */
        EMIT(cols[c].name, strlen(cols[c].name));
        EMIT("\":", 2);
        if (PQgetisnull(res, row, c)) {
            EMIT("null", 4);
            continue;
        }
        const char *v = PQgetvalue(res, row, c);
        size_t len = (size_t)PQgetlength(res, row, c);
        if (cols[c].kind == API_JSON_RAW)
            EMIT(v, len);
        else
            n += json_quote(v, len, out ? out + n : NULL);
    }
    EMIT("}", 1);
#undef EMIT
    return n;
}

static size_t render(const PGresult *res, int nrows, const api_json_col_t *cols, int ncols, char *out) {
    size_t n = 1;
    if (out)
        out[0] = '[';
    for (int r = 0; r < nrows; r++) {
        if (r > 0) {
            if (out)
                out[n] = ',';
            n++;
        }
        n += render_row(res, r, cols, ncols, out ? out + n : NULL);
    }
    if (out)
        out[n] = ']';
    return n + 1;
}

char *api_render_rows(const PGresult *res, int nrows, const api_json_col_t *cols, int ncols) {
    if (ncols > PQnfields(res))
        return NULL;
    size_t len = render(res, nrows, cols, ncols, NULL);
    char *out = malloc(len + 1);
    if (!out)
        return NULL;
    render(res, nrows, cols, ncols, out);
    out[len] = '\0';
    return out;
}
