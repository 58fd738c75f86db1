#!/usr/bin/env bash
# tests/schema.t: the baseline schema of sql/ (issue 24) and the append-only
# rule of sql/README.md, against a private PostgreSQL:
#   (a) the pre-baseline history (tests/fixtures/sql-history/0001-0015) applied
#       to an empty database, one transaction per file as migrate.c does,
#       then sql/'s migrations after the baselines (0003 on);
#   (b) the baselines and the later migrations applied to another empty
#       database by the real program path (helmq-worker migrate, then
#       helmq-projector migrate: nothing left);
#   (c) both pg_dump --schema-only (no comments, without the migrations table)
#       identical;
#   (d) every table, view and function of helmq and helmq_worker commented;
#   (e) a later migration appended (the next number, written into a temporary copy
#       of the migrations and linked into a temporary helmq-worker) applies on
#       top of the baseline, and gives the same schema as a fresh install;
#   (f) a database that recorded the old history is refused, untouched.
cd "$(dirname "$0")/.." || exit 1
. tests/lib/tap.sh
. tests/lib/pg.sh

[ -x "$PG_BIN/postgres" ] || skip_all "PostgreSQL 15 not installed in $PG_BIN"
BIN=${HELMQ_BIN:-bin}
BUILD=${HELMQ_BUILD:-build}
[ -x "$BIN/helmq-worker" ] && [ -x "$BIN/helmq-projector" ] || skip_all "$BIN/helmq-worker not built (make)"

DIR=$(mktemp -d /tmp/helmq-schema.XXXXXX)
trap 'pg_kill "$DIR" 2>/dev/null; rm -rf "$DIR"' EXIT
pg_start "$DIR" >/dev/null || bail "cannot start PostgreSQL"
PSQL=("$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -tA)
url() { echo "host=$DIR port=$PGPORT user=postgres dbname=$1"; }
createdb() { "${PSQL[@]}" -d postgres -c "CREATE DATABASE $1"; }
# The schema as pg_dump writes it, without what may differ between equal
# schemas: comments, the migrations bookkeeping table, and the random key of
# the \restrict lines newer pg_dump writes.
schema_of() {
    "$PG_BIN/pg_dump" --schema-only --no-comments --exclude-table=public.helmq_schema_migrations "$(url "$1")" |
        grep -v '^\\\(un\)\?restrict '
}

# --- naming: NNNN_worker_*.sql or NNNN_projection_*.sql, numbered 0001, 0002, ... ---
names=$(cd sql && ls [0-9]*.sql)
bad=$(echo "$names" | grep -Ev '^[0-9]{4}_(worker|projection)_[a-z0-9_]+\.sql$')
is "$bad" "" "every migration is named NNNN_worker_*.sql or NNNN_projection_*.sql"
want=$(seq -f '%04g' 1 "$(echo "$names" | wc -l)")
is "$(echo "$names" | cut -c1-4)" "$want" "migrations are numbered 0001 upwards without gaps or repeats"
is "$(echo "$names" | head -2 | tr '\n' ' ')" "0001_worker_baseline.sql 0002_projection_baseline.sql " \
    "the baselines are 0001 (worker) and 0002 (projection)"

# --- (a) the old history -----------------------------------------------------------
createdb history || bail "cannot create database history"
fail=
for f in tests/fixtures/sql-history/[0-9]*.sql; do
    "${PSQL[@]}" -1 -d history -f "$f" >"$DIR/history.log" 2>&1 || { fail="$f: $(tail -3 "$DIR/history.log")"; break; }
done
is "$fail" "" "(a) the history 0001-0015 applies to an empty database"
# The migrations after the baselines (sql/0003 on) apply to it as to the
# baseline: the history stands for 0001-0002, the rest is the same on both.
fail=
for f in sql/[0-9]*.sql; do
    case ${f##*/} in 0001_* | 0002_*) continue ;; esac
    "${PSQL[@]}" -1 -d history -f "$f" >"$DIR/history.log" 2>&1 || { fail="$f: $(tail -3 "$DIR/history.log")"; break; }
done
is "$fail" "" "the later migrations of sql/ apply on top of the history"

# --- (b) the baseline, by the programs --------------------------------------------
createdb baseline || bail "cannot create database baseline"
out=$("$BIN/helmq-worker" migrate --database-url "$(url baseline)" 2>&1)
ok $? "(b) helmq-worker migrate applies the baseline to an empty database"
n=$(ls sql/[0-9]*.sql | wc -l)
like "$out" "($n migrations applied now)" "... all $n migrations of sql/"
out=$("$BIN/helmq-projector" migrate --database-url "$(url baseline)" 2>&1)
ok $? "helmq-projector migrate then succeeds"
like "$out" "(0 migrations applied now)" "... with nothing left to apply (one list for both programs)"
is "$("${PSQL[@]}" -d baseline -c "SELECT string_agg(version, ' ' ORDER BY version) FROM helmq_schema_migrations")" \
    "$(echo $names)" "the migrations table records sql/'s file names"

# --- (c) the same schema --------------------------------------------------------
# The history with sql/'s later migrations on top (a) against the baselines
# with the same later migrations (b): the baselines stand for the history.
schema_of history >"$DIR/history.sql"
schema_of baseline >"$DIR/baseline.sql"
ok "$(grep -c 'CREATE FUNCTION helmq_worker.command_begin' "$DIR/baseline.sql" | grep -qx 2; echo $?)" \
    "the dump holds the functions (sanity)"
diff -u "$DIR/history.sql" "$DIR/baseline.sql" >"$DIR/schema.diff"
ok $? "(c) pg_dump --schema-only of the history and of the baseline are identical"
[ -s "$DIR/schema.diff" ] && sed 's/^/# /' "$DIR/schema.diff" | head -60

# --- (d) every table, view and function commented --------------------------------
missing=$("${PSQL[@]}" -d baseline -c "
    SELECT string_agg(what, ', ' ORDER BY what) FROM (
        SELECT c.oid::regclass::text AS what FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname IN ('helmq', 'helmq_worker') AND c.relkind IN ('r', 'v', 'p', 'm')
           AND obj_description(c.oid, 'pg_class') IS NULL
        UNION ALL
        SELECT p.oid::regprocedure::text FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
         WHERE n.nspname IN ('helmq', 'helmq_worker') AND obj_description(p.oid, 'pg_proc') IS NULL) x")
is "$missing" "" "(d) every table, view and function of the baseline has a COMMENT"
counts=$("${PSQL[@]}" -d baseline -c "
    SELECT (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname IN ('helmq', 'helmq_worker') AND c.relkind IN ('r', 'v')) || ' ' ||
           (SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
             WHERE n.nspname IN ('helmq', 'helmq_worker'))")
like "$counts" " " "... checked: $counts tables/views and functions"

# --- (e) a later migration, appended -------------------------------------------------
# The migrations are compiled in (build/sql_gen.c): a temporary helmq-worker
# is linked from the built objects with a sql_gen.o of sql/ plus a fake next one.
mkdir -p "$DIR/later/sql"
cp sql/[0-9]*.sql "$DIR/later/sql/"
NEXT=$(printf '%04d' $((n + 1)))
cat >"$DIR/later/sql/${NEXT}_worker_later_test.sql" <<EOF
-- $NEXT: a later migration, as tests/schema.t appends one.
ALTER TABLE helmq_worker.commands ADD COLUMN later_test text;
CREATE TABLE helmq_worker.later_test (id integer PRIMARY KEY);
COMMENT ON TABLE helmq_worker.later_test IS 'written by tests/schema.t';
CREATE OR REPLACE FUNCTION helmq_worker.key_unlock(p_key text) RETURNS boolean LANGUAGE sql AS \$\$
    SELECT helmq_worker.key_release(p_key) AND true;
\$\$;
EOF
later_bin=
if ! command -v pkg-config >/dev/null || ! ls "$BUILD"/worker/*.o >/dev/null 2>&1 || [ ! -f "$BUILD/libhelmq.a" ]; then
    why="the worker's objects are not in $BUILD"
else
    san=${HELMQ_SANITIZER:+-fsanitize=$HELMQ_SANITIZER}
    if (cd "$DIR/later" && bash "$OLDPWD/tests/lib/embed.sh" sql_migrations sql/[0-9]*.sql >sql_gen.c) &&
        ${CC:-cc} $san -std=c11 -Iworker/lib -c -o "$DIR/later/sql_gen.o" "$DIR/later/sql_gen.c" &&
        ${CC:-cc} $san -o "$DIR/later/helmq-worker" "$BUILD"/worker/*.o "$DIR/later/sql_gen.o" "$BUILD/libhelmq.a" \
            $(pkg-config --libs rdkafka libuv avro-c libpq jansson libcrypto) -lhttp_parser -lm >"$DIR/later/cc.log" 2>&1; then
        later_bin=$DIR/later/helmq-worker
    else
        why="cannot link a helmq-worker with the fake $NEXT: $(tail -3 "$DIR/later/cc.log" 2>/dev/null)"
    fi
fi
if [ -n "$later_bin" ]; then
    out=$("$later_bin" migrate --database-url "$(url baseline)" 2>&1)
    ok $? "(e) a later sql/${NEXT}_* applies on top of the baseline"
    like "$out" "migration ${NEXT}_worker_later_test.sql applied" "... $NEXT alone"
    like "$out" "(1 migrations applied now)" "... and nothing else"
    createdb fresh || bail "cannot create database fresh"
    "$later_bin" migrate --database-url "$(url fresh)" >"$DIR/fresh.log" 2>&1
    ok $? "a fresh install with $NEXT succeeds"
    schema_of fresh >"$DIR/fresh.sql"
    schema_of baseline >"$DIR/upgraded.sql"
    diff -u "$DIR/fresh.sql" "$DIR/upgraded.sql" >"$DIR/later.diff"
    ok $? "baseline + $NEXT has the same schema as a fresh install with $NEXT"
    [ -s "$DIR/later.diff" ] && sed 's/^/# /' "$DIR/later.diff" | head -40
    like "$(diff "$DIR/baseline.sql" "$DIR/upgraded.sql")" "later_test" "$NEXT did change the schema"
    out=$("$BIN/helmq-worker" migrate --database-url "$(url baseline)" 2>&1)
    ok $? "the current helmq-worker leaves a database with a newer $NEXT alone"
else
    skip "(e) a later migration" "$why"
fi

# --- (f) a database with the old history is refused ----------------------------------
createdb old || bail "cannot create database old"
fail=
"${PSQL[@]}" -d old -c "CREATE TABLE public.helmq_schema_migrations (
    version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
for f in tests/fixtures/sql-history/[0-9]*.sql; do
    { "${PSQL[@]}" -1 -d old -f "$f" &&
        "${PSQL[@]}" -d old -c "INSERT INTO public.helmq_schema_migrations (version) VALUES ('${f##*/}')"; } \
        >"$DIR/old.log" 2>&1 || { fail="$f: $(tail -3 "$DIR/old.log")"; break; }
done
is "$fail" "" "a database migrated by the old history (as migrate.c recorded it)"
schema_of old >"$DIR/old-before.sql"
out=$("$BIN/helmq-worker" migrate --database-url "$(url old)" 2>&1)
is "$?" 1 "(f) helmq-worker migrate refuses it"
like "$out" "records 0001_worker_ledger.sql where this program has 0001_worker_baseline.sql" "... naming the mismatch"
like "$out" "Drop and recreate the database" "... and what to do"
unlike "$out" "connect" "... not a connection error (the programs would retry one)"
out=$("$BIN/helmq-projector" migrate --database-url "$(url old)" 2>&1)
is "$?" 1 "helmq-projector migrate refuses it too"
is "$("${PSQL[@]}" -d old -c "SELECT count(*) FROM public.helmq_schema_migrations")" 15 "nothing was recorded"
schema_of old >"$DIR/old-after.sql"
cmp -s "$DIR/old-before.sql" "$DIR/old-after.sql"
ok $? "nothing was applied"

done_testing
