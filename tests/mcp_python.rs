//! The official Python MCP SDK drives refcache's input flow (#19 §1): a tool asks mid-task, and the answer comes
//! through `tasks/update` (a 2026-07-28 client that declares the tasks extension) and through the `respond_task`
//! tool (a legacy client without it). The script, `tests/support/sep2663_client.py`, carries the small tasks
//! client the SDK lacks, and asserts as it goes; this test checks its exit status and its summary.
//!
//! The SDK is pinned ([`MCP_SDK`]) and installed into a fresh venv in a temp dir; pip's cache lives under
//! `target/tmp/pip-cache`, so reruns do not download again. Without `python3` (3.10+, with `venv`) or without
//! network for the first install, the test fails and says so: it never skips.
//!
//! The server is in-process: the test's own streamable-HTTP rmcp server on a free localhost port, with the real
//! RefCache and memory backend.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use refcache::RefCache;
use refcache::mcp::McpRefCache;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use serde_json::{Value, json};

#[path = "support/asking_server.rs"]
mod asking_server;
use asking_server::Server;

/// The official SDK's version, pinned.
const MCP_SDK: &str = "mcp==2.3.0";

/// The longest the script may run once pip has its cache (it bounds each of its own waits by 60 s too).
const SCRIPT_PATIENCE: Duration = Duration::from_secs(180);

/// A temp dir removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(prefix: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir = std::env::temp_dir().join(format!("{prefix}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `command`, panicking with its output (and `hint`) unless it succeeds.
fn run(command: &mut Command, what: &str, hint: &str) -> Output {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("{what}: could not start it ({e}). {hint}"));
    assert!(
        output.status.success(),
        "{what} failed ({}). {hint}\n--- stdout\n{}\n--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    output
}

/// A venv in `dir` with the pinned SDK: its python.
fn venv_with_sdk(dir: &Path) -> PathBuf {
    let hint = "This test needs python3 3.10 or newer with the venv module (Debian/Ubuntu: apt-get install \
                python3 python3-venv); it never skips.";
    run(
        Command::new("python3").args([
            "-c",
            "import sys; assert sys.version_info >= (3, 10), sys.version",
        ]),
        "python3 (3.10 or newer)",
        hint,
    );
    let started = Instant::now();
    let venv = dir.join("venv");
    run(
        Command::new("python3").arg("-m").arg("venv").arg(&venv),
        "python3 -m venv",
        hint,
    );
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("pip-cache");
    // `--no-compile`: byte-compiling all 31 packages at install is most of the install's time; Python compiles
    // the modules the script imports as it imports them.
    run(
        Command::new(venv.join("bin/pip"))
            .args([
                "install",
                "--quiet",
                "--no-compile",
                "--disable-pip-version-check",
                MCP_SDK,
            ])
            .env("PIP_CACHE_DIR", &cache),
        &format!("pip install {MCP_SDK}"),
        "The first run downloads the SDK from PyPI (about 70 MB); later runs use the cache in target/tmp/pip-cache.",
    );
    eprintln!(
        "mcp_python: venv with {MCP_SDK} ready in {:.1} s (pip cache {})",
        started.elapsed().as_secs_f64(),
        cache.display()
    );
    venv.join("bin/python")
}

/// Serves the asking server over streamable HTTP on a free localhost port: its URL.
async fn serve() -> String {
    let cache = RefCache::builder().build().unwrap();
    // Every session (and every stateless request) gets a server; they share the cache.
    let service = StreamableHttpService::new(
        move || Ok(Server::new(McpRefCache::new(cache.clone()))),
        LocalSessionManager::default().into(),
        StreamableHttpServerConfig::default(),
    );
    let app = axum::Router::new().nest_service("/mcp", service);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/mcp", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_python_sdk_answers_through_tasks_update_and_respond_task() {
    let dir = TempDir::new("refcache-mcp-python");
    let python = tokio::task::spawn_blocking({
        let dir = dir.0.clone();
        move || venv_with_sdk(&dir)
    })
    .await
    .unwrap();
    let url = serve().await;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/sep2663_client.py");
    let started = Instant::now();
    let child = tokio::process::Command::new(&python)
        .arg(&script)
        .arg(&url)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(SCRIPT_PATIENCE, child)
        .await
        .unwrap_or_else(|_| panic!("the Python client did not finish within {SCRIPT_PATIENCE:?}"))
        .expect("run the Python client");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the Python client failed ({})\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        output.status
    );
    eprintln!(
        "mcp_python: the client's three flows took {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let summary: Value = serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("a JSON summary last ({e}):\n{stdout}"));

    // tasks/update: the task asked, a bad answer named the field, the good one completed it.
    let update = &summary["tasks_update"];
    assert_eq!(update["question"], "Delete 3 records?", "{summary}");
    assert_eq!(
        update["status_message"],
        "Input required: Delete 3 records?"
    );
    let statuses = update["statuses"].as_array().unwrap();
    assert_eq!(
        statuses[statuses.len() - 2..],
        [json!("input_required"), json!("completed")],
        "{summary}"
    );
    assert!(
        update["bad_answer"].as_str().unwrap().contains("`confirm`"),
        "{summary}"
    );
    assert_eq!(update["value"], json!({"deleted": 3}));
    assert_eq!(update["cancelled"], "cancelled");

    // respond_task: the structured question, a bad answer naming the field, then the value.
    let respond = &summary["respond_task"];
    assert_eq!(
        respond["question"]["message"], "Delete 4 records?",
        "{summary}"
    );
    assert!(
        respond["bad_answer"]
            .as_str()
            .unwrap()
            .contains("`confirm`")
    );
    assert_eq!(respond["value"], json!({"deleted": 4}));
}
