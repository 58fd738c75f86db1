-- 0003: the summary grouped by status and chart name together (issue 26), and
-- narrowed to one tenant.
--
-- The seed asks for "counts grouped by status and chart name"; until now the
-- summary gave the two groupings apart (byStatus, byChart). The summary keeps
-- those fields and its total, and adds groups: one entry per (status, chart
-- name) pair that has releases, with its count, ordered by status then chart
-- name (byte order, whatever the database's collation). Every count of one
-- answer is taken from the same grouping, so they agree with each other.
--
-- helmq.release_summary(uuid) takes a tenant (NULL: every tenant);
-- helmq.release_summary() stays, for the programs and the queries written
-- against it, as the same summary across tenants. Both are helmq_admin's only,
-- like the summary before (row-level security still applies to the caller).

-- Counts of the releases of one tenant (NULL: of every tenant): total, by
-- status, by chart name, and by status and chart name together.
CREATE FUNCTION helmq.release_summary(p_tenant_id uuid) RETURNS json LANGUAGE sql STABLE AS $$
    WITH g AS (
        SELECT status, chart_name, count(*) AS n FROM helmq.releases
         WHERE p_tenant_id IS NULL OR tenant_id = p_tenant_id
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

COMMENT ON FUNCTION helmq.release_summary(uuid) IS
    'counts of the releases of one tenant (null: every tenant): total, byStatus, byChart, and groups '
    '[{status, chartName, count}] by status and chart name (JSON; helmq_admin)';

-- The summary across tenants, as before, now with its groups too.
CREATE OR REPLACE FUNCTION helmq.release_summary() RETURNS json LANGUAGE sql STABLE AS $$
    SELECT helmq.release_summary(NULL::uuid);
$$;

COMMENT ON FUNCTION helmq.release_summary() IS
    'counts of all releases across tenants: helmq.release_summary(null) (JSON; helmq_admin)';

-- A new function is PUBLIC's by default: the summary is for administrators.
REVOKE ALL ON FUNCTION helmq.release_summary(uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION helmq.release_summary(uuid) TO helmq_admin;
