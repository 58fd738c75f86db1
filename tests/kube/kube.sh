# shellcheck shell=bash
# tests/kube/kube.sh: start and stop the emulated Kubernetes API server
# (tests/kube/kube-emulator.py) for tests and for `make run`. Source it (bash).
#
#   kube_start RUN_DIR [EMULATOR_ARGS...]
#       starts the emulator on a free port (tests/lib/port.sh's free_port), state in
#       RUN_DIR/state, log in RUN_DIR/kube.log (debug level: one line per request),
#       waits until /version answers, writes RUN_DIR/kubeconfig and exports
#       KUBECONFIG, KUBE_PID, KUBE_ADDR (HOST:PORT) and KUBE_URL. Extra arguments go
#       to the emulator (e.g. --ready-delay-ms 100). Returns non-zero on failure.
#   kube_stop      SIGTERM (the emulator saves its state), wait; SIGKILL after 10 s
#   kube_restart [--kill]
#                  kube_stop (or kube_kill), then start again on the same port with the
#                  same state and arguments (the kubeconfig stays valid)
#   kube_kill      SIGKILL (a crash; state is whatever was last saved, <= ~50 ms old)
#
# KUBE_EMULATOR_LOG_LEVEL (default debug here) and KUBE_EMULATOR_READY_DELAY_MS are
# read by the emulator.
_KUBE_LIB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
KUBE_EMULATOR=${KUBE_EMULATOR:-$_KUBE_LIB_DIR/kube-emulator.py}
KUBE_PY=${KUBE_PY:-/usr/bin/python3}
declare -F free_port >/dev/null || . "$_KUBE_LIB_DIR/../lib/port.sh"

_kube_launch() { # _kube_launch ADDR: start on ADDR, wait for /version
    rm -f "$KUBE_RUN_DIR/address"
    KUBE_EMULATOR_LOG_LEVEL=${KUBE_EMULATOR_LOG_LEVEL:-debug} "$KUBE_PY" "$KUBE_EMULATOR" \
        --listen "$1" --state-dir "$KUBE_RUN_DIR/state" --kubeconfig-out "$KUBE_RUN_DIR/kubeconfig" \
        --address-file "$KUBE_RUN_DIR/address" --log "$KUBE_RUN_DIR/kube.log" "${KUBE_ARGS[@]}" \
        >>"$KUBE_RUN_DIR/kube.out" 2>&1 &
    KUBE_PID=$!
    local _
    for _ in $(seq 1 100); do
        if [ -s "$KUBE_RUN_DIR/address" ]; then
            KUBE_ADDR=$(cat "$KUBE_RUN_DIR/address")
            KUBE_URL=http://$KUBE_ADDR
            if curl -sf -o /dev/null --max-time 2 "$KUBE_URL/version"; then
                export KUBECONFIG=$KUBE_RUN_DIR/kubeconfig KUBE_PID KUBE_ADDR KUBE_URL
                return 0
            fi
        fi
        kill -0 "$KUBE_PID" 2>/dev/null || break
        sleep 0.1
    done
    kill "$KUBE_PID" 2>/dev/null
    wait "$KUBE_PID" 2>/dev/null
    KUBE_PID=
    return 1
}

kube_start() { # kube_start RUN_DIR [EMULATOR_ARGS...]
    KUBE_RUN_DIR=$1
    shift
    KUBE_ARGS=("$@")
    mkdir -p "$KUBE_RUN_DIR/state" || return 1
    local port _
    for _ in 1 2 3 4 5; do
        port=$(free_port) || return 1
        _kube_launch "127.0.0.1:$port" && return 0
    done
    echo "kube_start: the emulator did not start; $KUBE_RUN_DIR/kube.out says:" >&2
    tail -5 "$KUBE_RUN_DIR/kube.out" >&2
    return 1
}

kube_stop() {
    [ -n "${KUBE_PID:-}" ] || return 0
    kill -TERM "$KUBE_PID" 2>/dev/null
    local _
    for _ in $(seq 1 100); do
        kill -0 "$KUBE_PID" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$KUBE_PID" 2>/dev/null
    wait "$KUBE_PID" 2>/dev/null
    KUBE_PID=
    return 0
}

kube_kill() {
    [ -n "${KUBE_PID:-}" ] || return 0
    kill -KILL "$KUBE_PID" 2>/dev/null
    wait "$KUBE_PID" 2>/dev/null
    KUBE_PID=
}

kube_restart() { # kube_restart [--kill]
    local addr=$KUBE_ADDR _
    if [ "${1:-}" = --kill ]; then kube_kill; else kube_stop; fi
    for _ in 1 2 3 4 5 6 7 8 9 10; do
        _kube_launch "$addr" && return 0
        sleep 0.2
    done
    echo "kube_restart: the emulator did not restart on $addr; $KUBE_RUN_DIR/kube.out says:" >&2
    tail -5 "$KUBE_RUN_DIR/kube.out" >&2
    return 1
}
