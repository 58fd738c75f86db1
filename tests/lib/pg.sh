# tests/lib/pg.sh: a throwaway PostgreSQL 15 server for tests and `make run`.
# Source it (bash), then:
#
#   pg_start DIR [PORT]  initdb into DIR/data if absent (trust auth, superuser
#                        "postgres"), start the server listening only on a unix
#                        socket in DIR (plus TCP 127.0.0.1:PORT when PORT is
#                        given), wait until it accepts connections (30 s), create
#                        database "helmq" if missing, and export
#                        PGHOST=DIR PGPORT PGUSER=postgres and
#                        HELMQ_DATABASE_URL="host=DIR port=PORT user=postgres dbname=helmq".
#                        Without PORT, the port of the previous start of DIR is
#                        reused, else a free one is chosen (it only names the
#                        socket file, DIR/.s.PGSQL.PORT). On a running DIR it only
#                        exports the variables.
#   pg_env DIR           export the variables above for DIR (server not touched).
#   pg_stop DIR          fast shutdown and wait; no-op when not running.
#   pg_restart DIR       pg_stop then pg_start with the same port/TCP settings.
#   pg_kill DIR          immediate shutdown (no checkpoint), for fault tests.
#   pg_running DIR       status 0 when the server of DIR is running.
#
# initdb and postgres refuse to run as root: as root, the server runs as the
# unprivileged system user "helmq" (created if missing); DIR is chowned to it
# and DIR's parents get o+x where that user cannot traverse them. Otherwise it
# runs as the current user. Only DIR's own server is ever touched; the system
# PostgreSQL service is not. Functions return non-zero with a message on
# stderr on failure; they never exit the caller's shell.
# PG_BIN overrides the binaries' directory (default /usr/lib/postgresql/15/bin).
# PG_EXTRA_CONF: more postgresql.conf lines for this start (the benchmarks load
# pg_stat_statements with it).

PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
PG_SERVER_USER=${PG_SERVER_USER:-helmq}

_pg_err() { echo "pg.sh: $*" >&2; }

_pg_abs() { # _pg_abs DIR -> absolute path; fails when DIR does not exist
    [ -d "$1" ] || return 1
    (cd -- "$1" && pwd -P)
}

_pg_is_root() { [ "$(id -u)" -eq 0 ]; }

# Run a command as the server's user, from DIR (so its cwd is accessible).
_pg_as() { # _pg_as DIR CMD...
    local dir=$1; shift
    if _pg_is_root; then
        (cd -- "$dir" && runuser -u "$PG_SERVER_USER" -- "$@")
    else
        (cd -- "$dir" && "$@")
    fi
}

_pg_ensure_user() {
    _pg_is_root || return 0
    id -u "$PG_SERVER_USER" >/dev/null 2>&1 && return 0
    useradd --system --user-group --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin "$PG_SERVER_USER" >/dev/null 2>&1
    # a concurrent pg_start may have created it meanwhile
    id -u "$PG_SERVER_USER" >/dev/null 2>&1 || { _pg_err "cannot create user $PG_SERVER_USER"; return 1; }
}

# As root: make DIR owned by the server user and every parent traversable by it.
_pg_prepare_dir() { # DIR (absolute)
    local dir=$1 d
    _pg_is_root || return 0
    chown "$PG_SERVER_USER:" "$dir" || return 1
    chmod 0700 "$dir" || return 1
    d=$(dirname -- "$dir")
    while :; do
        if ! runuser -u "$PG_SERVER_USER" -- test -x "$d" 2>/dev/null; then
            chmod o+x "$d" || { _pg_err "cannot make $d traversable"; return 1; }
        fi
        [ "$d" = / ] && break
        d=$(dirname -- "$d")
    done
}

_pg_pick_port() { # DIR -> a port whose socket name is free
    local dir=$1 p i
    for i in $(seq 1 200); do
        p=$((54000 + RANDOM % 1000))
        [ -e "$dir/.s.PGSQL.$p" ] && continue
        [ -e "/tmp/.s.PGSQL.$p" ] && continue
        [ -e "/var/run/postgresql/.s.PGSQL.$p" ] && continue
        echo "$p"; return 0
    done
    _pg_err "no free port found"; return 1
}

# Settings of DIR kept between starts: DIR/pg.port and DIR/pg.tcp (yes/no).
_pg_port_of() { [ -f "$1/pg.port" ] && cat "$1/pg.port"; }

_pg_conninfo_quote() { # value -> conninfo value (quoted when needed)
    case "$1" in
    *[\ \'\\]*|'') local v=${1//\\/\\\\}; v=${v//\'/\\\'}; printf "'%s'" "$v" ;;
    *) printf '%s' "$1" ;;
    esac
}

pg_env() { # pg_env DIR
    local dir port
    dir=$(_pg_abs "$1") || return 1
    port=$(_pg_port_of "$dir") || { _pg_err "$dir has no server (no pg.port)"; return 1; }
    export PGHOST="$dir" PGPORT="$port" PGUSER=postgres
    HELMQ_DATABASE_URL="host=$(_pg_conninfo_quote "$dir") port=$port user=postgres dbname=helmq"
    export HELMQ_DATABASE_URL
}

pg_running() { # pg_running DIR
    local dir
    dir=$(_pg_abs "$1") || return 1
    [ -f "$dir/data/postmaster.pid" ] || return 1
    _pg_as "$dir" "$PG_BIN/pg_ctl" -D "$dir/data" status >/dev/null 2>&1
}

pg_start() { # pg_start DIR [PORT]
    local dir port tcp listen i
    [ -n "${1:-}" ] || { _pg_err "usage: pg_start DIR [PORT]"; return 2; }
    [ -x "$PG_BIN/postgres" ] || { _pg_err "PostgreSQL not found in $PG_BIN"; return 1; }
    mkdir -p -- "$1" && dir=$(_pg_abs "$1") || { _pg_err "cannot create $1"; return 1; }
    if pg_running "$dir"; then
        pg_env "$dir"
        return 0
    fi
    _pg_ensure_user || return 1
    _pg_prepare_dir "$dir" || return 1

    if [ -n "${2:-}" ]; then
        port=$2; tcp=yes
    elif [ -f "$dir/pg.port" ]; then
        port=$(cat "$dir/pg.port"); tcp=$(cat "$dir/pg.tcp" 2>/dev/null || echo no)
    else
        port=$(_pg_pick_port "$dir") || return 1; tcp=no
    fi
    case "$port" in ''|*[!0-9]*) _pg_err "bad port '$port'"; return 2 ;; esac
    if [ $(( ${#dir} + 14 + ${#port} )) -gt 107 ]; then
        _pg_err "socket path $dir/.s.PGSQL.$port is too long for a unix socket (max 107 bytes)"
        return 1
    fi
    _pg_as "$dir" sh -c 'echo "$1" > "$2/pg.port" && echo "$3" > "$2/pg.tcp"' sh "$port" "$dir" "$tcp" \
        || { _pg_err "cannot write $dir/pg.port"; return 1; }

    if [ ! -f "$dir/data/PG_VERSION" ]; then
        rm -rf -- "$dir/data"
        if ! _pg_as "$dir" "$PG_BIN/initdb" -D "$dir/data" --auth=trust -U postgres \
                -E UTF8 --locale=C --no-sync >"$dir/initdb.log" 2>&1; then
            _pg_err "initdb failed, see $dir/initdb.log:"; tail -n 20 "$dir/initdb.log" >&2
            return 1
        fi
        echo "include_if_exists = 'helmq-test.conf'" >> "$dir/data/postgresql.conf"
    fi
    if [ "$tcp" = yes ]; then listen=127.0.0.1; else listen=; fi
    # The settings live in a file (not on pg_ctl's command line, which goes
    # through a shell) so any DIR works; only ' needs escaping.
    _pg_as "$dir" sh -c 'cat > "$1"' sh "$dir/data/helmq-test.conf" <<EOF || return 1
# written by tests/lib/pg.sh at every start
port = $port
listen_addresses = '$listen'
unix_socket_directories = '${dir//\'/\'\'}'
unix_socket_permissions = 0777
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 100
logging_collector = off
log_min_messages = warning
${PG_EXTRA_CONF:-}
EOF

    if ! _pg_as "$dir" "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 30 start >/dev/null 2>&1; then
        _pg_err "PostgreSQL did not start in $dir, see $dir/postgres.log:"
        tail -n 20 "$dir/postgres.log" >&2
        return 1
    fi
    for i in $(seq 1 60); do
        "$PG_BIN/pg_isready" -q -h "$dir" -p "$port" -t 1 && break
        [ "$i" -eq 60 ] && { _pg_err "PostgreSQL in $dir not ready after 30s"; return 1; }
        sleep 0.5
    done
    if [ "$tcp" = yes ] && ! "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$port" -t 5; then
        _pg_err "PostgreSQL in $dir does not answer on 127.0.0.1:$port"; return 1
    fi
    pg_env "$dir" || return 1
    if [ "$("$PG_BIN/psql" -X -q -h "$dir" -p "$port" -U postgres -d postgres -tAc \
            "SELECT 1 FROM pg_database WHERE datname = 'helmq'")" != 1 ]; then
        "$PG_BIN/psql" -X -q -h "$dir" -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1 \
            -c 'CREATE DATABASE helmq' >/dev/null || { _pg_err "cannot create database helmq"; return 1; }
    fi
}

_pg_alive() { # PID: alive and not a zombie
    local st
    kill -0 "$1" 2>/dev/null || return 1
    st=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
    [ "$st" != Z ]
}

_pg_ctl_stop() { # DIR MODE
    local dir pid i
    dir=$(_pg_abs "$1") || return 0
    pg_running "$dir" || return 0
    pid=$(head -n 1 "$dir/data/postmaster.pid" 2>/dev/null)
    _pg_as "$dir" "$PG_BIN/pg_ctl" -D "$dir/data" -m "$2" -w -t 60 stop >/dev/null 2>&1 \
        || { _pg_err "pg_ctl stop -m $2 failed for $dir"; return 1; }
    # pg_ctl returns once postmaster.pid is gone; wait for the process itself.
    [ -n "$pid" ] || return 0
    for i in $(seq 1 100); do
        _pg_alive "$pid" || return 0
        sleep 0.1
    done
    _pg_err "postmaster $pid of $dir still running after stop"; return 1
}

pg_stop() { # pg_stop DIR
    [ -n "${1:-}" ] || { _pg_err "usage: pg_stop DIR"; return 2; }
    _pg_ctl_stop "$1" fast
}

pg_kill() { # pg_kill DIR
    [ -n "${1:-}" ] || { _pg_err "usage: pg_kill DIR"; return 2; }
    _pg_ctl_stop "$1" immediate
}

pg_restart() { # pg_restart DIR
    [ -n "${1:-}" ] || { _pg_err "usage: pg_restart DIR"; return 2; }
    pg_stop "$1" && pg_start "$1"
}
