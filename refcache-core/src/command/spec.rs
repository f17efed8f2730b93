//! What a command is ([`CommandSpec`], the key of a run) and what a finished one answers ([`CommandOutcome`]).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A command to run: the key of [`run_command`](super::run_command). Two equal specs are one execution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct CommandSpec {
    /// The program: exactly as it appears on the server's allowlist (a name looked up on the server's `PATH`, or
    /// an absolute path). It runs without a shell.
    pub program: String,
    /// Its arguments, passed as they are.
    #[serde(default)]
    pub args: Vec<String>,
    /// The working directory: relative to the server's working directory, and inside one of its allowed
    /// directories. Default: the server's working directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// Environment variables for the program; only names the server allows.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Text written to the program's stdin, which is then closed. Default: an empty stdin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin: Option<String>,
    /// Stop the command after this many seconds (SIGTERM to its group, then SIGKILL after the grace period).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<f64>,
}

impl CommandSpec {
    /// `program` with `args`, in the server's working directory, with no extra environment and an empty stdin.
    pub fn new<I, S>(program: impl Into<String>, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            program: program.into(),
            args: args.into_iter().map(Into::into).collect(),
            cwd: None,
            env: BTreeMap::new(),
            stdin: None,
            timeout_seconds: None,
        }
    }

    /// The same command in `cwd`.
    pub fn cwd(mut self, cwd: impl Into<String>) -> Self {
        self.cwd = Some(cwd.into());
        self
    }

    /// The same command with `name=value` in its environment.
    pub fn env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.insert(name.into(), value.into());
        self
    }

    /// The same command with `text` on its stdin.
    pub fn stdin(mut self, text: impl Into<String>) -> Self {
        self.stdin = Some(text.into());
        self
    }

    /// The same command, stopped after `seconds`.
    pub fn timeout_seconds(mut self, seconds: f64) -> Self {
        self.timeout_seconds = Some(seconds);
        self
    }
}

/// How a process ended: its exit code, or the signal that ended it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[non_exhaustive]
pub struct Exit {
    /// The exit code, when it exited.
    pub code: Option<i32>,
    /// The signal number, when a signal ended it.
    pub signal: Option<i32>,
}

impl Exit {
    /// Whether it exited with code 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.code, self.signal) {
            (Some(code), _) => write!(f, "exited with code {code}"),
            (None, Some(signal)) => write!(f, "was killed by signal {signal}"),
            (None, None) => f.write_str("ended without an exit code"),
        }
    }
}

/// What a command that exited with code 0 answers. Its whole output is in the task's output log (up to the log's
/// cap); `tail` is its end.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[non_exhaustive]
pub struct CommandOutcome {
    /// The program, as given.
    pub program: String,
    /// How it ended.
    pub exit: Exit,
    /// From start to exit, in milliseconds.
    pub duration_ms: u64,
    /// The last bytes it wrote (stdout and stderr interleaved, at most [`Commands::tail_bytes`]).
    pub tail: String,
    /// How many bytes it wrote in all.
    pub output_bytes: u64,
}
