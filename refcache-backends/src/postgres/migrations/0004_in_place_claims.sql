-- refcache schema version 4: claims and lease renewals update their row in place.

-- A claim (`owner`, `lease_until`) and a lease renewal (`lease_until`) change no indexed column any more, so that
-- PostgreSQL can update the row in place (a HOT update: no new entry in any of the table's indexes, and less WAL),
-- given room on the row's page: pages are now filled to 70% (new pages; old ones as they are rewritten).
-- The lease index goes: the reaper and the check for tasks of a lost process scan the tasks in flight through the
-- single-flight index (`tasks_in_flight`, whose predicate theirs implies). The `finished_at` index goes too: only
-- `cleanup`, an occasional administrative call, selected by it.
DROP INDEX IF EXISTS {schema}.tasks_leases;
DROP INDEX IF EXISTS {schema}.tasks_finished;
ALTER TABLE {schema}.tasks SET (fillfactor = 70);
