/* Option parsing from a table: defaults, then environment, then flags. */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

extern char **environ;

static int opt_count(const config_opt_t *opts) {
    int n = 0;
    while (opts[n].name)
        n++;
    return n;
}

static int check_type(const config_opt_t *o, const char *v, const char *from, char *errstr,
                      size_t errstr_size) {
    char *end;
    if (o->type == CONFIG_INT) {
        errno = 0;
        long x = strtol(v, &end, 10);
        (void)x;
        if (errno || end == v || *end) {
            snprintf(errstr, errstr_size, "%s: --%s expects an integer, not \"%s\"", from, o->name, v);
            return -1;
        }
    } else if (o->type == CONFIG_BOOL) {
        if (strcmp(v, "true") && strcmp(v, "false") && strcmp(v, "1") && strcmp(v, "0")) {
            snprintf(errstr, errstr_size, "%s: --%s expects true or false, not \"%s\"", from, o->name, v);
            return -1;
        }
    }
    return 0;
}

static int set_value(config_t *c, int i, const char *v) {
    char *copy = strdup(v);
    if (!copy)
        return -1;
    free(c->values[i]);
    c->values[i] = copy;
    return 0;
}

static int add_kafka_prop(config_t *c, const char *kv, char *errstr, size_t errstr_size) {
    if (!strchr(kv, '=') || kv[0] == '=') {
        snprintf(errstr, errstr_size, "-X expects key=value, not \"%s\"", kv);
        return -1;
    }
    char **p = realloc(c->kafka_props, sizeof(*p) * (size_t)(c->kafka_count + 1));
    if (!p)
        return -1;
    c->kafka_props = p;
    p[c->kafka_count] = strdup(kv);
    return p[c->kafka_count++] ? 0 : -1;
}

int config_parse(config_t *c, const config_opt_t *opts, int argc, char **argv, int first, char *errstr,
                 size_t errstr_size) {
    int n = opt_count(opts);
    memset(c, 0, sizeof(*c));
    c->opts = opts;
    c->values = calloc((size_t)n + 1, sizeof(char *));
    c->args = calloc((size_t)argc + 1, sizeof(char *));
    if (!c->values || !c->args)
        return -1;
    for (int i = 0; i < n; i++) {
        const char *e = opts[i].env ? getenv(opts[i].env) : NULL;
        if (e && *e) {
            if (check_type(&opts[i], e, opts[i].env, errstr, errstr_size) < 0 || set_value(c, i, e) < 0)
                return -1;
        }
    }
    /* HELMQ_KAFKA_FOO_BAR=x becomes foo.bar=x. */
    for (char **ep = environ; ep && *ep; ep++) {
        if (strncmp(*ep, "HELMQ_KAFKA_", 12) != 0)
            continue;
        char *kv = strdup(*ep + 12);
        if (!kv)
            return -1;
        for (char *p = kv; *p && *p != '='; p++)
            *p = *p == '_' ? '.' : (char)tolower((unsigned char)*p);
        int rc = add_kafka_prop(c, kv, errstr, errstr_size);
        free(kv);
        if (rc < 0)
            return -1;
    }
    int only_args = 0;
    for (int a = first; a < argc; a++) {
        char *arg = argv[a];
        if (only_args || arg[0] != '-' || strcmp(arg, "-") == 0) {
            c->args[c->nargs++] = arg;
            continue;
        }
        if (strcmp(arg, "--") == 0) {
            only_args = 1;
            continue;
        }
        if (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0)
            return CONFIG_HELP;
        if (strcmp(arg, "-X") == 0 || strcmp(arg, "--kafka") == 0) {
            if (a + 1 >= argc) {
                snprintf(errstr, errstr_size, "%s needs key=value", arg);
                return -1;
            }
            if (add_kafka_prop(c, argv[++a], errstr, errstr_size) < 0)
                return -1;
            continue;
        }
        const char *inline_value = NULL;
        int idx = -1;
        if (arg[1] == '-') {
            const char *name = arg + 2;
            const char *eq = strchr(name, '=');
            size_t len = eq ? (size_t)(eq - name) : strlen(name);
            inline_value = eq ? eq + 1 : NULL;
            for (int i = 0; i < n; i++)
                if (strlen(opts[i].name) == len && strncmp(opts[i].name, name, len) == 0)
                    idx = i;
        } else if (arg[2] == '\0') {
            for (int i = 0; i < n; i++)
                if (opts[i].short_name == arg[1])
                    idx = i;
        }
        if (idx < 0) {
            snprintf(errstr, errstr_size, "unknown option %s (see --help)", arg);
            return -1;
        }
        const config_opt_t *o = &opts[idx];
        const char *v = inline_value;
        if (!v && o->type == CONFIG_BOOL)
            v = "true";
        if (!v) {
            if (a + 1 >= argc) {
                snprintf(errstr, errstr_size, "option --%s needs a value", o->name);
                return -1;
            }
            v = argv[++a];
        }
        if (check_type(o, v, "flag", errstr, errstr_size) < 0 || set_value(c, idx, v) < 0)
            return -1;
    }
    for (int i = 0; i < n; i++)
        if (!c->values[i] && opts[i].def && set_value(c, i, opts[i].def) < 0)
            return -1;
    return 0;
}

void config_free(config_t *c) {
    if (!c)
        return;
    if (c->values && c->opts)
        for (int i = 0; c->opts[i].name; i++)
            free(c->values[i]);
    free(c->values);
    for (int i = 0; i < c->kafka_count; i++)
        free(c->kafka_props[i]);
    free(c->kafka_props);
    free(c->args);
    memset(c, 0, sizeof(*c));
}

static int find(const config_t *c, const char *name) {
    for (int i = 0; c->opts[i].name; i++)
        if (strcmp(c->opts[i].name, name) == 0)
            return i;
    fprintf(stderr, "internal error: no option named %s\n", name);
    abort();
}

const char *config_get(const config_t *c, const char *name) {
    return c->values[find(c, name)];
}

long config_int(const config_t *c, const char *name) {
    const char *v = config_get(c, name);
    return v ? strtol(v, NULL, 10) : 0;
}

int config_bool(const config_t *c, const char *name) {
    const char *v = config_get(c, name);
    return v && (strcmp(v, "true") == 0 || strcmp(v, "1") == 0);
}

int config_given(const config_t *c, const char *name) {
    int i = find(c, name);
    const char *e = c->opts[i].env ? getenv(c->opts[i].env) : NULL;
    if (e && *e)
        return 1;
    return c->values[i] && (!c->opts[i].def || strcmp(c->values[i], c->opts[i].def) != 0);
}

static const char *type_word(const config_opt_t *o) {
    return o->type == CONFIG_INT ? "N" : o->type == CONFIG_BOOL ? "" : "VALUE";
}

void config_usage(const config_opt_t *opts, FILE *out) {
    for (int i = 0; opts[i].name; i++) {
        const config_opt_t *o = &opts[i];
        char flag[96];
        if (o->short_name)
            snprintf(flag, sizeof(flag), "-%c, --%s %s", o->short_name, o->name, type_word(o));
        else
            snprintf(flag, sizeof(flag), "    --%s %s", o->name, type_word(o));
        fprintf(out, "  %-34s %s", flag, o->help);
        if (o->env || o->def) {
            fprintf(out, " [");
            if (o->env)
                fprintf(out, "env %s", o->env);
            if (o->def)
                fprintf(out, "%sdefault: %s", o->env ? "; " : "", *o->def ? o->def : "\"\"");
            fprintf(out, "]");
        }
        fprintf(out, "\n");
    }
    fprintf(out, "  %-34s %s\n", "-X, --kafka KEY=VALUE",
            "librdkafka property, passed through unchanged [env HELMQ_KAFKA_<KEY>, dots as underscores]");
    fprintf(out, "  %-34s %s\n", "-h, --help", "show this help and exit");
}

void config_usage_markdown(const config_opt_t *opts, FILE *out) {
    fprintf(out, "| flag | environment | default | meaning |\n|---|---|---|---|\n");
    for (int i = 0; opts[i].name; i++) {
        const config_opt_t *o = &opts[i];
        char flag[64] = "", env[96] = "", def[1024] = "";
        if (o->short_name)
            snprintf(flag, sizeof(flag), " (`-%c`)", o->short_name);
        if (o->env)
            snprintf(env, sizeof(env), "`%s`", o->env);
        if (o->def)
            snprintf(def, sizeof(def), *o->def ? "`%s`" : "(empty)", o->def);
        fprintf(out, "| `--%s`%s | %s | %s | %s |\n", o->name, flag, env, def, o->help);
    }
}
