//! The suite's tasks, registered by name (so that a backend whose workers run elsewhere finds them too), and the
//! in-process gates that control them: a test opens a gate instead of sleeping.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use futures::future::BoxFuture;
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::contract::context::TaskContext;
use crate::contract::registry::TaskRegistration;
use crate::model::json_text::JsonText;
use crate::model::task::TaskError;

pub(super) struct Gate {
    open: watch::Sender<bool>,
    executions: AtomicU32,
}

pub(super) fn gates() -> &'static Mutex<HashMap<String, Arc<Gate>>> {
    static GATES: OnceLock<Mutex<HashMap<String, Arc<Gate>>>> = OnceLock::new();
    GATES.get_or_init(Default::default)
}

pub(super) fn gate(id: &str) -> Arc<Gate> {
    gates()
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .entry(id.to_owned())
        .or_insert_with(|| {
            Arc::new(Gate {
                open: watch::channel(false).0,
                executions: AtomicU32::new(0),
            })
        })
        .clone()
}

/// A fresh gate id.
pub(super) fn new_gate() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

pub(super) fn open(id: &str) {
    gate(id).open.send_replace(true);
}

pub(super) fn executions(id: &str) -> u32 {
    gate(id).executions.load(Ordering::SeqCst)
}

pub(super) async fn wait_open(id: &str) {
    let mut rx = gate(id).open.subscribe();
    let _ = rx.wait_for(|open| *open).await;
}

pub(super) fn arg_str(args: &Value, name: &str) -> String {
    args.get(name)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

pub(super) const GATED: &str = "refcache.conformance.gated";

pub(super) const FAIL: &str = "refcache.conformance.fail";

pub(super) const PANIC: &str = "refcache.conformance.panic";

pub(super) const PROGRESS: &str = "refcache.conformance.progress";

pub(super) const STUBBORN: &str = "refcache.conformance.stubborn";

pub(super) const FLAKY: &str = "refcache.conformance.flaky";

pub(super) const ASK: &str = "refcache.conformance.ask";

pub(super) const OUTPUT: &str = "refcache.conformance.output";

pub(super) fn starts() -> &'static Mutex<Vec<String>> {
    static STARTS: OnceLock<Mutex<Vec<String>>> = OnceLock::new();
    STARTS.get_or_init(Default::default)
}

/// The order in which gated tasks of these gates started.
pub(super) fn start_order(ids: &[&str]) -> Vec<String> {
    let all = starts().lock().unwrap_or_else(PoisonError::into_inner);
    all.iter()
        .filter(|id| ids.contains(&id.as_str()))
        .cloned()
        .collect()
}

/// Counts an execution, waits for its gate (or its cancellation), returns `value`.
pub(super) fn gated(
    args: Value,
    ctx: TaskContext,
) -> BoxFuture<'static, Result<JsonText, TaskError>> {
    Box::pin(async move {
        let id = arg_str(&args, "gate");
        gate(&id).executions.fetch_add(1, Ordering::SeqCst);
        starts()
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(id.clone());
        tokio::select! {
            () = wait_open(&id) => Ok(JsonText::from(args.get("value").unwrap_or(&Value::Null))),
            () = ctx.cancelled() => Err(TaskError::new("stopped on cancel")),
        }
    })
}

pub(super) fn fail(
    args: Value,
    _ctx: TaskContext,
) -> BoxFuture<'static, Result<JsonText, TaskError>> {
    Box::pin(async move {
        let id = arg_str(&args, "gate");
        gate(&id).executions.fetch_add(1, Ordering::SeqCst);
        let error = TaskError::new(arg_str(&args, "message"));
        let permanent = args
            .get("permanent")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        Err(if permanent { error.permanent() } else { error })
    })
}

/// Fails its first `fail` executions (counted per gate), then returns `"ok"`.
pub(super) fn flaky(
    args: Value,
    _ctx: TaskContext,
) -> BoxFuture<'static, Result<JsonText, TaskError>> {
    Box::pin(async move {
        let id = arg_str(&args, "gate");
        let n = gate(&id).executions.fetch_add(1, Ordering::SeqCst) + 1;
        let fail = args.get("fail").and_then(Value::as_u64).unwrap_or(0);
        if u64::from(n) <= fail {
            Err(TaskError::new(format!("transient {n}")))
        } else {
            Ok(JsonText::from(json!("ok")))
        }
    })
}

pub(super) fn panics(
    args: Value,
    _ctx: TaskContext,
) -> BoxFuture<'static, Result<JsonText, TaskError>> {
    Box::pin(async move { panic!("{}", arg_str(&args, "message")) })
}

/// Reports progress 1 of 2, then waits for its gate.
pub(super) fn progress(
    args: Value,
    ctx: TaskContext,
) -> BoxFuture<'static, Result<JsonText, TaskError>> {
    Box::pin(async move {
        let id = arg_str(&args, "gate");
        gate(&id).executions.fetch_add(1, Ordering::SeqCst);
        let _ = ctx.progress(1.0, Some(2.0), "halfway");
        wait_open(&id).await;
        Ok(JsonText::from(json!("done")))
    })
}

/// Ignores cancellation: waits for its gate whatever happens, then returns `late`.
pub(super) fn stubborn(
    args: Value,
    _ctx: TaskContext,
) -> BoxFuture<'static, Result<JsonText, TaskError>> {
    Box::pin(async move {
        let id = arg_str(&args, "gate");
        gate(&id).executions.fetch_add(1, Ordering::SeqCst);
        wait_open(&id).await;
        Ok(JsonText::from(json!("late")))
    })
}

inventory::submit!(TaskRegistration::new(|| GATED, gated));

inventory::submit!(TaskRegistration::new(|| FAIL, fail));

inventory::submit!(TaskRegistration::new(|| PANIC, panics));

inventory::submit!(TaskRegistration::new(|| PROGRESS, progress));

inventory::submit!(TaskRegistration::new(|| STUBBORN, stubborn));

inventory::submit!(TaskRegistration::new(|| FLAKY, flaky));

inventory::submit!(TaskRegistration::new(|| ASK, ask));

inventory::submit!(TaskRegistration::new(|| OUTPUT, output));

/// Writes `lines` lines (`line 1\n`, ...) to stdout and one line to stderr from a blocking thread (none with
/// `quiet`), waits for its gate, then writes `after the gate\n` (unless `quiet`) and returns `"done"`.
pub(super) fn output(
    args: Value,
    ctx: TaskContext,
) -> BoxFuture<'static, Result<JsonText, TaskError>> {
    Box::pin(async move {
        let id = arg_str(&args, "gate");
        gate(&id).executions.fetch_add(1, Ordering::SeqCst);
        let quiet = args.get("quiet").and_then(Value::as_bool).unwrap_or(false);
        for i in 1..=args.get("lines").and_then(Value::as_u64).unwrap_or(0) {
            ctx.stdout(&format!("line {i}\n"));
        }
        if !quiet {
            let blocking = ctx.clone();
            tokio::task::spawn_blocking(move || blocking.stderr("from a blocking thread\n"))
                .await
                .expect("the blocking write");
        }
        wait_open(&id).await;
        if !quiet {
            ctx.stdout("after the gate\n");
        }
        Ok(JsonText::from(json!("done")))
    })
}

/// Asks `message` with `schema` (default: a required boolean `confirm`) and `timeout_ms` (default: none), then
/// returns `{"answer": <the answer>}`.
pub(super) fn ask(
    args: Value,
    ctx: TaskContext,
) -> BoxFuture<'static, Result<JsonText, TaskError>> {
    Box::pin(async move {
        let schema = args.get("schema").cloned().unwrap_or_else(|| {
            json!({"type": "object", "properties": {"confirm": {"type": "boolean"}}, "required": ["confirm"]})
        });
        let timeout = args
            .get("timeout_ms")
            .and_then(Value::as_u64)
            .map(std::time::Duration::from_millis);
        let answer = ctx.ask(arg_str(&args, "message"), schema, timeout).await?;
        Ok(JsonText::from(json!({ "answer": answer })))
    })
}
