//! The server's command settings ([`Commands`]): the allowlist, shells, the environment, working directories, the
//! grace period; installed once per process, and checked against every spec before anything runs.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use super::error::CommandError;
use super::spec::CommandSpec;

/// How long a stopped command gets between SIGTERM and SIGKILL when the server sets nothing: 5 s.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(5);

/// How long [`run_command`](super::run_command) waits for a command's result before it answers a processing
/// reference, when the server sets nothing: 2 s.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(2);

/// How many bytes of a command's output its outcome (or error) quotes when the server sets nothing: 4 KiB.
pub const DEFAULT_TAIL_BYTES: usize = 4 << 10;

/// Programs that run other programs (shells and launchers). Allowlisting one runs anything, so each is refused
/// unless [`Commands::enable_shell`] is called.
pub const SHELLS: &[&str] = &[
    "sh", "bash", "dash", "zsh", "ksh", "mksh", "fish", "csh", "tcsh", "busybox", "env", "xargs",
    "nohup", "nice", "ionice", "timeout", "setsid", "stdbuf", "chroot", "sudo", "su", "doas",
    "runuser", "setpriv", "unshare", "nsenter", "script", "watch", "flock", "time", "strace",
    "ltrace", "gdb", "python", "python3", "perl", "ruby", "node", "php", "lua", "tclsh", "awk",
    "gawk", "mawk", "find",
];

/// The variables a command gets from the server's environment (when set there).
const PASSED_ENV: &[&str] = &["PATH", "HOME", "LANG", "LC_ALL", "TZ"];

/// Variables a spec may never set, allowlisted or not: they change which code runs.
fn forbidden_env(name: &str) -> bool {
    name == "PATH" || name.starts_with("LD_") || name.starts_with("DYLD_") || name == "IFS"
}

/// A server's command settings. Build one, then [`install`](Self::install) it for [`run_command`], or call
/// [`run`](Self::run) from a job of your own.
///
/// ```
/// use std::time::Duration;
/// use refcache_core::command::Commands;
///
/// let commands = Commands::new()
///     .allow(["echo", "seq", "/usr/bin/ls"])
///     .allow_env(["NO_COLOR"])
///     .grace(Duration::from_secs(2));
/// assert!(commands.is_allowed("seq"));
/// ```
///
/// [`run_command`]: super::run_command
#[derive(Debug, Clone)]
pub struct Commands {
    pub(super) allowed: BTreeSet<String>,
    pub(super) shell: bool,
    pub(super) env: BTreeSet<String>,
    pub(super) dirs: Vec<PathBuf>,
    pub(super) working_dir: Option<PathBuf>,
    pub(super) grace: Duration,
    pub(super) wait: Duration,
    pub(super) tail_bytes: usize,
    pub(super) hint: Option<String>,
}

impl Default for Commands {
    fn default() -> Self {
        Self::new()
    }
}

static INSTALLED: RwLock<Option<Arc<Commands>>> = RwLock::new(None);

impl Commands {
    /// Settings that allow nothing: add programs with [`allow`](Self::allow).
    pub fn new() -> Self {
        Self {
            allowed: BTreeSet::new(),
            shell: false,
            env: BTreeSet::new(),
            dirs: Vec::new(),
            working_dir: None,
            grace: DEFAULT_GRACE,
            wait: DEFAULT_WAIT,
            tail_bytes: DEFAULT_TAIL_BYTES,
            hint: None,
        }
    }

    /// Allows `programs`: names looked up on the server's `PATH` when they run, or absolute paths. A spec's
    /// program must match one exactly.
    pub fn allow<I, S>(mut self, programs: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.allowed.extend(programs.into_iter().map(Into::into));
        self
    }

    /// Lets allowlisted shells and launchers ([`SHELLS`]) run. Without it, a shell on the allowlist is refused
    /// when the settings are installed or used.
    pub fn enable_shell(mut self) -> Self {
        self.shell = true;
        self
    }

    /// Lets a spec set these environment variables (never `PATH`, `IFS`, `LD_*` or `DYLD_*`).
    pub fn allow_env<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.env.extend(names.into_iter().map(Into::into));
        self
    }

    /// The directory commands run in when a spec names none, and that a relative `cwd` starts from. Default: the
    /// server's working directory.
    pub fn working_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.working_dir = Some(dir.into());
        self
    }

    /// Lets a spec's `cwd` be `dir` or anything inside it. Without any, a spec's `cwd` must be the working
    /// directory or inside it.
    pub fn allow_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dirs.push(dir.into());
        self
    }

    /// How long a stopped command gets between SIGTERM and SIGKILL (default [`DEFAULT_GRACE`]).
    pub fn grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// How long a call of [`run_command`](super::run_command) waits for the result before it answers a processing
    /// reference (default [`DEFAULT_WAIT`], 2 s; `Duration::ZERO`: a reference at once). Only the caller's wait
    /// changes: the command runs as long as it runs, and a poll or the web page follows it.
    pub fn wait(mut self, wait: Duration) -> Self {
        self.wait = wait;
        self
    }

    /// How many bytes of output an outcome or error quotes (default [`DEFAULT_TAIL_BYTES`]).
    pub fn tail_bytes(mut self, bytes: usize) -> Self {
        self.tail_bytes = bytes;
        self
    }

    /// How the operator changes the allowlist (such as "start the server with --allow-command to change the
    /// list"): added to the error of a program that is not allowed.
    pub fn allowlist_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Whether `program` is on the allowlist.
    pub fn is_allowed(&self, program: &str) -> bool {
        self.allowed.contains(program)
    }

    /// The allowlist.
    pub fn allowed(&self) -> impl Iterator<Item = &str> {
        self.allowed.iter().map(String::as_str)
    }

    /// The grace period between SIGTERM and SIGKILL.
    pub fn grace_period(&self) -> Duration {
        self.grace
    }

    /// How long [`run_command`](super::run_command) waits for the result ([`wait`](Self::wait)).
    pub fn wait_for(&self) -> Duration {
        self.wait
    }

    /// Checks the settings: a shell on the allowlist without [`enable_shell`](Self::enable_shell) is refused.
    pub fn validate(&self) -> Result<(), CommandError> {
        if !self.shell
            && let Some(shell) = self.allowed.iter().find(|p| is_shell(p))
        {
            return Err(CommandError::ShellNotEnabled {
                program: shell.clone(),
            });
        }
        Ok(())
    }

    /// Makes these the settings of [`run_command`](super::run_command) in this process (replacing any installed
    /// before). Refused, and nothing installed, when [`validate`](Self::validate) fails.
    pub fn install(self) -> Result<(), CommandError> {
        self.validate()?;
        *INSTALLED.write().unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(self));
        Ok(())
    }

    /// The settings installed in this process.
    pub fn installed() -> Result<Arc<Self>, CommandError> {
        INSTALLED
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .ok_or(CommandError::NotInstalled)
    }

    /// Checks `spec` against these settings without running anything: the program is allowed, found and
    /// executable, the environment and directory are allowed. A form or a tool may call it to refuse a spec at
    /// once; [`run`](Self::run) checks again.
    pub fn check(&self, spec: &CommandSpec) -> Result<(), CommandError> {
        self.prepare(spec).map(drop)
    }

    /// What a checked spec runs: the program's file, the working directory, the environment.
    pub(super) fn prepare(&self, spec: &CommandSpec) -> Result<Prepared, CommandError> {
        let program = &spec.program;
        if !self.is_allowed(program) {
            return Err(CommandError::not_allowed(
                program,
                self.allowed.iter(),
                self.hint.as_deref(),
            ));
        }
        if !self.shell && is_shell(program) {
            return Err(CommandError::ShellNotEnabled {
                program: program.clone(),
            });
        }
        let invalid = |reason: String| CommandError::Invalid {
            program: program.clone(),
            reason,
        };
        if let Some(seconds) = spec.timeout_seconds
            && !(seconds > 0.0 && seconds <= 1e9)
        {
            return Err(invalid(format!(
                "timeout_seconds must be a number of seconds above 0, got {seconds}"
            )));
        }
        let mut env: BTreeMap<String, String> = PASSED_ENV
            .iter()
            .filter_map(|name| std::env::var(name).ok().map(|v| ((*name).to_owned(), v)))
            .collect();
        for (name, value) in &spec.env {
            if forbidden_env(name) || !self.env.contains(name) {
                return Err(invalid(format!(
                    "the environment variable `{}` is not allowed{}",
                    crate::model::excerpt::excerpt(name, 60),
                    if forbidden_env(name) {
                        " (PATH, IFS, LD_* and DYLD_* never are)".to_owned()
                    } else {
                        "; the server allows it with `Commands::allow_env`".to_owned()
                    }
                )));
            }
            env.insert(name.clone(), value.clone());
        }
        let base = match &self.working_dir {
            Some(dir) => dir.clone(),
            None => std::env::current_dir().map_err(|e| CommandError::Io {
                program: program.clone(),
                reason: format!("the server's working directory cannot be read: {e}"),
            })?,
        };
        let cwd = match &spec.cwd {
            None => base.clone(),
            Some(dir) => {
                let joined = base.join(dir);
                let cwd = joined.canonicalize().map_err(|e| {
                    invalid(format!(
                        "the directory `{}` cannot be used: {e}",
                        crate::model::excerpt::excerpt(dir, 100)
                    ))
                })?;
                let roots: Vec<PathBuf> = if self.dirs.is_empty() {
                    vec![base.clone()]
                } else {
                    self.dirs.clone()
                };
                let inside = roots
                    .iter()
                    .filter_map(|root| root.canonicalize().ok())
                    .any(|root| cwd.starts_with(&root));
                if !inside {
                    return Err(invalid(format!(
                        "the directory `{}` is outside the directories this server allows",
                        crate::model::excerpt::excerpt(dir, 100)
                    )));
                }
                cwd
            }
        };
        let path = resolve(program, env.get("PATH").map(String::as_str))?;
        Ok(Prepared { path, cwd, env })
    }
}

/// A checked spec's program file, working directory and environment.
pub(super) struct Prepared {
    pub(super) path: PathBuf,
    pub(super) cwd: PathBuf,
    pub(super) env: BTreeMap<String, String>,
}

fn is_shell(program: &str) -> bool {
    let name = Path::new(program)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or(program);
    // `python3.12`, `bash5`: the name without its version.
    let bare = name.trim_end_matches(|c: char| c.is_ascii_digit() || c == '.');
    SHELLS.contains(&name) || SHELLS.contains(&bare)
}

/// The file `program` names: itself when it has a `/`, else the first executable on `path`.
fn resolve(program: &str, path: Option<&str>) -> Result<PathBuf, CommandError> {
    if program.is_empty() {
        return Err(CommandError::NotFound {
            program: String::new(),
            searched: String::new(),
        });
    }
    let executable = |file: &Path| -> Result<(), String> {
        let meta = std::fs::metadata(file).map_err(|e| e.to_string())?;
        if !meta.is_file() {
            return Err("it is not a file".into());
        }
        if meta.permissions().mode() & 0o111 == 0 {
            return Err("it has no execute permission".into());
        }
        Ok(())
    };
    if program.contains('/') {
        let file = PathBuf::from(program);
        if !file.exists() {
            return Err(CommandError::NotFound {
                program: program.to_owned(),
                searched: String::new(),
            });
        }
        return executable(&file).map(|()| file.clone()).map_err(|reason| {
            CommandError::NotExecutable {
                program: program.to_owned(),
                path: file.display().to_string(),
                reason,
            }
        });
    }
    let path = path.unwrap_or("");
    let mut seen = None;
    for dir in path.split(':').filter(|d| !d.is_empty()) {
        let file = Path::new(dir).join(program);
        if file.exists() {
            match executable(&file) {
                Ok(()) => return Ok(file),
                Err(reason) => {
                    seen.get_or_insert((file, reason));
                }
            }
        }
    }
    match seen {
        Some((file, reason)) => Err(CommandError::NotExecutable {
            program: program.to_owned(),
            path: file.display().to_string(),
            reason,
        }),
        None => Err(CommandError::NotFound {
            program: program.to_owned(),
            searched: format!(" on PATH `{}`", crate::model::excerpt::excerpt(path, 200)),
        }),
    }
}
