/* Tenant confinement: helm acts in the cluster as the tenant.
 *
 * Every helm the worker runs for a command impersonates the tenant's service
 * account in the release's namespace (helm --kube-as-user
 * system:serviceaccount:NS:ACCOUNT; the API server adds the account's
 * groups), so the cluster's RBAC confines a chart to that namespace. Before
 * an install, the worker itself (its own identity, never the chart's) sets up
 * the namespace: it creates it, the service account and a RoleBinding that
 * grants the account, in that namespace only, the ClusterRole of the same
 * name (the namespaced kinds charts deploy; applied once by the operator,
 * docs/rbac/), through a small chart of its own installed as release
 * helmq-tenant-access in that namespace (helm upgrade --install: idempotent,
 * and removable with helm). */
#ifndef HELMQ_TENANT_ACCESS_H
#define HELMQ_TENANT_ACCESS_H

#include "executor.h"

#include <stddef.h>

/* The release that holds a namespace's tenant access (a name tenants cannot
 * use for their own releases). */
#define TENANT_ACCESS_RELEASE "helmq-tenant-access"

/* Writes the tenant-access chart into a new private directory under tmpdir
 * (mode 0700) and puts its path in out. Returns 0, or -1 with errno set. */
int tenant_access_chart_write(const char *tmpdir, char *out, size_t size);

/* Removes the chart written by tenant_access_chart_write (NULL: nothing). */
void tenant_access_chart_remove(const char *dir);

/* The argv that sets up namespace ns for its tenant with the worker's own
 * identity: helm upgrade --install helmq-tenant-access CHART --namespace NS
 * --create-namespace --set-string serviceAccount=ACCOUNT --timeout Ns. */
void tenant_access_argv(helm_argv_t *a, const helm_conf_t *hc, const char *ns, long timeout_s);

/* The argv of helm SUB (status: history --max 1 -o json; rollback; uninstall)
 * on the set-up release of namespace ns, with the worker's own identity: how a
 * set-up left pending-* by an interrupted one is unlocked. */
void tenant_access_argv_sub(helm_argv_t *a, const helm_conf_t *hc, const char *sub, const char *ns,
                            long timeout_s);

#endif
