/* UUIDs (random and name-based), UTF-8 text bounds, SHA-256 digests and
 * clocks. */
#include "util.h"

#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

/* Lower-case hex of n bytes into out (2n characters, no NUL). The worker
 * formats a digest and several UUIDs per command: snprintf's "%02x" per byte
 * was a measurable part of its CPU (docs/PERFORMANCE.md). */
static void hex_bytes(const unsigned char *b, size_t n, char *out) {
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[b[i] >> 4];
        out[2 * i + 1] = digits[b[i] & 0x0f];
    }
}

static int hex_value(char c) {
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
}

static void uuid_format(const unsigned char b[16], char out[UUID_STR_LEN]) {
    hex_bytes(b, 4, out);
    out[8] = '-';
    hex_bytes(b + 4, 2, out + 9);
    out[13] = '-';
    hex_bytes(b + 6, 2, out + 14);
    out[18] = '-';
    hex_bytes(b + 8, 2, out + 19);
    out[23] = '-';
    hex_bytes(b + 10, 6, out + 24);
    out[36] = '\0';
}

static int uuid_parse(const char *s, unsigned char b[16]) {
    if (!uuid_valid(s))
        return -1;
    for (int i = 0, j = 0; i < 16; j++) {
        if (s[j] == '-')
            continue;
        int hi = hex_value(s[j]), lo = hex_value(s[j + 1]);
        if (hi < 0 || lo < 0)
            return -1;
        b[i++] = (unsigned char)(hi << 4 | lo);
        j++;
    }
    return 0;
}

int uuid_v4(char out[UUID_STR_LEN]) {
    unsigned char b[16];
    if (RAND_bytes(b, sizeof(b)) != 1)
        return -1;
    b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
    uuid_format(b, out);
    return 0;
}

int uuid_v5(const char *ns, const char *name, size_t name_len, char out[UUID_STR_LEN]) {
    unsigned char nsb[16], md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (uuid_parse(ns, nsb) < 0)
        return -1;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (!ctx || EVP_DigestInit_ex(ctx, EVP_sha1(), NULL) != 1 ||
        EVP_DigestUpdate(ctx, nsb, sizeof(nsb)) != 1 || EVP_DigestUpdate(ctx, name, name_len) != 1 ||
        EVP_DigestFinal_ex(ctx, md, &mdlen) != 1) {
        EVP_MD_CTX_free(ctx);
        return -1;
    }
    EVP_MD_CTX_free(ctx);
    md[6] = (unsigned char)((md[6] & 0x0f) | 0x50);
    md[8] = (unsigned char)((md[8] & 0x3f) | 0x80);
    uuid_format(md, out);
    return 0;
}

int uuid_valid(const char *s) {
    if (!s || strlen(s) != 36)
        return 0;
    for (int i = 0; i < 36; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (s[i] != '-')
                return 0;
        } else if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f') ||
                     (s[i] >= 'A' && s[i] <= 'F'))) {
            return 0;
        }
    }
    return 1;
}

int uuid_lower(char *s) {
    if (!uuid_valid(s))
        return 0;
    for (; *s; s++)
        if (*s >= 'A' && *s <= 'F')
            *s = (char)(*s - 'A' + 'a');
    return 1;
}

size_t utf8_char_len(const unsigned char *s, size_t len) {
    if (len == 0)
        return 0;
    unsigned char b = s[0];
    if (b < 0x80)
        return 1;
    size_t n;
    unsigned char lo = 0x80, hi = 0xBF; /* the range of the second byte */
    if (b >= 0xC2 && b <= 0xDF) {
        n = 2;
    } else if (b >= 0xE0 && b <= 0xEF) {
        n = 3;
        if (b == 0xE0)
            lo = 0xA0; /* overlong */
        else if (b == 0xED)
            hi = 0x9F; /* surrogates */
    } else if (b >= 0xF0 && b <= 0xF4) {
        n = 4;
        if (b == 0xF0)
            lo = 0x90; /* overlong */
        else if (b == 0xF4)
            hi = 0x8F; /* beyond U+10FFFF */
    } else {
        return 0; /* a continuation byte, C0/C1 (overlong) or F5..FF */
    }
    if (len < n || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < n; i++)
        if ((s[i] & 0xC0) != 0x80)
            return 0;
    return n;
}

size_t utf8_prefix_len(const char *s, size_t len, size_t max) {
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < len) {
        size_t n = utf8_char_len(u + i, len - i);
        if (n == 0)
            n = 1;
        if (i + n > max)
            break;
        i += n;
    }
    return i;
}

int utf8_copy(char *dst, size_t size, const char *src) {
    size_t len = strlen(src);
    int cut = len > size - 1;
    if (cut)
        len = utf8_prefix_len(src, len, size - 1);
    memcpy(dst, src, len);
    dst[len] = '\0';
    return cut;
}

/* Whether s[0..len) is the start of a multi-byte character and nothing else:
 * its lead byte and fewer continuation bytes than it announces. */
static int utf8_cut_at_end(const unsigned char *s, size_t len) {
    size_t want = s[0] >= 0xC2 && s[0] <= 0xDF   ? 2
                  : s[0] >= 0xE0 && s[0] <= 0xEF ? 3
                  : s[0] >= 0xF0 && s[0] <= 0xF4 ? 4
                                                 : 0;
    if (len >= want)
        return 0;
    for (size_t i = 1; i < len; i++)
        if ((s[i] & 0xC0) != 0x80)
            return 0;
    return 1;
}

size_t utf8_complete_len(const char *s, size_t len) {
    const unsigned char *u = (const unsigned char *)s;
    for (size_t back = 1; back <= 3 && back <= len; back++) {
        size_t i = len - back;
        if ((u[i] & 0xC0) != 0x80)
            return utf8_cut_at_end(u + i, back) ? i : len;
    }
    return len;
}

void utf8_sanitize(char *s) {
    unsigned char *u = (unsigned char *)s;
    size_t len = strlen(s);
    for (size_t i = 0; i < len;) {
        size_t n = utf8_char_len(u + i, len - i);
        if (n == 0 && utf8_cut_at_end(u + i, len - i)) {
            u[i] = '\0'; /* a character cut at the end by a bounded copy */
            break;
        }
        if (n == 0) {
            u[i] = '?';
            n = 1;
        }
        i += n;
    }
}

void sha256_hex(const void *buf, size_t len, char out[65]) {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    EVP_Digest(buf, len, md, &mdlen, EVP_sha256(), NULL);
    hex_bytes(md, mdlen < 32 ? mdlen : 32, out);
    out[2 * (mdlen < 32 ? mdlen : 32)] = '\0';
}

int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void format_time_ms(int64_t ms, char *out, size_t size) {
    time_t sec = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&sec, &tm);
    snprintf(out, size, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
             tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(ms % 1000));
}
