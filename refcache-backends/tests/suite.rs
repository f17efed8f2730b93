//! The backends' integration tests, as modules of one test binary: one build and one link of the whole stack
//! instead of one per file. Each file stays where it is (`tests/<file>.rs`, included by `#[path]`), and its tests are
//! named `<file>::<test>`: `cargo test -p refcache-backends --all-features --test suite redis_hostile::` runs
//! `tests/redis_hostile.rs`.
//!
//! Each file keeps its own `#![cfg(feature = ..)]`, as `required-features` did for its binary: without the feature
//! its module is empty. Each file's module is its own copy, with its own statics (its shared server, its gates), and
//! its tasks are registered under names of its own, so the files share nothing by accident. A file that needs
//! process-wide state of its own (an environment variable, a global subscriber or provider) would get a `[[test]]`
//! of its own in `Cargo.toml` instead; none does now. [`every_test_file_is_built`] fails when a `tests/*.rs` file is
//! in neither, since `autotests = false` would otherwise skip it without a word.

#[path = "postgres_backend.rs"]
mod postgres_backend;
#[path = "postgres_conformance.rs"]
mod postgres_conformance;
#[path = "postgres_server.rs"]
mod postgres_server;
#[path = "redis_cluster.rs"]
mod redis_cluster;
#[path = "redis_conformance.rs"]
mod redis_conformance;
#[path = "redis_fast_paths.rs"]
mod redis_fast_paths;
#[path = "redis_hostile.rs"]
mod redis_hostile;
#[path = "redis_record_bytes.rs"]
mod redis_record_bytes;
#[path = "redis_server.rs"]
mod redis_server;
#[path = "redis_tls.rs"]
mod redis_tls;

/// Whether `pid` is a live process (a zombie is not: it has exited and waits only to be reaped), for the test
/// servers' files, which check that a server is gone after the process that started it ended.
#[allow(dead_code)] // Used only by files behind a feature.
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        // `pid (comm) state ...`: the state follows the last `)`.
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next())
            .is_some_and(|state| state != 'Z' && state != 'X')
    })
}

/// Every `tests/*.rs` file is a module of this binary or a `[[test]]` of its own in `Cargo.toml`, not both.
#[test]
fn every_test_file_is_built() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let suite = include_str!("suite.rs");
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).expect("Cargo.toml");
    let in_suite: Vec<String> = suite
        .lines()
        .filter_map(|line| line.strip_prefix("#[path = \""))
        .filter_map(|rest| rest.strip_suffix("\"]"))
        .map(str::to_owned)
        .collect();
    assert!(!in_suite.is_empty(), "tests/suite.rs includes no file");
    let own = own_test_paths(&manifest);
    let mut missing = Vec::new();
    for entry in std::fs::read_dir(root.join("tests")).expect("tests/") {
        let name = entry.expect("a tests/ entry").file_name();
        let name = name.to_string_lossy().into_owned();
        if !name.ends_with(".rs") || name == "suite.rs" {
            continue;
        }
        let listed_here = in_suite.contains(&name);
        let own_binary = own.contains(&format!("tests/{name}"));
        assert!(
            !(listed_here && own_binary),
            "tests/{name} is both in tests/suite.rs and a [[test]] of its own: it would run twice"
        );
        if !listed_here && !own_binary {
            missing.push(name);
        }
    }
    assert!(
        missing.is_empty(),
        "these tests/*.rs files are built by nothing (autotests = false): {missing:?}; add each to tests/suite.rs \
         as `#[path = \"x.rs\"] mod x;`, or give it a [[test]] of its own in Cargo.toml"
    );
    for name in &in_suite {
        assert!(
            root.join("tests").join(name).is_file(),
            "tests/suite.rs includes tests/{name}, which does not exist"
        );
    }
}

/// The source path of each `[[test]]` in the manifest other than this suite: its `path`, or `tests/<name>.rs`.
fn own_test_paths(manifest: &str) -> Vec<String> {
    let mut paths = Vec::new();
    let mut section = "";
    let mut name: Option<String> = None;
    let mut path: Option<String> = None;
    let mut flush = |name: &mut Option<String>, path: &mut Option<String>| {
        if let Some(n) = name.take() {
            paths.push(path.take().unwrap_or_else(|| format!("tests/{n}.rs")));
        }
        *path = None;
    };
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            if section == "[[test]]" {
                flush(&mut name, &mut path);
            }
            section = line;
            continue;
        }
        if section != "[[test]]" {
            continue;
        }
        let value = |key: &str| {
            line.strip_prefix(key)
                .map(str::trim_start)
                .and_then(|rest| rest.strip_prefix('='))
                .map(|v| v.trim().trim_matches('"').to_owned())
        };
        if let Some(v) = value("name") {
            name = Some(v);
        } else if let Some(v) = value("path") {
            path = Some(v);
        }
    }
    if section == "[[test]]" {
        flush(&mut name, &mut path);
    }
    paths.retain(|p| p != "tests/suite.rs");
    paths
}
