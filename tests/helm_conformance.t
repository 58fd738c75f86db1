#!/bin/bash
# helm_conformance.t: the argv shapes the worker builds are accepted by REAL helm 3
# (it gets as far as contacting the cluster, which is unreachable here) and by the
# simulator (which succeeds), and both refuse malformed command lines with the same
# error text and exit code.
cd "$(dirname "$0")/.." || exit 1
. tests/lib/tap.sh

ROOT=$PWD
HELM=$ROOT/build/tools/helm
SIM=$ROOT/tests/helm-sim/helm
TMP=$(mktemp -d "${TMPDIR:-/tmp}/helm_conformance.XXXXXX")
trap 'rm -rf "$TMP"' EXIT

if ! tests/lib/install-real-helm.sh "$HELM" 2>"$TMP/install.log"; then
    if [ "${CI:-}" = true ]; then
        while IFS= read -r line; do diag "$line"; done <"$TMP/install.log"
        ok 1 "install real helm with tests/lib/install-real-helm.sh (required in CI)"
        done_testing
        exit 1
    fi
    skip_all "real helm could not be installed (tests/lib/install-real-helm.sh: $(tail -1 "$TMP/install.log"))"
fi
ok 0 "real helm is installed at build/tools/helm"
like "$("$HELM" version --short 2>&1)" "v3." "real helm is helm 3"

# Real helm against a cluster that refuses connections, with private helm homes.
unset HELM_NAMESPACE HELM_KUBECONTEXT HELM_KUBEAPISERVER HELM_KUBETOKEN HELM_DRIVER HELM_DEBUG \
      HELM_MAX_HISTORY HELM_SIM_SLEEP HELM_SIM_UNREACHABLE HELM_SIM_APP_VERSION HELM_SIM_CHART_VERSION
cat >"$TMP/kubeconfig" <<'EOF'
apiVersion: v1
kind: Config
clusters:
- name: unreachable
  cluster:
    server: https://127.0.0.1:1
    insecure-skip-tls-verify: true
contexts:
- name: unreachable
  context:
    cluster: unreachable
    user: nobody
    namespace: default
current-context: unreachable
users:
- name: nobody
  user:
    token: not-a-token
EOF
chmod 600 "$TMP/kubeconfig"
mkdir -p "$TMP/cache" "$TMP/config" "$TMP/data"
real() {
    KUBECONFIG=$TMP/kubeconfig HELM_CACHE_HOME=$TMP/cache HELM_CONFIG_HOME=$TMP/config \
        HELM_DATA_HOME=$TMP/data timeout 60 "$HELM" "$@"
}
sim() { HELM_SIM_STATE=$TMP/sim-state "$SIM" "$@"; }

# A tiny local chart (helm needs the chart before it contacts the cluster).
CHART=$TMP/demo
mkdir -p "$CHART/templates"
cat >"$CHART/Chart.yaml" <<'EOF'
apiVersion: v2
name: demo
description: helmq conformance chart
type: application
version: 1.0.0
appVersion: "2.0.0"
EOF
cat >"$CHART/templates/configmap.yaml" <<'EOF'
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ .Release.Name }}-demo
data:
  replicas: {{ .Values.replicas | default 1 | quote }}
EOF
VALUES=$TMP/values.json
printf '{"replicas": 2, "image": {"tag": "v1"}}\n' >"$VALUES"
chmod 600 "$VALUES"
NS=tenant-a
args=()
UNREACHABLE='^Error: (INSTALLATION FAILED: |UPGRADE FAILED: )?Kubernetes cluster unreachable: '

# The worker's argv shapes, in an order that is a valid lifecycle for the simulator.
# Each line is shell words; $REL, $CHART, $NS and $VALUES are expanded when it runs.
SHAPES=(
# long forms, no optional flags
'install "$REL" "$CHART" --namespace "$NS" --create-namespace --version 1.0.0 --values "$VALUES" --timeout 600s --output json'
'upgrade "$REL" "$CHART" --namespace "$NS" --version 1.0.0 --values "$VALUES" --timeout 600s --output json'
'status "$REL" --namespace "$NS" --output json'
'history "$REL" --namespace "$NS" --max 256 --output json'
'list --namespace "$NS" --all --output json'
'rollback "$REL" --namespace "$NS" --timeout 300s'
'rollback "$REL" 1 --namespace "$NS" --timeout 300s'
'uninstall "$REL" --namespace "$NS" --timeout 300s'
# long forms with every optional flag
'install "$REL" "$CHART" --namespace "$NS" --create-namespace --version 1.0.0 --values "$VALUES" --timeout 600s --wait --wait-for-jobs --description "installed by helmq" --output json'
'upgrade "$REL" "$CHART" --namespace "$NS" --version 1.0.0 --values "$VALUES" --timeout 600s --wait --wait-for-jobs --description "upgraded by helmq" --output json'
'rollback "$REL" 1 --namespace "$NS" --timeout 300s --wait --wait-for-jobs'
'rollback "$REL" --namespace "$NS" --timeout 300s --wait --wait-for-jobs'
'uninstall "$REL" --namespace "$NS" --timeout 300s --description "tenant asked" --wait'
# short and --flag=value forms
'install "$REL" "$CHART" -n "$NS" --create-namespace --version=1.0.0 --values="$VALUES" --timeout=600s --wait --wait-for-jobs --description="a b" -o json'
'upgrade "$REL" "$CHART" -n "$NS" --version=1.0.0 -f "$VALUES" --timeout=10m -o json'
'status "$REL" -n "$NS" -o json'
'status "$REL" --namespace="$NS" --output=json'
'history "$REL" -n "$NS" --max=256 -o json'
'list -n "$NS" -a -o json'
'list --namespace="$NS" --all --output=json'
'rollback "$REL" 2 -n "$NS" --timeout=5m --wait --wait-for-jobs'
'uninstall "$REL" -n "$NS" --timeout=1m30s --description="a b" --wait'
# the cluster and registry flags (HELMQ_KUBECONFIG, HELMQ_KUBE_CONTEXT, HELMQ_REGISTRY_CONFIG, HELMQ_REGISTRY_PLAIN_HTTP)
'install "$REL" "$CHART" --namespace "$NS" --kubeconfig "$TMP/kubeconfig" --kube-context unreachable --registry-config "$TMP/registry.json" --create-namespace --version 1.0.0 --values "$VALUES" --plain-http --timeout 600s --wait --output json'
'upgrade "$REL" "$CHART" --namespace "$NS" --kubeconfig "$TMP/kubeconfig" --kube-context unreachable --registry-config "$TMP/registry.json" --version 1.0.0 --values "$VALUES" --plain-http --timeout 600s --wait --output json'
'status "$REL" --namespace "$NS" --kubeconfig "$TMP/kubeconfig" --kube-context unreachable --registry-config "$TMP/registry.json" --output json'
'rollback "$REL" 1 --namespace "$NS" --kubeconfig "$TMP/kubeconfig" --kube-context unreachable --timeout 300s --wait'
'uninstall "$REL" --namespace "$NS" --kubeconfig "$TMP/kubeconfig" --kube-context unreachable --registry-config "$TMP/registry.json" --timeout 300s --wait'
)

# ---------------------------------------------------------------- real helm
REL=conformance
seen=" "
for line in "${SHAPES[@]}"; do
    eval "args=($line)"
    out=$(real "${args[@]}" 2>"$TMP/err"); rc=$?
    err=$(cat "$TMP/err")
    sub=${args[0]}
    case "$seen" in *" $sub "*) ;; *) diag "real helm ${args[*]}"; diag "  -> exit $rc: $err"; seen="$seen$sub " ;; esac
    name="real helm accepts: helm ${args[*]}"
    if [ "$rc" -eq 1 ] && [ -z "$out" ] && [ "$(printf '%s\n' "$err" | wc -l)" -eq 1 ] &&
        printf '%s' "$err" | grep -Eq "$UNREACHABLE"; then
        ok 0 "$name"
    else
        ok 1 "$name"
        diag "exit $rc, stdout: $out"
        diag "stderr: $err"
    fi
done
out=$(real version --short 2>&1); rc=$?
diag "real helm version --short -> exit $rc: $out"
is "$rc" 0 "real helm accepts: helm version --short"
like "$out" "v3.17" "real helm is v3.17"

# ---------------------------------------------------------------- simulator
REL=conformance
for line in "${SHAPES[@]}"; do
    eval "args=($line)"
    out=$(sim "${args[@]}" 2>"$TMP/err"); rc=$?
    err=$(cat "$TMP/err")
    name="simulator accepts and succeeds: helm ${args[*]}"
    case " ${args[*]} " in
    *" json "* | *"--output=json"*)
        printf '%s' "$out" | /usr/bin/python3 -c 'import json,sys; json.load(sys.stdin)' 2>/dev/null
        js=$? ;;
    *) js=0 ;;
    esac
    if [ "$rc" -eq 0 ] && [ -z "$err" ] && [ "$js" -eq 0 ]; then
        ok 0 "$name"
    else
        ok 1 "$name"
        diag "exit $rc, json ok: $js, stderr: $err"
    fi
done
out=$(sim version --short 2>&1); rc=$?
is "$rc|$out" "0|v3.17.3-sim" "simulator accepts: helm version --short"

# ---------------------------------------------------------------- same refusals
# Command lines helm rejects before it needs a cluster: the simulator must print the
# same stderr, nothing on stdout, and exit with the same code.
printf '[1, 2]\n' >"$TMP/array.json"
mkdir -p "$TMP/empty-dir"
REL=conformance
BAD=(
'install "$REL" "$CHART" --foo'
'install "$REL" "$CHART" -x'
'install "$REL" "$CHART" ---x'
'install "$REL" "$CHART" --keep-history'
'install "$REL" "$CHART" --timeout bogus'
'install "$REL" "$CHART" --timeout 10'
'install "$REL" "$CHART" --timeout=1d'
'install "$REL" "$CHART" --timeout ""'
'install "$REL" "$CHART" -o xml'
'install "$REL" "$CHART" --output=yamlx'
'install "$REL" "$CHART" --wait=maybe'
'install "$REL" "$CHART" -n'
'install "$REL" "$CHART" --output'
'install'
'install "$REL"'
'install "$REL" "$CHART" extra'
'install "$REL" /nonexistent/chart'
'install "$REL" ./nonexistent-chart'
'install "$REL" nginx'
'install "$REL" "$TMP/empty-dir"'
'install "$REL" "$CHART" --values "$TMP/missing.json"'
'install "$REL" "$CHART" --values "$TMP/array.json"'
'upgrade "$REL"'
'upgrade "$REL" "$CHART" extra'
'upgrade "$REL" /nonexistent/chart'
'upgrade "$REL" "$CHART" --values "$TMP/missing.json"'
'upgrade "$REL" "$CHART" --values "$TMP/array.json"'
'upgrade "$REL" "$CHART" --timeout 5x'
'rollback'
'rollback "$REL" x'
'rollback "$REL" -1'
'rollback "$REL" --description x'
'uninstall'
'uninstall "$REL" --timeout'
'status'
'status a b'
'status "$REL" --timeout 5s'
'status "$REL" -o bogus'
'history'
'history "$REL" --max x'
'history "$REL" --max ""'
'history "$REL" -n'
'list extra'
'list --all=maybe'
'version extra'
'foo'
)
for line in "${BAD[@]}"; do
    eval "args=($line)"
    rout=$(real "${args[@]}" 2>"$TMP/rerr"); rrc=$?
    sout=$(sim "${args[@]}" 2>"$TMP/serr"); src=$?
    rerr=$(cat "$TMP/rerr"); serr=$(cat "$TMP/serr")
    name="same refusal: helm ${args[*]}"
    case "$rerr" in
    *"Kubernetes cluster unreachable"*)
        ok 1 "$name"; diag "real helm got past argument checks: $rerr"; continue ;;
    esac
    if [ "$rrc" = "$src" ] && [ "$rerr" = "$serr" ] && [ "$rout" = "$sout" ]; then
        ok 0 "$name"
    else
        ok 1 "$name"
        diag "real: exit $rrc stdout [$rout] stderr [$rerr]"
        diag "sim:  exit $src stdout [$sout] stderr [$serr]"
    fi
done

# Every argv the worker itself builds (helmq-worker argv, the same code the
# worker runs), for each kind of command, through real helm: only the
# unreachable cluster stops it.
HELMQ_BIN=${HELMQ_BIN:-$ROOT/bin}
mkdir -p "$TMP/charts"
cp -r "$CHART" "$TMP/charts/matih-ai-service"
echo '{"replicaCount": 2}' >"$TMP/worker-values.json"
SEEDCMD=$("$HELMQ_BIN/helmq" install -f tests/fixtures/seed-install.json --dry-run)
worker_cases=(
    "$SEEDCMD"
    "$(jq -c '.description = "first install, with words"' <<<"$SEEDCMD")"
    "$(jq -c '.operation = "upgrade" | .waitForJobs = false | .timeout = 90' <<<"$SEEDCMD")"
    "$(jq -c '.operation = "upgrade" | .description = "upgrade to 1.0.0"' <<<"$SEEDCMD")"
    "$(jq -c '{operation: "rollback", commandId, tenantId, namespace, releaseName, performedBy, requestedAt, timeout: 120, waitForJobs: true, revision: 3}' <<<"$SEEDCMD")"
    "$(jq -c '{operation: "rollback", commandId, tenantId, namespace, releaseName, performedBy, requestedAt, timeout: 120}' <<<"$SEEDCMD")"
    "$(jq -c '{operation: "uninstall", commandId, tenantId, namespace, releaseName, performedBy, requestedAt, timeout: 60, reason: "Tenant migration", description: "bye"}' <<<"$SEEDCMD")"
)
echo '{"auths": {}}' >"$TMP/registry.json"
for cmd in "${worker_cases[@]}" "cluster flags"; do
    if [ "$cmd" = "cluster flags" ]; then
        # The same seed install with every cluster and registry option set.
        HELMQ_KUBECONFIG=$TMP/kubeconfig HELMQ_KUBE_CONTEXT=unreachable HELMQ_REGISTRY_CONFIG=$TMP/registry.json \
            HELMQ_REGISTRY_PLAIN_HTTP=true HELMQ_HELM=helm HELMQ_CHART_REPO=$TMP/charts \
            "$HELMQ_BIN/helmq-worker" argv "$TMP/worker-values.json" <<<"$SEEDCMD" >"$TMP/argvs"
        op="install, cluster flags"
        first=$(head -1 "$TMP/argvs")
        for flag in --kubeconfig --kube-context --registry-config --plain-http --wait; do
            like "$first" "\"$flag\"" "worker argv (cluster flags): the install has $flag"
        done
        like "$(sed -n 2p "$TMP/argvs")" '"--kube-context","unreachable"' "worker argv (cluster flags): status has --kube-context"
    else
        op=$(jq -r .operation <<<"$cmd")
        HELMQ_HELM=helm HELMQ_CHART_REPO=$TMP/charts "$HELMQ_BIN/helmq-worker" argv "$TMP/worker-values.json" <<<"$cmd" >"$TMP/argvs"
    fi
    while IFS= read -r line; do
        mapfile -t args < <(jq -r '.[1:][]' <<<"$line")
        out=$(real "${args[@]}" 2>&1)
        rc=$?
        shape="${args[0]} $(jq -r '.[2:] | map(select(startswith("-"))) | join(" ")' <<<"$line")"
        is "$rc" 1 "worker argv ($op): helm $shape exits 1 (no cluster)"
        like "$out" "Kubernetes cluster unreachable" "worker argv ($op): helm $shape fails only on the cluster"
        unlike "$out" "unknown flag" "worker argv ($op): helm $shape has no flag error"
    done <"$TMP/argvs"
done

done_testing
