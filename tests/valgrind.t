#!/usr/bin/env bash
# helmq-worker and helmq-projector under valgrind's memcheck: every kind of
# command (install, upgrade, rollback, uninstall, an atomic failure, a
# rejection, an invalid command, a redelivered one, an undecodable record),
# then SIGTERM. No memory error, no definite leak, exit 0.
#
# Skipped only when valgrind is missing outside CI (CI=true: a failure), and
# in the sanitizer pass (valgrind cannot run ASan binaries; it runs in the
# plain pass).
. "$(dirname "$0")/lib/tap.sh"
. "$(dirname "$0")/lib/common.sh"

# todo STATUS NAME REASON: an assertion on a known, reported product bug (TAP
# TODO: reported, never fails the test). Drop the wrapper once it is fixed.
todo() {
    _tap_n=$((_tap_n + 1))
    if [ "$1" -eq 0 ]; then echo "ok $_tap_n - $2 # TODO $3"; else echo "not ok $_tap_n - $2 # TODO $3"; fi
}

if ! command -v valgrind >/dev/null 2>&1; then
    [ "${CI:-}" = true ] || skip_all "valgrind is not installed (Debian: valgrind)"
    ok 1 "CI=true: valgrind is not installed"
    done_testing
    exit 1
fi
if [ -n "${HELMQ_SANITIZER:-}" ] || ldd "$HELMQ_BIN/helmq-worker" 2>/dev/null | grep -q 'libasan\|libubsan'; then
    skip_all "sanitizer build (HELMQ_SANITIZER=${HELMQ_SANITIZER:-}): valgrind runs in the plain pass"
fi
. "$(dirname "$0")/lib/stack.sh"

VG=(valgrind --tool=memcheck --leak-check=full --errors-for-leak-kinds=definite --error-exitcode=99
    --suppressions="$HELMQ_ROOT/tests/valgrind.supp" --num-callers=30 --track-fds=no)

stack_start --partitions 2
export HELMQ_DRAIN_TIMEOUT_MS=60000

# vg_errors LOG: valgrind's error reports, one per line (the lines of a
# report joined by " | "), without the leak summary.
vg_errors() {
    sed 's/^==[0-9]*== //' "$1" | awk '
        /^(Invalid|Conditional jump|Use of uninitialised|Syscall param|Mismatched|Source and destination|Argument .* fishy|[0-9,]+ bytes in [0-9,]+ blocks are definitely)/ { if (e != "") print e; e = $0; next }
        /^$/ { if (e != "") print e; e = ""; next }
        e != "" { e = e " | " $0 }
        END { if (e != "") print e }'
}

# vg_summary LOG NAME RC [KNOWN_PATTERN KNOWN_REASON]: the assertions on a
# finished valgrind run. Errors whose report matches KNOWN_PATTERN are a
# reported product bug: they make the overall checks TODO, while any other
# error still fails.
vg_summary() {
    local log=$1 name=$2 rc=$3 known=${4:-} reason=${5:-} clean=0 others
    diag "$name: $(grep -h 'ERROR SUMMARY' "$log" | sed 's/^==[0-9]*== //')"
    diag "$name: $(grep -h -E 'definitely lost:|All heap blocks were freed' "$log" | sed 's/^==[0-9]*== //')"
    diag "$name: $(grep -h -E 'indirectly lost:|possibly lost:|still reachable:' "$log" | sed 's/^==[0-9]*== *//' | tr '\n' ';')"
    vg_errors "$log" >"$log.errors"
    grep -q 'ERROR SUMMARY: 0 errors' "$log" || clean=1
    if [ "$clean" -ne 0 ]; then
        diag "$name: $(wc -l <"$log.errors") error reports; the first ones:"
        sed 's/ | /\n#     /g; s/^/# /' "$log.errors" | head -36
    fi
    if [ -n "$known" ]; then
        others=$(grep -vc -- "$known" "$log.errors")
        is "$others" 0 "$name: no memory error but the known one ($reason)"
        [ "$rc" -ne 99 ]
        todo $? "$name: exit status $rc is not valgrind's error status 99" "$reason"
        [ "$clean" -eq 0 ]
        todo $? "$name: ERROR SUMMARY: 0 errors" "$reason"
    else
        isnt99=$([ "$rc" -ne 99 ] && echo yes || echo "no ($rc)")
        is "$isnt99" yes "$name: exit status is not valgrind's error status 99"
        is "$clean" 0 "$name: ERROR SUMMARY: 0 errors"
    fi
    grep -q -E 'definitely lost: 0 bytes in 0 blocks|All heap blocks were freed' "$log"
    ok $? "$name: definitely lost: 0 bytes (or all heap blocks freed)"
}

# --- the worker ---------------------------------------------------------------------
"${VG[@]}" --log-file="$T/vg.worker.log" "$HELMQ_BIN/helmq-worker" --log-level info \
    -X session.timeout.ms=30000 -X heartbeat.interval.ms=1000 -X max.poll.interval.ms=300000 \
    --concurrency 4 --protected-namespaces extra-ns >"$T/worker.log" 2>&1 &
VG_WORKER=$!
at_exit "kill -9 $VG_WORKER"
wait_for "the worker under valgrind to be assigned partitions" 180 grep -q 'assigned ' "$T/worker.log"
ok $? "the worker starts under valgrind"

# --- the projector, for a short run --------------------------------------------------
"${VG[@]}" --log-file="$T/vg.projector.log" "$HELMQ_BIN/helmq-projector" --log-level info \
    -X session.timeout.ms=30000 -X heartbeat.interval.ms=1000 >"$T/projector.log" 2>&1 &
VG_PROJECTOR=$!
at_exit "kill -9 $VG_PROJECTOR"
wait_for "the projector under valgrind to be assigned partitions" 180 grep -q 'projecting ' "$T/projector.log"
ok $? "the projector starts under valgrind"

NS=tenant-vg
C=(--chart-name matih-ai-service)
ids=()
sendc() { local id; id=$(send "$@") && ids+=("$id"); }
# Installs of three releases, with values (and a secret to redact).
for r in a b c; do
    sendc install vg-$r -t $TENANT -n $NS "${C[@]}" --chart-version 1.0.0 \
        --set-values '{"replicaCount":2,"db":{"password":"pw"},"list":[1,2,{"token":"t"}]}' --description "install $r"
done
# An atomic install that fails (uninstalled by the worker) and a plain failure.
sim_knob $NS vg-atomic '{"install": {"fail": "image pull backoff"}}'
sendc install vg-atomic -t $TENANT -n $NS "${C[@]}" --chart-version 1.0.0 --atomic
sim_knob $NS vg-failed '{"install": {"fail": "boom"}}'
sendc install vg-failed -t $TENANT -n $NS "${C[@]}" --chart-version 1.0.0
# Rejections: another tenant's namespace, a protected one, a live name, an unknown release.
# The intruder goes once the first install has claimed the namespace: keys run
# concurrently, and its own key's partition could otherwise be served first.
wait_terminal "${ids[0]}" 120 >/dev/null
sendc install vg-intruder -t $OTHER_TENANT -n $NS "${C[@]}" --chart-version 1.0.0
sendc install vg-sneaky -t $TENANT -n extra-ns "${C[@]}" --chart-version 1.0.0
sendc upgrade vg-ghost -t $TENANT -n $NS "${C[@]}" --chart-version 1.1.0
# An invalid command (bypassing the CLI) and two undecodable records.
"$HELMQ_BIN/helmq" install vg-x -t $TENANT -n $NS "${C[@]}" --chart-version 1.0.0 --dry-run |
    jq -c '.releaseName = "Bad_Name" | .valuesOverride = "{\"a\":[[[[1]]]]}"' >"$T/invalid.json"
"$HELMQ_BIN/helmq" encode <"$T/invalid.json" >"$T/invalid.avro"
ids+=("$(jq -r .commandId "$T/invalid.json")")
head -c 200 /dev/urandom | tr '\303' x >"$T/garbage.bin"
head -c 40 "$T/invalid.avro" >"$T/truncated.bin"
kcat -b "$HELMQ_BROKERS" -P -t helm.release.commands -k vg-bad "$T/invalid.avro" "$T/garbage.bin" "$T/truncated.bin"
for id in "${ids[@]}"; do wait_terminal "$id" 240 >/dev/null || diag "no terminal event for $id"; done
sendc install vg-a -t $TENANT -n $NS "${C[@]}" --chart-version 1.0.0 # a live name: RELEASE_EXISTS
# Upgrades, an atomic upgrade that fails (rolled back), rollbacks, uninstalls.
for r in a b c; do
    sendc upgrade vg-$r -t $TENANT -n $NS "${C[@]}" --chart-version 1.1.0 --set-values '{"replicaCount":3}'
done
sim_knob $NS vg-c '{"upgrade": {"fail": "readiness probe failed"}}'
sendc upgrade vg-c -t $TENANT -n $NS "${C[@]}" --chart-version 1.2.0 --atomic
sendc rollback vg-a -t $TENANT -n $NS
sendc rollback vg-b -t $TENANT -n $NS --revision 1
sendc uninstall vg-a -t $TENANT -n $NS --reason "valgrind run"
sendc uninstall vg-failed -t $TENANT -n $NS
# The same command again (same commandId and content): the recorded outcome is
# republished; and the same commandId with other content: IDEMPOTENCY_CONFLICT.
sendc install vg-b -t $TENANT -n $NS "${C[@]}" --chart-version 1.0.0 --command-id "${ids[1]}" \
    --set-values '{"replicaCount":2,"db":{"password":"pw"},"list":[1,2,{"token":"t"}]}' --description "install b"
sendc install vg-b -t $TENANT -n $NS "${C[@]}" --chart-version 1.0.0 --command-id "${ids[1]}"
sendc install vg-d -t $TENANT -n $NS "${C[@]}" --chart-version 1.0.0
diag "${#ids[@]} commands sent"
missing=0
for id in "${ids[@]}"; do wait_terminal "$id" 240 >/dev/null || missing=$((missing + 1)); done
is "$missing" 0 "every command (${#ids[@]}) got its terminal event under valgrind"
terms=$(events_json | jq -r 'select(.terminal) | .eventType + " " + (.errorCode // "")' | sort | uniq -c | awk '{$1=$1; print}' | tr '\n' ';')
diag "terminal events: $terms"
for kind in " succeeded;" "rolled_back HELM_FAILED" "failed HELM_FAILED" "rejected NAMESPACE_OWNED" \
    "rejected PROTECTED_NAMESPACE" "rejected RELEASE_NOT_FOUND" "rejected RELEASE_EXISTS" "rejected INVALID_FIELD" \
    "rejected IDEMPOTENCY_CONFLICT"; do
    like "$terms" "${kind% }" "the run covered: ${kind# }"
done
wait_for "two DLQ records" 120 bash -c "[ \$(kcat -b $HELMQ_BROKERS -C -t helm.release.commands.dlq -e -q -f 'x\n' 2>/dev/null | wc -l) -ge 2 ]"
ok $? "the run covered: two undecodable records in the DLQ"
sleep 2 # let the last delivery reports and offset commits settle

kill -TERM "$VG_WORKER"
wait "$VG_WORKER"
rc=$?
[ "$rc" -eq 0 ] || [ "$rc" -eq 99 ]
ok $? "worker: SIGTERM under valgrind: it exits by itself (status $rc)"
# This run found a use after free (a helm run freed while one of its pipes was
# still in libuv's closing queue), fixed in executor.c: no known error remains.
vg_summary "$T/vg.worker.log" worker "$rc"

# The projector gets the events, then stops.
wait_for "the projection to hold every terminal event" 180 bash -c \
    "[ \$(psql -X -At '$HELMQ_DATABASE_URL' -c \"select count(*) from helmq.applied_events where event_type <> 'started'\" 2>/dev/null) -ge \$($HELMQ_BIN/helmq events 2>/dev/null | jq -r 'select(.terminal) | .eventId' | sort -u | wc -l) ]"
ok $? "the projector under valgrind applied every terminal event"
kill -TERM "$VG_PROJECTOR"
wait "$VG_PROJECTOR"
rc=$?
[ "$rc" -eq 0 ] || [ "$rc" -eq 99 ]
ok $? "projector: SIGTERM under valgrind: it exits by itself (status $rc)"
vg_summary "$T/vg.projector.log" projector "$rc"
done_testing
