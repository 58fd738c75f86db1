/* Leveled logging to stderr, shared by every helmq program.
 *
 * The macros test the level before formatting anything, so a disabled debug
 * line costs one comparison. Lines about a command carry its context as
 * key=value pairs (commandId, key, topic/partition/offset) so that one grep
 * follows a command through the worker. */
#ifndef HELMQ_LOG_H
#define HELMQ_LOG_H

#include <stddef.h>

typedef enum log_level {
    LOG_LEVEL_ERROR = 0,
    LOG_LEVEL_WARN = 1,
    LOG_LEVEL_INFO = 2,
    LOG_LEVEL_DEBUG = 3
} log_level_t;

extern log_level_t log_level;

/* Sets the program name printed on each line and the level from a name
 * ("error", "warn", "info", "debug"); returns -1 for an unknown name. */
int log_init(const char *program, const char *level);

/* Writes one line: the prefix (time, program, pid, level) and the message,
 * escaped with log_escape and cut (marked with "…") when longer than the
 * line buffer. Every interpolated field is escaped by this, whatever its
 * source, so each call is exactly one line. */
void log_write(log_level_t level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Escapes in[0..len) into out (size bytes with the NUL): newline, carriage
 * return, tab and backslash as \n \r \t \\, other C0 controls, DEL and
 * each byte that is not UTF-8 as \xNN, C1 controls, U+2028/U+2029 and the
 * bidirectional controls as \uNNNN; other text unchanged. It stops before an
 * escape or a character that would not fit and then sets *cut (cut may be
 * NULL). Returns the length written. */
size_t log_escape(char *out, size_t size, const char *in, size_t len, int *cut);

#define log_error(...)                                                                                       \
    do {                                                                                                     \
        if (log_level >= LOG_LEVEL_ERROR)                                                                    \
            log_write(LOG_LEVEL_ERROR, __VA_ARGS__);                                                         \
    } while (0)
#define log_warn(...)                                                                                        \
    do {                                                                                                     \
        if (log_level >= LOG_LEVEL_WARN)                                                                     \
            log_write(LOG_LEVEL_WARN, __VA_ARGS__);                                                          \
    } while (0)
#define log_info(...)                                                                                        \
    do {                                                                                                     \
        if (log_level >= LOG_LEVEL_INFO)                                                                     \
            log_write(LOG_LEVEL_INFO, __VA_ARGS__);                                                          \
    } while (0)
#define log_debug(...)                                                                                       \
    do {                                                                                                     \
        if (log_level >= LOG_LEVEL_DEBUG)                                                                    \
            log_write(LOG_LEVEL_DEBUG, __VA_ARGS__);                                                         \
    } while (0)

#endif
