-- 0007: the projector streams each batch with COPY into per-connection
-- staging tables and applies it with helmq.apply_staged(): no JSON is built,
-- sent or parsed (0005's apply_events spent a third of its time on that).
--
-- The staging table is TEMP (each projector connection has its own; its rows
-- vanish at the end of the batch's transaction), created by
-- helmq.stage_create(), which the projector calls once per connection (a
-- second call does nothing). One table, so that a batch is one COPY and the
-- projector can send it whole and go on decoding the next batch:
--   ho = 0   one row per event of the batch; ord is its place in the batch
--            (topic order), from 1; at_ms is occurredAt;
--   ho > 0   the ho-th entry of the history of event ord: revision, status,
--            chart_name, chart_version, app_version, operation, description,
--            and at_ms its createdAt; the other columns null.
-- Timestamps are staged as ms since the epoch and converted as 0005 does, so
-- both paths store the same values.
--
-- helmq.apply_staged() has exactly the semantics of 0005's apply_events (read
-- its header): an eventId is applied once, the first occurrence in topic order
-- winning; history rows are written once per (release, revision), the first
-- event in topic order that carries one writing it; a release's row follows
-- the event with the highest (revision, occurredAt), the later in topic order
-- on a tie, and only when not older than the stored row, createdAt being the
-- first of the batch's; rows upserted in the topic order of the events that
-- win (releases_one_live). apply_events stays, unchanged, for other callers.
--
-- Speed: events already applied, history rows already written and releases
-- already stored are found by index probes first, so the three tables take
-- plain INSERTs and UPDATEs rather than ON CONFLICT's speculative insertion
-- and row locks, which cost per row. Only a concurrent writer (a second
-- projector during a rebalance) can then collide, or a release taking the
-- live slot of a name before the update that frees it (existing rows are
-- updated before new ones are inserted, not in topic order). Either raises
-- unique_violation, and the batch is then applied again by 0005's ON CONFLICT
-- forms, in topic order, inside the same transaction (one subtransaction per
-- batch, not per row); what still fails there goes back to the projector,
-- which retries in smaller pieces as with 0005.

CREATE FUNCTION helmq.stage_create() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('client_min_messages', 'warning', true); -- no "already exists" notices
    CREATE TEMP TABLE IF NOT EXISTS helmq_stage (
        ord             integer NOT NULL,
        ho              integer NOT NULL,
        event_id        uuid,
        command_id      text,
        release_id      uuid,
        tenant_id       uuid,
        event_type      text,
        terminal        boolean,
        namespace       text,
        release_name    text,
        status          text,
        revision        integer,
        chart_name      text,
        chart_version   text,
        app_version     text,
        operation       text,
        description     text,
        performed_by    text,
        at_ms           bigint,
        reason          text,
        values_digest   text,
        values_redacted text,
        error_code      text,
        error_message   text
    ) ON COMMIT DELETE ROWS;
    -- The batch's new events (apply_staged_rows' working set).
    CREATE TEMP TABLE IF NOT EXISTS helmq_stage_fresh (
        ord integer, event_id uuid, release_id uuid, revision integer, ts timestamptz, changes_release boolean
    ) ON COMMIT DELETE ROWS;
END $$;

-- The staged batch's rows, into the three tables. p_conflicts: false for the
-- fast form (plain INSERTs and UPDATEs), true for 0005's ON CONFLICT forms.
CREATE FUNCTION helmq.apply_staged_rows(p_conflicts boolean) RETURNS integer LANGUAGE plpgsql AS $$
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
    UPDATE helmq.releases AS r SET
        chart_name = s.chart_name, chart_version = s.chart_version, app_version = s.app_version,
        status = s.status, revision = w.revision, description = s.description,
        values_digest = s.values_digest, values_redacted = s.values_redacted,
        uninstall_reason = CASE WHEN s.status = 'uninstalled' THEN s.reason END,
        last_error = s.error_message, last_event_id = w.event_id, updated_at = w.ts
      FROM (SELECT DISTINCT ON (f.release_id) f.*
              FROM pg_temp.helmq_stage_fresh f WHERE f.changes_release
             ORDER BY f.release_id, f.revision DESC, f.ts DESC, f.ord DESC) w
      JOIN pg_temp.helmq_stage s ON s.ord = w.ord AND s.ho = 0
     WHERE r.release_id = w.release_id
       AND (w.revision > r.revision OR (w.revision = r.revision AND w.ts >= r.updated_at));
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
     WHERE NOT EXISTS (SELECT 1 FROM helmq.releases x WHERE x.release_id = w.release_id)
     ORDER BY w.ord;
    RETURN applied;
END $$;

-- Applies the staged batch in the caller's transaction (see above). Returns
-- the number of events that were new.
CREATE FUNCTION helmq.apply_staged() RETURNS integer LANGUAGE plpgsql AS $$
BEGIN
    BEGIN
        RETURN helmq.apply_staged_rows(false);
    EXCEPTION WHEN unique_violation THEN
        -- Another writer applied some of these events meanwhile, or a live
        -- slot was taken out of topic order (see above). The subtransaction's
        -- rows, in helmq_stage_fresh too, are gone.
        NULL;
    END;
    RETURN helmq.apply_staged_rows(true);
END $$;

REVOKE ALL ON FUNCTION helmq.stage_create(), helmq.apply_staged_rows(boolean), helmq.apply_staged() FROM PUBLIC;
