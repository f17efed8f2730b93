//! The five cases of issue 17, each beside its in-run baseline, shared by the instruction counts
//! (`benches/instructions.rs`, gungraun) and the times (`benches/timed_cases.rs`, criterion), so that both measure
//! the same code.
//!
//! | case | what one operation is | baseline |
//! |---|---|---|
//! | `hit` | a `#[cached]` call whose value is cached | `hit_moka_get`: a raw `moka::future::Cache::get` keyed by [`CacheKey`] |
//! | `hit_json` | the same hit, answered as wire JSON text (`to_json_string`, the MCP edge's wire path) | `hit_json_to_string`: `serde_json::to_string` of the same value |
//! | `miss` | a `#[cached]` call of a function that returns at once, new arguments | `miss_direct_call`: the function called directly |
//! | `task` | one no-op task submitted to a `MemoryTaskBackend` and awaited until complete | `task_spawn_oneshot`: `tokio::spawn` answering on a oneshot |
//! | `poll` | `get_cached_result` of a finished task among 100,000 | `poll_moka_get`: a moka get among 100,000 entries |
//!
//! `empty` is the loop alone (the floor every count includes).
//!
//! Reported beside them, not gated (the `*_mt` cases, [`ALL_MT`]): the miss and the task as a `#[tokio::main]`
//! server makes them, from a worker task of a 2-worker multi-threaded runtime (the loop runs in a spawned task):
//! `miss_mt` beside `miss_mt_direct_call`, `task_mt` beside `task_mt_spawn_oneshot`, and `empty_mt`, the loop alone
//! there (it also holds what the runtime's start and shutdown cost, divided by the operations). There the
//! in-process backend spawns every task (no first poll in the caller), so the spawn, the wake-up across threads and
//! the caller's timer are counted. They warm up on a current-thread runtime of their own, so that the counted
//! run's runtime has done nothing before it (`benches/instructions.rs` counts its worker threads whole). Their
//! counts include the other worker's parking and stealing, so they move a little from run to run.
//!
//! Every other case runs on a current-thread tokio runtime built in its setup, so the work of one operation happens
//! on the measuring thread and its instruction count does not depend on the scheduler. Each setup also warms the case
//! up into its steady state: the miss and the task run with small bounds (1,000 task records, and 256 KiB of values,
//! about 900 of them at the 256 bytes of overhead the store weighs each with) and a warm-up of 3,000 operations, so
//! that every measured operation also evicts the oldest record and value, as a long-running server does, and the
//! count per operation does not depend on how many operations are counted. [`Case::check`] then proves the operations were what they claim: every hit a hit (the
//! body never ran), every miss a miss (the body ran once per call), every task and poll complete.

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};

use futures::future::BoxFuture;
use refcache::{
    CacheKey, MemoryBackendConfig, MemoryTaskBackend, RefCache, RefId, Submission, TaskBackend,
    TaskContext, TaskError, TaskSpec, TaskStatus, cached,
};
use serde_json::{Value, json};
use tokio::runtime::Runtime;

/// Operations in each case's warm-up: three times the task records the miss and task cases keep.
const WARM_UP: u64 = 3_000;
/// Finished task records kept by the miss and task cases' backends (small, so the warm-up reaches eviction).
const RECORDS: u64 = 1_000;
/// Tracked tasks in the poll case.
pub(crate) const POLL_TASKS: u64 = 100_000;
/// The key of the hit cases.
const HIT_ID: u64 = 7;

/// One case: `run` repeats its operation, `check` proves every operation so far was what the case claims.
pub(crate) trait Case {
    /// Runs `n` operations, one after another, on the case's current-thread runtime.
    fn run(&mut self, n: u64);
    /// Panics unless every operation run so far was what the case says it is (a hit, a miss, a completed task).
    fn check(&self);
}

/// Builds a case and warms it up (a setup: never measured).
pub(crate) type MakeCase = fn() -> Box<dyn Case>;

/// Every case, with the name criterion and the gate use, in the order of the table above.
pub(crate) const ALL: &[(&str, MakeCase)] = &[
    ("empty", empty),
    ("hit", hit),
    ("hit_moka_get", hit_moka_get),
    ("hit_json", hit_json),
    ("hit_json_to_string", hit_json_to_string),
    ("miss", miss),
    ("miss_direct_call", miss_direct_call),
    ("task", task),
    ("task_spawn_oneshot", task_spawn_oneshot),
    ("poll", poll),
    ("poll_moka_get", poll_moka_get),
];

/// The multi-threaded cases, reported and not gated (see the module's text).
pub(crate) const ALL_MT: &[(&str, MakeCase)] = &[
    ("empty_mt", empty_mt),
    ("miss_mt", miss_mt),
    ("miss_mt_direct_call", miss_mt_direct_call),
    ("task_mt", task_mt),
    ("task_mt_spawn_oneshot", task_mt_spawn_oneshot),
];

/// The runtime every case runs on: one thread, a timer (`async_timeout` needs it), no I/O driver.
fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a current-thread runtime")
}

/// The runtime of the `*_mt` cases: two workers (the machine's cores), a timer, no I/O driver.
fn multi_thread_runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .expect("a multi-threaded runtime")
}

/// A multi-threaded case: the runtime it counts on, and the current-thread one it warms up on.
struct Threads {
    rt: Runtime,
    warm_up: Option<Runtime>,
}

impl Threads {
    fn new() -> Self {
        Self {
            rt: multi_thread_runtime(),
            warm_up: Some(runtime()),
        }
    }

    /// Runs `work` on the warm-up runtime while there is one, else in a task spawned on the multi-threaded runtime
    /// (a worker task, as a server's request handler is), and waits for it.
    fn run<T: Send + 'static>(
        &self,
        work: impl std::future::Future<Output = T> + Send + 'static,
    ) -> T {
        match &self.warm_up {
            Some(warm_up) => warm_up.block_on(work),
            None => self
                .rt
                .block_on(self.rt.spawn(work))
                .expect("the worker task"),
        }
    }

    /// Done warming up: from now on every operation runs on the multi-threaded runtime.
    fn warmed(&mut self) {
        self.warm_up = None;
    }
}

/// Executions of [`lookup_user`]'s body: a hit must not move it, a miss moves it once.
static EXECUTIONS: AtomicU64 = AtomicU64::new(0);

/// The function behind the hit and miss cases: returns a small user record at once.
async fn lookup_user(id: u64) -> Value {
    EXECUTIONS.fetch_add(1, Ordering::Relaxed);
    json!({"id": id, "name": "Ada", "roles": ["admin", "dev"]})
}

/// The backend of the hit cases: the defaults (nothing is ever evicted by the hits).
static HIT_CACHE: LazyLock<RefCache> = LazyLock::new(|| {
    RefCache::builder()
        .backend(Arc::new(MemoryTaskBackend::new(
            MemoryBackendConfig::default(),
        )))
        .expect("the hit cases' cache")
});

/// The backend of the miss case: small bounds, so that its warm-up reaches the steady state of eviction.
static MISS_CACHE: LazyLock<RefCache> = LazyLock::new(|| {
    RefCache::builder()
        .backend(small_backend())
        .expect("the miss case's cache")
});

/// A `MemoryTaskBackend` that keeps [`RECORDS`] finished records and 256 KiB of values (fewer than [`RECORDS`]).
fn small_backend() -> Arc<MemoryTaskBackend> {
    let mut config = MemoryBackendConfig::default();
    config.max_task_records = RECORDS;
    config.max_capacity_bytes = 256 * 1024;
    Arc::new(MemoryTaskBackend::new(config))
}

/// The backend of the `miss_mt` case: the same small bounds as the miss case's, a cache of its own.
static MISS_MT_CACHE: LazyLock<RefCache> = LazyLock::new(|| {
    RefCache::builder()
        .backend(small_backend())
        .expect("the multi-threaded miss case's cache")
});

#[cached(async_timeout = 5.0, cache = HIT_CACHE)]
async fn cached_hit(id: u64) -> Value {
    lookup_user(id).await
}

#[cached(async_timeout = 5.0, cache = MISS_CACHE)]
async fn cached_miss(id: u64) -> Value {
    lookup_user(id).await
}

#[cached(async_timeout = 5.0, cache = MISS_MT_CACHE)]
async fn cached_miss_mt(id: u64) -> Value {
    lookup_user(id).await
}

/// What a case counts while it runs: operations, and those that were what the case claims.
#[derive(Default)]
struct Tally {
    ops: u64,
    ok: u64,
}

impl Tally {
    fn check(&self, what: &str) {
        assert!(self.ops > 0, "{what}: no operation ran");
        assert_eq!(
            self.ok, self.ops,
            "{what}: only {} of {} operations were what the case claims",
            self.ok, self.ops
        );
    }
}

/// `empty`: the loop alone.
struct Empty {
    rt: Runtime,
    ops: u64,
}

fn empty() -> Box<dyn Case> {
    Box::new(Empty {
        rt: runtime(),
        ops: 0,
    })
}

impl Case for Empty {
    fn run(&mut self, n: u64) {
        self.rt.block_on(async {
            for i in 0..n {
                black_box(i);
            }
        });
        self.ops += n;
    }

    fn check(&self) {
        assert!(self.ops > 0, "empty: no operation ran");
    }
}

/// `hit` and `hit_json`: the same cached call, answered as a `CachedResponse` or as its wire JSON text.
struct Hit {
    rt: Runtime,
    json: bool,
    executions: u64,
    tally: Tally,
}

fn hit() -> Box<dyn Case> {
    Hit::warmed(false)
}

fn hit_json() -> Box<dyn Case> {
    Hit::warmed(true)
}

impl Hit {
    fn warmed(json: bool) -> Box<dyn Case> {
        let rt = runtime();
        let first = rt.block_on(cached_hit(HIT_ID)).expect("the first call");
        assert!(
            first.is_complete(),
            "the first call must complete: {}",
            first.to_json()
        );
        let mut case = Self {
            rt,
            json,
            executions: EXECUTIONS.load(Ordering::Relaxed),
            tally: Tally::default(),
        };
        case.run(WARM_UP);
        case.check();
        Box::new(case)
    }
}

impl Case for Hit {
    fn run(&mut self, n: u64) {
        let ok = self.rt.block_on(async {
            let mut ok = 0;
            for _ in 0..n {
                let response = cached_hit(black_box(HIT_ID)).await.expect("a hit");
                ok += u64::from(response.is_complete());
                if self.json {
                    black_box(response.to_json_string());
                } else {
                    black_box(response);
                }
            }
            ok
        });
        self.tally.ops += n;
        self.tally.ok += ok;
    }

    fn check(&self) {
        self.tally.check("hit");
        assert_eq!(
            EXECUTIONS.load(Ordering::Relaxed),
            self.executions,
            "hit: the function body ran, so some call was not a hit"
        );
    }
}

/// `hit_moka_get`: a raw moka get of the same kind of value, keyed by a [`CacheKey`].
struct MokaGet {
    rt: Runtime,
    cache: moka::future::Cache<CacheKey, Arc<Value>>,
    keys: Vec<CacheKey>,
    next: usize,
    tally: Tally,
}

/// The key refcache derives for `lookup_user(id)`'s arguments.
fn key_of(id: u64) -> CacheKey {
    CacheKey::from_json("bench.lookup_user", "public", &json!({ "id": id })).expect("JSON args")
}

fn hit_moka_get() -> Box<dyn Case> {
    MokaGet::warmed(1, 10_000)
}

fn poll_moka_get() -> Box<dyn Case> {
    MokaGet::warmed(POLL_TASKS, POLL_TASKS)
}

impl MokaGet {
    fn warmed(entries: u64, capacity: u64) -> Box<dyn Case> {
        let rt = runtime();
        let cache = moka::future::Cache::new(capacity);
        let keys: Vec<CacheKey> = (0..entries).map(|i| key_of(HIT_ID + i)).collect();
        rt.block_on(async {
            for (i, key) in keys.iter().enumerate() {
                let value = json!({"id": i, "name": "Ada", "roles": ["admin", "dev"]});
                cache.insert(*key, Arc::new(value)).await;
            }
            cache.run_pending_tasks().await;
        });
        let mut case = Self {
            rt,
            cache,
            keys,
            next: 0,
            tally: Tally::default(),
        };
        case.run(WARM_UP);
        case.check();
        Box::new(case)
    }
}

impl Case for MokaGet {
    fn run(&mut self, n: u64) {
        let (ok, next) = self.rt.block_on(async {
            let mut ok = 0;
            let mut next = self.next;
            for _ in 0..n {
                // Stride through the keys as the poll strides through its references.
                next = (next + 7919) % self.keys.len();
                let value = self.cache.get(black_box(&self.keys[next])).await;
                ok += u64::from(value.is_some());
                black_box(value);
            }
            (ok, next)
        });
        self.next = next;
        self.tally.ops += n;
        self.tally.ok += ok;
    }

    fn check(&self) {
        self.tally.check("moka get");
    }
}

/// `hit_json_to_string`: `serde_json::to_string` of the value the hit answers.
struct JsonText {
    rt: Runtime,
    value: Value,
    tally: Tally,
}

fn hit_json_to_string() -> Box<dyn Case> {
    let rt = runtime();
    let value = rt.block_on(lookup_user(HIT_ID));
    let mut case = JsonText {
        rt,
        value,
        tally: Tally::default(),
    };
    case.run(WARM_UP);
    case.check();
    Box::new(case)
}

impl Case for JsonText {
    fn run(&mut self, n: u64) {
        let ok = self.rt.block_on(async {
            let mut ok = 0;
            for _ in 0..n {
                let text = serde_json::to_string(black_box(&self.value)).expect("JSON");
                ok += u64::from(!text.is_empty());
                black_box(text);
            }
            ok
        });
        self.tally.ops += n;
        self.tally.ok += ok;
    }

    fn check(&self) {
        self.tally.check("to_string");
    }
}

/// `miss` and `miss_direct_call`: new arguments every call.
struct Miss {
    rt: Runtime,
    cached: bool,
    next: u64,
    executions: u64,
    tally: Tally,
}

/// The first argument of the miss cases, far from the hit's.
const MISS_FIRST: u64 = 1_000_000;

fn miss() -> Box<dyn Case> {
    Miss::warmed(true)
}

fn miss_direct_call() -> Box<dyn Case> {
    Miss::warmed(false)
}

impl Miss {
    fn warmed(cached: bool) -> Box<dyn Case> {
        let mut case = Self {
            rt: runtime(),
            cached,
            next: MISS_FIRST,
            executions: EXECUTIONS.load(Ordering::Relaxed),
            tally: Tally::default(),
        };
        case.run(WARM_UP);
        case.check();
        Box::new(case)
    }
}

impl Case for Miss {
    fn run(&mut self, n: u64) {
        let first = self.next;
        let ok = self.rt.block_on(async {
            let mut ok = 0;
            for id in first..first + n {
                if self.cached {
                    let response = cached_miss(black_box(id)).await.expect("a miss");
                    ok += u64::from(response.is_complete());
                    black_box(response);
                } else {
                    let value = lookup_user(black_box(id)).await;
                    ok += u64::from(value.is_object());
                    black_box(value);
                }
            }
            ok
        });
        self.next += n;
        self.tally.ops += n;
        self.tally.ok += ok;
    }

    fn check(&self) {
        self.tally.check("miss");
        assert_eq!(
            EXECUTIONS.load(Ordering::Relaxed) - self.executions,
            self.tally.ops,
            "miss: the function body did not run once per call, so some call was not a miss"
        );
    }
}

/// The no-op job of the task cases.
fn noop(_: Value, _: TaskContext) -> BoxFuture<'static, Result<refcache::JsonText, TaskError>> {
    Box::pin(async { Ok(refcache::JsonText::default()) })
}

/// A submission of the no-op job with new arguments, as a caller builds it.
fn submission(i: u64) -> Submission {
    let args = json!({ "i": i });
    let key = CacheKey::from_json("bench.noop", "public", &args).expect("JSON args");
    let spec = TaskSpec::new(
        RefId::generate("refcache"),
        key,
        "bench.noop",
        "public",
        args,
    );
    Submission::new(spec, Some(Arc::new(noop)))
}

/// Submits one no-op task and waits until it is complete: whether it completed, and its reference.
async fn one_task(backend: &MemoryTaskBackend, i: u64) -> (bool, RefId) {
    let submitted = backend.submit(submission(i)).await.expect("submit");
    let ref_id = submitted.ref_id().clone();
    let done = backend.wait(&ref_id, None).await.expect("wait");
    let complete = done.is_some_and(|d| d.info.status == TaskStatus::Complete);
    (complete, ref_id)
}

/// `task`: one no-op task submitted to completion (building the submission included, as a caller pays it).
struct Task {
    rt: Runtime,
    backend: Arc<MemoryTaskBackend>,
    next: u64,
    tally: Tally,
}

fn task() -> Box<dyn Case> {
    let mut case = Task {
        rt: runtime(),
        backend: small_backend(),
        next: 0,
        tally: Tally::default(),
    };
    case.run(WARM_UP);
    case.check();
    Box::new(case)
}

impl Case for Task {
    fn run(&mut self, n: u64) {
        let first = self.next;
        let backend = &self.backend;
        let ok = self.rt.block_on(async {
            let mut ok = 0;
            for i in first..first + n {
                let (complete, ref_id) = one_task(backend, black_box(i)).await;
                ok += u64::from(complete);
                black_box(ref_id);
            }
            ok
        });
        self.next += n;
        self.tally.ops += n;
        self.tally.ok += ok;
    }

    fn check(&self) {
        self.tally.check("task");
    }
}

/// `task_spawn_oneshot`: a bare `tokio::spawn` whose task answers on a oneshot, awaited.
struct SpawnOneshot {
    rt: Runtime,
    tally: Tally,
}

fn task_spawn_oneshot() -> Box<dyn Case> {
    let mut case = SpawnOneshot {
        rt: runtime(),
        tally: Tally::default(),
    };
    case.run(WARM_UP);
    case.check();
    Box::new(case)
}

impl Case for SpawnOneshot {
    fn run(&mut self, n: u64) {
        let ok = self.rt.block_on(async {
            let mut ok = 0;
            for i in 0..n {
                let (tx, rx) = tokio::sync::oneshot::channel();
                tokio::spawn(async move {
                    let _ = tx.send(black_box(i));
                });
                ok += u64::from(rx.await == Ok(i));
            }
            ok
        });
        self.tally.ops += n;
        self.tally.ok += ok;
    }

    fn check(&self) {
        self.tally.check("spawn + oneshot");
    }
}

/// `poll`: `get_cached_result` of a finished task among [`POLL_TASKS`].
struct Poll {
    rt: Runtime,
    cache: RefCache,
    refs: Vec<String>,
    next: usize,
    tally: Tally,
}

fn poll() -> Box<dyn Case> {
    let rt = runtime();
    let mut config = MemoryBackendConfig::default();
    config.max_task_records = POLL_TASKS;
    let backend = Arc::new(MemoryTaskBackend::new(config));
    let cache = RefCache::builder()
        .backend(backend.clone())
        .expect("the poll case's cache");
    let refs = rt.block_on(async {
        let mut refs = Vec::with_capacity(POLL_TASKS as usize);
        for i in 0..POLL_TASKS {
            let (complete, ref_id) = one_task(&backend, i).await;
            assert!(complete, "task {i} of the poll setup did not complete");
            refs.push(ref_id.to_string());
        }
        refs
    });
    let mut case = Poll {
        rt,
        cache,
        refs,
        next: 0,
        tally: Tally::default(),
    };
    case.run(WARM_UP);
    case.check();
    Box::new(case)
}

impl Case for Poll {
    fn run(&mut self, n: u64) {
        let (ok, next) = self.rt.block_on(async {
            let mut ok = 0;
            let mut next = self.next;
            for _ in 0..n {
                next = (next + 7919) % self.refs.len();
                let response = self
                    .cache
                    .get_cached_result(black_box(&self.refs[next]))
                    .await
                    .expect("a tracked task");
                ok += u64::from(response.is_complete());
                black_box(response);
            }
            (ok, next)
        });
        self.next = next;
        self.tally.ops += n;
        self.tally.ok += ok;
    }

    fn check(&self) {
        self.tally.check("poll");
    }
}

/// `empty_mt`: the loop alone, in a worker task of the multi-threaded runtime.
struct EmptyMt {
    threads: Threads,
    ops: u64,
}

fn empty_mt() -> Box<dyn Case> {
    let mut threads = Threads::new();
    threads.warmed();
    Box::new(EmptyMt { threads, ops: 0 })
}

impl Case for EmptyMt {
    fn run(&mut self, n: u64) {
        self.threads.run(async move {
            for i in 0..n {
                black_box(i);
            }
        });
        self.ops += n;
    }

    fn check(&self) {
        assert!(self.ops > 0, "empty_mt: no operation ran");
    }
}

/// `miss_mt` and `miss_mt_direct_call`: the miss cases, from a worker task of a multi-threaded runtime.
struct MissMt {
    threads: Threads,
    cached: bool,
    next: u64,
    executions: u64,
    tally: Tally,
}

/// The first argument of the multi-threaded miss cases, far from the others'.
const MISS_MT_FIRST: u64 = 2_000_000_000;

fn miss_mt() -> Box<dyn Case> {
    MissMt::warmed(true)
}

fn miss_mt_direct_call() -> Box<dyn Case> {
    MissMt::warmed(false)
}

impl MissMt {
    fn warmed(cached: bool) -> Box<dyn Case> {
        let mut case = Self {
            threads: Threads::new(),
            cached,
            next: MISS_MT_FIRST,
            executions: EXECUTIONS.load(Ordering::Relaxed),
            tally: Tally::default(),
        };
        case.run(WARM_UP);
        case.check();
        case.threads.warmed();
        Box::new(case)
    }
}

impl Case for MissMt {
    fn run(&mut self, n: u64) {
        let first = self.next;
        let cached = self.cached;
        let ok = self.threads.run(async move {
            let mut ok = 0;
            for id in first..first + n {
                if cached {
                    let response = cached_miss_mt(black_box(id)).await.expect("a miss");
                    ok += u64::from(response.is_complete());
                    black_box(response);
                } else {
                    let value = lookup_user(black_box(id)).await;
                    ok += u64::from(value.is_object());
                    black_box(value);
                }
            }
            ok
        });
        self.next += n;
        self.tally.ops += n;
        self.tally.ok += ok;
    }

    fn check(&self) {
        self.tally.check("miss_mt");
        assert_eq!(
            EXECUTIONS.load(Ordering::Relaxed) - self.executions,
            self.tally.ops,
            "miss_mt: the function body did not run once per call, so some call was not a miss"
        );
    }
}

/// `task_mt`: the task case, from a worker task of a multi-threaded runtime.
struct TaskMt {
    threads: Threads,
    backend: Arc<MemoryTaskBackend>,
    next: u64,
    tally: Tally,
}

fn task_mt() -> Box<dyn Case> {
    let mut case = TaskMt {
        threads: Threads::new(),
        backend: small_backend(),
        next: 0,
        tally: Tally::default(),
    };
    case.run(WARM_UP);
    case.check();
    case.threads.warmed();
    Box::new(case)
}

impl Case for TaskMt {
    fn run(&mut self, n: u64) {
        let first = self.next;
        let backend = self.backend.clone();
        let ok = self.threads.run(async move {
            let mut ok = 0;
            for i in first..first + n {
                let (complete, ref_id) = one_task(&backend, black_box(i)).await;
                ok += u64::from(complete);
                black_box(ref_id);
            }
            ok
        });
        self.next += n;
        self.tally.ops += n;
        self.tally.ok += ok;
    }

    fn check(&self) {
        self.tally.check("task_mt");
    }
}

/// `task_mt_spawn_oneshot`: `tokio::spawn` + oneshot, from a worker task of a multi-threaded runtime.
struct SpawnOneshotMt {
    threads: Threads,
    tally: Tally,
}

fn task_mt_spawn_oneshot() -> Box<dyn Case> {
    let mut case = SpawnOneshotMt {
        threads: Threads::new(),
        tally: Tally::default(),
    };
    case.run(WARM_UP);
    case.check();
    case.threads.warmed();
    Box::new(case)
}

impl Case for SpawnOneshotMt {
    fn run(&mut self, n: u64) {
        let ok = self.threads.run(async move {
            let mut ok = 0;
            for i in 0..n {
                let (tx, rx) = tokio::sync::oneshot::channel();
                tokio::spawn(async move {
                    let _ = tx.send(black_box(i));
                });
                ok += u64::from(rx.await == Ok(i));
            }
            ok
        });
        self.tally.ops += n;
        self.tally.ok += ok;
    }

    fn check(&self) {
        self.tally.check("spawn + oneshot (multi-threaded)");
    }
}
