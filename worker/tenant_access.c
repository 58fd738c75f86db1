/* Tenant confinement: the impersonation flags and the namespace set-up chart
 * (see tenant_access.h). */
#include "tenant_access.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char chart_yaml[] =
    "apiVersion: v2\n"
    "name: helmq-tenant-access\n"
    "description: The tenant's service account and its Role in the namespace, set up by helmq's worker\n"
    "type: application\n"
    "version: 1.0.0\n";

/* The tenant's service account and a RoleBinding granting it, in this
 * namespace only, the ClusterRole of the same name, which the operator
 * applies once (docs/rbac/: the namespaced kinds applications deploy; no RBAC
 * kinds, nothing cluster-scoped). Binding a ClusterRole needs only the
 * worker's "bind" on that one ClusterRole, not its permissions. */
static const char access_yaml[] = "apiVersion: v1\n"
                                  "kind: ServiceAccount\n"
                                  "metadata:\n"
                                  "  name: {{ .Values.serviceAccount }}\n"
                                  "  namespace: {{ .Release.Namespace }}\n"
                                  "  labels:\n"
                                  "    app.kubernetes.io/managed-by: Helm\n"
                                  "    app.kubernetes.io/part-of: helmq\n"
                                  "---\n"
                                  "apiVersion: rbac.authorization.k8s.io/v1\n"
                                  "kind: RoleBinding\n"
                                  "metadata:\n"
                                  "  name: {{ .Values.serviceAccount }}\n"
                                  "  namespace: {{ .Release.Namespace }}\n"
                                  "  labels:\n"
                                  "    app.kubernetes.io/managed-by: Helm\n"
                                  "    app.kubernetes.io/part-of: helmq\n"
                                  "roleRef:\n"
                                  "  apiGroup: rbac.authorization.k8s.io\n"
                                  "  kind: ClusterRole\n"
                                  "  name: {{ .Values.serviceAccount }}\n"
                                  "subjects:\n"
                                  "- kind: ServiceAccount\n"
                                  "  name: {{ .Values.serviceAccount }}\n"
                                  "  namespace: {{ .Release.Namespace }}\n";

static int write_file(const char *path, const char *text) {
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
        return -1;
    size_t len = strlen(text), off = 0;
    while (off < len) {
        ssize_t w = write(fd, text + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            int e = errno;
            close(fd);
            errno = e;
            return -1;
        }
        off += (size_t)w;
    }
    return close(fd);
}

int tenant_access_chart_write(const char *tmpdir, char *out, size_t size) {
    char path[4096];
    snprintf(out, size, "%s/helmq-tenant-access.XXXXXX", tmpdir && *tmpdir ? tmpdir : "/tmp");
    if (!mkdtemp(out)) /* mode 0700 */
        return -1;
    snprintf(path, sizeof(path), "%s/Chart.yaml", out);
    if (write_file(path, chart_yaml) < 0)
        goto fail;
    snprintf(path, sizeof(path), "%s/templates", out);
    if (mkdir(path, 0700) < 0)
        goto fail;
    snprintf(path, sizeof(path), "%s/templates/access.yaml", out);
    if (write_file(path, access_yaml) < 0)
        goto fail;
    return 0;
fail:;
    int e = errno;
    tenant_access_chart_remove(out);
    errno = e;
    return -1;
}

void tenant_access_chart_remove(const char *dir) {
    char path[4096];
    if (!dir || !*dir)
        return;
    snprintf(path, sizeof(path), "%s/templates/access.yaml", dir);
    unlink(path);
    snprintf(path, sizeof(path), "%s/templates", dir);
    rmdir(path);
    snprintf(path, sizeof(path), "%s/Chart.yaml", dir);
    unlink(path);
    rmdir(dir);
}

void tenant_access_argv(helm_argv_t *a, const helm_conf_t *hc, const char *ns, long timeout_s) {
    char buf[512];
    helm_argv_push(a, hc->helm);
    helm_argv_push(a, "upgrade");
    helm_argv_push(a, TENANT_ACCESS_RELEASE);
    helm_argv_push(a, hc->tenant_chart ? hc->tenant_chart : "");
    helm_argv_push(a, "--install");
    helm_argv_push(a, "--namespace");
    helm_argv_push(a, ns);
    helm_push_cluster(a, hc); /* the worker's own identity: no impersonation */
    helm_argv_push(a, "--create-namespace");
    snprintf(buf, sizeof(buf), "serviceAccount=%s", hc->tenant_account);
    helm_argv_push(a, "--set-string");
    helm_argv_push(a, buf);
    snprintf(buf, sizeof(buf), "%lds", timeout_s);
    helm_argv_push(a, "--timeout");
    helm_argv_push(a, buf);
}

void tenant_access_argv_sub(helm_argv_t *a, const helm_conf_t *hc, const char *sub, const char *ns,
                            long timeout_s) {
    helm_conf_t own = *hc;
    own.impersonate = 0; /* the worker's own identity */
    json_t *doc = json_pack("{s:s,s:s}", "releaseName", TENANT_ACCESS_RELEASE, "namespace", ns);
    if (!doc)
        abort();
    helm_argv_simple(a, &own, sub, doc, 0, timeout_s);
    json_decref(doc);
}
