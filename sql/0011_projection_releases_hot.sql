-- 0011: a release's row is updated in place (HOT) when an event changes it.
--
-- Measured (docs/PERFORMANCE.md, auto_explain of the projector's batches):
-- the UPDATE of helmq.releases was the largest single part of applying a
-- batch. No update of a release's row could be HOT, because releases_one_live's
-- predicate reads revision, which every upgrade changes: each update wrote a
-- new entry into all three indexes. The predicate now reads one stored
-- generated column, live, whose value an upgrade, a rollback or a failure of a
-- live release does not change; only an uninstall (or a first revision) does.
-- The live slot means exactly what it meant: not uninstalled and revision > 0.
-- fillfactor leaves room in each page for the new row versions HOT needs.
--
-- A new migration rather than an edit of 0002: migrate.c applies each file
-- once, by name. Adding a stored generated column rewrites the table once.

ALTER TABLE helmq.releases SET (fillfactor = 75);
ALTER TABLE helmq.releases
    ADD COLUMN live boolean GENERATED ALWAYS AS (status <> 'uninstalled' AND revision > 0) STORED;
CREATE UNIQUE INDEX releases_one_live_0011 ON helmq.releases (tenant_id, namespace, release_name) WHERE live;
DROP INDEX helmq.releases_one_live;
ALTER INDEX helmq.releases_one_live_0011 RENAME TO releases_one_live;
