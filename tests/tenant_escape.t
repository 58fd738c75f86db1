#!/usr/bin/env bash
# tenant_escape.t: a tenant's chart cannot reach beyond its namespace. REAL helm 3.17
# through helmq (CLI -> broker -> worker -> helm) against the emulated Kubernetes API
# with RBAC enforced (tests/kube/, over TLS) and charts from the real OCI registry.
#
# The cluster is set up as docs/rbac/ tells an operator to: the ClusterRoles
# helmq-tenant and helmq-worker, the worker's kubeconfig bound to helmq-worker and
# nothing else. The worker sets up each namespace with its own identity and runs
# every helm of a tenant as that tenant's service account (--kube-as-user).
#
# Tenant B's chart (tests/charts/escape) then tries, one way per install: a resource
# pinned to tenant A's namespace; a ClusterRole; a ClusterRoleBinding; a Namespace; a
# CRD; a hook Job in kube-system; a Secret forging helm's storage of A's release; a
# RoleBinding to cluster-admin in its own namespace. Each must end FORBIDDEN with
# helm's message, atomic ones cleaned up, nothing left outside B's namespace, and A's
# release untouched in the cluster and in the projection. Then the collisions: B into
# A's namespace, into kube-* and default, the reserved release name, A's release name.
. "$(dirname "$0")/lib/tap.sh"
. "$(dirname "$0")/lib/common.sh"
. "$(dirname "$0")/lib/stack.sh"
. "$(dirname "$0")/lib/cluster.sh"

stack_start
cluster_start "$T/cluster" >"$T/cluster.log" 2>&1 || { cat "$T/cluster.log" >&2; bail "the emulated cluster did not start"; }
at_exit cluster_stop
worker_start || bail "the worker did not start"
projector_start || bail "the projector did not start"

A=$TENANT
B=$OTHER_TENANT
NS_A=tenant-a
NS_B=tenant-b
SA_A=system:serviceaccount:$NS_A:helmq-tenant
SA_B=system:serviceaccount:$NS_B:helmq-tenant
ev_field() { jf "$1" <<<"$ev"; }
helm_secrets() { kubectl_ get secrets -n "$1" -l "owner=helm,name=$2" -o json | jq -r '[.items[].metadata.labels | "\(.version):\(.status)"] | sort | join(" ")'; }
names() { kubectl_ get "$@" -o json 2>/dev/null | jq -r '[.items[].metadata.name] | sort | join(",")'; }
# what a chart could have left outside a tenant namespace, and in A's namespace
outside() {
    echo "ns=$(names namespaces) cr=$(names clusterroles) crb=$(names clusterrolebindings)" \
        "crd=$(names customresourcedefinitions) kube-system-jobs=$(names jobs -n kube-system)" \
        "kube-system-pods=$(names pods -n kube-system)"
}
a_state() {
    echo "cm=$(names configmaps -n $NS_A) secrets=$(names secrets -n $NS_A) deploy=$(names deployments -n $NS_A)" \
        "rb=$(names rolebindings -n $NS_A) sa=$(names serviceaccounts -n $NS_A)"
}
install_b() { # install_b NAME ATOMIC(0|1) VALUES_JSON: prints the commandId
    local atomic=()
    [ "$2" = 1 ] && atomic=(--atomic)
    send install "$1" -t "$B" -n $NS_B --chart-name escape --chart-version 1.0.0 --app-version 1.0.0 \
        --timeout 60 "${atomic[@]}" --set-values "$3"
}

# ---------------------------------------------------------------- the worker's identity, as docs/rbac/ sets it up
is "$("$KUBECTL" --kubeconfig "$HELMQ_KUBECONFIG" auth whoami -o jsonpath='{.status.userInfo.username}')" helmq-worker \
    "the worker's kubeconfig is user helmq-worker (docs/rbac/helmq-worker.yaml's ClusterRole, nothing else)"
is "$("$KUBECTL" --kubeconfig "$HELMQ_KUBECONFIG" auth can-i create deployments.apps -n $NS_A)" no \
    "the worker itself cannot deploy a chart's objects"

# ---------------------------------------------------------------- tenant A's release, the one B will aim at
id=$(send install web -t "$A" -n $NS_A --chart-name matih-ai-service --chart-version 1.0.0 --app-version 2.0.0)
ev=$(wait_terminal "$id" 180)
is "$(ev_field '[.eventType,.status,.revision] | join(" ")')" "succeeded deployed 1" "tenant A installs web into $NS_A"
A_RID=$(ev_field .releaseId)
is "$(kubectl_ get deploy -n $NS_A -l app.kubernetes.io/instance=web -o jsonpath='{.items[0].status.readyReplicas}')" 1 \
    "A's Deployment is ready"
is "$(kubectl_ get serviceaccount helmq-tenant -n $NS_A -o jsonpath='{.metadata.name}') $(kubectl_ get rolebinding helmq-tenant -n $NS_A -o jsonpath='{.roleRef.kind}/{.roleRef.name}')" \
    "helmq-tenant ClusterRole/helmq-tenant" \
    "the worker set up $NS_A: the tenant's ServiceAccount and a RoleBinding to the ClusterRole helmq-tenant"
is "$(helm_secrets $NS_A helmq-tenant-access)" "1:deployed" "... as its own release helmq-tenant-access"
grep -q "user=$SA_A\$" "$T/cluster/kube/kube.log"
ok $? "the emulator saw A's helm as $SA_A"
grep -E "user=helmq-worker .*(POST|PUT|PATCH) [^ ]*/(deployments|services|configmaps)" "$T/cluster/kube/kube.log" | head -3 >"$T/worker-writes"
is "$(wc -l <"$T/worker-writes")" 0 "the worker's own identity wrote none of the chart's objects" || diag "$(cat "$T/worker-writes")"

# ---------------------------------------------------------------- B's chart, harmless: works as B
id=$(install_b calm 0 '{}')
ev=$(wait_terminal "$id" 180)
is "$(ev_field '[.eventType,.status] | join(" ")')" "succeeded deployed" "tenant B's escape chart with every switch off installs"
grep -q "user=$SA_B\$" "$T/cluster/kube/kube.log"
ok $? "the emulator saw B's helm as $SA_B"
KUBECTL=$KUBECTL bash docs/rbac/check.sh --kubeconfig "$HELMQ_KUBECONFIG" --namespace $NS_B >"$T/check.out" 2>&1
ok $? "docs/rbac/check.sh (kubectl auth can-i) agrees with the cluster, the worker's and B's rights" ||
    while IFS= read -r l; do diag "$l"; done <"$T/check.out"
is "$(grep -c '^ok ' "$T/check.out")" 23 "... all 23 of its checks answered as expected"

# ---------------------------------------------------------------- first installs at once into a new namespace
# One set-up of the namespace for all of them (the others wait for it), not five
# racing set-ups of which all but one met "another operation is in progress".
ids=()
for n in 1 2 3 4 5; do
    ids+=("$(send install "burst$n" -t "$B" -n tenant-b2 --chart-name tiny-config --chart-version 0.1.0 --app-version 0.1.0)")
done
burst=""
for id in "${ids[@]}"; do
    ev=$(wait_terminal "$id" 180)
    burst="$burst$(ev_field '.eventType + (if .errorCode then "/" + .errorCode else "" end)') "
done
is "$burst" "succeeded succeeded succeeded succeeded succeeded " "five first installs sent at once into tenant-b2 all succeed"
is "$(helm_secrets tenant-b2 helmq-tenant-access)" "1:deployed" "... after one set-up of the namespace (helmq-tenant-access revision 1)"

OUT0=$(outside)
A0=$(a_state)
A_SECRETS0=$(helm_secrets $NS_A web)

# ---------------------------------------------------------------- the escapes
# escape NAME ATOMIC VALUES WHAT: B's install must end FORBIDDEN and leave nothing behind
escape() {
    local name=$1 atomic=$2 values=$3 what=$4 id
    id=$(install_b "$name" "$atomic" "$values")
    ev=$(wait_terminal "$id" 180)
    diag "$what: $(ev_field '[.eventType, .errorCode, .errorMessage] | join(" ")' | cut -c1-300)"
    if [ "$atomic" = 1 ]; then
        is "$(ev_field '[.eventType,.errorCode,.status] | join(" ")')" "rolled_back FORBIDDEN uninstalled" \
            "$what: FORBIDDEN, the atomic install rolled back"
    else
        is "$(ev_field '[.eventType,.errorCode] | join(" ")')" "failed FORBIDDEN" "$what: failed FORBIDDEN"
    fi
    like "$(ev_field .errorMessage)" "is forbidden: User \"$SA_B\" cannot" "$what: helm's message, naming B's service account"
    if [ "$atomic" = 1 ]; then
        is "$(helm_secrets $NS_B "$name")" "" "$what: no helm storage of it is left in $NS_B"
        is "$(kubectl_ get configmap "$name-own" -n $NS_B -o name 2>/dev/null)" "" "$what: its own ConfigMap is gone too"
    fi
    is "$(outside)" "$OUT0" "$what: nothing new outside the tenant namespaces"
    is "$(a_state)" "$A0" "$what: A's namespace unchanged"
}

escape pinned 1 "{\"pinned\": true, \"otherNamespace\": \"$NS_A\"}" "a ConfigMap pinned to A's namespace"
escape crole 1 '{"clusterRole": true}' "a ClusterRole"
escape crb 1 '{"clusterRoleBinding": true}' "a ClusterRoleBinding to cluster-admin"
escape newns 1 '{"namespace": true}' "a Namespace"
escape crd 1 '{"crd": true}' "a CRD"
escape hook 1 '{"hookKubeSystem": true}' "a pre-install hook Job in kube-system"
escape forge 1 "{\"releaseSecret\": true, \"otherNamespace\": \"$NS_A\", \"victimRelease\": \"web\"}" \
    "a Secret forging helm's storage of A's release (sh.helm.release.v1.web.v2 in $NS_A)"
escape admin 1 '{"roleBindingAdmin": true}' "a RoleBinding to cluster-admin in its own namespace"
# helm checks a chart's objects before it records a release (the ones above never got
# that far), but creates hooks later: this release is recorded, then fails
escape hook2 0 '{"hookKubeSystem": true}' "not atomic, a pre-install hook Job in kube-system"
is "$(helm_ status hook2 -n $NS_B -o json | jq -r .info.status)" failed "... helm keeps that release, failed, in B's namespace only"
is "$(helm_secrets $NS_B hook)" "" "... while the atomic one with the same hook left no helm storage"

# ---------------------------------------------------------------- collisions
id=$(send install intruder -t "$B" -n $NS_A --chart-name escape --chart-version 1.0.0 --app-version 1.0.0)
ev=$(wait_terminal "$id" 60)
is "$(ev_field '[.eventType,.errorCode] | join(" ")')" "rejected NAMESPACE_OWNED" "B installing into A's namespace: NAMESPACE_OWNED"
for ns in kube-system kube-tenant default; do
    id=$(send install intruder -t "$B" -n $ns --chart-name escape --chart-version 1.0.0 --app-version 1.0.0)
    ev=$(wait_terminal "$id" 60)
    is "$(ev_field '[.eventType,.errorCode] | join(" ")')" "rejected PROTECTED_NAMESPACE" "B installing into $ns: PROTECTED_NAMESPACE"
done
is "$(names rolebindings -n kube-system)$(names serviceaccounts -n kube-system | tr ',' '\n' | grep -c helmq-tenant)" "0" \
    "no tenant access was set up in kube-system"
out=$(send install helmq-tenant-access -t "$B" -n $NS_B --chart-name escape --chart-version 1.0.0 --app-version 1.0.0 2>&1)
rc=$?
ok "$([ $rc -ne 0 ] && echo 0 || echo 1)" "the release name helmq-tenant-access is refused (exit $rc)"
like "$out" "reserved" "... as reserved, before anything is sent"
id=$(install_b web 0 '{}')
ev=$(wait_terminal "$id" 180)
is "$(ev_field '[.eventType,.namespace,.releaseName] | join(" ")')" "succeeded $NS_B web" \
    "B's own release named like A's (web) is B's, in B's namespace"
[ "$(ev_field .releaseId)" != "$A_RID" ]
ok $? "... with a releaseId of its own"

# ---------------------------------------------------------------- A untouched, in the cluster and in the projection
is "$(helm_secrets $NS_A web)" "$A_SECRETS0" "A's helm storage: still revision 1, deployed"
is "$(kubectl_ get deploy -n $NS_A -l app.kubernetes.io/instance=web -o jsonpath='{.items[0].status.readyReplicas}')" 1 \
    "A's Deployment is still ready"
is "$(names configmaps -n $NS_A | tr ',' '\n' | grep -c -e pinned -e escape)" 0 "no escape ConfigMap in A's namespace"
wait_projected "$id"
is "$("$HELMQ_BIN/helmq" releases get "$A_RID" | jq -r '[.status, .revision, .tenantId] | join(" ")')" "deployed 1 $A" \
    "the projection: A's release deployed, revision 1, A's"
is "$("$HELMQ_BIN/helmq" releases history "$A_RID" | jq 'length')" 1 "... with one history row"
is "$("$HELMQ_BIN/helmq" releases list --tenant "$A" | jq -r '[.[] | .releaseName] | sort | join(",")')" web \
    "A's releases: web alone"
is "$(outside)" "$OUT0" "at the end, nothing outside the tenant namespaces that was not there before B"

done_testing
