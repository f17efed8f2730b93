//! Workers: the loop that claims tasks from the `tasks` table, the leases that tell a live process from a dead one,
//! crash recovery, and the sweeping of expired rows. [`run`] is a worker process's whole `main`.
//!
//! - A worker claims pending tasks with `FOR UPDATE SKIP LOCKED` (highest priority first, FIFO within one), at most
//!   `max_workers + prefetch` held at a time, and runs them by name through the same scheduler as the in-process
//!   backend. It wakes on a `queued` notification, on a released slot, and once per upkeep period.
//! - Its claim is a lease (`owner`, `lease_until`), renewed every `lease / 3` for every task it holds, in one
//!   statement. A worker killed mid-task stops renewing.
//! - Every worker reaps: a task still `processing` whose lease has run out is claimed by another worker and runs
//!   again there (`deliveries` counts the starts). Past `max_deliveries` the task fails with `worker lost` and shows
//!   in the `dead_letters` view ([`PostgresTaskBackend::dead_letters`]).
//! - A result lands once: the terminal transition only accepts it from the task's current owner.
//!
//! In `local` mode the same upkeep renews the leases of the tasks a replica holds, and fails those of a replica
//! that died (`worker lost`): their closures existed only there.

use std::sync::{Arc, Weak};
use std::time::Duration;

use refcache_core::{BackendError, RefId, TaskBackend};
use tokio_util::sync::CancellationToken;

use super::backend::{PostgresBackendError, PostgresTaskBackend};
use super::config::{Mode, PostgresConfig};
use super::inner::{Inner, lock, ms_i64};

/// Runs a worker until SIGINT or SIGTERM, then shuts it down: running tasks get 30 s to finish, and are then
/// cancelled (message `shutdown`).
///
/// The worker runs every task it claims by its registered name: link the crates that define the `#[cached]`
/// functions into the worker binary. A task whose name nothing registers fails at once with a message saying so.
///
/// ```no_run
/// # async fn demo() -> Result<(), refcache_backends::postgres::PostgresBackendError> {
/// use refcache_backends::postgres::{PostgresConfig, worker};
/// let config = PostgresConfig::from_url("postgres://app@127.0.0.1:5432/app?mode=workers")?;
/// worker::run(config).await
/// # }
/// ```
pub async fn run(config: PostgresConfig) -> Result<(), PostgresBackendError> {
    // The handlers are installed before anything else, so that a SIGTERM during startup is a graceful stop too.
    let stop = ShutdownSignal::install()?;
    run_until(config, stop.received(), Duration::from_secs(30)).await
}

/// [`run`], stopping when `stop` resolves, with `grace` for the running tasks.
///
/// A worker started while Postgres is down does not exit: it logs a warning and starts working when Postgres
/// answers.
pub async fn run_until(
    config: PostgresConfig,
    stop: impl std::future::Future<Output = ()>,
    grace: Duration,
) -> Result<(), PostgresBackendError> {
    let backend = PostgresTaskBackend::worker(config)?;
    if let Err(err) = backend.start().await {
        tracing::warn!(%err, "refcache worker: Postgres does not answer yet; waiting for it");
    }
    tracing::info!(
        consumer = backend.consumer(),
        url = %backend.config().redacted_url(),
        schema = %backend.config().schema,
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
    fn install() -> Result<Self, PostgresBackendError> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let failed = |e: std::io::Error| {
                PostgresBackendError::Backend(BackendError::Runtime(format!(
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

impl PostgresTaskBackend {
    /// Starts the background loops now (they otherwise start on first use), applies the migrations, and checks
    /// that Postgres answers. The loops run whatever the answer: they keep retrying until Postgres is there.
    pub async fn start(&self) -> Result<(), BackendError> {
        self.inner.begin().await?;
        self.ping().await
    }
}

/// The claiming loop (`workers` mode): keeps up to `max_workers + prefetch` tasks held.
pub(crate) async fn consume(weak: Weak<Inner>, stop: CancellationToken) {
    let mut backoff = Duration::from_millis(50);
    while !stop.is_cancelled() {
        let Some(inner) = weak.upgrade() else { return };
        // Registered before the look, so that a notification in between is not missed (`notify_one` keeps a
        // permit in any case).
        let room = (inner.config.max_workers + inner.config.prefetch)
            .saturating_sub(lock(&inner.run).len());
        if room > 0 {
            let fetched = inner.fetch(room, false).await;
            inner.admit_now();
            match fetched {
                Ok(n) => {
                    backoff = Duration::from_millis(50);
                    if n == room {
                        // There may be more: look again at once (the room is smaller now).
                        continue;
                    }
                }
                Err(err) => {
                    tracing::debug!(%err, "refcache worker: claiming tasks failed; retrying");
                    drop(inner);
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        () = stop.cancelled() => return,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                    continue;
                }
            }
        }
        inner.admit_now();
        let work = inner.work.clone();
        drop(inner);
        tokio::select! {
            () = work.notified() => {}
            () = stop.cancelled() => return,
        }
    }
}

/// Leases, reaping, gauges and sweeping, every `lease / 3`, in every process.
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
    async fn maintain_once(self: &Arc<Self>) -> Result<(), BackendError> {
        self.ready().await?;
        let lease = ms_i64(self.config.lease);
        let (running, capacity, held) = {
            let st = lock(&self.run);
            (st.running(), st.capacity(), st.len())
        };
        let consumer = self.consumer.clone();
        let sql = &self.sql;
        let running = i64::try_from(running).unwrap_or(i64::MAX);
        let capacity = i64::try_from(capacity).unwrap_or(i64::MAX);
        self.execute(&sql.gauge, &[&consumer, &running, &capacity])
            .await?;
        if held > 0 {
            let held = self.held_refs();
            let refs: Vec<&str> = held.iter().map(RefId::as_str).collect();
            let renewed: std::collections::HashSet<String> = self
                .query(&sql.renew, &[&consumer, &lease, &refs])
                .await?
                .iter()
                .map(|r| r.get(0))
                .collect();
            // Not renewed: its row is finished, owned by another process, or gone (deleted without a hint heard,
            // or a submission lost to a crash): it stops here, so that it never runs beside a new execution for
            // longer than this period.
            for ref_id in &held {
                if !renewed.contains(ref_id.as_str()) {
                    self.stop_held(ref_id);
                }
            }
        }
        if self.config.mode == Mode::Workers && self.consumes && !self.consuming.is_cancelled() {
            let room = (self.config.max_workers + self.config.prefetch)
                .saturating_sub(lock(&self.run).len());
            if room > 0 {
                let reaped = self.fetch(room, true).await;
                self.admit_now();
                reaped?;
            }
            // A notification may have been lost: look for work anyway.
            self.work.notify_one();
        }
        for row in self.query(&sql.expired_local, &[&lease]).await? {
            let Ok(ref_id) = RefId::parse(row.get::<_, &str>(0)) else {
                continue;
            };
            self.fail_lost(
                &ref_id,
                format!(
                    "worker lost: the process running this task stopped before it finished (no lease renewal for \
                     {} s)",
                    self.config.lease.as_secs_f64()
                ),
            )
            .await;
        }
        self.execute(&sql.sweep_values, &[]).await?;
        self.execute(&sql.sweep_records, &[]).await?;
        self.bound_records().await?;
        self.execute(&sql.forget_processes, &[]).await?;
        Ok(())
    }

    /// Past `max_record_bytes`, drops the finished records that would expire first (never the newest: its ref id
    /// still polls until the next one comes), with their values and output. One process a lease checks.
    async fn bound_records(self: &Arc<Self>) -> Result<(), BackendError> {
        let sql = &self.sql;
        // Once per lease for the whole cluster (the scan grows with the finished records).
        let period = ms_i64(self.config.lease);
        let (bytes, records): (i64, i64) = self
            .query(&sql.record_bytes, &[&period])
            .await?
            .first()
            .map_or((0, 0), |r| (r.get(0), r.get(1)));
        if u64::try_from(bytes).unwrap_or(0) <= self.config.max_record_bytes
            && u64::try_from(records).unwrap_or(0) <= self.config.max_task_records
        {
            return Ok(());
        }
        let max = i64::try_from(self.config.max_record_bytes).unwrap_or(i64::MAX);
        let max_records = i64::try_from(self.config.max_task_records).unwrap_or(i64::MAX);
        let rows = self
            .query(&sql.evict_records, &[&max, &sql.channel, &max_records])
            .await?;
        tracing::debug!(
            dropped = rows.len(),
            bytes,
            records,
            max,
            max_records,
            "refcache: finished records over max_record_bytes or max_task_records dropped"
        );
        self.dropped(&rows).await;
        Ok(())
    }

    /// Claims up to `room` tasks (pending ones, or with `reap`, running ones whose lease ran out) and holds them.
    /// Answers how many.
    pub(crate) async fn fetch(
        self: &Arc<Self>,
        room: usize,
        reap: bool,
    ) -> Result<usize, BackendError> {
        self.ready().await?;
        let room = i64::try_from(room).unwrap_or(i64::MAX);
        let lease = ms_i64(self.config.lease);
        let statement = if reap {
            &self.sql.reap
        } else {
            &self.sql.fetch
        };
        let rows = self
            .query(statement, &[&self.consumer, &room, &lease])
            .await?;
        let mut claimed: Vec<(i32, i64, String, String, String)> = rows
            .iter()
            .map(|r| (r.get(2), r.get(3), r.get(0), r.get(1), r.get(4)))
            .collect();
        // Start order: higher priority first, then FIFO (the statement's RETURNING has no order).
        claimed.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        let n = claimed.len();
        for (_, _, ref_id, spec, info) in claimed {
            if reap {
                tracing::info!(%ref_id, consumer = %self.consumer, "refcache worker: took over a task from a lost worker");
            }
            match serde_json::from_str::<refcache_core::TaskSpec>(&spec) {
                Ok(spec) if spec.ref_id.as_str() == ref_id => {
                    // An unreadable record is read (and reported) again at the start.
                    let info = serde_json::from_str(&info).ok();
                    self.hold_then(Arc::new(spec), None, info, false);
                }
                _ => {
                    // Bad data costs only itself: the task fails, the others run.
                    tracing::error!(%ref_id, "refcache worker: unreadable task spec; failing the task");
                    if let Ok(ref_id) = RefId::parse(&ref_id) {
                        self.fail_unreadable(&ref_id).await;
                    }
                }
            }
        }
        Ok(n)
    }
}

impl Inner {
    /// What every operation does first: the background loops running ([`Inner::ensure_started`]) and the
    /// migrations applied ([`Inner::ready`]).
    pub(super) async fn begin(self: &Arc<Self>) -> Result<(), BackendError> {
        self.ensure_started();
        self.ready().await
    }

    /// Starts the background loops on the caller's runtime: on first use, and again if the runtime they ran on
    /// has shut down. Every operation calls it first; it is a lock and three flag reads.
    pub(super) fn ensure_started(self: &Arc<Self>) {
        let mut loops = lock(&self.loops);
        let alive = |i: usize| loops.get(i).is_some_and(|h| !h.is_finished());
        let consumer_ok = !self.consumes || self.consuming.is_cancelled() || alive(2);
        if self.stop.is_cancelled() || (alive(0) && alive(1) && consumer_ok) {
            return;
        }
        for handle in loops.drain(..) {
            handle.abort();
        }
        let weak = Arc::downgrade(self);
        loops.push(tokio::spawn(super::notify::listen(
            weak.clone(),
            self.stop.clone(),
        )));
        loops.push(tokio::spawn(maintain(weak.clone(), self.stop.clone())));
        if self.consumes && !self.consuming.is_cancelled() {
            loops.push(tokio::spawn(consume(weak, self.consuming.clone())));
        }
    }
}
