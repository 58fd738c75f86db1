#!/bin/bash
# registry.t: the real OCI chart registry of tests/lib/registry.sh (Debian's
# docker-registry) with the test charts of tests/charts/ pushed, pulled and
# rendered by REAL helm: both published versions and their appVersions, what
# the chart renders from the seed's values, helm's exact errors for a missing
# version, a missing chart and an unreachable registry (printed as
# diagnostics), data kept across a restart, start failures reported with the
# registry's log, and the htpasswd mode with a helm registry config file.
# shellcheck disable=SC2030,SC2031,SC2119 # subshells keep their registry settings on purpose
. "$(dirname "$0")/lib/tap.sh"
. "$(dirname "$0")/lib/common.sh"
. tests/lib/registry.sh

H=$REGISTRY_HELM
[ -x "$H" ] || skip_all "real helm is not installed at build/tools/helm (make deps)"
[ -x "$REGISTRY_BIN" ] || skip_all "$REGISTRY_BIN is missing (Debian package docker-registry; make deps)"
/usr/bin/python3 -c 'import yaml' 2>/dev/null || skip_all "python3-yaml is missing (it comes with docker-compose; make deps)"
unset HELM_NAMESPACE HELM_KUBECONTEXT HELM_KUBEAPISERVER HELM_DEBUG HELM_REGISTRY_CONFIG \
    HELM_CACHE_HOME HELM_CONFIG_HOME HELM_DATA_HOME
started=$SECONDS

# to_json: multi-document YAML on stdin -> a JSON array of the documents.
to_json() { /usr/bin/python3 -c 'import sys, yaml, json; print(json.dumps([d for d in yaml.safe_load_all(sys.stdin) if d]))'; }
# q JSON JQ-FILTER: one jq answer, raw.
q() { printf '%s' "$1" | jq -r "$2"; }
SEED='{"replicaCount": 2, "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"cpu": "2", "memory": "4Gi"}}}'
printf '%s\n' "$SEED" >"$T/seed.json"
CH=matih-ai-service

# ---- the chart sources lint ---------------------------------------------------
out=$("$H" lint --strict tests/charts/$CH 2>&1)
ok $? "helm lint --strict tests/charts/$CH" || diag "$out"
for c in tiny-config escape; do
    out=$("$H" lint --strict tests/charts/$c 2>&1)
    ok $? "helm lint --strict tests/charts/$c" || diag "$out"
done
# (tests/charts/escape reaches beyond its namespace on purpose: tests/tenant_escape.t)
for f in $(grep -rlE '^ *namespace:' tests/charts/*/templates | grep -v '^tests/charts/escape/'); do
    bad=$(grep -nE '^ *namespace:' "$f" | grep -v '{{ .Release.Namespace }}')
    is "$bad" "" "$f sets no namespace other than {{ .Release.Namespace }}"
done

# ---- start ----------------------------------------------------------------------
t0=$SECONDS
registry_start "$T/reg" 2>"$T/start.err"
ok $? "registry_start" || { diag "$(cat "$T/start.err")"; bail "the registry did not start"; }
at_exit registry_stop
diag "registry on $REGISTRY_ADDR (pid $REGISTRY_PID), started in $((SECONDS - t0)) s"
like "$REGISTRY_ADDR" "127.0.0.1:" "REGISTRY_ADDR is on 127.0.0.1"
is "$HELMQ_CHART_REPO" "oci://$REGISTRY_ADDR/charts" "HELMQ_CHART_REPO is oci://\$REGISTRY_ADDR/charts"
kill -0 "$REGISTRY_PID" 2>/dev/null
ok $? "REGISTRY_PID is a live process"
like "$(tr '\0' ' ' </proc/"$REGISTRY_PID"/cmdline)" "docker-registry serve $T/reg/registry.yml" "REGISTRY_PID is docker-registry serve with the written config"
is "$(curl -s -o /dev/null -w '%{http_code}' "http://$REGISTRY_ADDR/v2/")" 200 "GET /v2/ answers 200 (no auth by default)"
is "$HELM_REGISTRY_CONFIG" "$T/reg/helm/config/registry/config.json" "HELM_REGISTRY_CONFIG is private to the run directory"
is "$HELM_CACHE_HOME|$HELM_CONFIG_HOME|$HELM_DATA_HOME" "$T/reg/helm/cache|$T/reg/helm/config|$T/reg/helm/data" \
    "HELM_CACHE_HOME, HELM_CONFIG_HOME, HELM_DATA_HOME are private to the run directory"
grep -q "rootdirectory: $T/reg/registry" "$T/reg/registry.yml"
ok $? "the registry stores under RUN_DIR/registry"

# ---- push ------------------------------------------------------------------------
t0=$SECONDS
registry_push_charts 2>"$T/push.err"
ok $? "registry_push_charts packages and pushes tests/charts/VERSIONS with real helm" || diag "$(cat "$T/push.err")"
diag "packaged and pushed tests/charts/VERSIONS in $((SECONDS - t0)) s"
for v in 1.0.0 1.1.0; do
    out=$("$H" lint --strict "$T/reg/charts-pkg/$CH-$v.tgz" 2>&1)
    ok $? "helm lint --strict of the packaged $CH $v" || diag "$out"
done
tags=$(curl -s "http://$REGISTRY_ADDR/v2/charts/$CH/tags/list" | jq -r '.tags | sort | join(",")')
is "$tags" "1.0.0,1.1.0,1.2.0" "the registry's tags for charts/$CH"
is "$(curl -s "http://$REGISTRY_ADDR/v2/charts/tiny-config/tags/list" | jq -r '.tags | join(",")')" "0.1.0" \
    "the registry's tags for charts/tiny-config"

# ---- show chart: version and appVersion -----------------------------------------
for pair in 1.0.0:2.0.0 1.1.0:2.1.0; do
    v=${pair%%:*} app=${pair#*:}
    out=$("$H" show chart "$HELMQ_CHART_REPO/$CH" --version "$v" --plain-http 2>&1)
    ok $? "helm show chart $CH --version $v --plain-http" || diag "$out"
    j=$(printf '%s\n' "$out" | grep -v '^Pulled:\|^Digest:' | to_json)
    is "$(q "$j" '.[0].version + " " + .[0].appVersion')" "$v $app" "$CH $v has appVersion $app"
done
out=$("$H" show chart "$HELMQ_CHART_REPO/$CH" --plain-http 2>/dev/null | grep -E '^version:')
newest=$(awk -v c="$CH" '$1 == c { print $2 }' tests/charts/VERSIONS | sort -V | tail -1)
is "$out" "version: $newest" "with no --version helm takes the newest, $newest"

# ---- template: what the chart renders ---------------------------------------------
render() { # render VERSION ARGS... -> JSON array of the documents
    "$H" template r1 "$HELMQ_CHART_REPO/$CH" --version "$1" --plain-http -n tenant-ns "${@:2}" 2>"$T/template.err" | to_json
}
j=$(render 1.0.0 -f "$T/seed.json" --set-json 'podAnnotations={"example.com/a":"b"}')
is "$(q "$j" '[.[].kind] | sort | join(",")')" "ConfigMap,Deployment,Service" "1.0.0 renders a Deployment, a Service and a ConfigMap (no Job by default)" ||
    diag "$(cat "$T/template.err")"
D='.[] | select(.kind == "Deployment")'
is "$(q "$j" "$D | .spec.replicas")" 2 "replicas come from replicaCount"
is "$(q "$j" "$D | .spec.template.metadata.annotations[\"example.com/a\"]")" b "pod annotations come from podAnnotations"
is "$(q "$j" "$D | .spec.template.spec.containers[0].resources | [.requests.cpu, .requests.memory, .limits.cpu, .limits.memory] | join(\" \")")" \
    "500m 1Gi 2 4Gi" "resources come from the seed's values"
is "$(q "$j" "$D | .spec.template.spec.containers[0].image")" "registry.example.invalid/matih/ai-service:2.0.0" "the image tag defaults to appVersion"
is "$(q "$j" "$D | [.spec.template.spec.containers[0].env[].name] | join(\",\")")" "APP_VERSION" "1.0.0 sets no CHART_VERSION"
is "$(q "$j" '[.[] | .metadata.labels | [."app.kubernetes.io/name", ."app.kubernetes.io/instance", ."app.kubernetes.io/version", ."app.kubernetes.io/managed-by", ."helm.sh/chart"] | join(" ")] | unique | join("|")')" \
    "matih-ai-service r1 2.0.0 Helm matih-ai-service-1.0.0" "every resource has the standard labels"
is "$(q "$j" '[.[].metadata.namespace] | unique | join(",")')" "tenant-ns" "every resource is in the release namespace"
is "$(q "$j" '.[] | select(.kind == "Service") | .spec.selector["app.kubernetes.io/instance"]')" r1 "the Service selects the release's pods"
cm1=$(q "$j" "$D | .spec.template.metadata.annotations[\"checksum/config\"]")
j=$(render 1.0.0 --set-json 'config={"LOG_LEVEL":"debug","FEATURE_X":"on"}' --set-json 'env=[{"name":"COLOR","value":"blue"}]')
is "$(q "$j" '.[] | select(.kind == "ConfigMap") | .data | to_entries | map(.key + "=" + .value) | join(",")')" \
    "FEATURE_X=on,LOG_LEVEL=debug" "the ConfigMap's data come from config"
unlike "$(q "$j" "$D | .spec.template.metadata.annotations[\"checksum/config\"]")" "$cm1" "a changed config changes the pod template (checksum/config)"
is "$(q "$j" "$D | [.spec.template.spec.containers[0].env[] | .name + \"=\" + .value] | join(\",\")")" "APP_VERSION=2.0.0,COLOR=blue" "env comes from values"

j=$(render 1.1.0 -f "$T/seed.json" --set hookJob.enabled=true --set-json 'hookJob.podAnnotations={"emulator.helmq.dev/job":"fail"}')
is "$(q "$j" '[.[].kind] | sort | join(",")')" "ConfigMap,Deployment,Job,Service" "1.1.0 with hookJob.enabled renders the Job too"
J='.[] | select(.kind == "Job")'
is "$(q "$j" "$J | .metadata.annotations | [.\"helm.sh/hook\", .\"helm.sh/hook-delete-policy\"] | join(\" \")")" \
    "post-install,post-upgrade before-hook-creation" "the Job is a post-install,post-upgrade hook, deleted before the next one"
is "$(q "$j" "$J | .spec.template.metadata.annotations[\"emulator.helmq.dev/job\"]")" fail "the Job's pod annotations come from hookJob.podAnnotations"
is "$(q "$j" "$J | .spec.template.spec.restartPolicy + \" \" + (.spec.backoffLimit | tostring) + \" \" + .metadata.namespace")" "Never 0 tenant-ns" "the Job runs once, in the release namespace"
is "$(q "$j" "$D | [.spec.template.spec.containers[0].env[] | .name + \"=\" + .value] | join(\",\")")" \
    "APP_VERSION=2.1.0,CHART_VERSION=1.1.0" "1.1.0 adds CHART_VERSION (the versions differ visibly)"
is "$(q "$j" '[.[] | .metadata.labels | ."app.kubernetes.io/version" + " " + ."helm.sh/chart"] | unique | join("|")')" \
    "2.1.0 matih-ai-service-1.1.0" "1.1.0's labels carry version 2.1.0 and chart matih-ai-service-1.1.0"
j=$(render 1.1.0 --set hookJob.enabled=true --set hookJob.asHook=false)
is "$(q "$j" "$J | (.metadata.annotations // {}) | has(\"helm.sh/hook\") | tostring")" false "hookJob.asHook=false renders a plain Job (for --wait-for-jobs)"

# ---- helm's errors ------------------------------------------------------------------
out=$("$H" show chart "$HELMQ_CHART_REPO/$CH" --version 9.9.9 --plain-http 2>&1)
rc=$?
ok $((rc == 0)) "a version missing from the registry fails (exit $rc)"
is "$out" "Error: $REGISTRY_ADDR/charts/$CH:9.9.9: not found" "helm's message for a missing version"
diag "missing version (helm show chart, exit $rc): $out"
out=$("$H" pull "$HELMQ_CHART_REPO/$CH" --version 9.9.9 --plain-http -d "$T" 2>&1)
is "$out" "Error: $REGISTRY_ADDR/charts/$CH:9.9.9: not found" "helm pull says the same for a missing version"
out=$("$H" template r1 "$HELMQ_CHART_REPO/no-such-chart" --version 1.0.0 --plain-http 2>&1)
rc=$?
ok $((rc == 0)) "a chart name missing from the registry fails (exit $rc)"
is "$out" "Error: $REGISTRY_ADDR/charts/no-such-chart:1.0.0: not found" "helm's message for a missing chart name"
diag "missing chart (helm template, exit $rc): $out"
out=$("$H" install r1 "$HELMQ_CHART_REPO/$CH" --version 9.9.9 --plain-http -n tenant-ns 2>&1)
is "$out" "Error: INSTALLATION FAILED: $REGISTRY_ADDR/charts/$CH:9.9.9: not found" "helm install's message for a missing version (before any cluster access)"
diag "missing version (helm install): $out"

# ---- stopped: connection refused; restarted: the charts are still there ----------------
port=${REGISTRY_ADDR#*:}
old_pid=$REGISTRY_PID
registry_stop
kill -0 "$old_pid" 2>/dev/null
ok $((!$?)) "registry_stop ended the registry"
out=$("$H" pull "$HELMQ_CHART_REPO/$CH" --version 1.1.0 --plain-http -d "$T" 2>&1)
rc=$?
ok $((rc == 0)) "helm pull from a stopped registry fails (exit $rc)"
is "$out" "Error: failed to do request: Head \"http://$REGISTRY_ADDR/v2/charts/$CH/manifests/1.1.0\": dial tcp $REGISTRY_ADDR: connect: connection refused" \
    "helm's message for an unreachable registry"
diag "registry unreachable (helm pull, exit $rc): $out"
t0=$SECONDS
registry_restart 2>"$T/restart.err"
ok $? "registry_restart" || diag "$(cat "$T/restart.err")"
is "$REGISTRY_ADDR" "127.0.0.1:$port" "the restarted registry is on the same port"
mkdir -p "$T/pulled" # helm pull -d does not create it
out=$("$H" pull "$HELMQ_CHART_REPO/$CH" --version 1.1.0 --plain-http -d "$T/pulled" 2>&1)
ok $? "after the restart helm pulls 1.1.0 again" || diag "$out"
out=$("$H" show chart "$HELMQ_CHART_REPO/$CH" --version 1.0.0 --plain-http 2>/dev/null | grep -E '^appVersion:')
is "$out" "appVersion: 2.0.0" "after the restart 1.0.0 is still there"
ls "$T/pulled/$CH-1.1.0.tgz" >/dev/null 2>&1
ok $? "the pulled package is $CH-1.1.0.tgz"
diag "restart and pulls took $((SECONDS - t0)) s"

# ---- start failures are reported with the registry's log -------------------------------
out=$( (REGISTRY_PID=; registry_start "$T/clash" --port "$port") 2>&1)
rc=$?
ok $((rc == 0)) "registry_start on a port in use fails (status $rc)"
like "$out" "port $port is already in use" "it says the port is in use"
like "$out" "address already in use" "and shows the registry's log tail"
out=$( (REGISTRY_PID=; REGISTRY_BIN=/bin/false registry_start "$T/false") 2>&1)
rc=$?
ok $((rc == 0)) "registry_start fails when the registry exits at once (status $rc)"
like "$out" "exited with status 1 before answering" "it says the registry exited"

# ---- htpasswd mode and a helm registry config file --------------------------------------
main_addr=$REGISTRY_ADDR main_pid=$REGISTRY_PID main_dir=$REGISTRY_DIR
(
    unset HELM_REGISTRY_CONFIG HELM_CACHE_HOME HELM_CONFIG_HOME HELM_DATA_HOME
    REGISTRY_PID=
    # this subshell's TAP counts go back to the parent
    trap 'registry_stop; echo "$_tap_n $_tap_fail" >"$T/auth.counts"' EXIT
    registry_start "$T/auth" --auth helmq:s3cret 2>"$T/auth-start.err"
    ok $? "registry_start --auth helmq:s3cret" || { diag "$(cat "$T/auth-start.err")"; exit 1; }
    is "$(curl -s -o /dev/null -w '%{http_code}' "http://$REGISTRY_ADDR/v2/")" 401 "GET /v2/ without credentials answers 401"
    is "$(curl -s -o /dev/null -w '%{http_code}' -u helmq:s3cret "http://$REGISTRY_ADDR/v2/")" 200 "GET /v2/ with the credentials answers 200"
    out=$(registry_push_charts 2>&1)
    ok $((!$?)) "pushing without logging in fails"
    like "$out" "Error: push access denied, repository does not exist or may require authorization: authorization failed: no basic auth credentials" \
        "helm push's message without credentials"
    registry_login 2>"$T/login.err"
    ok $? "registry_login (helm registry login --password-stdin)" || diag "$(cat "$T/login.err")"
    is "$(jq -r --arg a "$REGISTRY_ADDR" '.auths[$a].auth' "$HELM_REGISTRY_CONFIG" | base64 -d)" "helmq:s3cret" \
        "the credentials are in the private registry config file"
    registry_push_charts 2>"$T/auth-push.err"
    ok $? "after logging in the charts push" || diag "$(cat "$T/auth-push.err")"
    out=$("$H" show chart "$HELMQ_CHART_REPO/$CH" --version 1.1.0 --plain-http 2>&1 | grep -E '^appVersion:')
    is "$out" "appVersion: 2.1.0" "helm reads the chart with the registry config file"
    out=$("$H" show chart "$HELMQ_CHART_REPO/$CH" --version 1.1.0 --plain-http --registry-config "$T/auth/empty.json" 2>&1)
    ok $((!$?)) "without credentials helm cannot read the chart"
    is "$out" "Error: pull access denied, repository does not exist or may require authorization: authorization failed: no basic auth credentials" \
        "helm's message without credentials"
    diag "auth, no credentials (helm show chart): $out"
    printf '{"auths":{"%s":{"auth":"%s"}}}\n' "$REGISTRY_ADDR" "$(printf helmq:wrong | base64)" >"$T/auth/wrong.json"
    out=$("$H" show chart "$HELMQ_CHART_REPO/$CH" --version 1.1.0 --plain-http --registry-config "$T/auth/wrong.json" 2>&1)
    ok $((!$?)) "with wrong credentials in the config file helm cannot read the chart"
    is "$out" "Error: unexpected status from HEAD request to http://$REGISTRY_ADDR/v2/charts/$CH/manifests/1.1.0: 401 Unauthorized" \
        "helm's message for wrong credentials"
    diag "auth, wrong credentials (helm show chart): $out"
    out=$(printf wrong | "$H" registry login "$REGISTRY_ADDR" -u helmq --password-stdin --registry-config "$T/auth/x.json" 2>&1)
    ok $((!$?)) "helm registry login with a wrong password fails"
    is "$out" "Error: login attempt to http://$REGISTRY_ADDR/v2/ failed with status: 401 Unauthorized" "helm registry login's message for a wrong password"
)
if read -r n f <"$T/auth.counts" 2>/dev/null; then
    _tap_n=$n _tap_fail=$f
else
    ok 1 "the htpasswd subtest reported its counts"
fi
is "$REGISTRY_ADDR $REGISTRY_PID $REGISTRY_DIR" "$main_addr $main_pid $main_dir" "the auth registry left the first one's settings alone"

diag "registry.t took $((SECONDS - started)) s"
done_testing
