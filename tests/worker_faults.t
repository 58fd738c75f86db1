#!/usr/bin/env bash
# The worker under time and faults: timeouts enforced with SIGTERM then
# SIGKILL, per-release ordering with many releases in parallel, kill -9 of the
# worker while helm runs, PostgreSQL stopped mid-run.
. "$(dirname "$0")/lib/tap.sh"
. "$(dirname "$0")/lib/common.sh"
. "$(dirname "$0")/lib/stack.sh"

stack_start --partitions 1
NS=tenant-acme
install_args() { echo "$1 -t $TENANT -n $NS --chart-name matih-ai-service --chart-version 1.0.0"; }
WPORT=$(free_port)
worker_start --concurrency 8 --http-listen 127.0.0.1:$WPORT

# 4. A hanging helm that ignores SIGTERM: SIGTERM at the deadline, SIGKILL after the grace.
sim_knob $NS hangs '{"install": {"hang": true, "ignore_term": true}}'
t0=$SECONDS
id=$(send install $(install_args hangs) --timeout 2)
ev=$(wait_terminal "$id" 30)
is "$(jf '[.eventType,.errorCode] | join(" ")' <<<"$ev")" "failed TIMEOUT" "hanging helm: failed with TIMEOUT"
like "$(jf .errorMessage <<<"$ev")" "SIGTERM, then SIGKILL" "hanging helm: the event says SIGTERM then SIGKILL"
wm=$(curl -s "http://127.0.0.1:$WPORT/metrics")
like "$wm" "helmq_worker_helm_timeouts_total 1" "worker /metrics: the helm stopped at its deadline is counted"
like "$wm" "helmq_worker_tenant_commands_total{tenant=\"$TENANT\",outcome=\"failed\"} 1" \
    "worker /metrics: the tenant's failed command is counted"
like "$(cat "$WORKER_LOG")" "passed its deadline: SIGTERM to its process group" "SIGTERM logged at the deadline"
like "$(cat "$WORKER_LOG")" "SIGKILL to its process group" "SIGKILL logged after the grace"
pid=$(sim_invocations 'select(.event=="start" and .release=="hangs" and .subcommand=="install") | .pid')
kill -0 "$pid" 2>/dev/null
is "$?" 1 "the hanging helm process is gone"
# The SIGKILL left helm's release pending-install (helm could not record the
# failure): the worker removes it at once, so no lock outlives the command.
is "$(jf '[.status,.revision] | join(" ")' <<<"$ev")" "uninstalled 2" \
    "the install killed pending-install: the worker removed it"
is "$(jf '[.history[] | (.revision|tostring) + ":" + .status] | join(",")' <<<"$ev")" "1:failed,2:uninstalled" \
    "... with its revision 1 recorded failed"
"$HELMQ_HELM" status hangs -n $NS >"$T/st.out" 2>&1
is "$?:$(cat "$T/st.out")" "1:Error: release: not found" "... and nothing left pending in helm's storage"
like "$(cat "$WORKER_LOG")" "helm left the release pending-install: uninstalling it" "... which the worker logs"

# A stale pending-* release left where the worker did not see it fail (here a helm
# upgrade crashing outside helmq): the next command unlocks it, then runs.
id=$(send install $(install_args stale))
wait_terminal "$id" 30 >/dev/null
sim_knob $NS stale '{"upgrade": {"crash": true}}'
"$HELMQ_HELM" upgrade stale oci://registry.example/charts/matih-ai-service --version 1.1.0 -n $NS >/dev/null 2>&1
is "$("$HELMQ_HELM" status stale -n $NS -o json | jq -r .info.status)" pending-upgrade \
    "a crashed helm upgrade left the release pending-upgrade"
sim_knob $NS stale '{}'
id=$(send upgrade stale -t $TENANT -n $NS --chart-name matih-ai-service --chart-version 1.2.0)
ev=$(wait_terminal "$id" 30)
is "$(jf '[.eventType,.status,.chartVersion] | join(" ")' <<<"$ev")" "succeeded deployed 1.2.0" \
    "the stale pending release is unlocked by the next command, which then runs"
like "$(cat "$WORKER_LOG")" "release stuck in pending-upgrade (an interrupted operation): rolling back to revision 1" \
    "... the unlock logged"

# With atomic: helm honours SIGTERM (marks the release failed); the worker rolls back.
sim_knob $NS hangs2 '{"install": {"hang": true}}'
id=$(send install $(install_args hangs2) --timeout 2 --atomic)
ev=$(wait_terminal "$id" 30)
is "$(jf '[.eventType,.status,.errorCode] | join(" ")' <<<"$ev")" "rolled_back uninstalled TIMEOUT" \
    "hanging atomic install: rolled back with TIMEOUT"
"$HELMQ_HELM" status hangs2 -n $NS >/dev/null 2>&1
is "$?" 1 "hanging atomic install: nothing left in helm"

# 5. 20 releases, one slow: the others finish while it runs.
sim_knob $NS slow '{"install": {"sleep": 12}}'
slow=$(send install $(install_args slow))
ids=()
for i in $(seq 1 19); do ids+=("$(send install $(install_args fast-$i))"); done
for id in "${ids[@]}"; do wait_terminal "$id" 60 >/dev/null; done
ok $? "19 fast releases finished"
ev=$(wait_terminal "$slow" 60)
is "$(jf .eventType <<<"$ev")" succeeded "the slow one finishes too"
slow_end=$(sim_invocations 'select(.event=="end" and .release=="slow" and .subcommand=="install") | .ts')
early=$(sim_invocations 'select(.event=="end" and .subcommand=="install" and (.release | startswith("fast-"))) | .ts' |
    awk -v s="$slow_end" '$1 < s' | wc -l)
is "$early" 19 "all 19 other releases finished while the slow one was still running"

# Per release: commands run one at a time, in offset order.
sim_knob $NS ordered '{"any": {"sleep": 0.7}}'
id1=$(send install $(install_args ordered))
id2=$(send upgrade ordered -t $TENANT -n $NS --chart-name matih-ai-service --chart-version 1.1.0)
id3=$(send upgrade ordered -t $TENANT -n $NS --chart-name matih-ai-service --chart-version 1.2.0)
id4=$(send rollback ordered -t $TENANT -n $NS)
wait_terminal "$id4" 60 >/dev/null
spans=$(sim_invocations 'select(.release=="ordered" and (.subcommand=="install" or .subcommand=="upgrade" or .subcommand=="rollback"))' |
    jq -rs 'group_by(.pid) | map({s: (map(select(.event=="start"))[0]), e: (map(select(.event=="end"))[0])})
            | sort_by(.s.ts) | map("\(.s.ts) \(.e.ts) \(.s.subcommand) \((.s.argv | index("--version")) as $i | if $i then .s.argv[$i+1] else "-" end)") | .[]')
overlap=$(awk 'NR > 1 && $1 < prev_end { print "overlap" } { prev_end = $2 }' <<<"$spans")
is "$overlap" "" "helm invocations of one release never overlap"
is "$(awk '{print $3 ":" $4}' <<<"$spans" | tr '\n' ' ')" "install:1.0.0 upgrade:1.1.0 upgrade:1.2.0 rollback:- " \
    "and follow offset order"
is "$(_terminal_of "$id4" | jf '[.status,.revision,.chartVersion] | join(" ")')" "deployed 4 1.1.0" \
    "the rollback returned to the previous deployed revision (1.1.0) as revision 4"

# 7. kill -9 of the worker (and its helm) while helm runs; restart reconciles.
sim_knob $NS victim '{"install": {"sleep": 30}}'
before=$(send install $(install_args before-victim))
wait_terminal "$before" 30 >/dev/null
victim=$(send install $(install_args victim))
wait_for "helm to start for victim" 30 bash -c "grep -q '\"release\": *\"victim\"' '$HELM_SIM_STATE/invocations.log'"
after=$(send install $(install_args after-victim))
wait_terminal "$after" 30 >/dev/null
ok $? "a command after the victim on the same partition finished"
vpid=$(sim_invocations 'select(.event=="start" and .release=="victim") | .pid')
kill -9 "$WORKER_PID"
kill -9 -- "-$vpid" 2>/dev/null
wait "$WORKER_PID" 2>/dev/null
is "$("$HELMQ_HELM" status victim -n $NS -o json | jq -r .info.status)" pending-install \
    "the crash left the release pending-install"
is "$(psql_q "select state from helmq_worker.commands where command_id = '$victim'")" running \
    "the ledger shows the victim interrupted (running)"
worker_start --concurrency 8
ev=$(wait_terminal "$victim" 60)
is "$(jf '[.eventType,.errorCode] | join(" ")' <<<"$ev")" "failed INTERRUPTED" "reconciled: failed with INTERRUPTED"
like "$(jf .errorMessage <<<"$ev")" "worker stopped" "with a clear reason"
"$HELMQ_HELM" status victim -n $NS -o json >"$T/victim.json" 2>/dev/null
st=$(jq -r '.info.status // "gone"' "$T/victim.json" 2>/dev/null || echo gone)
[ "$st" != pending-install ]
ok $? "the release is not left pending ($st)"
is "$(events_json --command-id "$victim" | jq -c 'select(.terminal)' | wc -l)" 1 "exactly one terminal event for it"
is "$(sim_invocations 'select(.event=="start" and .subcommand=="install" and .release=="victim")' | wc -l)" 1 \
    "its install was not run again"
is "$(sim_invocations 'select(.event=="start" and .subcommand=="install" and .release=="after-victim")' | wc -l)" 1 \
    "the command that finished after it was not rerun"
like "$(cat "$WORKER_LOG")" "already finished: republishing" "it was redelivered and republished instead"

# 7b. kill -9 of the worker alone: its helm children (own sessions) keep running.
# The restarted worker waits for each before it reconciles (helm status), and
# stops one that passes its deadline; it never waits for or signals a process
# that merely reuses a recorded pid.
sim_knob $NS orphan-ok '{"install": {"sleep": 20}}'
sim_knob $NS orphan-hang '{"install": {"hang": true, "ignore_term": true}}'
sim_knob $NS orphan-decoy '{"install": {"hang": true, "ignore_term": true}}'
ok_id=$(send install $(install_args orphan-ok))
hang_id=$(send install $(install_args orphan-hang) --timeout 12)
decoy_id=$(send install $(install_args orphan-decoy))
for r in orphan-ok orphan-hang orphan-decoy; do
    wait_for "helm to start for $r" 30 bash -c \
        "grep -q '\"release\": *\"$r\"' '$HELM_SIM_STATE/invocations.log'"
done
ok_pid=$(sim_invocations 'select(.event=="start" and .release=="orphan-ok") | .pid')
hang_pid=$(sim_invocations 'select(.event=="start" and .release=="orphan-hang") | .pid')
decoy_helm=$(sim_invocations 'select(.event=="start" and .release=="orphan-decoy") | .pid')
is "$(psql_q "select state = 'running' and helm_host <> '' and helm_pid is null and
                     helm_deadline_ms between (extract(epoch from started_at) * 1000)::bigint + 300000
                                          and (extract(epoch from started_at) * 1000)::bigint + 300000 + 3600000
              from helmq_worker.commands where command_id = '$ok_id'")" t \
    "the start recorded the host helm runs on and its deadline (timeout + grace), before helm ran"
is "$(tr '\0' '\n' <"/proc/$ok_pid/environ" | grep -c "^HELMQ_COMMAND_ID=$ok_id\$")" 1 \
    "the running helm carries its command's marker in its environment"
kill -9 "$WORKER_PID"
wait "$WORKER_PID" 2>/dev/null
hang_deadline=$(psql_q "select helm_deadline_ms / 1000.0 from helmq_worker.commands where command_id = '$hang_id'")
# The decoy: its helm is gone, an unrelated process carries another command's
# marker, and the pid recorded for it (as a worker before the marker would
# have) now names that process.
kill -9 -- "-$decoy_helm" 2>/dev/null
HELMQ_COMMAND_ID=$ok_id-not setsid sleep 300 &
decoy_pid=$!
at_exit "kill -9 $decoy_pid"
psql_q "update helmq_worker.commands set helm_pid = $decoy_pid, helm_pgid = $decoy_pid, helm_start_ticks = 1 where command_id = '$decoy_id'" >/dev/null
kill -0 "$ok_pid" && kill -0 "$hang_pid"
ok $? "after kill -9 of the worker its helm processes still run"
worker_start --concurrency 8
ev=$(wait_terminal "$ok_id" 90)
is "$(jf '[.eventType,.status,.revision] | join(" ")' <<<"$ev")" "succeeded deployed 1" \
    "the restarted worker waited for the running helm: its install succeeded"
is "$(sim_invocations 'select(.event=="start" and .release=="orphan-ok" and .subcommand!="install") | .subcommand' | tr -d '"' | tr '\n' ' ')" "history " \
    "and it ran only helm status for it (no uninstall under a running install)"
awk -v s="$(sim_invocations 'select(.event=="start" and .release=="orphan-ok" and .subcommand=="history") | .ts' | head -1)" \
    -v i="$(sim_invocations 'select(.event=="start" and .release=="orphan-ok" and .subcommand=="install") | .ts')" \
    'BEGIN { exit !(s != "" && s + 0 > i + 19.5) }'
ok $? "that helm status ran only after the 20 s install had ended"
like "$(cat "$WORKER_LOG")" "still runs: waiting for it to exit before reconciling" "the worker says it waits"
like "$(cat "$WORKER_LOG")" "environment HELMQ_COMMAND_ID=$ok_id" "having found it by its marker"
ev=$(wait_terminal "$hang_id" 90)
is "$(jf '[.eventType,.errorCode] | join(" ")' <<<"$ev")" "failed TIMEOUT" \
    "a left helm running past its deadline: stopped, the command failed with TIMEOUT"
like "$(jf .errorMessage <<<"$ev")" "SIGTERM, then SIGKILL" "with the reason"
kill -0 "$hang_pid" 2>/dev/null
is "$?" 1 "the left helm that ignored SIGTERM is gone (SIGKILL)"
awk -v s="$(sim_invocations 'select(.event=="start" and .release=="orphan-hang" and .subcommand=="history") | .ts' | head -1)" \
    -v d="$hang_deadline" \
    'BEGIN { exit !(s != "" && s + 0 > d + 0) }'
ok $? "helm status of the hanging release ran only after its deadline"
ev=$(wait_terminal "$decoy_id" 60)
is "$(jf '[.eventType,.errorCode] | join(" ")' <<<"$ev")" "failed INTERRUPTED" "a recorded pid reused by another process: reconciled at once"
kill -0 "$decoy_pid"
ok $? "the process that reused the pid was neither waited for nor signalled"
kill -9 "$decoy_pid" 2>/dev/null

# 9. PostgreSQL stopped mid-run: no helm runs unrecorded; nothing is lost.
pg_stop "$T/pg" >/dev/null 2>&1
pgdown=$(send install $(install_args pg-down))
sleep 4
is "$(sim_invocations 'select(.release=="pg-down")' | wc -l)" 0 "no helm ran while PostgreSQL was down"
pg_start "$T/pg" >/dev/null 2>&1
ev=$(wait_terminal "$pgdown" 60)
is "$(jf .eventType <<<"$ev")" succeeded "after PostgreSQL is back the command completes"
is "$(sim_invocations 'select(.event=="start" and .release=="pg-down")' | wc -l)" 1 "helm ran exactly once for it"
is "$(psql_q "select state from helmq_worker.commands where command_id = '$pgdown'")" finished "and the ledger has it"
like "$(cat "$WORKER_LOG")" "postgresql: connected again" "the worker reconnected by itself"

worker_stop
is "$?" 0 "SIGTERM: exit 0"
done_testing
