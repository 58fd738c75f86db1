/* Leveled logging: one line per call, timestamped, written with a single
 * write(2) so lines from concurrent processes do not interleave. The message
 * is escaped (log_escape), so no text from outside — a hostile release name,
 * helm's output, an error message — can break a line or forge one. */
#include "log.h"

#include "util.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define LOG_MSG_MAX 4096  /* the formatted message, before escaping */
#define LOG_LINE_MAX 8192 /* the prefix and the escaped message */

log_level_t log_level = LOG_LEVEL_INFO;
static const char *log_program = "helmq";
static const char *const level_names[] = {"error", "warn", "info", "debug"};

int log_init(const char *program, const char *level) {
    if (program)
        log_program = program;
    if (!level || !*level)
        return 0;
    for (int i = 0; i < 4; i++) {
        if (strcmp(level, level_names[i]) == 0) {
            log_level = (log_level_t)i;
            return 0;
        }
    }
    return -1;
}

/* Whether the code point of a well-formed character breaks or reorders a
 * line in some viewer: C1 controls (U+0085 is a line break), the line and
 * paragraph separators U+2028/U+2029, and the bidirectional embeddings,
 * overrides and isolates (U+202A-U+202E, U+2066-U+2069), which make a
 * terminal show text in another order than it was written. */
static int invisible_control(unsigned cp) {
    return (cp >= 0x80 && cp <= 0x9f) || cp == 0x2028 || cp == 0x2029 || (cp >= 0x202a && cp <= 0x202e) ||
           (cp >= 0x2066 && cp <= 0x2069);
}

size_t log_escape(char *out, size_t size, const char *in, size_t len, int *cut) {
    static const char hex[] = "0123456789abcdef";
    const unsigned char *u = (const unsigned char *)in;
    size_t o = 0;
    if (cut)
        *cut = 0;
    if (size == 0)
        return 0;
    for (size_t i = 0; i < len;) {
        char esc[8];
        size_t elen = 0, n = utf8_char_len(u + i, len - i);
        unsigned char b = u[i];
        if (n == 0) { /* not UTF-8: the byte itself, in hex */
            n = 1;
            elen = (size_t)snprintf(esc, sizeof(esc), "\\x%c%c", hex[b >> 4], hex[b & 15]);
        } else if (b == '\n' || b == '\r' || b == '\t' || b == '\\') {
            esc[0] = '\\';
            esc[1] = b == '\n' ? 'n' : b == '\r' ? 'r' : b == '\t' ? 't' : '\\';
            elen = 2;
        } else if (b < 0x20 || b == 0x7f) {
            elen = (size_t)snprintf(esc, sizeof(esc), "\\x%c%c", hex[b >> 4], hex[b & 15]);
        } else if (n > 1) {
            unsigned cp =
                n == 2   ? (unsigned)(b & 0x1f) << 6 | (u[i + 1] & 0x3f)
                : n == 3 ? (unsigned)(b & 0x0f) << 12 | (unsigned)(u[i + 1] & 0x3f) << 6 | (u[i + 2] & 0x3f)
                         : 0x10000; /* no 4-byte character is escaped */
            if (invisible_control(cp))
                elen = (size_t)snprintf(esc, sizeof(esc), "\\u%04x", cp);
        }
        const char *src = elen ? esc : in + i;
        size_t slen = elen ? elen : n;
        if (o + slen > size - 1) { /* whole characters and escapes only */
            if (cut)
                *cut = 1;
            break;
        }
        memcpy(out + o, src, slen);
        o += slen;
        i += n;
    }
    out[o] = '\0';
    return o;
}

void log_write(log_level_t level, const char *fmt, ...) {
    static const char more[] = "\xe2\x80\xa6"; /* "…": the message was cut */
    char msg[LOG_MSG_MAX], line[LOG_LINE_MAX];
    struct timeval tv;
    struct tm tm;
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    int n = snprintf(line, sizeof(line), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ %s[%d] %s: ", tm.tm_year + 1900,
                     tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(tv.tv_usec / 1000),
                     log_program, (int)getpid(), level_names[level]);
    if (n < 0 || (size_t)n >= sizeof(line) / 2)
        n = 0;
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    size_t mlen = m < 0 ? 0 : (size_t)m;
    int cut = 0;
    if (mlen > sizeof(msg) - 1) { /* cut by vsnprintf: end on a whole character */
        mlen = utf8_complete_len(msg, sizeof(msg) - 1);
        cut = 1;
    }
    int escape_cut;
    /* Room is kept for the mark and the newline. */
    size_t len =
        (size_t)n + log_escape(line + n, sizeof(line) - (size_t)n - sizeof(more), msg, mlen, &escape_cut);
    if (cut || escape_cut) {
        memcpy(line + len, more, sizeof(more) - 1);
        len += sizeof(more) - 1;
    }
    line[len++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, len);
    (void)w;
}
