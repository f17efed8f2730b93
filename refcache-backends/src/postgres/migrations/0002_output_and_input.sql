-- refcache schema version 2: task output logs, and input requests (the `input_required` status).

-- A task that asks for input is in flight: the status joins the check, the single-flight index (an identical call
-- joins a task that waits for an answer) and the lease index (its lease is renewed while it waits, and taken over
-- when its process is gone).
ALTER TABLE {schema}.tasks DROP CONSTRAINT tasks_status_check;
ALTER TABLE {schema}.tasks ADD CONSTRAINT tasks_status_check
    CHECK (status IN ('pending', 'processing', 'input_required', 'complete', 'failed', 'cancelled'));
DROP INDEX {schema}.tasks_in_flight;
CREATE UNIQUE INDEX tasks_in_flight ON {schema}.tasks (cache_key)
    WHERE status IN ('pending', 'processing', 'input_required');
DROP INDEX {schema}.tasks_leases;
CREATE INDEX tasks_leases ON {schema}.tasks (lease_until)
    WHERE status IN ('pending', 'processing', 'input_required');

-- The question a task waits on: `input_key` names it (an answer must name it too), `input_request` is the question
-- (InputRequest as JSON text), shown while the status is `input_required`; `input_response` is the answer, set by
-- the replica that took it, in the same UPDATE that moves the status back to `processing`.
ALTER TABLE {schema}.tasks ADD COLUMN input_key text;

-- A task's output log: the newest bytes it wrote, at most its cap, in chunks as its process flushed them.
-- `start_offset` counts every byte the task ever wrote, so offsets never move backwards; the chunks held are
-- contiguous, and the oldest is cut to the cap by the flush that passes it. The log goes with its record
-- (ON DELETE CASCADE): delete, cleanup, end of session, TTL and the sweep drop it in the same statement.
CREATE TABLE {schema}.task_output (
    ref_id       text NOT NULL REFERENCES {schema}.tasks (ref_id) ON DELETE CASCADE,
    start_offset bigint NOT NULL,
    bytes        bytea NOT NULL,
    PRIMARY KEY (ref_id, start_offset)
);
