#!/usr/bin/env bash
# History paging (sql/0004_projection_history_paging.sql, helmq-api's
# GET :releaseId/history?limit=&after=, helmq releases history --limit
# --after) on a projection filled by tests/bench/scale-gen: a release with 250
# revisions read page by page equals its whole history, with no gap and no
# repeat; the default page, the last page, bad parameters (400), another
# tenant (404). And the summary's counts kept by 0004's triggers: equal to a
# count of the releases after inserts, upserts, deletes and a TRUNCATE.
. "$(dirname "$0")/lib/tap.sh"
. "$(dirname "$0")/lib/common.sh"
. "$(dirname "$0")/lib/stack.sh"

stack_start
"$HELMQ_BIN/helmq-projector" migrate >>"$T/migrate.log" 2>&1 || bail "helmq-projector migrate failed"
SCALE_RELEASES=20 SCALE_TENANTS=3 SCALE_HISTORY=300 SCALE_LONG=250 SCALE_CHUNKS=3 \
    SCALE_DATABASE_URL="$HELMQ_DATABASE_URL" bash tests/bench/scale-gen 2>"$T/gen.log"
ok $? "scale-gen fills the projection (20 releases, 300 history rows)"
is "$(psql_q "SELECT count(*) || ' ' || (SELECT count(*) FROM helmq.release_history) FROM helmq.releases")" \
    "20 300" "with the sizes asked for"
is "$(psql_q "SELECT count(*) FROM helmq.releases r WHERE revision <> (SELECT max(revision) FROM
        helmq.release_history h WHERE h.release_id = r.release_id) OR status <> (SELECT status FROM
        helmq.release_history h WHERE h.release_id = r.release_id AND h.revision = r.revision)")" \
    0 "each release's revision and status are its last history row's"

RID=$(psql_q "SELECT md5('release-1')::uuid")
is "$(psql_q "SELECT revision FROM helmq.releases WHERE release_id = '$RID'")" 250 "release 1 has 250 revisions"
WHOLE=$(psql_q "SELECT helmq.release_history('$RID')" | jq -c .)

api_start
B="$API_URL/api/v1/helm/releases"
# get URL TOKEN: the body into $T/body, the headers into $T/head; prints the status
get() { curl -s -o "$T/body" -D "$T/head" -w '%{http_code}' -H "Authorization: Bearer $2" "$1"; }
next_of() { sed -n 's/^[Ll]ink: <\([^>]*\)>; rel="next".*/\1/p' "$T/head" | tr -d '\r'; }

# Page by page, following Link, 100 at a time.
url="/api/v1/helm/releases/$RID/history?limit=100"
pages=0 sizes="" all="[]"
while [ -n "$url" ] && [ "$pages" -lt 10 ]; do
    st=$(get "$API_URL$url" "$ADMIN_TOKEN")
    [ "$st" = 200 ] || break
    pages=$((pages + 1))
    sizes="$sizes $(jq length "$T/body")"
    all=$(jq -c --argjson a "$all" '$a + .' "$T/body")
    url=$(next_of)
done
is "$pages:$sizes" "3: 100 100 50" "three pages of 100, 100 and 50, the last without a Link"
is "$all" "$WHOLE" "the pages together are the whole history, in order"
is "$(jq -c '[.[].revision] | [length, (unique | length), .[0], .[-1]]' <<<"$all")" "[250,250,1,250]" \
    "no revision missing, none repeated"

st=$(get "$B/$RID/history" "$ADMIN_TOKEN")
is "$st $(jq -c '[length, .[0].revision, .[-1].revision]' "$T/body")" "200 [100,1,100]" \
    "no ?limit=: the default page, the first 100"
is "$(next_of)" "/api/v1/helm/releases/$RID/history?limit=100&after=100" "its Link names the next page"
st=$(get "$B/$RID/history?limit=1000" "$ADMIN_TOKEN")
is "$st $(jq length "$T/body") $(next_of | wc -c)" "200 250 0" "limit=1000: the whole history, no Link"
st=$(get "$B/$RID/history?after=249&limit=1" "$ADMIN_TOKEN")
is "$st $(jq -c '[.[].revision]' "$T/body") $(next_of | wc -c)" "200 [250] 0" "after=249&limit=1: the last revision"
st=$(get "$B/$RID/history?after=250" "$ADMIN_TOKEN")
is "$st $(cat "$T/body")" "200 []" "after the last revision: an empty page"
st=$(get "$B/$RID/history?after=10&limit=5" "$ADMIN_TOKEN")
is "$(jq -c '[.[].revision]' "$T/body") $(next_of)" \
    "[11,12,13,14,15] /api/v1/helm/releases/$RID/history?limit=5&after=15" "a page in the middle"
is "$(jq -c '.[0]' "$T/body")" "$(jq -c '.[10]' <<<"$WHOLE")" "its entries are release_history()'s"

for q in limit=0 limit=1001 limit=abc limit= limit=-5 "limit=1%00" after=-1 after=x after=99999999999 after=1.5; do
    st=$(get "$B/$RID/history?$q" "$ADMIN_TOKEN")
    is "$st $(jq -r .field "$T/body")" "400 ${q%%=*}" "?$q: 400 naming the parameter"
done

ACME_RID=$(psql_q "SELECT md5('release-2')::uuid")
st=$(get "$B/$ACME_RID/history?limit=5" "$ACME_TOKEN")
is "$st" 404 "another tenant's release: 404, paged or not"
st=$(get "$B/00000000-0000-4000-8000-000000000000/history?limit=5" "$ADMIN_TOKEN")
is "$st" 404 "an unknown release: 404"

# The CLI: the same pages from SQL.
get "$B/$RID/history?after=10&limit=5" "$ADMIN_TOKEN" >/dev/null
cli=$("$HELMQ_BIN/helmq" releases history "$RID" --limit 5 --after 10 2>"$T/cli.err" | jq -c .)
is "$cli" "$(jq -c . "$T/body")" "helmq releases history --limit 5 --after 10: the API's page"
like "$(cat "$T/cli.err")" "more follow: --after 15" "and says where the next page starts"
is "$("$HELMQ_BIN/helmq" releases history "$RID" | jq -c .)" "$WHOLE" "without --limit: the whole history"
"$HELMQ_BIN/helmq" releases history "$RID" --limit 0 >/dev/null 2>&1
is $? 2 "--limit 0: invalid input (exit 2)"

# The summary's counts (release_counts, kept by triggers) against a count.
counted() { # counted [TENANT]: the summary counted from helmq.releases (of one tenant)
    psql_q "WITH r AS (SELECT * FROM helmq.releases WHERE ${1:+tenant_id = '$1' AND} true),
         g AS (SELECT status, chart_name, count(*) n FROM r GROUP BY 1, 2)
        SELECT json_build_object('total', (SELECT count(*) FROM r),
        'byStatus', (SELECT COALESCE(json_object_agg(status, n ORDER BY status), '{}')
                       FROM (SELECT status, count(*) n FROM r GROUP BY 1) s),
        'byChart', (SELECT COALESCE(json_object_agg(COALESCE(chart_name, ''), n ORDER BY chart_name), '{}')
                      FROM (SELECT chart_name, count(*) n FROM r GROUP BY 1) c),
        'groups', (SELECT COALESCE(json_agg(json_build_object('status', status, 'chartName', chart_name, 'count', n)
                                            ORDER BY status COLLATE \"C\", chart_name COLLATE \"C\"), '[]') FROM g))" |
        jq -cS .
}
summary() { curl -s -H "Authorization: Bearer $ADMIN_TOKEN" "$B/summary${1:+?tenantId=$1}" | jq -cS .; }
is "$(summary)" "$(counted)" "the summary after scale-gen equals a count of the releases"
is "$(summary | jq .total)" 20 "20 releases in it"
T1=$(psql_q "SELECT tenant_id FROM helmq.releases ORDER BY release_id LIMIT 1")
is "$(summary "$T1")" "$(counted "$T1")" "one tenant's summary equals a count of its releases"
psql_q "UPDATE helmq.releases SET status = 'uninstalled', chart_name = 'other'
         WHERE release_id IN (md5('release-3')::uuid, md5('release-4')::uuid)" >/dev/null
ok $? "an update of two releases' status and chart"
is "$(summary)" "$(counted)" "after an update of status and chart"
psql_q "INSERT INTO helmq.releases (release_id, tenant_id, namespace, release_name, chart_name, status, revision,
        last_event_id, created_at, updated_at)
        SELECT gen_random_uuid(), gen_random_uuid(), 'ns', 'n' || i, CASE WHEN i % 2 = 0 THEN 'c' END, 'failed', 1,
               gen_random_uuid(), now(), now() FROM generate_series(1, 7) i
        UNION ALL SELECT md5('release-5')::uuid, gen_random_uuid(), 'x', 'x', 'chart-9', 'pending-upgrade', 2,
               gen_random_uuid(), now(), now()
        ON CONFLICT (release_id) DO UPDATE SET status = EXCLUDED.status, chart_name = EXCLUDED.chart_name" >/dev/null
ok $? "an upsert as the projector's (INSERT ... ON CONFLICT DO UPDATE)"
is "$(summary)" "$(counted)" "after an upsert inserting 7 (a null chart among them) and updating one"
is "$(summary | jq -c '[.total, .byStatus["pending-upgrade"], .byChart[""]]')" "[27,1,4]" \
    "27 releases, the upserted one counted under its new status, null charts under \"\""
psql_q "DELETE FROM helmq.releases WHERE status = 'failed'" >/dev/null
ok $? "a delete"
is "$(summary)" "$(counted)" "after a delete"
is "$(summary "$T1")" "$(counted "$T1")" "  and one tenant's too"
is "$(psql_q "SELECT count(*) FROM helmq.release_counts WHERE count = 0")" 0 "no row counts 0"
psql_q "SELECT helmq.truncate_projection()" >/dev/null
is "$(summary)" '{"byChart":{},"byStatus":{},"groups":[],"total":0}' "after truncate_projection (a rebuild): all zero"

done_testing
