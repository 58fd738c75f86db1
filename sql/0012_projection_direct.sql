-- 0012: the projector's direct form. A batch of events that are all new is
-- written by COPY straight into helmq.applied_events and helmq.release_history,
-- and its releases' rows by one upsert from a small staging table.
--
-- Measured (docs/PERFORMANCE.md): applying a staged batch (0007, 0011) cost
-- PostgreSQL about 17 ms per 1,000 events, most of it per-row executor work
-- COPY does not do: finding the new events, INSERT ... SELECT into the two
-- append-only tables, the MERGE over the whole staging table.
--
-- The projector computes what apply_staged_rows computes, for the batch alone:
-- each eventId once (its first occurrence), each (release, revision) history
-- row once (the first event in topic order carrying it), each release's
-- winning event (highest revision, then occurredAt, then topic order) with the
-- batch's first time as createdAt. What only the tables know (an event
-- applied before, a history row written before) is left to their primary
-- keys: such a batch fails with unique_violation, and the projector applies it
-- again by helmq.apply_staged (0007), whose semantics these are. So the
-- direct form writes what the staged form would have written, or nothing.
--
-- pg_temp.helmq_direct_releases: one row per release of the batch, its
-- winning event's state, ord its place in the batch; created, once per
-- connection, by helmq.stage_create_direct(), which the projector calls with
-- 0007's helmq.stage_create().

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

-- The batch's releases: a stored row is updated when the batch's is not
-- older, a new release inserted; 0007's rule, on rows the projector computed,
-- by one MERGE (an upsert per row, ON CONFLICT, locked each row before
-- updating it: the larger part of this function's time). MERGE does not keep
-- topic order: a release taking a name's live slot before the row that frees
-- it is written, or a concurrent writer inserting the same release, raises
-- unique_violation, and the projector applies the batch again staged (0007's
-- ON CONFLICT forms, in topic order). Returns the rows written.
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

REVOKE ALL ON FUNCTION helmq.stage_create_direct(), helmq.apply_direct_releases() FROM PUBLIC;
