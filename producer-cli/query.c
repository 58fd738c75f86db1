/* helmq releases get|list|history|summary: the seed's queries against the
 * projection, printed as JSON with the seed's field names (or as a table for
 * people). Parameters travel as query parameters, never inside SQL text. */
#include "cli.h"
#include "config.h"
#include "util.h"

#include <jansson.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const config_opt_t query_opts[] = {
    {"database-url", 'd', "HELMQ_DATABASE_URL", CONFIG_STRING, "dbname=helmq",
     "PostgreSQL connection string or URI"},
    {"output", 'o', "HELMQ_OUTPUT", CONFIG_STRING, "json", "json or table"},
    {"tenant", 't', "HELMQ_TENANT_ID", CONFIG_STRING, NULL,
     "tenant UUID: list's tenant, summary's tenant (all without it), and the session's tenant scope "
     "(helmq.tenant_id) for row-level security"},
    {"limit", 0, NULL, CONFIG_INT, NULL,
     "history: one page of at most this many revisions (1..1000); the next page's --after goes to stderr"},
    {"after", 0, NULL, CONFIG_INT, NULL,
     "history: the revisions after this one (a page: --limit, default 100)"},
    {NULL, 0, NULL, 0, NULL, NULL},
};

static void query_usage(void) {
    printf(
        "Usage: helmq releases get RELEASE_ID        a release by id\n"
        "       helmq releases list --tenant TENANT   a tenant's releases, current status and revision\n"
        "       helmq releases history RELEASE_ID [--limit N] [--after REVISION]\n"
        "                                            the revision history of a release (whole, or a page)\n"
        "       helmq releases summary [--tenant TENANT]\n"
        "                                            counts by status, by chart, and by status and\n"
        "                                            chart together (groups), of one tenant or of all\n"
        "                                            (administrators)\n\n"
        "Reads the projection (schema helmq). Exit codes: 0 found, 1 not found or database error,\n"
        "2 invalid input.\n\nOptions:\n");
    config_usage(query_opts, stdout);
}

static void print_cell(const json_t *v, int width) {
    char buf[256];
    if (json_is_string(v))
        snprintf(buf, sizeof(buf), "%s", json_string_value(v));
    else if (json_is_integer(v))
        snprintf(buf, sizeof(buf), "%lld", (long long)json_integer_value(v));
    else if (json_is_null(v) || !v)
        snprintf(buf, sizeof(buf), "-");
    else {
        char *d = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
        snprintf(buf, sizeof(buf), "%s", d ? d : "?");
        free(d);
    }
    printf("%-*s", width, buf);
}

/* Prints rows (objects) as a table of the given columns. */
static void print_table(const json_t *rows, const char *const *cols, const int *widths, int ncols) {
    for (int i = 0; i < ncols; i++)
        printf("%-*s", widths[i], cols[i]);
    printf("\n");
    size_t k;
    const json_t *row;
    json_array_foreach(rows, k, row) {
        for (int i = 0; i < ncols; i++)
            print_cell(json_object_get(row, cols[i]), widths[i]);
        printf("\n");
    }
}

static void print_result(const char *what, json_t *doc, int table) {
    if (!table) {
        char *out = json_dumps(doc, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        printf("%s\n", out);
        free(out);
        return;
    }
    static const char *const rel_cols[] = {"releaseId", "namespace",    "releaseName",
                                           "chartName", "chartVersion", "appVersion",
                                           "status",    "revision",     "updatedAt"};
    static const int rel_w[] = {38, 16, 20, 20, 14, 12, 14, 10, 34};
    static const char *const hist_cols[] = {"revision",    "chartVersion", "appVersion", "status",
                                            "performedBy", "createdAt",    "description"};
    static const int hist_w[] = {10, 14, 12, 14, 14, 34, 40};
    if (strcmp(what, "get") == 0) {
        json_t *rows = json_pack("[O]", doc);
        print_table(rows, rel_cols, rel_w, 9);
        json_decref(rows);
    } else if (strcmp(what, "list") == 0) {
        print_table(doc, rel_cols, rel_w, 9);
    } else if (strcmp(what, "history") == 0) {
        print_table(doc, hist_cols, hist_w, 7);
    } else {
        const char *key;
        json_t *v;
        printf("total %lld\n\nstatus              count\n",
               (long long)json_integer_value(json_object_get(doc, "total")));
        json_object_foreach(json_object_get(doc, "byStatus"), key, v)
            printf("%-20s%lld\n", key, (long long)json_integer_value(v));
        printf("\nchart                         count\n");
        json_object_foreach(json_object_get(doc, "byChart"), key, v)
            printf("%-30s%lld\n", key, (long long)json_integer_value(v));
        printf("\nstatus              chart                         count\n");
        size_t k;
        json_array_foreach(json_object_get(doc, "groups"), k, v) {
            print_cell(json_object_get(v, "status"), 20);
            print_cell(json_object_get(v, "chartName"), 30);
            printf("%lld\n", (long long)json_integer_value(json_object_get(v, "count")));
        }
    }
}

int cli_releases(int argc, char **argv) {
    char errstr[512];
    config_t cfg;
    int rc = config_parse(&cfg, query_opts, argc, argv, 2, errstr, sizeof(errstr));
    if (rc == CONFIG_HELP || (rc == 0 && cfg.nargs == 0)) {
        query_usage();
        config_free(&cfg);
        return rc == CONFIG_HELP ? 0 : EXIT_USAGE;
    }
    if (rc < 0) {
        fprintf(stderr, "helmq releases: %s\n", errstr);
        config_free(&cfg);
        return EXIT_USAGE;
    }
    const char *what = cfg.args[0];
    const char *output = config_get(&cfg, "output");
    const char *tenant = config_get(&cfg, "tenant");
    const char *sql = NULL, *param = NULL, *limit = config_get(&cfg, "limit"),
               *after = config_get(&cfg, "after");
    int want_args = 2, paged = 0;
    if (strcmp(what, "get") == 0) {
        sql = "SELECT helmq.release_get($1::uuid)";
    } else if (strcmp(what, "history") == 0 && (limit || after)) {
        paged = 1; /* sql/0004_projection_history_paging.sql */
        sql = "SELECT p.entries, p.next_after FROM helmq.releases r CROSS JOIN LATERAL "
              "helmq.release_history_page(r.release_id, $2::integer, COALESCE($3::integer, 100)) p "
              "WHERE r.release_id = $1::uuid";
        if ((limit && (config_int(&cfg, "limit") < 1 || config_int(&cfg, "limit") > 1000)) ||
            (after && config_int(&cfg, "after") < 0)) {
            fprintf(stderr,
                    "helmq releases history: --limit must be 1..1000, --after a revision (0 or more)\n");
            config_free(&cfg);
            return EXIT_USAGE;
        }
    } else if (strcmp(what, "history") == 0) {
        sql = "SELECT CASE WHEN EXISTS (SELECT 1 FROM helmq.releases WHERE release_id = $1::uuid)"
              " THEN helmq.release_history($1::uuid) END";
    } else if (strcmp(what, "list") == 0) {
        sql = "SELECT helmq.releases_by_tenant($1::uuid)";
        want_args = 1;
        param = tenant;
        if (!tenant) {
            fprintf(stderr, "helmq releases list: --tenant TENANT_ID is required\n");
            config_free(&cfg);
            return EXIT_USAGE;
        }
    } else if (strcmp(what, "summary") == 0) {
        sql = "SELECT helmq.release_summary($1::uuid)"; /* NULL: every tenant */
        want_args = 1;
        param = tenant;
    } else {
        fprintf(stderr, "helmq releases: unknown query \"%s\" (get, list, history, summary)\n", what);
        config_free(&cfg);
        return EXIT_USAGE;
    }
    if (cfg.nargs != want_args || (strcmp(output, "json") && strcmp(output, "table"))) {
        fprintf(stderr, "helmq releases %s: %s\n", what,
                cfg.nargs != want_args ? (want_args == 2 ? "expects one RELEASE_ID" : "takes no argument")
                                       : "--output must be json or table");
        config_free(&cfg);
        return EXIT_USAGE;
    }
    if (want_args == 2)
        param = cfg.args[1];
    if ((param && !uuid_valid(param)) || (tenant && !uuid_valid(tenant))) {
        fprintf(stderr, "helmq releases %s: \"%s\" is not a UUID\n", what,
                param && !uuid_valid(param) ? param : tenant);
        config_free(&cfg);
        return EXIT_USAGE;
    }
    PGconn *c = PQconnectdb(config_get(&cfg, "database-url"));
    if (PQstatus(c) != CONNECTION_OK) {
        fprintf(stderr, "helmq releases: cannot connect to PostgreSQL: %s", PQerrorMessage(c));
        PQfinish(c);
        config_free(&cfg);
        return EXIT_RUNTIME;
    }
    if (tenant) {
        const char *p[1] = {tenant};
        PQclear(
            PQexecParams(c, "SELECT set_config('helmq.tenant_id', $1, false)", 1, NULL, p, NULL, NULL, 0));
    }
    const char *params[3] = {param, after, limit};
    /* every query takes $1; a page of a history $2 and $3 too */
    PGresult *r = PQexecParams(c, sql, paged ? 3 : 1, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        fprintf(stderr, "helmq releases %s: %s", what, PQresultErrorMessage(r));
        rc = EXIT_RUNTIME;
    } else if (PQntuples(r) != 1 || PQgetisnull(r, 0, 0)) {
        fprintf(stderr, "helmq releases %s: release %s not found\n", what, param ? param : "");
        rc = EXIT_RUNTIME;
    } else {
        json_t *doc = json_loads(PQgetvalue(r, 0, 0), 0, NULL);
        print_result(what, doc, strcmp(output, "table") == 0);
        json_decref(doc);
        if (paged && !PQgetisnull(r, 0, 1))
            fprintf(stderr, "helmq releases history: more follow: --after %s\n", PQgetvalue(r, 0, 1));
        rc = 0;
    }
    PQclear(r);
    PQfinish(c);
    config_free(&cfg);
    return rc;
}
