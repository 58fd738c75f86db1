-- 0015: a finished rebuild forgets the parked records it has made obsolete.
--
-- helmq-projector rebuild empties the projection and replays the events topic
-- from the beginning. A record parked before (refused by PostgreSQL, or not
-- decodable) is met again: it is parked again (its row updated, times_parked
-- + 1) if it is still refused, or applied if the cause was fixed meanwhile (a
-- constraint or trigger corrected by the operator). In the second case its
-- old row stayed behind and told the operator about a record the projection
-- now holds. A rebuild now notes when it began, and when it reaches the end of
-- every partition it deletes the rows of that topic not parked again since
-- then. A rebuild that stops before the end deletes nothing.

-- Empties the projection for a rebuild and returns the moment it began (the
-- clock, not the transaction's start: park_event's parked_at is now() of
-- later transactions, always after it).
CREATE FUNCTION helmq.rebuild_begin() RETURNS timestamptz LANGUAGE plpgsql AS $$
BEGIN
    PERFORM helmq.truncate_projection();
    RETURN clock_timestamp();
END $$;

-- After a finished rebuild of p_topic begun at p_began: deletes the parked
-- rows of that topic the rebuild did not park again. Returns how many.
CREATE FUNCTION helmq.rebuild_finish(p_topic text, p_began timestamptz) RETURNS bigint
LANGUAGE sql AS $$
    WITH gone AS (
        DELETE FROM helmq.parked_events WHERE topic = p_topic AND parked_at < p_began RETURNING 1
    )
    SELECT count(*) FROM gone;
$$;

REVOKE ALL ON FUNCTION helmq.rebuild_begin() FROM PUBLIC;
REVOKE ALL ON FUNCTION helmq.rebuild_finish(text, timestamptz) FROM PUBLIC;
