-- 0003: an install claims its namespace when it starts, not when it finishes.
--
-- A new migration rather than an edit of 0001: migrate.c applies each file
-- once, by name, so databases that already have 0001 only get what is here.

-- Step 2 with the namespace claim: an install claims its namespace for its
-- tenant atomically before helm runs (INSERT ... ON CONFLICT DO NOTHING, then
-- read the owner: concurrent claims serialise on the primary key, so of two
-- tenants racing into a fresh namespace exactly one gets it). Returns the
-- namespace's owner; when that is not p_claim_tenant the command is not
-- started (the caller rejects it NAMESPACE_OWNED). The claim stays when the
-- install then fails: helm may have created the namespace and left a failed
-- release in it, which is the tenant's. Returns started false (and the
-- owner) when refused. p_claim_namespace null: no claim
-- (upgrade, rollback, uninstall act on a release whose install claimed it).
-- The four-argument command_start of 0001 stays for workers not yet upgraded.
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
