#!/usr/bin/env bash
# tenant_setup_race.t: two workers setting up one namespace for its tenant at the
# same moment. REAL helm 3.17 against the emulated Kubernetes API (RBAC as
# docs/rbac/ sets it up) and charts from the real OCI registry.
#
# Each worker runs the namespace's set-up (`helm upgrade --install
# helmq-tenant-access`) before a first install there. Two workers doing it at once
# race on helm's storage: both find no release (or the same last revision), both
# create the next revision's Secret, and the loser's helm fails with "Error:
# release: already exists" ("UPGRADE FAILED: release: already exists" when both
# upgrade) having changed nothing; the winner's release is deployed. Found by the
# fault suite's rolling scenario (three workers): a first install ended
# TENANT_ACCESS_FAILED. The loser must wait and try again, as it does when it
# meets the other's set-up in progress.
#
# First deterministically: helm wrapped so that the worker's first set-up of a
# namespace loses the race (the wrapper runs the other set-up to the end, then
# answers as the loser's helm does), once as such and once with SIGTERM while the
# loser waits to try again; then for real: two workers, first installs into new
# namespaces at once.
. "$(dirname "$0")/lib/tap.sh"
. "$(dirname "$0")/lib/common.sh"
. "$(dirname "$0")/lib/stack.sh"
. "$(dirname "$0")/lib/cluster.sh"

stack_start
cluster_start "$T/cluster" >"$T/cluster.log" 2>&1 || { cat "$T/cluster.log" >&2; bail "the emulated cluster did not start"; }
at_exit cluster_stop
projector_start || bail "the projector did not start"

outcome() { jf '.eventType + (if .errorCode then "/" + .errorCode else "" end)'; }
helm_secrets() { kubectl_ get secrets -n "$1" -l "owner=helm,name=$2" -o json | jq -r '[.items[].metadata.labels | "\(.version):\(.status)"] | sort | join(" ")'; }
install() { # install NAME NS: prints the commandId
    send install "$1" -t "$TENANT" -n "$2" --chart-name tiny-config --chart-version 0.1.0 --app-version 0.1.0
}

# ---------------------------------------------------------------- the set-up loses the race
REAL_HELM=$HELMQ_HELM
cat >"$T/helm-loses" <<'EOF'
#!/usr/bin/env bash
# helm, except that the first set-up of namespaces race-lost and race-drain loses
# the race to another worker's: that one runs to the end, then this one fails as
# helm does.
ns=
for ((i = 1; i < $#; i++)); do [ "${!i}" = --namespace ] && { j=$((i + 1)); ns=${!j}; }; done
if [ "$1 $2" = "upgrade helmq-tenant-access" ] && { [ "$ns" = race-lost ] || [ "$ns" = race-drain ]; } &&
    mkdir "$LOSES_DIR/lost.$ns" 2>/dev/null; then
    "$REAL_HELM" "$@" >"$LOSES_DIR/winner.$ns.out" 2>&1 || exit 3
    echo "Error: release: already exists" >&2
    exit 1
fi
exec "$REAL_HELM" "$@"
EOF
chmod +x "$T/helm-loses"
mkdir -p "$T/loses"
HELMQ_HELM=$T/helm-loses REAL_HELM=$REAL_HELM LOSES_DIR=$T/loses worker_start || bail "the worker did not start"
ev=$(wait_terminal "$(install lost1 race-lost)" 180)
is "$(outcome <<<"$ev")" succeeded "a first install whose namespace set-up lost the race to another worker's succeeds"
[ -d "$T/loses/lost.race-lost" ]
ok $? "... its first set-up did lose (the other set-up ran first, then helm said 'release: already exists')"
like "$(cat "$WORKER_LOG")" "helmq-tenant-access in namespace race-lost: another set-up created it at the same moment; trying again in 2 s" \
    "... the worker tried again"
is "$(helm_secrets race-lost helmq-tenant-access)" "1:superseded 2:deployed" \
    "... helmq-tenant-access: the winner's revision 1, the retry's 2"
worker_stop
is "$?" 0 "the worker stops (exit 0)"

# ---------------------------------------------------------------- SIGTERM while the set-up waits to try again
# The install's start is recorded and its namespace's set-up ran (and lost the
# race); SIGTERM comes in the 2 s before the set-up is tried again. That command
# is in flight, not waiting for the helm pool: the draining worker finishes it.
# Given back, it would be reconciled by the next worker as interrupted (failed
# INTERRUPTED), although nothing was: found by the rolling fault scenario.
HELMQ_HELM=$T/helm-loses REAL_HELM=$REAL_HELM LOSES_DIR=$T/loses worker_start || bail "the worker did not start"
DRAIN_LOG=$WORKER_LOG
id=$(install drain1 race-drain)
wait_for "the set-up of race-drain to lose the race" 120 grep -q \
    'helmq-tenant-access in namespace race-drain: another set-up created it at the same moment; trying again in 2 s' "$DRAIN_LOG"
worker_stop
is "$?" 0 "SIGTERM while an install waits to try its namespace's set-up again: exit 0"
worker_start || bail "the next worker did not start" # runs the command if it was given back
ev=$(wait_terminal "$id" 180)
is "$(outcome <<<"$ev")" succeeded "the install succeeded (the draining worker finished it, no INTERRUPTED)"
is "$(grep -c "$id.*given back" "$DRAIN_LOG")" 0 "... it was not given back"
like "$(grep "$id" "$DRAIN_LOG")" "done: succeeded" "... the draining worker finished it"
is "$(helm_secrets race-drain drain1)" "1:deployed" "... helm installed it once"
worker_stop
is "$?" 0 "the next worker stops (exit 0)"

# ---------------------------------------------------------------- two workers, for real
# Installs of different releases go to different partitions, so to both workers:
# each sets up each namespace, at about the same moment.
worker_start || bail "worker 1 did not start"
W1_LOG=$WORKER_LOG W1=$WORKER_PID
worker_start || bail "worker 2 did not start"
W2_LOG=$WORKER_LOG W2=$WORKER_PID
sleep 2 # let the group settle (worker 1 gets partitions again)
# sent all at once (one CLI each), so that they reach both workers within milliseconds
for ns in race-1 race-2 race-3; do
    for n in 1 2 3 4; do install "r$n" "$ns" >"$T/id.$ns.$n" & done
done
wait_for "the twelve installs to be sent" 60 bash -c "[ \$(cat '$T'/id.race-* 2>/dev/null | grep -c .) = 12 ]"
got=""
for id in $(cat "$T"/id.race-*); do
    ev=$(wait_terminal "$id" 240)
    got="$got$(outcome <<<"$ev") "
done
is "$got" "$(printf 'succeeded %.0s' $(seq 1 12))" "twelve first installs into three new namespaces, on two workers, all succeed"
diag "set-ups that met the other's in progress: $(cat "$W1_LOG" "$W2_LOG" | grep -c 'helmq-tenant-access in namespace race-.: another operation is in progress'), that lost the race: $(cat "$W1_LOG" "$W2_LOG" | grep -c 'another set-up created it at the same moment')"
for ns in race-1 race-2 race-3; do
    like "$(helm_secrets $ns helmq-tenant-access)" "deployed" "$ns is set up (helmq-tenant-access: $(helm_secrets $ns helmq-tenant-access))"
done
worker_stop "$W1"
is "$?" 0 "worker 1 stops (exit 0)"
worker_stop "$W2"
is "$?" 0 "worker 2 stops (exit 0)"
done_testing
