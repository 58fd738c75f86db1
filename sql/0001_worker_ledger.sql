-- 0001: the worker's ledger and release registry (schema helmq_worker).
--
-- The ledger records every commandId with its state and outcome, so a
-- redelivered command is never run twice: a finished one republishes its
-- recorded terminal event, an interrupted one is reconciled against helm.
-- The registry holds each release key's current lifecycle (releaseId,
-- revision, status, chart) and which tenant owns each namespace.
-- Each worker step is one call of a function below: one statement, one
-- transaction, one round trip from the worker's event loop.

CREATE SCHEMA IF NOT EXISTS helmq_worker;

CREATE TABLE helmq_worker.commands (
    command_id      uuid PRIMARY KEY,
    release_key     text NOT NULL,              -- tenantId/namespace/releaseName
    operation       text NOT NULL,
    state           text NOT NULL CHECK (state IN ('received', 'running', 'finished')),
    source_topic    text,
    source_partition integer,
    source_offset   bigint,
    release_id      uuid,                       -- the lifecycle the command applied to
    base_revision   integer,                    -- the release's revision before the command
    base_deployed   integer,                    -- its last deployed revision before the command
    outcome         text,                       -- terminal eventType
    error_code      text,
    terminal_event  bytea,                      -- the encoded terminal event, republished on redelivery
    received_at     timestamptz NOT NULL DEFAULT now(),
    started_at      timestamptz,
    finished_at     timestamptz
);
CREATE INDEX commands_release_key ON helmq_worker.commands (release_key, received_at);

CREATE TABLE helmq_worker.releases (
    release_key     text PRIMARY KEY,
    release_id      uuid NOT NULL,
    tenant_id       uuid NOT NULL,
    namespace       text NOT NULL,
    release_name    text NOT NULL,
    status          text NOT NULL,
    revision        integer NOT NULL,
    deployed_revision integer,                  -- last revision that was deployed (atomic upgrade target)
    chart_name      text,
    chart_version   text,
    app_version     text,
    description     text,
    values_digest   text,
    values_redacted text,
    reason          text,
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- Every revision of every lifecycle, as the worker last knew it: rollback
-- events carry the chart and values of the revision they return to.
CREATE TABLE helmq_worker.revisions (
    release_id      uuid NOT NULL,
    revision        integer NOT NULL,
    status          text NOT NULL,
    chart_name      text NOT NULL,
    chart_version   text NOT NULL,
    app_version     text,
    operation       text NOT NULL,
    description     text,
    values_digest   text,
    values_redacted text,
    created_at      timestamptz NOT NULL,
    PRIMARY KEY (release_id, revision)
);

CREATE TABLE helmq_worker.namespaces (
    namespace       text PRIMARY KEY,
    tenant_id       uuid NOT NULL,
    claimed_by      uuid NOT NULL,              -- the command that first installed into it
    claimed_at      timestamptz NOT NULL DEFAULT now()
);

-- Step 1: record the command and take the release key's lock.
-- Returns one row: state ('received': nothing ran yet; 'running': helm may
-- have run, reconcile; 'finished'; or 'locked' when another worker holds the
-- key), the recorded terminal event of
-- a finished command, the registry row (JSON, null when the key has no
-- release) and the owner of the namespace (null when unclaimed).
-- The lock is a session-level advisory lock: it is released by
-- command_finish, or by PostgreSQL when the worker's session ends (a crash),
-- so that another worker can then reconcile the command.
CREATE FUNCTION helmq_worker.command_begin(
    p_command_id uuid, p_key text, p_operation text, p_namespace text,
    p_topic text, p_partition integer, p_offset bigint, p_rollback_to integer)
RETURNS TABLE (state text, terminal_event bytea, release json, namespace_owner uuid, command json,
               rollback_target json)
LANGUAGE plpgsql AS $$
DECLARE
    c helmq_worker.commands;
    r helmq_worker.releases;
    target integer;
BEGIN
    SELECT * INTO c FROM helmq_worker.commands WHERE command_id = p_command_id;
    IF FOUND AND c.state = 'finished' THEN
        RETURN QUERY SELECT 'finished'::text, c.terminal_event, NULL::json, NULL::uuid, row_to_json(c), NULL::json;
        RETURN;
    END IF;
    IF NOT pg_try_advisory_lock(hashtextextended(p_key, 0)) THEN
        RETURN QUERY SELECT 'locked'::text, NULL::bytea, NULL::json, NULL::uuid, NULL::json, NULL::json;
        RETURN;
    END IF;
    IF c.command_id IS NULL THEN
        INSERT INTO helmq_worker.commands (command_id, release_key, operation, state,
                                           source_topic, source_partition, source_offset)
        VALUES (p_command_id, p_key, p_operation, 'received', p_topic, p_partition, p_offset);
        SELECT * INTO c FROM helmq_worker.commands WHERE command_id = p_command_id;
    END IF;
    SELECT * INTO r FROM helmq_worker.releases x WHERE x.release_key = p_key;
    -- Rollback's default target: the deployed revision before the current
    -- one when the release is deployed, else the last deployed revision.
    IF p_operation = 'rollback' AND r.release_id IS NOT NULL THEN
        target := p_rollback_to;
        IF target IS NULL AND r.status = 'deployed' THEN
            SELECT max(v.revision) INTO target FROM helmq_worker.revisions v
             WHERE v.release_id = r.release_id AND v.revision < r.deployed_revision
               AND v.status IN ('deployed', 'superseded');
        ELSIF target IS NULL THEN
            target := r.deployed_revision;
        END IF;
    END IF;
    RETURN QUERY SELECT c.state, NULL::bytea,
                        CASE WHEN r.release_id IS NULL THEN NULL ELSE row_to_json(r) END,
                        (SELECT n.tenant_id FROM helmq_worker.namespaces n WHERE n.namespace = p_namespace),
                        row_to_json(c),
                        (SELECT row_to_json(v) FROM helmq_worker.revisions v
                          WHERE v.release_id = r.release_id AND v.revision = target);
END $$;

-- Step 2: the command is about to run helm. Recorded before the first helm
-- process starts, so no helm runs for a command the ledger has not recorded.
CREATE FUNCTION helmq_worker.command_start(
    p_command_id uuid, p_release_id uuid, p_base_revision integer, p_base_deployed integer)
RETURNS void LANGUAGE sql AS $$
    UPDATE helmq_worker.commands
       SET state = 'running', started_at = now(), release_id = p_release_id,
           base_revision = p_base_revision, base_deployed = p_base_deployed
     WHERE command_id = p_command_id AND state <> 'finished';
$$;

-- Step 3: the outcome, atomically with the registry it implies, then the
-- key's lock is released. p_release is the release's new registry row as
-- JSON (null: unchanged); p_revisions the revisions created or changed;
-- p_claim_namespace claims the namespace for the command's tenant.
CREATE FUNCTION helmq_worker.command_finish(
    p_command_id uuid, p_key text, p_outcome text, p_error_code text, p_terminal_event bytea,
    p_release json, p_revisions json, p_claim_tenant uuid, p_claim_namespace text)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    r json;
BEGIN
    UPDATE helmq_worker.commands
       SET state = 'finished', finished_at = now(), outcome = p_outcome,
           error_code = p_error_code, terminal_event = p_terminal_event,
           release_id = COALESCE(release_id, (p_release->>'release_id')::uuid)
     WHERE command_id = p_command_id AND state <> 'finished';
    IF FOUND THEN
        IF p_release IS NOT NULL THEN
            INSERT INTO helmq_worker.releases AS x
                (release_key, release_id, tenant_id, namespace, release_name, status, revision,
                 deployed_revision, chart_name, chart_version, app_version, description,
                 values_digest, values_redacted, reason, updated_at)
            SELECT p_key, j.release_id, j.tenant_id, j.namespace, j.release_name, j.status, j.revision,
                   j.deployed_revision, j.chart_name, j.chart_version, j.app_version, j.description,
                   j.values_digest, j.values_redacted, j.reason, now()
              FROM json_populate_record(NULL::helmq_worker.releases, p_release) j
            ON CONFLICT (release_key) DO UPDATE SET
                release_id = EXCLUDED.release_id, tenant_id = EXCLUDED.tenant_id,
                namespace = EXCLUDED.namespace, release_name = EXCLUDED.release_name,
                status = EXCLUDED.status, revision = EXCLUDED.revision,
                deployed_revision = EXCLUDED.deployed_revision, chart_name = EXCLUDED.chart_name,
                chart_version = EXCLUDED.chart_version, app_version = EXCLUDED.app_version,
                description = EXCLUDED.description, values_digest = EXCLUDED.values_digest,
                values_redacted = EXCLUDED.values_redacted, reason = EXCLUDED.reason,
                updated_at = now();
        END IF;
        FOR r IN SELECT * FROM json_array_elements(COALESCE(p_revisions, '[]'::json)) LOOP
            INSERT INTO helmq_worker.revisions AS v
                (release_id, revision, status, chart_name, chart_version, app_version, operation,
                 description, values_digest, values_redacted, created_at)
            SELECT j.release_id, j.revision, j.status, j.chart_name, j.chart_version, j.app_version,
                   j.operation, j.description, j.values_digest, j.values_redacted,
                   COALESCE(j.created_at, now())
              FROM json_populate_record(NULL::helmq_worker.revisions, r) j
            ON CONFLICT (release_id, revision) DO UPDATE SET status = EXCLUDED.status;
        END LOOP;
        -- A newly deployed revision supersedes every earlier deployed one.
        IF p_release IS NOT NULL AND p_release->>'status' = 'deployed' THEN
            UPDATE helmq_worker.revisions
               SET status = 'superseded'
             WHERE release_id = (p_release->>'release_id')::uuid AND status = 'deployed'
               AND revision < (p_release->>'revision')::integer;
        END IF;
        IF p_claim_namespace IS NOT NULL THEN
            INSERT INTO helmq_worker.namespaces (namespace, tenant_id, claimed_by)
            VALUES (p_claim_namespace, p_claim_tenant, p_command_id)
            ON CONFLICT (namespace) DO NOTHING;
        END IF;
    END IF;
    PERFORM pg_advisory_unlock(hashtextextended(p_key, 0));
END $$;

-- Releases the key's lock without finishing (the worker gives the command
-- back, e.g. on shutdown before it started).
CREATE FUNCTION helmq_worker.key_unlock(p_key text) RETURNS boolean LANGUAGE sql AS $$
    SELECT pg_advisory_unlock(hashtextextended(p_key, 0));
$$;
