# tests/lib/registry.sh: a real OCI chart registry (Debian's docker-registry,
# CNCF distribution 2.8) for the tests and `make run`, and the project's test
# charts published into it with real helm. Source it (bash); it needs nothing
# else, and uses free_port from tests/lib/port.sh.
#
#   registry_start RUN_DIR [--port PORT] [--auth USER:PASS]
#       Writes RUN_DIR/registry.yml (filesystem storage in RUN_DIR/registry,
#       http on 127.0.0.1:PORT, a free port unless given, log level warn,
#       storage health check; with --auth an htpasswd file, bcrypt), starts
#       `docker-registry serve` (log: RUN_DIR/registry.log), waits until
#       GET /v2/ answers (200, or 401 with --auth), and exports
#         REGISTRY_ADDR=127.0.0.1:PORT  REGISTRY_PID  REGISTRY_DIR=RUN_DIR
#         HELMQ_CHART_REPO=oci://127.0.0.1:PORT/charts
#       and a private helm home under RUN_DIR/helm (HELM_CACHE_HOME,
#       HELM_CONFIG_HOME, HELM_DATA_HOME, HELM_REGISTRY_CONFIG, each only if
#       not already set), so nothing touches ~/.config or ~/.cache.
#       On failure: prints why and the registry log's tail on stderr, returns 1.
#   registry_stop          stop the registry started here (SIGTERM, then SIGKILL)
#   registry_restart       stop, then start again on the same port, data and auth
#   registry_login         (--auth mode) `helm registry login` into
#                          $HELM_REGISTRY_CONFIG with the --auth credentials
#   registry_push_charts [CHART_SRC_DIR]
#       Packages every line of tests/charts/VERSIONS with real `helm package
#       --version V --app-version A` into RUN_DIR/charts-pkg and pushes each
#       with `helm push PKG oci://$REGISTRY_ADDR/charts --plain-http`.
#       In --auth mode, call registry_login first.
#   registry_helm ARGS...  run $REGISTRY_HELM (real helm) with ARGS
#
# Settings: REGISTRY_HELM (default build/tools/helm, else helm on PATH),
# REGISTRY_BIN (default /usr/bin/docker-registry), REGISTRY_START_TIMEOUT
# (seconds, default 15).
#
# A plain-HTTP registry needs helm's --plain-http on every command that talks to
# it: push, pull, show, template, install, upgrade (helm 3.17; `helm registry
# login` has no such flag and needs none, see registry_login).

_registry_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
declare -F free_port >/dev/null || . "$_registry_root/tests/lib/port.sh"
if [ -z "${REGISTRY_HELM:-}" ]; then
    if [ -x "$_registry_root/build/tools/helm" ]; then
        REGISTRY_HELM=$_registry_root/build/tools/helm
    else
        REGISTRY_HELM=helm
    fi
fi
REGISTRY_BIN=${REGISTRY_BIN:-/usr/bin/docker-registry}
REGISTRY_PID=
_registry_port=
_registry_auth=

_registry_err() { printf 'registry: %s\n' "$*" >&2; }

_registry_log_tail() {
    [ -s "$REGISTRY_DIR/registry.log" ] || { _registry_err "(its log $REGISTRY_DIR/registry.log is empty)"; return 0; }
    _registry_err "last lines of $REGISTRY_DIR/registry.log:"
    tail -n 20 "$REGISTRY_DIR/registry.log" | sed 's/^/registry:   /' >&2
}

registry_helm() { "$REGISTRY_HELM" "$@"; }

_registry_helm_env() { # a private helm home under RUN_DIR/helm
    local h=$REGISTRY_DIR/helm
    export HELM_CACHE_HOME=${HELM_CACHE_HOME:-$h/cache}
    export HELM_CONFIG_HOME=${HELM_CONFIG_HOME:-$h/config}
    export HELM_DATA_HOME=${HELM_DATA_HOME:-$h/data}
    export HELM_REGISTRY_CONFIG=${HELM_REGISTRY_CONFIG:-$h/config/registry/config.json}
    mkdir -p "$HELM_CACHE_HOME" "$HELM_CONFIG_HOME" "$HELM_DATA_HOME" "$(dirname "$HELM_REGISTRY_CONFIG")"
}

_registry_write_config() { # PORT
    local auth_block=
    if [ -n "$_registry_auth" ]; then
        local user=${_registry_auth%%:*} pass=${_registry_auth#*:} hash
        # bcrypt from glibc's libxcrypt through Python's crypt module (Debian's
        # python3 3.11 has it; cost 4, the lowest docker-registry accepts).
        hash=$(REG_PASS=$pass /usr/bin/python3 -W ignore -c '
import crypt, os
print(crypt.crypt(os.environ["REG_PASS"], crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16)))') || {
            _registry_err "cannot make a bcrypt hash for --auth"
            return 1
        }
        # shellcheck disable=SC2016 # a literal $2 (bcrypt's prefix)
        case $hash in '$2'*) ;; *) _registry_err "crypt gave no bcrypt hash: '$hash'"; return 1 ;; esac
        printf '%s:%s\n' "$user" "$hash" >"$REGISTRY_DIR/registry.htpasswd"
        auth_block="auth:
  htpasswd:
    realm: helmq-registry
    path: $REGISTRY_DIR/registry.htpasswd"
    fi
    cat >"$REGISTRY_DIR/registry.yml" <<EOF
# written by tests/lib/registry.sh
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
  fields:
    service: registry
storage:
  filesystem:
    rootdirectory: $REGISTRY_DIR/registry
  delete:
    enabled: true
  cache:
    blobdescriptor: inmemory
http:
  addr: 127.0.0.1:$1
  secret: $(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
  headers:
    X-Content-Type-Options: [nosniff]
    X-Helmq-Registry-Instance: [$_registry_nonce]
health:
  storagedriver:
    enabled: true
    interval: 10s
    threshold: 3
$auth_block
EOF
}

# _registry_probe: "STATUS ours|other": the status of GET /v2/, and whether the
# answer carries this start's nonce header (another server on the port, such
# as an earlier registry, would answer too).
_registry_probe() {
    local hdrs code
    hdrs=$(curl -s -D - -o /dev/null -m 2 "http://$REGISTRY_ADDR/v2/" 2>/dev/null | tr -d '\r')
    code=$(printf '%s\n' "$hdrs" | awk 'NR == 1 { print $2 }')
    case $hdrs in
    *"X-Helmq-Registry-Instance: $_registry_nonce"*) echo "${code:-000} ours" ;;
    *) echo "${code:-000} other" ;;
    esac
}

_registry_launch() { # PORT -> 0 up, 1 failed, 2 port taken (retry another)
    local port=$1 want=200 code end
    [ -n "$_registry_auth" ] && want=401
    _registry_nonce=$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')
    _registry_write_config "$port" || return 1
    REGISTRY_ADDR=127.0.0.1:$port
    printf -- '--- %s docker-registry serve on %s\n' "$(date -u +%FT%TZ)" "$REGISTRY_ADDR" >>"$REGISTRY_DIR/registry.log"
    # docker-registry reads every REGISTRY_* variable as a configuration
    # override (REGISTRY_HTTP_ADDR...): hide this library's own from it.
    env -u REGISTRY_ADDR -u REGISTRY_PID -u REGISTRY_DIR -u REGISTRY_HELM -u REGISTRY_BIN \
        -u REGISTRY_START_TIMEOUT \
        "$REGISTRY_BIN" serve "$REGISTRY_DIR/registry.yml" >>"$REGISTRY_DIR/registry.log" 2>&1 &
    REGISTRY_PID=$!
    end=$((SECONDS + ${REGISTRY_START_TIMEOUT:-15}))
    while :; do
        code=$(_registry_probe)
        [ "$code" = "$want ours" ] && return 0
        if ! kill -0 "$REGISTRY_PID" 2>/dev/null; then
            wait "$REGISTRY_PID" 2>/dev/null
            local rc=$?
            REGISTRY_PID=
            if tail -n 5 "$REGISTRY_DIR/registry.log" | grep -q 'address already in use'; then return 2; fi
            _registry_err "docker-registry exited with status $rc before answering on $REGISTRY_ADDR"
            _registry_log_tail
            return 1
        fi
        if [ "$SECONDS" -ge "$end" ]; then
            _registry_err "docker-registry (pid $REGISTRY_PID) did not answer GET http://$REGISTRY_ADDR/v2/ with $want within ${REGISTRY_START_TIMEOUT:-15} s (last answer: ${code:-none})"
            _registry_log_tail
            registry_stop
            return 1
        fi
        sleep 0.05
    done
}

registry_start() { # registry_start RUN_DIR [--port PORT] [--auth USER:PASS]
    [ $# -ge 1 ] || { _registry_err "usage: registry_start RUN_DIR [--port PORT] [--auth USER:PASS]"; return 2; }
    local dir=$1 port='' port_try tries rc
    shift
    _registry_auth=
    while [ $# -gt 0 ]; do
        case $1 in
        --port) port=$2; shift 2 ;;
        --auth)
            case $2 in *:*) ;; *) _registry_err "--auth wants USER:PASS"; return 2 ;; esac
            _registry_auth=$2
            shift 2
            ;;
        *) _registry_err "registry_start: unknown argument '$1'"; return 2 ;;
        esac
    done
    if [ -n "$REGISTRY_PID" ] && kill -0 "$REGISTRY_PID" 2>/dev/null; then
        _registry_err "a registry is already running here (pid $REGISTRY_PID, $REGISTRY_ADDR)"
        return 1
    fi
    [ -x "$REGISTRY_BIN" ] || { _registry_err "$REGISTRY_BIN not found: install Debian's docker-registry package (make deps)"; return 1; }
    command -v curl >/dev/null || { _registry_err "curl not found"; return 1; }
    mkdir -p "$dir/registry" || return 1
    REGISTRY_DIR=$(cd "$dir" && pwd)
    for tries in 1 2 3 4 5; do
        if [ -n "$port" ]; then
            _registry_launch "$port"
            rc=$?
            if [ "$rc" -eq 2 ]; then
                _registry_err "port $port is already in use"
                _registry_log_tail
                return 1
            fi
        else
            port_try=$(free_port) || return 1
            _registry_launch "$port_try"
            rc=$?
            [ "$rc" -eq 2 ] && continue # lost a race for the port: take another
        fi
        [ "$rc" -eq 0 ] || return 1
        _registry_port=${REGISTRY_ADDR##*:}
        export REGISTRY_ADDR REGISTRY_PID REGISTRY_DIR
        export HELMQ_CHART_REPO=oci://$REGISTRY_ADDR/charts
        _registry_helm_env
        return 0
    done
    _registry_err "no free port after $tries tries"
    _registry_log_tail
    return 1
}

registry_stop() {
    [ -n "$REGISTRY_PID" ] || return 0
    local _
    kill "$REGISTRY_PID" 2>/dev/null
    for _ in $(seq 1 50); do
        kill -0 "$REGISTRY_PID" 2>/dev/null || break
        sleep 0.1
    done
    kill -0 "$REGISTRY_PID" 2>/dev/null && kill -KILL "$REGISTRY_PID" 2>/dev/null
    wait "$REGISTRY_PID" 2>/dev/null
    REGISTRY_PID=
    return 0
}

registry_restart() { # same RUN_DIR, port, data and credentials
    if [ -z "${REGISTRY_DIR:-}" ] || [ -z "$_registry_port" ]; then
        _registry_err "registry_restart: no registry was started"
        return 1
    fi
    local auth=$_registry_auth
    registry_stop
    if [ -n "$auth" ]; then
        registry_start "$REGISTRY_DIR" --port "$_registry_port" --auth "$auth"
    else
        registry_start "$REGISTRY_DIR" --port "$_registry_port"
    fi
}

registry_login() { # helm registry login with the --auth credentials
    [ -n "$_registry_auth" ] || { _registry_err "registry_login: the registry runs without --auth"; return 1; }
    printf '%s' "${_registry_auth#*:}" |
        "$REGISTRY_HELM" registry login "$REGISTRY_ADDR" --username "${_registry_auth%%:*}" --password-stdin \
            --registry-config "$HELM_REGISTRY_CONFIG" >"$REGISTRY_DIR/helm-login.out" 2>&1 || {
        _registry_err "helm registry login $REGISTRY_ADDR failed:"
        sed 's/^/registry:   /' "$REGISTRY_DIR/helm-login.out" >&2
        return 1
    }
}

registry_push_charts() { # registry_push_charts [CHART_SRC_DIR]
    local src=${1:-$_registry_root/tests/charts} out name version app pkg
    [ -n "${REGISTRY_ADDR:-}" ] || { _registry_err "registry_push_charts: start the registry first"; return 1; }
    [ -r "$src/VERSIONS" ] || { _registry_err "no $src/VERSIONS"; return 1; }
    out=$REGISTRY_DIR/charts-pkg
    mkdir -p "$out"
    while read -r name version app; do
        case $name in '' | '#'*) continue ;; esac
        pkg=$out/$name-$version.tgz
        if ! "$REGISTRY_HELM" package "$src/$name" --version "$version" --app-version "$app" -d "$out" </dev/null \
            >"$REGISTRY_DIR/helm-package.out" 2>&1 || [ ! -s "$pkg" ]; then
            _registry_err "helm package $src/$name --version $version --app-version $app failed:"
            sed 's/^/registry:   /' "$REGISTRY_DIR/helm-package.out" >&2
            return 1
        fi
        "$REGISTRY_HELM" push "$pkg" "oci://$REGISTRY_ADDR/charts" --plain-http </dev/null \
            --registry-config "$HELM_REGISTRY_CONFIG" >"$REGISTRY_DIR/helm-push.out" 2>&1 || {
            _registry_err "helm push $pkg oci://$REGISTRY_ADDR/charts --plain-http failed:"
            sed 's/^/registry:   /' "$REGISTRY_DIR/helm-push.out" >&2
            return 1
        }
    done <"$src/VERSIONS"
}
