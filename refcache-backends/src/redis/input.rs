//! Input requests on Redis: a running task asks (`ask`: its record goes `input_required` with the question, and
//! `ask` names the question's key), any replica takes the answer (`respond`: atomic on the status, the key and the
//! record it read; the record goes back to `processing` and the answer waits in it), and the worker that asked,
//! woken by the record's event or at the latest by a re-read every [`RECHECK`], takes it (`take_answer`).
//!
//! Events are hints here too: the worker acts only on the answer it reads from the record, under the key it
//! asked. Cancel and the time limit end the wait in `TaskContext::ask`, which then closes the question (the hooks'
//! writer puts the record back to `processing`, `runner.rs`).

use std::time::Duration;

use refcache_core::{BackendError, RefId, RespondOutcome, TaskInfo, TaskStatus, Timestamp};
use serde_json::Value;

use super::events::Event;
use super::state::{Inner, RedisTaskBackend, parse_status};

/// How often a waiting worker reads its record even when no event came (one may be lost with a connection).
const RECHECK: Duration = Duration::from_secs(2);

impl Inner {
    /// Writes the question: `info` is the record with status `input_required` and the request. Answers `ok`, or
    /// what stopped it (`missing`, `stolen`, a status).
    pub(super) async fn ask(
        &self,
        ref_id: &RefId,
        key: &str,
        info: &TaskInfo,
    ) -> Result<String, BackendError> {
        let info_json = serde_json::to_string(info).expect("a TaskInfo serializes");
        let mut conn = self.conn();
        self.scripts
            .ask
            .arg(self.keys.prefix())
            .arg(ref_id.as_str())
            .arg(&self.consumer)
            .arg(key)
            .arg(&info_json)
            .arg(Event::info(info))
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.unavailable(&e))
    }

    /// Waits for the answer to question `key` of a task held here, however long it takes (the caller bounds it:
    /// cancel, time limit). An outage is waited out.
    pub(super) async fn wait_answer(&self, ref_id: &RefId, key: &str) -> Value {
        // Follow first, then read: an answer taken in between arrives as an event.
        let mut follower = self.hub.follow(ref_id);
        loop {
            match self.take_answer(ref_id, key).await {
                Ok(Some(answer)) => return answer,
                Ok(None) => {}
                Err(err) => tracing::debug!(%ref_id, %err, "cannot read for an answer yet"),
            }
            tokio::select! {
                _ = follower.rx().changed() => {}
                () = tokio::time::sleep(RECHECK) => {}
            }
        }
    }

    async fn take_answer(&self, ref_id: &RefId, key: &str) -> Result<Option<Value>, BackendError> {
        let mut conn = self.conn();
        let answer: Option<String> = self
            .scripts
            .take_answer
            .arg(self.keys.prefix())
            .arg(ref_id.as_str())
            .arg(key)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.unavailable(&e))?;
        answer
            .map(|a| serde_json::from_str(&a).map_err(|e| self.corrupt("answer", e)))
            .transpose()
    }
}

impl RedisTaskBackend {
    /// The body of `TaskBackend::respond`: compare-and-set on the record read, so that of two answers at once
    /// (on any replicas) exactly one is taken.
    pub(super) async fn respond_to(
        &self,
        ref_id: &RefId,
        key: &str,
        answer: &Value,
    ) -> Result<RespondOutcome, BackendError> {
        let inner = &self.inner;
        inner.ensure_started();
        let answer = serde_json::to_string(answer).expect("a JSON value serializes");
        for _ in 0..16 {
            let mut conn = inner.conn();
            let seen: Option<String> =
                redis::AsyncCommands::hget(&mut conn, inner.keys.task(ref_id), "info")
                    .await
                    .map_err(|e| inner.unavailable(&e))?;
            let Some(seen) = seen else {
                return Ok(RespondOutcome::NotFound);
            };
            let mut info: TaskInfo =
                serde_json::from_str(&seen).map_err(|e| inner.corrupt("task record", e))?;
            let waiting = info.status == TaskStatus::InputRequired
                && info.input_request.as_ref().is_some_and(|r| r.key == key);
            if !waiting {
                return Ok(RespondOutcome::NotWaiting(info.status));
            }
            info.status = TaskStatus::Processing;
            info.input_request = None;
            info.updated_at = Timestamp::now();
            let info_json = serde_json::to_string(&info).expect("a TaskInfo serializes");
            let reply: String = inner
                .scripts
                .respond
                .arg(inner.keys.prefix())
                .arg(ref_id.as_str())
                .arg(key)
                .arg(&seen)
                .arg(&info_json)
                .arg(&answer)
                .arg(Event::info(&info))
                .invoke_async(&mut conn)
                .await
                .map_err(|e| inner.unavailable(&e))?;
            match reply.as_str() {
                "ok" => {
                    tracing::debug!(%ref_id, key, "answer taken");
                    return Ok(RespondOutcome::Accepted);
                }
                "missing" => return Ok(RespondOutcome::NotFound),
                "changed" => {}
                status => return Ok(RespondOutcome::NotWaiting(parse_status(status))),
            }
        }
        Err(BackendError::Other(format!(
            "could not answer {ref_id}: its record kept changing"
        )))
    }
}
