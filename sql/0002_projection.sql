-- 0002: the projection (schema helmq): release events turned into the tables
-- the seed's queries read. Built only from the events topic by
-- helmq-projector, idempotent by eventId, rebuildable from the topic.
--
-- Roles: helmq_reader reads (auditors, dashboards), scoped to one tenant by
-- row-level security when the session sets helmq.tenant_id; helmq_admin reads
-- across tenants and may call the summary. Only the migration owner (the
-- projector's user) writes; history rows can be neither updated nor deleted.

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

-- The current state of each release lifecycle (uninstalled ones stay).
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
    updated_at     timestamptz NOT NULL
);
CREATE INDEX releases_tenant ON helmq.releases (tenant_id, namespace, release_name);
-- One live release per (tenant, namespace, name): uninstalled ones, and
-- installs that failed before helm created anything (revision 0), do not count.
CREATE UNIQUE INDEX releases_one_live ON helmq.releases (tenant_id, namespace, release_name)
    WHERE status <> 'uninstalled' AND revision > 0;

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

CREATE FUNCTION helmq.history_is_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'helmq.release_history is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE TRIGGER release_history_immutable BEFORE UPDATE OR DELETE ON helmq.release_history
    FOR EACH ROW EXECUTE FUNCTION helmq.history_is_immutable();

-- Applies a batch of events (a JSON array, in topic order) in the caller's
-- transaction. Returns the number of events that changed anything.
CREATE FUNCTION helmq.apply_events(p_events jsonb) RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    e jsonb;
    h jsonb;
    applied integer := 0;
    cur helmq.releases;
    ts timestamptz;
BEGIN
    FOR e IN SELECT value FROM jsonb_array_elements(p_events) LOOP
        INSERT INTO helmq.applied_events (event_id, command_id, release_id, tenant_id, event_type, status,
                                          revision, occurred_at, error_code, error_message)
        VALUES ((e->>'eventId')::uuid, e->>'commandId', (e->>'releaseId')::uuid,
                (e->>'tenantId')::uuid, e->>'eventType', e->>'status', (e->>'revision')::integer,
                to_timestamp((e->>'occurredAt')::bigint / 1000.0), e->>'errorCode', e->>'errorMessage')
        ON CONFLICT (event_id) DO NOTHING;
        IF NOT FOUND THEN
            CONTINUE; -- a duplicate or a replay
        END IF;
        applied := applied + 1;
        -- Progress events and rejections do not change a release.
        IF NOT (e->>'terminal')::boolean OR e->>'eventType' = 'rejected' OR e->>'releaseId' IS NULL THEN
            CONTINUE;
        END IF;
        ts := to_timestamp((e->>'occurredAt')::bigint / 1000.0);
        FOR h IN SELECT value FROM jsonb_array_elements(COALESCE(e->'history', '[]'::jsonb)) LOOP
            INSERT INTO helmq.release_history (release_id, revision, tenant_id, chart_name, chart_version,
                app_version, status, operation, description, performed_by, command_id, error,
                values_digest, values_redacted, created_at)
            VALUES ((e->>'releaseId')::uuid, (h->>'revision')::integer, (e->>'tenantId')::uuid,
                    h->>'chartName', h->>'chartVersion', h->>'appVersion', h->>'status', h->>'operation',
                    h->>'description', e->>'performedBy', e->>'commandId',
                    CASE WHEN h->>'status' = 'failed' THEN e->>'errorMessage' END,
                    CASE WHEN (h->>'revision')::integer = (e->>'revision')::integer THEN e->>'valuesDigest' END,
                    CASE WHEN (h->>'revision')::integer = (e->>'revision')::integer THEN e->>'valuesRedacted' END,
                    to_timestamp((h->>'createdAt')::bigint / 1000.0))
            ON CONFLICT (release_id, revision) DO NOTHING;
        END LOOP;
        SELECT * INTO cur FROM helmq.releases WHERE release_id = (e->>'releaseId')::uuid;
        -- An older revision never overwrites newer state (events may arrive
        -- reordered or duplicated); at the same revision the later event wins.
        IF FOUND AND ((e->>'revision')::integer < cur.revision
                      OR ((e->>'revision')::integer = cur.revision AND ts < cur.updated_at)) THEN
            CONTINUE;
        END IF;
        INSERT INTO helmq.releases AS r (release_id, tenant_id, namespace, release_name, chart_name, chart_version,
            app_version, status, revision, description, values_digest, values_redacted, uninstall_reason,
            last_error, last_event_id, created_at, updated_at)
        VALUES ((e->>'releaseId')::uuid, (e->>'tenantId')::uuid, e->>'namespace', e->>'releaseName',
                e->>'chartName', e->>'chartVersion', e->>'appVersion', e->>'status',
                (e->>'revision')::integer, e->>'description', e->>'valuesDigest', e->>'valuesRedacted',
                CASE WHEN e->>'status' = 'uninstalled' THEN e->>'reason' END,
                e->>'errorMessage', (e->>'eventId')::uuid, ts, ts)
        ON CONFLICT (release_id) DO UPDATE SET
            chart_name = EXCLUDED.chart_name, chart_version = EXCLUDED.chart_version,
            app_version = EXCLUDED.app_version, status = EXCLUDED.status, revision = EXCLUDED.revision,
            description = EXCLUDED.description, values_digest = EXCLUDED.values_digest,
            values_redacted = EXCLUDED.values_redacted, uninstall_reason = EXCLUDED.uninstall_reason,
            last_error = EXCLUDED.last_error, last_event_id = EXCLUDED.last_event_id,
            updated_at = EXCLUDED.updated_at;
    END LOOP;
    RETURN applied;
END $$;

-- Empties the projection before a rebuild (TRUNCATE fires no row triggers).
CREATE FUNCTION helmq.truncate_projection() RETURNS void LANGUAGE sql AS $$
    TRUNCATE helmq.applied_events, helmq.releases, helmq.release_history;
$$;

-- --- the seed's queries, with the seed's field names -----------------------

CREATE FUNCTION helmq.release_json(r helmq.releases) RETURNS json LANGUAGE sql STABLE AS $$
    SELECT json_build_object(
        'releaseId', r.release_id, 'tenantId', r.tenant_id, 'releaseName', r.release_name,
        'namespace', r.namespace, 'chartName', r.chart_name, 'chartVersion', r.chart_version,
        'appVersion', r.app_version, 'status', r.status, 'revision', r.revision,
        'description', r.description, 'uninstallReason', r.uninstall_reason, 'lastError', r.last_error,
        'valuesDigest', r.values_digest, 'createdAt', r.created_at, 'updatedAt', r.updated_at);
$$;

-- A release by id (null when unknown or not visible to the session's tenant).
CREATE FUNCTION helmq.release_get(p_release_id uuid) RETURNS json LANGUAGE sql STABLE AS $$
    SELECT helmq.release_json(r) FROM helmq.releases r WHERE r.release_id = p_release_id;
$$;

-- A tenant's releases with their current status and revision.
CREATE FUNCTION helmq.releases_by_tenant(p_tenant_id uuid) RETURNS json LANGUAGE sql STABLE AS $$
    SELECT COALESCE(json_agg(helmq.release_json(r) ORDER BY r.namespace, r.release_name, r.created_at), '[]')
      FROM helmq.releases r WHERE r.tenant_id = p_tenant_id;
$$;

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

-- The revision history of a release (HelmReleaseHistory entries).
CREATE FUNCTION helmq.release_history(p_release_id uuid) RETURNS json LANGUAGE sql STABLE AS $$
    SELECT COALESCE(json_agg(json_build_object(
               'revision', h.revision, 'chartVersion', h.chart_version, 'appVersion', h.app_version,
               'status', h.display_status, 'description', h.description, 'performedBy', h.performed_by,
               'createdAt', h.created_at) ORDER BY h.revision), '[]')
      FROM helmq.release_history_view h WHERE h.release_id = p_release_id;
$$;

CREATE VIEW helmq.summary_by_status AS
    SELECT status, count(*) AS count FROM helmq.releases GROUP BY status;
CREATE VIEW helmq.summary_by_chart AS
    SELECT chart_name, count(*) AS count FROM helmq.releases GROUP BY chart_name;

-- Counts of all releases across tenants, by status and by chart name.
CREATE FUNCTION helmq.release_summary() RETURNS json LANGUAGE sql STABLE AS $$
    SELECT json_build_object(
        'total', (SELECT count(*) FROM helmq.releases),
        'byStatus', (SELECT COALESCE(json_object_agg(status, count ORDER BY status), '{}') FROM helmq.summary_by_status),
        'byChart', (SELECT COALESCE(json_object_agg(COALESCE(chart_name, ''), count ORDER BY chart_name),
                                    '{}') FROM helmq.summary_by_chart));
$$;

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

REVOKE ALL ON ALL TABLES IN SCHEMA helmq FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA helmq FROM PUBLIC;
GRANT USAGE ON SCHEMA helmq TO helmq_reader, helmq_admin;
GRANT SELECT ON ALL TABLES IN SCHEMA helmq TO helmq_reader, helmq_admin;
GRANT EXECUTE ON FUNCTION helmq.release_json(helmq.releases), helmq.release_get(uuid),
    helmq.releases_by_tenant(uuid), helmq.release_history(uuid) TO helmq_reader, helmq_admin;
-- The cross-tenant summary is for administrators.
REVOKE SELECT ON helmq.summary_by_status, helmq.summary_by_chart FROM helmq_reader;
GRANT EXECUTE ON FUNCTION helmq.release_summary() TO helmq_admin;
