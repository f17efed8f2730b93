//! The live task page in a real browser (issue 18 §4): Debian's chromium, driven through chromedriver over plain
//! WebDriver HTTP. The tests fail, never skip, when either is missing (`apt-get install chromium chromium-driver`).
//!
//! Each test starts its own chromedriver (`--port=0`, in a process group of its own that a guard kills, browsers
//! included) and its own browser profile, and serves the page on a free loopback port. Every wait is for an event
//! on the page, bounded at 10 s.
//!
//! The page serves the process-wide default cache, and its "Run a command" form runs real processes through
//! `refcache::command::run_command` ([`PageRunner`]), the function an MCP `run_command` tool calls: the command is
//! a small script this binary writes (allowlisted by its absolute path; no shell is enabled), which notes each
//! run in a file, prints its process group, leaves a `sleep` running in that group and waits for a line on a FIFO
//! the test writes to.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use refcache::command::{CommandSpec, Commands, PageRunner, run_command};
use refcache::web::WebRefCache;
use refcache::{Actor, ActorKind, RefCache, TaskContext, cached};
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt;

#[path = "support/gates.rs"]
mod gates;
use gates::{gate, open};

#[path = "support/processes.rs"]
mod processes;
use processes::{alive_in_group, gone_within};

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/lib/chromium/chromium";
const PATIENCE: Duration = Duration::from_secs(10);

/// The process-wide default cache: the one `run_command` runs on, so the page's commands and the test's calls meet.
static CACHE: LazyLock<RefCache> = LazyLock::new(|| {
    refcache::default_cache()
        .expect("the default cache")
        .clone()
});

/// Prints `lines` lines, waits at its gate, prints `bye` and ends.
#[cached(async_timeout = 0.05, cache = CACHE)]
async fn printer(label: String, lines: u32, ctx: TaskContext) -> Result<u32, String> {
    for i in 0..lines {
        ctx.stdout(&format!("{label} line {i}\n"));
    }
    gate(&label).notified().await;
    ctx.stdout("bye\n");
    Ok(lines)
}

/// Asks for a confirmation (and an optional reason), then answers what it got.
#[cached(async_timeout = 0.05, cache = CACHE)]
async fn confirm(label: String, ctx: TaskContext) -> Result<Value, String> {
    let schema = json!({
        "type": "object",
        "properties": {
            "confirm": {"type": "boolean", "description": "yes, delete them"},
            "reason": {"type": "string", "enum": ["old", "duplicate"]},
        },
        "required": ["confirm"],
    });
    ctx.ask(format!("Delete the {label} records?"), schema, None)
        .await
        .map_err(|e| e.to_string())
}

/// `n` items `{id, name}`: a large value, previewed and paged.
#[cached(async_timeout = 5.0, cache = CACHE)]
async fn items(n: u64) -> Vec<Value> {
    (0..n)
        .map(|i| json!({"id": i, "name": format!("item-{i}")}))
        .collect()
}

/// The browser tests' command (see the module's documentation). Arguments: a label, the FIFO it waits on, the file
/// it notes its runs in.
const SCRIPT: &str = "#!/bin/sh
echo run >> \"$3\"
echo \"started $1 pgid $$\"
sleep 300 &
echo \"child $!\"
read line < \"$2\"
echo \"finished $1\"
";

/// The script's path, written (and the commands installed, allowing only it) once per test binary.
fn script() -> &'static str {
    static PATH: LazyLock<String> = LazyLock::new(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("web-browser-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("page-command.sh");
        std::fs::write(&path, SCRIPT).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let path = path.to_str().unwrap().to_owned();
        Commands::new()
            .allow([path.clone()])
            .grace(Duration::from_millis(800))
            .install()
            .expect("the test's command settings are valid");
        path
    });
    &PATH
}

/// One run of the script: its label, FIFO and runs file.
struct Command {
    label: String,
    fifo: PathBuf,
    runs: PathBuf,
}

impl Command {
    fn new(label: &str) -> Self {
        let dir = Path::new(script()).parent().unwrap().join(label);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("fifo");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success(), "mkfifo {}", fifo.display());
        Self {
            label: label.to_owned(),
            fifo,
            runs: dir.join("runs"),
        }
    }

    fn args(&self) -> Vec<String> {
        vec![
            self.label.clone(),
            self.fifo.display().to_string(),
            self.runs.display().to_string(),
        ]
    }

    /// The spec the page's form makes of these arguments, as an MCP `run_command` would send it.
    fn spec(&self) -> CommandSpec {
        CommandSpec::new(script(), self.args())
    }

    /// The arguments as typed into the form's textarea, one per line.
    fn typed(&self) -> String {
        self.args().join("\n")
    }

    /// How many times the script started.
    fn runs(&self) -> usize {
        std::fs::read_to_string(&self.runs).map_or(0, |t| t.lines().count())
    }

    /// Lets the script go on to its end (a line on its FIFO).
    async fn release(&self) {
        let fifo = self.fifo.clone();
        let write = tokio::task::spawn_blocking(move || {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
            f.write_all(b"go\n").unwrap();
        });
        tokio::time::timeout(PATIENCE, write)
            .await
            .expect("the script reads its FIFO within 10 s")
            .unwrap();
    }
}

/// `started LABEL pgid N` in the output: N.
fn pgid_in(output: &str) -> i32 {
    let rest = output.split(" pgid ").nth(1).expect("a pgid line");
    rest.split_whitespace().next().unwrap().parse().unwrap()
}

/// `child N` in the output: N.
fn child_in(output: &str) -> i32 {
    let rest = output.split("child ").nth(1).expect("a child line");
    rest.split_whitespace().next().unwrap().parse().unwrap()
}

/// The process `pid` still runs (exists and is not a zombie).
fn runs_still(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z")
    })
}

async fn serve() -> String {
    script();
    let web = WebRefCache::new(CACHE.clone())
        .with_token("token-a", Actor::user("alice"))
        .with_token("token-b", Actor::user("bob"))
        .with_commands(Arc::new(PageRunner));
    let app: axum::Router = refcache::web::router(web);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

fn agent(user: &str) -> Actor {
    Actor::user(user).as_principal(ActorKind::Agent)
}

/// chromedriver in its own process group: killed with every browser it started when dropped.
struct Driver {
    pgid: i32,
    url: String,
    _dir: TempDir,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(self.pgid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// A directory removed when dropped.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn driver() -> Driver {
    for binary in [CHROMEDRIVER, CHROMIUM] {
        assert!(
            Path::new(binary).exists(),
            "{binary} is missing: install Debian's browser and driver with \
             `apt-get update && apt-get install -y chromium chromium-driver` (.ci/run does)"
        );
    }
    let dir = std::env::temp_dir().join(format!("refcache-web-{}", uuid_like()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut child = tokio::process::Command::new(CHROMEDRIVER)
        .args(["--port=0", "--log-level=WARNING"])
        // Crash reports go under XDG_CONFIG_HOME, whatever the profile says.
        .env("XDG_CONFIG_HOME", &dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .stdin(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("start chromedriver");
    let pgid = i32::try_from(child.id().unwrap()).unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let port = tokio::time::timeout(PATIENCE, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(rest) = line.split("started successfully on port ").nth(1) {
                return rest.trim_end_matches('.').trim().to_owned();
            }
        }
        panic!("chromedriver exited before it said its port");
    })
    .await
    .expect("chromedriver starts within 10 s");
    tokio::spawn(async move {
        while let Ok(Some(_)) = lines.next_line().await {}
        drop(child);
    });
    Driver {
        pgid,
        url: format!("http://127.0.0.1:{port}"),
        _dir: TempDir(dir),
    }
}

fn uuid_like() -> String {
    format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

/// One browser session over WebDriver.
struct Browser {
    http: reqwest::Client,
    session: String,
    _profile: TempDir,
}

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

impl Browser {
    async fn open(driver: &Driver) -> Self {
        let profile = std::env::temp_dir().join(format!("refcache-web-profile-{}", uuid_like()));
        let http = reqwest::Client::new();
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    "--no-first-run", "--no-default-browser-check", "--disable-extensions",
                    "--window-size=1280,900",
                    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
                    format!("--user-data-dir={}", profile.display()),
                ],
            },
        }}});
        let answer: Value = http
            .post(format!("{}/session", driver.url))
            .json(&capabilities)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let session = answer["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {answer}"))
            .to_owned();
        Self {
            http,
            session: format!("{}/session/{session}", driver.url),
            _profile: TempDir(profile),
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let mut request = self.http.request(method, format!("{}{path}", self.session));
        if !body.is_null() {
            request = request.json(&body);
        }
        let answer: Value = request.send().await.unwrap().json().await.unwrap();
        if answer["value"].get("error").is_some() {
            panic!("WebDriver {path}: {answer}");
        }
        answer["value"].clone()
    }

    async fn goto(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", json!({ "url": url }))
            .await;
    }

    async fn js(&self, script: &str) -> Value {
        self.call(
            reqwest::Method::POST,
            "/execute/sync",
            json!({"script": script, "args": []}),
        )
        .await
    }

    /// Waits until `script` returns something truthy (checked every 50 ms, for 10 s); answers it.
    async fn wait(&self, what: &str, script: &str) -> Value {
        let start = Instant::now();
        loop {
            let value = self.js(script).await;
            let truthy = !matches!(value, Value::Null | Value::Bool(false))
                && value != json!("")
                && value != json!(0);
            if truthy {
                return value;
            }
            assert!(
                start.elapsed() < PATIENCE,
                "waited 10 s for {what}; the page shows: {}",
                self.js("return document.body.innerText").await
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn element(&self, css: &str) -> String {
        let found = self
            .call(
                reqwest::Method::POST,
                "/element",
                json!({"using": "css selector", "value": css}),
            )
            .await;
        found[ELEMENT].as_str().unwrap().to_owned()
    }

    async fn click(&self, css: &str) {
        let id = self.element(css).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{id}/click"),
            json!({}),
        )
        .await;
    }

    async fn type_in(&self, css: &str, text: &str) {
        let id = self.element(css).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{id}/value"),
            json!({ "text": text }),
        )
        .await;
    }

    /// Signs in with `token` through the login form (the cookie it sets carries every later request).
    async fn sign_in(&self, base: &str, token: &str) {
        self.goto(&format!("{base}/login")).await;
        self.type_in("#token", token).await;
        self.click("#sign-in").await;
        self.wait(
            "the task list",
            "return document.getElementById('list') !== null",
        )
        .await;
    }

    /// Waits until the page's event stream is open.
    async fn live(&self) {
        self.wait(
            "the event stream to open",
            "const s = document.querySelector('[data-live]'); return s && s.dataset.live !== 'closed'",
        )
        .await;
    }

    async fn screenshot(&self, path: &Path) {
        let png = self
            .call(reqwest::Method::GET, "/screenshot", Value::Null)
            .await;
        let bytes = base64_decode(png.as_str().unwrap());
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        std::fs::write(path, bytes).unwrap();
    }

    async fn close(self) {
        let _ = self.http.delete(&self.session).send().await;
    }
}

fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let clean: Vec<u8> = text.bytes().filter(|c| *c != b'=' && *c != b'\n').collect();
    let mut out = Vec::with_capacity(clean.len() * 3 / 4);
    for group in clean.chunks(4) {
        let mut n = 0u32;
        for (i, c) in group.iter().enumerate() {
            n |= u32::from(value(*c)) << (18 - 6 * i);
        }
        out.extend_from_slice(&n.to_be_bytes()[1..group.len()]);
    }
    out
}

/// Where the screenshots go: `docs/` when `REFCACHE_SCREENSHOTS=docs` (to refresh the pictures docs/web.md
/// shows), else this test target's temporary directory, so that running the suite leaves the checkout unchanged.
fn docs() -> PathBuf {
    if std::env::var("REFCACHE_SCREENSHOTS").as_deref() == Ok("docs") {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("docs")
    } else {
        Path::new(env!("CARGO_TARGET_TMPDIR")).to_path_buf()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_started_over_mcp_appears_on_its_owners_page_within_a_second_and_not_on_anothers() {
    let base = serve().await;
    let driver = driver().await;
    let alice = Browser::open(&driver).await;
    let bob = Browser::open(&driver).await;
    alice.sign_in(&base, "token-a").await;
    bob.sign_in(&base, "token-b").await;
    alice.live().await;
    bob.live().await;
    let started = Instant::now();
    let task = agent("alice")
        .scope(printer("browser-mcp".into(), 2))
        .await
        .unwrap();
    let id = task.ref_id().to_string();
    let row = format!("tr[data-ref='{id}']");
    alice
        .wait(
            "alice's new task on her page",
            &format!("return document.querySelector(\"{row}\") !== null"),
        )
        .await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(1), "took {took:?}");
    let status = alice
        .js(&format!(
            "return document.querySelector(\"{row} .status\").textContent"
        ))
        .await;
    assert_eq!(status, "processing");
    // Bob's page is live too, and gets his own task, but never alice's.
    let bobs = agent("bob")
        .scope(printer("browser-mcp-bob".into(), 1))
        .await
        .unwrap();
    bob.wait(
        "bob's own task on his page",
        &format!(
            "return document.querySelector(\"tr[data-ref='{}']\") !== null",
            bobs.ref_id()
        ),
    )
    .await;
    assert_eq!(
        bob.js(&format!(
            "return document.querySelector(\"{row}\") === null && !document.body.innerHTML.includes('{id}')"
        ))
        .await,
        true
    );
    // The list's screenshot, with a finished task and a running one.
    let _ = agent("alice").scope(items(500)).await.unwrap();
    alice
        .wait(
            "the finished list task",
            "return [...document.querySelectorAll('tr.task')].some(r => r.dataset.status === 'complete')",
        )
        .await;
    alice.screenshot(&docs().join("web-list.png")).await;
    open("browser-mcp");
    open("browser-mcp-bob");
    alice
        .wait(
            "the task to complete on the page",
            &format!("return document.querySelector(\"{row}\").dataset.status === 'complete'"),
        )
        .await;
    alice.close().await;
    bob.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_opened_after_a_disconnect_catches_up_on_the_output() {
    let base = serve().await;
    let driver = driver().await;
    let browser = Browser::open(&driver).await;
    browser.sign_in(&base, "token-a").await;
    let task = agent("alice")
        .scope(printer("browser-reconnect".into(), 3))
        .await
        .unwrap();
    let id = task.ref_id().to_string();
    browser.goto(&format!("{base}/tasks/{id}")).await;
    browser.live().await;
    browser
        .wait(
            "the first lines",
            "return document.getElementById('output').textContent.includes('line 2')",
        )
        .await;
    // The browser goes away; the task goes on and ends.
    browser.goto("about:blank").await;
    open("browser-reconnect");
    let done = CACHE.clone();
    let id2 = id.clone();
    agent("alice")
        .scope(async move {
            for _ in 0..200 {
                if done.get_cached_result(&id2).await.unwrap().is_complete() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            panic!("the task did not end");
        })
        .await;
    browser.goto(&format!("{base}/tasks/{id}")).await;
    let text = browser
        .wait(
            "the whole output after reopening",
            "const t = document.getElementById('output').textContent; return t.includes('bye') && t",
        )
        .await;
    assert_eq!(
        text,
        "browser-reconnect line 0\nbrowser-reconnect line 1\nbrowser-reconnect line 2\nbye\n"
    );
    browser
        .wait(
            "the result",
            "return !document.getElementById('result').hidden && document.getElementById('value').textContent",
        )
        .await;
    assert_eq!(
        browser
            .js("return document.getElementById('value').textContent")
            .await,
        "3"
    );
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_result_pages_in_the_page_as_in_get_cached_result() {
    let base = serve().await;
    let driver = driver().await;
    let browser = Browser::open(&driver).await;
    browser.sign_in(&base, "token-a").await;
    let done = agent("alice").scope(items(1000)).await.unwrap();
    let id = done.ref_id().to_string();
    assert!(
        !done.is_complete(),
        "1000 items are larger than max_size: a preview"
    );
    browser.goto(&format!("{base}/tasks/{id}")).await;
    browser
        .wait(
            "the preview",
            "return document.getElementById('value').textContent",
        )
        .await;
    // Page 2 in the page: the same items get_cached_result answers for page 2.
    let second = agent("alice")
        .scope(CACHE.get_cached_result_with(&id, &refcache::GetOptions::default().page(2)))
        .await
        .unwrap();
    let expected = second.to_json();
    assert_eq!(expected["page"], 2, "{expected}");
    // A sampled preview offers to page through the items; then the page has page buttons.
    browser.click("#pages button[data-page='1']").await;
    browser
        .wait(
            "the pages",
            "return document.querySelector(\"#pages button[data-page='2']\")",
        )
        .await;
    let first_page = agent("alice")
        .scope(CACHE.get_cached_result_with(&id, &refcache::GetOptions::default().page(1)))
        .await
        .unwrap()
        .to_json();
    browser.click("#pages button[data-page='2']").await;
    let shown = browser
        .wait(
            "page 2",
            "return document.querySelector('#pages .current') && document.querySelector('#pages .current').textContent === '2' && document.getElementById('value').textContent",
        )
        .await;
    let shown: Value = serde_json::from_str(shown.as_str().unwrap()).unwrap();
    assert_eq!(shown, expected["preview"]);
    assert_ne!(shown, first_page["preview"]);
    let note = browser
        .js("return document.getElementById('result-note').textContent")
        .await;
    assert_eq!(note, expected["message"]);
    browser
        .screenshot(&docs().join("web-task-result.png"))
        .await;
    browser.close().await;
}

/// Runs `command` from the list page's form and waits on its task page for its first line: the output so far.
async fn run_from_the_page(browser: &Browser, command: &Command) -> String {
    browser.type_in("#args", &command.typed()).await;
    browser.click("#run-button").await;
    let first = browser
        .wait(
            "the command's first lines",
            "const o = document.getElementById('output'); return o && o.textContent.includes('child ') && o.textContent",
        )
        .await;
    first.as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_from_the_page_shows_its_first_lines_before_it_ends_and_joins_the_mcp_call() {
    let base = serve().await;
    let driver = driver().await;
    let browser = Browser::open(&driver).await;
    browser.sign_in(&base, "token-a").await;
    let command = Command::new("browser-cmd");
    let first = run_from_the_page(&browser, &command).await;
    let pgid = pgid_in(&first);
    assert!(
        first.starts_with(&format!("started browser-cmd pgid {pgid}\nchild ")),
        "{first:?}"
    );
    // Shown while it runs: the page says processing, and the script's process is alive (it waits on its FIFO).
    assert_eq!(
        browser
            .js("return document.getElementById('status').textContent")
            .await,
        "processing",
        "the first lines show before the command ends"
    );
    assert!(alive_in_group(pgid) > 0, "the command still runs");
    let id = browser
        .js("return document.getElementById('task').dataset.ref")
        .await;
    let id = id.as_str().unwrap().to_owned();
    // The same command over MCP (the function the example's run_command tool answers) joins the page's execution.
    let joined = agent("alice")
        .scope(run_command(command.spec()))
        .await
        .unwrap();
    assert_eq!(joined.ref_id().as_str(), id);
    browser.screenshot(&docs().join("web-task.png")).await;
    command.release().await;
    browser
        .wait(
            "the command's end",
            "return document.getElementById('output').textContent.includes('finished browser-cmd') && document.getElementById('status').textContent === 'complete'",
        )
        .await;
    assert_eq!(command.runs(), 1, "one execution: the script started once");
    let done = agent("alice")
        .scope(CACHE.get_cached_result(&id))
        .await
        .unwrap();
    assert_eq!(
        done.to_json()["value"]["exit"]["code"],
        0,
        "{}",
        done.to_json()
    );
    gone_within(pgid, PATIENCE).await;
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_started_from_the_page_is_cancelled_from_it_and_its_process_group_is_gone() {
    let base = serve().await;
    let driver = driver().await;
    let browser = Browser::open(&driver).await;
    browser.sign_in(&base, "token-a").await;
    let command = Command::new("browser-cancel");
    let first = run_from_the_page(&browser, &command).await;
    let (pgid, child) = (pgid_in(&first), child_in(&first));
    // The script and its sleep, both in the command's group.
    let start = Instant::now();
    while alive_in_group(pgid) < 2 {
        assert!(start.elapsed() < PATIENCE, "the script and its sleep run");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(alive_in_group(pgid), 2, "the script and its sleep");
    assert!(runs_still(child));
    browser.live().await;
    browser.click("#cancel").await;
    browser
        .wait(
            "the cancelled status",
            "return document.getElementById('status').textContent === 'cancelled'",
        )
        .await;
    let id = browser
        .js("return document.getElementById('task').dataset.ref")
        .await;
    let status = agent("alice")
        .scope(CACHE.get_cached_result(id.as_str().unwrap()))
        .await
        .unwrap()
        .status();
    assert_eq!(status, refcache::TaskStatus::Cancelled);
    // Nothing of the group is left: not the script, not the sleep it left running.
    gone_within(pgid, PATIENCE).await;
    assert!(!runs_still(child), "the sleep {child} was stopped");
    assert_eq!(command.runs(), 1);
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_run_and_an_mcp_call_with_the_same_arguments_are_one_execution() {
    let base = serve().await;
    let driver = driver().await;
    let browser = Browser::open(&driver).await;
    browser.sign_in(&base, "token-a").await;
    let command = Command::new("browser-join");
    // MCP first (run_command answers a processing reference after its 2 s async_timeout), then the page.
    let over_mcp = agent("alice")
        .scope(run_command(command.spec()))
        .await
        .unwrap();
    assert!(!over_mcp.status().is_terminal(), "it waits on its FIFO");
    let first = run_from_the_page(&browser, &command).await;
    let id = browser
        .js("return document.getElementById('task').dataset.ref")
        .await;
    assert_eq!(
        id,
        over_mcp.ref_id().as_str(),
        "the page joined the MCP call's task"
    );
    let pgid = pgid_in(&first);
    command.release().await;
    browser
        .wait(
            "the command's end",
            "return document.getElementById('status').textContent === 'complete'",
        )
        .await;
    gone_within(pgid, PATIENCE).await;
    assert_eq!(command.runs(), 1, "one execution: the script started once");
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_waiting_for_input_is_answered_from_its_page_through_a_form_built_from_the_schema() {
    let base = serve().await;
    let driver = driver().await;
    let browser = Browser::open(&driver).await;
    browser.sign_in(&base, "token-a").await;
    let task = agent("alice")
        .scope(confirm("browser-answer".into()))
        .await
        .unwrap();
    let id = task.ref_id().to_string();
    browser.goto(&format!("{base}/tasks/{id}")).await;
    browser.live().await;
    let question = browser
        .wait(
            "the question and its form",
            "return !document.getElementById('answer').hidden && document.getElementById('answer-confirm') && document.getElementById('question').textContent",
        )
        .await;
    assert_eq!(question, "Delete the browser-answer records?");
    assert_eq!(
        browser
            .js("return [document.getElementById('answer-confirm').type, document.getElementById('answer-reason').tagName, [...document.querySelectorAll('#answer-reason option')].map(o => o.value).join(',')]")
            .await,
        json!(["checkbox", "SELECT", ",old,duplicate"])
    );
    // A raw JSON answer that does not fit: the server's error names the field, and the task keeps waiting.
    browser
        .js("const r = document.getElementById('raw'); r.open = true; document.getElementById('answer-json').value = '{\"confirm\": \"yes\"}'; return true")
        .await;
    browser.click("#answer-button").await;
    let error = browser
        .wait(
            "the refusal",
            "return document.getElementById('answer-error').textContent",
        )
        .await;
    assert!(error.as_str().unwrap().contains("`confirm`"), "{error}");
    assert_eq!(
        browser
            .js("return document.getElementById('status').textContent")
            .await,
        "input_required"
    );
    // The form: tick the box, choose a reason, send.
    browser
        .js("document.getElementById('raw').open = false; return true")
        .await;
    browser.click("#answer-confirm").await;
    browser
        .js("document.getElementById('answer-reason').value = 'old'; return true")
        .await;
    browser.screenshot(&docs().join("web-answer.png")).await;
    browser.click("#answer-button").await;
    browser
        .wait(
            "the answered task's end",
            "return document.getElementById('status').textContent === 'complete' && document.getElementById('answer').hidden && document.getElementById('value').textContent",
        )
        .await;
    let value: Value = serde_json::from_str(
        browser
            .js("return document.getElementById('value').textContent")
            .await
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(value, json!({"confirm": true, "reason": "old"}));
    browser.close().await;
}
