//! Every Redis key and channel name, from the prefix: one place, so that several apps can share a Redis by prefix.
//!
//! | key | type | what |
//! |---|---|---|
//! | `P:task:<ref>` | hash | `info` (TaskInfo JSON), `spec` (TaskSpec JSON), `status`, `key`, `qm` (queue member), `owner`, `deliveries`, `msg` (stream id), `session`, `obase`/`ocap` (the output log's first offset and cap), `ask` (the key of the question it waits on), `answer`/`answered` (an answer taken, and its key, until the worker reads it), `leased` (run by a replica, which keeps a lease in `P:leases`), `tok` (`workers` mode: the token its end's event carries for its submitter) |
//! | `P:out:<ref>` | string | the task's output log, its newest bytes (`obase`, `ocap` on the record); expires and goes with the record |
//! | `P:inflight:<key>` | string | the ref id in flight for a cache key (single-flight) |
//! | `P:value:<key>` | hash | `ref`, `v` (StoredValue JSON); expires with the value's TTL |
//! | `P:index` | zset | ref ids by creation time (lists) |
//! | `P:finished` | zset | ref ids by finishing time (cleanup) |
//! | `P:pending` | zset | queue members `<priority><seq>:<ref>`, in start order (queue positions) |
//! | `P:leases` | zset | `local` mode: ref ids held by a live process, by lease expiry |
//! | `P:session:<id>` | set | ref ids of a session |
//! | `P:queue` | stream | `workers` mode: one entry (`ref`, `spec`, and `info`: the record as submitted or retried) per delivery; consumer group `workers` |
//! | `P:dead` | list | ref ids that failed `worker lost` |
//! | `P:stats` | hash | cluster-wide counters |
//! | `P:workers` | hash | live processes' gauges (running, capacity), by consumer name |
//! | `P:seq` | string | the queue's sequence |
//! | `P:events` | channel | task changes (`info`) and deletions (`drop`) |
//! | `P:queued` | channel | `workers` mode: a stream entry was added (wakes the workers' `take`) |

use refcache_core::RefId;

/// The consumer group of the task stream.
pub(crate) const GROUP: &str = "workers";

/// The key names under one prefix.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    prefix: String,
}

impl Keys {
    pub(crate) fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
        }
    }

    /// The prefix, which every script gets as its first argument and builds its keys from.
    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    pub(crate) fn task(&self, ref_id: &RefId) -> String {
        format!("{}:task:{ref_id}", self.prefix)
    }

    pub(crate) fn value(&self, key: &refcache_core::CacheKey) -> String {
        format!("{}:value:{}", self.prefix, key.to_hex())
    }

    pub(crate) fn session(&self, id: &str) -> String {
        format!("{}:session:{id}", self.prefix)
    }

    pub(crate) fn index(&self) -> String {
        format!("{}:index", self.prefix)
    }

    pub(crate) fn leases(&self) -> String {
        format!("{}:leases", self.prefix)
    }

    pub(crate) fn queue(&self) -> String {
        format!("{}:queue", self.prefix)
    }

    pub(crate) fn dead(&self) -> String {
        format!("{}:dead", self.prefix)
    }

    pub(crate) fn stats(&self) -> String {
        format!("{}:stats", self.prefix)
    }

    pub(crate) fn workers(&self) -> String {
        format!("{}:workers", self.prefix)
    }

    pub(crate) fn pending(&self) -> String {
        format!("{}:pending", self.prefix)
    }

    pub(crate) fn events(&self) -> String {
        format!("{}:events", self.prefix)
    }

    pub(crate) fn queued(&self) -> String {
        format!("{}:queued", self.prefix)
    }
}
