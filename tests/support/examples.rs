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
    let mut build = std::process::Command::new(env!("CARGO"));
    build
        .args(["build", "--workspace", "--all-features"])
        .args(target)
        .args(["--test", "tracing"])
        .current_dir(root);
    // Cargo gives a test process variables that describe the test's own package (`CARGO_PKG_NAME`,
    // `CARGO_MANIFEST_DIR`, ...). Build scripts watch some of them: ring's has `rerun-if-env-changed=CARGO_PKG_NAME`
    // and `CARGO_MANIFEST_DIR`. Passed on, they made this build rerun ring's script and rebuild ring, rustls, redis
    // and everything above them, and the next plain `cargo test` rebuild them all back. So they are not passed on;
    // cargo's configuration variables (`CARGO_HOME`, `CARGO_TARGET_DIR`, `CARGO_BUILD_*`, ...) are.
    for (name, _) in std::env::vars_os() {
        let Some(name) = name.to_str() else { continue };
        let from_cargo_for_the_test = name == "OUT_DIR"
            || name == "CARGO_CRATE_NAME"
            || name == "CARGO_PRIMARY_PACKAGE"
            || name == "CARGO_TARGET_TMPDIR"
            || ["CARGO_PKG_", "CARGO_MANIFEST_", "CARGO_BIN_"]
                .iter()
                .any(|prefix| name.starts_with(prefix));
        if from_cargo_for_the_test {
            build.env_remove(name);
        }
    }
    let status = build
        .status()
        .unwrap_or_else(|e| panic!("cargo build {} {name}: {e}", target[0]));
    assert!(status.success(), "building the example {name} failed");
    built.push((name, bin.clone()));
    bin
}
