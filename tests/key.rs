//! The key is the task name, the namespace and the canonical JSON of the key arguments. `&self`, `TaskContext`,
//! rmcp context types and `skip(...)` parameters are not part of it.

use std::collections::HashMap;
use std::sync::LazyLock;

use refcache::{RefCache, TaskContext, cached};

static CACHE: LazyLock<RefCache> = LazyLock::new(RefCache::new);
#[path = "support/runs.rs"]
mod support;
use support::{bump, runs};

#[cached(cache = CACHE)]
async fn count_words(words: HashMap<String, u32>) -> u32 {
    bump("count_words");
    words.values().sum()
}

#[tokio::test]
async fn map_order_does_not_change_the_key() {
    let mut a = HashMap::new();
    let mut b = HashMap::with_capacity(64);
    for i in 0..20 {
        a.insert(format!("w{i}"), i);
    }
    for i in (0..20).rev() {
        b.insert(format!("w{i}"), i);
    }
    let first = count_words(a).await.unwrap();
    let second = count_words(b).await.unwrap();
    assert_eq!(first.ref_id(), second.ref_id());
    assert_eq!(runs("count_words"), 1);
}

#[cached(cache = CACHE, name = "key::shared", namespace = "alpha")]
async fn in_alpha(n: u32) -> u32 {
    bump("shared");
    n
}

#[cached(cache = CACHE, name = "key::shared", namespace = "beta")]
async fn in_beta(n: u32) -> u32 {
    bump("shared");
    n
}

#[cached(cache = CACHE, name = "key::shared", namespace = "alpha")]
async fn also_in_alpha(n: u32) -> u32 {
    bump("shared");
    n
}

#[tokio::test]
async fn name_and_namespace_are_part_of_the_key() {
    let a = in_alpha(7).await.unwrap();
    let b = in_beta(7).await.unwrap();
    assert_ne!(a.ref_id(), b.ref_id(), "another namespace is another key");
    assert_eq!(runs("shared"), 2);
    let same = also_in_alpha(7).await.unwrap();
    assert_eq!(
        same.ref_id(),
        a.ref_id(),
        "same name, namespace and arguments: same key"
    );
    assert_eq!(runs("shared"), 2);
}

#[derive(Clone)]
struct Pool(#[allow(dead_code)] u32);

#[cached(cache = CACHE, skip(pool))]
async fn query(pool: Pool, sql: String, ctx: &TaskContext) -> usize {
    let Pool(_) = pool;
    let _ = ctx.progress(1.0, Some(1.0), "");
    bump(&sql);
    sql.len()
}

#[tokio::test]
async fn skipped_and_context_parameters_are_not_part_of_the_key() {
    // The TaskContext parameter is gone from the wrapper's signature; `pool` is skipped.
    let a = query(Pool(1), "select 1".into()).await.unwrap();
    let b = query(Pool(2), "select 1".into()).await.unwrap();
    assert_eq!(a.ref_id(), b.ref_id());
    assert_eq!(runs("select 1"), 1);
    let c = query(Pool(1), "select 2".into()).await.unwrap();
    assert_ne!(c.ref_id(), a.ref_id());
}

#[derive(Clone)]
struct Server {
    id: u32,
}

impl Server {
    #[deny(clippy::all, unused_braces)]
    #[cached(cache = CACHE)]
    async fn tool(&self, input: String) -> String {
        bump(&input);
        format!("{input} via {}", self.id)
    }
}

#[tokio::test]
async fn self_is_not_part_of_the_key() {
    let first = Server { id: 1 }.tool("x".into()).await.unwrap();
    let second = Server { id: 2 }.tool("x".into()).await.unwrap();
    assert_eq!(second.ref_id(), first.ref_id());
    assert_eq!(
        second.value_as::<String>().unwrap().as_deref(),
        Some("x via 1")
    );
    assert_eq!(runs("x"), 1);
}

#[test]
fn the_key_is_blake3_of_name_namespace_and_canonical_arguments() {
    // Streaming the arguments gives the same key as hashing their canonical JSON object.
    let mut builder = refcache::KeyBuilder::new("t", "public");
    builder.arg("a", &vec![1, 2]).unwrap();
    builder
        .arg("b", &HashMap::from([("y", 2), ("x", 1)]))
        .unwrap();
    let streamed = builder.finish();
    let json = serde_json::json!({"b": {"x": 1, "y": 2}, "a": [1, 2]});
    assert_eq!(
        streamed,
        refcache::CacheKey::from_json("t", "public", &json).unwrap()
    );
    assert_eq!(streamed.to_hex().len(), 64);
}
