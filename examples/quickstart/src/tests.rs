//! The README's first command (`cargo run -p quickstart`): the quickstart runs on the in-process default with
//! nothing installed, shows a processing reference, polls to completion and ends on a cache hit.
//!
//! A unit test of the binary, not an integration test in `tests/`: for a package with an integration test, cargo
//! builds the package's binary, `target/debug/quickstart`, with the test command's features. Under the README's
//! `cargo test --workspace --all-features` that was a build with Redis, Postgres and the rest compiled in, left where
//! a plain `cargo run -p quickstart` puts its own. Here the test binary runs `main` in a child copy of itself (the
//! ignored test below), so the output and exit status checked are a real process's, and no `target/debug/quickstart`
//! is built.

use std::process::Command;

/// `main`, as the child process runs it. Ignored in a plain `cargo test`; the test below runs it by name.
#[test]
#[ignore = "the quickstart's main, run in a child process by the_quickstart_runs_to_a_cache_hit"]
fn main_in_a_child_process() {
    super::main();
}

#[test]
fn the_quickstart_runs_to_a_cache_hit() {
    let test_binary = std::env::current_exe().expect("the test binary's path");
    let output = Command::new(test_binary)
        .args([
            "--ignored",
            "--exact",
            "tests::main_in_a_child_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env_remove("REFCACHE_BACKEND")
        .output()
        .expect("run the test binary");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "quickstart failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // The filter matched the child test (0 tests run would also succeed).
    assert!(stdout.contains("1 passed"), "{stdout}");
    assert!(stdout.contains("\"status\": \"processing\""), "{stdout}");
    assert!(stdout.contains("2. polling get_cached_result("), "{stdout}");
    assert!(stdout.contains(": processing (indexed "), "{stdout}");
    assert!(stdout.contains("of 6 shards)"), "{stdout}");
    assert!(stdout.contains(", complete:"), "{stdout}");
    assert!(stdout.contains("\"is_complete\": true"), "{stdout}");
    assert!(stdout.contains("3. second call, a cache hit"), "{stdout}");
}
