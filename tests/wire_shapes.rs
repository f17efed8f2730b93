//! The exact JSON keys of every response shape, compatible with mcp-refcache so that agents written for it work
//! unchanged.

use std::collections::BTreeSet;
use std::sync::LazyLock;
use std::time::Duration;

use refcache::{AsyncResponseFormat, RefCache, TaskContext, TaskStatus, cached};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

static CACHE: LazyLock<RefCache> = LazyLock::new(RefCache::new);

fn keys(value: &Value) -> BTreeSet<&str> {
    value
        .as_object()
        .expect("an object")
        .keys()
        .map(String::as_str)
        .collect()
}

fn set(items: &[&'static str]) -> BTreeSet<&'static str> {
    items.iter().copied().collect()
}

/// A report with a schema.
#[derive(Serialize, Deserialize, JsonSchema)]
struct Report {
    /// Words indexed.
    words: u32,
}

/// Indexes a corpus, reporting progress halfway.
#[cached(async_timeout = 1.0, cache = CACHE)]
async fn index(corpus: String, ctx: TaskContext) -> Result<Report, String> {
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _ = ctx.progress(5.0, Some(10.0), format!("indexed half of {corpus}"));
    tokio::time::sleep(Duration::from_secs(2)).await;
    Ok(Report {
        words: corpus.len() as u32,
    })
}

/// No JsonSchema on this type.
#[derive(Serialize, Deserialize)]
struct Opaque(u32);

#[cached(async_timeout = 1.0, cache = CACHE, response_format = "full")]
async fn opaque(n: u32) -> Opaque {
    tokio::time::sleep(Duration::from_secs(5)).await;
    Opaque(n)
}

#[tokio::test(start_paused = true)]
async fn complete_shape() {
    let response = index("ab".into()).await.unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let json = CACHE
        .get_cached_result(response.ref_id().as_str())
        .await
        .unwrap()
        .to_json();
    assert_eq!(
        keys(&json),
        set(&[
            "ref_id",
            "value",
            "is_complete",
            "is_async",
            "size",
            "total_items"
        ])
    );
    assert_eq!(json["value"], json!({"words": 2}));
    assert_eq!(
        (json["is_complete"].clone(), json["is_async"].clone()),
        (json!(true), json!(false))
    );
    assert_eq!(json["size"], r#"{"words":2}"#.len());
    assert_eq!(json["total_items"], 1);
}

#[tokio::test(start_paused = true)]
async fn total_items_is_null_for_scalars_and_counts_arrays() {
    #[cached(cache = CACHE)]
    async fn scalar(n: u32) -> u32 {
        n
    }
    #[cached(cache = CACHE)]
    async fn list(n: u32) -> Vec<u32> {
        (0..n).collect()
    }
    assert_eq!(
        scalar(1).await.unwrap().to_json()["total_items"],
        Value::Null
    );
    assert_eq!(list(4).await.unwrap().to_json()["total_items"], 4);
}

#[tokio::test(start_paused = true)]
async fn async_shapes_by_format() {
    let response = index("shapes".into()).await.unwrap();
    let ref_id = response.ref_id().to_string();
    tokio::time::sleep(Duration::from_secs(2)).await; // progress is reported at 2 s

    let poll = |format| {
        let ref_id = ref_id.clone();
        async move {
            let options = refcache::GetOptions::default().format(format);
            CACHE
                .get_cached_result_with(&ref_id, &options)
                .await
                .unwrap()
                .to_json()
        }
    };
    let minimal = poll(AsyncResponseFormat::Minimal).await;
    assert_eq!(
        keys(&minimal),
        set(&["ref_id", "status", "is_complete", "is_async"])
    );
    assert_eq!(minimal["status"], "processing");
    assert_eq!(
        (minimal["is_complete"].clone(), minimal["is_async"].clone()),
        (json!(false), json!(true))
    );

    let standard = poll(AsyncResponseFormat::Standard).await;
    assert_eq!(
        keys(&standard),
        set(&[
            "ref_id",
            "status",
            "is_complete",
            "is_async",
            "started_at",
            "progress",
            "message"
        ])
    );
    assert_eq!(
        standard["progress"],
        json!({"current": 5.0, "total": 10.0, "message": "indexed half of shapes", "percentage": 50.0})
    );
    assert_eq!(
        standard["message"], "indexed half of shapes",
        "the latest progress message"
    );
    let started = standard["started_at"].as_str().unwrap();
    assert!(
        humantime::parse_rfc3339(started).is_ok() && started.ends_with('Z'),
        "RFC 3339 UTC: {started}"
    );

    let full = poll(AsyncResponseFormat::Full).await;
    assert_eq!(
        keys(&full),
        set(&[
            "ref_id",
            "status",
            "is_complete",
            "is_async",
            "started_at",
            "progress",
            "message",
            "eta_seconds",
            "error",
            "retry_count",
            "can_retry",
            "retry_history",
            "expected_schema",
        ])
    );
    assert_eq!(full["error"], Value::Null);
    assert_eq!(full["retry_count"], 0);
    assert_eq!(full["can_retry"], false);
    assert!(
        full["eta_seconds"].as_f64().is_some(),
        "5 of 10 done: an ETA exists"
    );
    let schema = &full["expected_schema"];
    assert_eq!(keys(schema), set(&["return_type", "schema", "description"]));
    assert_eq!(schema["return_type"], "Report");
    assert_eq!(
        schema["description"],
        "Indexes a corpus, reporting progress halfway."
    );
    assert_eq!(schema["schema"]["properties"]["words"]["type"], "integer");
}

#[tokio::test(start_paused = true)]
async fn a_type_without_json_schema_has_a_null_schema() {
    let full = opaque(1).await.unwrap().to_json();
    assert_eq!(full["status"], "processing");
    assert_eq!(full["eta_seconds"], Value::Null, "no progress, no ETA");
    assert_eq!(full["progress"], Value::Null);
    assert_eq!(full["expected_schema"]["return_type"], "Opaque");
    assert_eq!(full["expected_schema"]["schema"], Value::Null);
    assert_eq!(full["expected_schema"]["description"], Value::Null);
}

#[tokio::test(start_paused = true)]
async fn status_messages() {
    let response = opaque(2).await.unwrap();
    let ref_id = response.ref_id().to_string();
    assert_eq!(
        response.to_json()["message"],
        format!("Task is processing (ref_id={ref_id})")
    );
    assert_eq!(response.status(), TaskStatus::Processing);
    let info = CACHE.task_info(&ref_id).await.unwrap();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let done = CACHE.task_info(&ref_id).await.unwrap();
    assert_eq!(done.message(), "Task completed successfully");
    assert!(info.created_at <= done.finished_at.unwrap());
}

/// Fields out of alphabetical order, to see that the text is the function's own serialization.
#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Unsorted {
    zeta: u32,
    alpha: Vec<String>,
}

#[cached(cache = CACHE)]
async fn unsorted(n: u32) -> Unsorted {
    Unsorted {
        zeta: n,
        alpha: vec!["a,b".into(), "c".into()],
    }
}

/// A complete value is held as the text its task serialized once: its size is the text's length, `total_items`
/// is counted on it, the wire text splices it in unchanged (the struct's own field order), and a tree or a typed
/// value is built from it on demand.
#[tokio::test]
async fn a_complete_value_is_its_json_text_spliced_into_the_wire_text() {
    let response = unsorted(7).await.unwrap();
    let text = response.value().expect("complete");
    assert_eq!(text.as_str(), r#"{"zeta":7,"alpha":["a,b","c"]}"#);
    let stored = response.stored().expect("complete");
    assert_eq!(stored.size, text.len());
    assert_eq!(stored.total_items, Some(2));
    let wire = response.to_json_string();
    assert!(
        wire.contains(r#""value":{"zeta":7,"alpha":["a,b","c"]}"#),
        "{wire}"
    );
    assert_eq!(
        serde_json::from_str::<Value>(&wire).unwrap(),
        response.to_json()
    );
    assert_eq!(text.to_value(), json!({"alpha": ["a,b", "c"], "zeta": 7}));
    assert_eq!(
        response.value_as::<Unsorted>().unwrap(),
        Some(Unsorted {
            zeta: 7,
            alpha: vec!["a,b".into(), "c".into()]
        })
    );
}
