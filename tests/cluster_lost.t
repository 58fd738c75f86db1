#!/usr/bin/env bash
# The API server goes away in the middle of a helm operation (found by the
# realhelm fault scenario, issue 23): helm fails, and cannot record the
# failure either, so its storage keeps the revision pending-*; helm status
# then fails too while the cluster is away. The worker must not read that
# failed status as "no release": it asks again until the cluster answers,
# then marks the revision failed and removes the lock helm left (a pending
# install is uninstalled, a pending upgrade rolled back), so that helm's
# storage, the events and the projection agree and the next operation runs.
# The simulated helm's knobs stand for the outage: "lost" (the operation
# fails leaving pending-*) and "unreachable" with "until" (status and history
# fail as helm does without a cluster, for a few seconds).
. "$(dirname "$0")/lib/tap.sh"
. "$(dirname "$0")/lib/common.sh"
. "$(dirname "$0")/lib/stack.sh"

stack_start --partitions 1
worker_start --concurrency 4
NS=tenant-acme
LOST='Post "https://127.0.0.1:6443/apis/apps/v1/namespaces/tenant-acme/deployments?fieldManager=helm": read tcp 127.0.0.1:53242->127.0.0.1:6443: read: connection reset by peer'
DOWN='Get "https://127.0.0.1:6443/version": dial tcp 127.0.0.1:6443: connect: connection refused'
hist() { jf '[.history[] | (.revision|tostring) + ":" + .status] | join(",")'; }
# The API server "comes back" SECONDS from now: helm's status and history fail until then.
outage() { # outage NAME OP SECONDS
    local until
    until=$(python3 -c "import time; print(time.time() + $3)")
    sim_knob $NS "$1" "$(jq -nc --arg op "$2" --arg lost "$LOST" --arg down "$DOWN" --argjson until "$until" \
        '{($op): {sleep: 0.2, lost: $lost}, status: {unreachable: $down, until: $until},
          history: {unreachable: $down, until: $until}}')"
}
helm_last() { "$HELMQ_HELM" history "$1" -n $NS -o json 2>/dev/null | jq -r 'last | "\(.revision):\(.status)"'; }

# The simulated helm does as the real one did in the fault run.
outage probe install 2
"$HELMQ_HELM" install probe oci://registry.example/charts/matih-ai-service --version 1.0.0 -n $NS >"$T/probe.out" 2>&1
is "$?" 1 "sim: an operation losing the API server fails"
like "$(cat "$T/probe.out")" "INSTALLATION FAILED: Post " "sim: ... with helm's error"
"$HELMQ_HELM" status probe -n $NS >"$T/probe.out" 2>&1
like "$(cat "$T/probe.out")" "Kubernetes cluster unreachable" "sim: status fails as unreachable during the outage"
sleep 2.2
is "$(helm_last probe)" 1:pending-install "sim: after it, helm's storage has the revision pending-install"

# 1. A non-atomic install: failed, and the pending install is removed.
outage lost-a install 3
id=$(send install lost-a -t $TENANT -n $NS --chart-name matih-ai-service --chart-version 1.0.0)
ev=$(wait_terminal "$id" 60)
is "$(jf '[.eventType,.status,.errorCode] | join(" ")' <<<"$ev")" "failed uninstalled CLUSTER_UNAVAILABLE" \
    "install losing the cluster: failed CLUSTER_UNAVAILABLE, the release uninstalled"
like "$(jf .errorMessage <<<"$ev")" "connection reset by peer" "install losing the cluster: helm's error in the event"
is "$(hist <<<"$ev")" "1:failed,2:uninstalled" "install losing the cluster: history revision 1 failed, then uninstalled"
sim_knob $NS lost-a '{}' # the outage's knobs off: helm's storage as it is
"$HELMQ_HELM" status lost-a -n $NS >"$T/st.out" 2>&1
is "$?:$(cat "$T/st.out")" "1:Error: release: not found" "install losing the cluster: nothing left pending in helm's storage"
like "$(cat "$WORKER_LOG")" "helm status cannot reach the cluster" "the worker logs that it waits for the cluster"
n=$(sim_invocations 'select(.event=="start" and .release=="lost-a" and (.subcommand=="history" or .subcommand=="status"))' | wc -l)
[ "$n" -ge 2 ]
ok $? "install losing the cluster: helm was asked for the release's state again ($n times)"
is "$(psql_q "select status, revision from helmq_worker.releases where release_name = 'lost-a'")" "uninstalled|2" \
    "install losing the cluster: the ledger's release agrees"

# 2. An atomic install: rolled back, nothing left.
outage lost-b install 3
id=$(send install lost-b -t $TENANT -n $NS --chart-name matih-ai-service --chart-version 1.0.0 --atomic)
ev=$(wait_terminal "$id" 60)
is "$(jf '[.eventType,.status,.errorCode] | join(" ")' <<<"$ev")" "rolled_back uninstalled CLUSTER_UNAVAILABLE" \
    "atomic install losing the cluster: rolled back"
sim_knob $NS lost-b '{}'
"$HELMQ_HELM" status lost-b -n $NS >"$T/st.out" 2>&1
is "$?:$(cat "$T/st.out")" "1:Error: release: not found" "atomic install losing the cluster: nothing left in helm's storage"
id=$(send install lost-b -t $TENANT -n $NS --chart-name matih-ai-service --chart-version 1.0.0)
is "$(wait_terminal "$id" 60 | jf '[.eventType,.revision] | join(" ")')" "succeeded 1" \
    "atomic install losing the cluster: the name installs again afterwards"

# 3. A non-atomic upgrade: helm left pending-upgrade; back to the deployed revision.
id=$(send install lost-c -t $TENANT -n $NS --chart-name matih-ai-service --chart-version 1.0.0)
wait_terminal "$id" 60 >/dev/null
outage lost-c upgrade 3
id=$(send upgrade lost-c -t $TENANT -n $NS --chart-name matih-ai-service --chart-version 1.1.0)
ev=$(wait_terminal "$id" 60)
is "$(jf '[.eventType,.status,.revision,.chartVersion,.errorCode] | join(" ")' <<<"$ev")" \
    "rolled_back deployed 3 1.0.0 CLUSTER_UNAVAILABLE" \
    "upgrade losing the cluster: revision 2 marked failed, rolled back to revision 1 as 3"
is "$(hist <<<"$ev")" "2:failed,3:deployed" "upgrade losing the cluster: history"
sim_knob $NS lost-c '{}'
is "$(helm_last lost-c)" 3:deployed "upgrade losing the cluster: helm's storage has no pending revision"
id=$(send upgrade lost-c -t $TENANT -n $NS --chart-name matih-ai-service --chart-version 1.2.0)
is "$(wait_terminal "$id" 60 | jf '[.eventType,.revision,.chartVersion] | join(" ")')" "succeeded 4 1.2.0" \
    "upgrade losing the cluster: the next upgrade runs (no lock left)"

# 4. A status that fails for another reason is not waited for.
id=$(send install plain -t $TENANT -n $NS --chart-name matih-ai-service --chart-version 1.0.0)
wait_terminal "$id" 60 >/dev/null
sim_knob $NS plain '{"upgrade": {"fail": "boom"}, "history": {"fail": "permission denied"}, "status": {"fail": "permission denied"}}'
t0=$(date +%s)
id=$(send upgrade plain -t $TENANT -n $NS --chart-name matih-ai-service --chart-version 1.1.0)
ev=$(wait_terminal "$id" 60)
is "$(jf '[.eventType,.errorCode] | join(" ")' <<<"$ev")" "failed HELM_FAILED" "a failing status of another kind: the command fails"
[ $(($(date +%s) - t0)) -lt 20 ]
ok $? "... at once, without waiting for the cluster"

worker_stop
done_testing
