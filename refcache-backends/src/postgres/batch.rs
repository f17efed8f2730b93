//! Work that concurrent tasks share a statement (and a commit) for: submissions, the starts and ends of tasks held
//! here, the reads of waiters, and the hints sent after a commit.
//!
//! - **Submissions, starts, ends and waiters' reads.** A submission and an end are each a durable commit, one WAL
//!   flush; every statement costs the server a round trip, a transaction and its executor's setup, which with
//!   thousands of tasks at once cost it more than the rows themselves. Each joins a queue; whoever holds one of the
//!   slots of its kind (as many as the connections of its pool; two for ends) takes everything queued (up to [`MAX_BATCH`]) and
//!   writes it in one statement (`insert_batch`, `start_batch`, `end_batch`, `read_batch` of
//!   [`Sql`](super::schema::Sql)), so that when the slots are busy, what arrives meanwhile shares the
//!   next statement (and flush). Alone, each is written at once, by its own caller: nothing waits for a batch to
//!   fill. Each row is still decided on its own: a submission is refused by the in-flight index alone (and joins
//!   the running task), a start applies only while this process owns the task and it has deliveries left, an end
//!   only from `processing` or `input_required` while this process owns the task; one row that does not apply
//!   does not stop the others.
//! - **Hints.** A hint is sent after the commit it announces (see [`Inner::notify_after`]), without the caller
//!   waiting for it: one sender at a time per process sends every hint queued so far in one statement, and a burst
//!   of submissions sends one `queued` hint (a worker woken by it claims until the queue is empty; the payload's id
//!   is not read).

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use refcache_core::{BackendError, RefId, TaskInfo, TaskSnapshot};
use tokio::sync::oneshot;

use super::codec::info_text;
use super::inner::{Inner, lock, ms_i64, random_byte};

/// At most this many submissions or ends in one statement.
pub(super) const MAX_BATCH: usize = 256;

/// End statements in flight at once per process (at most the durable pool's size). Each waits for a WAL flush; with
/// as many slots as connections (8), a burst's ends shared a statement two by two (0.51 to 0.57 end statements per
/// task, 1.8 to 2.0 rows each, with 4 workers); with 2, five by five (0.18 to 0.20, 5.0 to 5.4 rows), and the
/// server's CPU per task fell from 1,210-1,355 to 930-995 µs (bench `REFCACHE_PG_BENCH_QUICK=1 ..._EACH=1`, fsync
/// on, load 10 to 12). A lone end still has a slot at once; under a burst an end waits for at most the statement
/// ahead of it (one flush).
const END_SLOTS: usize = 2;

/// The answer to one queued row.
type Done<R> = oneshot::Sender<Result<R, BackendError>>;

/// An end waiting for its statement.
pub(super) struct PendingEnd {
    ref_id: String,
    status: &'static str,
    info: String,
    record_ttl: i64,
    value: Option<String>,
    meta: Option<String>,
    value_ttl: i64,
    /// What a read of the row answers once it applied, for this process's followers ([`Hub::settle`]); `None`:
    /// they are woken to read it.
    ///
    /// [`Hub::settle`]: super::hub::Hub::settle
    settled: Option<Arc<TaskSnapshot>>,
    /// A complete task's value for the near cache, put there once the end applied (before the followers are
    /// settled, so that a `get` right after finds it there).
    near: Option<Arc<refcache_core::StoredValue>>,
    /// Whether it applied, once written.
    done: Done<bool>,
}

/// A submission's row waiting for its statement.
pub(super) struct PendingInsert {
    pub(super) ref_id: String,
    pub(super) key: String,
    pub(super) info: String,
    pub(super) spec: String,
    pub(super) task_name: String,
    pub(super) namespace: String,
    pub(super) session_id: Option<String>,
    pub(super) priority: i32,
    pub(super) created_ms: i64,
    pub(super) queued: bool,
    pub(super) owner: Option<String>,
    /// Inserted started (`processing`, its first delivery counted): a task held here that has a run slot
    /// reserved already (see `Inner::submit`), so that it needs no start statement of its own.
    pub(super) started: bool,
}

/// A held task's start waiting for its statement.
pub(super) struct PendingStart {
    ref_id: String,
    info: String,
    /// Its deliveries once started, `None` when its row refused.
    done: Done<Option<i32>>,
}

/// A record as a waiter reads it ([`Sql::read_batch`](super::schema::Sql)).
pub(super) struct ReadRow {
    pub(super) status: String,
    pub(super) info: String,
    pub(super) key: String,
    pub(super) question: Option<String>,
    /// A complete task's live value is there.
    pub(super) has_value: bool,
    /// That value (JSON text, the rest) when it was small enough to come along.
    pub(super) value: Option<(String, String)>,
}

/// A waiter's read: the record, `None` when there is none (unknown or expired).
type Read = Option<Arc<ReadRow>>;

/// The largest value (JSON text and the rest) that comes along with a waiter's read; a larger one is taken from
/// the near cache or read on its own, so that a process that ran the task does not read its large value back.
pub(super) const READ_VALUE_BYTES: i64 = 64 * 1024;

/// What became of a submission's row: inserted (its sequence number, and a live value of the call from another
/// execution: see `Sql::insert_batch`), or refused (the key is in flight).
pub(super) type Inserted = Option<(i64, Option<String>)>;

/// Rows waiting for a statement (each with the number its caller knows it by), and the slots for statements in
/// flight.
pub(super) struct Batcher<T> {
    queue: std::sync::Mutex<VecDeque<(u64, T)>>,
    next: AtomicU64,
    slots: tokio::sync::Semaphore,
}

impl<T> Batcher<T> {
    fn new(slots: usize) -> Self {
        Self {
            queue: std::sync::Mutex::new(VecDeque::new()),
            next: AtomicU64::new(0),
            slots: tokio::sync::Semaphore::new(slots.max(1)),
        }
    }

    /// Queues `item` and waits for `rx`, its answer, writing batches (with `write`) whenever a slot is free and
    /// rows are queued. `write(batch, alone)`: `alone` when the batch holds this caller's row and no other, which
    /// the caller may then write itself (only its own answer is at stake if it is dropped meanwhile); any other
    /// batch must be answered, every row of it, even if this caller is dropped meanwhile (`Inner::written`).
    async fn run<R, F, Fut>(
        &self,
        item: T,
        mut rx: oneshot::Receiver<Result<R, BackendError>>,
        write: F,
    ) -> Result<R, BackendError>
    where
        F: Fn(Vec<T>, bool) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        lock(&self.queue).push_back((id, item));
        loop {
            let permit = tokio::select! {
                biased;
                answer = &mut rx => return answer.unwrap_or_else(|_| Err(dropped())),
                permit = self.slots.acquire() => permit,
            };
            let Ok(permit) = permit else {
                return Err(dropped());
            };
            let batch: Vec<(u64, T)> = {
                let mut queue = lock(&self.queue);
                let n = queue.len().min(MAX_BATCH);
                queue.drain(..n).collect()
            };
            if batch.is_empty() {
                // Another caller took this row into the statement it has in flight.
                drop(permit);
                return rx.await.unwrap_or_else(|_| Err(dropped()));
            }
            let alone = matches!(batch.as_slice(), [(only, _)] if *only == id);
            write(batch.into_iter().map(|(_, row)| row).collect(), alone).await;
            drop(permit);
            // This row was in that batch (answered now) or is still queued (the batch was full): look again.
        }
    }
}

/// Hints waiting for the sender.
#[derive(Default)]
pub(super) struct PendingHints {
    payloads: Vec<String>,
    /// A `queued` hint is among `payloads`.
    queued: bool,
    /// A sender task is running.
    sending: bool,
}

/// The queues, in [`Inner`].
pub(super) struct Batches {
    ends: Batcher<PendingEnd>,
    inserts: Batcher<(PendingInsert, Done<Inserted>)>,
    starts: Batcher<PendingStart>,
    reads: Batcher<(String, Done<Read>)>,
    /// Submissions confirmed durable (`Sql::confirm`): whether each has its row.
    confirms: Batcher<(String, Done<bool>)>,
    hints: std::sync::Mutex<PendingHints>,
}

impl Batches {
    /// `durable` statements of each kind that waits for a flush or may wait on a lock in flight at once
    /// (submissions and confirmations: the durable pool's size; ends: [`END_SLOTS`] of them), `fast` of the others
    /// (starts, reads: the fast pool's).
    pub(super) fn new(durable: usize, fast: usize) -> Self {
        Self {
            ends: Batcher::new(END_SLOTS.min(durable)),
            inserts: Batcher::new(durable),
            starts: Batcher::new(fast),
            reads: Batcher::new(fast),
            confirms: Batcher::new(durable),
            hints: std::sync::Mutex::new(PendingHints::default()),
        }
    }
}

impl Inner {
    /// A held task's end, from `processing` or `input_required` while this process owns it: its terminal record
    /// and (complete) its value, written durably, with other ends queued meanwhile. Answers whether it applied.
    /// Once it applied, this process's followers of the task are settled with what a read of the row answers
    /// (the record as written, and `near`, the value this process's near cache holds: `None` for a complete task
    /// wakes them to read it).
    pub(super) async fn end(
        &self,
        ref_id: &RefId,
        info: &TaskInfo,
        value: Option<&(String, String, Duration)>,
        near: Option<Arc<refcache_core::StoredValue>>,
    ) -> Result<bool, BackendError> {
        debug_assert!(info.status.is_terminal());
        let record_ttl = match value {
            // One lifetime: a complete record stays at least as long as its value.
            Some((_, _, value_ttl)) => self.config.task_ttl.max(*value_ttl),
            None => self.config.task_ttl,
        };
        let (tx, rx) = oneshot::channel();
        let text = info_text(info);
        let settled = settled_snapshot(&text, info.status, value.is_some(), near.clone());
        let end = PendingEnd {
            ref_id: ref_id.as_str().to_owned(),
            status: info.status.as_str(),
            info: text,
            record_ttl: ms_i64(record_ttl),
            value: value.map(|(v, _, _)| v.clone()),
            meta: value.map(|(_, m, _)| m.clone()),
            value_ttl: value.map_or(0, |(_, _, ttl)| ms_i64(*ttl)),
            settled,
            near,
            done: tx,
        };
        self.batches
            .ends
            .run(end, rx, |batch, alone| {
                self.written(
                    alone,
                    move |inner| async move { inner.write_ends(batch).await },
                )
            })
            .await
    }

    /// A submission's row, inserted with the other submissions queued meanwhile, in one statement, committed
    /// asynchronously (`Inner::made_durable` makes it durable).
    pub(super) async fn insert(&self, row: PendingInsert) -> Result<Inserted, BackendError> {
        let (tx, rx) = oneshot::channel();
        self.batches
            .inserts
            .run((row, tx), rx, |batch, alone| {
                self.written(alone, move |inner| async move {
                    inner.write_inserts(batch).await
                })
            })
            .await
    }

    /// A held task's start (pending → processing, one more delivery, with `info` as its record) while this
    /// process owns it and it has deliveries left, with the other starts queued meanwhile. Answers its deliveries,
    /// or `None` when its row refused.
    pub(super) async fn start_row(
        &self,
        ref_id: &RefId,
        info: String,
    ) -> Result<Option<i32>, BackendError> {
        let (tx, rx) = oneshot::channel();
        let start = PendingStart {
            ref_id: ref_id.as_str().to_owned(),
            info,
            done: tx,
        };
        self.batches
            .starts
            .run(start, rx, |batch, alone| {
                self.written(alone, move |inner| async move {
                    inner.write_starts(batch).await
                })
            })
            .await
    }

    /// Whether a task has a row, answered by a durable commit (with the other confirmations queued meanwhile):
    /// once it answers `true`, the row survives a server crash.
    pub(super) async fn confirm_row(&self, ref_id: &RefId) -> Result<bool, BackendError> {
        let (tx, rx) = oneshot::channel();
        self.batches
            .confirms
            .run((ref_id.as_str().to_owned(), tx), rx, |batch, alone| {
                self.written(alone, move |inner| async move {
                    inner.write_confirms(batch).await
                })
            })
            .await
    }

    /// A waiter's read of a record (and its small live value), with the other waiters' reads queued meanwhile.
    pub(super) async fn read_row(&self, ref_id: &RefId) -> Result<Read, BackendError> {
        let (tx, rx) = oneshot::channel();
        self.batches
            .reads
            .run((ref_id.as_str().to_owned(), tx), rx, |batch, alone| {
                self.written(
                    alone,
                    move |inner| async move { inner.write_reads(batch).await },
                )
            })
            .await
    }

    /// Runs a batch's write and waits for it: `alone` (the batch is the caller's own row and nothing else) in the
    /// caller, else on a task of its own. A batch that holds other callers' rows, written inside the caller that
    /// took it, would drop their answers with a caller dropped while the statement is in flight (a cancelled
    /// request), and they would be told their write failed whether or not it committed; on a task of its own, the
    /// statement runs to its end and answers every row whatever becomes of the caller. A lone row has only its own
    /// caller to answer, and is spared the hop to another task and back (one per step of a round trip).
    async fn written<F, Fut>(&self, alone: bool, write: F)
    where
        F: FnOnce(Arc<Inner>) -> Fut,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        // No `Inner` any more: the backend is going away, and the rows' callers are told their write was dropped.
        let Some(inner) = self.me.upgrade() else {
            return;
        };
        if alone {
            write(inner).await;
        } else {
            let _ = tokio::spawn(write(inner)).await;
        }
    }

    /// Inserts `batch` in one statement and answers each row.
    async fn write_inserts(&self, batch: Vec<(PendingInsert, Done<Inserted>)>) {
        let col =
            |f: fn(&PendingInsert) -> &str| batch.iter().map(|(r, _)| f(r)).collect::<Vec<&str>>();
        let refs = col(|r| &r.ref_id);
        let keys = col(|r| &r.key);
        let infos = col(|r| &r.info);
        let specs = col(|r| &r.spec);
        let names = col(|r| &r.task_name);
        let namespaces = col(|r| &r.namespace);
        let sessions: Vec<Option<&str>> =
            batch.iter().map(|(r, _)| r.session_id.as_deref()).collect();
        let priorities: Vec<i32> = batch.iter().map(|(r, _)| r.priority).collect();
        let created: Vec<i64> = batch.iter().map(|(r, _)| r.created_ms).collect();
        let queued: Vec<bool> = batch.iter().map(|(r, _)| r.queued).collect();
        let owners: Vec<Option<&str>> = batch.iter().map(|(r, _)| r.owner.as_deref()).collect();
        let started: Vec<bool> = batch.iter().map(|(r, _)| r.started).collect();
        let lease = ms_i64(self.config.lease);
        // A random shard per statement, as for the starts: the inserts of one process run concurrently.
        let shard = i32::from(random_byte() % 16);
        let rows = self
            .try_query_on(
                &self.submits,
                &self.sql.insert_batch,
                &[
                    &refs,
                    &keys,
                    &infos,
                    &specs,
                    &names,
                    &namespaces,
                    &sessions,
                    &priorities,
                    &created,
                    &queued,
                    &owners,
                    &lease,
                    &started,
                    &shard,
                ],
            )
            .await;
        match rows {
            Ok(rows) => {
                let mut inserted: std::collections::HashMap<&str, (i64, Option<String>)> = rows
                    .iter()
                    .map(|r| (r.get::<_, &str>(0), (r.get(1), r.get(2))))
                    .collect();
                for (row, done) in batch {
                    let _ = done.send(Ok(inserted.remove(row.ref_id.as_str())));
                }
            }
            Err(fail) => {
                let err = self.failed(fail);
                for (_, done) in batch {
                    let _ = done.send(Err(err.clone()));
                }
            }
        }
    }

    /// Confirms `batch` in one durable statement and answers each ref: whether it has a row.
    async fn write_confirms(&self, batch: Vec<(String, Done<bool>)>) {
        let refs: Vec<&str> = batch.iter().map(|(r, _)| r.as_str()).collect();
        let shard = i32::from(random_byte() % 16);
        let rows = self
            .try_query_on(&self.pool, &self.sql.confirm, &[&refs, &shard])
            .await;
        match rows {
            Ok(rows) => {
                let present: std::collections::HashSet<&str> =
                    rows.iter().map(|r| r.get::<_, &str>(0)).collect();
                for (ref_id, done) in batch {
                    let _ = done.send(Ok(present.contains(ref_id.as_str())));
                }
            }
            Err(fail) => {
                let err = self.failed(fail);
                for (_, done) in batch {
                    let _ = done.send(Err(err.clone()));
                }
            }
        }
    }

    /// Starts `batch` in one statement and answers each start.
    async fn write_starts(&self, batch: Vec<PendingStart>) {
        let refs: Vec<&str> = batch.iter().map(|e| e.ref_id.as_str()).collect();
        let infos: Vec<&str> = batch.iter().map(|e| e.info.as_str()).collect();
        let max = i32::try_from(self.config.max_deliveries).unwrap_or(i32::MAX);
        let lease = ms_i64(self.config.lease);
        // A random shard per statement: the starts of one process run concurrently.
        let shard = i32::from(random_byte() % 16);
        let rows = self
            .try_query_on(
                &self.fast,
                &self.sql.start_batch,
                &[&refs, &infos, &self.consumer, &lease, &max, &shard],
            )
            .await;
        match rows {
            Ok(rows) => {
                let mut started: std::collections::HashMap<&str, i32> = rows
                    .iter()
                    .map(|r| (r.get::<_, &str>(0), r.get(1)))
                    .collect();
                for start in batch {
                    let _ = start.done.send(Ok(started.remove(start.ref_id.as_str())));
                }
            }
            Err(fail) => {
                let err = self.failed(fail);
                for start in batch {
                    let _ = start.done.send(Err(err.clone()));
                }
            }
        }
    }

    /// Reads `batch`'s records in one statement and answers each reader.
    async fn write_reads(&self, batch: Vec<(String, Done<Read>)>) {
        let refs: Vec<&str> = batch.iter().map(|(r, _)| r.as_str()).collect();
        let rows = self
            .try_query_on(
                &self.fast,
                &self.sql.read_batch,
                &[&refs, &READ_VALUE_BYTES],
            )
            .await;
        match rows {
            Ok(rows) => {
                let found: std::collections::HashMap<&str, Arc<ReadRow>> = rows
                    .iter()
                    .map(|r| {
                        let value: Option<String> = r.get(6);
                        let meta: Option<String> = r.get(7);
                        let row = ReadRow {
                            status: r.get(1),
                            info: r.get(2),
                            key: r.get(3),
                            question: r.get(4),
                            has_value: r.get(5),
                            value: value.zip(meta),
                        };
                        (r.get::<_, &str>(0), Arc::new(row))
                    })
                    .collect();
                for (ref_id, done) in batch {
                    let _ = done.send(Ok(found.get(ref_id.as_str()).cloned()));
                }
            }
            Err(fail) => {
                let err = self.failed(fail);
                for (_, done) in batch {
                    let _ = done.send(Err(err.clone()));
                }
            }
        }
    }

    /// Writes `batch` in one statement and answers each end.
    async fn write_ends(&self, batch: Vec<PendingEnd>) {
        let refs: Vec<&str> = batch.iter().map(|e| e.ref_id.as_str()).collect();
        let statuses: Vec<&str> = batch.iter().map(|e| e.status).collect();
        let infos: Vec<&str> = batch.iter().map(|e| e.info.as_str()).collect();
        let record_ttls: Vec<i64> = batch.iter().map(|e| e.record_ttl).collect();
        let values: Vec<Option<&str>> = batch.iter().map(|e| e.value.as_deref()).collect();
        let metas: Vec<Option<&str>> = batch.iter().map(|e| e.meta.as_deref()).collect();
        let value_ttls: Vec<i64> = batch.iter().map(|e| e.value_ttl).collect();
        let rows = self
            .try_query_on(
                &self.pool,
                &self.sql.end_batch,
                &[
                    &refs,
                    &statuses,
                    &infos,
                    &record_ttls,
                    &values,
                    &metas,
                    &value_ttls,
                    &self.consumer,
                ],
            )
            .await;
        match rows {
            Ok(rows) => {
                let applied: std::collections::HashSet<&str> =
                    rows.iter().map(|r| r.get::<_, &str>(0)).collect();
                for end in batch {
                    let done = applied.contains(end.ref_id.as_str());
                    if done && let Some(value) = end.near {
                        self.near.insert(value).await;
                    }
                    if done && let Ok(ref_id) = RefId::parse(&end.ref_id) {
                        // The notification reaches this process too; waking local followers now saves its trip,
                        // and settling them with the end saves each its read of the row.
                        match end.settled {
                            Some(snapshot) => {
                                self.hub.settle(&ref_id, snapshot);
                            }
                            None => self.hub.poke(&ref_id),
                        }
                        self.notify_after(&ref_id, "end");
                    }
                    let _ = end.done.send(Ok(done));
                }
            }
            Err(fail) => {
                let err = self.failed(fail);
                for end in batch {
                    let _ = end.done.send(Err(err.clone()));
                }
            }
        }
    }

    /// Sends a hint after the change it announces has committed, on a connection with asynchronous commit, without
    /// waiting for it: the process's one sender sends every hint queued meanwhile in one statement.
    ///
    /// A durable commit that carries a `NOTIFY` holds PostgreSQL's notification lock (one per database) until its
    /// WAL is flushed, so notifying transactions are serialized, flush by flush: with hints inside the durable
    /// statements of the hot path (a submission, a task's end), throughput was one task per disk flush. Sent after
    /// the commit, a hint can be lost if this process dies in between; waiters re-read their record once per lease
    /// in any case (see `wait`), and workers look for work once per upkeep period.
    pub(super) fn notify_after(&self, ref_id: &RefId, kind: &str) {
        let start = {
            let mut hints = lock(&self.batches.hints);
            if kind == "queued" {
                // One wakes every worker; each then claims until nothing is left.
                if hints.queued {
                    return;
                }
                hints.queued = true;
            }
            hints.payloads.push(format!("{ref_id} {kind}"));
            !std::mem::replace(&mut hints.sending, true)
        };
        if !start {
            return;
        }
        let Some(inner) = self.me.upgrade() else {
            lock(&self.batches.hints).sending = false;
            return;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move { inner.send_hints().await });
            }
            Err(_) => lock(&self.batches.hints).sending = false,
        }
    }

    /// The sender: sends what is queued, in one statement, until nothing is.
    async fn send_hints(self: Arc<Self>) {
        loop {
            let payloads = {
                let mut hints = lock(&self.batches.hints);
                if hints.payloads.is_empty() {
                    hints.sending = false;
                    return;
                }
                hints.queued = false;
                std::mem::take(&mut hints.payloads)
            };
            if let Err(err) = self
                .execute(&self.sql.notify_many, &[&self.sql.channel, &payloads])
                .await
            {
                tracing::debug!(%err, hints = payloads.len(), "refcache: hints could not be sent");
            }
        }
    }
}

/// The snapshot a read of a row ended with `info` (its JSON column's text) answers, as `Inner::finished_snapshot`
/// makes it: the record read back from its text (timestamps to the millisecond, as stored), its status the
/// column's, no question (a finished task waits on none), no queue position; a complete one with its value, the
/// copy this process's near cache holds (`get` and `wait` take it from there too). `None` when the reads would not
/// answer from the same: a complete task whose value is not kept near (too large: a read fetches it), or a record
/// that does not read back.
fn settled_snapshot(
    text: &str,
    status: refcache_core::TaskStatus,
    has_value: bool,
    near: Option<Arc<refcache_core::StoredValue>>,
) -> Option<Arc<TaskSnapshot>> {
    let mut info: TaskInfo = serde_json::from_str(text).ok()?;
    info.status = status;
    super::codec::with_question(&mut info, None);
    info.queue_position = None;
    let value = match (status, near) {
        (refcache_core::TaskStatus::Complete, Some(value)) if has_value => Some(value),
        (refcache_core::TaskStatus::Complete, _) => return None,
        _ => None,
    };
    Some(Arc::new(TaskSnapshot::new(info, value)))
}

fn dropped() -> BackendError {
    BackendError::Other(
        "a batched statement was dropped before it answered (the runtime is shutting down?)"
            .to_owned(),
    )
}
