//! Record and value bytes on Redis (#15 §2): `stats()` reports what finished task records (their arguments with
//! them) and finished values hold in Redis, weighed as the in-process backend weighs them, and the figures fall as
//! records are deleted or cleaned up. Its own `redis-server`.
#![cfg(feature = "redis")]

use std::time::Duration;

use futures::future::BoxFuture;
use refcache_backends::redis::{RedisConfig, RedisServer, RedisTaskBackend};
use refcache_core::registry::TaskRegistration;
use refcache_core::{
    CacheKey, JsonText, RefId, Submission, TaskBackend, TaskContext, TaskError, TaskSpec,
    TaskStatus,
};
use serde_json::{Value, json};

const PATIENCE: Duration = Duration::from_secs(30);
const REJECT: &str = "it.bytes.reject";
const ECHO: &str = "it.bytes.echo";
const KIB: u64 = 1 << 10;

fn reject(args: Value, _ctx: TaskContext) -> BoxFuture<'static, Result<JsonText, TaskError>> {
    Box::pin(async move {
        let n = args["blob"].as_str().map_or(0, str::len);
        Err(TaskError::new(format!("refused {n} bytes")).permanent())
    })
}

fn echo(args: Value, _ctx: TaskContext) -> BoxFuture<'static, Result<JsonText, TaskError>> {
    Box::pin(async move { Ok(JsonText::from(&args["blob"])) })
}

inventory::submit!(TaskRegistration::new(|| REJECT, reject));
inventory::submit!(TaskRegistration::new(|| ECHO, echo));

async fn run(b: &RedisTaskBackend, task: &'static str, args: Value) -> RefId {
    let key = CacheKey::from_json(task, "it", &args).unwrap();
    let ref_id = RefId::generate("it");
    b.submit(Submission::new(
        TaskSpec::new(ref_id.clone(), key, task, "it", args),
        None,
    ))
    .await
    .expect("submit");
    let done = b
        .wait(&ref_id, Some(tokio::time::Instant::now() + PATIENCE))
        .await
        .expect("wait")
        .expect("known");
    assert!(done.info.status.is_terminal(), "{:?}", done.info);
    ref_id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_weigh_what_finished_records_and_values_hold() {
    let server = RedisServer::start()
        .expect("redis-server must be installed (Debian: apt-get install redis-server)");
    let b = RedisTaskBackend::new(RedisConfig::from_url(&server.url()).unwrap()).unwrap();
    let empty = b.stats().await.unwrap();
    assert_eq!((empty.record_bytes, empty.value_bytes), (0, 0));

    // 20 failed calls with 100 KiB arguments each: the arguments stay with the record (to re-run it).
    let mut failed = Vec::new();
    for i in 0..20 {
        let blob = format!("{i:04}{}", "a".repeat(100 * KIB as usize - 4));
        failed.push(run(&b, REJECT, json!({ "blob": blob })).await);
    }
    let stats = b.stats().await.unwrap();
    assert_eq!(stats.by_status.get(&TaskStatus::Failed), Some(&20));
    assert!(
        (20 * 100 * KIB..20 * 108 * KIB).contains(&stats.record_bytes),
        "20 records of 100 KiB of arguments weigh {} bytes",
        stats.record_bytes
    );
    assert_eq!(stats.value_bytes, 0, "a failed task has no value");

    // One complete call with a 50 KiB value (and its 50 KiB arguments).
    let value = "v".repeat(50 * KIB as usize);
    run(&b, ECHO, json!({ "blob": value })).await;
    let with_value = b.stats().await.unwrap();
    assert!(
        (50 * KIB..54 * KIB).contains(&with_value.value_bytes),
        "a 50 KiB value weighs {} bytes",
        with_value.value_bytes
    );
    assert!(
        with_value.record_bytes >= stats.record_bytes + 50 * KIB,
        "{} then {}",
        stats.record_bytes,
        with_value.record_bytes
    );

    // Deleting half of the failed records takes their bytes with them; cleanup the rest.
    for ref_id in &failed[..10] {
        assert!(b.delete(ref_id).await.unwrap());
    }
    let half = b.stats().await.unwrap();
    assert!(
        with_value.record_bytes - half.record_bytes >= 10 * 100 * KIB,
        "{} then {}",
        with_value.record_bytes,
        half.record_bytes
    );
    assert_eq!(b.cleanup(Duration::ZERO).await.unwrap(), 11);
    let none = b.stats().await.unwrap();
    assert_eq!((none.record_bytes, none.value_bytes), (0, 0), "{none:?}");
}

/// `max_record_bytes` bounds the finished records on Redis: past it the oldest go (within a lease period), the
/// newest stay, and a complete record that goes takes its value with it (one lifetime).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_record_bytes_drops_the_oldest_finished_records() {
    let server = RedisServer::start()
        .expect("redis-server must be installed (Debian: apt-get install redis-server)");
    let bound = 1 << 20;
    let b = RedisTaskBackend::new(
        RedisConfig::from_url(&server.url())
            .unwrap()
            .lease(Duration::from_secs(1))
            .max_record_bytes(bound),
    )
    .unwrap();
    // The oldest: a complete task whose value must go with its record.
    let first = run(&b, ECHO, json!({ "blob": "x".repeat(100 * KIB as usize) })).await;
    let mut failed = Vec::new();
    for i in 0..20 {
        let blob = format!("{i:04}{}", "a".repeat(100 * KIB as usize - 4));
        failed.push(run(&b, REJECT, json!({ "blob": blob })).await);
    }
    let give_up = tokio::time::Instant::now() + PATIENCE;
    let stats = loop {
        let stats = b.stats().await.unwrap();
        if stats.record_bytes <= bound {
            break stats;
        }
        assert!(
            tokio::time::Instant::now() < give_up,
            "records still weigh {} bytes, over the bound {bound}",
            stats.record_bytes
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        stats.record_bytes > bound - 2 * 108 * KIB,
        "only what is past the bound goes: {} bytes kept",
        stats.record_bytes
    );
    assert!(b.get(&first).await.unwrap().is_none(), "the oldest went");
    assert_eq!(stats.value_bytes, 0, "its value went with it");
    for ref_id in &failed[failed.len() - 5..] {
        let kept = b.get(ref_id).await.unwrap().expect("the newest stay");
        assert_eq!(kept.info.status, TaskStatus::Failed);
    }
}

/// A connection of the test's own to `server`.
async fn admin(server: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// A 100 KiB argument, its own for each `i`.
fn blob(i: usize) -> String {
    format!("{i:04}{}", "a".repeat(100 * KIB as usize - 4))
}

/// `HSTRLEN` calls the server has run so far (the `trim` scan weighs each record with two; a task's own path runs
/// one, in its terminal transition).
async fn weighed(conn: &mut redis::aio::MultiplexedConnection) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(conn)
        .await
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("cmdstat_hstrlen:calls="))
        .and_then(|v| v.split(',').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The `trim` scan is skipped while what the last scan kept plus what finished since is within
/// `max_record_bytes` (the short way: nothing read, nothing dropped), and runs as soon as that could be over it,
/// dropping what the long way drops: the oldest past the bound, the newest kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_trim_scan_is_skipped_only_while_nothing_could_be_over_the_bound() {
    let server = RedisServer::start()
        .expect("redis-server must be installed (Debian: apt-get install redis-server)");
    let bound = 1 << 20;
    let lease = Duration::from_secs(1);
    let b = RedisTaskBackend::new(
        RedisConfig::from_url(&server.url())
            .unwrap()
            .lease(lease)
            .max_record_bytes(bound),
    )
    .unwrap();
    let mut conn = admin(&server).await;
    let mut failed = Vec::new();
    for i in 0..5 {
        failed.push(run(&b, REJECT, json!({ "blob": blob(i) })).await);
    }
    // Two periods (`lease / 3`) or more: a scan has run and kept all five.
    tokio::time::sleep(lease).await;
    let before = weighed(&mut conn).await;
    tokio::time::sleep(lease).await;
    assert_eq!(
        weighed(&mut conn).await,
        before,
        "within the bound, no scan reads a record"
    );
    for ref_id in &failed {
        assert!(b.get(ref_id).await.unwrap().is_some(), "within the bound");
    }
    for i in 5..20 {
        failed.push(run(&b, REJECT, json!({ "blob": blob(i) })).await);
    }
    // Until a scan after the last record: one during the runs may already have dropped the oldest while later
    // records put the total over again (seen: 1,565,910 bytes kept right after the oldest went).
    let give_up = tokio::time::Instant::now() + PATIENCE;
    let mut stats = b.stats().await.unwrap();
    while b.get(&failed[0]).await.unwrap().is_some() || stats.record_bytes > bound {
        assert!(
            tokio::time::Instant::now() < give_up,
            "20 records of 100 KiB past a bound of 1 MiB: {} bytes kept",
            stats.record_bytes
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        stats = b.stats().await.unwrap();
    }
    assert!(
        stats.record_bytes > bound - 2 * 108 * KIB,
        "{} bytes kept",
        stats.record_bytes
    );
    for ref_id in &failed[failed.len() - 5..] {
        assert!(b.get(ref_id).await.unwrap().is_some(), "the newest stay");
    }
}

const PRINTER: &str = "it.bytes.printer";
static PRINTER_DONE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Writes `kib` KiB of output, then waits for `PRINTER_DONE`.
fn printer(args: Value, ctx: TaskContext) -> BoxFuture<'static, Result<JsonText, TaskError>> {
    Box::pin(async move {
        let kib = args["kib"].as_u64().unwrap_or(0) as usize;
        let line = format!("{}\n", "o".repeat(KIB as usize - 1));
        for _ in 0..kib {
            ctx.output("stdout", &line);
        }
        while !PRINTER_DONE.load(std::sync::atomic::Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(JsonText::from(&json!("printed")))
    })
}

inventory::submit!(TaskRegistration::new(|| PRINTER, printer));

/// A task's output log counts towards `max_record_bytes` even when a scan ran while the task was still writing
/// it: that scan weighs finished records only and resets what the appends had added, so the log must be counted
/// again when the task ends, or the records could stay over the bound with every later scan skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_written_before_a_scan_still_counts_when_its_task_ends() {
    let server = RedisServer::start()
        .expect("redis-server must be installed (Debian: apt-get install redis-server)");
    let bound = 1 << 20;
    let lease = Duration::from_secs(1);
    let config = RedisConfig::from_url(&server.url())
        .unwrap()
        .lease(lease)
        .max_record_bytes(bound);
    let prefix = config.key_prefix.clone();
    let b = RedisTaskBackend::new(config).unwrap();
    let mut conn = admin(&server).await;
    let mut failed = Vec::new();
    for i in 0..5 {
        failed.push(run(&b, REJECT, json!({ "blob": blob(i) })).await);
    }

    // A task writes 600 KiB of output and keeps running.
    let args = json!({ "kib": 600 });
    let key = CacheKey::from_json(PRINTER, "it", &args).unwrap();
    let printing = RefId::generate("it");
    b.submit(Submission::new(
        TaskSpec::new(printing.clone(), key, PRINTER, "it", args),
        None,
    ))
    .await
    .expect("submit");
    let log = format!("{prefix}:out:{printing}");
    let scan_time = async |conn: &mut redis::aio::MultiplexedConnection| -> Option<String> {
        redis::cmd("HGET")
            .arg(format!("{prefix}:workers"))
            .arg("trim")
            .query_async(conn)
            .await
            .unwrap()
    };
    let give_up = tokio::time::Instant::now() + PATIENCE;
    loop {
        let len: u64 = redis::cmd("STRLEN")
            .arg(&log)
            .query_async(&mut conn)
            .await
            .unwrap();
        if len >= 600 * KIB {
            break;
        }
        assert!(
            tokio::time::Instant::now() < give_up,
            "the log holds {len} bytes"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A scan after the log was written (the records and the log could be over the bound: 5 × 100 KiB + 600 KiB):
    // it weighs the finished records only, within the bound, and drops nothing.
    let written = scan_time(&mut conn).await;
    while scan_time(&mut conn).await == written {
        assert!(tokio::time::Instant::now() < give_up, "no scan ran");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        b.get(&failed[0]).await.unwrap().is_some(),
        "nothing to drop yet"
    );

    // The task ends: its record, with its log, puts the finished records over the bound, and the oldest go.
    PRINTER_DONE.store(true, std::sync::atomic::Ordering::SeqCst);
    let done = b
        .wait(&printing, Some(tokio::time::Instant::now() + PATIENCE))
        .await
        .expect("wait")
        .expect("known");
    assert_eq!(done.info.status, TaskStatus::Complete, "{:?}", done.info);
    let give_up = tokio::time::Instant::now() + Duration::from_secs(10);
    while b.get(&failed[0]).await.unwrap().is_some() {
        assert!(
            tokio::time::Instant::now() < give_up,
            "the oldest record is still there: 5 × 100 KiB and a 600 KiB log past a bound of 1 MiB"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        b.get(&printing).await.unwrap().is_some(),
        "the newest stays"
    );
}
