# tests/lib/cluster.sh: real helm against the emulated Kubernetes API
# (tests/kube/) with charts in a real OCI registry (Debian's docker-registry,
# tests/lib/registry.sh). Used by the real-helm tests and by `make run`.
# Source it from bash; it needs HELMQ_ROOT (or ROOT) set to the repository.
#
#   cluster_start DIR   start the emulator and the registry under DIR, push
#                       the test charts (tests/charts/) with real helm, and
#                       export what helm and the worker need:
#                         HELMQ_HELM                  build/tools/helm (real helm 3.17)
#                         KUBECONFIG, HELMQ_KUBECONFIG the emulator's kubeconfig
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
    export HELM_CACHE_HOME=$dir/helm/cache HELM_CONFIG_HOME=$dir/helm/config HELM_DATA_HOME=$dir/helm/data
    export HELMQ_HELM=$_cluster_root/build/tools/helm
    export KUBECTL=$_cluster_root/build/tools/kubectl
    kube_start "$dir/kube" || { echo "cluster: the emulated Kubernetes API did not start" >&2; return 1; }
    export HELMQ_KUBECONFIG=$KUBECONFIG
    registry_start "$dir/registry" || { echo "cluster: the chart registry did not start" >&2; return 1; }
    registry_push_charts || { echo "cluster: the test charts could not be pushed" >&2; return 1; }
    export HELMQ_REGISTRY_PLAIN_HTTP=true
    export HELMQ_TENANT_IDENTITY=true
}

cluster_stop() {
    registry_stop 2>/dev/null
    kube_stop 2>/dev/null
    return 0
}

kubectl_() { "$KUBECTL" --kubeconfig "$KUBECONFIG" "$@"; }
helm_() { "$HELMQ_HELM" --kubeconfig "$KUBECONFIG" "$@"; }
