/* helmq namespaces get|list|release: which tenant owns a namespace, and the
 * operator's release of a claim (sql/0001_worker_baseline.sql). get and list read the
 * projection's view helmq.namespace_claims, scoped like the releases
 * queries; release calls helmq_worker.namespace_release, so it needs the
 * worker's database credentials (the owner of schema helmq_worker). */
#include "cli.h"
#include "config.h"
#include "util.h"
#include "validate.h"

#include <jansson.h>
#include <libpq-fe.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const config_opt_t ns_opts[] = {
    {"database-url", 'd', "HELMQ_DATABASE_URL", CONFIG_STRING, "dbname=helmq",
     "PostgreSQL connection string or URI"},
    {"output", 'o', "HELMQ_OUTPUT", CONFIG_STRING, "json", "json or table"},
    {"tenant", 't', "HELMQ_TENANT_ID", CONFIG_STRING, NULL,
     "tenant UUID: list's tenant, and the session's tenant scope (helmq.tenant_id) for row-level security"},
    {"performed-by", 'u', "HELMQ_PERFORMED_BY", CONFIG_STRING, NULL,
     "who releases a claim, recorded with it (default: the OS user)"},
    {NULL, 0, NULL, 0, NULL, NULL},
};

static void ns_usage(void) {
    printf("Usage: helmq namespaces get NAMESPACE       the tenant that owns it, and its live releases\n"
           "       helmq namespaces list [--tenant T]   the claimed namespaces (of one tenant)\n"
           "       helmq namespaces release NAMESPACE   end its tenant's claim (operators)\n\n"
           "A namespace belongs to the tenant whose install first claimed it. The claim never ends by\n"
           "itself: release it only after deleting the namespace in the cluster (kubectl delete\n"
           "namespace NAMESPACE), so that nothing of its tenant is left for the next one. release is\n"
           "refused while the namespace holds a live release or a command of it is in progress, and\n"
           "needs the worker's database credentials. Exit codes: 0 done, 1 not found, refused or\n"
           "database error, 2 invalid input.\n\nOptions:\n");
    config_usage(ns_opts, stdout);
}

static void print_claims(json_t *doc, int table) {
    if (!table) {
        char *out = json_dumps(doc, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        printf("%s\n", out);
        free(out);
        return;
    }
    json_t *rows = json_is_array(doc) ? json_incref(doc) : json_pack("[O]", doc);
    printf("%-40s%-38s%-38s%-34s%s\n", "namespace", "tenantId", "claimedBy", "claimedAt", "liveReleases");
    size_t i;
    const json_t *row;
    json_array_foreach(rows, i, row) {
        const json_t *live = json_object_get(row, "liveReleases");
        char count[32] = "-"; /* a released claim has none */
        if (live)
            snprintf(count, sizeof(count), "%lld", (long long)json_integer_value(live));
        printf("%-40s%-38s%-38s%-34s%s\n", json_string_value(json_object_get(row, "namespace")),
               json_string_value(json_object_get(row, "tenantId")),
               json_string_value(json_object_get(row, "claimedBy")),
               json_string_value(json_object_get(row, "claimedAt")), count);
    }
    json_decref(rows);
}

int cli_namespaces(int argc, char **argv) {
    char errstr[512];
    config_t cfg;
    int rc = config_parse(&cfg, ns_opts, argc, argv, 2, errstr, sizeof(errstr));
    if (rc == CONFIG_HELP || (rc == 0 && cfg.nargs == 0)) {
        ns_usage();
        config_free(&cfg);
        return rc == CONFIG_HELP ? 0 : EXIT_USAGE;
    }
    if (rc < 0) {
        fprintf(stderr, "helmq namespaces: %s\n", errstr);
        config_free(&cfg);
        return EXIT_USAGE;
    }
    const char *what = cfg.args[0];
    const char *output = config_get(&cfg, "output");
    const char *tenant = config_get(&cfg, "tenant");
    const char *sql;
    int want_args = 2;
    if (strcmp(what, "get") == 0) {
        sql = "SELECT helmq.namespace_json(n) FROM helmq.namespace_claims n WHERE n.namespace = $1";
    } else if (strcmp(what, "list") == 0) {
        sql = "SELECT helmq.namespaces_list($1::uuid)";
        want_args = 1;
    } else if (strcmp(what, "release") == 0) {
        sql = "SELECT helmq_worker.namespace_release($1, $2)";
    } else {
        fprintf(stderr, "helmq namespaces: unknown action \"%s\" (get, list, release)\n", what);
        config_free(&cfg);
        return EXIT_USAGE;
    }
    if (cfg.nargs != want_args || (strcmp(output, "json") && strcmp(output, "table"))) {
        fprintf(stderr, "helmq namespaces %s: %s\n", what,
                cfg.nargs != want_args ? (want_args == 2 ? "expects one NAMESPACE" : "takes no argument")
                                       : "--output must be json or table");
        config_free(&cfg);
        return EXIT_USAGE;
    }
    validate_error_t verr;
    if (want_args == 2 && validate_namespace(cfg.args[1], &verr) < 0) {
        fprintf(stderr, "helmq namespaces %s: %s\n", what, verr.message);
        config_free(&cfg);
        return EXIT_USAGE;
    }
    if (tenant && !uuid_valid(tenant)) {
        fprintf(stderr, "helmq namespaces %s: \"%s\" is not a UUID\n", what, tenant);
        config_free(&cfg);
        return EXIT_USAGE;
    }
    const char *by = config_get(&cfg, "performed-by");
    if (!by) {
        struct passwd *pw = getpwuid(geteuid());
        by = pw ? pw->pw_name : "unknown";
    }
    PGconn *c = PQconnectdb(config_get(&cfg, "database-url"));
    if (PQstatus(c) != CONNECTION_OK) {
        fprintf(stderr, "helmq namespaces: cannot connect to PostgreSQL: %s", PQerrorMessage(c));
        PQfinish(c);
        config_free(&cfg);
        return EXIT_RUNTIME;
    }
    if (tenant) {
        const char *p[1] = {tenant};
        PQclear(
            PQexecParams(c, "SELECT set_config('helmq.tenant_id', $1, false)", 1, NULL, p, NULL, NULL, 0));
    }
    const char *params[2] = {want_args == 2 ? cfg.args[1] : tenant, by};
    int nparams = strcmp(what, "release") == 0 ? 2 : 1;
    PGresult *r = PQexecParams(c, sql, nparams, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        /* The refusal's message names the reason (not claimed, live
         * releases, commands in progress); its hint says what to do. */
        const char *msg = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
        const char *hint = PQresultErrorField(r, PG_DIAG_MESSAGE_HINT);
        fprintf(stderr, "helmq namespaces %s: %s%s%s\n", what, msg ? msg : PQresultErrorMessage(r),
                hint ? ": " : "", hint ? hint : "");
        rc = EXIT_RUNTIME;
    } else if (PQntuples(r) != 1 || PQgetisnull(r, 0, 0)) {
        fprintf(stderr, "helmq namespaces %s: namespace %s is not claimed by any tenant%s\n", what,
                cfg.args[1], tenant ? " (or not by this tenant)" : "");
        rc = EXIT_RUNTIME;
    } else {
        json_t *doc = json_loads(PQgetvalue(r, 0, 0), 0, NULL);
        print_claims(doc, strcmp(output, "table") == 0);
        json_decref(doc);
        rc = 0;
    }
    PQclear(r);
    PQfinish(c);
    config_free(&cfg);
    return rc;
}
