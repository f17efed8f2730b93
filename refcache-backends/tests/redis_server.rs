//! The managed `redis-server` that the Redis backend's tests run against: it starts on a free port, keeps data
//! across a restart with AOF on, and loses it without.
#![cfg(feature = "redis")]

use crate::alive;
use redis::Commands;
use refcache_backends::redis::{RedisServer, RedisServerOptions};

fn set_then_get_after_restart(options: RedisServerOptions) -> Option<String> {
    let mut server = RedisServer::start_with(options).expect("redis-server starts");
    let client = redis::Client::open(server.url()).unwrap();
    let mut conn = client.get_connection().unwrap();
    let _: () = conn.set("k", "v").unwrap();
    server.kill();
    assert!(!server.is_running());
    server.restart().expect("restarts on the same port");
    let mut conn = client.get_connection().unwrap();
    conn.get("k").unwrap()
}

#[test]
fn aof_keeps_data_across_a_crash_and_no_aof_loses_it() {
    assert_eq!(
        set_then_get_after_restart(RedisServerOptions::default().aof(true)).as_deref(),
        Some("v")
    );
    assert_eq!(
        set_then_get_after_restart(RedisServerOptions::default()),
        None
    );
}

#[test]
fn two_servers_are_isolated() {
    let a = RedisServer::start().unwrap();
    let b = RedisServer::start().unwrap();
    assert_ne!(a.port(), b.port());
    let mut ca = redis::Client::open(a.url())
        .unwrap()
        .get_connection()
        .unwrap();
    let mut cb = redis::Client::open(b.url())
        .unwrap()
        .get_connection()
        .unwrap();
    let _: () = ca.set("only-in-a", 1).unwrap();
    let got: Option<i64> = cb.get("only-in-a").unwrap();
    assert_eq!(got, None);
}

/// Set for the child process of [`a_server_left_undropped_by_an_ending_process_does_not_outlive_it`]: the file
/// where [`leave_a_server_behind`] writes its server's pid and directory.
const LEAVE_BEHIND: &str = "REFCACHE_TEST_LEAVE_A_REDIS_SERVER";

/// Not a test on its own (it does nothing unless [`LEAVE_BEHIND`] is set): run in a child process, it starts a
/// server, writes where it is, and exits without dropping it, as a test binary does with a server in a `static`.
#[test]
#[ignore = "run by a_server_left_undropped_by_an_ending_process_does_not_outlive_it, in a child process"]
fn leave_a_server_behind() {
    let Some(report) = std::env::var_os(LEAVE_BEHIND) else {
        return;
    };
    let server = RedisServer::start().expect("redis-server starts");
    let pid = server.pid().expect("it runs");
    let dir = std::env::temp_dir().join(format!("refcache-redis-{}-0", std::process::id()));
    assert!(dir.is_dir(), "the server's directory is {}", dir.display());
    std::fs::write(&report, format!("{pid}\n{}\n", dir.display())).unwrap();
    std::mem::forget(server);
    std::process::exit(0);
}

#[test]
fn a_server_left_undropped_by_an_ending_process_does_not_outlive_it() {
    let report = std::env::temp_dir().join(format!(
        "refcache-redis-leave-behind-{}.txt",
        std::process::id()
    ));
    let _ = std::fs::remove_file(&report);
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "redis_server::leave_a_server_behind",
            "--ignored",
            "--test-threads=1",
        ])
        .env(LEAVE_BEHIND, &report)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("the test binary runs");
    assert!(status.success(), "the child exited with {status}");
    let text = std::fs::read_to_string(&report).expect("the child wrote its server's pid");
    let _ = std::fs::remove_file(&report);
    let mut lines = text.lines();
    let pid: u32 = lines.next().unwrap().parse().unwrap();
    let dir = std::path::PathBuf::from(lines.next().unwrap());
    // The watchdog acts as soon as the pipe closes; 30 s is for a loaded machine.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while (alive(pid) || dir.exists()) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let (left_running, left_dir) = (alive(pid), dir.exists());
    if left_running {
        // Not left behind by this test either.
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
    }
    if left_dir {
        let _ = std::fs::remove_dir_all(&dir);
    }
    assert!(
        !left_running,
        "redis-server {pid} outlived the process that started it"
    );
    assert!(
        !left_dir,
        "{} outlived the process that started its server",
        dir.display()
    );
}
