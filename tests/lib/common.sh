# tests/lib/common.sh: fixtures shared by the integration tests. Source it
# after tap.sh. Provides the program paths, a per-test scratch directory that
# is removed at exit, and the embedded broker.
#
#   HELMQ_BIN           where the programs are (make test sets it; default bin/)
#   T                   this test's scratch directory
#   broker_start        start helmq-broker; exports HELMQ_BROKERS
#   broker_stop         stop it
#   at_exit CMD...      run CMD at exit (in reverse order)
#   kcat_count TOPIC    number of records on TOPIC (all partitions)

cd "$(dirname "$0")/.." || exit 1
. tests/lib/port.sh
HELMQ_ROOT=$(pwd)
HELMQ_BIN=${HELMQ_BIN:-$HELMQ_ROOT/bin}
PY=/usr/bin/python3
export HELMQ_LOG_LEVEL=${HELMQ_LOG_LEVEL:-warn}
T=$(mktemp -d "${TMPDIR:-/tmp}/helmq-test.XXXXXX")
chmod 755 "$T"
_exit_cmds=()
at_exit() { _exit_cmds=("$*" "${_exit_cmds[@]}"); }
_run_exit() {
    local c
    for c in "${_exit_cmds[@]}"; do eval "$c" >/dev/null 2>&1 || true; done
    rm -rf "$T"
}
trap _run_exit EXIT
trap 'exit 130' INT TERM

broker_start() { # broker_start [ARGS...]
    rm -f "$T/broker.addr"
    "$HELMQ_BIN/helmq-broker" --address-file "$T/broker.addr" "$@" >"$T/broker.out" 2>"$T/broker.log" &
    BROKER_PID=$!
    at_exit "kill $BROKER_PID; wait $BROKER_PID"
    local i
    for i in $(seq 1 100); do
        [ -s "$T/broker.addr" ] && break
        sleep 0.1
    done
    [ -s "$T/broker.addr" ] || { cat "$T/broker.log" >&2; bail "helmq-broker did not start"; }
    HELMQ_BROKERS=$(cat "$T/broker.addr")
    export HELMQ_BROKERS
}

broker_stop() {
    kill "$BROKER_PID" 2>/dev/null
    wait "$BROKER_PID" 2>/dev/null
}

kcat_count() { # kcat_count TOPIC
    kcat -b "$HELMQ_BROKERS" -C -t "$1" -e -q -f 'x\n' 2>/dev/null | wc -l
}

# wait_for DESCRIPTION TIMEOUT_S CMD...: poll CMD until it succeeds.
wait_for() {
    local what=$1 limit=$2
    shift 2
    local end=$((SECONDS + limit))
    while ! "$@"; do
        if [ "$SECONDS" -ge "$end" ]; then diag "timed out waiting for $what"; return 1; fi
        sleep 0.1
    done
}
