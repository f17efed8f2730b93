//! The refcache quickstart: a 3-second tool behind a 1-second `async_timeout`.
//!
//! ```text
//! cargo run -p quickstart
//! ```
//!
//! 1. The first call returns a processing reference after 1 s; the work goes on in the background.
//! 2. Polling `get_cached_result` every 500 ms shows its progress (one line per poll), then its value.
//! 3. Calling again is an instant cache hit (timed end to end, in whatever profile it was built).
//!
//! On a slower machine the output's times shift; the poll that finds the task complete still ends the loop.

use std::time::{Duration, Instant};

use refcache::{RefCacheError, TaskContext, TaskStatus, cached};
use serde::{Deserialize, Serialize};

#[cfg(test)]
mod tests;

#[derive(Debug, Serialize, Deserialize)]
struct IndexReport {
    corpus: String,
    documents: u32,
}

/// Indexes a corpus. Takes three seconds, reporting progress as it goes.
#[cached(async_timeout = 1.0, response_format = "standard")]
async fn index_corpus(
    corpus: String,
    ctx: TaskContext,
) -> Result<IndexReport, refcache::Cancelled> {
    let steps = 6;
    for step in 1..=steps {
        tokio::time::sleep(Duration::from_millis(500)).await;
        ctx.progress(
            f64::from(step),
            Some(f64::from(steps)),
            format!("indexed {step} of {steps} shards"),
        )?;
    }
    Ok(IndexReport {
        corpus,
        documents: 1_204,
    })
}

fn show(label: &str, value: &impl Serialize) {
    println!(
        "{label}\n{}\n",
        serde_json::to_string_pretty(value).expect("responses serialize")
    );
}

#[tokio::main]
async fn main() {
    // An error is printed with its message, which names the setting and the fix (a `REFCACHE_BACKEND` this build
    // cannot serve, a bad `REFCACHE_*` value), rather than as `Debug`.
    if let Err(e) = run().await {
        eprintln!("quickstart: {e}");
        std::process::exit(1);
    }
}

async fn run() -> Result<(), RefCacheError> {
    let start = Instant::now();
    let first = index_corpus("wikipedia-en".to_owned()).await?;
    show(
        &format!(
            "1. first call, answered after {:.2} s:",
            start.elapsed().as_secs_f64()
        ),
        &first,
    );
    assert_eq!(
        first.status(),
        TaskStatus::Processing,
        "a 3 s tool outlasts a 1 s timeout"
    );

    let ref_id = first.ref_id().to_string();
    println!("2. polling get_cached_result(\"{ref_id}\") every 500 ms:");
    let complete = loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let polled = refcache::get_cached_result(&ref_id).await?;
        if polled.status().is_terminal() {
            show(
                &format!(
                    "\n   at {:.1} s, {}:",
                    start.elapsed().as_secs_f64(),
                    polled.status()
                ),
                &polled,
            );
            break polled;
        }
        println!(
            "   at {:.1} s: {} ({})",
            start.elapsed().as_secs_f64(),
            polled.status(),
            polled.message()
        );
    };
    assert!(
        complete.is_complete(),
        "the task failed: {}",
        complete.message()
    );

    let again = Instant::now();
    let hit = index_corpus("wikipedia-en".to_owned()).await?;
    show(
        &format!(
            "3. second call, a cache hit in {} µs (end to end, this build's profile):",
            again.elapsed().as_micros()
        ),
        &hit,
    );
    assert!(hit.is_complete() && hit.ref_id() == complete.ref_id());
    Ok(())
}
