-- refcache schema version 1: task records, finished values, counters, worker gauges, the dead-letter view.
-- `{schema}` is replaced by the configured schema name (validated: a-z 0-9 _) before this runs.

-- One row per task. `info` and `spec` are refcache's JSON text (TaskInfo, TaskSpec); the other columns are what
-- queries select, order and lock on. `status` is authoritative and always written together with `info`.
CREATE TABLE {schema}.tasks (
    ref_id         text PRIMARY KEY,
    cache_key      text NOT NULL,
    status         text NOT NULL
                   CHECK (status IN ('pending', 'processing', 'complete', 'failed', 'cancelled')),
    info           text NOT NULL,
    spec           text NOT NULL,
    task_name      text NOT NULL,
    namespace      text NOT NULL,
    session_id     text,
    priority       integer NOT NULL DEFAULT 0,
    seq            bigint GENERATED ALWAYS AS IDENTITY,
    created_ms     bigint NOT NULL,
    -- true: worker processes claim it and run it by name; false: the process that submitted it runs it.
    queued         boolean NOT NULL,
    -- The process holding it (local: its submitter; workers: the worker that claimed it) and until when.
    owner          text,
    lease_until    timestamptz,
    deliveries     integer NOT NULL DEFAULT 0,
    finished_at    timestamptz,
    -- NULL while in flight; a finished record goes at this time (with its value).
    expires_at     timestamptz,
    -- Set when the task failed `worker lost` after max_deliveries: the dead-letter view shows it.
    dead_at        timestamptz,
    -- Reserved for input requests (a question the task asks, and its answer): a later version fills them.
    input_request  text,
    input_response text
);

-- Single-flight: at most one task in flight per cache key, enforced by the database.
CREATE UNIQUE INDEX tasks_in_flight ON {schema}.tasks (cache_key)
    WHERE status IN ('pending', 'processing');
-- The queue, in start order: higher priority first, FIFO within one.
CREATE INDEX tasks_queue ON {schema}.tasks (priority DESC, seq) WHERE status = 'pending';
-- The oldest waiting task (a cheap upper bound of the queue's length, for max_queued).
CREATE INDEX tasks_pending_seq ON {schema}.tasks (seq) WHERE status = 'pending';
-- Leases of tasks in flight (renewal by owner, takeover and reaping by expiry).
CREATE INDEX tasks_leases ON {schema}.tasks (lease_until) WHERE status IN ('pending', 'processing');
CREATE INDEX tasks_created ON {schema}.tasks (created_ms DESC);
CREATE INDEX tasks_session ON {schema}.tasks (session_id) WHERE session_id IS NOT NULL;
CREATE INDEX tasks_expires ON {schema}.tasks (expires_at) WHERE expires_at IS NOT NULL;
CREATE INDEX tasks_finished ON {schema}.tasks (finished_at) WHERE finished_at IS NOT NULL;

-- Finished values, one per task. `value` is the exact JSON text the task returned
-- (text, never jsonb: jsonb reorders keys and rewrites numbers); `meta` is the rest of the stored value. A value
-- goes with its record (ON DELETE CASCADE), in the same transaction.
CREATE TABLE {schema}.task_values (
    ref_id     text PRIMARY KEY REFERENCES {schema}.tasks (ref_id) ON DELETE CASCADE,
    cache_key  text NOT NULL,
    value      text NOT NULL,
    meta       text NOT NULL,
    expires_at timestamptz NOT NULL
);
CREATE INDEX task_values_expires ON {schema}.task_values (expires_at);
-- Lookups by key: the live value of a call (several may exist for a while: an expired one not yet swept, and the
-- value of the call run again since).
CREATE INDEX task_values_key ON {schema}.task_values (cache_key, expires_at DESC);

-- Cluster-wide counters, sharded so that concurrent transactions do not queue on one row.
CREATE TABLE {schema}.counters (
    name  text NOT NULL,
    shard integer NOT NULL,
    n     bigint NOT NULL,
    PRIMARY KEY (name, shard)
);

-- Each live process's gauges, refreshed every lease / 3.
CREATE TABLE {schema}.processes (
    consumer text PRIMARY KEY,
    running  bigint NOT NULL,
    capacity bigint NOT NULL,
    seen_at  timestamptz NOT NULL
);

-- Tasks that failed `worker lost` after max_deliveries, newest first by dead_at. They stay as long as their
-- record does (task_ttl).
CREATE VIEW {schema}.dead_letters AS
    SELECT ref_id, task_name, namespace, deliveries, dead_at, info
    FROM {schema}.tasks
    WHERE dead_at IS NOT NULL;
