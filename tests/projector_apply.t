#!/usr/bin/env bash
# tests/projector_apply.t: the projector's apply step (worker/projector/apply.c)
# against a real PostgreSQL: runs the C test build/tests/test_projector_apply
# with HELMQ_DATABASE_URL set to a private, migrated server (without it, the
# C test runs only its cases that need no database).
cd "$(dirname "$0")/.." || exit 1
. tests/lib/tap.sh
. tests/lib/pg.sh

[ -x "$PG_BIN/postgres" ] || skip_all "PostgreSQL 15 not installed in $PG_BIN"
BUILD=${HELMQ_BUILD:-build}
[ -x "$BUILD/tests/test_projector_apply" ] || skip_all "$BUILD/tests/test_projector_apply not built (make)"

DIR=$(mktemp -d /tmp/helmq-applytest.XXXXXX)
trap 'pg_kill "$DIR" 2>/dev/null; rm -rf "$DIR"' EXIT
pg_start "$DIR" >/dev/null || { echo "Bail out! cannot start PostgreSQL"; exit 1; }
"${HELMQ_BIN:-bin}/helmq-projector" migrate >"$DIR/migrate.log" 2>&1 ||
    { echo "Bail out! helmq-projector migrate failed: $(tail -3 "$DIR/migrate.log")"; exit 1; }
# The C test prints its own plan and results.
"$BUILD/tests/test_projector_apply"
