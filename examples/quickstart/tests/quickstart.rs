//! The README's first command (`cargo run -p quickstart`): the quickstart runs on the in-process default with
//! nothing installed, shows a processing reference, polls to completion and ends on a cache hit.

use std::process::Command;

#[test]
fn the_quickstart_runs_to_a_cache_hit() {
    // Cargo builds a package's binaries before its integration tests.
    let binary = env!("CARGO_BIN_EXE_quickstart");
    let output = Command::new(binary)
        .env_remove("REFCACHE_BACKEND")
        .output()
        .expect("run quickstart");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "quickstart failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("\"status\": \"processing\""), "{stdout}");
    assert!(stdout.contains("2. polling get_cached_result("), "{stdout}");
    assert!(stdout.contains(": processing (indexed "), "{stdout}");
    assert!(stdout.contains("of 6 shards)"), "{stdout}");
    assert!(stdout.contains(", complete:"), "{stdout}");
    assert!(stdout.contains("\"is_complete\": true"), "{stdout}");
    assert!(stdout.contains("3. second call, a cache hit"), "{stdout}");
}
