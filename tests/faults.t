#!/usr/bin/env bash
# The fault-injection suite's short form (tests/faults/run.sh, see
# tests/faults/README.md) as a TAP test: kill -9 of the worker at random
# moments (3 runs), the broker down and answering with request errors,
# PostgreSQL stopped and killed, three workers with one killed mid-load, helm
# hanging and crashing, real helm against the emulated cluster (kill -9, the API
# server and the registry down), and a rolling restart (SIGTERM, one worker after
# the other) of three workers running real helm. Each scenario drives a few
# hundred commands; one test per scenario and invariant. About 10 minutes. First,
# the broker's control socket itself.
# Runs from tests/ or from tests/faults/: the repository is where tests/lib/tap.sh is.
root=$(cd "$(dirname "$0")" && pwd)
while [ "$root" != / ] && [ ! -f "$root/tests/lib/tap.sh" ]; do root=$(dirname "$root"); done
. "$root/tests/lib/tap.sh"
cd "$root" || exit 1
command -v jq >/dev/null && [ -x /usr/bin/python3 ] || skip_all "jq and python3 are needed"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/helmq-faults-t.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
trap 'exit 130' INT TERM

# The broker's control socket and tests/faults/brokerctl.
HELMQ_BIN=${HELMQ_BIN:-$(pwd)/bin}
ctl="$tmp/broker.ctl"
HELMQ_LOG_LEVEL=info "$HELMQ_BIN/helmq-broker" --address-file "$tmp/addr" --control "$ctl" >/dev/null 2>"$tmp/broker.log" &
bpid=$!
for _ in $(seq 1 100); do [ -S "$ctl" ] && [ -s "$tmp/addr" ] && break; sleep 0.1; done
c() { tests/faults/brokerctl -s "$ctl" "$@"; }
is "$(c ping)" ok "control: ping"
is "$(c down all)" ok "control: down all"
is "$(c status)" "ok brokers=1 down=1 rtt=1:0 pending=" "control: status shows the broker down"
is "$(c up 1)" ok "control: up 1"
like "$(c errors OffsetCommit NOT_COORDINATOR 3)" "ok 3 OffsetCommit requests will fail with NOT_COORDINATOR" \
    "control: errors by API key and error names"
like "$(c errors 0 6 2)" "ok 2 Produce requests will fail with NOT_LEADER_FOR_PARTITION" "control: ... and by numbers"
like "$(c broker-errors 1 Fetch _TRANSPORT 1 10)" "ok 1 Fetch requests to broker 1" "control: per-broker errors"
like "$(c status)" "Fetch:1(broker)" "control: status counts the per-broker stack"
is "$(c rtt all 5)" ok "control: rtt"
is "$(printf 'clear\nreset\nstatus\n' | c -)" "$(printf 'ok\nok\nok brokers=1 down= rtt=1:0 pending=Fetch:1(broker)')" \
    "control: several commands on one connection; clear and reset"
out=$(c down 7)
is "$?:$out" "1:error no broker 7 (1..1 or all)" "control: an unknown broker is an error (brokerctl exits 1)"
like "$(c errors Bogus 1 1)" "error unknown API key Bogus" "control: an unknown API key is an error"
like "$(c frobnicate)" "error unknown command" "control: an unknown command is an error"
tests/faults/brokerctl -s "$tmp/none.ctl" ping >/dev/null 2>&1
is "$?" 2 "brokerctl exits 2 when it cannot connect"
like "$(cat "$tmp/broker.log")" "control: down all -> ok" "the broker logs injected faults"
like "$("$HELMQ_BIN/helmq-broker" --help)" "env HELMQ_BROKER_CONTROL" "--help documents --control"
kill "$bpid"
wait "$bpid"
is "$?" 0 "the broker stops cleanly"
[ ! -e "$ctl" ]
ok $? "and removes its control socket"

bash tests/faults/run.sh --results "$tmp/results.tsv" >"$tmp/out" 2>&1
rc=$?
# The scenario lines, the problems found (if any) and the summary, as diagnostics.
grep -E '^(\[|RESULT|    problem|scenario|[a-z0-9-]+ +[0-9]+ )' "$tmp/out" | head -200 | sed 's/^/# /'

n=0
while IFS=$'\t' read -r name runs cmds faults lost dup miss extra mism rebuild secs verdict san note; do
    n=$((n + 1))
    is "$lost" 0 "$name: no command lost ($cmds commands, $runs run(s), $faults faults injected)"
    is "$dup" 0 "$name: helm never ran a command's operation twice"
    is "$miss/$extra" 0/0 "$name: exactly one terminal event per command (missing/extra)"
    is "$mism" 0 "$name: the ledger, the events, the projection and helm agree"
    is "$rebuild" yes "$name: the projection equals a fresh rebuild"
    is "$san" 0 "$name: no sanitizer report in the logs"
    if [ "$name" = rolling ]; then
        like "$note" "non-zero exits: 0;" "rolling: every worker stopped by SIGTERM exited 0"
        like "$note" "drain timeouts: 0;" "rolling: ... having drained within --drain-timeout-ms"
    fi
    if [ "$name" = realhelm ]; then
        re='kill -9 of the worker \(([0-9]+) leaving [0-9]+ helm running, ([0-9]+) killing'
        [[ $note =~ $re ]] && [ "${BASH_REMATCH[1]}" -ge 1 ] && [ "${BASH_REMATCH[2]}" -ge 1 ]
        ok $? "realhelm: the worker was killed both leaving real helm running and killing its groups" ||
            echo "#   note: $note"
    fi
done <"$tmp/results.tsv"
is "$n" 8 "the eight scenarios ran to the end"
is "$rc" 0 "tests/faults/run.sh exits 0"
[ "$rc" = 0 ] || tail -40 "$tmp/out" | sed 's/^/# /'
done_testing
