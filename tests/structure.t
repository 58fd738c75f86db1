#!/usr/bin/env bash
# tests/structure.t: the tree keeps the shape docs/ARCHITECTURE.md describes.
# - No circle between files: each program's file-level dependency graph, read
#   from the built objects' symbols (a.o uses what b.o defines), has no
#   strongly connected group; the '#include "..."' graph between files has
#   none either.
#   Symbols, not includes, because one header declaring everything hides a
#   circle of calls from an include check but not from the linker's view.
# - The layers: the executor (executor*, helm_*) never uses the command layer, the command layer
#   never uses the dispatcher or metrics, nothing calls into metrics.
# - No source file over 800 lines (generated code, fixtures and fuzz corpora
#   aside).
# - The checker itself finds a circle and an oversized file when given one.
cd "$(dirname "$0")/.." || exit 1
. tests/lib/tap.sh

BUILD=${HELMQ_BUILD:-build}
[ -f "$BUILD/worker/main.o" ] || skip_all "$BUILD/worker/main.o not built (make)"
command -v nm >/dev/null || skip_all "nm (binutils) not installed"
PY=/usr/bin/python3
S=tests/lib/structure.py
DIR=$(mktemp -d /tmp/helmq-structure.XXXXXX)
trap 'rm -rf "$DIR"' EXIT

out=$($PY $S deps "$BUILD" 2>&1)
rc=$?
is "$rc:$out" "0:" "no program has a circle between its files (symbols of the built objects)"

out=$($PY $S includes . 2>&1)
rc=$?
is "$rc:$out" "0:" "no circle of #include between the tree's files"

# Who uses whom, from the objects: edges a -> b when a.o uses a symbol b.o defines.
uses() { # uses OBJ: the worker objects whose symbols OBJ uses, one per line
    local u
    u=$(nm -P -u "$1" | awk '{print $1}')
    for o in "$BUILD"/worker/*.o; do
        [ "$o" = "$1" ] && continue
        if nm -P --defined-only -g "$o" | awk '{print $1}' | grep -qxF -f <(printf '%s\n' "$u"); then
            basename "$o" .o
        fi
    done
}
for o in "$BUILD"/worker/executor*.o "$BUILD"/worker/helm_*.o; do
    [ -f "$o" ] || continue
    bad=$(uses "$o" | grep -E '^(command|dispatch|worker_metrics|metrics|main)' || true)
    is "$bad" "" "$(basename "$o" .o) (executor layer) uses no layer above it"
done
for o in "$BUILD"/worker/command*.o; do
    [ -f "$o" ] || continue
    bad=$(uses "$o" | grep -E '^(dispatch|worker_metrics|metrics|main)' || true)
    is "$bad" "" "$(basename "$o" .o) (command layer) uses neither the dispatcher nor metrics"
done
callers=""
for o in "$BUILD"/worker/*.o; do
    case $(basename "$o" .o) in worker_metrics | metrics* | main) continue ;; esac
    uses "$o" | grep -qE '^(worker_metrics|metrics)' && callers="$callers $(basename "$o" .o)"
done
is "$callers" "" "only main starts metrics; the others expose counters it reads"

# Sources: what git tracks (a fresh clone), else what find sees.
if git rev-parse --git-dir >/dev/null 2>&1; then
    files=$(git ls-files -- '*.c' '*.h' '*.py' '*.sh' '*.js' '*.t' '*.sql' '*.mk' Makefile tests/helm-sim/helm)
else
    files=$(find worker producer-cli sql tests -type f \( -name '*.[ch]' -o -name '*.py' -o -name '*.sh' \
        -o -name '*.js' -o -name '*.t' -o -name '*.sql' -o -name '*.mk' \))
fi
files=$(printf '%s\n' $files | grep -vE '^tests/(fixtures|fuzz/corpus)/' | sort -u)
n=$(printf '%s\n' $files | grep -c .)
ok $([ "$n" -gt 50 ] && echo 0 || echo 1) "found the tree's sources ($n files)"
# shellcheck disable=SC2086
out=$($PY $S sizes 800 $files 2>&1)
rc=$?
is "$rc:$out" "0:" "no source file over 800 lines"

# The checker finds what it is looking for: two objects calling each other,
# and a file of 801 lines.
mkdir -p "$DIR/b/worker/lib" "$DIR/b/worker/projector" "$DIR/b/worker/api" "$DIR/b/worker/broker" \
    "$DIR/b/producer-cli"
printf 'void b(void);\nvoid a(void);\nvoid a(void) { b(); }\n' >"$DIR/a.c"
printf 'void a(void);\nvoid b(void);\nvoid b(void) { a(); }\n' >"$DIR/b.c"
printf 'void c(void);\nvoid c(void) {}\n' >"$DIR/c.c"
cc -c -o "$DIR/b/worker/a.o" "$DIR/a.c" && cc -c -o "$DIR/b/worker/b.o" "$DIR/b.c" &&
    cc -c -o "$DIR/b/worker/lib/c.o" "$DIR/c.c"
out=$($PY $S deps "$DIR/b" 2>&1)
rc=$?
is "$rc:$out" "1:helmq-worker: circle: worker/a.c <-> worker/b.c" "the checker reports a circle of calls"
rm -f "$DIR/b/worker/b.o"
out=$($PY $S deps "$DIR/b" 2>&1)
is "$?:$out" "0:" "and none once the circle is gone"
mkdir -p "$DIR/inc/worker/lib" "$DIR/inc/producer-cli"
printf '#include "b.h"\n' >"$DIR/inc/worker/a.h"
printf '#include "a.h"\n' >"$DIR/inc/worker/b.h"
printf '#include "a.h"\n' >"$DIR/inc/worker/a.c"
out=$($PY $S includes "$DIR/inc" 2>&1)
is "$?:$out" "1:include circle: worker/a.h <-> worker/b.h" "the checker reports headers including each other"
printf '\n' >"$DIR/inc/worker/b.h"
out=$($PY $S includes "$DIR/inc" 2>&1)
is "$?:$out" "0:" "and none once the circle is gone"
seq 801 >"$DIR/long.c"
seq 800 >"$DIR/short.c"
out=$($PY $S sizes 800 "$DIR/long.c" "$DIR/short.c" 2>&1)
is "$?:$out" "1:$DIR/long.c: 801 lines (limit 800)" "the checker reports a file over the limit, only that one"

done_testing
