//! Most of the facade's integration tests, as modules of one test binary: one build and one link instead of one per
//! file. Each file stays where it is (`tests/<file>.rs`, included by `#[path]`), and its tests are named
//! `<file>::<test>`: `cargo test --all-features --test suite hit::` runs `tests/hit.rs`.
//!
//! A file that uses process-wide state (the default cache, a tracing subscriber, a metrics recorder, the process's
//! RSS or threads, task names from `module_path!`) keeps a binary of its own, a `[[test]]` in `Cargo.toml`.
//! [`every_test_file_is_built`] fails when a `tests/*.rs` file is in neither, since `autotests = false` would
//! otherwise skip it without a word.
//!
//! A file that needs a feature is included under that feature (`#[cfg]` here, or its own `#![cfg]`), as
//! `required-features` did for its binary.

// Each file loads the support modules it uses (`#[path = "support/runs.rs"] mod support;`), as it did as a binary of
// its own: a file's module is its own copy, with its own statics, so the files do not share counters by accident.
#![allow(clippy::duplicate_mod)]

#[path = "access_paths.rs"]
mod access_paths;
#[path = "admin.rs"]
mod admin;
#[path = "argument_limit.rs"]
mod argument_limit;
#[path = "async_timeout.rs"]
mod async_timeout;
#[path = "bounds.rs"]
mod bounds;
#[path = "cancellation.rs"]
mod cancellation;
#[path = "concurrency.rs"]
mod concurrency;
#[path = "config.rs"]
mod config;
#[cfg(all(feature = "redis", feature = "postgres"))]
#[path = "distributed.rs"]
mod distributed;
#[path = "execution_timeout.rs"]
mod execution_timeout;
#[path = "failures.rs"]
mod failures;
#[path = "format_override.rs"]
mod format_override;
#[path = "hit.rs"]
mod hit;
#[path = "input.rs"]
mod input;
#[path = "key.rs"]
mod key;
#[path = "max_size.rs"]
mod max_size;
#[path = "mcp_in_process.rs"]
mod mcp_in_process;
#[path = "mcp_input.rs"]
mod mcp_input;
#[path = "mcp_python.rs"]
mod mcp_python;
#[path = "mcp_server.rs"]
mod mcp_server;
#[path = "mcp_tasks.rs"]
mod mcp_tasks;
#[path = "migrating.rs"]
mod migrating;
#[path = "namespaces.rs"]
mod namespaces;
#[path = "no_timeout.rs"]
mod no_timeout;
#[path = "one_lifetime.rs"]
mod one_lifetime;
#[path = "output.rs"]
mod output;
#[path = "owner_cap.rs"]
mod owner_cap;
#[path = "pagination.rs"]
mod pagination;
#[path = "policies.rs"]
mod policies;
#[path = "preview_strategies.rs"]
mod preview_strategies;
#[path = "record_bytes.rs"]
mod record_bytes;
#[path = "redis_replicas.rs"]
mod redis_replicas;
#[path = "ref_ids.rs"]
mod ref_ids;
#[path = "reference_inputs.rs"]
mod reference_inputs;
#[path = "retries.rs"]
mod retries;
#[path = "retry_task.rs"]
mod retry_task;
#[path = "runtime_shutdown.rs"]
mod runtime_shutdown;
#[path = "single_flight.rs"]
mod single_flight;
#[path = "stats.rs"]
mod stats;
#[path = "sync_functions.rs"]
mod sync_functions;
#[cfg(feature = "web")]
#[path = "web_api.rs"]
mod web_api;
#[path = "wire_shapes.rs"]
mod wire_shapes;

/// Every `tests/*.rs` file is a module of this binary or a `[[test]]` of its own in `Cargo.toml`.
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

/// The source path of each `[[test]]` in the manifest: its `path`, or `tests/<name>.rs`.
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
    paths
}
