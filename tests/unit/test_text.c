/* Unit tests of text from outside: log lines escaped so no field can break or
 * forge a line, UTF-8 cut only between characters, and UUIDs in their
 * canonical lower case. */
#include "cmddoc.h"
#include "log.h"
#include "tap.h"
#include "util.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *escaped(const char *in, size_t len, size_t size) {
    static char out[256];
    log_escape(out, size, in, len, NULL);
    return out;
}

/* Runs log_write with stderr sent to a file; returns what it wrote. */
static const char *logged(const char *name) {
    static char buf[16384];
    FILE *f = tmpfile();
    int saved = dup(STDERR_FILENO);
    dup2(fileno(f), STDERR_FILENO);
    log_write(LOG_LEVEL_INFO, "release %s: done", name);
    dup2(saved, STDERR_FILENO);
    close(saved);
    rewind(f);
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

static int count_char(const char *s, char ch) {
    int n = 0;
    for (; *s; s++)
        n += *s == ch;
    return n;
}

static void test_escape(void) {
    is_str(escaped("plain text: café ✓", strlen("plain text: café ✓"), 256), "plain text: café ✓",
           "printable ASCII and UTF-8 pass unchanged");
    is_str(escaped("a\nb\rc\td\\e", 9, 256), "a\\nb\\rc\\td\\\\e",
           "newline, CR, tab, backslash: \\n \\r \\t \\\\");
    is_str(escaped("\x1b[2J\x7f\x01", 6, 256), "\\x1b[2J\\x7f\\x01", "ESC, DEL, other C0 controls: \\xNN");
    is_str(escaped("a\0b", 3, 256), "a\\x00b", "NUL inside the length: \\x00");
    is_str(escaped("caf\xe9\xff", 5, 256), "caf\\xe9\\xff", "invalid UTF-8 bytes: \\xNN");
    is_str(escaped("\xc0\xaf", 2, 256), "\\xc0\\xaf", "an overlong form is not UTF-8");
    is_str(escaped("\xed\xa0\x80", 3, 256), "\\xed\\xa0\\x80", "a surrogate is not UTF-8");
    is_str(escaped("d\xc3", 2, 256), "d\\xc3", "a character cut at the end: its bytes in hex");
    is_str(escaped("abc\xe2\x80\xaetxt", 9, 256), "abc\\u202etxt", "a bidirectional override: \\u202e");
    is_str(escaped("a\xe2\x80\xa8"
                   "b\xc2\x85",
                   7, 256),
           "a\\u2028b\\u0085", "U+2028 and NEL (C1) line breaks: \\uNNNN");
    is_str(escaped("\xf0\x9f\x98\x80", 4, 256), "\xf0\x9f\x98\x80", "a 4-byte character passes");
    int cut = 0;
    char small[8];
    size_t n = log_escape(small, sizeof(small), "ab\ncd\nef", 8, &cut);
    is_str(small, "ab\\ncd", "a bounded escape stops before what does not fit");
    is_int(n, 6, "and returns the length written");
    ok(cut, "and says it cut");
    log_escape(small, sizeof(small), "abcd\xc3\xa9\xc3\xa9", 8, &cut);
    is_str(small, "abcd\xc3\xa9", "never in the middle of a character");
}

static void test_log_line(void) {
    const char *hostile =
        "x\n2026-01-01T00:00:00.000Z helmq-worker[1] info: commandId=forged: done: succeeded";
    const char *line = logged(hostile);
    is_int(count_char(line, '\n'), 1, "a name with a newline gives one line");
    ok(strstr(line, "release x\\n2026-01-01T00:00:00.000Z helmq-worker[1] info") != NULL,
       "the newline is written as \\n");
    char *big = malloc(20001);
    for (int i = 0; i < 20000; i += 2)
        memcpy(big + i, "\xc3\xa9", 2);
    big[20000] = '\0';
    line = logged(big);
    size_t len = strlen(line);
    is_int(count_char(line, '\n'), 1, "an over-long message gives one line");
    ok(len > 4 && strcmp(line + len - 4, "\xe2\x80\xa6\n") == 0, "cut, and marked with an ellipsis");
    ok(strstr(line, "\\x") == NULL, "cut between characters (no stray byte escaped)");
    free(big);
    char ctl[40];
    for (int i = 1; i < 32; i++)
        ctl[i - 1] = (char)i;
    ctl[31] = '\0';
    line = logged(ctl);
    is_int(count_char(line, '\n'), 1, "every C0 control in one message: one line");
    int raw = 0;
    for (const char *p = line; *p && *p != '\n'; p++)
        raw += (unsigned char)*p < 0x20;
    is_int(raw, 0, "and no control byte written raw");
}

static void test_utf8(void) {
    char id[96];
    char src[200];
    memset(src, 'd', 94);
    strcpy(src + 94, "\xc3\xa9"); /* 96 bytes: the 95-byte cut falls inside the é */
    ok(utf8_copy(id, sizeof(id), src) == 1, "a 96-byte id does not fit 96 bytes with the NUL");
    is_int(strlen(id), 94, "it is cut before the split character");
    ok(utf8_copy(id, sizeof(id), "8a4c7a3e-6b47-4c5e-9d2f-6f3f0f1c2b11") == 0, "a UUID fits");
    is_str(id, "8a4c7a3e-6b47-4c5e-9d2f-6f3f0f1c2b11", "copied whole");
    memset(src, 'c', 150);
    src[150] = '\0';
    utf8_copy(id, sizeof(id), src);
    is_int(strlen(id), 95, "ASCII fills the buffer");
    strcpy(src, "ab\xe2\x82");
    utf8_sanitize(src);
    is_str(src, "ab", "sanitize drops a character cut at the end");
    strcpy(src, "caf\xe9 \xff ok \xc3\xa9");
    utf8_sanitize(src);
    is_str(src, "caf? ? ok \xc3\xa9", "and replaces other invalid bytes with ?");
    is_int(utf8_prefix_len("a\xc3\xa9z", 4, 2), 1, "prefix of at most 2 bytes ends before the é");
    is_int(utf8_complete_len("ab\xe2\x82", 4), 2, "complete length drops a cut 3-byte character");
    is_int(utf8_complete_len("ab\xc3\xa9", 4), 4, "and keeps a whole one");
    is_int(utf8_complete_len("ab\xff", 3), 3, "and an invalid byte (not a cut character)");
    is_int(utf8_char_len((const unsigned char *)"\xf4\x90\x80\x80", 4), 0, "beyond U+10FFFF is invalid");
}

static void test_canonical_ids(void) {
    char u[] = "3F1D2C4B-5A69-4E7F-8A9B-0C1D2E3F4A5B";
    ok(uuid_lower(u), "uuid_lower accepts an upper-case UUID");
    is_str(u, "3f1d2c4b-5a69-4e7f-8a9b-0c1d2e3f4a5b", "and lowers it");
    char bad[] = "NOT-A-UUID";
    ok(!uuid_lower(bad) && strcmp(bad, "NOT-A-UUID") == 0, "anything else is left alone");
    json_t *doc = json_pack("{s:s,s:s,s:s,s:s,s:s}", "commandId", "8A4C7A3E-6B47-4C5E-9D2F-6F3F0F1C2B11",
                            "tenantId", "3F1D2C4B-5a69-4E7F-8A9B-0C1D2E3F4A5B", "releaseId",
                            "ABCDEF01-2345-4789-8BCD-EF0123456789", "namespace", "NS", "releaseName", "ABC");
    cmddoc_canonical_ids(doc);
    is_str(json_string_value(json_object_get(doc, "commandId")), "8a4c7a3e-6b47-4c5e-9d2f-6f3f0f1c2b11",
           "commandId in lower case");
    is_str(json_string_value(json_object_get(doc, "tenantId")), "3f1d2c4b-5a69-4e7f-8a9b-0c1d2e3f4a5b",
           "tenantId in lower case");
    is_str(json_string_value(json_object_get(doc, "releaseId")), "abcdef01-2345-4789-8bcd-ef0123456789",
           "releaseId in lower case");
    is_str(json_string_value(json_object_get(doc, "releaseName")), "ABC", "other fields untouched");
    json_object_set_new(doc, "tenantId", json_string("T-NOT-A-UUID"));
    json_object_set_new(doc, "releaseId", json_null());
    cmddoc_canonical_ids(doc);
    is_str(json_string_value(json_object_get(doc, "tenantId")), "T-NOT-A-UUID",
           "an invalid tenantId is left for validation to name");
    ok(json_is_null(json_object_get(doc, "releaseId")), "a null releaseId stays null");
    json_decref(doc);
}

int main(void) {
    log_init("test", "info");
    test_escape();
    test_log_line();
    test_utf8();
    test_canonical_ids();
    return tap_done();
}
