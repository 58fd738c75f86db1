/* helm's argument vectors: the operation a command asks for, the worker's
 * follow-up steps (status, atomic rollback, uninstall), the cluster and
 * chart flags; and what helm's error text means (helm_failure_code). Pure
 * string work, no processes: see executor.h. */
#include "executor.h"

#include "log.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <spawn.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

void helm_argv_push(helm_argv_t *a, const char *s) {
    if (a->argc + 2 > a->cap) {
        int cap = a->cap ? a->cap * 2 : 32;
        char **v = realloc(a->argv, sizeof(char *) * (size_t)cap);
        if (!v)
            abort();
        a->argv = v;
        a->cap = cap;
    }
    a->argv[a->argc] = strdup(s);
    if (!a->argv[a->argc])
        abort();
    a->argv[++a->argc] = NULL;
}

void helm_argv_free(helm_argv_t *a) {
    for (int i = 0; i < a->argc; i++)
        free(a->argv[i]);
    free(a->argv);
    memset(a, 0, sizeof(*a));
}

void helm_argv_format(const helm_argv_t *a, char *out, size_t size) {
    size_t n = 0;
    out[0] = '\0';
    for (int i = 0; i < a->argc && n + 1 < size; i++) {
        int quote = strpbrk(a->argv[i], " \t'\"") != NULL || !*a->argv[i];
        int w = snprintf(out + n, size - n, "%s%s%s%s", i ? " " : "", quote ? "'" : "", a->argv[i],
                         quote ? "'" : "");
        if (w < 0)
            break;
        n += (size_t)w;
    }
}

void helm_push_chart(helm_argv_t *a, const char *repo, const char *chart) {
    char ref[2048];
    size_t rl = repo ? strlen(repo) : 0;
    while (rl > 0 && repo[rl - 1] == '/')
        rl--;
    if (rl == 0) {
        helm_argv_push(a, chart);
    } else if (strncmp(repo, "http://", 7) == 0 || strncmp(repo, "https://", 8) == 0) {
        helm_argv_push(a, chart);
        helm_argv_push(a, "--repo");
        helm_argv_push(a, repo);
    } else {
        /* oci://host/path, a directory, or a repository alias: REPO/CHART */
        snprintf(ref, sizeof(ref), "%.*s/%s", (int)rl, repo, chart);
        helm_argv_push(a, ref);
    }
}

static const char *jstr(const json_t *cmd, const char *k) {
    return json_string_value(json_object_get(cmd, k));
}

/* helm acts as the tenant: its service account in the release's namespace
 * (tenant_access.h), when hc->impersonate is set. */
static void push_identity(helm_argv_t *a, const helm_conf_t *hc, const char *ns) {
    char buf[512];
    if (!hc->impersonate || !ns)
        return;
    /* The user alone: for a service account the API server adds its groups
     * (system:serviceaccounts, system:serviceaccounts:NS, system:authenticated)
     * itself, so the worker needs "impersonate" on that service account only,
     * not on groups (docs/rbac/). */
    snprintf(buf, sizeof(buf), "system:serviceaccount:%s:%s", ns, hc->tenant_account);
    helm_argv_push(a, "--kube-as-user");
    helm_argv_push(a, buf);
}

void helm_push_cluster(helm_argv_t *a, const helm_conf_t *hc) {
    if (hc->kubeconfig && *hc->kubeconfig) {
        helm_argv_push(a, "--kubeconfig");
        helm_argv_push(a, hc->kubeconfig);
    }
    if (hc->kube_context && *hc->kube_context) {
        helm_argv_push(a, "--kube-context");
        helm_argv_push(a, hc->kube_context);
    }
    if (hc->registry_config && *hc->registry_config) {
        helm_argv_push(a, "--registry-config");
        helm_argv_push(a, hc->registry_config);
    }
}

void helm_argv_operation(helm_argv_t *a, const helm_conf_t *hc, const char *op, const json_t *cmd,
                         const char *values_file, int rollback_to, long timeout_s) {
    char buf[64];
    const char *desc = jstr(cmd, "description");
    int wait_jobs = json_is_true(json_object_get(cmd, "waitForJobs"));
    int chart_op = strcmp(op, "install") == 0 || strcmp(op, "upgrade") == 0;
    helm_argv_push(a, hc->helm);
    helm_argv_push(a, op);
    helm_argv_push(a, jstr(cmd, "releaseName"));
    if (chart_op)
        helm_push_chart(a, hc->chart_repo, jstr(cmd, "chartName"));
    if (strcmp(op, "rollback") == 0 && rollback_to > 0) {
        snprintf(buf, sizeof(buf), "%d", rollback_to);
        helm_argv_push(a, buf);
    }
    helm_argv_push(a, "--namespace");
    helm_argv_push(a, jstr(cmd, "namespace"));
    helm_push_cluster(a, hc);
    push_identity(a, hc, jstr(cmd, "namespace"));
    /* Acting as the tenant, helm may not create namespaces: the worker has
     * set the namespace up before (tenant_access.h). */
    if (strcmp(op, "install") == 0 && !hc->impersonate)
        helm_argv_push(a, "--create-namespace");
    if (chart_op) {
        helm_argv_push(a, "--version");
        helm_argv_push(a, jstr(cmd, "chartVersion"));
        helm_argv_push(a, "--values");
        helm_argv_push(a, values_file);
        if (hc->plain_http)
            helm_argv_push(a, "--plain-http");
    }
    snprintf(buf, sizeof(buf), "%lds", timeout_s);
    helm_argv_push(a, "--timeout");
    helm_argv_push(a, buf);
    /* timeout is the time to wait for the operation to complete: helm waits
     * for the resources (and its own --timeout fires before the worker's
     * kill, which is the backstop). */
    helm_argv_push(a, "--wait");
    if (wait_jobs && strcmp(op, "uninstall") != 0)
        helm_argv_push(a, "--wait-for-jobs");
    /* helm rollback has no --description. */
    if (desc && *desc && strcmp(op, "rollback") != 0) {
        helm_argv_push(a, "--description");
        helm_argv_push(a, desc);
    }
    if (chart_op) {
        helm_argv_push(a, "--output");
        helm_argv_push(a, "json");
    }
}

void helm_argv_simple(helm_argv_t *a, const helm_conf_t *hc, const char *sub, const json_t *cmd, int revision,
                      long timeout_s) {
    char buf[32];
    int status = strcmp(sub, "status") == 0;
    helm_argv_push(a, hc->helm);
    /* The release's state is asked of helm history --max 1: real helm's
     * status -o json leaves out the chart (name, version, appVersion). */
    helm_argv_push(a, status ? "history" : sub);
    helm_argv_push(a, jstr(cmd, "releaseName"));
    if (revision > 0) {
        snprintf(buf, sizeof(buf), "%d", revision);
        helm_argv_push(a, buf);
    }
    helm_argv_push(a, "--namespace");
    helm_argv_push(a, jstr(cmd, "namespace"));
    helm_push_cluster(a, hc);
    push_identity(a, hc, jstr(cmd, "namespace"));
    if (status) {
        helm_argv_push(a, "--max");
        helm_argv_push(a, "1");
        helm_argv_push(a, "--output");
        helm_argv_push(a, "json");
    } else {
        snprintf(buf, sizeof(buf), "%lds", timeout_s);
        helm_argv_push(a, "--timeout");
        helm_argv_push(a, buf);
        if (strcmp(sub, "rollback") == 0 || strcmp(sub, "uninstall") == 0)
            helm_argv_push(a, "--wait");
    }
}

/* Whether text mentions any of the NULL-terminated needles. */
static int mentions(const char *text, const char *const *needles) {
    for (; *needles; needles++)
        if (strstr(text, *needles))
            return 1;
    return 0;
}

const char *helm_failure_code(const char *text) {
    static const char *const timeout[] = {"context deadline exceeded", "timed out waiting for the condition",
                                          NULL};
    static const char *const unreachable[] = {"connection refused",       "no such host",       "i/o timeout",
                                              "connection reset by peer", "server misbehaving", NULL};
    /* An OCI registry's paths are under /v2/; helm names the reference it
     * pulls (oci://...) in its errors. */
    static const char *const registry[] = {"/v2/", "oci://", "failed to do request", NULL};
    static const char *const missing[] = {": not found",
                                          "manifest unknown",
                                          "name unknown",
                                          "chart not found",
                                          "no chart version found",
                                          "no chart name found",
                                          NULL};
    if (!text)
        return "HELM_FAILED";
    if (mentions(text, timeout))
        return "TIMEOUT";
    if (strstr(text, "Kubernetes cluster unreachable"))
        return "CLUSTER_UNAVAILABLE";
    /* The cluster refused: the chart reached beyond the tenant's namespace
     * (its RBAC, as the tenant's service account). */
    if (strstr(text, "is forbidden: "))
        return "FORBIDDEN";
    if (mentions(text, unreachable))
        return mentions(text, registry) ? "REGISTRY_UNAVAILABLE" : "CLUSTER_UNAVAILABLE";
    if (!strstr(text, "release: not found") && mentions(text, missing))
        return "CHART_NOT_FOUND";
    return "HELM_FAILED";
}

const char *helm_error_text(const helm_run_t *run, char *buf, size_t size) {
    const char *last = NULL;
    for (const char *p = run->err; (p = strstr(p, "Error:")) != NULL; p++)
        if (p == run->err || p[-1] == '\n')
            last = p;
    const char *src = last ? last : run->err;
    while (*src == '\n' || *src == ' ')
        src++;
    snprintf(buf, size, "%s", src);
    size_t n = strlen(buf);
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == ' ' || buf[n - 1] == '\r'))
        buf[--n] = '\0';
    if (n == 0) {
        if (run->term_signal)
            snprintf(buf, size, "helm was killed by signal %d", run->term_signal);
        else
            snprintf(buf, size, "helm exited with status %lld", (long long)run->exit_status);
    }
    return buf;
}
