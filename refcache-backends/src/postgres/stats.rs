//! `stats`: the counts by status, record and value bytes, the counters, and the gauges of running tasks and slots.

use std::collections::HashMap;

use refcache_core::{BackendError, BackendStats, TaskStatus};

use super::codec::parse_status;
use super::inner::{Inner, lock, ms_i64};

impl Inner {
    pub(super) async fn stats(&self) -> Result<BackendStats, BackendError> {
        let mut stats = BackendStats::default();
        for row in self.query(&self.sql.by_status, &[]).await? {
            if let Some(status) = parse_status(row.get(0)) {
                let (n, bytes): (i64, i64) = (row.get(1), row.get(2));
                stats
                    .by_status
                    .insert(status, u64::try_from(n).unwrap_or(0));
                stats.record_bytes += u64::try_from(bytes).unwrap_or(0);
            }
        }
        stats.value_bytes = self
            .query(&self.sql.value_bytes, &[])
            .await?
            .first()
            .map_or(0, |r| u64::try_from(r.get::<_, i64>(0)).unwrap_or(0));
        let counters: HashMap<String, i64> = self
            .query(&self.sql.counters, &[])
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        let (running, capacity) = {
            let st = lock(&self.run);
            (st.running() as u64, st.capacity() as u64)
        };
        stats.running = running;
        stats.capacity = capacity;
        for row in self
            .query(&self.sql.gauges, &[&ms_i64(self.config.lease)])
            .await?
        {
            let consumer: &str = row.get(0);
            if consumer == self.consumer {
                continue;
            }
            let (r, c): (i64, i64) = (row.get(1), row.get(2));
            stats.running += u64::try_from(r).unwrap_or(0);
            stats.capacity += u64::try_from(c).unwrap_or(0);
        }
        stats.queued = stats
            .by_status
            .get(&TaskStatus::Pending)
            .copied()
            .unwrap_or(0);
        let c = |name: &str| {
            counters
                .get(name)
                .copied()
                .and_then(|n| u64::try_from(n).ok())
                .unwrap_or(0)
        };
        stats.executions = c("executions");
        stats.coalesced = c("coalesced");
        stats.retries = c("retries");
        stats.cancellations = c("cancellations");
        stats.timeouts = c("timeouts");
        Ok(stats)
    }
}
