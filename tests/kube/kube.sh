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
#   kube_kubeconfig_for NAME GROUPS OUT
#                  a less privileged user: adds a fresh bearer token for user NAME with the
#                  comma-separated GROUPS (may be "") to RUN_DIR/tokens.csv (the emulator's
#                  --token-auth-file, re-read on change: no restart), writes a kubeconfig
#                  for it to OUT (mode 600) and prints the token. The user has only what RBAC
#                  (Roles/ClusterRoles bound to it or its groups) grants, plus
#                  system:authenticated's discovery. Start the emulator with --tls for the
#                  token to be used at all: client-go sends a kubeconfig's credentials (and
#                  --as/--kube-as-user impersonation) only over TLS; over plain http:// every
#                  kubectl/helm request arrives without them.
#
# The admin kubeconfig's user (token KUBE_ADMIN_TOKEN, exported) is in system:masters and
# may do everything. Requests without a token are the admin too unless the emulator is
# started with --anonymous anonymous|reject (kube_start RUN_DIR --anonymous anonymous);
# an unknown token is always 401 Unauthorized.
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
        --address-file "$KUBE_RUN_DIR/address" --log "$KUBE_RUN_DIR/kube.log" \
        --token-auth-file "$KUBE_RUN_DIR/tokens.csv" "${KUBE_ARGS[@]}" \
        >>"$KUBE_RUN_DIR/kube.out" 2>&1 &
    KUBE_PID=$!
    local _
    for _ in $(seq 1 100); do
        if [ -s "$KUBE_RUN_DIR/address" ]; then
            KUBE_ADDR=$(cat "$KUBE_RUN_DIR/address")
            KUBE_URL=http://$KUBE_ADDR
            KUBE_ADMIN_TOKEN=$(sed -n 's/^ *token: *//p' "$KUBE_RUN_DIR/kubeconfig")
            if curl -sf -o /dev/null --max-time 2 -H "Authorization: Bearer $KUBE_ADMIN_TOKEN" "$KUBE_URL/version"; then
                export KUBECONFIG=$KUBE_RUN_DIR/kubeconfig KUBE_PID KUBE_ADDR KUBE_URL KUBE_ADMIN_TOKEN
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
    touch "$KUBE_RUN_DIR/tokens.csv" || return 1
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

kube_kubeconfig_for() { # kube_kubeconfig_for NAME GROUPS OUT: prints the new token
    local name=$1 groups=$2 out=$3 tok
    if [ -z "${KUBE_RUN_DIR:-}" ] || [ -z "${KUBE_URL:-}" ]; then
        echo "kube_kubeconfig_for: no emulator (kube_start first)" >&2
        return 1
    fi
    case "$name$groups" in *'"'* | *$'\n'*) echo "kube_kubeconfig_for: no quotes or newlines in NAME/GROUPS" >&2; return 1 ;; esac
    local server ca
    # the admin kubeconfig's server and CA (https:// with --tls: client-go sends tokens only over TLS)
    server=$(sed -n 's/^ *server: *//p' "$KUBE_RUN_DIR/kubeconfig")
    ca=$(grep -m1 '^ *certificate-authority-data:' "$KUBE_RUN_DIR/kubeconfig")
    tok=helmq-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n') || return 1
    printf '%s,"%s","%s","%s"\n' "$tok" "$name" "$name" "$groups" >>"$KUBE_RUN_DIR/tokens.csv" || return 1
    (
        umask 077
        cat >"$out.tmp" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: helmq-emulator
  cluster:
    server: $server${ca:+
$ca}
contexts:
- name: helmq-emulator
  context:
    cluster: helmq-emulator
    user: "$name"
    namespace: default
current-context: helmq-emulator
preferences: {}
users:
- name: "$name"
  user:
    token: $tok
EOF
    ) && mv "$out.tmp" "$out" || return 1
    printf '%s\n' "$tok"
}
