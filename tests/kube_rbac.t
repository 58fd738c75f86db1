#!/usr/bin/env bash
# kube_rbac.t: the emulated Kubernetes API (tests/kube/) confines a tenant, with REAL
# helm 3.17 and kubectl 1.31: bearer-token authentication (401 for an unknown token),
# impersonation (helm --kube-as-user/--kube-as-group; 403 without the impersonate verb),
# RBAC (Roles/ClusterRoles, RoleBindings/ClusterRoleBindings, escalation prevention),
# SelfSubjectAccessReview for kubectl auth can-i, and 403 Status objects shaped like the
# real API's. The tenant identity is system:serviceaccount:NS:helmq-tenant bound to the
# per-tenant Role helmq documents; "the worker" is a less privileged kubeconfig user.
. "$(dirname "$0")/lib/tap.sh"
. "$(dirname "$0")/lib/common.sh"
. tests/kube/kube.sh

HELM=$HELMQ_ROOT/build/tools/helm
KUBECTL=$HELMQ_ROOT/build/tools/kubectl
if [ ! -x "$HELM" ] || [ ! -x "$KUBECTL" ]; then
    skip_all "real helm/kubectl not installed (tests/lib/install-real-helm.sh)"
fi
if ! command -v curl >/dev/null || ! command -v jq >/dev/null; then skip_all "curl and jq are needed"; fi

export HELM_CACHE_HOME=$T/helm/cache HELM_CONFIG_HOME=$T/helm/config HELM_DATA_HOME=$T/helm/data
export KUBECACHEDIR=$T/kube-cache
unset HELM_NAMESPACE HELM_KUBECONTEXT HELM_KUBEAPISERVER HELM_KUBETOKEN HELM_DRIVER HELM_DEBUG
helm() { timeout 120 "$HELM" "$@"; }
kubectl() { timeout 60 "$KUBECTL" "$@"; }
t_start=$SECONDS

# --tls: client-go sends a kubeconfig's token and impersonation headers only over TLS;
# --anonymous anonymous: requests without a token are system:anonymous, as on a real cluster
kube_start "$T/kube" --tls --anonymous anonymous --ready-delay-ms 100 || bail "the kube emulator did not start"
at_exit kube_stop
ADMIN_KC=$KUBECONFIG
SA=system:serviceaccount:tenant-a:helmq-tenant
# the brief's impersonation flags (what helmq will pass), used with the admin's kubeconfig
AS_A=(--kube-as-user "$SA" --kube-as-group system:serviceaccounts --kube-as-group system:serviceaccounts:tenant-a)
KAS_A=(--as "$SA" --as-group system:serviceaccounts --as-group system:serviceaccounts:tenant-a)

# api TOKEN METHOD PATH [BODY] [CURL_ARGS...]: prints "BODY CODE" (TOKEN "" = none)
api() {
    local tok=$1 m=$2 p=$3 body=${4:-}
    shift 4 2>/dev/null || shift $#
    curl -s -w ' %{http_code}' -X "$m" ${tok:+-H "Authorization: Bearer $tok"} \
        ${body:+-H 'Content-Type: application/json' -d "$body"} "$@" "$KUBE_URL$p"
}
# as_tenant METHOD PATH [BODY]: the admin's token impersonating tenant-a's identity (as helm does)
as_tenant() {
    api "$KUBE_ADMIN_TOKEN" "$1" "$2" "${3:-}" -H "Impersonate-User: $SA" \
        -H "Impersonate-Group: system:serviceaccounts" -H "Impersonate-Group: system:serviceaccounts:tenant-a"
}
code() { echo "${1##* }"; }
seen() { printf '%s: %s\n' "$1" "$(grep -v '^rc=' <<<"$2" | grep -v '^E[0-9]' | tr '\n' '|')" >>"$T/seen"; } # seen WHAT OUTPUT
body() { echo "${1% *}"; }
# st RESPONSE: "CODE kind apiVersion status reason" of a Status answer
st() { echo "$(code "$1") $(body "$1" | jq -r '"\(.kind) \(.apiVersion) \(.status) \(.reason)"')"; }
msg() { body "$1" | jq -r .message; }
# names of objects as the admin sees them: names PATH
names() { api "$KUBE_ADMIN_TOKEN" GET "$1" | sed 's/ [0-9]*$//' | jq -r '[.items[].metadata.name] | sort | join(",")'; }
cluster_snapshot() {
    echo "ns=$(names /api/v1/namespaces) cr=$(names /apis/rbac.authorization.k8s.io/v1/clusterroles)" \
        "crb=$(names /apis/rbac.authorization.k8s.io/v1/clusterrolebindings)" \
        "crd=$(names /apis/apiextensions.k8s.io/v1/customresourcedefinitions)"
}
# what a tenant's install could leave in a namespace (setup puts only the SA and the RBAC objects there)
ns_content() {
    local n=$1
    echo "cm=$(names "/api/v1/namespaces/$n/configmaps") secret=$(names "/api/v1/namespaces/$n/secrets")" \
        "svc=$(names "/api/v1/namespaces/$n/services") deploy=$(names "/apis/apps/v1/namespaces/$n/deployments")" \
        "pod=$(names "/api/v1/namespaces/$n/pods") job=$(names "/apis/batch/v1/namespaces/$n/jobs")"
}
EMPTY_NS="cm= secret= svc= deploy= pod= job="

# --- 1. authentication
r=$(api "" GET /version)
is "$(code "$r")" 200 "no token: /version is public (system:public-info-viewer)"
r=$(api "" GET /api/v1/namespaces)
is "$(st "$r")" "403 Status v1 Failure Forbidden" "no token: listing namespaces is a 403 Status"
is "$(msg "$r")" 'namespaces is forbidden: User "system:anonymous" cannot list resource "namespaces" in API group "" at the cluster scope' \
    "... for system:anonymous, at the cluster scope"
r=$(api "" GET /api)
is "$(msg "$r")" 'forbidden: User "system:anonymous" cannot get path "/api"' "no token: discovery is forbidden (a non-resource 403)"
r=$(api bogus-token GET /api/v1/namespaces/default/configmaps)
is "$(st "$r")" "401 Status v1 Failure Unauthorized" "an unknown token: 401 Unauthorized Status"
is "$(msg "$r")" Unauthorized "... message Unauthorized"
sed "s/token: .*/token: bogus-token/" "$ADMIN_KC" >"$T/bogus.kubeconfig"
chmod 600 "$T/bogus.kubeconfig"
out=$(kubectl --kubeconfig "$T/bogus.kubeconfig" get cm -n default 2>&1)
seen "kubectl with an unknown token" "$out"
like "$out" "error: You must be logged in to the server (the server has asked for the client to provide credentials)" "kubectl with an unknown token: must be logged in"
BOGUS_HELM=$(helm --kubeconfig "$T/bogus.kubeconfig" list -n default 2>&1)
like "$BOGUS_HELM" "the server has asked for the client to provide credentials" "helm with an unknown token: asked for credentials"
is "$(kubectl auth whoami -o jsonpath='{.status.userInfo.username} {.status.userInfo.groups}')" \
    'admin ["system:masters","system:authenticated"]' "the admin kubeconfig's user is admin in system:masters (kubectl auth whoami)"

diag "t=$((SECONDS - t_start)) s"
# --- 2. the worker: a less privileged user with only the rights helmq's docs list
WORKER_KC=$T/worker.kubeconfig
kube_kubeconfig_for helmq-worker "" "$WORKER_KC" >/dev/null || bail "kube_kubeconfig_for failed"
kw() { kubectl --kubeconfig "$WORKER_KC" "$@"; }
kubectl apply -f - >/dev/null <<'EOF2' || bail "could not create the worker's ClusterRole"
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: helmq-worker}
rules:
- {apiGroups: [""], resources: [namespaces], verbs: [get, list, create]}
- {apiGroups: [""], resources: [serviceaccounts], verbs: [get, create, update, patch]}
- {apiGroups: [rbac.authorization.k8s.io], resources: [roles, rolebindings], verbs: [get, create, update, patch]}
- {apiGroups: [rbac.authorization.k8s.io], resources: [roles], verbs: [escalate, bind]}
- {apiGroups: [""], resources: [serviceaccounts], verbs: [impersonate], resourceNames: [helmq-tenant]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: helmq-worker}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: helmq-worker}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: User, name: helmq-worker}
EOF2
is "$(kw auth whoami -o jsonpath='{.status.userInfo.username} {.status.userInfo.groups}')" \
    'helmq-worker ["system:authenticated"]' "the worker's kubeconfig (kube_kubeconfig_for) is user helmq-worker"
is "$(kw auth can-i list secrets -A 2>&1)" no "the worker cannot list secrets"
tenant_setup() { # tenant_setup NS: what the worker applies before a tenant's first install
    cat <<EOF2
apiVersion: v1
kind: Namespace
metadata: {name: $1}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: helmq-tenant, namespace: $1}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: helmq-tenant, namespace: $1}
rules:
- apiGroups: [""]
  resources: [configmaps, secrets, services, serviceaccounts, pods, events, persistentvolumeclaims, endpoints]
  verbs: ["*"]
- {apiGroups: [apps], resources: [deployments, statefulsets, replicasets, daemonsets], verbs: ["*"]}
- {apiGroups: [batch], resources: [jobs, cronjobs], verbs: ["*"]}
- {apiGroups: [networking.k8s.io], resources: [ingresses, networkpolicies], verbs: ["*"]}
- {apiGroups: [autoscaling], resources: [horizontalpodautoscalers], verbs: ["*"]}
- {apiGroups: [policy], resources: [poddisruptionbudgets], verbs: ["*"]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: helmq-tenant, namespace: $1}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: helmq-tenant}
subjects:
- {kind: ServiceAccount, name: helmq-tenant, namespace: $1}
EOF2
}
for n in tenant-a tenant-b; do
    out=$(tenant_setup $n | kw apply -f - 2>&1)
    ok $? "the worker sets up $n: namespace, ServiceAccount, Role, RoleBinding (kubectl apply)" || diag "$out"
done
out=$(tenant_setup tenant-a | kw apply -f - 2>&1)
ok $? "... and applying it again is a no-op" || diag "$out"
SNAP0=$(cluster_snapshot)
NSB0=$(ns_content tenant-b)
is "$NSB0" "$EMPTY_NS" "tenant-b holds nothing a chart could create"

diag "t=$((SECONDS - t_start)) s"
# --- 3. kubectl auth can-i (SelfSubjectAccessReview), as the tenant (impersonated by the worker)
cani() { kw auth can-i "$@" --as "$SA" 2>&1 | tail -1; } # tail: past the "not namespace scoped" warning
is "$(cani create deployments.apps -n tenant-a)" yes "can-i: the tenant may create deployments in tenant-a"
is "$(cani list secrets -n tenant-a)" yes "can-i: ... list secrets in tenant-a"
is "$(cani watch pods -n tenant-a)" yes "can-i: ... watch pods in tenant-a"
is "$(cani create horizontalpodautoscalers.autoscaling -n tenant-a)" yes "can-i: ... create HPAs in tenant-a"
is "$(cani list secrets -n tenant-b)" no "can-i: ... not list secrets in tenant-b"
is "$(cani create configmaps -n kube-system)" no "can-i: ... not create configmaps in kube-system"
is "$(cani create rolebindings.rbac.authorization.k8s.io -n tenant-a)" no "can-i: ... not create rolebindings (no rbac)"
is "$(cani create clusterroles.rbac.authorization.k8s.io)" no "can-i: ... not create clusterroles"
is "$(cani get namespaces/tenant-a)" no "can-i: ... not get its own namespace"
is "$(cani create customresourcedefinitions.apiextensions.k8s.io)" no "can-i: ... not create CRDs"
is "$(cani get pods --subresource=log -n tenant-a)" no "can-i: ... not get pods/log (the Role's \"pods\" does not cover subresources)"
is "$(cani get /api)" yes "can-i: ... GET /api (system:discovery)"
out=$(kw auth can-i --list -n tenant-a --as "$SA" 2>&1)
like "$out" "deployments.apps" "can-i --list (SelfSubjectRulesReview) shows the Role's deployments.apps" || diag "$out"
is "$(kubectl auth can-i create pods -n tenant-a "${KAS_A[@]}")" yes "can-i as the admin with the brief's --as/--as-group flags"
is "$(kw auth whoami --as "$SA" -o jsonpath='{.status.userInfo.groups}')" \
    '["system:serviceaccounts","system:serviceaccounts:tenant-a","system:authenticated"]' \
    "impersonating a service account without groups: the server adds its groups"

diag "t=$((SECONDS - t_start)) s"
# --- 4. impersonation needs the impersonate verb
out=$(kw get cm -n tenant-a --as bob 2>&1)
like "$out" 'users "bob" is forbidden: User "helmq-worker" cannot impersonate resource "users" in API group "" at the cluster scope' \
    "the worker cannot impersonate user bob"
out=$(kw get cm -n tenant-a --as system:serviceaccount:tenant-a:default 2>&1)
like "$out" 'serviceaccounts "default" is forbidden: User "helmq-worker" cannot impersonate resource "serviceaccounts" in API group "" in the namespace "tenant-a"' \
    "... nor another service account (resourceNames)"
out=$(kw get cm -n tenant-a --as "$SA" --as-group system:masters 2>&1)
like "$out" 'groups "system:masters" is forbidden: User "helmq-worker" cannot impersonate resource "groups" in API group "" at the cluster scope' \
    "... nor the group system:masters"
NOBODY=$(kube_kubeconfig_for nobody "" "$T/nobody.kubeconfig")
r=$(api "$NOBODY" GET /api/v1/namespaces/tenant-a/configmaps "" -H "Impersonate-User: $SA")
is "$(st "$r")" "403 Status v1 Failure Forbidden" "a user without impersonate: 403 Status (curl)"
is "$(body "$r" | jq -c .details)" '{"name":"helmq-tenant","kind":"serviceaccounts"}' "... details name and kind"
is "$(msg "$r")" 'serviceaccounts "helmq-tenant" is forbidden: User "nobody" cannot impersonate resource "serviceaccounts" in API group "" in the namespace "tenant-a"' \
    "... the real API's message"
r=$(api "$NOBODY" GET /api/v1/namespaces/tenant-a/configmaps "" -H "Impersonate-User: alice" -H "Impersonate-Group: g1")
is "$(msg "$r")" 'users "alice" is forbidden: User "nobody" cannot impersonate resource "users" in API group "" at the cluster scope' \
    "... nor a user (cluster scope)"

diag "t=$((SECONDS - t_start)) s"
# --- 5. helm as the tenant into its own namespace
CH=$T/charts/app
mkdir -p "$CH/templates" "$T/charts/crdchart/crds" "$T/charts/crdchart/templates"
cat >"$CH/Chart.yaml" <<'EOF2'
apiVersion: v2
name: app
version: 0.1.0
EOF2
cat >"$CH/values.yaml" <<'EOF2'
replicas: 1
pinB: false
clusterRole: false
clusterRoleBinding: false
namespace: false
crd: false
hookKubeSystem: false
releaseSecretB: false
roleBindingAdmin: false
EOF2
cat >"$CH/templates/app.yaml" <<'EOF2'
apiVersion: v1
kind: ConfigMap
metadata: {name: {{ .Release.Name }}-cfg}
data: {a: "1"}
---
apiVersion: v1
kind: Service
metadata: {name: {{ .Release.Name }}}
spec:
  selector: {app: {{ .Release.Name }}}
  ports: [{port: 80}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: {{ .Release.Name }}}
spec:
  replicas: {{ .Values.replicas }}
  selector: {matchLabels: {app: {{ .Release.Name }}}}
  template:
    metadata: {labels: {app: {{ .Release.Name }}}}
    spec:
      containers: [{name: app, image: nginx}]
EOF2
cat >"$CH/templates/bad.yaml" <<'EOF2'
{{- if .Values.pinB }}
apiVersion: v1
kind: ConfigMap
metadata: {name: {{ .Release.Name }}-pinned, namespace: tenant-b}
data: {a: "1"}
{{- end }}
{{- if .Values.clusterRole }}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: {{ .Release.Name }}-cr}
rules: [{apiGroups: [""], resources: [secrets], verbs: [get]}]
{{- end }}
{{- if .Values.clusterRoleBinding }}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: {{ .Release.Name }}-crb}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: cluster-admin}
subjects: [{kind: ServiceAccount, name: helmq-tenant, namespace: {{ .Release.Namespace }}}]
{{- end }}
{{- if .Values.namespace }}
---
apiVersion: v1
kind: Namespace
metadata: {name: {{ .Release.Name }}-ns}
{{- end }}
{{- if .Values.crd }}
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.evil.example.com}
spec:
  group: evil.example.com
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions: [{name: v1, served: true, storage: true, schema: {openAPIV3Schema: {type: object}}}]
{{- end }}
{{- if .Values.hookKubeSystem }}
---
apiVersion: batch/v1
kind: Job
metadata:
  name: {{ .Release.Name }}-hook
  namespace: kube-system
  annotations: {"helm.sh/hook": pre-install}
spec:
  template:
    spec:
      restartPolicy: Never
      containers: [{name: h, image: busybox}]
{{- end }}
{{- if .Values.releaseSecretB }}
---
apiVersion: v1
kind: Secret
metadata:
  name: sh.helm.release.v1.other.v1
  namespace: tenant-b
  labels: {owner: helm, name: other, status: deployed, version: "1"}
type: helm.sh/release.v1
data: {release: e30=}
{{- end }}
{{- if .Values.roleBindingAdmin }}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: {{ .Release.Name }}-admin}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: cluster-admin}
subjects: [{kind: ServiceAccount, name: helmq-tenant, namespace: {{ .Release.Namespace }}}]
{{- end }}
EOF2
t0=$SECONDS
out=$(helm install web "$CH" -n tenant-a "${AS_A[@]}" --wait --timeout 60s 2>&1)
ok $? "helm install --wait as the tenant (the brief's --kube-as-user/--kube-as-group) into tenant-a" || diag "$out"
diag "install --wait took $((SECONDS - t0)) s"
is "$(kubectl get deploy web -n tenant-a -o jsonpath='{.status.readyReplicas}')" 1 "... its Deployment is ready"
is "$(helm list -n tenant-a -q "${AS_A[@]}" 2>&1)" web "helm list as the tenant shows it"
grep -q "user=$SA" "$T/kube/kube.log"
ok $? "the emulator saw the requests as $SA (its log)"
out=$(helm upgrade web "$CH" -n tenant-a "${AS_A[@]}" --set replicas=2 --wait --timeout 60s 2>&1)
ok $? "helm upgrade --wait as the tenant" || diag "$out"
is "$(kubectl get deploy web -n tenant-a -o jsonpath='{.status.readyReplicas}')" 2 "... now 2 ready replicas"
out=$(helm install web2 "$CH" -n tenant-a --kubeconfig "$WORKER_KC" --kube-as-user "$SA" --wait --timeout 60s 2>&1)
ok $? "helm install --wait from the worker's kubeconfig with --kube-as-user only" || diag "$out"
WORKER_GROUPS=$(helm install web3 "$CH" -n tenant-a --kubeconfig "$WORKER_KC" "${AS_A[@]}" 2>&1)
like "$WORKER_GROUPS" 'Error: INSTALLATION FAILED: Kubernetes cluster unreachable: unknown' \
    "... but with --kube-as-group the worker needs impersonate on groups too: helm fails at discovery"
out=$(kw get cm -n tenant-a --as "$SA" --as-group system:serviceaccounts 2>&1)
like "$out" 'groups "system:serviceaccounts" is forbidden: User "helmq-worker" cannot impersonate resource "groups" in API group "" at the cluster scope' \
    "... (kubectl --as-group shows why)"

diag "t=$((SECONDS - t_start)) s"
# --- 6. the tenant's identity cannot touch tenant-b
INSTALL_B=$(helm install web "$CH" -n tenant-b "${AS_A[@]}" 2>&1)
rc=$?
[ $rc -ne 0 ]
ok $? "helm install into tenant-b as tenant-a's identity fails"
like "$INSTALL_B" 'configmaps "web-cfg" is forbidden: User "system:serviceaccount:tenant-a:helmq-tenant" cannot get resource "configmaps" in API group "" in the namespace "tenant-b"' \
    "... Forbidden on its first resource (helm GETs each one before creating)"
UPGRADE_B=$(helm upgrade --install web "$CH" -n tenant-b "${AS_A[@]}" 2>&1)
like "$UPGRADE_B" 'secrets is forbidden: User "system:serviceaccount:tenant-a:helmq-tenant" cannot list resource "secrets" in API group "" in the namespace "tenant-b"' \
    "helm upgrade --install into tenant-b: Forbidden listing its release Secrets"
r=$(as_tenant GET /api/v1/namespaces/tenant-b/secrets)
is "$(st "$r")" "403 Status v1 Failure Forbidden" "the same list over curl: a 403 Status"
is "$(body "$r" | jq -c 'del(.message)')" \
    '{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","reason":"Forbidden","details":{"kind":"secrets"},"code":403}' \
    "... shaped like the real API's"
is "$(msg "$r")" 'secrets is forbidden: User "system:serviceaccount:tenant-a:helmq-tenant" cannot list resource "secrets" in API group "" in the namespace "tenant-b"' \
    "... with the real API's message"
r=$(as_tenant POST /api/v1/namespaces/tenant-b/configmaps '{"metadata":{"name":"x"}}')
is "$(code "$r") $(msg "$r")" '403 configmaps is forbidden: User "system:serviceaccount:tenant-a:helmq-tenant" cannot create resource "configmaps" in API group "" in the namespace "tenant-b"' \
    "creating a configmap in tenant-b: 403"
is "$(ns_content tenant-b)" "$EMPTY_NS" "nothing was created in tenant-b"

diag "t=$((SECONDS - t_start)) s"
# --- 7. charts that reach out of tenant-a
bad() { # bad RELEASE VALUE: helm install with one out-of-bounds template; prints helm's output
    helm install "$1" "$CH" -n tenant-a "${AS_A[@]}" --set "$2=true" 2>&1
    echo "rc=$?"
}
PIN=$(bad pin pinB)
like "$PIN" "rc=1" "a ConfigMap pinned to namespace tenant-b: the install fails"
like "$PIN" 'configmaps "pin-pinned" is forbidden: User "system:serviceaccount:tenant-a:helmq-tenant" cannot get resource "configmaps" in API group "" in the namespace "tenant-b"' \
    "... Forbidden (helm first GETs it)"
out=$(helm upgrade web "$CH" -n tenant-a "${AS_A[@]}" --set pinB=true 2>&1)
UPGRADE_PIN=$out
like "$out" 'configmaps "web-pinned" is forbidden' "an upgrade adding the pinned ConfigMap fails too"
out=$(bad cr clusterRole)
seen "helm install, ClusterRole" "$out"
like "$out" 'clusterroles.rbac.authorization.k8s.io "cr-cr" is forbidden: User "system:serviceaccount:tenant-a:helmq-tenant" cannot get resource "clusterroles" in API group "rbac.authorization.k8s.io" at the cluster scope' \
    "a ClusterRole: Forbidden at the cluster scope"
out=$(bad crb clusterRoleBinding)
seen "helm install, ClusterRoleBinding" "$out"
like "$out" 'clusterrolebindings.rbac.authorization.k8s.io "crb-crb" is forbidden' "a ClusterRoleBinding to cluster-admin: Forbidden"
out=$(bad nsx namespace)
seen "helm install, Namespace" "$out"
like "$out" 'namespaces "nsx-ns" is forbidden: User "system:serviceaccount:tenant-a:helmq-tenant" cannot get resource "namespaces" in API group "" in the namespace "nsx-ns"' \
    "a Namespace: Forbidden"
out=$(bad crd crd)
seen "helm install, CRD template" "$out"
like "$out" 'customresourcedefinitions.apiextensions.k8s.io "widgets.evil.example.com" is forbidden' "a CRD template: Forbidden"
cp "$CH/Chart.yaml" "$T/charts/crdchart/Chart.yaml"
sed -i 's/^name: app/name: crdchart/' "$T/charts/crdchart/Chart.yaml"
cat >"$T/charts/crdchart/crds/widgets.yaml" <<'EOF2'
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: gadgets.evil.example.com}
spec:
  group: evil.example.com
  scope: Namespaced
  names: {plural: gadgets, singular: gadget, kind: Gadget}
  versions: [{name: v1, served: true, storage: true, schema: {openAPIV3Schema: {type: object}}}]
EOF2
CRDDIR=$(helm install crdchart "$T/charts/crdchart" -n tenant-a "${AS_A[@]}" 2>&1)
like "$CRDDIR" 'customresourcedefinitions.apiextensions.k8s.io is forbidden: User "system:serviceaccount:tenant-a:helmq-tenant" cannot create resource "customresourcedefinitions" in API group "apiextensions.k8s.io" at the cluster scope' \
    "a CRD in the chart's crds/: create Forbidden"
HOOK=$(bad hook hookKubeSystem)
like "$HOOK" 'jobs.batch "hook-hook" is forbidden: User "system:serviceaccount:tenant-a:helmq-tenant" cannot delete resource "jobs" in API group "batch" in the namespace "kube-system"' \
    "a hook Job in kube-system: Forbidden (helm first deletes a previous hook: before-hook-creation)"
out=$(bad rsec releaseSecretB)
seen "helm install, release Secret in tenant-b" "$out"
like "$out" 'secrets "sh.helm.release.v1.other.v1" is forbidden: User "system:serviceaccount:tenant-a:helmq-tenant" cannot get resource "secrets" in API group "" in the namespace "tenant-b"' \
    "a Secret named like another release's in tenant-b: Forbidden"
out=$(bad rbadmin roleBindingAdmin)
seen "helm install, RoleBinding to cluster-admin" "$out"
like "$out" 'rolebindings.rbac.authorization.k8s.io "rbadmin-admin" is forbidden: User "system:serviceaccount:tenant-a:helmq-tenant" cannot get resource "rolebindings"' \
    "a RoleBinding to cluster-admin in tenant-a: Forbidden"
for p in /apis/rbac.authorization.k8s.io/v1/clusterroles /apis/apiextensions.k8s.io/v1/customresourcedefinitions \
    /api/v1/namespaces /apis/rbac.authorization.k8s.io/v1/clusterrolebindings; do
    r=$(as_tenant POST "$p" '{"metadata":{"name":"evil"}}')
    is "$(code "$r") $(body "$r" | jq -r '"\(.kind) \(.reason) \(.details.kind)"')" "403 Status Forbidden ${p##*/}" "POST $p as the tenant: 403 Status (curl)"
done
r=$(as_tenant POST /apis/batch/v1/namespaces/kube-system/jobs '{"metadata":{"name":"evil"}}')
is "$(code "$r") $(msg "$r")" '403 jobs.batch is forbidden: User "system:serviceaccount:tenant-a:helmq-tenant" cannot create resource "jobs" in API group "batch" in the namespace "kube-system"' \
    "POST a Job to kube-system as the tenant: 403 (curl)"
r=$(as_tenant GET /api/v1/namespaces/tenant-b/secrets/sh.helm.release.v1.other.v1)
is "$(code "$r") $(body "$r" | jq -c .details)" '403 {"name":"sh.helm.release.v1.other.v1","kind":"secrets"}' \
    "GET another namespace's release Secret: 403 with details.name (curl)"
is "$(cluster_snapshot)" "$SNAP0" "no namespace, ClusterRole, ClusterRoleBinding or CRD was created"
is "$(ns_content tenant-b)" "$EMPTY_NS" "nothing was created in tenant-b"
is "$(names /apis/batch/v1/namespaces/kube-system/jobs)" "" "no Job in kube-system"
is "$(names /apis/rbac.authorization.k8s.io/v1/namespaces/tenant-a/rolebindings)" helmq-tenant "tenant-a has only its own RoleBinding"

diag "t=$((SECONDS - t_start)) s"
# --- 8. RBAC escalation prevention
out=$(kubectl create rolebinding pwn -n tenant-a --clusterrole cluster-admin --serviceaccount tenant-a:helmq-tenant "${KAS_A[@]}" 2>&1)
seen "kubectl as the tenant: RoleBinding to cluster-admin" "$out"
like "$out" 'rolebindings.rbac.authorization.k8s.io is forbidden: User "system:serviceaccount:tenant-a:helmq-tenant" cannot create resource "rolebindings" in API group "rbac.authorization.k8s.io" in the namespace "tenant-a"' \
    "the tenant identity cannot create a RoleBinding to cluster-admin"
out=$(kw create rolebinding pwn -n tenant-a --clusterrole cluster-admin --user helmq-worker 2>&1)
ESC_BIND=$out
like "$out" 'rolebindings.rbac.authorization.k8s.io "pwn" is forbidden: user "helmq-worker" (groups=["system:authenticated"]) is attempting to grant RBAC permissions not currently held:' \
    "the worker (bind only on roles) cannot bind cluster-admin: escalation refused"
like "$out" '{APIGroups:["*"], Resources:["*"], Verbs:["*"]}' "... listing the missing rule"
r=$(api "$(sed -n 's/^ *token: *//p' "$WORKER_KC")" POST /apis/rbac.authorization.k8s.io/v1/namespaces/tenant-a/rolebindings \
    '{"metadata":{"name":"pwn"},"roleRef":{"apiGroup":"rbac.authorization.k8s.io","kind":"ClusterRole","name":"cluster-admin"},"subjects":[{"kind":"User","name":"helmq-worker"}]}')
is "$(code "$r") $(body "$r" | jq -c .details)" '403 {"name":"pwn","group":"rbac.authorization.k8s.io","kind":"rolebindings"}' "... a 403 Status (curl)"
# a user who may create roles in tenant-a but holds only get on configmaps there
EDITOR=$(kube_kubeconfig_for rb-editor "" "$T/editor.kubeconfig")
kubectl apply -f - >/dev/null <<'EOF2'
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: rb-editor, namespace: tenant-a}
rules:
- {apiGroups: [rbac.authorization.k8s.io], resources: [roles, rolebindings], verbs: [create, get]}
- {apiGroups: [""], resources: [configmaps], verbs: [get, list]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: rb-editor, namespace: tenant-a}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: rb-editor}
subjects: [{kind: User, name: rb-editor}]
EOF2
ke() { kubectl --kubeconfig "$T/editor.kubeconfig" "$@"; }
out=$(ke create role cm-reader -n tenant-a --verb get --resource configmaps 2>&1)
like "$out" "created" "a user may create a Role granting what it holds (get configmaps)"
out=$(ke create rolebinding cm-reader -n tenant-a --role cm-reader --user someone 2>&1)
like "$out" "created" "... and bind it (holding its rules)"
out=$(ke create role sec-reader -n tenant-a --verb get --resource secrets 2>&1)
seen "kubectl: rb-editor creates a Role granting get secrets" "$out"
like "$out" 'roles.rbac.authorization.k8s.io "sec-reader" is forbidden: user "rb-editor" (groups=["system:authenticated"]) is attempting to grant RBAC permissions not currently held:' \
    "... but not a Role granting get secrets"
like "$out" '{APIGroups:[""], Resources:["secrets"], Verbs:["get"]}' "... naming the missing rule"
out=$(ke create rolebinding pwn -n tenant-a --role helmq-tenant --user rb-editor 2>&1)
like "$out" 'rolebindings.rbac.authorization.k8s.io "pwn" is forbidden' "... nor bind the tenant's Role (which it does not hold)"
is "$(names /apis/rbac.authorization.k8s.io/v1/namespaces/tenant-a/roles)" "cm-reader,helmq-tenant,rb-editor" \
    "the refused Roles were not created"
[ -n "$EDITOR" ]
ok $? "kube_kubeconfig_for printed the token"

diag "t=$((SECONDS - t_start)) s"
# --- the emulator answered no 5xx
! grep -q ' 5[0-9][0-9] ' "$T/kube/kube.log"
ok $? "the emulator logged no 5xx answer"
seen "helm install into tenant-b" "$INSTALL_B"
seen "helm upgrade --install into tenant-b" "$UPGRADE_B"
seen "helm install, ConfigMap pinned to tenant-b" "$PIN"
seen "helm upgrade, ConfigMap pinned to tenant-b" "$UPGRADE_PIN"
seen "helm install, CRD in crds/" "$CRDDIR"
seen "helm install, hook Job in kube-system" "$HOOK"
seen "helm from the worker with --kube-as-group" "$WORKER_GROUPS"
seen "helm with an unknown token" "$BOGUS_HELM"
seen "kubectl: the worker binds cluster-admin" "$ESC_BIND"
while IFS= read -r l; do diag "$l"; done <"$T/seen"
diag "wall time $((SECONDS - t_start)) s"
done_testing
