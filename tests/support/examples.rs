//! The example binaries that tests run as child processes.

use std::path::PathBuf;

/// The example `name`, built once per test binary: a package of its own (`examples/<name>/Cargo.toml`, its binary
/// `target/debug/<name>`) or an example of the facade (`examples/<name>.rs`, `target/debug/examples/<name>`).
///
/// It is built with the feature resolution of the README's test command (`cargo test --workspace --all-features`),
/// so that under that command the build is a no-op for an example and reuses every dependency for a package:
/// `--workspace --all-features`, and this test target selected too, so that the dev-dependencies' features are on
/// as in a test build (a plain `cargo build --bin` would leave them off and build tokio and everything above it a
/// second time). `cargo test --test <one>` does not build the examples, so this does. The test target named is a
/// small one (`tracing`), not the caller's: under a narrow `cargo test -p refcache --test suite` the workspace's
/// feature resolution differs, and naming the caller rebuilt the whole suite binary inside its own test.
pub(crate) fn binary(name: &'static str) -> PathBuf {
    static BUILT: std::sync::Mutex<Vec<(&str, PathBuf)>> = std::sync::Mutex::new(Vec::new());
    let mut built = BUILT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some((_, bin)) = built.iter().find(|(n, _)| *n == name) {
        return bin.clone();
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let package = root
        .join("examples")
        .join(name)
        .join("Cargo.toml")
        .is_file();
    let (bin, target) = if package {
        (dir.join(name), ["--bin", name])
    } else {
        (dir.join("examples").join(name), ["--example", name])
    };
    let status = std::process::Command::new(env!("CARGO"))
        .args(["build", "--workspace", "--all-features"])
        .args(target)
        .args(["--test", "tracing"])
        .current_dir(root)
        .status()
        .unwrap_or_else(|e| panic!("cargo build {} {name}: {e}", target[0]));
    assert!(status.success(), "building the example {name} failed");
    built.push((name, bin.clone()));
    bin
}
