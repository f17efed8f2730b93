//! Why a command did not run, or did not succeed ([`CommandError`]), and how that becomes the task's error.

use crate::model::excerpt::excerpt;
use crate::model::task::TaskError;

use super::spec::Exit;

/// Why a command did not run or did not succeed. Each message names the program and, where there is one, the fix.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum CommandError {
    /// No [`Commands`](super::Commands) is installed in this process.
    #[error(
        "commands are not enabled in this process: call `Commands::new().allow([...]).install()` at start-up (in \
         every process that runs tasks, workers included)"
    )]
    NotInstalled,
    /// The program is not on the allowlist.
    #[error("program `{program}` is not allowed: this server runs only {allowed}")]
    NotAllowed {
        /// The program asked for (a short prefix).
        program: String,
        /// The allowlist, comma-separated.
        allowed: String,
    },
    /// The program is a shell or a launcher, and shells are not enabled.
    #[error(
        "program `{program}` is a shell or runs other programs, and shells are not enabled: call \
         `Commands::enable_shell()` if the server must run one"
    )]
    ShellNotEnabled {
        /// The program.
        program: String,
    },
    /// The program was not found on the server's `PATH` (or at its path).
    #[error(
        "program `{program}` was not found{searched}: install it, or allowlist its absolute path"
    )]
    NotFound {
        /// The program.
        program: String,
        /// Where it was looked for (` on PATH ...`), or empty.
        searched: String,
    },
    /// The program's file cannot be executed.
    #[error("program `{program}` ({path}) is not executable: {reason}")]
    NotExecutable {
        /// The program.
        program: String,
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// A spec's field is not acceptable.
    #[error("invalid command for `{program}`: {reason}")]
    Invalid {
        /// The program.
        program: String,
        /// What is wrong, and the fix.
        reason: String,
    },
    /// The command could not be started (or its output read).
    #[error("program `{program}` could not be run: {reason}")]
    Io {
        /// The program.
        program: String,
        /// The system's error.
        reason: String,
    },
    /// The command exited with a non-zero code, or a signal ended it.
    #[error("program `{program}` {exit} after {duration_ms} ms; its output ended with:\n{tail}")]
    Failed {
        /// The program.
        program: String,
        /// How it ended.
        exit: Exit,
        /// From start to exit, in milliseconds.
        duration_ms: u64,
        /// The end of its output.
        tail: String,
    },
    /// The spec's time limit passed: the command was stopped.
    #[error(
        "program `{program}` did not finish within its {seconds} s time limit and was stopped; its output ended \
         with:\n{tail}"
    )]
    TimedOut {
        /// The program.
        program: String,
        /// The limit.
        seconds: f64,
        /// The end of its output.
        tail: String,
    },
    /// The task was cancelled (or timed out, or its session ended, or the cache shut down): the command was
    /// stopped.
    #[error("program `{program}` was stopped: its task was cancelled")]
    Cancelled {
        /// The program.
        program: String,
    },
}

impl CommandError {
    /// A short, stable code for the task's error.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotInstalled => "COMMANDS_NOT_ENABLED",
            Self::NotAllowed { .. } => "NOT_ALLOWED",
            Self::ShellNotEnabled { .. } => "SHELL_NOT_ENABLED",
            Self::NotFound { .. } => "NOT_FOUND",
            Self::NotExecutable { .. } => "NOT_EXECUTABLE",
            Self::Invalid { .. } => "INVALID_COMMAND",
            Self::Io { .. } => "COMMAND_IO",
            Self::Failed { .. } => "COMMAND_FAILED",
            Self::TimedOut { .. } => "TIMEOUT",
            Self::Cancelled { .. } => "CANCELLED",
        }
    }

    pub(crate) fn not_allowed<'a>(
        program: &str,
        allowed: impl Iterator<Item = &'a String>,
    ) -> Self {
        let allowed: Vec<&str> = allowed.map(String::as_str).collect();
        Self::NotAllowed {
            // At most a short prefix of what the caller sent.
            program: excerpt(program, 100).into_owned(),
            allowed: if allowed.is_empty() {
                "nothing (the allowlist is empty)".to_owned()
            } else {
                allowed.join(", ")
            },
        }
    }
}

/// A command's error as the task's: its text, its code, and (for an exit or a time limit) the exit and the tail in
/// `details`. None is retried: running a command again is the caller's choice.
impl From<CommandError> for TaskError {
    fn from(error: CommandError) -> Self {
        let details = match &error {
            CommandError::Failed {
                exit,
                duration_ms,
                tail,
                ..
            } => Some(serde_json::json!({
                "exit_code": exit.code,
                "signal": exit.signal,
                "duration_ms": duration_ms,
                "tail": tail,
            })),
            CommandError::TimedOut { seconds, tail, .. } => {
                Some(serde_json::json!({"timeout_seconds": seconds, "tail": tail}))
            }
            _ => None,
        };
        let mut task = TaskError::new(error.to_string())
            .with_code(error.code())
            .permanent();
        if let Some(details) = details {
            task = task.with_details(details);
        }
        task
    }
}
