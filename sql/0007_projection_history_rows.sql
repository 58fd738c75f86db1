-- 0007: a page of a release's history as rows (issue 25).
--
-- helmq-api rendered release_history_page()'s JSON as PostgreSQL built it:
-- json_agg(json_build_object(...)) looks up each argument's type and output
-- function on every row, and at 1,000,000 releases a first page of ~20
-- entries cost 0.42-0.54 ms that way against 0.10 ms as rows, a page of 100
-- of a 5,000-revision release 0.87-1.04 ms against 0.53-0.77 (pgbench, one
-- client, prepared). helmq-api now reads the rows and renders the JSON
-- itself (worker/api/api_render.c), the same entries release_history_page()
-- and release_history() give, which stay for SQL readers.
--
-- release_history_rows: the revisions of a release after p_after (NULL: from
-- the first), by revision, at most p_limit of them, each with its display
-- status (release_history_view's rule: a deployed revision shows superseded
-- once a later one replaced it). As in release_history_page(), the page's
-- rows are read first by a range of the primary key (release_id, revision),
-- and only then is each one's display status looked up, one index probe per
-- row. A caller that asks for one row more than it shows learns whether
-- another page follows. A single SELECT in LANGUAGE sql: inlined into the
-- caller's query and planned with it.
CREATE FUNCTION helmq.release_history_rows(p_release_id uuid, p_after integer, p_limit integer)
    RETURNS TABLE (revision integer, chart_version text, app_version text, status text, description text,
                   performed_by text, created_at timestamptz) LANGUAGE sql STABLE AS $$
    WITH page AS MATERIALIZED (
        SELECT h.release_id, h.revision, h.chart_version, h.app_version, h.status, h.description,
               h.performed_by, h.created_at
          FROM helmq.release_history h
         WHERE h.release_id = p_release_id AND h.revision > COALESCE(p_after, -2147483648)
         ORDER BY h.revision LIMIT p_limit)
    SELECT p.revision, p.chart_version, p.app_version,
           CASE WHEN p.status = 'deployed' AND EXISTS (
                    SELECT 1 FROM helmq.release_history l
                     WHERE l.release_id = p.release_id AND l.revision > p.revision
                       AND l.status IN ('deployed', 'uninstalled', 'superseded'))
                THEN 'superseded' ELSE p.status END,
           p.description, p.performed_by, p.created_at
      FROM page p ORDER BY p.revision;
$$;

COMMENT ON FUNCTION helmq.release_history_rows(uuid, integer, integer) IS
    'a release''s history as rows (by revision, display status) after revision p_after (NULL: from the first), '
    'at most p_limit of them';

GRANT EXECUTE ON FUNCTION helmq.release_history_rows(uuid, integer, integer) TO helmq_reader, helmq_admin;
