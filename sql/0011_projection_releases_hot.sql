-- 0011: a release's row is updated in place (HOT), and written by one MERGE.
--
-- Measured (docs/PERFORMANCE.md, auto_explain of the projector's batches):
-- the UPDATE of helmq.releases was the largest single part of applying a
-- batch. No update of a release's row could be HOT, because releases_one_live's
-- predicate reads revision, which every upgrade changes: each update wrote a
-- new entry into all three indexes. The predicate now reads one stored
-- generated column, live, whose value an upgrade, a rollback or a failure of a
-- live release does not change; only an uninstall (or a first revision) does.
-- The live slot means exactly what it meant: not uninstalled and revision > 0.
-- fillfactor leaves room in each page for the new row versions HOT needs.
--
-- A new migration rather than an edit of 0002: migrate.c applies each file
-- once, by name. Adding a stored generated column rewrites the table once.

ALTER TABLE helmq.releases SET (fillfactor = 75);
ALTER TABLE helmq.releases
    ADD COLUMN live boolean GENERATED ALWAYS AS (status <> 'uninstalled' AND revision > 0) STORED;
CREATE UNIQUE INDEX releases_one_live_0011 ON helmq.releases (tenant_id, namespace, release_name) WHERE live;
DROP INDEX helmq.releases_one_live;
ALTER INDEX helmq.releases_one_live_0011 RENAME TO releases_one_live;

-- helmq.apply_staged_rows (0007) with one change in its fast form: a batch's
-- releases are written by one MERGE, which computes the winning event of each
-- release once and updates or inserts its row in the same pass, where 0007
-- ran an UPDATE and then an INSERT ... WHERE NOT EXISTS, each computing the
-- winners again. The rows written are the same. Order: the MERGE does not
-- promise 0007's (existing rows first); a release taking the live slot of a
-- name before the row that frees it raises unique_violation, and
-- helmq.apply_staged applies the batch again by the ON CONFLICT forms, in topic
-- order, as before. The rest of the function is 0007's, unchanged.
CREATE OR REPLACE FUNCTION helmq.apply_staged_rows(p_conflicts boolean) RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    applied integer;
BEGIN
    -- New events: replays (already applied) drop out, and a duplicate within
    -- the batch counts once, at its first position.
    INSERT INTO pg_temp.helmq_stage_fresh
    SELECT b.ord, b.event_id, b.release_id, b.revision, b.ts, b.changes_release
      FROM (SELECT s.ord, s.event_id, s.release_id, s.revision, to_timestamp(s.at_ms / 1000.0) AS ts,
                   s.terminal AND s.event_type <> 'rejected' AND s.release_id IS NOT NULL AS changes_release,
                   row_number() OVER (PARTITION BY s.event_id ORDER BY s.ord) AS nth
              FROM pg_temp.helmq_stage s WHERE s.ho = 0) b
     WHERE b.nth = 1
       AND NOT EXISTS (SELECT 1 FROM helmq.applied_events a WHERE a.event_id = b.event_id);
    GET DIAGNOSTICS applied = ROW_COUNT;
    IF applied = 0 THEN
        RETURN 0;
    END IF;

    IF p_conflicts THEN
        INSERT INTO helmq.applied_events (event_id, command_id, release_id, tenant_id, event_type, status,
                                          revision, occurred_at, error_code, error_message)
        SELECT f.event_id, s.command_id, f.release_id, s.tenant_id, s.event_type, s.status, f.revision, f.ts,
               s.error_code, s.error_message
          FROM pg_temp.helmq_stage_fresh f JOIN pg_temp.helmq_stage s ON s.ord = f.ord AND s.ho = 0
        ON CONFLICT (event_id) DO NOTHING;
    ELSE
        INSERT INTO helmq.applied_events (event_id, command_id, release_id, tenant_id, event_type, status,
                                          revision, occurred_at, error_code, error_message)
        SELECT f.event_id, s.command_id, f.release_id, s.tenant_id, s.event_type, s.status, f.revision, f.ts,
               s.error_code, s.error_message
          FROM pg_temp.helmq_stage_fresh f JOIN pg_temp.helmq_stage s ON s.ord = f.ord AND s.ho = 0;
    END IF;

    -- History: the first row in topic order for each (release, revision) not
    -- written yet.
    IF p_conflicts THEN
        INSERT INTO helmq.release_history (release_id, revision, tenant_id, chart_name, chart_version,
            app_version, status, operation, description, performed_by, command_id, error,
            values_digest, values_redacted, created_at)
        SELECT DISTINCT ON (f.release_id, h.revision)
               f.release_id, h.revision, s.tenant_id, h.chart_name, h.chart_version, h.app_version, h.status,
               h.operation, h.description, s.performed_by, s.command_id,
               CASE WHEN h.status = 'failed' THEN s.error_message END,
               CASE WHEN h.revision = f.revision THEN s.values_digest END,
               CASE WHEN h.revision = f.revision THEN s.values_redacted END,
               to_timestamp(h.at_ms / 1000.0)
          FROM pg_temp.helmq_stage_fresh f
          JOIN pg_temp.helmq_stage s ON s.ord = f.ord AND s.ho = 0
          JOIN pg_temp.helmq_stage h ON h.ord = f.ord AND h.ho > 0
         WHERE f.changes_release
         ORDER BY f.release_id, h.revision, f.ord, h.ho
        ON CONFLICT (release_id, revision) DO NOTHING;
    ELSE
        INSERT INTO helmq.release_history (release_id, revision, tenant_id, chart_name, chart_version,
            app_version, status, operation, description, performed_by, command_id, error,
            values_digest, values_redacted, created_at)
        SELECT DISTINCT ON (f.release_id, h.revision)
               f.release_id, h.revision, s.tenant_id, h.chart_name, h.chart_version, h.app_version, h.status,
               h.operation, h.description, s.performed_by, s.command_id,
               CASE WHEN h.status = 'failed' THEN s.error_message END,
               CASE WHEN h.revision = f.revision THEN s.values_digest END,
               CASE WHEN h.revision = f.revision THEN s.values_redacted END,
               to_timestamp(h.at_ms / 1000.0)
          FROM pg_temp.helmq_stage_fresh f
          JOIN pg_temp.helmq_stage s ON s.ord = f.ord AND s.ho = 0
          JOIN pg_temp.helmq_stage h ON h.ord = f.ord AND h.ho > 0
         WHERE f.changes_release
           AND NOT EXISTS (SELECT 1 FROM helmq.release_history r
                            WHERE r.release_id = f.release_id AND r.revision = h.revision)
         ORDER BY f.release_id, h.revision, f.ord, h.ho;
    END IF;

    -- Releases: the winning event of each (highest revision, then occurredAt,
    -- then topic order), with the first event's time as createdAt.
    IF p_conflicts THEN
        INSERT INTO helmq.releases AS r (release_id, tenant_id, namespace, release_name, chart_name,
            chart_version, app_version, status, revision, description, values_digest, values_redacted,
            uninstall_reason, last_error, last_event_id, created_at, updated_at)
        SELECT w.release_id, s.tenant_id, s.namespace, s.release_name, s.chart_name, s.chart_version,
               s.app_version, s.status, w.revision, s.description, s.values_digest, s.values_redacted,
               CASE WHEN s.status = 'uninstalled' THEN s.reason END,
               s.error_message, w.event_id, w.first_ts, w.ts
          FROM (SELECT DISTINCT ON (f.release_id) f.*,
                       first_value(f.ts) OVER (PARTITION BY f.release_id ORDER BY f.ord) AS first_ts
                  FROM pg_temp.helmq_stage_fresh f WHERE f.changes_release
                 ORDER BY f.release_id, f.revision DESC, f.ts DESC, f.ord DESC) w
          JOIN pg_temp.helmq_stage s ON s.ord = w.ord AND s.ho = 0
         ORDER BY w.ord
        ON CONFLICT (release_id) DO UPDATE SET
            chart_name = EXCLUDED.chart_name, chart_version = EXCLUDED.chart_version,
            app_version = EXCLUDED.app_version, status = EXCLUDED.status, revision = EXCLUDED.revision,
            description = EXCLUDED.description, values_digest = EXCLUDED.values_digest,
            values_redacted = EXCLUDED.values_redacted, uninstall_reason = EXCLUDED.uninstall_reason,
            last_error = EXCLUDED.last_error, last_event_id = EXCLUDED.last_event_id,
            updated_at = EXCLUDED.updated_at
        WHERE EXCLUDED.revision > r.revision
           OR (EXCLUDED.revision = r.revision AND EXCLUDED.updated_at >= r.updated_at);
        RETURN applied;
    END IF;
    MERGE INTO helmq.releases AS r
    USING (SELECT w.release_id, s.tenant_id, s.namespace, s.release_name, s.chart_name, s.chart_version,
                  s.app_version, s.status, w.revision, s.description, s.values_digest, s.values_redacted,
                  CASE WHEN s.status = 'uninstalled' THEN s.reason END AS uninstall_reason,
                  s.error_message, w.event_id, w.first_ts, w.ts
             FROM (SELECT DISTINCT ON (f.release_id) f.*,
                          first_value(f.ts) OVER (PARTITION BY f.release_id ORDER BY f.ord) AS first_ts
                     FROM pg_temp.helmq_stage_fresh f WHERE f.changes_release
                    ORDER BY f.release_id, f.revision DESC, f.ts DESC, f.ord DESC) w
             JOIN pg_temp.helmq_stage s ON s.ord = w.ord AND s.ho = 0
            ORDER BY w.ord) AS x
       ON r.release_id = x.release_id
    WHEN MATCHED AND (x.revision > r.revision OR (x.revision = r.revision AND x.ts >= r.updated_at)) THEN
        UPDATE SET chart_name = x.chart_name, chart_version = x.chart_version, app_version = x.app_version,
            status = x.status, revision = x.revision, description = x.description,
            values_digest = x.values_digest, values_redacted = x.values_redacted,
            uninstall_reason = x.uninstall_reason, last_error = x.error_message, last_event_id = x.event_id,
            updated_at = x.ts
    WHEN NOT MATCHED THEN
        INSERT (release_id, tenant_id, namespace, release_name, chart_name, chart_version, app_version, status,
                revision, description, values_digest, values_redacted, uninstall_reason, last_error,
                last_event_id, created_at, updated_at)
        VALUES (x.release_id, x.tenant_id, x.namespace, x.release_name, x.chart_name, x.chart_version,
                x.app_version, x.status, x.revision, x.description, x.values_digest, x.values_redacted,
                x.uninstall_reason, x.error_message, x.event_id, x.first_ts, x.ts);
    RETURN applied;
END $$;
