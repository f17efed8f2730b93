//! A finished, unexpired value for the key is returned at once, with no execution.

use std::sync::LazyLock;
use std::time::Duration;

use refcache::{RefCache, cached};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

static CACHE: LazyLock<RefCache> = LazyLock::new(RefCache::new);
#[path = "support/runs.rs"]
mod support;
use support::{bump, runs};

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Report {
    words: Vec<String>,
    count: usize,
}

#[deny(clippy::all, unused_braces)]
#[cached(async_timeout = 5.0, cache = CACHE)]
async fn index(corpus: String) -> Result<Report, std::io::Error> {
    bump(&corpus);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let words: Vec<String> = corpus.split_whitespace().map(str::to_owned).collect();
    Ok(Report {
        count: words.len(),
        words,
    })
}

#[tokio::test(start_paused = true)]
async fn a_finished_value_is_returned_at_once_without_running() {
    let first = index("a b c".to_owned()).await.unwrap();
    assert!(first.is_complete());
    assert_eq!(runs("a b c"), 1);

    let start = Instant::now();
    let hit = index("a b c".to_owned()).await.unwrap();
    assert_eq!(start.elapsed(), Duration::ZERO, "a hit does not wait");
    assert_eq!(runs("a b c"), 1, "a hit does not run the function");
    assert_eq!(hit.ref_id(), first.ref_id());
    assert_eq!(
        hit.value_as::<Report>().unwrap().unwrap(),
        Report {
            words: vec!["a".into(), "b".into(), "c".into()],
            count: 3
        }
    );

    let json = hit.to_json();
    let value_text = serde_json::to_string(&json["value"]).unwrap();
    assert_eq!(
        json["size"],
        value_text.len(),
        "size is the JSON length of the value"
    );
    assert_eq!(json["total_items"], 2, "an object's item count");

    let stats = CACHE.stats().await.unwrap();
    assert!(stats.hits >= 1 && stats.misses >= 1, "{stats:?}");
}

#[tokio::test(start_paused = true)]
async fn other_arguments_miss() {
    index("x".to_owned()).await.unwrap();
    index("y".to_owned()).await.unwrap();
    assert_eq!((runs("x"), runs("y")), (1, 1));
}
