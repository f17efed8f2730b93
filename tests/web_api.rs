//! The web page's JSON API (issue 18 §3) over a real HTTP server on a free loopback port: the owner's tasks and
//! nobody else's, output from an offset, server-sent events with a `Last-Event-ID` resume, cancel and retry as the
//! MCP tools answer them, a live list, commands from the page joining the same execution, and bad input.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use refcache::web::{CommandRunner, WebRefCache};
use refcache::{Actor, ActorKind, CachedResponse, RefCache, RefCacheError, TaskContext, cached};
use serde_json::Value;

#[path = "support/gates.rs"]
mod gates;
use gates::{gate, open};

static CACHE: LazyLock<RefCache> = LazyLock::new(RefCache::new);
static RUNS: AtomicU32 = AtomicU32::new(0);

/// Prints `lines` lines, waits at its gate, prints `bye` and ends.
#[cached(async_timeout = 0.05, cache = CACHE)]
async fn printer(label: String, lines: u32, ctx: TaskContext) -> Result<u32, String> {
    for i in 0..lines {
        ctx.stdout(&format!("line {i}\n"));
    }
    gate(&label).notified().await;
    ctx.stdout("bye\n");
    Ok(lines)
}

/// Asks for a confirmation (and an optional reason), then answers what it got.
#[cached(async_timeout = 0.05, cache = CACHE)]
async fn confirm(label: String, ctx: TaskContext) -> Result<Value, String> {
    let schema = serde_json::json!({
        "type": "object",
        "properties": {
            "confirm": {"type": "boolean"},
            "reason": {"type": "string", "enum": ["old", "duplicate"]},
        },
        "required": ["confirm"],
    });
    ctx.ask(format!("Delete {label}?"), schema, None)
        .await
        .map_err(|e| e.to_string())
}

/// Writes `lines` lines, each once its own gate (`label-i`) opens.
#[cached(async_timeout = 0.05, cache = CACHE)]
async fn ticker(label: String, lines: u32, ctx: TaskContext) -> u32 {
    for i in 0..lines {
        gate(&format!("{label}-{i}")).notified().await;
        ctx.stdout(&format!("tick {i}\n"));
    }
    lines
}

/// Fails after its gate opens.
#[cached(async_timeout = 0.05, cache = CACHE)]
async fn fails(label: String) -> Result<u32, String> {
    gate(&label).notified().await;
    Err(format!("{label} failed"))
}

/// The test's stand-in for a command: counts its runs, prints its arguments, waits at the gate named by the first.
#[cached(async_timeout = 0.05, cache = CACHE)]
async fn fake_command(
    command: String,
    args: Vec<String>,
    ctx: TaskContext,
) -> Result<String, String> {
    RUNS.fetch_add(1, Ordering::SeqCst);
    ctx.stdout(&format!("{command} {}\n", args.join(" ")));
    if let Some(label) = args.first() {
        gate(label).notified().await;
    }
    Ok(command)
}

struct Runner;

impl CommandRunner for Runner {
    fn allowed(&self) -> Vec<String> {
        vec!["seq".into()]
    }

    fn run(
        &self,
        command: String,
        args: Vec<String>,
    ) -> BoxFuture<'static, Result<CachedResponse, RefCacheError>> {
        Box::pin(fake_command(command, args))
    }
}

/// The page's server, with tokens for alice and bob.
async fn serve() -> String {
    let web = WebRefCache::new(CACHE.clone())
        .with_token("token-a", Actor::user("alice"))
        .with_token("token-b", Actor::user("bob"))
        .with_commands(Arc::new(Runner));
    let app: axum::Router = refcache::web::router(web);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

/// Alice's agent over MCP: her principal, as an agent.
fn alice_agent() -> Actor {
    Actor::user("alice").as_principal(ActorKind::Agent)
}

async fn get(base: &str, path: &str, token: Option<&str>) -> (u16, Value) {
    let mut request = reqwest::Client::new().get(format!("{base}{path}"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn post(base: &str, path: &str, token: &str, body: Option<Value>) -> (u16, Value) {
    let mut request = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// One server-sent event.
#[derive(Debug, Default, Clone)]
struct Sse {
    event: String,
    id: Option<String>,
    data: String,
}

impl Sse {
    fn json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap()
    }
}

/// An open event stream.
struct Events {
    stream: futures::stream::BoxStream<'static, reqwest::Result<axum::body::Bytes>>,
    buffer: String,
}

impl Events {
    async fn open(url: String, token: &str, last_event_id: Option<u64>) -> Self {
        let mut request = reqwest::Client::new().get(url).bearer_auth(token);
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id.to_string());
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status().as_u16(), 200);
        Self {
            stream: response.bytes_stream().boxed(),
            buffer: String::new(),
        }
    }

    /// The next event (keep-alive comments skipped), within 10 s; `None` when the stream ended.
    async fn next(&mut self) -> Option<Sse> {
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if let Some(end) = self.buffer.find("\n\n") {
                    let block: String = self.buffer.drain(..end + 2).collect();
                    let mut event = Sse::default();
                    for line in block.lines() {
                        if let Some(v) = line.strip_prefix("event:") {
                            event.event = v.trim().to_owned();
                        } else if let Some(v) = line.strip_prefix("id:") {
                            event.id = Some(v.trim().to_owned());
                        } else if let Some(v) = line.strip_prefix("data:") {
                            event.data.push_str(v.strip_prefix(' ').unwrap_or(v));
                        }
                    }
                    if !event.event.is_empty() {
                        return Some(event);
                    }
                    continue;
                }
                match self.stream.next().await {
                    Some(Ok(bytes)) => self.buffer.push_str(std::str::from_utf8(&bytes).unwrap()),
                    _ => return None,
                }
            }
        })
        .await
        .expect("an event within 10 s")
    }

    /// Events until one of `kind` that `pred` accepts.
    async fn until(&mut self, kind: &str, pred: impl Fn(&Sse) -> bool) -> Sse {
        loop {
            let event = self.next().await.expect("the stream ended early");
            if event.event == kind && pred(&event) {
                return event;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owner_sees_its_task_and_output_live_and_nobody_else_does() {
    let base = serve().await;
    let started = alice_agent()
        .scope(printer("web-live".into(), 3))
        .await
        .unwrap();
    let id = started.ref_id().to_string();

    let (status, list) = get(&base, "/api/tasks", Some("token-a")).await;
    assert_eq!(status, 200);
    let listed: Vec<&str> = list["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["ref_id"].as_str().unwrap())
        .collect();
    assert!(listed.contains(&id.as_str()), "{list}");
    let (_, bobs) = get(&base, "/api/tasks", Some("token-b")).await;
    assert!(
        !bobs.to_string().contains(&id),
        "bob sees alice's task: {bobs}"
    );

    // Another owner's id and an unknown one answer the same 404.
    let (status, foreign) = get(&base, &format!("/api/tasks/{id}"), Some("token-b")).await;
    let unknown_id = refcache::RefId::generate("refcache").to_string();
    let (status2, unknown) = get(&base, &format!("/api/tasks/{unknown_id}"), Some("token-b")).await;
    let (status3, garbage) = get(&base, "/api/tasks/nonsense", Some("token-b")).await;
    assert_eq!((status, status2, status3), (404, 404, 404));
    assert_eq!(foreign, unknown);
    assert_eq!(foreign, garbage);
    let (status, _) = get(
        &base,
        &format!("/api/tasks/{id}/output?offset=0"),
        Some("token-b"),
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = post(&base, &format!("/api/tasks/{id}/cancel"), "token-b", None).await;
    assert_eq!(status, 404);

    let (status, task) = get(&base, &format!("/api/tasks/{id}"), Some("token-a")).await;
    assert_eq!(status, 200);
    assert_eq!(task["status"], "processing", "{task}");
    assert_eq!(task["task"]["name"], "printer");

    // The output so far, from an offset.
    let (_, chunk) = get(
        &base,
        &format!("/api/tasks/{id}/output?offset=7"),
        Some("token-a"),
    )
    .await;
    assert_eq!(chunk["offset"], 7);
    assert_eq!(chunk["text"], "line 1\nline 2\n");
    assert_eq!(chunk["done"], false);

    // Events: the status, the output so far, then what comes after the gate opens, then the end.
    let mut events = Events::open(format!("{base}/api/tasks/{id}/events"), "token-a", None).await;
    let first = events.until("output", |_| true).await;
    assert_eq!(first.json()["text"], "line 0\nline 1\nline 2\n");
    assert_eq!(
        first.id.as_deref(),
        Some("21"),
        "an output event's id is the offset after it"
    );
    open("web-live");
    let bye = events.until("output", |_| true).await;
    assert_eq!(bye.json()["text"], "bye\n");
    let done = events.until("status", |_| true).await;
    assert_eq!(done.json()["status"], "complete");
    events.until("end", |_| true).await;
    assert!(events.next().await.is_none(), "the stream ends after `end`");

    let (_, task) = get(&base, &format!("/api/tasks/{id}"), Some("token-a")).await;
    assert_eq!(task["value"], 3);

    // A reconnect with Last-Event-ID goes on from that offset: nothing is sent twice.
    let mut again =
        Events::open(format!("{base}/api/tasks/{id}/events"), "token-a", Some(14)).await;
    let rest = again.until("output", |_| true).await;
    assert_eq!(rest.json()["offset"], 14);
    assert_eq!(rest.json()["text"], "line 2\nbye\n");
    again.until("end", |_| true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_and_retry_answer_as_the_mcp_tools() {
    let base = serve().await;
    let running = alice_agent()
        .scope(printer("web-cancel".into(), 1))
        .await
        .unwrap();
    let id = running.ref_id().to_string();
    let (status, cancelled) =
        post(&base, &format!("/api/tasks/{id}/cancel"), "token-a", None).await;
    assert_eq!(status, 200);
    assert_eq!(cancelled["status"], "cancelled", "{cancelled}");
    let (_, again) = post(&base, &format!("/api/tasks/{id}/cancel"), "token-a", None).await;
    assert_eq!(again["status"], "cancelled", "cancel is idempotent");
    let (status, refused) = post(&base, &format!("/api/tasks/{id}/retry"), "token-a", None).await;
    assert_eq!(status, 409, "{refused}");
    assert!(
        refused["error"]
            .as_str()
            .unwrap()
            .contains("only a failed task")
    );

    let failing = alice_agent()
        .scope(fails("web-retry".into()))
        .await
        .unwrap();
    let id = failing.ref_id().to_string();
    let mut events = Events::open(format!("{base}/api/tasks/{id}/events"), "token-a", None).await;
    open("web-retry");
    let end = events
        .until("status", |e| e.json()["status"] == "failed")
        .await;
    assert_eq!(end.json()["error"], "web-retry failed");
    assert_eq!(end.json()["can_retry"], true);
    let (status, retried) = post(&base, &format!("/api/tasks/{id}/retry"), "token-a", None).await;
    assert_eq!(status, 200, "{retried}");
    assert_eq!(retried["ref_id"], id.as_str());
    open("web-retry");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_list_stream_shows_the_owners_new_tasks_only() {
    let base = serve().await;
    let mut alice = Events::open(format!("{base}/api/events"), "token-a", None).await;
    let mut bob = Events::open(format!("{base}/api/events"), "token-b", None).await;
    // Let both streams list what there is before the new task starts; a task event for it must then be new.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = alice_agent()
        .scope(printer("web-list".into(), 1))
        .await
        .unwrap();
    let id = started.ref_id().to_string();
    let seen = alice
        .until("task", |e| e.json()["ref_id"] == id.as_str())
        .await;
    assert_eq!(seen.json()["status"], "processing");
    // Bob's own task shows on his stream; alice's never came before it.
    let bobs = Actor::user("bob")
        .as_principal(ActorKind::Agent)
        .scope(printer("web-list-bob".into(), 1))
        .await
        .unwrap();
    let bob_id = bobs.ref_id().to_string();
    loop {
        let event = bob.until("task", |_| true).await;
        assert_ne!(event.json()["ref_id"], id.as_str(), "bob saw alice's task");
        if event.json()["ref_id"] == bob_id.as_str() {
            break;
        }
    }
    open("web-list");
    let done = alice
        .until("task", |e| {
            e.json()["ref_id"] == id.as_str() && e.json()["status"] == "complete"
        })
        .await;
    assert_eq!(done.json()["percentage"], Value::Null);
    open("web-list-bob");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_from_the_page_and_a_call_with_the_same_arguments_are_one_execution() {
    let base = serve().await;
    let before = RUNS.load(Ordering::SeqCst);
    let body = serde_json::json!({"command": "seq", "args": ["web-cmd", "2"]});
    let (status, started) = post(&base, "/api/commands", "token-a", Some(body.clone())).await;
    assert_eq!(status, 202, "{started}");
    let id = started["ref_id"].as_str().unwrap().to_owned();
    assert_eq!(started["url"], format!("/tasks/{id}"));
    // Alice's agent makes the same call over MCP: it joins.
    let joined = alice_agent()
        .scope(fake_command(
            "seq".into(),
            vec!["web-cmd".into(), "2".into()],
        ))
        .await
        .unwrap();
    assert_eq!(joined.ref_id().to_string(), id);
    // The same command from the page again joins too.
    let (_, twice) = post(&base, "/api/commands", "token-a", Some(body)).await;
    assert_eq!(twice["ref_id"], id.as_str());
    open("web-cmd");
    let mut events = Events::open(format!("{base}/api/tasks/{id}/events"), "token-a", None).await;
    let out = events.until("output", |_| true).await;
    assert_eq!(out.json()["text"], "seq web-cmd 2\n");
    events.until("end", |_| true).await;
    assert_eq!(RUNS.load(Ordering::SeqCst) - before, 1, "one execution");

    // Not on the allowlist: refused before anything runs.
    let (status, refused) = post(
        &base,
        "/api/commands",
        "token-a",
        Some(serde_json::json!({"command": "rm", "args": ["-rf", "/"]})),
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        refused["error"]
            .as_str()
            .unwrap()
            .contains("`rm` is not allowed"),
        "{refused}"
    );
    let (status, malformed) = post(
        &base,
        "/api/commands",
        "token-a",
        Some(serde_json::json!({"program": "seq"})),
    )
    .await;
    assert_eq!(status, 400, "{malformed}");
    assert_eq!(RUNS.load(Ordering::SeqCst) - before, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_are_401_and_bad_fields_are_400() {
    let base = serve().await;
    let (status, body) = get(&base, "/api/tasks", None).await;
    assert_eq!(status, 401);
    assert!(body["error"].as_str().unwrap().contains("Bearer"), "{body}");
    let (status, _) = get(&base, "/api/tasks", Some("token-x")).await;
    assert_eq!(status, 401);
    let page = reqwest::get(format!("{base}/")).await.unwrap();
    assert_eq!(page.status().as_u16(), 401, "the page too");
    assert!(page.text().await.unwrap().contains("action=\"/login\""));

    let started = alice_agent()
        .scope(printer("web-bad".into(), 1))
        .await
        .unwrap();
    let id = started.ref_id().to_string();
    for (path, field) in [
        (format!("/api/tasks/{id}/output?offset=abc"), "offset"),
        (format!("/api/tasks/{id}/output?offset=-1"), "offset"),
        (
            format!("/api/tasks/{id}/output?max_bytes=0"),
            "output_max_bytes",
        ),
        (format!("/api/tasks/{id}?page=0"), "page"),
        (format!("/api/tasks/{id}?full=maybe"), "full"),
        ("/api/tasks?limit=0".to_owned(), "limit"),
        ("/api/tasks?limit=101".to_owned(), "limit"),
        ("/api/tasks?status=bogus".to_owned(), "status"),
        (format!("/api/tasks?cursor={}", "x".repeat(5000)), "field"),
        (format!("/api/tasks?{}", "a=1&".repeat(5000)), "query"),
    ] {
        let (status, body) = get(&base, &path, Some("token-a")).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert!(
            body["error"]
                .as_str()
                .unwrap()
                .contains(&format!("`{field}`")),
            "{path}: {body}"
        );
    }
    open("web-bad");
}

/// Polls the API until the task's summary has `status` (10 s at most).
async fn until_status(base: &str, id: &str, token: &str, status: &str) -> Value {
    let start = std::time::Instant::now();
    loop {
        let (code, body) = get(base, &format!("/api/tasks/{id}"), Some(token)).await;
        assert_eq!(code, 200, "{body}");
        // A complete task's answer is its value (`is_complete`), with no summary.
        let complete = status == "complete" && body["is_complete"] == true;
        if complete || body["task"]["status"] == status {
            return body;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no {status} in 10 s: {body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_is_checked_against_the_question_and_refused_as_respond_task_refuses_it() {
    let base = serve().await;
    let task = alice_agent()
        .scope(confirm("api-answer".into()))
        .await
        .unwrap();
    let id = task.ref_id().to_string();
    let waiting = until_status(&base, &id, "token-a", "input_required").await;
    let input = &waiting["task"]["input"];
    assert_eq!(input["message"], "Delete api-answer?", "{waiting}");
    assert_eq!(input["schema"]["required"][0], "confirm", "{waiting}");
    let respond = format!("/api/tasks/{id}/respond");

    // Another owner, and an unknown id: the same 404.
    let (code, foreign) = post(
        &base,
        &respond,
        "token-b",
        Some(serde_json::json!({"response": {"confirm": true}})),
    )
    .await;
    assert_eq!(code, 404);
    let (code, unknown) = post(
        &base,
        "/api/tasks/no-such-task/respond",
        "token-a",
        Some(serde_json::json!({"response": {"confirm": true}})),
    )
    .await;
    assert_eq!(code, 404);
    assert_eq!(foreign, unknown);

    // An answer that does not fit names the field; the task keeps waiting.
    let (code, body) = post(
        &base,
        &respond,
        "token-a",
        Some(serde_json::json!({"response": {"confirm": "yes"}})),
    )
    .await;
    assert_eq!(code, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("`confirm`"),
        "{body}"
    );
    let (code, body) = post(
        &base,
        &respond,
        "token-a",
        Some(serde_json::json!({"response": {"confirm": true, "reason": "bored"}})),
    )
    .await;
    assert_eq!(code, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("`reason`"),
        "{body}"
    );
    // A body that is not `{"response": ...}` names the body.
    let (code, body) = post(
        &base,
        &respond,
        "token-a",
        Some(serde_json::json!({"confirm": true})),
    )
    .await;
    assert_eq!(code, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("`body`"), "{body}");
    until_status(&base, &id, "token-a", "input_required").await;

    // The owner's answer goes through; the task ends with it.
    let (code, body) = post(
        &base,
        &respond,
        "token-a",
        Some(serde_json::json!({"response": {"confirm": true, "reason": "duplicate"}})),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let done = until_status(&base, &id, "token-a", "complete").await;
    assert_eq!(
        done["value"],
        serde_json::json!({"confirm": true, "reason": "duplicate"}),
        "{done}"
    );

    // A task that is not waiting: 409, with its status.
    let (code, body) = post(
        &base,
        &respond,
        "token-a",
        Some(serde_json::json!({"response": {"confirm": true}})),
    )
    .await;
    assert_eq!(code, 409, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("is complete"),
        "{body}"
    );
}

/// A stream's output text from `from` until `end`, each chunk checked to continue where the last ended, with its
/// id the offset after it.
async fn output_until_end(mut events: Events, from: u64) -> String {
    let (mut text, mut at) = (String::new(), from);
    loop {
        let event = events.next().await.expect("the stream ended before `end`");
        match event.event.as_str() {
            "output" => {
                let chunk = event.json();
                assert_eq!(
                    chunk["offset"], at,
                    "a chunk continues where the last ended"
                );
                at = chunk["next_offset"].as_u64().unwrap();
                assert_eq!(event.id, Some(at.to_string()));
                text.push_str(chunk["text"].as_str().unwrap());
            }
            "end" => return text,
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_streams_of_one_task_share_its_output_and_each_gets_it_once_from_its_offset() {
    let base = serve().await;
    let task = alice_agent()
        .scope(ticker("fanout".into(), 6))
        .await
        .unwrap();
    let id = task.ref_id().to_string();
    let url = format!("{base}/api/tasks/{id}/events");
    // Two streams from the start, open before anything is written.
    let a = tokio::spawn(output_until_end(
        Events::open(url.clone(), "token-a", None).await,
        0,
    ));
    let b = tokio::spawn(output_until_end(
        Events::open(url.clone(), "token-a", None).await,
        0,
    ));
    for i in 0..3 {
        open(&format!("fanout-{i}"));
    }
    let start = std::time::Instant::now();
    loop {
        let (_, chunk) = get(&base, &format!("/api/tasks/{id}/output"), Some("token-a")).await;
        if chunk["next_offset"] == 21 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "three lines in 10 s: {chunk}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Two more midway: one resuming after the first line, one from the start (it catches up, then shares).
    let c = tokio::spawn(output_until_end(
        Events::open(url.clone(), "token-a", Some(7)).await,
        7,
    ));
    let d = tokio::spawn(output_until_end(
        Events::open(url.clone(), "token-a", None).await,
        0,
    ));
    for i in 3..6 {
        open(&format!("fanout-{i}"));
    }
    let all: String = (0..6).map(|i| format!("tick {i}\n")).collect();
    assert_eq!(a.await.unwrap(), all);
    assert_eq!(b.await.unwrap(), all);
    assert_eq!(c.await.unwrap(), all[7..]);
    assert_eq!(d.await.unwrap(), all);
    // A stream opened after the end reads it all by itself.
    let late = output_until_end(Events::open(url, "token-a", None).await, 0).await;
    assert_eq!(late, all);
}

/// The CSRF defence: a POST signed in by the cookie that comes from another site's page (or cannot show it comes
/// from this server's) is refused with `403` naming what it lacks, whatever it asks (cancel, retry, respond, run a
/// command, sign in), and the task goes on. The page's own POST (same origin, by `Sec-Fetch-Site` or by `Origin`
/// alone) and a bearer-token POST with neither header are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cookie_signed_post_from_another_site_is_refused_and_the_pages_own_is_not() {
    let base = serve().await;
    let running = alice_agent()
        .scope(printer("web-csrf".into(), 1))
        .await
        .unwrap();
    let id = running.ref_id().to_string();
    let client = reqwest::Client::new();
    let post_with = |path: String, headers: &[(&'static str, &str)]| {
        let mut request = client
            .post(format!("{base}{path}"))
            .header("cookie", "refcache_token=token-a")
            .json(&serde_json::json!({"response": {}, "command": "seq", "args": ["1"]}));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.text().await.unwrap())
        }
    };
    let evil = "https://evil.example";
    for (headers, says) in [
        (
            &[("sec-fetch-site", "cross-site"), ("origin", evil)][..],
            "sent with `Sec-Fetch-Site: cross-site`",
        ),
        (
            &[("sec-fetch-site", "same-site"), ("origin", evil)][..],
            "sent with `Sec-Fetch-Site: same-site`",
        ),
        (
            &[("origin", evil)][..],
            "its `Origin` is `https://evil.example`",
        ),
        (&[("origin", "null")][..], "its `Origin` is `null`"),
        (
            &[][..],
            "it has neither an `Origin` nor a `Sec-Fetch-Site` header",
        ),
    ] {
        for path in [
            format!("/api/tasks/{id}/cancel"),
            format!("/api/tasks/{id}/retry"),
            format!("/api/tasks/{id}/respond"),
            "/api/commands".to_owned(),
        ] {
            let (status, body) = post_with(path.clone(), headers).await;
            assert_eq!(status, 403, "{path} {headers:?}: {body}");
            let body: Value = serde_json::from_str(&body).unwrap();
            let error = body["error"].as_str().unwrap();
            assert!(
                error.starts_with("cross-site request refused") && error.contains(says),
                "{path}: {error}"
            );
            assert!(error.contains("Authorization: Bearer"), "{error}");
        }
    }
    // The sign-in form is checked too (a cross-site sign-in would put the attacker's token in the cookie).
    let login = client
        .post(format!("{base}/login"))
        .header("sec-fetch-site", "cross-site")
        .header("content-type", "application/x-www-form-urlencoded")
        .body("token=token-b")
        .send()
        .await
        .unwrap();
    assert_eq!(login.status().as_u16(), 403);
    assert!(
        login
            .text()
            .await
            .unwrap()
            .contains("cross-site request refused")
    );
    let (_, task) = get(&base, &format!("/api/tasks/{id}"), Some("token-a")).await;
    assert_eq!(task["status"], "processing", "nothing was done: {task}");

    // The page's own requests: a browser that sends `Sec-Fetch-Site`, and one that sends only `Origin`.
    let (status, body) = post_with(
        format!("/api/tasks/{id}/cancel"),
        &[("sec-fetch-site", "same-origin"), ("origin", &base)],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"cancelled\""), "{body}");
    let (status, body) = post_with(format!("/api/tasks/{id}/cancel"), &[("origin", &base)]).await;
    assert_eq!(status, 200, "{body}");
    // A script with a bearer token sends neither header.
    let (status, cancelled) =
        post(&base, &format!("/api/tasks/{id}/cancel"), "token-a", None).await;
    assert_eq!(status, 200, "{cancelled}");
    open("web-csrf");
}
