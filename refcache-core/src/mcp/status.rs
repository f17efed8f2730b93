//! A task's status line over MCP: tasks carry progress only as `statusMessage` (SEP-2663 does not send
//! `notifications/progress` for tasks), so the line says everything a poller would want in one sentence.

use crate::model::record::TaskInfo;
use crate::model::task::TaskStatus;

/// The line MCP shows for a task, in `tasks/get`'s `statusMessage` and in the `message` of `get_cached_result`
/// (standard and full formats) while it runs:
/// `<note or progress message> (<current>/<total>, <percentage>%, about <ETA> left) · latest output: <line>`.
///
/// - the note a backend set (such as the next retry), else the latest progress message, else `Task is processing`
///   (with its ref id when nothing else is known);
/// - in brackets, when the task reported progress: `current/total` and the percentage, or `current` alone with no
///   total; and the ETA, when one can be told ([`TaskInfo::eta_seconds`]);
/// - the latest line of its output, when it wrote one.
///
/// Other statuses answer [`TaskInfo::message`].
pub(crate) fn status_line(info: &TaskInfo) -> String {
    if info.status != TaskStatus::Processing {
        return info.message();
    }
    let mut line = info
        .status_message
        .clone()
        .or_else(|| info.progress.as_ref().and_then(|p| p.message.clone()))
        .unwrap_or_else(|| "Task is processing".to_owned());
    let mut detail = Vec::new();
    if let Some(p) = info.progress.as_ref().filter(|p| p.current.is_finite()) {
        match (p.total.filter(|t| t.is_finite()), p.percentage()) {
            (Some(total), Some(percent)) if percent.is_finite() => detail.push(format!(
                "{}/{}, {percent:.0}%",
                number(p.current),
                number(total)
            )),
            _ => detail.push(format!("{} done", number(p.current))),
        }
    }
    if let Some(eta) = info.eta_seconds().filter(|s| s.is_finite()) {
        detail.push(format!("about {} left", duration(eta)));
    }
    if !detail.is_empty() {
        line = format!("{line} ({})", detail.join(", "));
    }
    let output = info
        .output_line
        .as_ref()
        .filter(|o| Some(*o) != info.progress.as_ref().and_then(|p| p.message.as_ref()));
    match output {
        Some(output) => line = format!("{line} · latest output: {output}"),
        None if detail.is_empty() && line == "Task is processing" => {
            line = info.message();
        }
        None => {}
    }
    line
}

/// A progress count: whole numbers without a fraction.
fn number(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        format!("{n:.0}")
    } else {
        format!("{n:.2}")
    }
}

/// Seconds left, rounded up, as a person says them.
fn duration(seconds: f64) -> String {
    let s = seconds.max(0.0).ceil();
    if s < 120.0 {
        format!("{s:.0} s")
    } else if s < 7200.0 {
        format!("{:.0} min", (s / 60.0).ceil())
    } else {
        format!("{:.1} h", s / 3600.0)
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::model::ref_id::RefId;
    use crate::model::task::{TaskProgress, Timestamp};

    fn running() -> TaskInfo {
        let mut info = TaskInfo::new(RefId::generate("t"), "t", "public");
        info.status = TaskStatus::Processing;
        info.started_at = Some(Timestamp(SystemTime::now() - Duration::from_secs(10)));
        info
    }

    #[test]
    fn carries_the_progress_the_percentage_the_eta_and_the_latest_line() {
        let mut info = running();
        assert!(status_line(&info).starts_with("Task is processing (ref_id="));
        info.progress = Some(TaskProgress::new(
            25.0,
            Some(100.0),
            Some("indexing".into()),
        ));
        let line = status_line(&info);
        assert!(
            line.starts_with("indexing (25/100, 25%, about ") && line.ends_with(" s left)"),
            "{line}"
        );
        info.output_line = Some("wrote part 3".into());
        let line = status_line(&info);
        assert!(line.ends_with(") · latest output: wrote part 3"), "{line}");
        info.progress = Some(TaskProgress::new(3.0, None, None));
        assert_eq!(
            status_line(&info),
            "Task is processing (3 done) · latest output: wrote part 3"
        );
        info.progress = Some(TaskProgress::new(f64::NAN, Some(f64::INFINITY), None));
        assert!(
            !status_line(&info).contains("NaN"),
            "{}",
            status_line(&info)
        );
        info.status = TaskStatus::Failed;
        assert_eq!(status_line(&info), info.message());
    }

    #[test]
    fn durations_read_as_people_say_them() {
        assert_eq!(duration(0.2), "1 s");
        assert_eq!(duration(90.0), "90 s");
        assert_eq!(duration(600.0), "10 min");
        assert_eq!(duration(9000.0), "2.5 h");
    }
}
