//! The managed `redis-server` that the Redis backend's tests run against: it starts on a free port, keeps data
//! across a restart with AOF on, and loses it without.
#![cfg(feature = "redis")]

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
