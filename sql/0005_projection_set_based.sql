-- 0005: helmq.apply_events set-based. The same result as 0002's loop (one
-- event after another, in topic order), in four statements per batch instead
-- of three or more per event: ~6x the events per second (docs/PERFORMANCE.md).
--
-- Sequential semantics kept:
--   * an eventId is applied once (the first occurrence in topic order wins);
--   * history rows are written once per (release, revision): the first event
--     in topic order that carries a revision writes it;
--   * a release's row follows the event with the highest (revision,
--     occurredAt), the later one in topic order on a tie, and only if that is
--     not older than the row already stored. Applying "(revision, ts) >= the
--     row's" one event at a time ends at exactly that event. A row created
--     by the batch has the createdAt of the first of them.
-- Rows of different releases are upserted in the topic order of the events
-- that win, so that a name uninstalled and installed again within one batch
-- leaves the old lifecycle before the new one takes the live slot
-- (releases_one_live). A batch that fails anyway is retried by the projector
-- in smaller pieces, down to one event, where this equals the loop.
CREATE OR REPLACE FUNCTION helmq.apply_events(p_events jsonb) RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    applied integer;
BEGIN
    WITH b AS MATERIALIZED (
        SELECT o AS ord, e, (e->>'eventId')::uuid AS event_id, (e->>'releaseId')::uuid AS release_id,
               (e->>'revision')::integer AS revision, to_timestamp((e->>'occurredAt')::bigint / 1000.0) AS ts,
               (e->>'terminal')::boolean AND e->>'eventType' <> 'rejected' AND e->>'releaseId' IS NOT NULL
                   AS changes_release,
               row_number() OVER (PARTITION BY e->>'eventId' ORDER BY o) AS nth,
               EXISTS (SELECT 1 FROM helmq.applied_events a WHERE a.event_id = (e->>'eventId')::uuid) AS seen
        FROM jsonb_array_elements(p_events) WITH ORDINALITY AS t(e, o)
    ),
    -- New events: replays (already applied) drop out, and a duplicate within
    -- the batch counts once, at its first position. (Every part of this
    -- statement sees the tables as they were before it.)
    fresh AS MATERIALIZED (
        SELECT * FROM b WHERE b.nth = 1 AND NOT b.seen
    ),
    ins AS (
        INSERT INTO helmq.applied_events (event_id, command_id, release_id, tenant_id, event_type, status,
                                          revision, occurred_at, error_code, error_message)
        SELECT f.event_id, f.e->>'commandId', f.release_id, (f.e->>'tenantId')::uuid,
               f.e->>'eventType', f.e->>'status', f.revision, f.ts, f.e->>'errorCode', f.e->>'errorMessage'
        FROM fresh f
        ON CONFLICT (event_id) DO NOTHING
    ),
    hist AS (
        INSERT INTO helmq.release_history (release_id, revision, tenant_id, chart_name, chart_version,
            app_version, status, operation, description, performed_by, command_id, error,
            values_digest, values_redacted, created_at)
        SELECT DISTINCT ON (f.release_id, (h->>'revision')::integer)
               f.release_id, (h->>'revision')::integer, (f.e->>'tenantId')::uuid,
               h->>'chartName', h->>'chartVersion', h->>'appVersion', h->>'status', h->>'operation',
               h->>'description', f.e->>'performedBy', f.e->>'commandId',
               CASE WHEN h->>'status' = 'failed' THEN f.e->>'errorMessage' END,
               CASE WHEN (h->>'revision')::integer = f.revision THEN f.e->>'valuesDigest' END,
               CASE WHEN (h->>'revision')::integer = f.revision THEN f.e->>'valuesRedacted' END,
               to_timestamp((h->>'createdAt')::bigint / 1000.0)
        FROM fresh f, jsonb_array_elements(COALESCE(f.e->'history', '[]'::jsonb)) WITH ORDINALITY AS x(h, ho)
        WHERE f.changes_release
        ORDER BY f.release_id, (h->>'revision')::integer, f.ord, x.ho
        ON CONFLICT (release_id, revision) DO NOTHING
    ),
    rel AS (
        INSERT INTO helmq.releases AS r (release_id, tenant_id, namespace, release_name, chart_name,
            chart_version, app_version, status, revision, description, values_digest, values_redacted,
            uninstall_reason, last_error, last_event_id, created_at, updated_at)
        SELECT w.release_id, (w.e->>'tenantId')::uuid, w.e->>'namespace', w.e->>'releaseName',
               w.e->>'chartName', w.e->>'chartVersion', w.e->>'appVersion', w.e->>'status',
               w.revision, w.e->>'description', w.e->>'valuesDigest', w.e->>'valuesRedacted',
               CASE WHEN w.e->>'status' = 'uninstalled' THEN w.e->>'reason' END,
               w.e->>'errorMessage', w.event_id, w.first_ts, w.ts
        FROM (SELECT DISTINCT ON (f.release_id) f.*,
                     first_value(f.ts) OVER (PARTITION BY f.release_id ORDER BY f.ord) AS first_ts
              FROM fresh f WHERE f.changes_release
              ORDER BY f.release_id, f.revision DESC, f.ts DESC, f.ord DESC) w
        ORDER BY w.ord
        ON CONFLICT (release_id) DO UPDATE SET
            chart_name = EXCLUDED.chart_name, chart_version = EXCLUDED.chart_version,
            app_version = EXCLUDED.app_version, status = EXCLUDED.status, revision = EXCLUDED.revision,
            description = EXCLUDED.description, values_digest = EXCLUDED.values_digest,
            values_redacted = EXCLUDED.values_redacted, uninstall_reason = EXCLUDED.uninstall_reason,
            last_error = EXCLUDED.last_error, last_event_id = EXCLUDED.last_event_id,
            updated_at = EXCLUDED.updated_at
        WHERE EXCLUDED.revision > r.revision
           OR (EXCLUDED.revision = r.revision AND EXCLUDED.updated_at >= r.updated_at)
    )
    SELECT count(*) INTO applied FROM fresh;
    RETURN applied;
END $$;
