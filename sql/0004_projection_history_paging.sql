-- 0004: the projection's queries at scale (issue 25): a release's history
-- read a page at a time, and the summary kept incrementally instead of
-- counting every release on each call.
--
--   release_history_page   one page of a release's history, in revision
--                          order after a revision, through the primary key
--                          (release_id, revision), with the cursor of the
--                          next page;
--   release_counts         releases by (tenant, status, chart name), kept
--                          by statement-level triggers on helmq.releases
--                          (the projector's inserts, upserts and TRUNCATE
--                          fire them; its C code is unchanged); the summary
--                          views and release_summary(uuid) of 0003 read it:
--                          a row per tenant's (status, chart) instead of a
--                          scan of every release.

-- --- history pages ----------------------------------------------------------------

-- One page of a release's history: the entries (the same JSON objects as
-- release_history(), by revision) of revisions after p_after (NULL: from the
-- first), at most p_limit of them, and next_after: the last revision of the
-- page when more follow, else NULL. The page's p_limit + 1 rows are read
-- first, by a range of the primary key (release_id, revision); only then is
-- each one's display status (release_history_view's rule: a deployed
-- revision shows superseded once a later one replaced it) looked up, one
-- index probe per row. Reading through the view instead computed that for
-- every revision after p_after before the LIMIT (its security_barrier keeps
-- the ORDER BY ... LIMIT above it): 36 ms for a page in the middle of 5,000
-- revisions, against well under 1 ms this way.
CREATE FUNCTION helmq.release_history_page(p_release_id uuid, p_after integer, p_limit integer)
    RETURNS TABLE (entries json, next_after integer) LANGUAGE sql STABLE AS $$
    WITH page AS MATERIALIZED (
        SELECT h.release_id, h.revision, h.chart_version, h.app_version, h.status, h.description,
               h.performed_by, h.created_at
          FROM helmq.release_history h
         WHERE h.release_id = p_release_id AND h.revision > COALESCE(p_after, -2147483648)
         ORDER BY h.revision LIMIT p_limit + 1),
    numbered AS (
        SELECT p.*, row_number() OVER (ORDER BY p.revision) AS n,
               CASE WHEN p.status = 'deployed' AND EXISTS (
                        SELECT 1 FROM helmq.release_history l
                         WHERE l.release_id = p.release_id AND l.revision > p.revision
                           AND l.status IN ('deployed', 'uninstalled', 'superseded'))
                    THEN 'superseded' ELSE p.status END AS display_status
          FROM page p)
    SELECT COALESCE(json_agg(json_build_object(
               'revision', p.revision, 'chartVersion', p.chart_version, 'appVersion', p.app_version,
               'status', p.display_status, 'description', p.description, 'performedBy', p.performed_by,
               'createdAt', p.created_at) ORDER BY p.revision) FILTER (WHERE p.n <= p_limit), '[]'),
           CASE WHEN count(*) > p_limit THEN max(p.revision) FILTER (WHERE p.n <= p_limit) END
      FROM numbered p;
$$;

COMMENT ON FUNCTION helmq.release_history_page(uuid, integer, integer) IS
    'one page of a release''s history (JSON array, by revision) after revision p_after (NULL: from the first), '
    'at most p_limit entries, and next_after: the page''s last revision when more follow, else NULL';

-- --- the summary's counts, kept as releases change -----------------------------------

-- Releases by tenant, status and chart name ('' for none), the summary's
-- source. A row whose count reaches 0 is deleted, as the grouping it
-- replaces would not show it. The tenant is in the key so that the summary
-- of one tenant reads that tenant's rows only, and so that projector
-- transactions writing different tenants' releases update different rows.
CREATE TABLE helmq.release_counts (
    tenant_id  uuid NOT NULL,
    status     text NOT NULL,
    chart_name text NOT NULL,
    count      bigint NOT NULL, -- no CHECK: a negative delta is the proposed row of an upsert
    PRIMARY KEY (tenant_id, status, chart_name)
);

COMMENT ON TABLE helmq.release_counts IS
    'releases by tenant, status and chart name ('''' for none), kept by the triggers on helmq.releases; '
    'the summary reads it instead of counting every release';

INSERT INTO helmq.release_counts (tenant_id, status, chart_name, count)
    SELECT tenant_id, status, COALESCE(chart_name, ''), count(*) FROM helmq.releases GROUP BY 1, 2, 3;

-- Adds the rows of one statement's transition tables: +1 for each new row,
-- -1 for each old one, one upsert per (tenant, status, chart) in key order
-- (two transactions lock the same counts rows in the same order: no
-- deadlock).
CREATE FUNCTION helmq.release_counts_apply() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO helmq.release_counts AS c (tenant_id, status, chart_name, count)
            SELECT tenant_id, status, COALESCE(chart_name, ''), count(*) FROM new_rows
             GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
            ON CONFLICT (tenant_id, status, chart_name) DO UPDATE SET count = c.count + EXCLUDED.count;
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO helmq.release_counts AS c (tenant_id, status, chart_name, count)
            SELECT tenant_id, status, chart, sum(d) FROM (
                SELECT tenant_id, status, COALESCE(chart_name, '') AS chart, 1 AS d FROM new_rows
                UNION ALL
                SELECT tenant_id, status, COALESCE(chart_name, ''), -1 FROM old_rows) x
             GROUP BY 1, 2, 3 HAVING sum(d) <> 0 ORDER BY 1, 2, 3
            ON CONFLICT (tenant_id, status, chart_name) DO UPDATE SET count = c.count + EXCLUDED.count;
        DELETE FROM helmq.release_counts WHERE count = 0;
    ELSE -- DELETE
        INSERT INTO helmq.release_counts AS c (tenant_id, status, chart_name, count)
            SELECT tenant_id, status, COALESCE(chart_name, ''), -count(*) FROM old_rows
             GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
            ON CONFLICT (tenant_id, status, chart_name) DO UPDATE SET count = c.count + EXCLUDED.count;
        DELETE FROM helmq.release_counts WHERE count = 0;
    END IF;
    RETURN NULL;
END $$;

COMMENT ON FUNCTION helmq.release_counts_apply() IS
    'statement trigger function on helmq.releases: adds the statement''s new rows to helmq.release_counts '
    'and takes its old rows off';

CREATE FUNCTION helmq.release_counts_clear() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM helmq.release_counts;
    RETURN NULL;
END $$;

COMMENT ON FUNCTION helmq.release_counts_clear() IS
    'statement trigger function: empties helmq.release_counts when helmq.releases is truncated';

CREATE TRIGGER release_counts_insert AFTER INSERT ON helmq.releases
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION helmq.release_counts_apply();
CREATE TRIGGER release_counts_update AFTER UPDATE ON helmq.releases
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION helmq.release_counts_apply();
CREATE TRIGGER release_counts_delete AFTER DELETE ON helmq.releases
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION helmq.release_counts_apply();
CREATE TRIGGER release_counts_truncate AFTER TRUNCATE ON helmq.releases
    FOR EACH STATEMENT EXECUTE FUNCTION helmq.release_counts_clear();

-- The summary's views and function (0003's release_summary(uuid), which
-- release_summary() calls), the same answers from the counts.
CREATE OR REPLACE VIEW helmq.summary_by_status AS
    SELECT status, sum(count)::bigint AS count FROM helmq.release_counts GROUP BY status;
CREATE OR REPLACE VIEW helmq.summary_by_chart AS
    SELECT NULLIF(chart_name, '') AS chart_name, sum(count)::bigint AS count
      FROM helmq.release_counts GROUP BY chart_name;

CREATE OR REPLACE FUNCTION helmq.release_summary(p_tenant_id uuid) RETURNS json LANGUAGE sql STABLE AS $$
    WITH g AS (
        SELECT status, NULLIF(chart_name, '') AS chart_name, sum(count)::bigint AS n FROM helmq.release_counts
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

REVOKE ALL ON helmq.release_counts FROM PUBLIC;
-- release_summary(uuid) runs as its caller: the administrators read the counts.
GRANT SELECT ON helmq.release_counts TO helmq_admin;
REVOKE ALL ON FUNCTION helmq.release_history_page(uuid, integer, integer), helmq.release_counts_apply(),
    helmq.release_counts_clear() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION helmq.release_history_page(uuid, integer, integer) TO helmq_reader, helmq_admin;
