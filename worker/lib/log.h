/* Leveled logging to stderr, shared by every helmq program.
 *
 * The macros test the level before formatting anything, so a disabled debug
 * line costs one comparison. Lines about a command carry its context as
 * key=value pairs (commandId, key, topic/partition/offset) so that one grep
 * follows a command through the worker. */
#ifndef HELMQ_LOG_H
#define HELMQ_LOG_H

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

void log_write(log_level_t level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

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
