-- 0005: the summary of every tenant planned for every tenant (issue 25).
--
-- 0004's release_summary(uuid) selected its counts with
-- `WHERE p_tenant_id IS NULL OR tenant_id = p_tenant_id`. A LANGUAGE sql
-- function that is not inlined is planned with its parameter unknown: the
-- planner took that filter for a tenant's few rows (51 of 10,001 estimated
-- at 1,000,000 releases over 10,000 tenants) and sorted the whole table for a
-- GroupAggregate; the summary of every tenant then cost 12-13 ms where the
-- same query with the filter left out costs 3 ms (EXPLAIN ANALYZE through
-- auto_explain, docs/PERFORMANCE.md). The two cases are now two branches of
-- one UNION ALL: the first only for NULL (a one-time filter, planned for the
-- whole table: a HashAggregate), the second only for a tenant (the primary
-- key's first column). Same answers; the comment and grants of 0003 stay.
CREATE OR REPLACE FUNCTION helmq.release_summary(p_tenant_id uuid) RETURNS json LANGUAGE sql STABLE AS $$
    WITH g AS (
        SELECT status, NULLIF(chart_name, '') AS chart_name, sum(count)::bigint AS n FROM helmq.release_counts
         WHERE p_tenant_id IS NULL
         GROUP BY status, chart_name
        UNION ALL
        SELECT status, NULLIF(chart_name, ''), sum(count)::bigint FROM helmq.release_counts
         WHERE tenant_id = p_tenant_id
         GROUP BY status, chart_name)
    SELECT json_build_object(
        'total', (SELECT COALESCE(sum(n), 0)::bigint FROM g),
        'byStatus', (SELECT COALESCE(json_object_agg(status, n ORDER BY status), '{}')
                       FROM (SELECT status, sum(n)::bigint AS n FROM g GROUP BY status) s),
        'byChart', (SELECT COALESCE(json_object_agg(COALESCE(chart_name, ''), n ORDER BY chart_name), '{}')
                      FROM (SELECT chart_name, sum(n)::bigint AS n FROM g GROUP BY chart_name) c),
        'groups', (SELECT COALESCE(json_agg(json_build_object('status', status, 'chartName', chart_name, 'count', n)
                                            ORDER BY status COLLATE "C", chart_name COLLATE "C"), '[]')
                     FROM g));
$$;
