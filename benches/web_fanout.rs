//! Fan-out of the live task page (issue 18 §5): 1,000 server-sent-event subscribers to one task's
//! `/api/tasks/{ref_id}/events`, on loopback. Each output chunk's latency is the time from the task writing it to
//! the **last** subscriber reading it; the server's memory is its RSS growth per subscriber.
//!
//! The server runs in a child process (this binary again, with `WEB_FANOUT_SERVER=1`), so that its RSS holds only
//! what serving costs; the subscribers are plain TCP readers in this process. The task writes a 64-byte chunk each
//! time the parent asks on the child's stdin, and the child answers `sent` with nothing else in between.
//!
//! ```text
//! cargo bench -p refcache-benches --all-features --bench web_fanout            # 1,000 subscribers, 100 chunks
//! WEB_FANOUT_SUBSCRIBERS=10 cargo bench -p refcache-benches --all-features --bench web_fanout
//! WEB_FANOUT_READERS=1 cargo bench -p refcache-benches --all-features --bench web_fanout   # 1,000 subscribed, 1 read
//! ```
//!
//! The readers share the 2 cores with the server, so the run also prints the CPU time each side used per chunk
//! (from `/proc/<pid>/stat`). With `WEB_FANOUT_READERS=N`, only the first N subscribers are read once they have
//! their first event; the others stay connected and subscribed (the server still writes every event to them), so
//! the client's share of the latency drops out. The bounds are checked only for the full run.
//!
//! It fails (exit 1) when the p99 is over 50 ms or a subscriber costs 64 KiB or more.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use refcache::web::WebRefCache;
use refcache::{Actor, ActorKind, RefCache, TaskContext, cached};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

const CHUNK: usize = 64;
const TOKEN: &str = "bench-token";

static CACHE: LazyLock<RefCache> = LazyLock::new(RefCache::new);
static ASKS: LazyLock<Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<()>>>> =
    LazyLock::new(Default::default);
static SENT: LazyLock<Mutex<Option<tokio::sync::mpsc::UnboundedSender<()>>>> =
    LazyLock::new(Default::default);

/// Writes one 64-byte chunk per ask, `chunks` in all.
#[cached(async_timeout = 0.01, cache = CACHE)]
async fn emitter(chunks: u32, ctx: TaskContext) -> u32 {
    let mut asks = ASKS.lock().unwrap().take().expect("one emitter");
    let sent = SENT.lock().unwrap().clone().expect("the sent channel");
    for i in 0..chunks {
        if asks.recv().await.is_none() {
            break;
        }
        let line = format!("chunk {i:08} ");
        let text = format!("{line:-<width$}\n", width = CHUNK - 1);
        ctx.stdout(&text);
        let _ = sent.send(());
    }
    chunks
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// The child: the page's server and the task; stdin `chunk` asks for a chunk, stdout says `sent`.
async fn server(chunks: u32) {
    let (ask, asks) = tokio::sync::mpsc::unbounded_channel();
    let (sent, mut sent_rx) = tokio::sync::mpsc::unbounded_channel();
    *ASKS.lock().unwrap() = Some(asks);
    *SENT.lock().unwrap() = Some(sent);
    let web = WebRefCache::new(CACHE.clone()).with_token(TOKEN, Actor::user("bench"));
    let app: axum::Router = refcache::web::router(web);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let task = Actor::user("bench")
        .as_principal(ActorKind::Agent)
        .scope(emitter(chunks))
        .await
        .unwrap();
    println!("ready {addr} {}", task.ref_id());
    let mut stdin = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = stdin.next_line().await {
        if line == "chunk" {
            ask.send(()).unwrap();
            sent_rx.recv().await;
            println!("sent");
        }
    }
}

/// How many subscribers have each chunk, and when the last one got it.
struct Arrivals {
    subscribers: usize,
    counts: Vec<AtomicUsize>,
    last: Vec<Mutex<Option<Instant>>>,
    all: tokio::sync::Notify,
}

/// One subscriber: connects, then counts each chunk's event as it arrives (by its id, the offset after it).
async fn subscribe(
    addr: String,
    ref_id: String,
    chunks: usize,
    arrivals: Arc<Arrivals>,
    ready: tokio::sync::mpsc::UnboundedSender<()>,
    read: bool,
) {
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let request = format!(
        "GET /api/tasks/{ref_id}/events HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {TOKEN}\r\n\
         Accept: text/event-stream\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut buffer = Vec::new();
    let mut readied = false;
    let mut got = 0;
    let mut bytes = [0u8; 8192];
    while got < chunks {
        let n = stream.read(&mut bytes).await.unwrap();
        assert!(n > 0, "the stream ended early");
        let now = Instant::now();
        buffer.extend_from_slice(&bytes[..n]);
        let text = String::from_utf8_lossy(&buffer).into_owned();
        if !readied && text.contains("event: status") {
            readied = true;
            let _ = ready.send(());
            if !read {
                // Subscribed and connected, never read again: the server still writes to it.
                let _keep = stream;
                return std::future::pending().await;
            }
        }
        for line in text.lines() {
            if let Some(id) = line.strip_prefix("id: ")
                && let Ok(offset) = id.trim().parse::<usize>()
            {
                let index = (offset / CHUNK).min(chunks);
                while got < index {
                    let n = arrivals.counts[got].fetch_add(1, Ordering::AcqRel) + 1;
                    if n == arrivals.subscribers {
                        *arrivals.last[got].lock().unwrap() = Some(now);
                        arrivals.all.notify_one();
                    }
                    got += 1;
                }
            }
        }
        // Keep a partial last line for the next read.
        let keep = buffer
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(0, |p| p + 1);
        buffer.drain(..keep);
    }
}

/// CPU time (user + system) a process used so far, in ms.
fn cpu_ms(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The fields after the command's closing parenthesis; utime and stime are the 12th and 13th of them.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    // Linux reports them in USER_HZ, 100 a second on every architecture it runs on.
    ticks * 10.0
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

#[tokio::main]
async fn main() {
    let chunks: u32 = std::env::var("WEB_FANOUT_CHUNKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    if std::env::var_os("WEB_FANOUT_SERVER").is_some() {
        return server(chunks).await;
    }
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing: then run small.
    let benching = std::env::args().any(|a| a == "--bench");
    let subscribers: usize = std::env::var("WEB_FANOUT_SUBSCRIBERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if benching { 1000 } else { 10 });
    let readers_read: usize = std::env::var("WEB_FANOUT_READERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(subscribers)
        .min(subscribers);
    let mut child = tokio::process::Command::new(std::env::current_exe().unwrap())
        .env("WEB_FANOUT_SERVER", "1")
        .env("WEB_FANOUT_CHUNKS", chunks.to_string())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = child.id().unwrap();
    let mut to_child = child.stdin.take().unwrap();
    let mut from_child = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let ready = from_child.next_line().await.unwrap().unwrap();
    let mut words = ready.split(' ').skip(1);
    let (addr, ref_id) = (
        words.next().unwrap().to_owned(),
        words.next().unwrap().to_owned(),
    );
    // Warm the server up with one subscriber's worth of work, then measure from there.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = rss_kib(pid);
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::unbounded_channel();
    let arrivals = Arc::new(Arrivals {
        subscribers: readers_read,
        counts: (0..chunks).map(|_| AtomicUsize::new(0)).collect(),
        last: (0..chunks).map(|_| Mutex::new(None)).collect(),
        all: tokio::sync::Notify::new(),
    });
    let mut readers = Vec::new();
    for i in 0..subscribers {
        readers.push(tokio::spawn(subscribe(
            addr.clone(),
            ref_id.clone(),
            chunks as usize,
            arrivals.clone(),
            ready_tx.clone(),
            i < readers_read,
        )));
    }
    for _ in 0..subscribers {
        ready_rx.recv().await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = rss_kib(pid);
    let (server_cpu, client_cpu) = (cpu_ms(&pid.to_string()), cpu_ms("self"));
    let mut latencies = Vec::new();
    for i in 0..chunks as usize {
        let asked = Instant::now();
        to_child.write_all(b"chunk\n").await.unwrap();
        let sent = from_child.next_line().await.unwrap().unwrap();
        assert_eq!(sent, "sent");
        // Wait until every subscriber has it (bounded: 10 s).
        let deadline = asked + Duration::from_secs(10);
        let last = loop {
            if let Some(last) = *arrivals.last[i].lock().unwrap() {
                break last;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "chunk {i} did not reach every subscriber in 10 s"
            );
            let _ = tokio::time::timeout(left, arrivals.all.notified()).await;
        };
        latencies.push(last.duration_since(asked).as_secs_f64() * 1000.0);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let server_cpu = (cpu_ms(&pid.to_string()) - server_cpu) / f64::from(chunks);
    let client_cpu = (cpu_ms("self") - client_cpu) / f64::from(chunks);
    for reader in readers {
        reader.abort();
    }
    let _ = child.kill().await;
    latencies.sort_by(f64::total_cmp);
    let per_subscriber = (after.saturating_sub(before)) as f64 / subscribers as f64;
    let (p50, p99, max) = (
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies[latencies.len() - 1],
    );
    println!(
        "web_fanout: {subscribers} subscribers ({readers_read} read), {chunks} chunks of {CHUNK} B: chunk to the \
         last reader p50 {p50:.1} ms, p99 {p99:.1} ms, max {max:.1} ms; server RSS {before} KiB -> {after} KiB, \
         {per_subscriber:.1} KiB per subscriber; CPU per chunk: server {server_cpu:.1} ms, readers (this \
         process) {client_cpu:.1} ms"
    );
    if benching && readers_read == subscribers && (p99 > 50.0 || per_subscriber >= 64.0) {
        eprintln!("web_fanout: over the bound (p99 <= 50 ms, < 64 KiB per subscriber)");
        std::process::exit(1);
    }
}
