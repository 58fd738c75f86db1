-- 0002: the projection (schema helmq): release events turned into the tables
-- the seed's queries read, as one baseline: the final state of the history
-- sql/0001-0015 had before the first deployment (issue 24; that history is
-- kept, for the equivalence test only, in tests/fixtures/sql-history/). From
-- here on sql/ is append-only: see sql/README.md.
--
-- Written only by helmq-projector, from the events topic: idempotent by
-- eventId, rebuildable from the topic (helmq-projector rebuild).
--   applied_events    every event applied, once (replays are recognised here);
--   releases          the current state of each release lifecycle;
--   release_history   one row per revision, written once, never changed;
--   parked_events     records of the topic the projection refused.
-- The seed's queries are functions returning JSON with the seed's field
-- names: release_get, releases_by_tenant, release_history, release_summary,
-- namespaces_list.
--
-- Roles: helmq_reader reads (auditors, dashboards), scoped to one tenant by
-- row-level security when the session sets helmq.tenant_id; helmq_admin reads
-- across tenants and may call the summary. Only the migration owner (the
-- projector's user) writes; history rows can be neither updated nor deleted.
--
-- Depends on 0001: helmq.namespace_claims shows the worker's namespace
-- claims (schema helmq_worker) to the readers of the projection.

CREATE SCHEMA IF NOT EXISTS helmq;

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'helmq_reader') THEN
        CREATE ROLE helmq_reader NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'helmq_admin') THEN
        CREATE ROLE helmq_admin NOLOGIN;
    END IF;
END $$;

-- --- tables ---------------------------------------------------------------------

-- Every event applied, once: replays and duplicates are recognised here.
CREATE TABLE helmq.applied_events (
    event_id     uuid PRIMARY KEY,
    command_id   text NOT NULL,
    release_id   uuid,
    tenant_id    uuid,
    event_type   text NOT NULL,
    status       text NOT NULL,
    revision     integer NOT NULL,
    occurred_at  timestamptz NOT NULL,
    error_code   text,
    error_message text
);
CREATE INDEX applied_events_command ON helmq.applied_events (command_id);

COMMENT ON TABLE helmq.applied_events IS
    'every event the projection applied, once, by eventId: replays and duplicates are recognised here';

-- The current state of each release lifecycle (uninstalled ones stay).
-- A release's row is updated in place (HOT): fillfactor leaves room in each
-- page for the new row versions, and the one index whose predicate could
-- change on an update reads live, which an upgrade, a rollback or a failure
-- of a live release does not change; only an uninstall (or a first
-- revision) does.
CREATE TABLE helmq.releases (
    release_id     uuid PRIMARY KEY,
    tenant_id      uuid NOT NULL,
    namespace      text NOT NULL,
    release_name   text NOT NULL,
    chart_name     text,
    chart_version  text,
    app_version    text,
    status         text NOT NULL,
    revision       integer NOT NULL,
    description    text,
    values_digest  text,
    values_redacted text,
    uninstall_reason text,
    last_error     text,
    last_event_id  uuid NOT NULL,
    created_at     timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL,
    -- not uninstalled, and helm created something (an install that failed
    -- before helm created anything has revision 0)
    live           boolean GENERATED ALWAYS AS (status <> 'uninstalled' AND revision > 0) STORED
) WITH (fillfactor = 75);
CREATE INDEX releases_tenant ON helmq.releases (tenant_id, namespace, release_name);
-- One live release per (tenant, namespace, name).
CREATE UNIQUE INDEX releases_one_live ON helmq.releases (tenant_id, namespace, release_name) WHERE live;

COMMENT ON TABLE helmq.releases IS
    'the current state of each release lifecycle (uninstalled ones stay); one live release per tenant, '
    'namespace and name';

-- One row per revision, written once.
CREATE TABLE helmq.release_history (
    release_id     uuid NOT NULL,
    revision       integer NOT NULL,
    tenant_id      uuid NOT NULL,
    chart_name     text NOT NULL,
    chart_version  text NOT NULL,
    app_version    text,
    status         text NOT NULL,
    operation      text NOT NULL,
    description    text,
    performed_by   text NOT NULL,
    command_id     text NOT NULL,
    error          text,
    values_digest  text,
    values_redacted text,
    created_at     timestamptz NOT NULL,
    PRIMARY KEY (release_id, revision)
);

COMMENT ON TABLE helmq.release_history IS
    'one row per revision of a release, written once: append-only (release_history_immutable)';

CREATE FUNCTION helmq.history_is_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'helmq.release_history is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE TRIGGER release_history_immutable BEFORE UPDATE OR DELETE ON helmq.release_history
    FOR EACH ROW EXECUTE FUNCTION helmq.history_is_immutable();

COMMENT ON FUNCTION helmq.history_is_immutable() IS
    'trigger function: refuses every UPDATE and DELETE of helmq.release_history';

-- Events the projection refused, kept instead of stalling it. A record on
-- the events topic that cannot be applied for a reason retrying will not fix
-- (it does not decode as a helmq event, or PostgreSQL refuses it: a
-- constraint violation, an invalid value a buggy producer wrote under a valid
-- schema) is parked here by helmq-projector, which then applies the rest of
-- its batch in order and commits its Kafka offsets past it. Nothing is lost:
-- the row holds the record as it was on the topic and why it was refused.
-- Rows are keyed by their place on the topic, so a replay or a rebuild that
-- meets the same record again updates its row instead of adding one. The
-- projection's truncation leaves this table alone: it is a record of refused
-- input, for an operator to read, fix at the source, and delete; a finished
-- rebuild deletes the rows it did not park again (rebuild_finish). Readable
-- by helmq_admin only: it holds events of every tenant.
CREATE TABLE helmq.parked_events (
    topic          text NOT NULL,
    kafka_partition integer NOT NULL,
    kafka_offset   bigint NOT NULL,
    record_key     bytea,             -- the Kafka key as it was (tenantId/namespace/releaseName)
    record_value   bytea,             -- the Kafka value as it was (Avro single-object encoding)
    event_id       text,              -- from the decoded event, when it decoded
    command_id     text,
    payload        jsonb,             -- the decoded event, as the projector passed it to PostgreSQL
    payload_text   text,              -- the same, only when PostgreSQL would not take it as jsonb
    error_sqlstate text,              -- PostgreSQL's SQLSTATE; null when the record did not decode
    error_message  text NOT NULL,
    parked_at      timestamptz NOT NULL DEFAULT now(),
    times_parked   integer NOT NULL DEFAULT 1,
    PRIMARY KEY (topic, kafka_partition, kafka_offset)
);

COMMENT ON TABLE helmq.parked_events IS
    'records of the events topic the projection refused (undecodable, or refused by PostgreSQL), with why';

-- --- applying events: the staged form ---------------------------------------------
--
-- The projector streams each batch with COPY into a per-connection staging
-- table and applies it with helmq.apply_staged(): no JSON is built, sent or
-- parsed. The staging table is TEMP (each projector connection has its own;
-- its rows vanish at the end of the batch's transaction), created by
-- helmq.stage_create(), which the projector calls once per connection (a
-- second call does nothing). One table, so that a batch is one COPY:
--   ho = 0   one row per event of the batch; ord is its place in the batch
--            (topic order), from 1; at_ms is occurredAt;
--   ho > 0   the ho-th entry of the history of event ord: revision, status,
--            chart_name, chart_version, app_version, operation, description,
--            and at_ms its createdAt; the other columns null.
-- Timestamps are staged as ms since the epoch and converted as apply_events
-- does, so both paths store the same values.
--
-- Semantics (the same as applying the events one after another, in topic
-- order; helmq.apply_events is the reference):
--   * an eventId is applied once (the first occurrence in topic order wins);
--   * history rows are written once per (release, revision): the first event
--     in topic order that carries a revision writes it;
--   * a release's row follows the event with the highest (revision,
--     occurredAt), the later one in topic order on a tie, and only if that is
--     not older than the row already stored. A row created by the batch has
--     the createdAt of the first of them.
-- Rows of different releases are upserted in the topic order of the events
-- that win, so that a name uninstalled and installed again within one batch
-- leaves the old lifecycle before the new one takes the live slot
-- (releases_one_live).
--
-- Speed: events already applied, history rows already written and releases
-- already stored are found by index probes first, so the three tables take
-- plain INSERTs and a MERGE rather than ON CONFLICT's speculative insertion
-- and row locks, which cost per row. Only a concurrent writer (a second
-- projector during a rebalance) can then collide, or a release taking the
-- live slot of a name before the row that frees it (the MERGE does not keep
-- topic order). Either raises unique_violation, and the batch is then applied
-- again by the ON CONFLICT forms, in topic order, inside the same transaction
-- (one subtransaction per batch, not per row); what still fails there goes
-- back to the projector, which retries in smaller pieces, down to one event.

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

COMMENT ON FUNCTION helmq.stage_create() IS
    'creates this connection''s staging tables (TEMP, rows deleted at commit) for helmq.apply_staged; idempotent';

-- The staged batch's rows, into the three tables. p_conflicts: false for the
-- fast form (plain INSERTs, the releases by one MERGE), true for the ON
-- CONFLICT forms, in topic order.
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

COMMENT ON FUNCTION helmq.apply_staged_rows(boolean) IS
    'applies the staged batch to the three tables: the fast form, or (p_conflicts) the ON CONFLICT forms';

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

COMMENT ON FUNCTION helmq.apply_staged() IS
    'applies the staged batch (fast form, then the ON CONFLICT forms on unique_violation); returns the new events';

-- --- applying events: the direct form ----------------------------------------------
--
-- A batch of events that are all new is written by COPY straight into
-- helmq.applied_events and helmq.release_history, and its releases' rows by
-- one upsert from a small staging table. The projector computes what
-- apply_staged_rows computes, for the batch alone: each eventId once (its
-- first occurrence), each (release, revision) history row once (the first
-- event in topic order carrying it), each release's winning event (highest
-- revision, then occurredAt, then topic order) with the batch's first time
-- as createdAt. What only the tables know (an event applied before, a
-- history row written before) is left to their primary keys: such a batch
-- fails with unique_violation, and the projector applies it again by
-- helmq.apply_staged, whose semantics these are. So the direct form writes
-- what the staged form would have written, or nothing.
--
-- pg_temp.helmq_direct_releases: one row per release of the batch, its
-- winning event's state, ord its place in the batch; created, once per
-- connection, by helmq.stage_create_direct(), which the projector calls with
-- helmq.stage_create().

CREATE FUNCTION helmq.stage_create_direct() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('client_min_messages', 'warning', true); -- no "already exists" notices
    CREATE TEMP TABLE IF NOT EXISTS helmq_direct_releases (
        ord              integer NOT NULL,
        release_id       uuid NOT NULL,
        tenant_id        uuid,
        namespace        text,
        release_name     text,
        chart_name       text,
        chart_version    text,
        app_version      text,
        status           text,
        revision         integer,
        description      text,
        values_digest    text,
        values_redacted  text,
        uninstall_reason text,
        last_error       text,
        last_event_id    uuid,
        created_at       timestamptz,
        updated_at       timestamptz
    ) ON COMMIT DELETE ROWS;
END $$;

COMMENT ON FUNCTION helmq.stage_create_direct() IS
    'creates this connection''s pg_temp.helmq_direct_releases (TEMP, rows deleted at commit); idempotent';

-- The batch's releases: a stored row is updated when the batch's is not
-- older, a new release inserted, by one MERGE. MERGE does not keep topic
-- order: a release taking a name's live slot before the row that frees it
-- is written, or a concurrent writer inserting the same release, raises
-- unique_violation, and the projector applies the batch again staged.
-- Returns the rows written.
CREATE FUNCTION helmq.apply_direct_releases() RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    written integer;
BEGIN
    MERGE INTO helmq.releases AS r
    USING pg_temp.helmq_direct_releases AS d
       ON r.release_id = d.release_id
    WHEN MATCHED AND (d.revision > r.revision OR (d.revision = r.revision AND d.updated_at >= r.updated_at)) THEN
        UPDATE SET chart_name = d.chart_name, chart_version = d.chart_version, app_version = d.app_version,
            status = d.status, revision = d.revision, description = d.description,
            values_digest = d.values_digest, values_redacted = d.values_redacted,
            uninstall_reason = d.uninstall_reason, last_error = d.last_error, last_event_id = d.last_event_id,
            updated_at = d.updated_at
    WHEN NOT MATCHED THEN
        INSERT (release_id, tenant_id, namespace, release_name, chart_name, chart_version, app_version, status,
                revision, description, values_digest, values_redacted, uninstall_reason, last_error,
                last_event_id, created_at, updated_at)
        VALUES (d.release_id, d.tenant_id, d.namespace, d.release_name, d.chart_name, d.chart_version,
                d.app_version, d.status, d.revision, d.description, d.values_digest, d.values_redacted,
                d.uninstall_reason, d.last_error, d.last_event_id, d.created_at, d.updated_at);
    GET DIAGNOSTICS written = ROW_COUNT;
    RETURN written;
END $$;

COMMENT ON FUNCTION helmq.apply_direct_releases() IS
    'the direct form: upserts the batch''s releases from pg_temp.helmq_direct_releases; returns the rows written';

-- --- applying events: JSON --------------------------------------------------------

-- Applies a batch of events (a JSON array, in topic order) in the caller's
-- transaction, with the semantics described above, in four statements per
-- batch. Returns the number of events that were new. Not the projector's
-- path (it stages or writes directly); kept for other callers and as the
-- reference of the semantics.
CREATE FUNCTION helmq.apply_events(p_events jsonb) RETURNS integer LANGUAGE plpgsql AS $$
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

COMMENT ON FUNCTION helmq.apply_events(jsonb) IS
    'applies a JSON array of events, in topic order, in the caller''s transaction; returns the new events';

-- --- parking refused records, rebuilding ------------------------------------------

-- Parks one record (see helmq.parked_events). p_payload is the decoded event
-- as JSON text, or null; text that is not valid jsonb is kept in
-- payload_text instead, so parking itself never refuses a record.
CREATE FUNCTION helmq.park_event(p_topic text, p_partition integer, p_offset bigint, p_key bytea,
                                 p_value bytea, p_payload text, p_sqlstate text, p_message text)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    doc jsonb;
    raw text;
BEGIN
    BEGIN
        doc := p_payload::jsonb;
    EXCEPTION WHEN OTHERS THEN
        doc := NULL;
        raw := p_payload;
    END;
    INSERT INTO helmq.parked_events AS p (topic, kafka_partition, kafka_offset, record_key, record_value,
                                          event_id, command_id, payload, payload_text, error_sqlstate,
                                          error_message)
    VALUES (p_topic, p_partition, p_offset, p_key, p_value, doc->>'eventId', doc->>'commandId', doc, raw,
            p_sqlstate, p_message)
    ON CONFLICT (topic, kafka_partition, kafka_offset) DO UPDATE SET
        record_key = EXCLUDED.record_key, record_value = EXCLUDED.record_value,
        event_id = EXCLUDED.event_id, command_id = EXCLUDED.command_id, payload = EXCLUDED.payload,
        payload_text = EXCLUDED.payload_text, error_sqlstate = EXCLUDED.error_sqlstate,
        error_message = EXCLUDED.error_message, parked_at = now(), times_parked = p.times_parked + 1;
END $$;

COMMENT ON FUNCTION helmq.park_event(text, integer, bigint, bytea, bytea, text, text, text) IS
    'parks a record the projection refused, keyed by its place on the topic (a second time updates its row)';

-- Empties the projection before a rebuild (TRUNCATE fires no row triggers).
CREATE FUNCTION helmq.truncate_projection() RETURNS void LANGUAGE sql AS $$
    TRUNCATE helmq.applied_events, helmq.releases, helmq.release_history;
$$;

COMMENT ON FUNCTION helmq.truncate_projection() IS
    'empties applied_events, releases and release_history (not parked_events) for a rebuild';

-- helmq-projector rebuild empties the projection and replays the events topic
-- from the beginning. A record parked before is met again: it is parked
-- again (its row updated, times_parked + 1) if it is still refused, or
-- applied if the cause was fixed meanwhile; then its old row must go. A
-- rebuild notes when it began, and when it reaches the end of every
-- partition it deletes the rows of that topic not parked again since then.
-- A rebuild that stops before the end deletes nothing.

-- Empties the projection for a rebuild and returns the moment it began (the
-- clock, not the transaction's start: park_event's parked_at is now() of
-- later transactions, always after it).
CREATE FUNCTION helmq.rebuild_begin() RETURNS timestamptz LANGUAGE plpgsql AS $$
BEGIN
    PERFORM helmq.truncate_projection();
    RETURN clock_timestamp();
END $$;

COMMENT ON FUNCTION helmq.rebuild_begin() IS
    'starts a rebuild: empties the projection, returns the clock time it began';

-- After a finished rebuild of p_topic begun at p_began: deletes the parked
-- rows of that topic the rebuild did not park again. Returns how many.
CREATE FUNCTION helmq.rebuild_finish(p_topic text, p_began timestamptz) RETURNS bigint
LANGUAGE sql AS $$
    WITH gone AS (
        DELETE FROM helmq.parked_events WHERE topic = p_topic AND parked_at < p_began RETURNING 1
    )
    SELECT count(*) FROM gone;
$$;

COMMENT ON FUNCTION helmq.rebuild_finish(text, timestamptz) IS
    'ends a finished rebuild: deletes the topic''s parked rows not parked again since it began; returns how many';

-- --- the seed's queries, with the seed's field names -----------------------

CREATE FUNCTION helmq.release_json(r helmq.releases) RETURNS json LANGUAGE sql STABLE AS $$
    SELECT json_build_object(
        'releaseId', r.release_id, 'tenantId', r.tenant_id, 'releaseName', r.release_name,
        'namespace', r.namespace, 'chartName', r.chart_name, 'chartVersion', r.chart_version,
        'appVersion', r.app_version, 'status', r.status, 'revision', r.revision,
        'description', r.description, 'uninstallReason', r.uninstall_reason, 'lastError', r.last_error,
        'valuesDigest', r.values_digest, 'createdAt', r.created_at, 'updatedAt', r.updated_at);
$$;

COMMENT ON FUNCTION helmq.release_json(helmq.releases) IS
    'a release row as the seed''s HelmRelease JSON (camelCase field names)';

-- A release by id (null when unknown or not visible to the session's tenant).
CREATE FUNCTION helmq.release_get(p_release_id uuid) RETURNS json LANGUAGE sql STABLE AS $$
    SELECT helmq.release_json(r) FROM helmq.releases r WHERE r.release_id = p_release_id;
$$;

COMMENT ON FUNCTION helmq.release_get(uuid) IS
    'a release by id as JSON; null when unknown or not visible to the session''s tenant';

-- A tenant's releases with their current status and revision.
CREATE FUNCTION helmq.releases_by_tenant(p_tenant_id uuid) RETURNS json LANGUAGE sql STABLE AS $$
    SELECT COALESCE(json_agg(helmq.release_json(r) ORDER BY r.namespace, r.release_name, r.created_at), '[]')
      FROM helmq.releases r WHERE r.tenant_id = p_tenant_id;
$$;

COMMENT ON FUNCTION helmq.releases_by_tenant(uuid) IS
    'a tenant''s releases (JSON array) with their current status and revision';

-- A revision is shown superseded once a later revision of its lifecycle
-- replaced it (history rows themselves never change).
CREATE VIEW helmq.release_history_view WITH (security_barrier) AS
    SELECT h.*,
           CASE WHEN h.status = 'deployed' AND EXISTS (
                    SELECT 1 FROM helmq.release_history l
                     WHERE l.release_id = h.release_id AND l.revision > h.revision
                       AND l.status IN ('deployed', 'uninstalled', 'superseded'))
                THEN 'superseded' ELSE h.status END AS display_status
      FROM helmq.release_history h;

COMMENT ON VIEW helmq.release_history_view IS
    'release_history with display_status: a deployed revision shows superseded once a later one replaced it';

-- The revision history of a release (HelmReleaseHistory entries).
CREATE FUNCTION helmq.release_history(p_release_id uuid) RETURNS json LANGUAGE sql STABLE AS $$
    SELECT COALESCE(json_agg(json_build_object(
               'revision', h.revision, 'chartVersion', h.chart_version, 'appVersion', h.app_version,
               'status', h.display_status, 'description', h.description, 'performedBy', h.performed_by,
               'createdAt', h.created_at) ORDER BY h.revision), '[]')
      FROM helmq.release_history_view h WHERE h.release_id = p_release_id;
$$;

COMMENT ON FUNCTION helmq.release_history(uuid) IS
    'the revision history of a release (JSON array of HelmReleaseHistory entries, by revision)';

CREATE VIEW helmq.summary_by_status AS
    SELECT status, count(*) AS count FROM helmq.releases GROUP BY status;
CREATE VIEW helmq.summary_by_chart AS
    SELECT chart_name, count(*) AS count FROM helmq.releases GROUP BY chart_name;

COMMENT ON VIEW helmq.summary_by_status IS 'release counts by status, across tenants (helmq_admin)';
COMMENT ON VIEW helmq.summary_by_chart IS 'release counts by chart name, across tenants (helmq_admin)';

-- Counts of all releases across tenants, by status and by chart name.
CREATE FUNCTION helmq.release_summary() RETURNS json LANGUAGE sql STABLE AS $$
    SELECT json_build_object(
        'total', (SELECT count(*) FROM helmq.releases),
        'byStatus', (SELECT COALESCE(json_object_agg(status, count ORDER BY status), '{}') FROM helmq.summary_by_status),
        'byChart', (SELECT COALESCE(json_object_agg(COALESCE(chart_name, ''), count ORDER BY chart_name),
                                    '{}') FROM helmq.summary_by_chart));
$$;

COMMENT ON FUNCTION helmq.release_summary() IS
    'counts of all releases across tenants, by status and by chart name (JSON; helmq_admin)';

-- --- who owns a namespace, for readers of the projection ---------------------------

-- Current claims with their live release counts, readable like the
-- projection's releases: a helmq_reader session sees only the tenant it set
-- (SET helmq.tenant_id), helmq_admin sees every claim; the owner and
-- superusers see everything (as row-level security exempts them). The view
-- reads schema helmq_worker with its owner's rights, so the readers' roles
-- get this view and nothing of the ledger; security_barrier keeps their
-- functions from seeing rows before the filter.
CREATE VIEW helmq.namespace_claims WITH (security_barrier) AS
    SELECT n.namespace, n.tenant_id, n.claimed_by, n.claimed_at,
           (SELECT count(*) FROM helmq_worker.live_releases r WHERE r.namespace = n.namespace) AS live_releases
      FROM helmq_worker.namespaces n
     WHERE NOT pg_has_role('helmq_reader', 'USAGE') OR pg_has_role('helmq_admin', 'USAGE')
        OR n.tenant_id::text = current_setting('helmq.tenant_id', true);

COMMENT ON VIEW helmq.namespace_claims IS
    'which tenant owns each namespace (claimed by its first install), with its live releases; '
    'helmq_reader sees its tenant''s (helmq.tenant_id), helmq_admin all';

-- A claim as the API and the CLI show it.
CREATE FUNCTION helmq.namespace_json(c helmq.namespace_claims) RETURNS json LANGUAGE sql STABLE AS $$
    SELECT json_build_object('namespace', c.namespace, 'tenantId', c.tenant_id, 'claimedAt', c.claimed_at,
                             'claimedBy', c.claimed_by, 'liveReleases', c.live_releases);
$$;

COMMENT ON FUNCTION helmq.namespace_json(helmq.namespace_claims) IS
    'a namespace claim as the API and the CLI show it (JSON)';

-- The claims the caller may see, of one tenant (null: every tenant), by name.
CREATE FUNCTION helmq.namespaces_list(p_tenant_id uuid) RETURNS json LANGUAGE sql STABLE AS $$
    SELECT COALESCE(json_agg(helmq.namespace_json(c) ORDER BY c.namespace), '[]')
      FROM helmq.namespace_claims c WHERE p_tenant_id IS NULL OR c.tenant_id = p_tenant_id;
$$;

COMMENT ON FUNCTION helmq.namespaces_list(uuid) IS
    'the namespace claims the caller may see, of one tenant (null: every tenant), by name (JSON array)';

-- --- access --------------------------------------------------------------------

ALTER TABLE helmq.releases ENABLE ROW LEVEL SECURITY;
ALTER TABLE helmq.release_history ENABLE ROW LEVEL SECURITY;
ALTER TABLE helmq.applied_events ENABLE ROW LEVEL SECURITY;
-- A reader session sees the rows of the tenant it set (SET helmq.tenant_id).
CREATE POLICY tenant_scope ON helmq.releases FOR SELECT TO helmq_reader
    USING (tenant_id::text = current_setting('helmq.tenant_id', true));
CREATE POLICY tenant_scope ON helmq.release_history FOR SELECT TO helmq_reader
    USING (tenant_id::text = current_setting('helmq.tenant_id', true));
CREATE POLICY tenant_scope ON helmq.applied_events FOR SELECT TO helmq_reader
    USING (tenant_id::text = current_setting('helmq.tenant_id', true));
CREATE POLICY admin_all ON helmq.releases FOR SELECT TO helmq_admin USING (true);
CREATE POLICY admin_all ON helmq.release_history FOR SELECT TO helmq_admin USING (true);
CREATE POLICY admin_all ON helmq.applied_events FOR SELECT TO helmq_admin USING (true);

-- Nothing of schema helmq is PUBLIC's: every function's default EXECUTE is
-- revoked, the readers get what is granted below.
REVOKE ALL ON ALL TABLES IN SCHEMA helmq FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA helmq FROM PUBLIC;
GRANT USAGE ON SCHEMA helmq TO helmq_reader, helmq_admin;
GRANT SELECT ON helmq.applied_events, helmq.releases, helmq.release_history, helmq.release_history_view,
    helmq.namespace_claims TO helmq_reader, helmq_admin;
GRANT EXECUTE ON FUNCTION helmq.release_json(helmq.releases), helmq.release_get(uuid),
    helmq.releases_by_tenant(uuid), helmq.release_history(uuid),
    helmq.namespace_json(helmq.namespace_claims), helmq.namespaces_list(uuid) TO helmq_reader, helmq_admin;
-- Cross-tenant: the summary and the parked records are for administrators.
GRANT SELECT ON helmq.summary_by_status, helmq.summary_by_chart, helmq.parked_events TO helmq_admin;
GRANT EXECUTE ON FUNCTION helmq.release_summary() TO helmq_admin;
