//! Counting processes from /proc: the ones of a process group that still run (zombies run nothing and are not
//! counted), and waiting for a group to be gone.

use std::time::{Duration, Instant};

/// The processes of group `pgid` that still run.
pub(crate) fn alive_in_group(pgid: i32) -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter(|stat| {
            let Some((_, rest)) = stat.rsplit_once(')') else {
                return false;
            };
            let fields: Vec<&str> = rest.split_whitespace().collect();
            fields.len() > 2 && fields[0] != "Z" && fields[2] == pgid.to_string()
        })
        .count()
}

/// Waits (at most `within`) for group `pgid` to be gone; answers how long it took.
pub(crate) async fn gone_within(pgid: i32, within: Duration) -> Duration {
    let start = Instant::now();
    while alive_in_group(pgid) > 0 {
        assert!(
            start.elapsed() < within,
            "group {pgid} still has {} processes after {within:?}",
            alive_in_group(pgid)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    start.elapsed()
}
