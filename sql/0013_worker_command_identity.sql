-- 0013: one command per commandId, whatever its key; a redelivered finished
-- command is told whether its release has moved on since.
--
-- What was wrong with command_begin (0001): it looked the commandId up, and
-- when the row was not finished it took the lock of *its own* key and went
-- on, never comparing the row's key with its own. Three installs with one
-- commandId on three keys each got their own key's lock: on one connection
-- (one transaction for a group of statements) the second and third found the
-- first's row 'received' and ran helm too; on two connections the second's
-- INSERT failed on the primary key, and its retry found the first's row
-- 'running' (reconciled a release it never touched) or 'finished' (and
-- republished another tenant's outcome under its own key).
--
-- Now the row records the command's content digest (a sha256 of its
-- canonical content but requestedAt, computed by the worker) and a command
-- is the row's own only with the same key, operation and digest; anything
-- else is a conflict, answered IDEMPOTENCY_CONFLICT by the worker and never
-- run. The INSERT is ON CONFLICT DO NOTHING followed by a read: a concurrent
-- transaction inserting the same commandId (another connection, another
-- worker) makes it wait for that one's outcome, then read its row, so of
-- any number of racing commands exactly one owns the commandId.
--
-- A finished command is answered under its key's lock, with the release's
-- registry row and moved_on: whether the registry changed after the command
-- finished. The worker republishes the recorded terminal event only when it
-- has not; otherwise it publishes the command's outcome with the release's
-- current state, so that a stale state never becomes the newest event on the
-- key.
--
-- A new migration rather than edits: migrate.c applies each file once, by
-- name, so databases that already have 0001-0012 only get what is here.

ALTER TABLE helmq_worker.commands
    ADD COLUMN content_digest text;  -- sha256 of the command's canonical content but requestedAt (null: before 0013)

COMMENT ON COLUMN helmq_worker.commands.content_digest IS
    'sha256 (hex) of the command''s canonical content without requestedAt; another command with this commandId '
    'but another key, operation or digest is an idempotency conflict';

-- Whether a command (key, operation, digest) is not the one row c recorded
-- for its commandId. A row from before 0013 has no digest: its key and
-- operation decide.
CREATE FUNCTION helmq_worker.command_conflicts(
    c helmq_worker.commands, p_key text, p_operation text, p_digest text)
RETURNS boolean LANGUAGE sql IMMUTABLE AS $$
    SELECT c.release_key IS DISTINCT FROM p_key OR c.operation IS DISTINCT FROM p_operation
        OR (c.content_digest IS NOT NULL AND p_digest IS NOT NULL AND c.content_digest <> p_digest);
$$;

-- Step 1, with the command's identity. Returns state:
--   'conflict'  the commandId belongs to another command (nothing recorded, no lock held);
--   'locked'    another worker holds the key's lock (try again);
--   'finished'  its terminal event, the key's registry row, moved_on (no lock held);
--   'received' or 'running'  as in 0001 (the key's lock is held).
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
    'see sql/0013 for the states it returns';

-- 0001's signature, for workers not yet upgraded: the same checks without a
-- digest. Such a worker does not know 'conflict': it is told 'locked', and
-- retries until a new worker takes the partition over and rejects the
-- command, rather than running it.
CREATE OR REPLACE FUNCTION helmq_worker.command_begin(
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
