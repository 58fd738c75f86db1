-- 0004: the worker's ledger records the helm process a command started.
--
-- A new migration rather than an edit of 0001: migrate.c applies each file
-- once, by name, so databases that already have 0001 only get what is here.

-- The helm process a running command last started (its operation, atomic
-- rollback or unlock; not helm status). After a crash the worker that
-- reconciles the command waits for that process group to exit (and stops it
-- at its deadline) before it asks helm for the release's state, so that the
-- orphaned helm and the reconciliation never both act on the release.
ALTER TABLE helmq_worker.commands
    ADD COLUMN helm_pid         integer,        -- the helm child's pid
    ADD COLUMN helm_pgid        integer,        -- its process group (helm runs in its own session)
    ADD COLUMN helm_start_ticks bigint,         -- its start time (/proc/PID/stat field 22): guards against pid reuse
    ADD COLUMN helm_host        text,           -- where it ran: hostname, boot id, pid namespace
    ADD COLUMN helm_deadline_ms bigint;         -- when the worker would SIGTERM it (Unix ms, that host's clock)

-- Records the helm process of a running command (best effort: called after
-- helm started; a crash in between leaves the previous value).
CREATE FUNCTION helmq_worker.command_helm_started(
    p_command_id uuid, p_pid integer, p_pgid integer, p_start_ticks bigint, p_host text,
    p_deadline_ms bigint)
RETURNS void LANGUAGE sql AS $$
    UPDATE helmq_worker.commands
       SET helm_pid = p_pid, helm_pgid = p_pgid, helm_start_ticks = p_start_ticks,
           helm_host = p_host, helm_deadline_ms = p_deadline_ms
     WHERE command_id = p_command_id AND state = 'running';
$$;
