//! The managed PostgreSQL that the Postgres backend's tests run against: it starts on a free loopback port in a
//! directory of its own (as the `postgres` user when the tests run as root), keeps committed data across a kill and
//! restart, and two of them are isolated.
#![cfg(feature = "postgres")]

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
