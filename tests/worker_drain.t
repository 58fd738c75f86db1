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

# One slot: drain-a's helm takes 3 s; drain-b and drain-c are recorded (begin)
# and wait for the slot.
worker_start --concurrency 1
sim_knob $NS drain-a '{"install": {"sleep": 3}}'
a=$(send install $(install_args drain-a))
b=$(send install $(install_args drain-b))
c=$(send install $(install_args drain-c))
a_running() { [ "$(helm_starts drain-a)" -ge 1 ]; }
b_c_recorded() { [ "$(psql_q "select count(*) from helmq_worker.commands where command_id in ('$b', '$c')")" = 2 ]; }
wait_for "drain-a's helm to start" 20 a_running
wait_for "drain-b and drain-c to be recorded" 20 b_c_recorded
is "$(helm_starts drain-b)$(helm_starts drain-c)" 00 "one slot: only drain-a's helm runs"

worker_stop
is "$?" 0 "SIGTERM with commands waiting for the pool: exit 0"
ev=$(wait_terminal "$a" 10)
is "$(jf .eventType <<<"$ev")" succeeded "the command whose helm ran finished before the exit"
is "$(grep -c 'given back before its helm ran' "$WORKER_LOG")" 2 "the two waiting commands were given back"
is "$(helm_starts drain-b)$(helm_starts drain-c)" 00 "no helm ran for them"
is "$(psql_q "select string_agg(state, ' ') from helmq_worker.commands where command_id in ('$b', '$c')")" \
    "received received" "the ledger has them as received, not started"

# The next worker gets them again (their offsets were not committed) and runs them.
worker_start --concurrency 4
for id in "$b" "$c"; do
    ev=$(wait_terminal "$id" 30)
    is "$(jf '[.eventType,.status] | join(" ")' <<<"$ev")" "succeeded deployed" "a given-back command runs on the next worker"
done
is "$(helm_starts drain-b)$(helm_starts drain-c)" 11 "helm ran once for each"
is "$(events_json | jq -r --arg a "$a" 'select(.terminal and .commandId == $a) | .commandId' | wc -l)" 1 \
    "drain-a, finished before the exit, is not run again"
worker_stop
is "$?" 0 "SIGTERM: exit 0"
done_testing
