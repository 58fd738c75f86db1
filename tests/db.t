#!/usr/bin/env bash
# tests/db.t: worker/lib/db.c (the ledger's non-blocking PostgreSQL client in
# pipeline mode, statements grouped into transactions) against a real
# PostgreSQL: runs the C test build/tests/test_db with HELMQ_DATABASE_URL set.
cd "$(dirname "$0")/.." || exit 1
. tests/lib/tap.sh
. tests/lib/pg.sh

[ -x "$PG_BIN/postgres" ] || skip_all "PostgreSQL 15 not installed in $PG_BIN"
BUILD=${HELMQ_BUILD:-build}
[ -x "$BUILD/tests/test_db" ] || skip_all "$BUILD/tests/test_db not built (make)"

DIR=$(mktemp -d /tmp/helmq-dbtest.XXXXXX)
trap 'pg_kill "$DIR" 2>/dev/null; rm -rf "$DIR"' EXIT
pg_start "$DIR" >/dev/null || { echo "Bail out! cannot start PostgreSQL"; exit 1; }
"${HELMQ_BIN:-bin}/helmq-worker" migrate >"$DIR/migrate.log" 2>&1 ||
    { echo "Bail out! helmq-worker migrate failed: $(tail -3 "$DIR/migrate.log")"; exit 1; }
# The C test prints its own plan and results.
"$BUILD/tests/test_db"
