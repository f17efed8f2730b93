//! The managed PostgreSQL that the Postgres backend's tests run against: it starts on a free loopback port in a
//! directory of its own (as the `postgres` user when the tests run as root), keeps committed data across a kill and
//! restart, and two of them are isolated.
#![cfg(feature = "postgres")]

use crate::alive;
use refcache_backends::postgres::PostgresServer;

async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    client
}

#[tokio::test]
async fn committed_data_survives_a_kill_and_restart() {
    let mut server = tokio::task::spawn_blocking(PostgresServer::start)
        .await
        .unwrap()
        .expect("start PostgreSQL (Debian: apt-get install postgresql)");
    assert!(server.pid().is_some());
    let client = connect(&server.url()).await;
    client
        .batch_execute("CREATE TABLE t (v text); INSERT INTO t VALUES ('kept')")
        .await
        .unwrap();
    let mut server = tokio::task::spawn_blocking(move || {
        server.kill();
        assert!(!server.is_running());
        server.restart().expect("restarts on the same port");
        server
    })
    .await
    .unwrap();
    let client = connect(&server.url()).await;
    let v: String = client
        .query_one("SELECT v FROM t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(v, "kept");
    tokio::task::spawn_blocking(move || server.kill())
        .await
        .unwrap();
}

#[tokio::test]
async fn two_servers_are_isolated_and_not_the_machines() {
    let (a, b) = tokio::task::spawn_blocking(|| {
        (
            PostgresServer::start().unwrap(),
            PostgresServer::start().unwrap(),
        )
    })
    .await
    .unwrap();
    assert_ne!(a.port(), b.port());
    assert_ne!(a.port(), 5432, "never the machine's own server");
    connect(&a.url())
        .await
        .batch_execute("CREATE TABLE only_in_a (v int)")
        .await
        .unwrap();
    let found: bool = connect(&b.url())
        .await
        .query_one("SELECT to_regclass('only_in_a') IS NOT NULL", &[])
        .await
        .unwrap()
        .get(0);
    assert!(!found);
}

/// Set for the child process of [`a_server_whose_process_group_is_killed_does_not_outlive_it`]: the file where
/// [`keep_a_server_running`] writes its server's pid and directory.
const KEEP_RUNNING: &str = "REFCACHE_TEST_KEEP_A_PG_SERVER";

/// Not a test on its own (it does nothing unless [`KEEP_RUNNING`] is set): run in a child process, it starts a
/// server, writes where it is, and waits to be killed, as a test binary stopped from outside does.
#[test]
#[ignore = "run by a_server_whose_process_group_is_killed_does_not_outlive_it, in a child process"]
fn keep_a_server_running() {
    let Some(report) = std::env::var_os(KEEP_RUNNING) else {
        return;
    };
    let server = PostgresServer::start().expect("postgres starts");
    let pid = server.pid().expect("it runs");
    let dir = std::env::temp_dir().join(format!("refcache-pg-{}-0", std::process::id()));
    assert!(dir.is_dir(), "the server's directory is {}", dir.display());
    std::fs::write(&report, format!("{pid}\n{}\n", dir.display())).unwrap();
    loop {
        std::thread::sleep(std::time::Duration::from_secs(60));
    }
}

/// A test binary killed with its whole process group (`kill -- -PGID`, as a harness or a shell's job control stops
/// it) leaves no server behind: the watchdog is in a group of its own, so it survives to stop the server.
#[test]
fn a_server_whose_process_group_is_killed_does_not_outlive_it() {
    use std::os::unix::process::CommandExt as _;
    use std::time::{Duration, Instant};
    let report = std::env::temp_dir().join(format!(
        "refcache-pg-keep-running-{}.txt",
        std::process::id()
    ));
    let _ = std::fs::remove_file(&report);
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "postgres_server::keep_a_server_running",
            "--ignored",
            "--test-threads=1",
        ])
        .env(KEEP_RUNNING, &report)
        .stdout(std::process::Stdio::null())
        .process_group(0)
        .spawn()
        .expect("the test binary runs");
    // initdb and the start take seconds; minutes on a loaded machine.
    let deadline = Instant::now() + Duration::from_secs(240);
    let text = loop {
        if let Ok(text) = std::fs::read_to_string(&report)
            && text.lines().count() == 2
        {
            break text;
        }
        if Instant::now() > deadline || child.try_wait().unwrap().is_some() {
            let _ = child.kill();
            panic!("the child did not report its server");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = std::fs::remove_file(&report);
    let mut lines = text.lines();
    let pid: u32 = lines.next().unwrap().parse().unwrap();
    let dir = std::path::PathBuf::from(lines.next().unwrap());
    assert!(alive(pid), "the server runs while its test does");
    let group = format!("-{}", child.id());
    let killed = std::process::Command::new("kill")
        .args(["-KILL", "--", &group])
        .status()
        .unwrap();
    assert!(killed.success(), "kill -KILL -- {group}");
    let _ = child.wait();
    // The watchdog acts as soon as the pipe closes; 60 s is for a loaded machine.
    let deadline = Instant::now() + Duration::from_secs(60);
    while (alive(pid) || dir.exists()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let (left_running, left_dir) = (alive(pid), dir.exists());
    if left_running {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
    }
    if left_dir {
        let _ = std::fs::remove_dir_all(&dir);
    }
    assert!(
        !left_running,
        "postgres {pid} outlived the killed process group that started it"
    );
    assert!(
        !left_dir,
        "{} outlived the killed process group that started its server",
        dir.display()
    );
}
