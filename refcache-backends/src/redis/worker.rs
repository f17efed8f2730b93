//! Workers: the stream consumer that takes tasks off `P:queue`, the leases that tell a live worker from a dead one,
//! and crash recovery. [`run`] is a worker process's whole `main`.
//!
//! - A worker reads entries (`XREADGROUP` in group `workers`, one consumer per process, at most
//!   `max_workers + prefetch` held at a time): with the `take` script when it holds nothing (the first entry's
//!   task claimed in the same step), else with a plain read (the entries are claimed when they start), woken by
//!   `P:queued` (which a submission publishes) or once a second, and runs them by name through the same scheduler
//!   as the in-process backend.
//! - Its lease on an entry is the entry's idle time in the group: while the worker lives it renews the entries it
//!   holds every `lease / 3` (`XCLAIM ... JUSTID`). A worker killed mid-task stops renewing.
//! - Every worker reaps: `XAUTOCLAIM` takes over entries idle for longer than `lease`, and the task runs again on
//!   the taker (the `claim` script counts deliveries). Past `max_deliveries` the task fails with `worker lost` and
//!   its ref id goes to the dead-letter list (`RedisTaskBackend::dead_letters`).
//! - A result lands once: the terminal script only accepts it from the task's current owner, and a redelivered
//!   entry of a finished task is acknowledged and dropped.
//!
//! In `local` mode the same loop keeps leases on the tasks a replica holds (`P:leases`), and fails those of a
//! replica that died (`worker lost`): their closures existed only there.

use std::sync::{Arc, Weak};
use std::time::Duration;

use redis::AsyncCommands;
use redis::aio::ConnectionManager;
use redis::streams::{StreamAutoClaimOptions, StreamId, StreamReadOptions};
use refcache_core::{
    BackendError, CacheKey, RefId, TaskBackend, TaskInfo, TaskSpec, TaskStatus, Timestamp,
};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::config::{Mode, RedisConfig};
use super::keys::GROUP;
use super::list::LIST_SCAN;
use super::state::{Inner, RedisBackendError, RedisTaskBackend, lock, ms, now_ms};

/// A process's gauges in `P:workers`, refreshed every `lease / 3`.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Gauge {
    pub(crate) running: u64,
    pub(crate) capacity: u64,
    /// When it was written (ms since the epoch): older than a lease means the process is gone.
    pub(crate) at: u64,
}

/// Runs a worker until SIGINT or SIGTERM, then shuts it down: running tasks get `grace` to finish, and are then
/// cancelled (message `shutdown`).
///
/// The worker runs every task it takes by its registered name: link the crates that define the `#[cached]`
/// functions into the worker binary. A task whose name nothing registers fails at once with a message saying so.
///
/// ```no_run
/// # async fn demo() -> Result<(), refcache_backends::redis::RedisBackendError> {
/// use refcache_backends::redis::{RedisConfig, worker};
/// let config = RedisConfig::from_url("redis://127.0.0.1:6379/0?mode=workers")?;
/// worker::run(config).await
/// # }
/// ```
pub async fn run(config: RedisConfig) -> Result<(), RedisBackendError> {
    // The handlers are installed before anything else, so that a SIGTERM during startup is a graceful stop too.
    let stop = ShutdownSignal::install()?;
    run_until(config, stop.received(), Duration::from_secs(30)).await
}

/// [`run`], stopping when `stop` resolves, with `grace` for the running tasks.
///
/// A worker started while Redis is down does not exit: it logs a warning and starts working when Redis answers.
pub async fn run_until(
    config: RedisConfig,
    stop: impl std::future::Future<Output = ()>,
    grace: Duration,
) -> Result<(), RedisBackendError> {
    let backend = RedisTaskBackend::worker(config)?;
    if let Err(err) = backend.start().await {
        tracing::warn!(%err, "refcache worker: Redis does not answer yet; waiting for it");
    }
    tracing::info!(
        consumer = backend.consumer(),
        url = %backend.config().redacted_url(),
        tasks = ?refcache_core::registry::names(),
        "refcache worker running"
    );
    stop.await;
    tracing::info!(consumer = backend.consumer(), "refcache worker stopping");
    backend.shutdown(grace).await?;
    Ok(())
}

/// SIGINT or SIGTERM, listened for from the moment it is installed.
struct ShutdownSignal {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl ShutdownSignal {
    fn install() -> Result<Self, RedisBackendError> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let failed = |e: std::io::Error| {
                RedisBackendError::Backend(BackendError::Runtime(format!(
                    "cannot install the SIGINT/SIGTERM handlers: {e}"
                )))
            };
            Ok(Self {
                interrupt: signal(SignalKind::interrupt()).map_err(failed)?,
                terminate: signal(SignalKind::terminate()).map_err(failed)?,
            })
        }
        #[cfg(not(unix))]
        {
            Ok(Self {})
        }
    }

    #[cfg_attr(not(unix), allow(unused_mut))]
    async fn received(mut self) {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.interrupt.recv() => {}
                _ = self.terminate.recv() => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

impl RedisTaskBackend {
    /// Starts the background loops now (they otherwise start on first use) and checks that Redis answers. The
    /// loops run whatever the answer: they keep retrying until Redis is there.
    pub async fn start(&self) -> Result<(), BackendError> {
        self.inner.ensure_started();
        self.ping().await
    }
}

/// The stream consumer (`workers` mode): keeps up to `max_workers + prefetch` tasks held.
pub(crate) async fn consume(weak: Weak<Inner>, stop: CancellationToken) {
    let (config, conn) = {
        let Some(inner) = weak.upgrade() else { return };
        // Its own connection: a blocking read would hold up every other command on a shared one.
        let conn = ConnectionManager::new_lazy_with_config(
            inner.client.clone(),
            super::state::manager_config(&inner.config)
                .set_response_timeout(Some(inner.config.command_timeout + Duration::from_secs(2))),
        );
        (inner.config.clone(), conn)
    };
    let Ok(mut conn) = conn else { return };
    let mut backoff = Duration::from_millis(50);
    let mut group_ready = false;
    while !stop.is_cancelled() {
        let Some(inner) = weak.upgrade() else { return };
        if !group_ready {
            match ensure_group(&mut conn, &inner).await {
                Ok(()) => group_ready = true,
                Err(err) => {
                    tracing::debug!(%err, "refcache worker: cannot create the consumer group yet");
                    drop(inner);
                    pause(&stop, &mut backoff).await;
                    continue;
                }
            }
        }
        let room = {
            // Registered before the check, so that a release in between is not missed.
            let released = inner.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            let room =
                (config.max_workers + config.prefetch).saturating_sub(lock(&inner.run).len());
            if room == 0 {
                tokio::select! {
                    () = released => {}
                    () = stop.cancelled() => return,
                }
                continue;
            }
            room
        };
        // Nothing held here: the take claims its first entry too, which then starts at once (no task here is
        // ahead of it, and no `max_concurrent` can hold it back). The others wait for a slot here, `pending`, and
        // are claimed when they start, in the scheduler's order.
        let claim = {
            let mut st = lock(&inner.run);
            let claim = !st.draining && st.len() == 0 && st.capacity() > 0;
            if claim {
                st.taking = Some(Default::default());
            }
            claim
        };
        // Registered before the take: an entry added while it runs wakes the next one.
        let queued = inner.queued.clone();
        let woken = queued.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        // Not dropped on a stop: what it takes is handed back (`taken` and `receive` see the stop).
        let took = if claim {
            let started = serde_json::to_string(&Timestamp::now()).expect("a Timestamp serializes");
            let taken: redis::RedisResult<Vec<String>> = inner
                .scripts
                .take
                .arg(inner.keys.prefix())
                .arg(&inner.consumer)
                .arg(room)
                .arg("1")
                .arg(started)
                .arg(config.max_deliveries)
                .invoke_async(&mut conn)
                .await;
            match taken {
                Ok(reply) if reply.len() == 1 && reply[0] == "nogroup" => Took::NoGroup,
                Ok(reply) => {
                    for entry in reply.chunks_exact(5) {
                        inner.taken(entry).await;
                    }
                    Took::Entries(reply.len() / 5)
                }
                Err(err) => Took::Failed(err),
            }
        } else {
            // Nothing to claim (tasks are held here already: the entries wait for a slot, and are claimed when
            // they start): a plain read, not the script, which would pay for every byte of the entries it reads
            // (#17 §3). `XREADGROUP` writes nothing to a key that is not a stream.
            let options = StreamReadOptions::default()
                .group(GROUP, &inner.consumer)
                .count(room);
            // Decoded entry by entry: one that does not read costs itself alone (as in the script).
            let read: redis::RedisResult<redis::Value> = conn
                .xread_options(&[inner.keys.queue()], &[">"], &options)
                .await;
            match read {
                Ok(reply) => {
                    let entries = stream_entries(reply);
                    let n = entries.len();
                    for (id, fields) in entries {
                        inner.receive_fields(&id, fields, false).await;
                    }
                    Took::Entries(n)
                }
                Err(err) if err.code() == Some("NOGROUP") => Took::NoGroup,
                Err(err) => Took::Failed(err),
            }
        };
        lock(&inner.run).taking = None;
        match took {
            Took::NoGroup => {
                group_ready = false;
                drop(inner);
                pause(&stop, &mut backoff).await;
            }
            Took::Entries(entries) => {
                backoff = Duration::from_millis(50);
                drop(inner);
                if entries >= room {
                    // There may be more.
                    continue;
                }
                // Woken by a new entry (`P:queued`), or after a second in any case (an event lost while the
                // subscription was down, or an entry from a submitter that does not publish `P:queued`).
                tokio::select! {
                    biased;
                    // A stop first: a wake-up that comes with it is for another worker.
                    () = stop.cancelled() => return,
                    () = woken => {}
                    () = tokio::time::sleep(IDLE_TAKE) => {}
                }
            }
            Took::Failed(err) => {
                tracing::debug!(%err, "refcache worker: taking from the task stream failed; retrying");
                drop(inner);
                pause(&stop, &mut backoff).await;
            }
        }
    }
}

/// The entries of an `XREADGROUP` answer, each decoded on its own: a field whose name or value is not UTF-8 is
/// left out (as the `take` script leaves out the fields it does not know), so that one bad entry does not fail the
/// whole answer (its entries would sit in this consumer's pending list, never held, and the reaper's decode would
/// fail on the same batch). An entry left without its `ref` is acknowledged and dropped by `receive_fields`.
fn stream_entries(reply: redis::Value) -> Vec<(String, Fields)> {
    use redis::Value;
    fn text(v: &Value) -> Option<String> {
        match v {
            Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
            Value::SimpleString(s) => Some(s.clone()),
            _ => None,
        }
    }
    let streams: Vec<Value> = match reply {
        Value::Array(streams) => streams
            .into_iter()
            .filter_map(|s| match s {
                Value::Array(mut parts) if parts.len() == 2 => parts.pop(),
                _ => None,
            })
            .collect(),
        // RESP3: stream name → entries.
        Value::Map(streams) => streams.into_iter().map(|(_, entries)| entries).collect(),
        _ => Vec::new(),
    };
    let mut out = Vec::new();
    for entries in streams {
        let Value::Array(entries) = entries else {
            continue;
        };
        for entry in entries {
            let Value::Array(entry) = entry else { continue };
            let Some(id) = entry.first().and_then(text) else {
                continue;
            };
            let mut fields = Fields {
                ref_id: None,
                spec: None,
                info: None,
            };
            if let Some(Value::Array(kv)) = entry.get(1) {
                for pair in kv.chunks_exact(2) {
                    match text(&pair[0]).as_deref() {
                        Some("ref") => fields.ref_id = text(&pair[1]),
                        Some("spec") => fields.spec = text(&pair[1]),
                        Some("info") => fields.info = text(&pair[1]),
                        _ => {}
                    }
                }
            }
            out.push((id, fields));
        }
    }
    out
}

/// What a take brought.
enum Took {
    /// The consumer group is not there (made again, then taken again).
    NoGroup,
    /// How many entries.
    Entries(usize),
    Failed(redis::RedisError),
}

/// How long an idle worker waits for `P:queued` before it takes anyway.
const IDLE_TAKE: Duration = Duration::from_secs(1);

async fn pause(stop: &CancellationToken, backoff: &mut Duration) {
    tokio::select! {
        () = tokio::time::sleep(*backoff) => {}
        () = stop.cancelled() => {}
    }
    *backoff = (*backoff * 2).min(Duration::from_secs(2));
}

async fn ensure_group(conn: &mut ConnectionManager, inner: &Inner) -> redis::RedisResult<()> {
    let created: redis::RedisResult<()> = conn
        .xgroup_create_mkstream(inner.keys.queue(), GROUP, "0")
        .await;
    match created {
        Err(err) if err.code() != Some("BUSYGROUP") => Err(err),
        _ => Ok(()),
    }
}

impl Inner {
    /// A stream entry: hold its task, or drop the entry if the task is gone or finished.
    async fn receive(self: &Arc<Self>, entry: StreamId, redelivered: bool) {
        let fields = Fields {
            ref_id: entry.get("ref"),
            spec: entry.get("spec"),
            info: entry.get("info"),
        };
        self.receive_fields(&entry.id, fields, redelivered).await;
    }

    /// What `take` answered for one entry: held as claimed there, or the long way ([`receive_fields`]).
    ///
    /// [`receive_fields`]: Self::receive_fields
    async fn taken(self: &Arc<Self>, entry: &[String]) {
        let [id, ref_id, state, spec, info] = entry else {
            return;
        };
        let given = |s: &String| (!s.is_empty()).then(|| s.clone());
        if state != "ok" {
            let fields = Fields {
                ref_id: given(ref_id),
                spec: given(spec),
                info: given(info),
            };
            return self.receive_fields(id, fields, false).await;
        }
        // Claimed by the take: this worker's and `processing` in Redis.
        let Ok(ref_id) = RefId::parse(ref_id) else {
            return self.ack(id).await;
        };
        if self.consuming.is_cancelled() {
            return self.hand_back(&ref_id, id).await;
        }
        let spec = serde_json::from_str::<TaskSpec>(spec)
            .ok()
            .filter(|s| s.ref_id == ref_id);
        let record = serde_json::from_str::<TaskInfo>(info)
            .ok()
            .filter(|i| i.ref_id == ref_id && i.status == TaskStatus::Processing);
        match (spec, record) {
            (Some(spec), Some(mut record)) => {
                // Readers take the queue position from the queue, never from the record.
                record.queue_position = None;
                if !self.hold_claimed(Arc::new(spec), id.clone(), record) {
                    self.hand_back(&ref_id, id).await;
                }
            }
            _ => {
                // Claimed, so it must end: failed (as its record says what it was), with its entry acked in the
                // same step. A record that does not read either is left with its entry unacknowledged: the lease
                // runs out and the reaper takes it the long way.
                tracing::error!(%ref_id, "refcache worker: unreadable task spec or record; failing the task");
                self.fail_unreadable(&ref_id, id).await;
            }
        }
    }

    /// Fails a task this worker claimed whose spec or record does not read, and acks its entry.
    async fn fail_unreadable(&self, ref_id: &RefId, msg: &str) {
        let Ok(Some(mut info)) = self.read(ref_id).await else {
            return;
        };
        info.status = TaskStatus::Failed;
        info.finished_at = Some(Timestamp::now());
        info.queue_position = None;
        info.error = Some(
            refcache_core::TaskError::new(
                "the task's spec or record in Redis does not read as refcache's: it cannot run",
            )
            .with_code("UNREADABLE_TASK")
            .permanent(),
        );
        let _ = self
            .run_transition(
                ref_id,
                &[TaskStatus::Processing],
                &info,
                "",
                true,
                None,
                Some(msg),
                false,
            )
            .await;
    }

    /// A stream entry's fields: hold its task, or drop the entry if the task is gone or finished.
    async fn receive_fields(self: &Arc<Self>, id: &str, entry: Fields, redelivered: bool) {
        let ref_id = entry.ref_id.and_then(|r| RefId::parse(&r).ok());
        let Some(ref_id) = ref_id else {
            self.ack(id).await;
            return;
        };
        // Shutting down: an entry that reaches this worker now (a read or a takeover in flight at the stop) goes
        // back to the stream for another worker, instead of waiting in this consumer's pending list for a lease.
        if self.consuming.is_cancelled() {
            self.hand_back(&ref_id, id).await;
            return;
        }
        // The entry carries the spec: the task is held at once, and the `claim` script checks its status when it
        // starts (a cancelled, deleted or finished task is dropped then, and its entry acknowledged). A first
        // delivery's entry also carries the record as submitted, which the claim starts from (a pending record is
        // written by nobody else before its claim); without it, or on a redelivery, the runner reads the record.
        if let Some(spec) = entry
            .spec
            .and_then(|s| serde_json::from_str::<TaskSpec>(&s).ok())
            .filter(|s| s.ref_id == ref_id)
        {
            let record = entry
                .info
                .and_then(|i| serde_json::from_str::<TaskInfo>(&i).ok())
                .filter(|i| i.ref_id == ref_id && i.status == TaskStatus::Pending);
            if !self.hold(
                Arc::new(spec),
                None,
                Some(id.to_owned()),
                redelivered,
                record,
            ) {
                self.hand_back(&ref_id, id).await;
            }
            return;
        }
        let mut conn = self.conn();
        let row: Result<(Option<String>, Option<String>), _> = conn
            .hmget(self.keys.task(&ref_id), &["status", "spec"])
            .await;
        match row {
            Ok((Some(status), Some(spec)))
                if matches!(status.as_str(), "pending" | "processing" | "input_required") =>
            {
                match serde_json::from_str::<TaskSpec>(&spec) {
                    Ok(spec) => {
                        if !self.hold(Arc::new(spec), None, Some(id.to_owned()), redelivered, None)
                        {
                            self.hand_back(&ref_id, id).await;
                        }
                    }
                    Err(err) => {
                        tracing::error!(%ref_id, %err, "refcache worker: unreadable task spec; dropping the entry");
                        self.ack(id).await;
                    }
                }
            }
            // Redis is down: the entry stays in this worker's pending list and is taken over after the lease.
            Err(_) => {}
            Ok(_) => self.ack(id).await,
        }
    }
}

/// A stream entry's fields (`ref`; `spec` and `info` when it carries them).
struct Fields {
    ref_id: Option<String>,
    spec: Option<String>,
    info: Option<String>,
}

/// Leases, reaping and gauges, every `lease / 3`, in every process.
pub(crate) async fn maintain(inner: Weak<Inner>, stop: CancellationToken) {
    let period = {
        let Some(inner) = inner.upgrade() else { return };
        inner.config.lease / 3
    };
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => return,
        }
        let Some(inner) = inner.upgrade() else { return };
        if let Err(err) = inner.maintain_once().await {
            tracing::debug!(%err, "refcache: lease upkeep failed; retrying next period");
        }
    }
}

impl Inner {
    async fn maintain_once(self: &Arc<Self>) -> redis::RedisResult<()> {
        let mut conn = self.conn();
        let now = now_ms();
        let lease = ms(self.config.lease);
        let (running, capacity, messages, held) = {
            let st = lock(&self.run);
            (st.running(), st.capacity(), st.messages(), st.len())
        };
        let gauge = Gauge {
            running: running as u64,
            capacity: capacity as u64,
            at: now,
        };
        let _: () = conn
            .hset(
                self.keys.workers(),
                &self.consumer,
                serde_json::to_string(&gauge).expect("serializes"),
            )
            .await?;
        // Its own failure (data under the prefix that is not refcache's) must not stop the leases below.
        if let Err(err) = self.trim_records(&mut conn).await {
            tracing::debug!(%err, "refcache: cannot trim finished records to max_record_bytes");
        }
        match self.config.mode {
            Mode::Workers if self.consumes => {
                for chunk in messages.chunks(500) {
                    let mut renew = self.scripts.renew.prepare_invoke();
                    renew.arg(self.keys.prefix()).arg(&self.consumer);
                    for (msg, ref_id) in chunk {
                        renew.arg(msg).arg(ref_id.as_str());
                    }
                    let _: i64 = renew.invoke_async(&mut conn).await?;
                }
                // A worker shutting down takes over nothing (it hands its own tasks back).
                if !self.consuming.is_cancelled() {
                    self.reap_stream(&mut conn, lease).await?;
                }
            }
            Mode::Workers => {}
            Mode::Local => {
                if held > 0 {
                    let refs = self.held_refs();
                    let mut pipe = redis::pipe();
                    for ref_id in &refs {
                        pipe.zadd(self.keys.leases(), ref_id.as_str(), now + lease)
                            .ignore();
                    }
                    let _: () = pipe.query_async(&mut conn).await?;
                }
                let expired: Vec<String> = conn
                    .zrangebyscore_limit(self.keys.leases(), "-inf", now, 0, 100)
                    .await?;
                for r in expired {
                    let _: () = conn.zrem(self.keys.leases(), &r).await?;
                    if let Ok(ref_id) = RefId::parse(&r) {
                        self.fail_lost(
                            &ref_id,
                            format!(
                                "worker lost: the process running this task stopped before it finished (no lease \
                                 renewal for {} s)",
                                self.config.lease.as_secs_f64()
                            ),
                        )
                        .await;
                    }
                }
            }
        }
        Ok(())
    }

    /// Drops the oldest finished records past `max_record_bytes` (with their values), and their copies in this
    /// process's near cache.
    async fn trim_records(&self, conn: &mut ConnectionManager) -> redis::RedisResult<()> {
        let dropped: Vec<String> = self
            .scripts
            .trim
            .arg(self.keys.prefix())
            .arg(self.config.max_record_bytes)
            .arg(LIST_SCAN)
            .arg(ms(self.config.lease / 3))
            .invoke_async(conn)
            .await?;
        for pair in dropped.chunks_exact(2) {
            if let (Ok(ref_id), Some(key)) = (RefId::parse(&pair[0]), CacheKey::from_hex(&pair[1]))
            {
                self.near.invalidate_if_ref(&key, &ref_id).await;
            }
        }
        if !dropped.is_empty() {
            tracing::debug!(
                records = dropped.len() / 2,
                "refcache: finished records over max_record_bytes dropped"
            );
        }
        Ok(())
    }

    /// Takes over the entries of workers that stopped renewing their lease.
    async fn reap_stream(
        self: &Arc<Self>,
        conn: &mut ConnectionManager,
        lease: u64,
    ) -> redis::RedisResult<()> {
        let room =
            (self.config.max_workers + self.config.prefetch).saturating_sub(lock(&self.run).len());
        if room == 0 {
            return Ok(());
        }
        let reply: redis::streams::StreamAutoClaimReply = conn
            .xautoclaim_options(
                self.keys.queue(),
                GROUP,
                &self.consumer,
                lease,
                "0-0",
                StreamAutoClaimOptions::default().count(room),
            )
            .await?;
        for entry in reply.claimed {
            tracing::info!(msg = %entry.id, consumer = %self.consumer, "refcache worker: took over a task from a lost worker");
            self.receive(entry, true).await;
        }
        Ok(())
    }
}
