//! The example binaries that tests run as child processes.

use std::path::PathBuf;

/// The example `name`, built once per test binary. Under `cargo test --workspace --all-features` (the README's test
/// command), which builds the examples too, the build is a no-op; `cargo test --test <one>` does not build them,
/// so it is built here with the same feature resolution.
pub(crate) fn binary(name: &'static str) -> PathBuf {
    static BUILT: std::sync::Mutex<Vec<(&str, PathBuf)>> = std::sync::Mutex::new(Vec::new());
    let mut built = BUILT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some((_, bin)) = built.iter().find(|(n, _)| *n == name) {
        return bin.clone();
    }
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let bin = dir.join("examples").join(name);
    let status = std::process::Command::new(env!("CARGO"))
        .args(["build", "--workspace", "--all-features", "--example", name])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .unwrap_or_else(|e| panic!("cargo build --example {name}: {e}"));
    assert!(status.success(), "building the example {name} failed");
    built.push((name, bin.clone()));
    bin
}
