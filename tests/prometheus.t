#!/usr/bin/env bash
# tests/prometheus.t: the Prometheus rules shipped in docs/prometheus/.
# - `promtool check rules` accepts them;
# - `promtool test rules` (tests/prometheus/helmq-rules.test.yml): every alert
#   fires on the series that should raise it and not on a healthy neighbour;
# - the rules name only metrics the programs expose (read from the sources'
#   HELP lines), so a renamed metric cannot silently disarm an alert;
# - the unit tests can fail: a rule file with a threshold changed is caught.
cd "$(dirname "$0")/.." || exit 1
. tests/lib/tap.sh

RULES=docs/prometheus/helmq-rules.yml
TESTS=tests/prometheus/helmq-rules.test.yml

if ! command -v promtool >/dev/null 2>&1; then
    if [ "${CI:-}" = true ]; then
        echo "not ok 1 - promtool is installed (Debian package prometheus; CI=true)"
        echo "1..1"
        exit 1
    fi
    skip_all "promtool is not installed (apt-get install prometheus)"
fi

out=$(promtool check rules "$RULES" 2>&1)
ok $? "promtool check rules accepts $RULES" || _tap_err "$out"
like "$out" "SUCCESS" "  and reports success"

out=$(promtool test rules "$TESTS" 2>&1)
ok $? "promtool test rules: every alert fires when it should and only then" || _tap_err "$out"

# Every helmq_* metric the rules use is one a program exposes.
used=$(grep -oE 'helmq_[a-z_]+' "$RULES" | sed -E 's/_(bucket|sum|count)$//' | sort -u)
exposed=$(grep -rhoE '# (HELP|TYPE) helmq_[a-z_]+' worker | awk '{print $3}' | sort -u)
missing=$(comm -23 <(printf '%s\n' "$used") <(printf '%s\n' "$exposed"))
n=$(printf '%s\n' "$used" | grep -c .)
ok $([ "$n" -ge 8 ] && echo 0 || echo 1) "the rules use the programs' metrics ($n names)"
is "$missing" "" "every metric the rules use is exposed by a program"

# The unit tests catch a broken rule: raise the failure-rate threshold.
work=$(mktemp -d "${TMPDIR:-/tmp}/prometheus-t.XXXXXX") || bail "mktemp failed"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/docs/prometheus" "$work/tests/prometheus"
cp "$TESTS" "$work/tests/prometheus/"
sed 's/helmq:worker_failure_ratio:rate15m > 0.2$/helmq:worker_failure_ratio:rate15m > 0.5/' "$RULES" \
    >"$work/docs/prometheus/helmq-rules.yml"
cmp -s "$RULES" "$work/docs/prometheus/helmq-rules.yml"
ok $([ $? -ne 0 ] && echo 0 || echo 1) "the mutated rule file differs from the real one"
out=$(promtool test rules "$work/tests/prometheus/helmq-rules.test.yml" 2>&1)
rc=$?
ok $([ $rc -ne 0 ] && echo 0 || echo 1) "a raised threshold fails the unit tests"
like "$out" "HelmqHighFailureRate" "  naming the alert that no longer fires"

done_testing
