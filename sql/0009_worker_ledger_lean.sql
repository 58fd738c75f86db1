-- 0009: the ledger's per-command functions, doing the same with less work.
--
-- Measured (docs/PERFORMANCE.md): PostgreSQL spent ~0.45 ms of CPU per
-- command on the worker's four ledger calls. What changes here:
-- - command_helm_started was a LANGUAGE sql function that PostgreSQL cannot
--   inline (it updates): parsed and planned on every call. In PL/pgSQL its
--   plan is cached per session.
-- - command_finish was a wrapper calling command_finish_once (0008): one
--   function now (command_finish_once is dropped); the registry row is
--   parsed from JSON once, and the "supersede earlier deployed revisions"
--   UPDATE only runs when an earlier revision can exist (revision > 1).
-- - command_finish released the key's lock until an unlock failed, which
--   logged a WARNING in the server's log for every command; it now unlocks
--   once unless the worker says its session may hold the lock more than once.
-- Results, locks and the rows written are the same as before.
--
-- A new migration rather than edits: migrate.c applies each file once, by
-- name, so databases that already have 0001-0008 only get what is here.

CREATE OR REPLACE FUNCTION helmq_worker.command_helm_started(
    p_command_id uuid, p_pid integer, p_pgid integer, p_start_ticks bigint, p_host text,
    p_deadline_ms bigint)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    UPDATE helmq_worker.commands
       SET helm_pid = p_pid, helm_pgid = p_pgid, helm_start_ticks = p_start_ticks,
           helm_host = p_host, helm_deadline_ms = p_deadline_ms
     WHERE command_id = p_command_id AND state = 'running';
END $$;

-- p_all_holds: the worker's session may hold the key's lock more than once
-- (a command_begin of it ran in a group that rolled back, or failed after
-- taking the lock): release every hold, which ends with one unlock that finds
-- none and warns. False: one unlock, the usual case. Unlocking "every hold"
-- always (0008) wrote that warning to the server's log for every command.
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

-- 0008's signature, for workers not yet upgraded: releases every hold.
CREATE OR REPLACE FUNCTION helmq_worker.command_finish(
    p_command_id uuid, p_key text, p_outcome text, p_error_code text, p_terminal_event bytea,
    p_release json, p_revisions json, p_claim_tenant uuid, p_claim_namespace text)
RETURNS void LANGUAGE sql AS $$
    SELECT helmq_worker.command_finish(p_command_id, p_key, p_outcome, p_error_code, p_terminal_event,
                                       p_release, p_revisions, p_claim_tenant, p_claim_namespace, true);
$$;

-- Replaced by the command_finish above.
DROP FUNCTION helmq_worker.command_finish_once(uuid, text, text, text, bytea, json, json, uuid, text);
