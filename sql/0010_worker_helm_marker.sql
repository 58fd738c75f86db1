-- 0010: the start records where helm will run and its deadline.
--
-- Every helm process of a command carries HELMQ_COMMAND_ID=<commandId> in
-- its environment (worker/executor.c), so a worker reconciling the command
-- after a crash finds it by that, on the host the ledger names, and waits
-- for it until its deadline. Recording both with the start, before helm
-- runs, leaves no window in which a helm runs that the ledger does not know
-- where to look for; and the operation's helm no longer needs a statement
-- of its own (command_helm_started stays for later helm steps of a command,
-- whose deadlines differ, and for workers not yet upgraded). The pid columns
-- stay null for the operation's helm.
--
-- A new migration rather than an edit of 0003: migrate.c applies each file
-- once, by name, so databases that already have 0001-0009 only get what is
-- here. The six-argument command_start of 0003 stays for workers not yet
-- upgraded.

CREATE FUNCTION helmq_worker.command_start(
    p_command_id uuid, p_release_id uuid, p_base_revision integer, p_base_deployed integer,
    p_claim_tenant uuid, p_claim_namespace text, p_helm_host text, p_helm_deadline_ms bigint)
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
           base_revision = p_base_revision, base_deployed = p_base_deployed,
           helm_pid = NULL, helm_pgid = NULL, helm_start_ticks = NULL,
           helm_host = p_helm_host, helm_deadline_ms = p_helm_deadline_ms
     WHERE command_id = p_command_id AND state <> 'finished';
    RETURN QUERY SELECT true, v_owner;
END $$;
