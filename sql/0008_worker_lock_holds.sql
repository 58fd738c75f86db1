-- 0008: releasing a release key's lock releases every hold of it.
--
-- The worker sends its ledger statements in groups, one transaction per group
-- (worker/lib/db.c). When a statement of a group fails, the group rolls back
-- and its other statements run again on the same session. A session-level
-- advisory lock is not transactional: a command_begin of the rolled-back run
-- keeps the hold it took, and its second run takes another. Unlocking once
-- would leave the key locked until the worker's session ends. Advisory locks
-- on a key are only ever taken for the one command running on it, so
-- releasing means releasing every hold.
--
-- The function bodies of 0001 stay as they were: command_finish is renamed
-- and called by its replacement.

-- Releases every hold this session has on the key's lock; true when it held one.
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

ALTER FUNCTION helmq_worker.command_finish(uuid, text, text, text, bytea, json, json, uuid, text)
    RENAME TO command_finish_once;

CREATE FUNCTION helmq_worker.command_finish(
    p_command_id uuid, p_key text, p_outcome text, p_error_code text, p_terminal_event bytea,
    p_release json, p_revisions json, p_claim_tenant uuid, p_claim_namespace text)
RETURNS void LANGUAGE plpgsql
    SET client_min_messages = error  -- a finish run again finds the lock released and would warn
AS $$
BEGIN
    PERFORM helmq_worker.command_finish_once(p_command_id, p_key, p_outcome, p_error_code, p_terminal_event,
                                             p_release, p_revisions, p_claim_tenant, p_claim_namespace);
    PERFORM helmq_worker.key_release(p_key);
END $$;

CREATE OR REPLACE FUNCTION helmq_worker.key_unlock(p_key text) RETURNS boolean LANGUAGE sql AS $$
    SELECT helmq_worker.key_release(p_key);
$$;
