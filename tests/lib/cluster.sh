# tests/lib/cluster.sh: real helm against the emulated Kubernetes API
# (tests/kube/) with charts in a real OCI registry (Debian's docker-registry,
# tests/lib/registry.sh). Used by the real-helm tests and by `make run`.
# Source it from bash; it needs HELMQ_ROOT (or ROOT) set to the repository.
#
#   cluster_start DIR   start the emulator and the registry under DIR, push
#                       the test charts (tests/charts/) with real helm, and
#                       export what helm and the worker need:
#                         HELMQ_HELM                  build/tools/helm (real helm 3.17)
#                         KUBECONFIG                  the emulator's admin kubeconfig (tests, kubectl_, helm_)
#                         HELMQ_KUBECONFIG            the worker's own kubeconfig: user helmq-worker,
#                                                     bound to docs/rbac/helmq-worker.yaml's ClusterRole
#                                                     and nothing else (DIR/kube/worker.kubeconfig)
#                         HELMQ_ADMIN_KUBECONFIG      = KUBECONFIG (for a worker run without
#                                                     --tenant-identity, e.g. the benchmark)
#                         HELMQ_CHART_REPO            oci://127.0.0.1:PORT/charts
#                         HELMQ_REGISTRY_PLAIN_HTTP   true (the registry speaks plain HTTP)
#                         HELM_CACHE_HOME, HELM_CONFIG_HOME, HELM_DATA_HOME  under DIR/helm
#                         KUBECTL                     build/tools/kubectl (kubectl 1.31)
#                         HELMQ_TENANT_IDENTITY       true (helm acts as the tenant's service account)
#                       Returns non-zero with a message when something did not start.
#   cluster_stop        stop both (also safe when only one started)
#   kubectl_ ARGS...    kubectl against the emulator
#   helm_ ARGS...       real helm against the emulator and the registry

_cluster_root=${HELMQ_ROOT:-${ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}}
. "$_cluster_root/tests/kube/kube.sh"
. "$_cluster_root/tests/lib/registry.sh"

cluster_start() { # cluster_start DIR
    local dir=$1
    mkdir -p "$dir/helm/cache" "$dir/helm/config" "$dir/helm/data"
    if [ ! -x "$_cluster_root/build/tools/helm" ] || [ ! -x "$_cluster_root/build/tools/kubectl" ]; then
        bash "$_cluster_root/tests/lib/install-real-helm.sh" "$_cluster_root/build/tools/helm" ||
            { echo "cluster: real helm and kubectl could not be installed" >&2; return 1; }
    fi
    # registry.sh chose its helm when sourced, before the install above on a
    # fresh machine: it then fell back to a helm on PATH, which may not exist.
    [ "${REGISTRY_HELM:-helm}" = helm ] && REGISTRY_HELM=$_cluster_root/build/tools/helm
    export HELM_CACHE_HOME=$dir/helm/cache HELM_CONFIG_HOME=$dir/helm/config HELM_DATA_HOME=$dir/helm/data
    export HELMQ_HELM=$_cluster_root/build/tools/helm
    export KUBECTL=$_cluster_root/build/tools/kubectl
    # --tls: client-go sends a kubeconfig's token and helm's --kube-as-user only
    # over TLS, so only then does the emulator know who asks and enforce RBAC
    kube_start "$dir/kube" --tls || { echo "cluster: the emulated Kubernetes API did not start" >&2; return 1; }
    export HELMQ_ADMIN_KUBECONFIG=$KUBECONFIG
    cluster_rbac "$dir/kube/worker.kubeconfig" || return 1
    export HELMQ_KUBECONFIG=$dir/kube/worker.kubeconfig
    registry_start "$dir/registry" || { echo "cluster: the chart registry did not start" >&2; return 1; }
    registry_push_charts || { echo "cluster: the test charts could not be pushed" >&2; return 1; }
    export HELMQ_REGISTRY_PLAIN_HTTP=true
    export HELMQ_TENANT_IDENTITY=true
}

# cluster_rbac OUT: applies docs/rbac/ (the ClusterRoles helmq-tenant and
# helmq-worker) as the admin, as an operator would, binds helmq-worker to a
# user of the same name instead of the in-cluster service account, and writes
# that user's kubeconfig to OUT.
cluster_rbac() {
    local out=$1 err
    if ! err=$(kubectl_ apply -f "$_cluster_root/docs/rbac/helmq-tenant.yaml" -f "$_cluster_root/docs/rbac/helmq-worker.yaml" 2>&1) ||
        ! err=$(kubectl_ apply -f - 2>&1 <<'EOF'
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: helmq-worker-user}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: helmq-worker}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: helmq-worker}]
EOF
        ); then
        echo "cluster: docs/rbac/ could not be applied: $err" >&2
        return 1
    fi
    kube_kubeconfig_for helmq-worker "" "$out" >/dev/null || { echo "cluster: no kubeconfig for helmq-worker" >&2; return 1; }
}

cluster_stop() {
    registry_stop 2>/dev/null
    kube_stop 2>/dev/null
    return 0
}

kubectl_() { "$KUBECTL" --kubeconfig "$KUBECONFIG" "$@"; }
helm_() { "$HELMQ_HELM" --kubeconfig "$KUBECONFIG" "$@"; }
