//! Input requests: a running task asks (its record goes `input_required`), a replica answers (one UPDATE guarded by
//! the status and the key, so one of several answers takes it), the task reads the answer or closes the question.

use refcache_core::{BackendError, InputRequest, RefId, RespondOutcome, TaskInfo, TaskStatus};

use super::codec::{info_text, parse_status};
use super::inner::Inner;

/// Where a question stands, for the task that asked it.
pub(crate) enum Answer {
    /// Still asked.
    Waiting,
    /// Answered with this.
    Given(serde_json::Value),
    /// Not asked any more (closed, another question, the task finished or gone): its status, if it is there.
    Gone(Option<TaskStatus>),
}

impl Inner {
    /// A running task held here asks: its record goes `input_required` with the question. Answers whether it did
    /// (not: the task is no longer this process's, or no longer running).
    pub(crate) async fn ask(
        &self,
        ref_id: &RefId,
        request: &InputRequest,
        info: &TaskInfo,
    ) -> Result<bool, BackendError> {
        let question = serde_json::to_string(request).expect("an InputRequest serializes");
        let rows = self
            .query(
                &self.sql.ask,
                &[
                    &ref_id.as_str(),
                    &self.consumer,
                    &request.key,
                    &question,
                    &info_text(info),
                    &self.sql.channel,
                ],
            )
            .await?;
        if rows.is_empty() {
            return Ok(false);
        }
        self.hub.poke(ref_id);
        Ok(true)
    }

    /// Where the task's question `key` stands.
    pub(crate) async fn input_answer(
        &self,
        ref_id: &RefId,
        key: &str,
    ) -> Result<Answer, BackendError> {
        let rows = self
            .query(&self.sql.input_answer, &[&ref_id.as_str()])
            .await?;
        let Some(row) = rows.first() else {
            return Ok(Answer::Gone(None));
        };
        let status = parse_status(row.get(0));
        let asked: Option<&str> = row.get(1);
        let response: Option<&str> = row.get(2);
        Ok(match (status, asked == Some(key), response) {
            (Some(TaskStatus::InputRequired), true, _) => Answer::Waiting,
            (Some(TaskStatus::Processing), true, Some(text)) => match serde_json::from_str(text) {
                Ok(value) => Answer::Given(value),
                Err(e) => return Err(self.corrupt("answer", e)),
            },
            (status, _, _) => Answer::Gone(status),
        })
    }

    /// The wait for question `key` ended without an answer: the record leaves `input_required` if it is still
    /// there.
    pub(crate) async fn input_close(&self, ref_id: &RefId, key: &str) -> Result<(), BackendError> {
        let rows = self
            .query(
                &self.sql.input_close,
                &[&ref_id.as_str(), &key, &self.sql.channel],
            )
            .await?;
        if !rows.is_empty() {
            self.hub.poke(ref_id);
        }
        Ok(())
    }

    /// Hands `answer` to the task waiting on question `key`: one UPDATE guarded by the status and the key, so that
    /// of several replicas answering at once, one takes it.
    pub(super) async fn respond(
        &self,
        ref_id: &RefId,
        key: &str,
        answer: &serde_json::Value,
    ) -> Result<RespondOutcome, BackendError> {
        let text = serde_json::to_string(answer).expect("a JSON value serializes");
        let rows = self
            .query(
                &self.sql.respond,
                &[&ref_id.as_str(), &key, &text, &self.sql.channel],
            )
            .await?;
        if !rows.is_empty() {
            self.hub.poke(ref_id);
            return Ok(RespondOutcome::Accepted);
        }
        Ok(match self.status(ref_id).await? {
            Some(status) => RespondOutcome::NotWaiting(status),
            None => RespondOutcome::NotFound,
        })
    }
}
