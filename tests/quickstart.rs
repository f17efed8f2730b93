//! The README's first command: the quickstart example runs on the in-process default with nothing installed,
//! shows a processing reference, polls to completion and ends on a cache hit.

use std::path::PathBuf;
use std::process::Command;

/// `cargo test` builds the examples beside the test binaries: `target/<profile>/examples/quickstart`.
fn quickstart_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>");
    profile_dir
        .join("examples")
        .join(format!("quickstart{}", std::env::consts::EXE_SUFFIX))
}

#[test]
fn the_quickstart_runs_to_a_cache_hit() {
    let binary = quickstart_binary();
    assert!(
        binary.exists(),
        "{} is missing: `cargo test` builds examples",
        binary.display()
    );
    let output = Command::new(&binary)
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
