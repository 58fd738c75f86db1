#!/usr/bin/env bash
# tests/bench/targets.sh REPORT: the performance targets (issues 7 and 25) in one table, each
# beside what the run measured, from the run's raw figures (REPORT.raw, one line per
# measurement: SECTION KEY VALUE...) and the API's scale table (REPORT.scaleapi.md). Called
# by bench.sh for its report (a target whose section did not run is left out); run it alone
# on a kept report to print the table again.
set -euo pipefail
REPORT=${1:?usage: targets.sh REPORT}
RAW=$REPORT.raw
if [ ! -f "$RAW" ]; then # only the API's scale section ran (BENCH_ONLY=scaleapi): its rows alone
    [ -f "$REPORT.scaleapi.md" ] || { echo "targets.sh: no $RAW nor $REPORT.scaleapi.md" >&2; exit 1; }
    RAW=/dev/null
fi

# med SECTION KEY FIELD: the median of FIELD (1-based after SECTION KEY) over the raw lines
med() {
    awk -v s="$1" -v k="$2" -v f="$3" '$1 == s && $2 == k { print $(f + 2) }' "$RAW" | sort -g |
        awk '{ v[NR] = $1 } END { if (NR == 0) print "n/a"; else if (NR % 2) print v[(NR + 1) / 2];
             else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
has() { awk -v s="$1" '$1 == s { f = 1 } END { exit !f }' "$RAW"; }
concs() { awk -v s="$1" '$1 == s { sub(/^c/, "", $2); print $2 }' "$RAW" | sort -un | tr '\n' ' '; }
# verdict VALUE OP GOAL: yes / NO / n/a
verdict() {
    awk -v v="$1" -v op="$2" -v g="$3" 'BEGIN { if (v == "n/a" || v == "") { print "n/a"; exit }
        ok = (op == ">=") ? (v + 0 >= g + 0) : (v + 0 <= g + 0); print ok ? "yes" : "**no**" }'
}
div() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "n/a" || b == "n/a" || b + 0 == 0) print "n/a"; else printf "%.2f", a / b }'; }
sub2() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "n/a" || b == "n/a") print "n/a"; else printf "%+.2f", a - b }'; }
row() { echo "| $1 | $2 | $3 | $(verdict "$3" "$4" "$5") |"; }

echo "| target | goal | this run (medians) | met |"
echo "|---|---|---|---|"
if has worker; then
    for c in $(concs worker); do
        w=$(med worker "c$c" 1) l=$(med limit "c$c" 1) p=$(med peer "c$c" 1)
        row "worker / kcat\\|xargs peer, concurrency $c (commands/s $w / $p)" "≥ 1.0" "$(div "$w" "$p")" ">=" 1.0
        # machine CPU s per 1,000 commands: worker's run minus the peer's
        row "machine CPU s per 1,000 commands, worker's run − peer's, concurrency $c ($(med worker "c$c" 6) − $(med peer "c$c" 4))" \
            "≤ +0.10" "$(sub2 "$(med worker "c$c" 6)" "$(med peer "c$c" 4)")" "<=" 0.10
        row "worker / spawn limit, concurrency $c" "≥ 0.5" "$(div "$w" "$l")" ">=" 0.5
    done
fi
if has projector; then
    for i in $(awk '$1 == "projector" { sub(/^i/, "", $2); print $2 }' "$RAW" | sort -un); do
        pj=$(med projector "i$i" 1) cp_=$(med projector "i$i" 3)
        goal="≥ 0.8" op=">=" g=0.8
        [ "$i" = 1 ] || { goal="(shown)" op=">=" g=0; }
        row "projector / COPY, $i instance(s) (events/s $pj / rows/s $cp_)" "$goal" "$(div "$pj" "$cp_")" "$op" "$g"
    done
fi
if has scale; then
    row "RSS per in-flight operation (KiB)" "≤ 64" "$(med scale rss 3)" "<=" 64
    row "timeout SIGTERM lateness p99 as helm sees it (ms)" "≤ 50" "$(med scale late 2)" "<=" 50
fi
if has latency; then
    k=$(awk '$1 == "latency" && $2 ~ /^fetchwait10-r200$/ { print $2; exit }' "$RAW")
    [ -n "$k" ] && row "send → projection p99 at 200 commands/s, fetch.wait.max.ms=10 (ms)" "≤ 50" "$(med latency "$k" 2)" "<=" 50
fi
if has memory; then
    row "worker RSS growth over the memory run's last half (%)" "< 10" "$(med memory x 1)" "<=" 9.999
fi
if [ -f "$REPORT.scaleapi.md" ]; then
    # | route | p50 | p99 | ... rows of the scale-api table
    p99() { awk -F'|' -v r="$1" '{ gsub(/ /, "", $2) } $2 == r { gsub(/ /, "", $4); print $4; exit }' "$REPORT.scaleapi.md"; }
    sizes=$(grep -o '^### helmq-api at [^(]*' "$REPORT.scaleapi.md" | sed 's/^### helmq-api at //; s/ *$//')
    row "API at ${sizes:-the generated size}: GET release p99 (ms)" "≤ 5" "$(p99 get)" "<=" 5
    row "API: a release's first history page p99 (ms)" "≤ 5" "$(p99 history)" "<=" 5
    row "API: a page of 100 of the long release's history p99 (ms)" "≤ 5" "$(p99 history5000)" "<=" 5
    row "API: a tenant's list of 100 releases p99 (ms)" "≤ 10" "$(p99 tenant)" "<=" 10
    row "API: summary p99 (ms)" "≤ 20" "$(p99 summary)" "<=" 20
fi
