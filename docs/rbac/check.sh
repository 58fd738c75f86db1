#!/usr/bin/env bash
# docs/rbac/check.sh: checks with `kubectl auth can-i` that a cluster grants helmq
# what docs/rbac/ describes, and nothing more that matters.
#
#   bash docs/rbac/check.sh [--kubeconfig FILE] [--context NAME] [--namespace NS]
#                           [--account NAME]
#
# Run it with the worker's kubeconfig (the identity helmq-worker.yaml binds). It
# checks the worker's own rights, then, with --namespace NS (a namespace where
# a tenant has installed once, so that its set-up is there), the tenant's rights
# as the worker impersonates them. Prints one line per check and exits 1 when
# any answer differs from the expected one. Needs kubectl (KUBECTL=path).
set -u
KUBECTL=${KUBECTL:-kubectl}
args=() ns= account=helmq-tenant
while [ $# -gt 0 ]; do
    case $1 in
    --kubeconfig | --context) args+=("$1" "$2"); shift 2 ;;
    --namespace) ns=$2; shift 2 ;;
    --account) account=$2; shift 2 ;;
    -h | --help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "check.sh: unknown argument $1 (--help)" >&2; exit 2 ;;
    esac
done
failed=0
# expect yes|no WHO ARGS...: WHO is "worker" or "tenant"
expect() {
    local want=$1 who=$2 got
    shift 2
    if [ "$who" = tenant ]; then
        got=$("$KUBECTL" "${args[@]}" auth can-i "$@" --as "system:serviceaccount:$ns:$account" 2>/dev/null | tail -1)
    else
        got=$("$KUBECTL" "${args[@]}" auth can-i "$@" 2>/dev/null | tail -1)
    fi
    if [ "$got" = "$want" ]; then
        printf 'ok      %-6s can-i %s: %s\n' "$who" "$*" "$got"
    else
        printf 'WRONG   %-6s can-i %s: %s (expected %s)\n' "$who" "$*" "${got:-no answer}" "$want"
        failed=1
    fi
}
other=helmq-check-other-namespace
expect yes worker create namespaces
expect yes worker create serviceaccounts -n "$other"
expect yes worker create rolebindings.rbac.authorization.k8s.io -n "$other"
expect yes worker bind clusterroles.rbac.authorization.k8s.io/"$account"
expect no worker bind clusterroles.rbac.authorization.k8s.io/cluster-admin
expect yes worker impersonate serviceaccounts/"$account" -n "$other"
expect no worker impersonate serviceaccounts/default -n "$other"
expect no worker impersonate users/admin
expect no worker impersonate groups/system:masters
expect no worker create deployments.apps -n "$other"
expect no worker create clusterrolebindings.rbac.authorization.k8s.io
expect no worker delete namespaces
if [ -n "$ns" ]; then
    expect yes tenant create deployments.apps -n "$ns"
    expect yes tenant create secrets -n "$ns"
    expect yes tenant create jobs.batch -n "$ns"
    expect no tenant create configmaps -n kube-system
    expect no tenant create configmaps -n "$other"
    expect no tenant create rolebindings.rbac.authorization.k8s.io -n "$ns"
    expect no tenant create clusterroles.rbac.authorization.k8s.io
    expect no tenant create clusterrolebindings.rbac.authorization.k8s.io
    expect no tenant create namespaces
    expect no tenant create customresourcedefinitions.apiextensions.k8s.io
    expect no tenant impersonate serviceaccounts/"$account" -n "$ns"
fi
[ -n "$ns" ] || echo "(no --namespace: the tenant's rights were not checked)"
exit $failed
