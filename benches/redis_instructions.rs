//! The Redis backend's client-side cost per task as an instruction count (issue 17 §3): a steady measure on a
//! loaded machine, where CPU time moves by 2× between runs of one binary.
//!
//! A plain program (no criterion): it starts a private `redis-server`, runs `REDIS_TASKS` tasks (default 100) one
//! after another from submit to the poll that reads the value, in `local` mode and then in `workers` mode (a
//! replica and a worker in this process), and prints the wall time. Run it twice under callgrind, with two task
//! counts; the difference of the totals divided by the difference of the counts is the instructions one task
//! costs this process (every client role: replica, worker, event listeners, maintenance loops), without the
//! start-up. `redis-server` is a child process, which valgrind does not follow: its share is not counted.
//!
//! ```text
//! CARGO_TARGET_DIR=/work/tgt-redis cargo bench -p refcache-benches --features redis --bench redis_instructions --no-run
//! B=$(ls -t /work/tgt-redis/release/deps/redis_instructions-* | grep -v '\.d$' | head -1)
//! for n in 200 1200; do for mode in local workers; do
//!   REDIS_TASKS=$n REDIS_MODE=$mode valgrind --tool=callgrind --callgrind-out-file=/dev/null $B 2>&1 | grep Collected
//! done; done
//! ```
//!
//! `REDIS_MODE` = `local`, `workers` or `both` (the default). Each mode runs in its own key prefix.
//!
//! `REDIS_URL`: use that server instead of starting one (fresh, or at least without this bench's prefixes): to
//! count the server's instructions too, run a `redis-server` under callgrind and stop it with `SHUTDOWN NOSAVE`
//! after the bench (docs/benchmarks.md has the recipe).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use refcache::redis::{Mode, RedisConfig, RedisServer, RedisTaskBackend};
use refcache::registry::{self, TaskRegistration};
use refcache::{
    CacheKey, RefId, Submission, Submitted, TaskBackend, TaskOptions, TaskSpec, TaskStatus, cached,
};
use serde_json::json;

const NOOP: &str = "bench.redis.instructions.noop";
/// A bound on any wait; reached only if the backend is broken (callgrind runs this process ~50× slower).
const PATIENCE: Duration = Duration::from_secs(120);

#[cached(name = "bench.redis.instructions.noop")]
async fn noop(i: u64) -> u64 {
    i
}

static NEXT: AtomicU64 = AtomicU64::new(0);

/// One task from submit to the poll that reads its value; every one a miss (new arguments).
async fn one_task(backend: &dyn TaskBackend) {
    let i = NEXT.fetch_add(1, Ordering::Relaxed);
    let args = json!({ "i": i });
    let key = CacheKey::from_json(NOOP, "bench", &args).expect("JSON args");
    let ref_id = RefId::generate("bench");
    let spec = TaskSpec::new(ref_id.clone(), key, NOOP, "bench", args)
        .with_options(TaskOptions::default().ttl(Some(Duration::from_secs(600))));
    let job = registry::find(NOOP).map(TaskRegistration::job);
    match backend
        .submit(Submission::new(spec, job))
        .await
        .expect("submit")
    {
        Submitted::Started(_) => {}
        other => panic!("expected a new execution (a miss), got {other:?}"),
    }
    let done = backend
        .wait(&ref_id, Some(tokio::time::Instant::now() + PATIENCE))
        .await
        .expect("wait")
        .expect("the task's record");
    assert_eq!(done.info.status, TaskStatus::Complete, "{:?}", done.info);
    let polled = backend
        .get(&ref_id)
        .await
        .expect("get")
        .expect("the task's record");
    assert_eq!(polled.value.expect("a value").value, json!(i));
}

fn main() {
    assert!(
        registry::find(NOOP).is_some(),
        "the task `{NOOP}` is not registered"
    );
    let tasks: u64 = std::env::var("REDIS_TASKS")
        .ok()
        .map_or(100, |n| n.parse().expect("REDIS_TASKS is a number"));
    let modes = std::env::var("REDIS_MODE").unwrap_or_else(|_| "both".to_owned());
    let external = std::env::var("REDIS_URL").ok();
    let server = match &external {
        Some(_) => None,
        None => {
            Some(RedisServer::start().expect("a private redis-server (install `redis-server`)"))
        }
    };
    let url = external.unwrap_or_else(|| server.as_ref().expect("started").url());
    let config = |prefix: &str| {
        let mut config = RedisConfig::from_url(&url)
            .expect("the server's URL")
            .key_prefix(prefix)
            .max_queued(1_000_000);
        // Callgrind is slow: no answer may time out.
        config.command_timeout = Duration::from_secs(120);
        config
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    rt.block_on(async {
        let mut backends = Vec::new();
        if matches!(modes.as_str(), "local" | "both") {
            backends.push((
                "local",
                RedisTaskBackend::new(config("ins-local")).expect("a backend"),
                None,
            ));
        }
        if matches!(modes.as_str(), "workers" | "both") {
            backends.push((
                "workers",
                RedisTaskBackend::new(config("ins-workers").mode(Mode::Workers))
                    .expect("a replica"),
                Some(RedisTaskBackend::worker(config("ins-workers")).expect("a worker")),
            ));
        }
        for (name, backend, worker) in &backends {
            backend.start().await.expect("Redis answers");
            if let Some(worker) = worker {
                worker.start().await.expect("Redis answers");
            }
            // The scripts loaded, the connections made: the start-up is the same for every task count.
            one_task(backend).await;
            let started = Instant::now();
            for _ in 0..tasks {
                one_task(backend).await;
            }
            println!(
                "{name}: {tasks} tasks one after another in {:?}",
                started.elapsed()
            );
        }
        for (_, backend, worker) in &backends {
            if let Some(worker) = worker {
                let _ = worker.shutdown(Duration::from_secs(5)).await;
            }
            let _ = backend.shutdown(Duration::from_secs(5)).await;
        }
    });
}
