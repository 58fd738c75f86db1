-- 0014: a namespace claim ends when an operator releases it; anyone who may
-- read a tenant's releases may see which namespaces the tenant owns.
--
-- A namespace belongs to the tenant whose install first claimed it (0003).
-- The claim never ends by itself, not even when the tenant's last release
-- there is uninstalled: the namespace may still hold objects helm does not
-- own (PersistentVolumeClaims, Secrets a chart's hook made, the worker's
-- helmq-tenant-access set-up release with the tenant's service account), and
-- another tenant must not inherit them. An operator ends it, with
-- namespace_release below (the CLI's `helmq namespaces release NS`), after
-- deleting the namespace in the cluster; it is refused while the namespace
-- holds a live release or a command of it is in progress.
--
-- A new migration rather than edits: migrate.c applies each file once, by
-- name, so databases that already have 0001-0013 only get what is here.

-- Releases as the worker counts them live (worker/command.c, decide()): not
-- uninstalled, and helm created something (an install that failed before
-- helm created anything has revision 0).
CREATE VIEW helmq_worker.live_releases AS
    SELECT r.* FROM helmq_worker.releases r WHERE r.status <> 'uninstalled' AND r.revision > 0;

COMMENT ON VIEW helmq_worker.live_releases IS
    'registry rows of releases that are live (not uninstalled, revision > 0), as the worker decides it';

-- The namespace's live releases are counted for every claim shown and
-- checked on release: without this index each is a scan of the registry.
CREATE INDEX releases_namespace ON helmq_worker.releases (namespace);

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

-- Ends p_namespace's claim so that any tenant's install may claim it again.
-- Refused (an exception, nothing changed) when the namespace is not claimed
-- (SQLSTATE P0002), holds a live release of any tenant (55006, the message
-- names them), or has a command not yet finished (55006: an install in
-- progress would claim or use it; wait and try again). Returns the released
-- claim as JSON {namespace, tenantId, claimedBy, claimedAt, releasedAt,
-- releasedBy}.
--
-- Concurrency: the claim's row is locked FOR UPDATE first. An install
-- starting in the namespace locks that row FOR KEY SHARE in command_start
-- (below), so the two serialise: a release that locked first sees the
-- install's command (recorded 'received' at command_begin, before its start)
-- and is refused; an install that started first holds its lock until its
-- start commits, and the release then sees it 'running' and is refused. A
-- start that comes after a release committed finds no row, and claims the
-- namespace afresh.
--
-- The in-progress check scans the unfinished commands through the ledger's
-- keys (tenantId/namespace/releaseName): an operator's rare action, so the
-- per-command path gets no index for it.
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

-- Only the owner of schema helmq_worker (the worker's user) and superusers
-- release claims.
REVOKE ALL ON FUNCTION helmq_worker.namespace_release(text, text) FROM PUBLIC;

-- command_start (0010's signature) with the claim's row lock: the install's
-- claim is read FOR KEY SHARE, which a release's FOR UPDATE waits for (and
-- the other way round). A row deleted by a release that committed meanwhile
-- is not found: the loop claims the namespace again. Otherwise as in 0010.
CREATE OR REPLACE FUNCTION helmq_worker.command_start(
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

-- --- who owns a namespace, for readers of the projection ------------------------------

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

-- The claims the caller may see, of one tenant (null: every tenant), by name.
CREATE FUNCTION helmq.namespaces_list(p_tenant_id uuid) RETURNS json LANGUAGE sql STABLE AS $$
    SELECT COALESCE(json_agg(helmq.namespace_json(c) ORDER BY c.namespace), '[]')
      FROM helmq.namespace_claims c WHERE p_tenant_id IS NULL OR c.tenant_id = p_tenant_id;
$$;

REVOKE ALL ON helmq.namespace_claims FROM PUBLIC;
REVOKE ALL ON FUNCTION helmq.namespace_json(helmq.namespace_claims), helmq.namespaces_list(uuid) FROM PUBLIC;
GRANT SELECT ON helmq.namespace_claims TO helmq_reader, helmq_admin;
GRANT EXECUTE ON FUNCTION helmq.namespace_json(helmq.namespace_claims), helmq.namespaces_list(uuid)
    TO helmq_reader, helmq_admin;
