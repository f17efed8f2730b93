//! Running one command: spawn it in its own process group, stream its pipes into the task's output log, wait for
//! its exit, a cancel or its time limit, and stop whatever is left of its group (SIGTERM, the grace period,
//! SIGKILL), also when the run is dropped half-way.

use std::collections::VecDeque;
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use super::commands::Commands;
use super::error::CommandError;
use super::spec::{CommandOutcome, CommandSpec, Exit};
use crate::contract::context::TaskContext;
use crate::model::output::OutputStream;

/// How much one read of a pipe takes.
const READ_CHUNK: usize = 64 << 10;
/// How often a stop looks whether the group is gone.
const POLL: Duration = Duration::from_millis(10);

impl Commands {
    /// Runs `spec` as the body of a task: checks it ([`check`](Self::check)), starts the program in its own
    /// process group with a cleared environment, streams stdout and stderr into `ctx`'s output log as they come,
    /// and answers when it exits. A cancel of `ctx` or the spec's time limit stops the group: SIGTERM, then
    /// SIGKILL after the grace period. For a `#[cached]` function of your own; [`run_command`] is this, installed.
    ///
    /// [`run_command`]: super::run_command
    pub async fn run(
        &self,
        spec: &CommandSpec,
        ctx: &TaskContext,
    ) -> Result<CommandOutcome, CommandError> {
        let prepared = self.prepare(spec)?;
        let program = spec.program.as_str();
        let started = Instant::now();
        let mut command = tokio::process::Command::new(&prepared.path);
        command
            .args(&spec.args)
            .env_clear()
            .envs(&prepared.env)
            .current_dir(&prepared.cwd)
            .stdin(if spec.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group, so that stopping it stops whatever it started too.
            .process_group(0);
        let mut child = command
            .spawn()
            .map_err(|e| spawn_error(program, &prepared.path, &e))?;
        // From here on, whatever ends this future (an exit, a cancel, a time limit, being dropped) stops the group.
        let mut group = Group::new(child.id(), self.grace);
        if let (Some(text), Some(mut stdin)) = (spec.stdin.clone(), child.stdin.take()) {
            tokio::spawn(async move {
                // A program that exits without reading its stdin closes the pipe: not an error of the run.
                let _ = stdin.write_all(text.as_bytes()).await;
            });
        }
        let tail = Arc::new(Tail::new(self.tail_bytes));
        let readers = [
            tokio::spawn(stream(
                child.stdout.take(),
                OutputStream::Stdout,
                ctx.clone(),
                tail.clone(),
            )),
            tokio::spawn(stream(
                child.stderr.take(),
                OutputStream::Stderr,
                ctx.clone(),
                tail.clone(),
            )),
        ];
        let limit = spec.timeout_seconds.map(Duration::from_secs_f64);
        let deadline = async {
            match limit {
                Some(limit) => tokio::time::sleep(limit).await,
                None => std::future::pending().await,
            }
        };
        enum Stop {
            Cancelled,
            TimedOut(Duration),
        }
        let stopped = tokio::select! {
            status = child.wait() => Ok(status),
            () = ctx.cancelled() => Err(Stop::Cancelled),
            () = deadline => Err(Stop::TimedOut(limit.unwrap_or_default())),
        };
        // Whatever the command left running in its group is stopped too (at once when nothing is left).
        group.stop(&mut child).await;
        let output_bytes = drain(readers, self.grace).await;
        let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let status = match stopped {
            Ok(status) => status.map_err(|e| CommandError::Io {
                program: program.to_owned(),
                reason: format!("waiting for it failed: {e}"),
            })?,
            Err(Stop::Cancelled) => {
                return Err(CommandError::Cancelled {
                    program: program.to_owned(),
                });
            }
            Err(Stop::TimedOut(limit)) => {
                return Err(CommandError::TimedOut {
                    program: program.to_owned(),
                    seconds: limit.as_secs_f64(),
                    tail: tail.text(),
                });
            }
        };
        let exit = Exit {
            code: status.code(),
            signal: status.signal(),
        };
        if !exit.success() {
            return Err(CommandError::Failed {
                program: program.to_owned(),
                exit,
                duration_ms,
                tail: tail.text(),
            });
        }
        Ok(CommandOutcome {
            program: program.to_owned(),
            exit,
            duration_ms,
            tail: tail.text(),
            output_bytes,
        })
    }
}

fn spawn_error(program: &str, path: &std::path::Path, error: &std::io::Error) -> CommandError {
    use std::io::ErrorKind;
    match error.kind() {
        ErrorKind::NotFound => CommandError::NotFound {
            program: program.to_owned(),
            searched: format!(" at {}", path.display()),
        },
        ErrorKind::PermissionDenied => CommandError::NotExecutable {
            program: program.to_owned(),
            path: path.display().to_string(),
            reason: error.to_string(),
        },
        _ if error.raw_os_error() == Some(nix::libc::ENOEXEC) => CommandError::NotExecutable {
            program: program.to_owned(),
            path: path.display().to_string(),
            reason: error.to_string(),
        },
        _ => CommandError::Io {
            program: program.to_owned(),
            reason: error.to_string(),
        },
    }
}

/// Waits for both readers to reach the end of their pipes (every writer gone), at most `grace` (a process that
/// left the group may hold a pipe open); answers the bytes read.
async fn drain(readers: [tokio::task::JoinHandle<u64>; 2], grace: Duration) -> u64 {
    let mut total = 0;
    for reader in readers {
        let abort = reader.abort_handle();
        match tokio::time::timeout(grace.max(Duration::from_secs(1)), reader).await {
            Ok(Ok(bytes)) => total += bytes,
            Ok(Err(_)) => {}
            Err(_) => abort.abort(),
        }
    }
    total
}

/// Reads a pipe to its end, writing each chunk to the output log as it comes (never splitting a character) and
/// keeping the tail. Answers how many bytes it read.
async fn stream(
    pipe: Option<impl AsyncRead + Unpin>,
    name: OutputStream,
    ctx: TaskContext,
    tail: Arc<Tail>,
) -> u64 {
    let Some(mut pipe) = pipe else {
        return 0;
    };
    let mut buf = vec![0u8; READ_CHUNK];
    // Bytes of a character cut by the end of the last read, kept at the start of `buf`.
    let mut carry = 0usize;
    let mut total = 0u64;
    loop {
        let n = match pipe.read(&mut buf[carry..]).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        total += n as u64;
        let filled = carry + n;
        let cut = complete_prefix(&buf[..filled]);
        let text = String::from_utf8_lossy(&buf[..cut]);
        ctx.output(name.clone(), &text);
        tail.push(text.as_bytes());
        buf.copy_within(cut..filled, 0);
        carry = filled - cut;
    }
    if carry > 0 {
        let text = String::from_utf8_lossy(&buf[..carry]);
        ctx.output(name, &text);
        tail.push(text.as_bytes());
    }
    total
}

/// The length of `bytes` without a character cut at its end (which the next read completes).
fn complete_prefix(bytes: &[u8]) -> usize {
    let len = bytes.len();
    for back in 1..=len.min(3) {
        let b = bytes[len - back];
        if b & 0xC0 == 0x80 {
            continue; // a continuation byte: look further back for its lead
        }
        let need = match b {
            0xC0..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF7 => 4,
            _ => 1,
        };
        return if need > back { len - back } else { len };
    }
    len
}

/// The last bytes a command wrote, for its outcome and its error.
struct Tail {
    cap: usize,
    bytes: Mutex<VecDeque<u8>>,
}

impl Tail {
    fn new(cap: usize) -> Self {
        Self {
            cap,
            bytes: Mutex::new(VecDeque::new()),
        }
    }

    fn push(&self, text: &[u8]) {
        if self.cap == 0 {
            return;
        }
        let mut bytes = self.bytes.lock().unwrap_or_else(PoisonError::into_inner);
        if text.len() >= self.cap {
            bytes.clear();
            bytes.extend(&text[text.len() - self.cap..]);
        } else {
            bytes.extend(text);
            let over = bytes.len().saturating_sub(self.cap);
            bytes.drain(..over);
        }
    }

    fn text(&self) -> String {
        let bytes = self.bytes.lock().unwrap_or_else(PoisonError::into_inner);
        let bytes: Vec<u8> = bytes.iter().copied().collect();
        // A character cut at the start counts as gone.
        let skip = bytes
            .iter()
            .take(3)
            .take_while(|b| (**b & 0xC0) == 0x80)
            .count();
        String::from_utf8_lossy(&bytes[skip..]).into_owned()
    }
}

/// A command's process group, stopped (SIGTERM, grace, SIGKILL) before it is forgotten.
struct Group {
    pgid: Option<Pid>,
    grace: Duration,
    stopped: bool,
}

impl Group {
    fn new(pid: Option<u32>, grace: Duration) -> Self {
        Self {
            pgid: pid.and_then(|p| i32::try_from(p).ok()).map(Pid::from_raw),
            grace,
            stopped: false,
        }
    }

    fn signal(pgid: Pid, signal: Option<Signal>) -> bool {
        killpg(pgid, signal).is_ok()
    }

    /// Stops every process left in the group: nothing when it is empty; else SIGTERM, up to the grace period for
    /// them to exit, then SIGKILL. Reaps the direct child.
    async fn stop(&mut self, child: &mut tokio::process::Child) {
        let Some(pgid) = self.pgid else {
            self.stopped = true;
            return;
        };
        let _ = child.try_wait();
        if Self::signal(pgid, Some(Signal::SIGTERM)) {
            let deadline = tokio::time::Instant::now() + self.grace;
            loop {
                let _ = child.try_wait();
                if !Self::signal(pgid, None) || tokio::time::Instant::now() >= deadline {
                    break;
                }
                tokio::time::sleep(POLL).await;
            }
            Self::signal(pgid, Some(Signal::SIGKILL));
        }
        let _ = child.wait().await;
        self.stopped = true;
    }
}

impl Drop for Group {
    /// The run was dropped before it stopped the group (its task was aborted after its cancel grace, or the
    /// runtime shut down): a thread of its own finishes the stop.
    fn drop(&mut self) {
        let (Some(pgid), false) = (self.pgid, self.stopped) else {
            return;
        };
        let grace = self.grace;
        let stop = move || {
            if Self::signal(pgid, Some(Signal::SIGTERM)) {
                let deadline = Instant::now() + grace;
                while Self::signal(pgid, None) && Instant::now() < deadline {
                    std::thread::sleep(POLL);
                }
                Self::signal(pgid, Some(Signal::SIGKILL));
            }
        };
        if std::thread::Builder::new()
            .name("refcache-command-stop".into())
            .spawn(stop)
            .is_err()
        {
            Self::signal(pgid, Some(Signal::SIGKILL));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cut_character_waits_for_the_next_read() {
        let text = "aé€😀".as_bytes();
        assert_eq!(complete_prefix(text), text.len());
        assert_eq!(complete_prefix(&text[..2]), 1, "é cut after its lead byte");
        assert_eq!(
            complete_prefix(&text[..5]),
            3,
            "€ cut after two of three bytes"
        );
        assert_eq!(
            complete_prefix(&text[..8]),
            6,
            "😀 cut after two of four bytes"
        );
        assert_eq!(complete_prefix(b""), 0);
    }

    #[test]
    fn the_tail_keeps_the_newest_bytes() {
        let tail = Tail::new(4);
        tail.push(b"abc");
        tail.push(b"def");
        assert_eq!(tail.text(), "cdef");
        tail.push(b"0123456789");
        assert_eq!(tail.text(), "6789");
    }
}
