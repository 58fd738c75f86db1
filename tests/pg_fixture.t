#!/usr/bin/env bash
# tests/pg_fixture.t: the throwaway PostgreSQL of tests/lib/pg.sh works:
# start, connect with HELMQ_DATABASE_URL, restart keeps data, idempotent start,
# TCP on request, immediate kill and restart, stop leaves no process behind.
cd "$(dirname "$0")/.." || exit 1
. tests/lib/tap.sh
. tests/lib/pg.sh
. tests/lib/port.sh

[ -x "$PG_BIN/postgres" ] || skip_all "PostgreSQL 15 not installed in $PG_BIN"

DIR=$(mktemp -d /tmp/helmq-pgtest.XXXXXX)
DIR2=$(mktemp -d /tmp/helmq-pgtest.XXXXXX)
cleanup() { pg_kill "$DIR" 2>/dev/null; pg_kill "$DIR2" 2>/dev/null; rm -rf "$DIR" "$DIR2"; }
trap cleanup EXIT
PSQL=("$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -tA)

pg_start "$DIR"; ok $? "pg_start succeeds"
is "$PGHOST" "$DIR" "PGHOST is the directory"
is "$PGUSER" "postgres" "PGUSER is postgres"
like "$PGPORT" "5" "PGPORT is set ($PGPORT)"
is "$HELMQ_DATABASE_URL" "host=$DIR port=$PGPORT user=postgres dbname=helmq" "HELMQ_DATABASE_URL is a libpq conninfo"
ok "$(test -S "$DIR/.s.PGSQL.$PGPORT"; echo $?)" "unix socket is inside the directory"
port=$PGPORT

out=$(env -u PGHOST -u PGPORT -u PGUSER "${PSQL[@]}" "$HELMQ_DATABASE_URL" -c "SELECT current_database() || ' ' || current_user" 2>&1)
is "$out" "helmq postgres" "psql connects with HELMQ_DATABASE_URL alone"
is "$("${PSQL[@]}" -d helmq -c "SHOW listen_addresses" 2>&1)" "" "no TCP listener by default"
is "$("${PSQL[@]}" -d helmq -c "SHOW fsync" 2>&1)" "off" "fsync is off"

"${PSQL[@]}" "$HELMQ_DATABASE_URL" -c "CREATE TABLE t (v text); INSERT INTO t VALUES ('kept')"
ok $? "create a table and a row"

pid=$(head -1 "$DIR/data/postmaster.pid")
pg_start "$DIR"; ok $? "a second pg_start on a running directory succeeds"
is "$(head -1 "$DIR/data/postmaster.pid")" "$pid" "... and leaves the running server alone"
is "$PGPORT" "$port" "... and exports the same port"

pg_restart "$DIR"; ok $? "pg_restart succeeds"
is "$PGPORT" "$port" "restart keeps the port"
is "$("${PSQL[@]}" "$HELMQ_DATABASE_URL" -c "SELECT v FROM t" 2>&1)" "kept" "restart keeps the data"
isnt_pid=$(head -1 "$DIR/data/postmaster.pid")
[ "$isnt_pid" != "$pid" ]; ok $? "restart started a new postmaster"

pg_kill "$DIR"; ok $? "pg_kill succeeds"
pg_running "$DIR"; ok $((! $?)) "server is down after pg_kill"
"$PG_BIN/pg_isready" -q -h "$DIR" -p "$port" -t 1; ok $((! $?)) "pg_isready fails after pg_kill"
pg_start "$DIR"; ok $? "pg_start after pg_kill recovers"
is "$("${PSQL[@]}" "$HELMQ_DATABASE_URL" -c "SELECT v FROM t" 2>&1)" "kept" "committed data survives pg_kill"

pid=$(head -1 "$DIR/data/postmaster.pid")
children=$(pgrep -P "$pid" | wc -l)
[ "$children" -gt 0 ]; ok $? "postmaster $pid has child processes ($children)"
pg_stop "$DIR"; ok $? "pg_stop succeeds"
_pg_alive "$pid"; ok $((! $?)) "postmaster is gone after pg_stop"
is "$(pgrep -P "$pid" | wc -l)" 0 "no child process of the postmaster is left"
is "$(pgrep -f -- "$DIR/data" | wc -l)" 0 "no process mentions the data directory"
ok "$( [ ! -e "$DIR/.s.PGSQL.$port" ]; echo $?)" "socket file removed"
ok "$( [ ! -e "$DIR/data/postmaster.pid" ]; echo $?)" "postmaster.pid removed"
pg_stop "$DIR"; ok $? "pg_stop on a stopped directory is a no-op"

# Explicit port: TCP on 127.0.0.1 as well, in a second directory, concurrently.
tport=$(free_port)
pg_start "$DIR2" "$tport"; ok $? "pg_start with a port"
is "$PGPORT" "$tport" "PGPORT is the given port"
is "$("${PSQL[@]}" -h 127.0.0.1 -p "$tport" -d helmq -c "SELECT inet_server_addr()" 2>&1)" "127.0.0.1" "TCP connection on 127.0.0.1:$tport works"
pg_start "$DIR"; ok $? "a second server starts beside it"
[ "$PGPORT" = "$port" ]; ok $? "the first directory keeps its own port"
pg_stop "$DIR"
pg_stop "$DIR2"
is "$( (pgrep -f -- "$DIR/"; pgrep -f -- "$DIR2/") | wc -l)" 0 "no process left for either directory"

done_testing
