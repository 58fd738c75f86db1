-- 0001: the worker's ledger and release registry (schema helmq_worker), as
-- one baseline: the final state of the history sql/0001-0015 had before the
-- first deployment (issue 24; that history is kept, for the equivalence test
-- only, in tests/fixtures/sql-history/). From here on sql/ is append-only:
-- see sql/README.md.
--
-- What the worker keeps:
--   commands          the ledger: every commandId, its state and outcome, so
--                     a redelivered command is never run twice (a finished one
--                     is answered from its recorded terminal event, an
--                     interrupted one is reconciled against helm);
--   releases          the registry: each release key's current lifecycle
--                     (releaseId, revision, status, chart);
--   revisions         every revision of every lifecycle, as the worker last
--                     knew it (rollbacks carry the chart and values of the
--                     revision they return to);
--   namespaces        which tenant owns each namespace (its first install);
--   released_claims   the claims an operator ended, and who ended them.
--
-- Each worker step is one call of a function below: one statement, one
-- transaction, one round trip from the worker's event loop:
--   command_begin   record the command, take its release key's lock
--   command_start   claim the namespace (installs), mark it running
--   command_helm_started   where a later helm step of it runs
--   command_finish  the outcome with the registry it implies, unlock the key
-- The lock of a release key is a session-level advisory lock on
-- hashtextextended(release_key, 0): released by command_finish, or by
-- PostgreSQL when the worker's session ends (a crash), so that another worker
-- can then reconcile the command.
--
-- Some functions exist in more than one signature: the older ones were kept
-- for workers not yet upgraded, and are thin wrappers of the newest.

CREATE SCHEMA IF NOT EXISTS helmq_worker;

-- --- tables ---------------------------------------------------------------------

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
    finished_at     timestamptz,
    -- The helm process a running command last started. After a crash the
    -- worker that reconciles the command finds it (every helm of a command
    -- carries HELMQ_COMMAND_ID=<commandId> in its environment), on the host
    -- named here, and waits for it to exit (stopping it at its deadline)
    -- before it asks helm for the release's state, so that the orphaned helm
    -- and the reconciliation never both act on the release. Host and
    -- deadline are recorded with the start, before helm runs; the pid columns
    -- only by command_helm_started, for later helm steps.
    helm_pid        integer,                    -- the helm child's pid
    helm_pgid       integer,                    -- its process group (helm runs in its own session)
    helm_start_ticks bigint,                    -- its start time (/proc/PID/stat field 22): guards against pid reuse
    helm_host       text,                       -- where it ran: hostname, boot id, pid namespace
    helm_deadline_ms bigint,                    -- when the worker would SIGTERM it (Unix ms, that host's clock)
    content_digest  text                        -- sha256 of the command's canonical content but requestedAt
);
CREATE INDEX commands_release_key ON helmq_worker.commands (release_key, received_at);

COMMENT ON TABLE helmq_worker.commands IS
    'the ledger: one row per commandId, its state (received, running, finished), outcome and recorded terminal '
    'event, and the helm process a running command started';
COMMENT ON COLUMN helmq_worker.commands.content_digest IS
    'sha256 (hex) of the command''s canonical content without requestedAt; another command with this commandId '
    'but another key, operation or digest is an idempotency conflict';

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
-- The namespace's live releases are counted for every claim shown and
-- checked on release: without this index each is a scan of the registry.
CREATE INDEX releases_namespace ON helmq_worker.releases (namespace);

COMMENT ON TABLE helmq_worker.releases IS
    'the registry: the current lifecycle of each release key (tenantId/namespace/releaseName)';

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

COMMENT ON TABLE helmq_worker.revisions IS
    'every revision of every lifecycle as the worker last knew it (rollback targets, their chart and values)';

-- A namespace belongs to the tenant whose install first claimed it
-- (command_start). The claim never ends by itself, not even when the
-- tenant's last release there is uninstalled: the namespace may still hold
-- objects helm does not own (PersistentVolumeClaims, Secrets a chart's hook
-- made, the worker's helmq-tenant-access set-up release with the tenant's
-- service account), and another tenant must not inherit them. An operator
-- ends it with namespace_release.
CREATE TABLE helmq_worker.namespaces (
    namespace       text PRIMARY KEY,
    tenant_id       uuid NOT NULL,
    claimed_by      uuid NOT NULL,              -- the command that first installed into it
    claimed_at      timestamptz NOT NULL DEFAULT now()
);

COMMENT ON TABLE helmq_worker.namespaces IS
    'current namespace claims: the tenant whose install first claimed each namespace';

-- Every claim that ended, and who ended it: the audit trail of ownership
-- changes (namespaces holds only current claims).
CREATE TABLE helmq_worker.released_claims (
    namespace       text NOT NULL,
    tenant_id       uuid NOT NULL,
    claimed_by      uuid NOT NULL,              -- the command whose install claimed it
    claimed_at      timestamptz NOT NULL,
    released_at     timestamptz NOT NULL DEFAULT now(),
    released_by     text NOT NULL               -- the operator, as the caller named them
);
CREATE INDEX released_claims_namespace ON helmq_worker.released_claims (namespace, released_at);

COMMENT ON TABLE helmq_worker.released_claims IS
    'namespace claims an operator released (helmq_worker.namespace_release), with who and when';

-- Releases as the worker counts them live (worker/command.c, decide()): not
-- uninstalled, and helm created something (an install that failed before
-- helm created anything has revision 0).
CREATE VIEW helmq_worker.live_releases AS
    SELECT r.* FROM helmq_worker.releases r WHERE r.status <> 'uninstalled' AND r.revision > 0;

COMMENT ON VIEW helmq_worker.live_releases IS
    'registry rows of releases that are live (not uninstalled, revision > 0), as the worker decides it';

-- --- step 1: command_begin --------------------------------------------------------

-- Whether a command (key, operation, digest) is not the one row c recorded
-- for its commandId. A row without a digest (recorded by a worker that sent
-- none): its key and operation decide.
CREATE FUNCTION helmq_worker.command_conflicts(
    c helmq_worker.commands, p_key text, p_operation text, p_digest text)
RETURNS boolean LANGUAGE sql IMMUTABLE AS $$
    SELECT c.release_key IS DISTINCT FROM p_key OR c.operation IS DISTINCT FROM p_operation
        OR (c.content_digest IS NOT NULL AND p_digest IS NOT NULL AND c.content_digest <> p_digest);
$$;

COMMENT ON FUNCTION helmq_worker.command_conflicts(helmq_worker.commands, text, text, text) IS
    'whether a command (key, operation, content digest) is another command than the ledger row of its commandId';

-- Step 1: record the command and take the release key's lock. One command
-- per commandId, whatever its key: a command is the row's own only with the
-- same key, operation and content digest (a sha256 of its canonical content
-- but requestedAt, computed by the worker); anything else is a conflict,
-- answered IDEMPOTENCY_CONFLICT by the worker and never run. The INSERT is ON
-- CONFLICT DO NOTHING followed by a read: a concurrent transaction inserting
-- the same commandId makes it wait for that one's outcome, then read its row,
-- so of any number of racing commands exactly one owns the commandId.
-- Returns one row, state:
--   'conflict'  the commandId belongs to another command (nothing recorded, no lock held);
--   'locked'    another worker holds the key's lock (try again);
--   'finished'  its recorded terminal event, the key's registry row and
--               moved_on: whether the registry changed after the command
--               finished (read under the key's lock; no lock held after). The
--               worker republishes the terminal event only when it has not,
--               so that a stale state never becomes the newest event on the key;
--   'received'  nothing ran yet, or 'running': helm may have run, reconcile
--               (the key's lock is held). With the registry row (JSON, null
--               when the key has no release), the namespace's owner (null
--               when unclaimed), the ledger row, and for a rollback its
--               target revision's row.
CREATE FUNCTION helmq_worker.command_begin(
    p_command_id uuid, p_key text, p_operation text, p_namespace text,
    p_topic text, p_partition integer, p_offset bigint, p_rollback_to integer, p_digest text)
RETURNS TABLE (state text, terminal_event bytea, release json, namespace_owner uuid, command json,
               rollback_target json, moved_on boolean)
LANGUAGE plpgsql AS $$
DECLARE
    c helmq_worker.commands;
    r helmq_worker.releases;
    target integer;
    k bigint := hashtextextended(p_key, 0);
BEGIN
    SELECT * INTO c FROM helmq_worker.commands x WHERE x.command_id = p_command_id;
    IF FOUND AND helmq_worker.command_conflicts(c, p_key, p_operation, p_digest) THEN
        RETURN QUERY SELECT 'conflict'::text, NULL::bytea, NULL::json, NULL::uuid, NULL::json, NULL::json,
                            NULL::boolean;
        RETURN;
    END IF;
    IF NOT pg_try_advisory_lock(k) THEN
        RETURN QUERY SELECT 'locked'::text, NULL::bytea, NULL::json, NULL::uuid, NULL::json, NULL::json,
                            NULL::boolean;
        RETURN;
    END IF;
    IF c.command_id IS NULL THEN
        INSERT INTO helmq_worker.commands (command_id, release_key, operation, state,
                                           source_topic, source_partition, source_offset, content_digest)
        VALUES (p_command_id, p_key, p_operation, 'received', p_topic, p_partition, p_offset, p_digest)
        ON CONFLICT (command_id) DO NOTHING;
        -- Inserted, or another transaction's committed row: read it again.
        SELECT * INTO c FROM helmq_worker.commands x WHERE x.command_id = p_command_id;
        IF helmq_worker.command_conflicts(c, p_key, p_operation, p_digest) THEN
            PERFORM pg_advisory_unlock(k);
            RETURN QUERY SELECT 'conflict'::text, NULL::bytea, NULL::json, NULL::uuid, NULL::json, NULL::json,
                                NULL::boolean;
            RETURN;
        END IF;
    END IF;
    SELECT * INTO r FROM helmq_worker.releases x WHERE x.release_key = p_key;
    IF c.state = 'finished' THEN
        -- Read under the lock: no command of the key is between its finish
        -- and its registry write.
        PERFORM pg_advisory_unlock(k);
        RETURN QUERY SELECT 'finished'::text, c.terminal_event,
                            CASE WHEN r.release_id IS NULL THEN NULL ELSE row_to_json(r) END,
                            NULL::uuid, NULL::json, NULL::json,
                            COALESCE(r.updated_at > c.finished_at, false);
        RETURN;
    END IF;
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
                          WHERE v.release_id = r.release_id AND v.revision = target),
                        NULL::boolean;
END $$;

COMMENT ON FUNCTION helmq_worker.command_begin(uuid, text, text, text, text, integer, bigint, integer, text) IS
    'Step 1: record the command (one per commandId, whatever its key) and lock its release key; '
    'see sql/0001_worker_baseline.sql for the states it returns';

-- The signature without a digest, for workers not yet upgraded: the same
-- checks. Such a worker does not know 'conflict': it is told 'locked', and
-- retries until a new worker takes the partition over and rejects the
-- command, rather than running it.
CREATE FUNCTION helmq_worker.command_begin(
    p_command_id uuid, p_key text, p_operation text, p_namespace text,
    p_topic text, p_partition integer, p_offset bigint, p_rollback_to integer)
RETURNS TABLE (state text, terminal_event bytea, release json, namespace_owner uuid, command json,
               rollback_target json)
LANGUAGE sql AS $$
    SELECT CASE WHEN b.state = 'conflict' THEN 'locked' ELSE b.state END, b.terminal_event,
           CASE WHEN b.state = 'finished' THEN NULL ELSE b.release END, b.namespace_owner, b.command,
           b.rollback_target
      FROM helmq_worker.command_begin(p_command_id, p_key, p_operation, p_namespace, p_topic, p_partition,
                                      p_offset, p_rollback_to, NULL) b;
$$;

COMMENT ON FUNCTION helmq_worker.command_begin(uuid, text, text, text, text, integer, bigint, integer) IS
    'Step 1 without a content digest (workers not yet upgraded): a conflict is answered locked';

-- --- step 2: command_start --------------------------------------------------------

-- Step 2: the command is about to run helm. Recorded before the first helm
-- process starts, so no helm runs for a command the ledger has not recorded,
-- with where helm will run and its deadline (p_helm_host,
-- p_helm_deadline_ms), so that there is no window in which a helm runs that
-- the ledger does not know where to look for.
--
-- An install claims its namespace for its tenant atomically before helm runs
-- (p_claim_namespace; null: no claim, as upgrade, rollback and uninstall act
-- on a release whose install claimed it): INSERT ... ON CONFLICT DO NOTHING,
-- then read the owner, so of two tenants racing into a fresh namespace
-- exactly one gets it. Returns started false and the owner when the
-- namespace is another tenant's (the caller rejects the command
-- NAMESPACE_OWNED). The claim stays when the install then fails: helm may
-- have created the namespace and left a failed release in it, which is the
-- tenant's. The claim's row is read FOR KEY SHARE, which namespace_release's
-- FOR UPDATE waits for (and the other way round); a row deleted by a release
-- that committed meanwhile is not found, and the loop claims it again.
CREATE FUNCTION helmq_worker.command_start(
    p_command_id uuid, p_release_id uuid, p_base_revision integer, p_base_deployed integer,
    p_claim_tenant uuid, p_claim_namespace text, p_helm_host text, p_helm_deadline_ms bigint)
RETURNS TABLE (started boolean, owner_tenant uuid) LANGUAGE plpgsql AS $$
DECLARE
    v_owner uuid;
BEGIN
    IF p_claim_namespace IS NOT NULL THEN
        LOOP
            INSERT INTO helmq_worker.namespaces (namespace, tenant_id, claimed_by)
            VALUES (p_claim_namespace, p_claim_tenant, p_command_id)
            ON CONFLICT (namespace) DO NOTHING;
            SELECT n.tenant_id INTO v_owner FROM helmq_worker.namespaces n
             WHERE n.namespace = p_claim_namespace FOR KEY SHARE;
            EXIT WHEN FOUND;
        END LOOP;
        IF v_owner IS DISTINCT FROM p_claim_tenant THEN
            RETURN QUERY SELECT false, v_owner;
            RETURN;
        END IF;
    END IF;
    UPDATE helmq_worker.commands
       SET state = 'running', started_at = now(), release_id = p_release_id,
           base_revision = p_base_revision, base_deployed = p_base_deployed,
           helm_pid = NULL, helm_pgid = NULL, helm_start_ticks = NULL,
           helm_host = p_helm_host, helm_deadline_ms = p_helm_deadline_ms
     WHERE command_id = p_command_id AND state <> 'finished';
    RETURN QUERY SELECT true, v_owner;
END $$;

COMMENT ON FUNCTION helmq_worker.command_start(uuid, uuid, integer, integer, uuid, text, text, bigint) IS
    'Step 2: claim the namespace (installs) and mark the command running, with where its helm runs and its '
    'deadline, before helm starts';

-- The signature without the helm host and deadline, for workers not yet
-- upgraded; no row lock on the claim.
CREATE FUNCTION helmq_worker.command_start(
    p_command_id uuid, p_release_id uuid, p_base_revision integer, p_base_deployed integer,
    p_claim_tenant uuid, p_claim_namespace text)
RETURNS TABLE (started boolean, owner_tenant uuid) LANGUAGE plpgsql AS $$
DECLARE
    v_owner uuid;
BEGIN
    IF p_claim_namespace IS NOT NULL THEN
        INSERT INTO helmq_worker.namespaces (namespace, tenant_id, claimed_by)
        VALUES (p_claim_namespace, p_claim_tenant, p_command_id)
        ON CONFLICT (namespace) DO NOTHING;
        SELECT n.tenant_id INTO v_owner FROM helmq_worker.namespaces n WHERE n.namespace = p_claim_namespace;
        IF v_owner IS DISTINCT FROM p_claim_tenant THEN
            RETURN QUERY SELECT false, v_owner;
            RETURN;
        END IF;
    END IF;
    UPDATE helmq_worker.commands
       SET state = 'running', started_at = now(), release_id = p_release_id,
           base_revision = p_base_revision, base_deployed = p_base_deployed
     WHERE command_id = p_command_id AND state <> 'finished';
    RETURN QUERY SELECT true, v_owner;
END $$;

COMMENT ON FUNCTION helmq_worker.command_start(uuid, uuid, integer, integer, uuid, text) IS
    'Step 2 without the helm host and deadline (workers not yet upgraded)';

-- The first signature, without a namespace claim, for workers not yet
-- upgraded.
CREATE FUNCTION helmq_worker.command_start(
    p_command_id uuid, p_release_id uuid, p_base_revision integer, p_base_deployed integer)
RETURNS void LANGUAGE sql AS $$
    UPDATE helmq_worker.commands
       SET state = 'running', started_at = now(), release_id = p_release_id,
           base_revision = p_base_revision, base_deployed = p_base_deployed
     WHERE command_id = p_command_id AND state <> 'finished';
$$;

COMMENT ON FUNCTION helmq_worker.command_start(uuid, uuid, integer, integer) IS
    'Step 2 without a namespace claim (workers not yet upgraded)';

-- Records the helm process of a running command (best effort: called after
-- helm started; a crash in between leaves the previous value). For a
-- command's later helm steps (their deadlines differ from the operation's,
-- which command_start records).
CREATE FUNCTION helmq_worker.command_helm_started(
    p_command_id uuid, p_pid integer, p_pgid integer, p_start_ticks bigint, p_host text,
    p_deadline_ms bigint)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    UPDATE helmq_worker.commands
       SET helm_pid = p_pid, helm_pgid = p_pgid, helm_start_ticks = p_start_ticks,
           helm_host = p_host, helm_deadline_ms = p_deadline_ms
     WHERE command_id = p_command_id AND state = 'running';
END $$;

COMMENT ON FUNCTION helmq_worker.command_helm_started(uuid, integer, integer, bigint, text, bigint) IS
    'records the helm process (pid, process group, start time, host, deadline) a running command started';

-- --- step 3: command_finish -------------------------------------------------------

-- Step 3: the outcome, atomically with the registry it implies, then the
-- key's lock is released. p_release is the release's new registry row as
-- JSON (null: unchanged); p_revisions the revisions created or changed
-- (a newly deployed revision supersedes every earlier deployed one);
-- p_claim_namespace claims the namespace for p_claim_tenant.
-- p_all_holds: the worker's session may hold the key's lock more than once
-- (a command_begin of it ran in a statement group that rolled back, and ran
-- again: a session-level advisory lock is not transactional): release every
-- hold, which ends with one unlock that finds none. False: one unlock, the
-- usual case.
CREATE FUNCTION helmq_worker.command_finish(
    p_command_id uuid, p_key text, p_outcome text, p_error_code text, p_terminal_event bytea,
    p_release json, p_revisions json, p_claim_tenant uuid, p_claim_namespace text, p_all_holds boolean)
RETURNS void LANGUAGE plpgsql
    SET client_min_messages = error  -- a finish run again finds the lock released and would warn
AS $$
DECLARE
    rel helmq_worker.releases;
    r json;
    k bigint := hashtextextended(p_key, 0);
BEGIN
    UPDATE helmq_worker.commands
       SET state = 'finished', finished_at = now(), outcome = p_outcome,
           error_code = p_error_code, terminal_event = p_terminal_event,
           release_id = COALESCE(release_id, (p_release->>'release_id')::uuid)
     WHERE command_id = p_command_id AND state <> 'finished';
    IF FOUND THEN
        IF p_release IS NOT NULL THEN
            rel := json_populate_record(NULL::helmq_worker.releases, p_release);
            INSERT INTO helmq_worker.releases AS x
                (release_key, release_id, tenant_id, namespace, release_name, status, revision,
                 deployed_revision, chart_name, chart_version, app_version, description,
                 values_digest, values_redacted, reason, updated_at)
            VALUES (p_key, rel.release_id, rel.tenant_id, rel.namespace, rel.release_name, rel.status,
                    rel.revision, rel.deployed_revision, rel.chart_name, rel.chart_version, rel.app_version,
                    rel.description, rel.values_digest, rel.values_redacted, rel.reason, now())
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
        IF rel.status = 'deployed' AND rel.revision > 1 THEN
            UPDATE helmq_worker.revisions
               SET status = 'superseded'
             WHERE release_id = rel.release_id AND status = 'deployed' AND revision < rel.revision;
        END IF;
        IF p_claim_namespace IS NOT NULL THEN
            INSERT INTO helmq_worker.namespaces (namespace, tenant_id, claimed_by)
            VALUES (p_claim_namespace, p_claim_tenant, p_command_id)
            ON CONFLICT (namespace) DO NOTHING;
        END IF;
    END IF;
    IF p_all_holds THEN
        WHILE pg_advisory_unlock(k) LOOP
        END LOOP;
    ELSE
        PERFORM pg_advisory_unlock(k);
    END IF;
END $$;

COMMENT ON FUNCTION helmq_worker.command_finish(uuid, text, text, text, bytea, json, json, uuid, text, boolean) IS
    'Step 3: record the outcome with the registry rows it implies, then release the key''s lock';

-- The signature without p_all_holds, for workers not yet upgraded: releases
-- every hold.
CREATE FUNCTION helmq_worker.command_finish(
    p_command_id uuid, p_key text, p_outcome text, p_error_code text, p_terminal_event bytea,
    p_release json, p_revisions json, p_claim_tenant uuid, p_claim_namespace text)
RETURNS void LANGUAGE sql AS $$
    SELECT helmq_worker.command_finish(p_command_id, p_key, p_outcome, p_error_code, p_terminal_event,
                                       p_release, p_revisions, p_claim_tenant, p_claim_namespace, true);
$$;

COMMENT ON FUNCTION helmq_worker.command_finish(uuid, text, text, text, bytea, json, json, uuid, text) IS
    'Step 3 without p_all_holds (workers not yet upgraded): releases every hold of the key''s lock';

-- --- the key's lock ---------------------------------------------------------------

-- Releases every hold this session has on the key's lock; true when it held
-- one. Advisory locks on a key are only ever taken for the one command
-- running on it, so releasing means releasing every hold.
CREATE FUNCTION helmq_worker.key_release(p_key text) RETURNS boolean LANGUAGE plpgsql
    SET client_min_messages = error  -- the last unlock finds no hold and would warn
AS $$
DECLARE
    k bigint := hashtextextended(p_key, 0);
    held boolean := false;
BEGIN
    WHILE pg_advisory_unlock(k) LOOP
        held := true;
    END LOOP;
    RETURN held;
END $$;

COMMENT ON FUNCTION helmq_worker.key_release(text) IS
    'releases every hold this session has on a release key''s lock; true when it held one';

-- Releases the key's lock without finishing (the worker gives the command
-- back, e.g. on shutdown before it started).
CREATE FUNCTION helmq_worker.key_unlock(p_key text) RETURNS boolean LANGUAGE sql AS $$
    SELECT helmq_worker.key_release(p_key);
$$;

COMMENT ON FUNCTION helmq_worker.key_unlock(text) IS
    'gives a command back without finishing it: releases its release key''s lock';

-- --- namespace claims -------------------------------------------------------------

-- Ends p_namespace's claim so that any tenant's install may claim it again
-- (the CLI's `helmq namespaces release NS`, after the operator deleted the
-- namespace in the cluster). Refused (an exception, nothing changed) when
-- the namespace is not claimed (SQLSTATE P0002), holds a live release of any
-- tenant (55006, the message names them), or has a command not yet finished
-- (55006: an install in progress would claim or use it; wait and try
-- again). Returns the released claim as JSON {namespace, tenantId,
-- claimedBy, claimedAt, releasedAt, releasedBy}.
--
-- Concurrency: the claim's row is locked FOR UPDATE first. An install
-- starting in the namespace locks that row FOR KEY SHARE in command_start,
-- so the two serialise: a release that locked first sees the install's
-- command (recorded 'received' at command_begin, before its start) and is
-- refused; an install that started first holds its lock until its start
-- commits, and the release then sees it 'running' and is refused. A start
-- that comes after a release committed finds no row, and claims the
-- namespace afresh.
--
-- The in-progress check scans the unfinished commands through the ledger's
-- keys (tenantId/namespace/releaseName): an operator's rare action, so the
-- per-command path gets no index for it. Only the owner of schema
-- helmq_worker (the worker's user) and superusers may call it.
CREATE FUNCTION helmq_worker.namespace_release(p_namespace text, p_released_by text)
RETURNS json LANGUAGE plpgsql AS $$
DECLARE
    n helmq_worker.namespaces;
    live text;
    busy text;
    v_at timestamptz := now();
BEGIN
    SELECT * INTO n FROM helmq_worker.namespaces x WHERE x.namespace = p_namespace FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'namespace % is not claimed by any tenant', p_namespace
            USING ERRCODE = 'no_data_found';
    END IF;
    SELECT string_agg(format('%s (tenant %s, %s, revision %s)', r.release_name, r.tenant_id, r.status,
                             r.revision), ', ' ORDER BY r.release_name, r.tenant_id)
      INTO live FROM helmq_worker.live_releases r WHERE r.namespace = p_namespace;
    IF live IS NOT NULL THEN
        RAISE EXCEPTION 'namespace % still has live releases: %', p_namespace, live
            USING ERRCODE = 'object_in_use',
                  HINT = 'uninstall them first; the claim is released only when none is live';
    END IF;
    SELECT string_agg(format('%s %s (%s, %s)', c.operation, split_part(c.release_key, '/', 3), c.state,
                             c.command_id), ', ' ORDER BY c.received_at)
      INTO busy FROM helmq_worker.commands c
     WHERE c.state <> 'finished' AND split_part(c.release_key, '/', 2) = p_namespace;
    IF busy IS NOT NULL THEN
        RAISE EXCEPTION 'namespace % has commands in progress: %', p_namespace, busy
            USING ERRCODE = 'object_in_use', HINT = 'wait for them to finish, then try again';
    END IF;
    DELETE FROM helmq_worker.namespaces x WHERE x.namespace = p_namespace;
    INSERT INTO helmq_worker.released_claims (namespace, tenant_id, claimed_by, claimed_at, released_at,
                                              released_by)
    VALUES (n.namespace, n.tenant_id, n.claimed_by, n.claimed_at, v_at, COALESCE(p_released_by, session_user));
    RETURN json_build_object('namespace', n.namespace, 'tenantId', n.tenant_id, 'claimedBy', n.claimed_by,
                             'claimedAt', n.claimed_at, 'releasedAt', v_at,
                             'releasedBy', COALESCE(p_released_by, session_user));
END $$;

COMMENT ON FUNCTION helmq_worker.namespace_release(text, text) IS
    'an operator ends a namespace claim: refused while it holds a live release or a command in progress';

REVOKE ALL ON FUNCTION helmq_worker.namespace_release(text, text) FROM PUBLIC;
