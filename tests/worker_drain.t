#!/usr/bin/env bash
# SIGTERM while commands wait for the helm pool: the command whose helm runs
# finishes; the ones waiting for a slot are given back (no helm ran for them,
# their offsets are not committed) and the next worker runs them.
. "$(dirname "$0")/lib/tap.sh"
. "$(dirname "$0")/lib/common.sh"
. "$(dirname "$0")/lib/stack.sh"

stack_start --partitions 1
NS=tenant-acme
install_args() { echo "$1 -t $TENANT -n $NS --chart-name matih-ai-service --chart-version 1.0.0"; }
helm_starts() { sim_invocations "select(.event==\"start\" and .release==\"$1\")" | wc -l; }
total_starts() { echo $(($(helm_starts drain-a) + $(helm_starts drain-b) + $(helm_starts drain-c))); }

# One slot; each install's helm takes 3 s. Which command gets the slot first
# is not fixed (their begins may go over different ledger connections): one
# runs, the other two are recorded (begin) and wait for the slot.
worker_start --concurrency 1
declare -A id
for r in drain-a drain-b drain-c; do
    sim_knob $NS $r '{"install": {"sleep": 3}}'
    id[$r]=$(send install $(install_args $r))
done
one_running() { [ "$(total_starts)" -ge 1 ]; }
all_recorded() {
    [ "$(psql_q "select count(*) from helmq_worker.commands where command_id in ('${id[drain-a]}', '${id[drain-b]}', '${id[drain-c]}')")" = 3 ]
}
wait_for "a helm to start" 20 one_running
wait_for "the three commands to be recorded" 20 all_recorded
sleep 0.5
is "$(total_starts)" 1 "one slot: one helm runs"
running=
for r in drain-a drain-b drain-c; do [ "$(helm_starts $r)" = 1 ] && running=$r; done
waiting=()
for r in drain-a drain-b drain-c; do [ "$r" = "$running" ] || waiting+=("$r"); done

worker_stop
is "$?" 0 "SIGTERM with commands waiting for the pool: exit 0"
ev=$(wait_terminal "${id[$running]}" 10)
is "$(jf .eventType <<<"$ev")" succeeded "the command whose helm ran ($running) finished before the exit"
is "$(grep -c 'given back before its helm ran' "$WORKER_LOG")" 2 "the two waiting commands were given back"
is "$(total_starts)" 1 "no helm ran for them"
is "$(psql_q "select string_agg(state, ' ') from helmq_worker.commands where command_id in ('${id[${waiting[0]}]}', '${id[${waiting[1]}]}')")" \
    "received received" "the ledger has them as received, not started"

# The next worker gets them again (their offsets were not committed) and runs them.
worker_start --concurrency 4
for r in "${waiting[@]}"; do
    ev=$(wait_terminal "${id[$r]}" 30)
    is "$(jf '[.eventType,.status] | join(" ")' <<<"$ev")" "succeeded deployed" "a given-back command ($r) runs on the next worker"
done
is "$(helm_starts drain-a)$(helm_starts drain-b)$(helm_starts drain-c)" 111 "helm ran once for each of the three"
# Offsets are committed only up to the oldest unfinished command: when the one
# that ran was not first in the partition it is delivered again, and then
# republishes its recorded outcome (same eventId) without running helm.
is "$(events_json | jq -r --arg a "${id[$running]}" 'select(.terminal and .commandId == $a) | .eventId' | sort -u | wc -l)" 1 \
    "the one that finished before the exit is not run again (one outcome, eventId $(events_json | jq -r --arg a "${id[$running]}" 'select(.terminal and .commandId == $a) | .eventId' | sort -u | head -1))"
worker_stop
is "$?" 0 "SIGTERM: exit 0"
done_testing
