//! The schema: versioned migrations shipped in the crate, applied at first use, and every statement the backend
//! runs, written out once per schema name.
//!
//! Migrations run in one transaction under a transaction-level advisory lock keyed by the schema name, so that two
//! replicas starting together apply them once. The applied version is in `<schema>.schema_version`; a database
//! whose version is newer than this binary's is refused with [`SchemaError::TooNew`] and never altered.

use tokio_postgres::Client;

/// The migrations, in order: `(version, SQL)`, the SQL with `{schema}` for the quoted schema name.
const MIGRATIONS: &[(i32, &str)] = &[
    (1, include_str!("migrations/0001_tasks.sql")),
    (2, include_str!("migrations/0002_output_and_input.sql")),
    (3, include_str!("migrations/0003_one_statement_submit.sql")),
    (4, include_str!("migrations/0004_in_place_claims.sql")),
    (5, include_str!("migrations/0005_leased_index.sql")),
];

/// The schema version this binary writes and reads.
pub const SCHEMA_VERSION: i32 = 5;

/// Why the schema could not be made ready.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SchemaError {
    /// The database's schema was made by a newer refcache.
    #[error(
        "the refcache tables in schema `{schema}` are at version {found}, newer than this binary's {supported}: \
         run a refcache at least as new as the one that migrated them (the schema was left unchanged), or use \
         another schema (?schema=...)"
    )]
    TooNew {
        /// The schema.
        schema: String,
        /// Its version.
        found: i32,
        /// This binary's.
        supported: i32,
    },
    /// The database answered with an error.
    #[error(transparent)]
    Db(#[from] tokio_postgres::Error),
}

/// The advisory lock key of a schema's migrations (FNV-1a of its name, so that each schema has its own).
fn lock_key(schema: &str) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in b"refcache.migrate.".iter().chain(schema.as_bytes()) {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    i64::from_ne_bytes(hash.to_ne_bytes())
}

/// Brings `schema` to [`SCHEMA_VERSION`]: creates it and its tables if missing, applies the migrations it lacks.
/// Answers the version found before.
pub(crate) async fn migrate(client: &mut Client, schema: &str) -> Result<i32, SchemaError> {
    let quoted = quote(schema);
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&lock_key(schema)])
        .await?;
    let exists: bool = tx
        .query_one(
            "SELECT to_regclass($1) IS NOT NULL",
            &[&format!("{quoted}.schema_version")],
        )
        .await?
        .get(0);
    let found: i32 = if exists {
        tx.query_one(
            &format!("SELECT coalesce(max(version), 0) FROM {quoted}.schema_version"),
            &[],
        )
        .await?
        .get(0)
    } else {
        0
    };
    if found > SCHEMA_VERSION {
        tx.rollback().await?;
        return Err(SchemaError::TooNew {
            schema: schema.to_owned(),
            found,
            supported: SCHEMA_VERSION,
        });
    }
    if found == SCHEMA_VERSION {
        tx.commit().await?;
        return Ok(found);
    }
    tx.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS {quoted};
         CREATE TABLE IF NOT EXISTS {quoted}.schema_version (
             version integer PRIMARY KEY,
             applied_at timestamptz NOT NULL DEFAULT now()
         );"
    ))
    .await?;
    for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > found) {
        tx.batch_execute(&sql.replace("{schema}", &quoted)).await?;
        tx.execute(
            &format!("INSERT INTO {quoted}.schema_version (version) VALUES ($1)"),
            &[version],
        )
        .await?;
    }
    tx.commit().await?;
    tracing::info!(
        schema,
        from = found,
        to = SCHEMA_VERSION,
        "refcache: Postgres schema migrated"
    );
    Ok(found)
}

/// The schema name as an SQL identifier (validated to `[a-z0-9_]`, so quoting is all it takes).
pub(crate) fn quote(schema: &str) -> String {
    format!("\"{schema}\"")
}

/// Every statement, for one schema. `$chan` is the notification channel, passed as a parameter to `pg_notify`.
pub(crate) struct Sql {
    /// `LISTEN "<channel>"`.
    pub(crate) listen: String,
    /// The notification channel.
    pub(crate) channel: String,
    pub(crate) insert_batch: String,
    /// Which of several tasks have a row, in a durable commit (see `Inner::made_durable`).
    pub(crate) confirm: String,
    pub(crate) oldest_pending: String,
    pub(crate) count_pending: String,
    pub(crate) withdraw: String,
    pub(crate) join: String,
    pub(crate) in_flight: String,
    pub(crate) value_by_key: String,
    pub(crate) value_by_ref: String,
    /// Whether a live value is there (the record-only read: access is decided before a value is read).
    pub(crate) value_exists: String,
    pub(crate) record: String,
    pub(crate) info_only: String,
    pub(crate) status: String,
    /// The records of several tasks (for `wait`), each with its live value when complete and small enough.
    pub(crate) read_batch: String,
    pub(crate) spec_info: String,
    pub(crate) transition: String,
    /// The ends of several held tasks (each compared and set on its own), with their values, in one statement.
    pub(crate) end_batch: String,
    /// The starts of several held tasks (each compared and set on its own), in one statement.
    pub(crate) start_batch: String,
    pub(crate) start_refused: String,
    pub(crate) renew: String,
    pub(crate) fetch: String,
    pub(crate) reap: String,
    pub(crate) expired_local: String,
    pub(crate) sweep_records: String,
    pub(crate) sweep_values: String,
    pub(crate) delete: String,
    pub(crate) end_session: String,
    pub(crate) cleanup: String,
    pub(crate) retry: String,
    pub(crate) count: String,
    /// Several hints in one statement.
    pub(crate) notify_many: String,
    pub(crate) list: String,
    pub(crate) by_status: String,
    pub(crate) value_bytes: String,
    pub(crate) record_bytes: String,
    pub(crate) evict_records: String,
    pub(crate) counters: String,
    pub(crate) gauge: String,
    pub(crate) gauges: String,
    pub(crate) forget_processes: String,
    pub(crate) dead_letters: String,
    pub(crate) statuses: String,
    /// Appends a flushed batch of output and cuts the log to its cap, in one statement.
    pub(crate) output_append: String,
    /// A window of the output log, with its bounds and the task's status.
    pub(crate) output_read: String,
    pub(crate) ask: String,
    pub(crate) respond: String,
    pub(crate) input_answer: String,
    pub(crate) input_close: String,
}

/// The statuses of a task in flight (the single-flight index's predicate).
const IN_FLIGHT: &str = "('pending', 'processing', 'input_required')";

/// The statuses of a finished task. The batched starts, ends and renewals test their rows with `status NOT IN` these
/// (the same rows, given the status check constraint), never with `status IN` the others: that form implies the
/// predicate of a partial index (`tasks_in_flight`, `tasks_leased`), and once `ANALYZE` had seen how few rows are in
/// flight, the planner scanned that whole index (every entry, dead ones too) for the `UPDATE`'s rows instead of
/// looking each up by its ref: a start's statement went from 75 to 1,368 shared buffers in five batches of 2,000
/// after an `ANALYZE` (REFCACHE_PG_BENCH_EACH with REFCACHE_PG_BENCH_ANALYZE), which is what grew during
/// criterion's long runs, where autovacuum analyzes.
const FINISHED: &str = "('complete', 'failed', 'cancelled')";

/// The tasks that hold a lease the upkeep checks: running, waiting for input, or held pending by a `local` process
/// (the predicate of the `tasks_leased` index, schema version 5, written out the same way so that the planner sees
/// that a query's `WHERE` implies it).
const LEASED: &str =
    "(status IN ('processing', 'input_required') OR (status = 'pending' AND NOT queued))";

/// What a finished record `t` weighs against `max_record_bytes`: a fixed cost, its record's JSON (error, retry
/// history, messages) and its spec (the arguments), in `bigint` (two texts of up to 1 GiB overflow `integer`).
const WEIGHT: &str = "(512::bigint + octet_length(t.info) + octet_length(t.spec))";

/// A pending task's place in the queue (1-based), as a column of a query over `tasks t`.
const QUEUE_POSITION: &str = "CASE WHEN t.status = 'pending' THEN (
        SELECT count(*) + 1 FROM {s}.tasks q
        WHERE q.status = 'pending' AND (q.priority > t.priority OR (q.priority = t.priority AND q.seq < t.seq))
    ) END";

/// A record that is still there: not expired, and if complete, with its value still there.
const LIVE: &str = "(t.expires_at IS NULL OR t.expires_at > now())
    AND (t.status <> 'complete' OR EXISTS (
        SELECT 1 FROM {s}.task_values v WHERE v.ref_id = t.ref_id AND v.expires_at > now()))";

impl Sql {
    pub(crate) fn new(schema: &str) -> Self {
        let s = quote(schema);
        let sub = |text: &str| {
            text.replace("{queue_position}", QUEUE_POSITION)
                .replace("{in_flight}", IN_FLIGHT)
                .replace("{finished}", FINISHED)
                .replace("{leased}", LEASED)
                .replace("{weight}", WEIGHT)
                .replace("{live}", LIVE)
                .replace("{s}", &s)
        };
        let channel = format!("refcache.{schema}");
        Self {
            listen: format!("LISTEN \"{channel}\""),
            channel,
            // Arrays, one element per submission: $1 refs, $2 keys, $3 infos, $4 specs, $5 names, $6 namespaces,
            // $7 sessions, $8 priorities, $9 created_ms, $10 queued, $11 owners (local) or NULL, $13 started; $12 lease
            // ms, $14 the counter shard. A row `started` (held here on a run slot reserved for it: see
            // `Inner::submit`) goes in `processing` with its first delivery counted, as its start would have
            // written it, and counts an execution.
            // Answers, for each row inserted, its ref and sequence number, and a live value for the key from
            // another execution (one that landed while the insert waited on the finishing task's row:
            // `landed_value` reads it with a snapshot taken after the insert; the new task's own may be there
            // already, a worker having run it). A row not answered was refused: its key is in flight. The rows go
            // in key order, so that two statements inserting the same keys wait on each other in one order (never
            // a deadlock); submissions that share a statement are queued in that order. (Their `queued` hint is sent
            // after the commit: see `notify_after`.)
            insert_batch: sub("WITH b AS (
                    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                                         $7::text[], $8::integer[], $9::bigint[], $10::boolean[], $11::text[],
                                         $13::boolean[])
                        AS b (ref_id, cache_key, info, spec, task_name, namespace, session_id, priority, created_ms,
                              queued, owner, started)),
                ins AS (
                    INSERT INTO {s}.tasks (ref_id, cache_key, status, info, spec, task_name, namespace, session_id,
                                          priority, created_ms, queued, owner, lease_until, deliveries)
                    SELECT ref_id, cache_key, CASE WHEN started THEN 'processing' ELSE 'pending' END, info, spec,
                           task_name, namespace, session_id, priority, created_ms, queued, owner,
                           CASE WHEN owner IS NULL THEN NULL
                                ELSE now() + $12::bigint * interval '1 millisecond' END,
                           CASE WHEN started THEN 1 ELSE 0 END
                    FROM b ORDER BY cache_key, ref_id
                    ON CONFLICT (cache_key) WHERE status IN {in_flight} DO NOTHING
                    RETURNING ref_id, cache_key, seq, status),
                c AS (
                    INSERT INTO {s}.counters (name, shard, n)
                    SELECT 'executions', $14, count(*) FROM ins WHERE status = 'processing'
                    HAVING count(*) > 0
                    ON CONFLICT (name, shard) DO UPDATE SET n = counters.n + EXCLUDED.n)
                SELECT ref_id, seq, {s}.landed_value(cache_key, ref_id) FROM ins"),
            // $1 refs, $2 counter shard: the refs that have a row, answered by a durable commit. The rows it sees
            // were committed before it, so its commit's WAL flush covers theirs: once it answers, each ref it names
            // survives a server crash (a submission's insert commits asynchronously: see `Inner::made_durable`).
            // The counter's write is what makes it a durable commit: a statement that writes nothing commits
            // without a flush.
            confirm: sub("WITH c AS (
                    INSERT INTO {s}.counters (name, shard, n) VALUES ('confirmations', $2, 1)
                    ON CONFLICT (name, shard) DO UPDATE SET n = counters.n + 1)
                SELECT ref_id FROM {s}.tasks WHERE ref_id = ANY($1::text[])"),
            // The oldest waiting task's sequence number (read only when a process's lower bound of it says the
            // queue may be full).
            oldest_pending: sub("SELECT min(seq) FROM {s}.tasks WHERE status = 'pending'"),
            // $1 max_queued: how many wait, counted up to max_queued + 1.
            count_pending: sub("SELECT count(*) FROM (
                SELECT 1 FROM {s}.tasks WHERE status = 'pending' LIMIT $1::bigint + 1) q"),
            // $1 ref, $2 channel, $3 this process: takes back a submission that must not run (still pending, or
            // inserted started by this process for itself and not yet run: held here, a row is never withdrawn).
            withdraw: sub("WITH d AS (DELETE FROM {s}.tasks WHERE ref_id = $1
                    AND (status = 'pending' OR (status = 'processing' AND NOT queued AND owner = $3))
                    RETURNING ref_id, cache_key)
                SELECT cache_key, pg_notify($2, ref_id || ' drop ' || cache_key)::text FROM d"),
            // $1 key, $2 shard: the task in flight for the key, counted as a coalesced call.
            join: sub("WITH cur AS (
                    SELECT ref_id FROM {s}.tasks WHERE cache_key = $1 AND status IN {in_flight}),
                c AS (
                    INSERT INTO {s}.counters (name, shard, n) SELECT 'coalesced', $2, 1 FROM cur
                    ON CONFLICT (name, shard) DO UPDATE SET n = counters.n + 1)
                SELECT ref_id FROM cur"),
            in_flight: sub("SELECT ref_id FROM {s}.tasks WHERE cache_key = $1 AND status IN {in_flight}"),
            value_by_key: sub("SELECT ref_id, value, meta FROM {s}.task_values
                WHERE cache_key = $1 AND expires_at > now() ORDER BY expires_at DESC LIMIT 1"),
            value_by_ref: sub("SELECT value, meta FROM {s}.task_values WHERE ref_id = $1 AND expires_at > now()"),
            value_exists: sub("SELECT 1 FROM {s}.task_values WHERE ref_id = $1 AND expires_at > now()"),
            // The record without its value: status, info, key, queue position, question.
            record: sub("SELECT t.status, t.info, t.cache_key, {queue_position}, t.input_request
                FROM {s}.tasks t WHERE t.ref_id = $1 AND (t.expires_at IS NULL OR t.expires_at > now())"),
            status: sub("SELECT status FROM {s}.tasks WHERE ref_id = $1 AND (expires_at IS NULL OR expires_at > now())"),
            // $1 refs, $2 the largest value (its JSON text and the rest, in bytes) read along. For each record
            // there (not expired): status, info, key, question, whether a live value is there (complete), and that
            // value when it is no larger than $2 (a larger one is read on its own, or taken from the near cache).
            // A ref with no row has no record.
            //
            // The value is looked up per record, by its primary key (a `LATERAL` subquery with a `LIMIT`, which the
            // planner cannot turn back into a join of the two tables): as a plain `LEFT JOIN` the planner hashed
            // the records and scanned every live value (all of `task_values`) on every statement, so that a read
            // touched 285 shared buffers on a fresh table and 2,822 after 30,000 tasks (the bench's `EACH`
            // figures): the cost that grew with the tasks that went through.
            read_batch: sub("SELECT t.ref_id, t.status, t.info, t.cache_key, t.input_request, v.ref_id IS NOT NULL,
                    CASE WHEN v.bytes <= $2::bigint THEN v.value END,
                    CASE WHEN v.bytes <= $2::bigint THEN v.meta END
                FROM {s}.tasks t
                LEFT JOIN LATERAL (
                    SELECT v.ref_id, v.value, v.meta, octet_length(v.value)::bigint + octet_length(v.meta) AS bytes
                    FROM {s}.task_values v
                    WHERE v.ref_id = t.ref_id AND t.status = 'complete' AND v.expires_at > now()
                    LIMIT 1) v ON true
                WHERE t.ref_id = ANY($1::text[]) AND (t.expires_at IS NULL OR t.expires_at > now())"),
            info_only: sub("SELECT status, info, owner, deliveries, input_request FROM {s}.tasks WHERE ref_id = $1"),
            spec_info: sub("SELECT status, spec, info FROM {s}.tasks t WHERE t.ref_id = $1 AND {live}"),
            // $1 ref, $2 status, $3 info, $4 terminal, $5 record ttl ms, $6 from statuses, $7 owner or NULL,
            // $8 dead, $9 counter or '', $10 shard, $11 channel, $12 kind, $13 value text or NULL, $14 meta,
            // $15 value ttl ms, $16 notify in the statement (else the caller sends the hint after the commit). One
            // statement: the value row is inserted with the change that makes its task complete, or not at all.
            transition: sub("WITH u AS (
                    UPDATE {s}.tasks SET status = $2, info = $3,
                        owner = CASE WHEN $4 THEN NULL ELSE owner END,
                        lease_until = CASE WHEN $4 THEN NULL ELSE lease_until END,
                        finished_at = CASE WHEN $4 THEN now() END,
                        expires_at = CASE WHEN $4 THEN now() + $5::bigint * interval '1 millisecond' END,
                        dead_at = CASE WHEN $8 THEN now() ELSE dead_at END
                    WHERE ref_id = $1 AND status = ANY($6::text[]) AND ($7::text IS NULL OR owner = $7)
                    RETURNING ref_id, cache_key),
                c AS (
                    INSERT INTO {s}.counters (name, shard, n) SELECT $9, $10, 1 FROM u WHERE $9 <> ''
                    ON CONFLICT (name, shard) DO UPDATE SET n = counters.n + 1),
                v AS (
                    INSERT INTO {s}.task_values (ref_id, cache_key, value, meta, expires_at)
                    SELECT ref_id, cache_key, $13, $14, now() + $15::bigint * interval '1 millisecond'
                    FROM u WHERE $13::text IS NOT NULL)
                SELECT cache_key, CASE WHEN $16 THEN pg_notify($11, ref_id || ' ' || $12) END::text FROM u"),
            // The statements over several rows by ref (`end_batch`, `start_batch`, `renew`) lock them through the
            // primary key (`ref_id = ANY`) and test the status only in their UPDATE: with the status in the locking
            // SELECT, the planner took the single-flight index (whose predicate it implies, and which its statistics
            // say is small) and scanned every task in flight, and the dead entries of that index, on every
            // statement: 6.7 to 10.9 ms executing per task once a few tens of thousands of tasks had gone through.
            // Arrays, one element per end: $1 refs, $2 statuses, $3 infos, $4 record TTLs ms, $5 values (NULL: none),
            // $6 metas, $7 value TTLs ms; $8 the owner. Each row ends only from `processing` or `input_required`
            // while $8 owns it; the rows are locked in ref order (as `renew` locks them), so that two statements
            // over the same rows never deadlock. Answers the refs that ended. (Their `end` hints are sent after the
            // commit: see `notify_after`.)
            end_batch: sub("WITH b AS (
                    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[], $6::text[],
                                         $7::bigint[])
                        AS b (ref_id, status, info, record_ttl, value, meta, value_ttl)),
                l AS (
                    SELECT t.ref_id FROM {s}.tasks t
                    WHERE t.ref_id = ANY($1::text[]) AND t.owner = $8
                    ORDER BY t.ref_id FOR UPDATE OF t),
                u AS (
                    UPDATE {s}.tasks t SET status = b.status, info = b.info, owner = NULL, lease_until = NULL,
                        finished_at = now(), expires_at = now() + b.record_ttl * interval '1 millisecond'
                    FROM l, b
                    WHERE t.ref_id = l.ref_id AND b.ref_id = l.ref_id
                      AND t.status NOT IN ('pending', 'complete', 'failed', 'cancelled') AND t.owner = $8
                    RETURNING t.ref_id, t.cache_key),
                v AS (
                    INSERT INTO {s}.task_values (ref_id, cache_key, value, meta, expires_at)
                    SELECT u.ref_id, u.cache_key, b.value, b.meta, now() + b.value_ttl * interval '1 millisecond'
                    FROM u JOIN b ON b.ref_id = u.ref_id WHERE b.value IS NOT NULL)
                SELECT ref_id FROM u"),
            // Arrays, one element per start: $1 refs, $2 infos; $3 the owner, $4 lease ms, $5 max deliveries, $6
            // the counter shard. Each row starts only while $3 owns it, in flight, with deliveries left; the rows
            // are locked in ref order (as `renew` and `end_batch` lock them). Answers each ref started and its
            // deliveries; the executions counter goes up by how many started. No `NOTIFY` here: a transaction
            // that notifies takes the database's notification lock at its commit, and concurrent starts queued on
            // it; the `start` hints are sent after the commit instead (see `notify_after`).
            start_batch: sub("WITH b AS (
                    SELECT * FROM unnest($1::text[], $2::text[]) AS b (ref_id, info)),
                l AS (
                    SELECT t.ref_id FROM {s}.tasks t
                    WHERE t.ref_id = ANY($1::text[]) AND t.owner = $3
                    ORDER BY t.ref_id FOR UPDATE OF t),
                u AS (
                    UPDATE {s}.tasks t SET status = 'processing', info = b.info, deliveries = t.deliveries + 1,
                        input_key = NULL, input_request = NULL, input_response = NULL,
                        lease_until = now() + $4::bigint * interval '1 millisecond'
                    FROM l, b
                    WHERE t.ref_id = l.ref_id AND b.ref_id = l.ref_id
                      AND t.owner = $3 AND t.status NOT IN {finished} AND t.deliveries < $5
                    RETURNING t.ref_id, t.deliveries),
                c AS (
                    INSERT INTO {s}.counters (name, shard, n) SELECT 'executions', $6, count(*) FROM u
                    HAVING count(*) > 0
                    ON CONFLICT (name, shard) DO UPDATE SET n = counters.n + EXCLUDED.n)
                SELECT ref_id, deliveries FROM u"),
            start_refused: sub("SELECT status, owner, deliveries FROM {s}.tasks WHERE ref_id = $1"),
            // $1 owner, $2 lease ms, $3 refs. Answers the refs renewed: a held task missing from them is finished,
            // taken over, or gone (deleted, or its submission lost to a crash), and stops here.
            // The rows are locked in ref order, as `start_batch` and `end_batch` lock them, and waited for, never
            // skipped: a task that reports progress or writes output all the time has its row locked most of the
            // time (a progress `transition` until its flush; the output insert's foreign-key check), and skipping
            // it period after period let its lease run out, so it was taken over (workers) or failed as lost
            // (local) while it ran. `FOR NO KEY UPDATE`, the lock an UPDATE of no key column takes anyway, does not
            // wait for the output insert's `FOR KEY SHARE`.
            renew: sub("WITH l AS (
                    SELECT ref_id FROM {s}.tasks
                    WHERE owner = $1 AND ref_id = ANY($3::text[])
                    ORDER BY ref_id FOR NO KEY UPDATE)
                UPDATE {s}.tasks t SET lease_until = now() + $2::bigint * interval '1 millisecond'
                FROM l WHERE t.ref_id = l.ref_id AND t.owner = $1 AND t.status NOT IN {finished}
                RETURNING t.ref_id"),
            // $1 owner, $2 how many, $3 lease ms.
            fetch: sub("WITH picked AS (
                    SELECT ref_id FROM {s}.tasks
                    WHERE status = 'pending' AND queued AND (owner IS NULL OR lease_until < now())
                    ORDER BY priority DESC, seq LIMIT $2 FOR UPDATE SKIP LOCKED)
                UPDATE {s}.tasks t SET owner = $1, lease_until = now() + $3::bigint * interval '1 millisecond'
                FROM picked WHERE t.ref_id = picked.ref_id
                RETURNING t.ref_id, t.spec, t.priority, t.seq, t.info"),
            // No takeover within one lease of the server's start: after a restart, every live owner renews first
            // (it renews every lease / 3), so an outage longer than a lease does not make a task run twice. The
            // reaper and `expired_local` name `{leased}` (the `tasks_leased` index's predicate) so that they read
            // that index, which holds the tasks with a lease to check and not the queued backlog.
            reap: sub("WITH picked AS (
                    SELECT ref_id FROM {s}.tasks
                    WHERE {leased} AND status IN ('processing', 'input_required') AND queued AND lease_until < now()
                      AND now() > pg_postmaster_start_time() + $3::bigint * interval '1 millisecond'
                    ORDER BY lease_until LIMIT $2 FOR UPDATE SKIP LOCKED)
                UPDATE {s}.tasks t SET owner = $1, lease_until = now() + $3::bigint * interval '1 millisecond'
                FROM picked WHERE t.ref_id = picked.ref_id
                RETURNING t.ref_id, t.spec, t.priority, t.seq, t.info"),
            expired_local: sub("SELECT ref_id FROM {s}.tasks
                WHERE {leased} AND NOT queued AND lease_until < now()
                  AND now() > pg_postmaster_start_time() + $1::bigint * interval '1 millisecond' LIMIT 100"),
            sweep_records: sub("DELETE FROM {s}.tasks WHERE ref_id IN (
                SELECT ref_id FROM {s}.tasks WHERE expires_at < now() LIMIT 1000)"),
            sweep_values: sub("DELETE FROM {s}.tasks WHERE ref_id IN (
                SELECT ref_id FROM {s}.task_values WHERE expires_at < now() LIMIT 1000)"),
            // $1 ref, $2 channel.
            delete: sub("WITH d AS (DELETE FROM {s}.tasks WHERE ref_id = $1 RETURNING ref_id, cache_key)
                SELECT cache_key, pg_notify($2, ref_id || ' drop ' || cache_key)::text FROM d"),
            // $1 session, $2 channel. The rows are locked in ref order first, as `start_batch`, `end_batch` and
            // `renew` lock theirs: deleted in scan order, a session's rows could be locked in the other order by a
            // batch over two of them, and the deadlock would fail the whole batch.
            end_session: sub("WITH l AS (
                    SELECT ref_id FROM {s}.tasks WHERE session_id = $1 ORDER BY ref_id FOR UPDATE),
                d AS (
                    DELETE FROM {s}.tasks t USING l WHERE t.ref_id = l.ref_id AND t.session_id = $1
                    RETURNING t.ref_id, t.cache_key)
                SELECT ref_id, cache_key, pg_notify($2, ref_id || ' drop ' || cache_key)::text FROM d"),
            // $1 max age ms, $2 channel.
            cleanup: sub("WITH d AS (
                    DELETE FROM {s}.tasks
                    WHERE status IN ('complete', 'failed', 'cancelled')
                      AND finished_at < now() - $1::bigint * interval '1 millisecond'
                    RETURNING ref_id, cache_key)
                SELECT ref_id, cache_key, pg_notify($2, ref_id || ' drop ' || cache_key)::text FROM d"),
            // $1 ref, $2 info, $3 queued, $4 owner or NULL, $5 lease ms, $6 shard, $7 channel. A retried task takes
            // a new sequence number (it queues from now, FIFO with the others), so that the oldest waiting task's
            // number never goes down: a process's lower bound of it (`Inner::oldest_pending`) stays one.
            retry: sub("WITH u AS (
                    UPDATE {s}.tasks SET status = 'pending', info = $2, queued = $3, owner = $4,
                        lease_until = CASE WHEN $4::text IS NULL THEN NULL
                                           ELSE now() + $5::bigint * interval '1 millisecond' END,
                        deliveries = 0, finished_at = NULL, expires_at = NULL, dead_at = NULL, seq = DEFAULT
                    WHERE ref_id = $1 AND status = 'failed'
                    RETURNING ref_id, queued),
                c AS (
                    INSERT INTO {s}.counters (name, shard, n) SELECT 'retries', $6, 1 FROM u
                    ON CONFLICT (name, shard) DO UPDATE SET n = counters.n + 1)
                SELECT pg_notify($7, ref_id || CASE WHEN queued THEN ' queued' ELSE ' change' END)::text FROM u"),
            // $1 channel, $2 payloads.
            notify_many: "SELECT count(pg_notify($1, p)) FROM unnest($2::text[]) p".to_owned(),
            // $1 name, $2 shard.
            count: sub("INSERT INTO {s}.counters (name, shard, n) VALUES ($1, $2, 1)
                ON CONFLICT (name, shard) DO UPDATE SET n = counters.n + 1"),
            // $1 status, $2 session, $3 sessionless, $4 task name, $5 namespace, $6 created_ms at most, $7 limit.
            list: sub("SELECT t.ref_id, t.info, {queue_position}, t.input_request, t.status FROM {s}.tasks t
                WHERE {live}
                  AND ($1::text IS NULL OR t.status = $1)
                  AND ($2::text IS NULL OR t.session_id = $2)
                  AND (NOT $3 OR t.session_id IS NULL)
                  AND ($4::text IS NULL OR t.task_name = $4)
                  AND ($5::text IS NULL OR t.namespace = $5)
                  AND ($6::bigint IS NULL OR t.created_ms <= $6)
                ORDER BY t.created_ms DESC LIMIT $7"),
            // Per status: how many, and what the finished ones weigh against max_record_bytes.
            by_status: sub("SELECT t.status, count(*),
                    coalesce(sum(CASE WHEN t.finished_at IS NOT NULL THEN {weight} END), 0)::bigint
                FROM {s}.tasks t WHERE {live} GROUP BY t.status"),
            // What the live values weigh (their JSON text and the rest; `octet_length` reads a stored text's
            // size from its header, without fetching it). In `bigint` before the sum: two texts of up to 1 GiB
            // each overflow `integer`.
            value_bytes: sub("SELECT coalesce(sum(octet_length(value)::bigint + octet_length(meta)), 0)::bigint
                FROM {s}.task_values WHERE expires_at > now()"),
            // $1 period ms: the sum and the count of the finished records, by the one process that takes this period's turn (a row of `counters` holds
            // when the last turn began), so that the scan runs once per period for the whole cluster, not once per
            // process. No row: another process has this period.
            record_bytes: sub("WITH turn AS (
                    INSERT INTO {s}.counters (name, shard, n)
                    VALUES ('record_bound_at', 0, (extract(epoch FROM now()) * 1000)::bigint)
                    ON CONFLICT (name, shard) DO UPDATE SET n = EXCLUDED.n
                    WHERE counters.n < EXCLUDED.n - $1::bigint
                    RETURNING 1)
                SELECT coalesce(sum({weight}), 0)::bigint, count(*) FROM {s}.tasks t, turn
                WHERE t.finished_at IS NOT NULL"),
            // $1 max_record_bytes, $2 channel, $3 max_task_records: the finished records beyond either bound,
            // counted from the one that would expire last, go (never that one), with their values and output.
            evict_records: sub("WITH w AS (
                    SELECT t.ref_id,
                        sum({weight}) OVER (ORDER BY t.expires_at DESC, t.seq DESC) AS kept,
                        row_number() OVER (ORDER BY t.expires_at DESC, t.seq DESC) AS n
                    FROM {s}.tasks t WHERE t.finished_at IS NOT NULL),
                d AS (
                    DELETE FROM {s}.tasks t USING w
                    WHERE t.ref_id = w.ref_id AND (w.kept > $1::bigint OR w.n > $3::bigint) AND w.n > 1
                        AND t.finished_at IS NOT NULL
                    RETURNING t.ref_id, t.cache_key)
                SELECT ref_id, cache_key, pg_notify($2, ref_id || ' drop ' || cache_key)::text FROM d"),
            counters: sub("SELECT name, sum(n)::bigint FROM {s}.counters GROUP BY name"),
            // $1 consumer, $2 running, $3 capacity.
            gauge: sub("INSERT INTO {s}.processes (consumer, running, capacity, seen_at) VALUES ($1, $2, $3, now())
                ON CONFLICT (consumer) DO UPDATE SET running = $2, capacity = $3, seen_at = now()"),
            // $1 lease ms.
            gauges: sub("SELECT consumer, running, capacity FROM {s}.processes
                WHERE seen_at > now() - $1::bigint * interval '1 millisecond'"),
            forget_processes: sub("DELETE FROM {s}.processes WHERE seen_at < now() - interval '1 hour'"),
            dead_letters: sub("SELECT ref_id FROM {s}.dead_letters ORDER BY dead_at DESC LIMIT $1"),
            statuses: sub("SELECT ref_id, status FROM {s}.tasks WHERE ref_id = ANY($1::text[])"),
            // $1 ref, $2 bytes written before this batch that never reached the table (the batch outgrew the cap
            // in this process, or an earlier flush failed), $3 the batch (at most the cap), $4 the cap, $5 channel.
            // The batch goes at the log's end (the end of its newest chunk: the one process running the task is
            // its only writer), after the bytes skipped; chunks wholly before the floor (`end - cap`, or the
            // batch's start when bytes were skipped, so that the chunks held stay contiguous) go, and the one that
            // straddles it is cut there. Nothing when the record is gone.
            output_append: sub("WITH base AS (
                    SELECT coalesce((SELECT o.start_offset + length(o.bytes) FROM {s}.task_output o
                                     WHERE o.ref_id = $1 ORDER BY o.start_offset DESC LIMIT 1), 0) + $2::bigint AS at
                    FROM {s}.tasks t WHERE t.ref_id = $1),
                ins AS (
                    INSERT INTO {s}.task_output (ref_id, start_offset, bytes) SELECT $1, at, $3 FROM base
                    RETURNING greatest(start_offset + length(bytes) - $4::bigint,
                                       CASE WHEN $2::bigint > 0 THEN start_offset ELSE 0 END) AS floor),
                gone AS (
                    DELETE FROM {s}.task_output o USING ins
                    WHERE o.ref_id = $1 AND o.start_offset + length(o.bytes) <= ins.floor),
                cut AS (
                    UPDATE {s}.task_output o
                    SET bytes = substring(o.bytes FROM (ins.floor - o.start_offset + 1)::integer),
                        start_offset = ins.floor
                    FROM ins
                    WHERE o.ref_id = $1 AND o.start_offset < ins.floor AND o.start_offset + length(o.bytes) > ins.floor)
                SELECT pg_notify($5, $1 || ' output')::text FROM ins"),
            // $1 ref, $2 offset, $3 max bytes: the status, the log's bounds (held start, end), where the window
            // starts (the offset, moved up to the held start and down to the end), and the window's bytes (at
            // least $3, cut by the caller). No row: no such record (or it expired).
            output_read: sub("WITH b AS (
                    SELECT coalesce(min(start_offset), 0) AS lo, coalesce(max(start_offset + length(bytes)), 0) AS hi
                    FROM {s}.task_output WHERE ref_id = $1),
                w AS (SELECT least(greatest($2::bigint, lo), hi) AS at FROM b)
                SELECT t.status, b.lo, b.hi, w.at,
                    (SELECT string_agg(substring(o.bytes FROM (greatest(w.at - o.start_offset, 0) + 1)::integer),
                                       ''::bytea ORDER BY o.start_offset)
                     FROM {s}.task_output o
                     WHERE o.ref_id = $1 AND o.start_offset + length(o.bytes) > w.at
                       AND o.start_offset < w.at + $3::bigint)
                FROM {s}.tasks t, b, w WHERE t.ref_id = $1 AND {live}"),
            // $1 ref, $2 owner, $3 key, $4 the question, $5 info, $6 channel: a running task held here asks; an
            // earlier answer (of an earlier delivery) is cleared.
            ask: sub("WITH u AS (
                    UPDATE {s}.tasks SET status = 'input_required', input_key = $3, input_request = $4,
                        input_response = NULL, info = $5
                    WHERE ref_id = $1 AND owner = $2 AND status = 'processing'
                    RETURNING ref_id)
                SELECT pg_notify($6, ref_id || ' change')::text FROM u"),
            // $1 ref, $2 key, $3 answer, $4 channel: the one replica whose UPDATE matches takes the answer.
            respond: sub("WITH u AS (
                    UPDATE {s}.tasks SET status = 'processing', input_request = NULL, input_response = $3
                    WHERE ref_id = $1 AND status = 'input_required' AND input_key = $2
                    RETURNING ref_id)
                SELECT pg_notify($4, ref_id || ' change')::text FROM u"),
            input_answer: sub("SELECT status, input_key, input_response FROM {s}.tasks WHERE ref_id = $1"),
            // $1 ref, $2 key, $3 channel: the wait ended without an answer (cancel, time limit).
            input_close: sub("WITH u AS (
                    UPDATE {s}.tasks SET status = 'processing', input_request = NULL
                    WHERE ref_id = $1 AND status = 'input_required' AND input_key = $2
                    RETURNING ref_id)
                SELECT pg_notify($3, ref_id || ' change')::text FROM u"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_schema_has_its_own_lock_and_channel() {
        assert_ne!(lock_key("a"), lock_key("b"));
        assert_eq!(lock_key("a"), lock_key("a"));
        let sql = Sql::new("app_1");
        assert_eq!(sql.listen, "LISTEN \"refcache.app_1\"");
        assert!(sql.insert_batch.contains("\"app_1\".tasks"));
        assert!(!sql.list.contains("{s}") && !sql.list.contains("{live}"));
        assert!(MIGRATIONS.iter().all(|(v, _)| *v <= SCHEMA_VERSION));
    }
}
