//! The MCP input paths (#19 §1), over a real rmcp client/server pair on an in-process pipe: a tool asks mid-task.
//! - Clients without the tasks extension: `get_cached_result` shows `input_required` and the question (as text and
//!   as a structured `input_request`), and the ready-made `respond_task` answers it.
//! - MCP Tasks clients: `tasks/get` shows `input_required` and the question as a form elicitation, and
//!   `tasks/update` with `inputResponses` answers it.
//!
//! On both paths a bad answer names the field and the task keeps waiting, an answer to a task that is not waiting is
//! refused with its status, and another owner gets exactly what an unknown id gets.

use std::time::Duration;

use refcache::RefCache;
use refcache::mcp::McpRefCache;
use refcache::mcp::rmcp::model::{
    CallToolResponse, GetTaskParams, GetTaskResult, InputRequest, TaskPayload,
    TaskStatus as McpStatus, UpdateTaskParams,
};
use serde_json::{Value, json};

#[path = "support/tool_results.rs"]
mod tool_results;
use tool_results::text;

#[path = "support/asking_server.rs"]
mod asking_server;
use asking_server::Server;

#[path = "support/mcp_pipe.rs"]
mod mcp_pipe;
use mcp_pipe::{Client, call, call_once, get_task, get_task_until, rpc_error, structured};

/// A connection to a server on `cache` (each connection is an owner of its own).
async fn connect_to(cache: &RefCache, tasks: bool) -> Client {
    mcp_pipe::connect(Server::new(McpRefCache::new(cache.clone())), tasks).await
}

fn cache() -> RefCache {
    RefCache::builder().build().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn respond_task_answers_the_question_get_cached_result_shows() {
    let shared = cache();
    let client = connect_to(&shared, false).await;
    let started = structured(&call(&client, "delete_records", json!({"count": 3})).await);
    let ref_id = started["ref_id"].as_str().expect("a ref_id").to_owned();

    let give_up = tokio::time::Instant::now() + Duration::from_secs(20);
    let polled = loop {
        let polled =
            structured(&call(&client, "get_cached_result", json!({"ref_id": ref_id})).await);
        if polled["status"] == "input_required" {
            break polled;
        }
        assert!(
            tokio::time::Instant::now() < give_up,
            "never input_required: {polled}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        polled["message"], "Input required: Delete 3 records?",
        "the poll shows the question: {polled}"
    );
    // ... and as a structured field: its key, message and schema.
    let question = &polled["input_request"];
    assert!(
        question["key"]
            .as_str()
            .is_some_and(|k| k.starts_with("input-")),
        "{polled}"
    );
    assert_eq!(question["message"], "Delete 3 records?");
    assert_eq!(
        question["schema"]["properties"]["confirm"]["type"],
        "boolean"
    );
    assert_eq!(question["schema"]["required"], json!(["confirm"]));
    let minimal = structured(
        &call(
            &client,
            "get_cached_result",
            json!({"ref_id": ref_id, "_async_response_format": "minimal"}),
        )
        .await,
    );
    assert!(minimal.get("input_request").is_none(), "{minimal}");

    // Another owner (another connection to the same cache) gets what an unknown id gets.
    let stranger = connect_to(&shared, false).await;
    let foreign = call(
        &stranger,
        "respond_task",
        json!({"ref_id": ref_id, "response": {"confirm": true}}),
    )
    .await;
    let unknown = call(
        &stranger,
        "respond_task",
        json!({"ref_id": "refcache:0123456789abcdef0123456789abcdef", "response": {"confirm": true}}),
    )
    .await;
    assert_eq!(foreign.is_error, Some(true), "{foreign:?}");
    assert_eq!(text(&foreign), text(&unknown));
    stranger.cancel().await.unwrap();

    let bad = call(
        &client,
        "respond_task",
        json!({"ref_id": ref_id, "response": {"confirm": "yes"}}),
    )
    .await;
    assert_eq!(bad.is_error, Some(true), "{bad:?}");
    assert!(
        text(&bad).contains("`confirm`"),
        "names the field: {}",
        text(&bad)
    );
    let still = structured(&call(&client, "get_cached_result", json!({"ref_id": ref_id})).await);
    assert_eq!(still["status"], "input_required", "keeps waiting: {still}");

    let answered = call(
        &client,
        "respond_task",
        json!({"ref_id": ref_id, "response": {"confirm": true}}),
    )
    .await;
    assert_ne!(answered.is_error, Some(true), "{answered:?}");
    let done = loop {
        let done = structured(&call(&client, "get_cached_result", json!({"ref_id": ref_id})).await);
        if done["is_complete"] == true {
            break done;
        }
        assert!(
            tokio::time::Instant::now() < give_up,
            "never complete: {done}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(done.to_string().contains("\"deleted\":3"), "{done}");

    let late = call(
        &client,
        "respond_task",
        json!({"ref_id": ref_id, "response": {"confirm": true}}),
    )
    .await;
    assert_eq!(late.is_error, Some(true), "{late:?}");
    assert!(
        text(&late).contains("complete"),
        "names the status: {}",
        text(&late)
    );
    client.cancel().await.unwrap();
}

/// The question's key and elicitation, from a `tasks/get` of a waiting task.
fn question(got: &GetTaskResult) -> (String, Value) {
    let TaskPayload::InputRequired { input_requests } = &got.task.payload else {
        panic!("expected input_required, got {got:?}");
    };
    assert_eq!(input_requests.len(), 1, "one question: {input_requests:?}");
    let (key, request) = input_requests.iter().next().unwrap();
    assert!(
        matches!(request, InputRequest::Elicitation(_)),
        "a form elicitation: {request:?}"
    );
    (key.clone(), serde_json::to_value(request).unwrap())
}

fn update(id: &str, responses: Value) -> UpdateTaskParams {
    let responses = responses
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    UpdateTaskParams::new(id.to_owned(), responses)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_update_answers_the_question_tasks_get_shows() {
    let shared = cache();
    let client = connect_to(&shared, true).await;
    let CallToolResponse::Task(created) =
        call_once(&client, "delete_records", json!({"count": 3})).await
    else {
        panic!("a tasks client gets a task");
    };
    let id = created.task.task_id;
    let waiting = get_task_until(&client, &id, "input_required", |got| {
        got.task.task.status == McpStatus::InputRequired
    })
    .await;
    assert_eq!(
        waiting.task.task.status_message.as_deref(),
        Some("Input required: Delete 3 records?")
    );
    let (key, elicitation) = question(&waiting);
    assert_eq!(elicitation["method"], "elicitation/create");
    assert_eq!(elicitation["params"]["mode"], "form");
    assert_eq!(elicitation["params"]["message"], "Delete 3 records?");
    assert_eq!(
        elicitation["params"]["requestedSchema"]["properties"]["confirm"]["type"],
        "boolean"
    );

    // An answer that fails the schema: -32602 naming the field; the task keeps waiting.
    let (code, message) = rpc_error(
        client
            .peer()
            .update_task(update(
                &id,
                json!({&key: {"action": "accept", "content": {"confirm": "yes"}}}),
            ))
            .await,
    );
    assert_eq!(code, -32602);
    assert!(
        message.contains(&format!("inputResponses.{key}.content")) && message.contains("`confirm`"),
        "names the field: {message}"
    );
    // A missing required field, named too.
    let (code, message) = rpc_error(
        client
            .peer()
            .update_task(update(
                &id,
                json!({&key: {"action": "accept", "content": {}}}),
            ))
            .await,
    );
    assert_eq!(code, -32602);
    assert!(message.contains("`confirm`"), "{message}");
    // Not an elicitation result: -32602 naming the key.
    let (code, message) = rpc_error(
        client
            .peer()
            .update_task(update(&id, json!({&key: {"confirm": true}})))
            .await,
    );
    assert_eq!(code, -32602);
    assert!(
        message.contains(&format!("inputResponses.{key}")),
        "{message}"
    );
    // A key that is not outstanding is ignored and acked, as the spec asks.
    client
        .peer()
        .update_task(update(
            &id,
            json!({"input-99": {"action": "accept", "content": {"confirm": true}}}),
        ))
        .await
        .expect("an unknown key is acked");
    let still = get_task(&client, &id).await;
    assert_eq!(
        still.task.task.status,
        McpStatus::InputRequired,
        "keeps waiting"
    );
    assert_eq!(question(&still).0, key, "the same question");

    // Another owner: exactly what an unknown id gets, on tasks/update and tasks/get.
    let stranger = connect_to(&shared, true).await;
    let answer = json!({&key: {"action": "accept", "content": {"confirm": true}}});
    let foreign = rpc_error(
        stranger
            .peer()
            .update_task(update(&id, answer.clone()))
            .await,
    );
    let unknown = rpc_error(
        stranger
            .peer()
            .update_task(update(
                "refcache:0123456789abcdef0123456789abcdef",
                answer.clone(),
            ))
            .await,
    );
    assert_eq!(foreign.0, -32602);
    assert_eq!(foreign, unknown);
    let foreign_get = rpc_error(
        stranger
            .peer()
            .get_task(GetTaskParams::new(id.clone()))
            .await,
    );
    assert_eq!(foreign_get, unknown);
    stranger.cancel().await.unwrap();
    assert_eq!(
        get_task(&client, &id).await.task.task.status,
        McpStatus::InputRequired,
        "the stranger's answer did nothing"
    );

    // The owner's good answer: acked, and the task goes on to complete.
    client
        .peer()
        .update_task(update(&id, answer.clone()))
        .await
        .expect("a good answer is acked");
    let done = get_task_until(&client, &id, "completed", |got| {
        got.task.task.status == McpStatus::Completed
    })
    .await;
    let TaskPayload::Completed { result } = &done.task.payload else {
        panic!("{done:?}");
    };
    assert_eq!(result["structuredContent"]["value"], json!({"deleted": 3}));

    // An answer to a task that is not waiting: refused, with its status.
    let (code, message) = rpc_error(client.peer().update_task(update(&id, answer)).await);
    assert_eq!(code, -32602);
    assert!(
        message.contains("is complete") && message.contains("not waiting"),
        "{message}"
    );
    client.cancel().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declined_question_cancels_the_task() {
    let client = connect_to(&cache(), true).await;
    let CallToolResponse::Task(created) =
        call_once(&client, "delete_records", json!({"count": 5})).await
    else {
        panic!("a tasks client gets a task");
    };
    let id = created.task.task_id;
    let waiting = get_task_until(&client, &id, "input_required", |got| {
        got.task.task.status == McpStatus::InputRequired
    })
    .await;
    let (key, _) = question(&waiting);
    client
        .peer()
        .update_task(update(&id, json!({key: {"action": "decline"}})))
        .await
        .expect("decline is acked");
    get_task_until(&client, &id, "cancelled", |got| {
        got.task.task.status == McpStatus::Cancelled
    })
    .await;
    client.cancel().await.unwrap();
}
