#!/usr/bin/env bash
# End to end, as a new user meets helmq: `make run`'s script serving in the
# background, the README's commands against it, the demo's story through the
# separate processes with every printed result checked, Ctrl-C leaving no
# process behind, and the README's configuration reference matching --help.
. "$(dirname "$0")/lib/tap.sh"
. "$(dirname "$0")/lib/common.sh"

export HELMQ_RUN_DIR="$T/run"
export HELMQ_API_LISTEN=127.0.0.1:$(free_port)
unset HELMQ_BROKERS HELMQ_DATABASE_URL HELMQ_HELM HELMQ_CHART_REPO KUBECONFIG HELMQ_KUBECONFIG HELMQ_RUN_HELM
export PATH="$HELMQ_BIN:$PATH"

# make run (its script), in its own process group as a terminal would run it.
set -m
bash tests/lib/run.sh serve >"$T/run.out" 2>&1 &
RUN_PID=$!
set +m
at_exit "kill -9 -- -$RUN_PID"
wait_for "make run to serve" 120 test -s "$HELMQ_RUN_DIR/env.sh"
ok $? "make run serves (build/run/env.sh written)"
sleep 1
out=$(cat "$T/run.out")
like "$out" "helmq is running." "make run says it is running"
like "$out" "REAL helm 3.17" "and says it runs real helm"
like "$out" "EMULATED Kubernetes cluster" "and says loudly that the cluster is emulated"
like "$out" "HELMQ_HELM=/path/to/helm" "and how to point at a real cluster"
like "$out" "source $HELMQ_RUN_DIR/env.sh" "and the next commands to type"
pids=$(cat "$HELMQ_RUN_DIR/pids")
pg_pid=$(head -1 "$HELMQ_RUN_DIR/pg/data/postmaster.pid")

# The README's commands, as written.
. "$HELMQ_RUN_DIR/env.sh"
out=$(helmq install -f tests/fixtures/seed-install.json --wait 2>"$T/wait.err")
is "$?" 0 "helmq install -f seed.json --wait exits 0"
is "$(sed 1d <<<"$out" | jq -r '[.status,.revision,.chartName,.chartVersion,.appVersion] | join(" ")')" \
    "deployed 1 matih-ai-service 1.0.0 2.0.0" "and prints the deployed state"
like "$(cat "$T/wait.err")" "started: pending-install" "progress is shown while waiting"
RID=$(sed 1d <<<"$out" | jq -r .releaseId)
wait_for "the projection" 30 bash -c "helmq releases get $RID >/dev/null 2>&1"
table=$(helmq releases list --tenant 3f1d2c4b-5a69-4e7f-8a9b-0c1d2e3f4a5b --output table)
is "$?" 0 "helmq releases list --tenant … --output table (README)"
like "$table" "acme-ai-service" "lists the release"
like "$table" "deployed" "with its status"

# The release is in the emulated cluster: kubectl and helm from env.sh see it.
like "$(command -v kubectl)" "build/tools/kubectl" "env.sh puts kubectl 1.31 on PATH"
deploy=$(kubectl get deploy -n tenant-acme -l app.kubernetes.io/instance=acme-ai-service -o json)
is "$(jq -r '.items[0].spec.replicas' <<<"$deploy")" 2 "kubectl get deploy -n tenant-acme shows the seed's Deployment (2 replicas)"
is "$(jq -r '.items[0].status.readyReplicas' <<<"$deploy")" 2 "and it is ready"
is "$(helm list -n tenant-acme -o json | jq -r '.[0] | "\(.name) \(.status) \(.chart)"')" \
    "acme-ai-service deployed matih-ai-service-1.0.0" "helm list (real helm) shows the release"
like "$(cat "$HELMQ_RUN_DIR/env.sh")" "HELMQ_CHART_REPO='oci://127.0.0.1:" "env.sh exports the chart registry"

# The HTTP API make run started, with its generated admin token.
token=$(awk '$3 == "admin" {print $1}' "$HELMQ_RUN_DIR/api-tokens")
api=$(curl -s -H "Authorization: Bearer $token" "http://$HELMQ_API_LISTEN/api/v1/helm/releases/$RID")
is "$(jq -r .status <<<"$api")" deployed "make run serves the HTTP API (GET the release with the admin token)"

# A failing atomic install (pods that never become ready, timeout 5 s) exits
# non-zero with helm's error.
out=$(helmq install doomed -t 3f1d2c4b-5a69-4e7f-8a9b-0c1d2e3f4a5b -n tenant-acme --chart-name matih-ai-service \
    --chart-version 1.0.0 --atomic --timeout 5 --set-values '{"podAnnotations": {"emulator.helmq.dev/ready": "never"}}' \
    --wait 2>"$T/wait.err")
is "$?" 3 "a failing atomic install: --wait exits 3"
like "$(cat "$T/wait.err")" "context deadline exceeded" "with helm's error"
is "$(sed 1d <<<"$out" | jq -r '"\(.eventType) \(.errorCode)"')" "rolled_back TIMEOUT" "and the outcome rolled_back, TIMEOUT"
is "$(kubectl get deploy -n tenant-acme -l app.kubernetes.io/instance=doomed -o json | jq '.items | length')" 0 \
    "nothing of it is left in the cluster"

# Uninstall the seed release so the demo can install it again.
helmq uninstall acme-ai-service -t 3f1d2c4b-5a69-4e7f-8a9b-0c1d2e3f4a5b -n tenant-acme --reason cleanup --wait >/dev/null 2>&1
is "$?" 0 "uninstall --wait exits 0"
wait_for "the projection" 30 bash -c "helmq releases get $RID | jq -e '.status == \"uninstalled\"' >/dev/null"

# make demo against the running stack: every printed result checked.
demo=$(bash tests/lib/run.sh demo 2>&1)
is "$?" 0 "make demo completes" || diag "$(tail -30 <<<"$demo")"
like "$demo" "using the stack of the running make run" "it used the running stack"
like "$demo" '"chartName": "matih-ai-service"' "the seed's chart in the output"
like "$demo" '"chartVersion": "1.0.0"' "the seed's chart version"
like "$demo" '"appVersion": "2.0.0"' "the seed's app version"
like "$demo" '"timeout": 600' "the seed's timeout"
like "$demo" "succeeded: deployed, revision 1" "install: deployed, revision 1"
like "$demo" "succeeded: deployed, revision 2" "upgrade: deployed, revision 2"
like "$demo" "succeeded: uninstalled, revision 3" "uninstall: uninstalled, revision 3"
like "$demo" '"uninstallReason": "Tenant migration"' "the uninstall reason is kept in the record"
like "$demo" "$(printf '1         1.0.0         2.0.0       superseded')" "history: revision 1 superseded"
like "$demo" "3         1.1.0         2.1.0       uninstalled" "history: revision 3 uninstalled"
like "$demo" '"byStatus": {' "the summary by status"
like "$demo" '"byChart": {' "the summary by chart"
like "$demo" "Demo complete." "the demo ends"

# Ctrl-C: everything make run started stops; nothing is left behind.
kill -INT -- "-$RUN_PID"
wait "$RUN_PID" 2>/dev/null
left=""
for _ in $(seq 1 50); do
    left=""
    for p in $pids $pg_pid; do kill -0 "$p" 2>/dev/null && left="$left $p"; done
    [ -z "$left" ] && break
    sleep 0.2
done
is "$left" "" "Ctrl-C leaves no process behind (broker, worker, projector, PostgreSQL)"
[ -n "$left" ] && diag "$(ps -o pid,pgid,stat,args -p ${left// /,} 2>&1)"
like "$(cat "$T/run.out")" "stopped everything make serve started" "and says so"
[ ! -e "$HELMQ_RUN_DIR/env.sh" ]
ok $? "env.sh is removed with the stack"

# make demo on its own starts and stops its own stack (a new shell: nothing
# of the stopped stack's env.sh).
unset HELMQ_BROKERS HELMQ_DATABASE_URL
demo=$(bash tests/lib/run.sh demo 2>&1)
is "$?" 0 "make demo without make run: completes on its own stack" || diag "$(tail -30 <<<"$demo")"
like "$demo" "starting an embedded stack for the demo" "(it started one)"
like "$demo" "stopped everything make demo started" "(and stopped it)"

# The README's configuration reference is the programs' own option tables.
readme=$(cat README.md)
like "$readme" "$(helmq-worker --help-markdown)" "README lists every helmq-worker option as --help does"
like "$readme" "$(helmq-projector --help-markdown)" "README lists every helmq-projector option as --help does"
like "$readme" "$(helmq-api --help-markdown)" "README lists every helmq-api option as --help does"
like "$readme" "make run" "README shows make run"
like "$readme" "make test" "README shows make test"
done_testing
