-- refcache schema version 5: the upkeep's scans for lost leases read the tasks that hold one, not the queue.

-- The reaper (running tasks of workers whose lease ran out) and the check for a lost `local` process's tasks (its
-- tasks in flight, pending ones too: they wait in its scheduler) read this index: the tasks running, waiting for
-- input, or held pending by a `local` process. Queued pending tasks, the bulk of a backlog, are not in it, so the
-- check every `lease / 3` no longer reads the whole single-flight index (and its dead entries). On `seq`, which
-- neither a claim nor a lease renewal changes, so that both stay in-place (HOT) updates; a start is not one anyway
-- (it changes `status`).
CREATE INDEX IF NOT EXISTS tasks_leased ON {schema}.tasks (seq)
    WHERE status IN ('processing', 'input_required') OR (status = 'pending' AND NOT queued);
