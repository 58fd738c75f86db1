#!/usr/bin/env bash
# real_helm.t: the seed's behaviours with REAL helm 3.17 against the emulated
# Kubernetes API (tests/kube/) and charts from a real OCI registry (Debian's
# docker-registry), asserting the cluster's own state (kubectl, helm's release
# Secrets), not only helmq's events and projection:
# the seed story; upgrade values reaching the Deployment; rollback restoring a
# revision's manifest; uninstall leaving nothing of the release in the namespace
# while record and history stay; a never-ready atomic install failing at its
# timeout with nothing left behind; a failing hook Job with waitForJobs; a chart
# or version missing from the registry; the registry down; the API server
# restarted in the middle of an upgrade; kill -9 of the worker during a --wait
# upgrade. helm's Secrets must agree with the projection's history.
. "$(dirname "$0")/lib/tap.sh"
. "$(dirname "$0")/lib/common.sh"
. "$(dirname "$0")/lib/stack.sh"
. "$(dirname "$0")/lib/cluster.sh"

stack_start
cluster_start "$T/cluster" >"$T/cluster.log" 2>&1 || { cat "$T/cluster.log" >&2; bail "the emulated cluster did not start"; }
at_exit cluster_stop
diag "emulated cluster: KUBECONFIG=$KUBECONFIG, charts in $HELMQ_CHART_REPO"
# helm's own --timeout must fire before the worker's SIGTERM (the backstop).
export HELMQ_TIMEOUT_GRACE_MS=4000
export HELMQ_KILL_GRACE_MS=5000
worker_start || bail "the worker did not start"
projector_start || bail "the projector did not start"

SEED=tests/fixtures/seed-install.json
NS=tenant-acme
REL=acme-ai-service
sel() { echo "app.kubernetes.io/instance=$1"; }
# kube_count NS KINDS RELEASE: resources of the release in the namespace.
kube_count() { kubectl_ get "$2" -n "$1" -l "$(sel "$3")" -o json 2>/dev/null | jq '.items | length'; }
deploy_json() { kubectl_ get deploy -n "$1" -l "$(sel "$2")" -o json | jq -c '.items[0]'; }
helm_secrets() { kubectl_ get secrets -n "$1" -l "owner=helm,name=$2" -o json | jq -r '[.items[].metadata.labels | "\(.version):\(.status)"] | sort_by(split(":")[0] | tonumber) | join(" ")'; }
terminal_count() { events_json --command-id "$1" | jq -s '[.[] | select(.terminal == true)] | length'; }
ev_field() { jf "$1" <<<"$ev"; }
install_args() { echo "$1 -t $TENANT -n $2 --chart-name matih-ai-service --chart-version 1.0.0 --app-version 2.0.0"; }

# ---------------------------------------------------------------- the seed story
id=$(send install -f "$SEED" --performed-by alice)
ev=$(wait_terminal "$id" 180)
is "$(ev_field '[.eventType,.status,.revision,.chartName,.chartVersion,.appVersion] | join(" ")')" \
    "succeeded deployed 1 matih-ai-service 1.0.0 2.0.0" "seed install with real helm: deployed, revision 1"
RID=$(ev_field .releaseId)
d=$(deploy_json $NS $REL)
is "$(jq -r .spec.replicas <<<"$d")" 2 "the Deployment in the cluster has replicaCount 2"
is "$(jq -r .status.readyReplicas <<<"$d")" 2 "and is ready (helm waited for it)"
is "$(jq -r '.spec.template.spec.containers[0].resources.limits.cpu' <<<"$d")" 2 "the seed's resources reached the pod template"
is "$(kube_count $NS services $REL) $(kube_count $NS configmaps $REL)" "1 1" "the chart's Service and ConfigMap exist"
is "$(helm_secrets $NS $REL)" "1:deployed" "helm's release Secret v1 is deployed"
is "$(helm_ list -n $NS -o json | jq -r --arg r $REL '.[] | select(.name == $r) | [.name,.status,.revision,.chart,.app_version] | join(" ")')" \
    "$REL deployed 1 matih-ai-service-1.0.0 2.0.0" "helm list shows the release"
is "$(jq -r '.metadata.labels["app.kubernetes.io/managed-by"]' <<<"$d")" Helm "the Deployment is managed by Helm"

# ---------------------------------------------------------------- upgrade values reach the Deployment
id=$(send upgrade $REL -t $TENANT -n $NS --chart-name matih-ai-service --chart-version 1.1.0 --app-version 2.1.0 \
    --set-values '{"replicaCount": 3, "env": [{"name": "FEATURE_X", "value": "on"}]}' -d "bigger")
ev=$(wait_terminal "$id" 180)
is "$(ev_field '[.eventType,.status,.revision,.chartVersion,.appVersion] | join(" ")')" \
    "succeeded deployed 2 1.1.0 2.1.0" "upgrade with real helm: deployed, revision 2, chart 1.1.0"
d=$(deploy_json $NS $REL)
is "$(jq -r .spec.replicas <<<"$d")" 3 "the upgrade's replicaCount 3 reached the Deployment"
is "$(jq -r '.spec.template.spec.containers[0].env[] | select(.name == "FEATURE_X") | .value' <<<"$d")" on \
    "the upgrade's env reached the container (strategic merge patch by name)"
is "$(jq -r '.metadata.labels["app.kubernetes.io/version"]' <<<"$d")" 2.1.0 "the Deployment is labelled appVersion 2.1.0"
is "$(helm_secrets $NS $REL)" "1:superseded 2:deployed" "helm's Secrets: v1 superseded, v2 deployed"

# ---------------------------------------------------------------- rollback restores revision 1
id=$(send rollback $REL -t $TENANT -n $NS --revision 1)
ev=$(wait_terminal "$id" 180)
is "$(ev_field '[.eventType,.status,.revision,.chartVersion,.appVersion] | join(" ")')" \
    "succeeded deployed 3 1.0.0 2.0.0" "rollback to 1 with real helm: revision 3 is chart 1.0.0"
d=$(deploy_json $NS $REL)
is "$(jq -r .spec.replicas <<<"$d")" 2 "the Deployment is back to 2 replicas"
is "$(jq -r '[.spec.template.spec.containers[0].env[]? | select(.name == "FEATURE_X")] | length' <<<"$d")" 0 \
    "and the upgrade's env var is gone"
is "$(helm_ get manifest $REL -n $NS --revision 3 | sha256sum)" "$(helm_ get manifest $REL -n $NS --revision 1 | sha256sum)" \
    "revision 3's manifest is revision 1's"

# helm's storage and the projection agree on every revision (number, chart version, app version).
wait_projected "$id"
helm_rows=$(helm_ history $REL -n $NS -o json | jq -r '.[] | "\(.revision) \(.chart | sub("^matih-ai-service-"; "")) \(.app_version)"')
proj_rows=$("$HELMQ_BIN/helmq" releases history "$RID" | jq -r '.[] | "\(.revision) \(.chartVersion) \(.appVersion)"' | sort -n)
is "$proj_rows" "$helm_rows" "the projection's history equals helm's own (revision, chart version, app version)"
is "$("$HELMQ_BIN/helmq" releases get "$RID" | jq -r '"\(.status) \(.revision)"')" \
    "$(helm_ status $REL -n $NS -o json | jq -r '"\(.info.status) \(.version)"')" "the projection's release state equals helm status"

# ---------------------------------------------------------------- uninstall removes everything, keeps the record
id=$(send uninstall $REL -t $TENANT -n $NS --reason "Tenant migration")
ev=$(wait_terminal "$id" 180)
is "$(ev_field '[.eventType,.status,.revision,.reason] | join("|")')" "succeeded|uninstalled|4|Tenant migration" \
    "uninstall with real helm: uninstalled, revision 4, with the reason"
left=0
for kind in deployments replicasets pods services configmaps jobs; do
    n=$(kube_count $NS $kind $REL)
    [ "$n" = 0 ] || { left=1; diag "left behind: $n $kind"; }
done
is "$left" 0 "no deployment, replicaset, pod, service, configmap or job of the release is left in the namespace"
is "$(helm_secrets $NS $REL)" "" "helm's release Secrets are gone"
wait_projected "$id"
is "$("$HELMQ_BIN/helmq" releases get "$RID" | jq -r '"\(.status) \(.revision)"')" "uninstalled 4" \
    "the record stays: uninstalled, revision 4"
is "$("$HELMQ_BIN/helmq" releases history "$RID" | jq 'length')" 4 "and its four history rows"

# ---------------------------------------------------------------- never ready, timeout 5, atomic
t0=$(date +%s.%N)
id=$(send install $(install_args never $NS) --timeout 5 --atomic \
    --set-values '{"podAnnotations": {"emulator.helmq.dev/ready": "never"}}')
ev=$(wait_terminal "$id" 120)
t1=$(date +%s.%N)
elapsed=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
diag "never-ready atomic install with timeout 5 ended after ${elapsed}s: $(ev_field .errorMessage)"
is "$(ev_field '[.eventType,.errorCode,.status] | join(" ")')" "rolled_back TIMEOUT uninstalled" \
    "a never-ready atomic install fails with TIMEOUT and is rolled back (uninstalled)"
ok "$(awk -v e="$elapsed" 'BEGIN { print (e >= 5 && e < 25) ? 0 : 1 }')" "it took about its 5 s timeout (${elapsed}s)"
left=0
for kind in deployments replicasets pods services configmaps; do
    [ "$(kube_count $NS $kind never)" = 0 ] || left=1
done
is "$left" 0 "nothing of it is left in the cluster"
is "$(helm_secrets $NS never)" "" "and no helm release Secret"
is "$(ev_field '[.history[] | .status] | join(" ")')" "failed uninstalled" \
    "helmq's history keeps the failed revision, then the atomic uninstall"
like "$(ev_field .errorMessage)" "context deadline exceeded" "the message is helm's own timeout"

# ---------------------------------------------------------------- a failing hook Job with waitForJobs
id=$(send install $(install_args hookfail $NS) --timeout 60 --wait-for-jobs \
    --set-values '{"hookJob": {"enabled": true, "podAnnotations": {"emulator.helmq.dev/job": "fail"}}}')
ev=$(wait_terminal "$id" 120)
diag "failing hook: $(ev_field .errorMessage)"
is "$(ev_field '[.eventType,.errorCode,.status] | join(" ")')" "failed HELM_FAILED failed" \
    "an install whose hook Job fails fails (HELM_FAILED), the release failed"
like "$(ev_field .errorMessage)" "BackoffLimitExceeded" "with helm's message about the Job"
is "$(helm_ status hookfail -n $NS -o json | jq -r .info.status)" failed "helm's storage says failed too"

# ---------------------------------------------------------------- a chart or version missing from the registry
id=$(send install nover -t $TENANT -n $NS --chart-name matih-ai-service --chart-version 9.9.9 --app-version 9.9.9)
ev=$(wait_terminal "$id" 60)
diag "missing version: $(ev_field .errorMessage)"
is "$(ev_field '[.eventType,.errorCode] | join(" ")')" "failed CHART_NOT_FOUND" "a version missing from the registry: CHART_NOT_FOUND"
like "$(ev_field .errorMessage)" "9.9.9" "helm's message names the version"
id=$(send install nochart -t $TENANT -n $NS --chart-name no-such-chart --chart-version 1.0.0 --app-version 1.0.0)
ev=$(wait_terminal "$id" 60)
diag "missing chart: $(ev_field .errorMessage)"
is "$(ev_field '[.eventType,.errorCode] | join(" ")')" "failed CHART_NOT_FOUND" "a chart missing from the registry: CHART_NOT_FOUND"
is "$(ev_field '[.revision, .chartName, .chartVersion] | join(" ")')" "0 no-such-chart 1.0.0" \
    "its event names the chart it asked for (the release never had one of its own)"
wait_projected "$id"
is "$("$HELMQ_BIN/helmq" releases summary | jq -c '.byChart | has("")')" false "the summary files no release under a blank chart"
is "$("$HELMQ_BIN/helmq" releases list --tenant "$TENANT" | jq -r '[.[] | select(.chartName == null or .chartName == "")] | length')" 0 \
    "no projected release of the tenant lacks its chart"
is "$(helm_ list -n $NS -a -o json | jq -r '[.[].name | select(. == "nover" or . == "nochart")] | length')" 0 \
    "neither left a release in helm's storage"

# ---------------------------------------------------------------- the registry down
registry_stop
id=$(send install regdown -t $TENANT -n $NS --chart-name matih-ai-service --chart-version 1.0.0 --app-version 2.0.0)
ev=$(wait_terminal "$id" 60)
diag "registry down: $(ev_field .errorMessage)"
is "$(ev_field '[.eventType,.errorCode] | join(" ")')" "failed REGISTRY_UNAVAILABLE" \
    "with the registry down an install fails with REGISTRY_UNAVAILABLE (not retried forever)"
registry_restart >>"$T/cluster.log" 2>&1 || bail "the registry did not come back"
export HELMQ_CHART_REPO
id=$(send install regdown -t $TENANT -n $NS --chart-name matih-ai-service --chart-version 1.0.0 --app-version 2.0.0)
ev=$(wait_terminal "$id" 120)
is "$(ev_field '[.eventType,.status] | join(" ")')" "succeeded deployed" "with the registry back, the same install succeeds"

# ---------------------------------------------------------------- the API server restarted mid-upgrade
id=$(send upgrade regdown -t $TENANT -n $NS --chart-name matih-ai-service --chart-version 1.1.0 --app-version 2.1.0 \
    --timeout 60 --set-values '{"replicaCount": 2}')
wait_for "helm to be upgrading" 30 bash -c "[ \"\$(KUBECONFIG=$KUBECONFIG $HELMQ_HELM status regdown -n $NS -o json 2>/dev/null | jq -r .info.status)\" = pending-upgrade ]"
kube_restart >>"$T/cluster.log" 2>&1
ev=$(wait_terminal "$id" 120)
diag "upgrade across an API server restart: $(ev_field '[.eventType,.status,.revision,.errorCode // ""] | join(" ")')"
sleep 2
is "$(terminal_count "$id")" 1 "an upgrade across an API-server restart ends exactly once"
id=$(send upgrade regdown -t $TENANT -n $NS --chart-name matih-ai-service --chart-version 1.1.0 --app-version 2.1.0 \
    --set-values '{"replicaCount": 1}')
ev=$(wait_terminal "$id" 120)
is "$(ev_field '[.eventType,.status] | join(" ")')" "succeeded deployed" "and the release is not left locked: the next upgrade succeeds"
is "$(helm_ status regdown -n $NS -o json | jq -r .info.status)" deployed "helm agrees: deployed"

# ---------------------------------------------------------------- kill -9 of the worker during a --wait upgrade
id=$(send install $(install_args crash $NS))
ev=$(wait_terminal "$id" 120)
is "$(ev_field .status)" deployed "crash: installed"
id=$(send upgrade crash -t $TENANT -n $NS --chart-name matih-ai-service --chart-version 1.1.0 --app-version 2.1.0 \
    --timeout 60 --set-values '{"podAnnotations": {"emulator.helmq.dev/ready": "never"}}')
wait_for "helm to wait in the upgrade" 30 bash -c "[ \"\$(KUBECONFIG=$KUBECONFIG $HELMQ_HELM status crash -n $NS -o json 2>/dev/null | jq -r .info.status)\" = pending-upgrade ]"
kill -9 "$WORKER_PID"
wait "$WORKER_PID" 2>/dev/null
# The machine went down with it: helm dies too, leaving pending-upgrade.
for e in /proc/[0-9]*/environ; do
    if { tr '\0' '\n' <"$e"; } 2>/dev/null | grep -qx "HELMQ_COMMAND_ID=$id"; then
        p=${e#/proc/}; kill -9 "${p%/environ}" 2>/dev/null
    fi
done
sleep 0.5
is "$(helm_ status crash -n $NS -o json | jq -r .info.status)" pending-upgrade "helm killed mid-upgrade left pending-upgrade"
worker_start || bail "the worker did not restart"
ev=$(wait_terminal "$id" 120)
diag "after kill -9: $(ev_field '[.eventType,.status,.revision,.errorCode // ""] | join(" ")') $(ev_field .errorMessage)"
sleep 2
is "$(terminal_count "$id")" 1 "the interrupted upgrade ends exactly once"
is "$(ev_field .errorCode)" INTERRUPTED "as INTERRUPTED"
unlike "$(helm_ status crash -n $NS -o json | jq -r .info.status)" "pending" "helm's release is no longer pending"
id=$(send upgrade crash -t $TENANT -n $NS --chart-name matih-ai-service --chart-version 1.1.0 --app-version 2.1.0)
ev=$(wait_terminal "$id" 120)
is "$(ev_field '[.eventType,.status,.chartVersion] | join(" ")')" "succeeded deployed 1.1.0" \
    "the next upgrade succeeds: no 'another operation is in progress'"
unlike "$(ev_field .errorMessage)" "in progress" "and no 'in progress' error reached the user"

# ---------------------------------------------------------------- helm's storage equals the projection
wait_projected "$id"
for r in crash regdown; do
    rid=$(ev_field .releaseId)
    [ "$r" = regdown ] && rid=$(psql_q "select release_id from helmq.releases where release_name = 'regdown' and status = 'deployed'")
    helm_rows=$(helm_ history $r -n $NS -o json | jq -r '.[] | "\(.revision) \(.chart | sub("^matih-ai-service-"; ""))"')
    proj_rows=$("$HELMQ_BIN/helmq" releases history "$rid" | jq -r '.[] | "\(.revision) \(.chartVersion)"' | sort -n)
    is "$proj_rows" "$helm_rows" "$r: the projection's history equals helm's (revision, chart version)"
done

done_testing
