//! The command job (issue 18 §2), through the one cached function every surface calls (`run_command`) on the
//! in-process backend: output streamed as the program writes it, the outcome, a non-zero exit and the refusals
//! (not allowed, a shell, not found, not executable, an environment variable), single-flight of equal specs, and
//! the stop of the whole process group on a cancel, a time limit and an exit that leaves children, counted in
//! /proc.

use std::sync::Once;
use std::time::{Duration, Instant};

use refcache::command::{CommandError, CommandOutcome, CommandSpec, Commands, run_command};
use refcache::{CachedResponse, TaskStatus};

#[path = "support/processes.rs"]
mod processes;
use processes::{alive_in_group, gone_within};

const GRACE: Duration = Duration::from_millis(800);

/// The settings of this test binary: installed once (they are process-wide).
fn install() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        Commands::new()
            .allow(["echo", "seq", "sh", "cat", "ls", "no-such-program-refcache"])
            .enable_shell()
            .allow_env(["GREETING"])
            .grace(GRACE)
            .install()
            .expect("the test's settings are valid");
    });
}

fn sh(script: &str) -> CommandSpec {
    CommandSpec::new("sh", ["-c", script])
}

/// Polls until the task is terminal (30 s at most: far beyond what any of these commands takes).
async fn settle(response: CachedResponse) -> CachedResponse {
    let cache = refcache::default_cache().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut response = response;
    while !response.status().is_terminal() {
        assert!(Instant::now() < deadline, "the task did not end in 30 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
        response = cache
            .get_cached_result(response.ref_id().as_str())
            .await
            .unwrap();
    }
    response
}

/// All the output written so far.
async fn output(ref_id: &str) -> String {
    let cache = refcache::default_cache().unwrap();
    let mut text = String::new();
    let mut offset = 0;
    loop {
        let chunk = cache.read_output(ref_id, offset, None).await.unwrap();
        text.push_str(&chunk.text);
        if chunk.next_offset == offset {
            return text;
        }
        offset = chunk.next_offset;
    }
}

/// Waits until the output holds `pgid N`, and answers N.
async fn pgid_of(ref_id: &str) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = output(ref_id).await;
        if let Some(rest) = text.split("pgid ").nth(1) {
            return rest.split_whitespace().next().unwrap().parse().unwrap();
        }
        assert!(Instant::now() < deadline, "no pgid line in 30 s: {text:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn error_code(response: &CachedResponse) -> String {
    response
        .error()
        .and_then(|e| e.code.clone())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_streams_before_the_end_and_the_outcome_holds_exit_duration_and_tail() {
    install();
    // Prints a line, then waits until the test has read it: the line was streamed, not sent at the end.
    let dir = std::env::temp_dir().join(format!("refcache-cmd-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let flag = dir.join("go");
    let script = format!(
        "echo first line; echo on stderr >&2; while [ ! -e {} ]; do sleep 0.02; done; echo last line",
        flag.display()
    );
    let first = run_command(sh(&script)).await.unwrap();
    assert_eq!(first.status(), TaskStatus::Processing);
    let ref_id = first.ref_id().to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = output(&ref_id).await;
        if text.contains("first line\n") && text.contains("on stderr\n") {
            break;
        }
        assert!(Instant::now() < deadline, "no streamed output: {text:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    std::fs::write(&flag, b"").unwrap();
    let done = settle(first).await;
    assert_eq!(done.status(), TaskStatus::Complete, "{:?}", done.error());
    let outcome: CommandOutcome = done.value_as().unwrap().unwrap();
    assert_eq!(outcome.exit.code, Some(0));
    assert!(outcome.tail.ends_with("last line\n"), "{:?}", outcome.tail);
    assert_eq!(outcome.output_bytes, output(&ref_id).await.len() as u64);
    assert!(outcome.duration_ms < 30_000);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_zero_exit_fails_the_task_with_its_code_and_tail() {
    install();
    let response = settle(run_command(sh("echo about to fail; exit 3")).await.unwrap()).await;
    assert_eq!(response.status(), TaskStatus::Failed);
    let error = response.error().unwrap();
    assert_eq!(error.code.as_deref(), Some("COMMAND_FAILED"));
    assert!(
        error.message.contains("exited with code 3"),
        "{}",
        error.message
    );
    assert!(error.message.contains("about to fail"), "{}", error.message);
    let details = error.details.as_ref().unwrap();
    assert_eq!(details["exit_code"], 3);
    assert_eq!(details["tail"], "about to fail\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdin_and_an_allowed_variable_reach_the_program_and_the_environment_is_cleared() {
    install();
    // The test process has variables of its own (CARGO_*): none but PATH, HOME, LANG, LC_ALL and TZ reaches
    // the child.
    let spec = sh("read line; echo \"$line $GREETING [${CARGO_PKG_NAME:-unset}]\"")
        .stdin("hello from stdin\n")
        .env("GREETING", "and hi");
    let done = settle(run_command(spec).await.unwrap()).await;
    assert_eq!(done.status(), TaskStatus::Complete, "{:?}", done.error());
    let outcome: CommandOutcome = done.value_as().unwrap().unwrap();
    assert_eq!(outcome.tail, "hello from stdin and hi [unset]\n");
    let refused = settle(
        run_command(CommandSpec::new("echo", ["x"]).env("LD_PRELOAD", "/x.so"))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(error_code(&refused), "INVALID_COMMAND");
    assert!(refused.error().unwrap().message.contains("LD_PRELOAD"));
    let refused = settle(
        run_command(CommandSpec::new("echo", ["x"]).env("OTHER", "1"))
            .await
            .unwrap(),
    )
    .await;
    assert!(
        refused
            .error()
            .unwrap()
            .message
            .contains("`OTHER` is not allowed")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn programs_that_are_not_allowed_found_or_executable_get_an_error_naming_them() {
    install();
    let response = settle(
        run_command(CommandSpec::new("rm", ["-rf", "/tmp/x"]))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(error_code(&response), "NOT_ALLOWED");
    let message = &response.error().unwrap().message;
    assert!(message.contains("`rm` is not allowed"), "{message}");
    assert!(message.contains("echo"), "names the allowlist: {message}");

    let response = settle(
        run_command(CommandSpec::new("no-such-program-refcache", ["a"]))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(error_code(&response), "NOT_FOUND");
    assert!(
        response
            .error()
            .unwrap()
            .message
            .contains("`no-such-program-refcache` was not found")
    );

    // A file without the execute bit, allowlisted by its path (on an instance: the installed list is fixed).
    let file = std::env::temp_dir().join(format!("refcache-noexec-{}", std::process::id()));
    std::fs::write(&file, b"#!/bin/sh\necho hi\n").unwrap();
    let path = file.display().to_string();
    let commands = Commands::new().allow([path.clone()]);
    let error = commands
        .check(&CommandSpec::new(path.clone(), Vec::<String>::new()))
        .unwrap_err();
    assert!(
        matches!(error, CommandError::NotExecutable { .. }),
        "{error}"
    );
    assert!(error.to_string().contains(&path), "{error}");
    std::fs::remove_file(&file).unwrap();

    // A shell on the allowlist is refused until shells are enabled, at install and at run.
    let error = Commands::new()
        .allow(["echo", "bash"])
        .install()
        .unwrap_err();
    assert!(
        matches!(error, CommandError::ShellNotEnabled { ref program } if program == "bash"),
        "{error}"
    );
    let error = Commands::new()
        .allow(["/usr/bin/env"])
        .check(&CommandSpec::new("/usr/bin/env", ["ls"]))
        .unwrap_err();
    assert!(error.to_string().contains("enable_shell"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn equal_specs_are_one_execution() {
    install();
    let file = std::env::temp_dir().join(format!("refcache-once-{}", std::process::id()));
    let _ = std::fs::remove_file(&file);
    let script = format!("echo ran >> {}; sleep 0.5", file.display());
    let (a, b) = tokio::join!(run_command(sh(&script)), run_command(sh(&script)));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.ref_id(), b.ref_id());
    let (a, b) = (settle(a).await, settle(b).await);
    assert_eq!(a.status(), TaskStatus::Complete);
    assert_eq!(b.status(), TaskStatus::Complete);
    // A third call afterwards is a hit.
    let c = run_command(sh(&script)).await.unwrap();
    assert_eq!(c.status(), TaskStatus::Complete);
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "ran\n",
        "one execution"
    );
    std::fs::remove_file(&file).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_stops_the_whole_process_group() {
    install();
    let cache = refcache::default_cache().unwrap();
    let first = run_command(sh("echo pgid $$; sleep 300 & sleep 300 & wait"))
        .await
        .unwrap();
    let ref_id = first.ref_id().to_string();
    let pgid = pgid_of(&ref_id).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while alive_in_group(pgid) < 3 {
        assert!(
            Instant::now() < deadline,
            "the shell and its two sleeps did not start"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    cache.cancel_task(&ref_id).await.unwrap();
    // sleep exits on SIGTERM: gone well within the grace period (plus a wide margin for a loaded machine).
    gone_within(pgid, GRACE + Duration::from_secs(10)).await;
    let done = settle(first).await;
    assert_eq!(done.status(), TaskStatus::Cancelled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_that_ignores_sigterm_is_killed_after_the_grace_period() {
    install();
    let cache = refcache::default_cache().unwrap();
    // The ignored SIGTERM is inherited by the sleep the shell starts.
    let first = run_command(sh("trap '' TERM; echo pgid $$; sleep 300; echo never"))
        .await
        .unwrap();
    let ref_id = first.ref_id().to_string();
    let pgid = pgid_of(&ref_id).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while alive_in_group(pgid) < 2 {
        assert!(Instant::now() < deadline, "the sleep did not start");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let cancelled = Instant::now();
    cache.cancel_task(&ref_id).await.unwrap();
    gone_within(pgid, GRACE + Duration::from_secs(10)).await;
    assert!(
        cancelled.elapsed() >= GRACE,
        "killed before the grace period: {:?}",
        cancelled.elapsed()
    );
    assert!(!output(&ref_id).await.contains("never"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_time_limit_stops_the_group_and_fails_with_timeout() {
    install();
    let first = run_command(sh("echo pgid $$; sleep 300 & wait").timeout_seconds(0.5))
        .await
        .unwrap();
    let ref_id = first.ref_id().to_string();
    let pgid = pgid_of(&ref_id).await;
    let done = settle(first).await;
    assert_eq!(done.status(), TaskStatus::Failed);
    assert_eq!(error_code(&done), "TIMEOUT");
    assert!(done.error().unwrap().message.contains("0.5 s time limit"));
    assert_eq!(
        alive_in_group(pgid),
        0,
        "the task ended only after its group was gone"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn children_left_by_a_finished_command_are_stopped() {
    install();
    let done = settle(
        run_command(sh(
            "echo pgid $$; sleep 300 > /dev/null 2>&1 & echo finished",
        ))
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(done.status(), TaskStatus::Complete, "{:?}", done.error());
    let pgid = pgid_of(done.ref_id().as_str()).await;
    assert_eq!(alive_in_group(pgid), 0, "the background sleep was stopped");
}

/// How long a call waits is the caller's: a `CallOptions::async_timeout` scope answers a reference long before
/// the installed 2 s (`Commands::wait`'s default) and before the command ends; the command runs on, and a second
/// call that waits longer than it takes joins it and gets its value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_may_wait_less_or_more_than_the_installed_wait() {
    install();
    let spec = sh("echo waiting; sleep 3; echo waited");
    let asked = Instant::now();
    let quick = refcache::CallOptions::new()
        .async_timeout(Duration::from_millis(100))
        .scope(run_command(spec.clone()))
        .await
        .unwrap();
    assert_eq!(quick.status(), TaskStatus::Processing);
    assert!(
        asked.elapsed() < Duration::from_secs(3),
        "answered before the command ended"
    );
    let patient = refcache::CallOptions::new()
        .async_timeout(Duration::from_secs(60))
        .scope(run_command(spec))
        .await
        .unwrap();
    assert_eq!(patient.ref_id(), quick.ref_id(), "one execution");
    let outcome: CommandOutcome = patient
        .value_as()
        .unwrap()
        .expect("the value, not a reference");
    assert_eq!(outcome.tail, "waiting\nwaited\n");
}
