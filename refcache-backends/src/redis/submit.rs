//! The submit path: the lookup of a finished value beyond the near cache, and a submission (single-flight, in
//! the submit script).

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use refcache_core::{
    BackendError, CacheKey, RefId, StoredValue, Submission, Submitted, TaskInfo, TaskStatus,
    Timestamp,
};

use super::config::Mode;
use super::state::{RedisTaskBackend, ms, now_ms};

impl RedisTaskBackend {
    /// The body of `TaskBackend::lookup`.
    pub(super) async fn lookup_value(
        &self,
        key: &CacheKey,
    ) -> Result<Option<Arc<StoredValue>>, BackendError> {
        self.inner.ensure_started();
        let inner = &self.inner;
        let mut conn = inner.conn();
        let json: Option<String> = inner
            .scripts
            .lookup
            .arg(inner.keys.prefix())
            .arg(key.to_hex())
            .invoke_async(&mut conn)
            .await
            .map_err(|e| inner.unavailable(&e))?;
        match json {
            Some(json) => Ok(Some(inner.stored(&json).await?).filter(|v| v.is_live())),
            None => Ok(None),
        }
    }

    /// The body of `TaskBackend::submit`.
    pub(super) async fn submit_task(
        &self,
        submission: Submission,
    ) -> Result<Submitted, BackendError> {
        let inner = &self.inner;
        inner.ensure_started();
        inner.check_accepting()?;
        let Submission { spec, job, .. } = submission;
        let created = now_ms();
        let mut info = TaskInfo::new(
            spec.ref_id.clone(),
            spec.task_name.clone(),
            spec.namespace.clone(),
        );
        // Whole milliseconds, as the record stores them: lists order by this.
        info.created_at = Timestamp(UNIX_EPOCH + Duration::from_millis(created));
        info.session_id = spec.options.session_id.clone();
        info.policy = spec.policy.clone();
        info.max_retries = spec.options.max_retries;
        // In `workers` mode a task goes onto the stream, unless no worker could run it: a method or a function
        // with skipped parameters is not registered by name, so it runs here, as in `local` mode.
        let workers = inner.config.mode == Mode::Workers
            && (job.is_none() || refcache_core::registry::find(&spec.task_name).is_some());
        let lease_expiry = if workers {
            String::new()
        } else {
            (created + ms(inner.config.lease)).to_string()
        };
        // Followed before it exists: a `wait` for it from here then has every event about it, and need not read
        // its record first (in `local` mode the runner here tells its waiters instead).
        let follower = workers.then(|| inner.hub.follow(&spec.ref_id));
        // Its end comes to this replica's waiter in the terminal script's event, beside the record and value the
        // script wrote, with this token as the proof that the script sent it: the token is in the task's record
        // only, which a neighbour that can only publish on the channel cannot read (#17 §3: the waiter's read
        // after the end is one round trip fewer).
        let token = (workers && inner.config.end_in_event)
            .then(|| uuid::Uuid::new_v4().simple().to_string());
        if let Some(token) = &token {
            inner.hub.expect(&spec.ref_id, token, spec.key);
        }
        // `local` mode with a slot free now (and nothing queued here): the task is claimed in the submit script,
        // one round trip fewer than a pending record and its `claim`. It is written `processing`, as the claim
        // would have written it.
        let claimed = !workers && inner.reserve(&spec);
        // The slot goes back if this future is dropped before the task has it (a cancelled request): without it,
        // `max_workers` such drops would leave no slot and every task here pending for good.
        let mut reservation = claimed.then(|| Reservation {
            inner: inner.clone(),
            ref_id: spec.ref_id.clone(),
            task_name: spec.task_name.clone(),
            armed: true,
        });
        if claimed {
            info.status = TaskStatus::Processing;
            info.started_at = Some(info.created_at);
        }
        let mut conn = inner.conn();
        let reply: Result<Vec<String>, _> = inner
            .scripts
            .submit
            .arg(inner.keys.prefix())
            .arg(spec.ref_id.as_str())
            .arg(spec.key.to_hex())
            .arg(serde_json::to_string(&info).expect("a TaskInfo serializes"))
            .arg(serde_json::to_string(&spec).expect("a TaskSpec serializes"))
            .arg(created)
            .arg(priority_hex(spec.options.priority))
            .arg(spec.options.session_id.as_deref().unwrap_or(""))
            .arg(if workers { "1" } else { "0" })
            .arg(inner.config.max_queued)
            .arg(lease_expiry)
            .arg(if claimed { inner.consumer.as_str() } else { "" })
            .arg(token.as_deref().unwrap_or(""))
            .invoke_async(&mut conn)
            .await;
        let started = matches!(&reply, Ok(r) if r.first().map(String::as_str) == Some("started"));
        if started {
            // From here the slot is the task's (`run_claimed` below, with no await before it).
            if let Some(reservation) = reservation.as_mut() {
                reservation.armed = false;
            }
        }
        drop(reservation);
        let reply = reply.map_err(|e| inner.unavailable(&e))?;
        match reply.first().map(String::as_str) {
            Some("hit") => Ok(Submitted::Hit(inner.stored(&reply[1]).await?)),
            Some("joined") => RefId::parse(&reply[1])
                .map(Submitted::Joined)
                .map_err(|e| inner.corrupt("in-flight entry", e)),
            Some("full") => Err(BackendError::QueueFull {
                max_queued: inner.config.max_queued,
            }),
            Some("started") => {
                let ref_id = spec.ref_id.clone();
                if let Some(follower) = follower {
                    inner.hub.keep(ref_id.clone(), follower);
                } else if claimed {
                    self.inner.run_claimed(Arc::new(spec), job, info);
                } else {
                    // The record as submitted: the runner claims from it without reading it back.
                    info.queue_position = None;
                    // Always taken: only a stream entry is refused at shutdown.
                    let _ = self
                        .inner
                        .hold(Arc::new(spec), job, None, false, Some(info));
                }
                Ok(Submitted::Started(ref_id))
            }
            other => Err(BackendError::Other(format!(
                "unexpected answer from the submit script: {other:?}"
            ))),
        }
    }
}

/// The queue member's priority part: higher priority sorts first.
pub(super) fn priority_hex(priority: i32) -> String {
    let inverted = i64::from(i32::MAX) - i64::from(priority);
    format!("{inverted:08x}")
}

/// A slot reserved (`Inner::reserve`) for a submission that has not started its task yet: dropped, it gives the
/// slot back (the submission was refused, failed, or its caller went away mid-round-trip).
struct Reservation {
    inner: Arc<super::state::Inner>,
    ref_id: RefId,
    task_name: Arc<str>,
    armed: bool,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.armed {
            self.inner.unreserve(&self.ref_id, &self.task_name);
        }
    }
}
