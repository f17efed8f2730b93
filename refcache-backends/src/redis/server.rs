//! A managed `redis-server` for tests, fault tests and demos.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// How long a starting server may take to answer `PING`.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a `redis-server` could not be started.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RedisServerError {
    /// The binary is not installed.
    #[error(
        "cannot run `{binary}`: {source}; install Debian's `redis-server` package (`apt-get install redis-server`; \
         .ci/run does it), or point REFCACHE_REDIS_SERVER at the binary"
    )]
    NotInstalled {
        /// The binary tried.
        binary: String,
        /// The error from starting it.
        source: std::io::Error,
    },
    /// It started but did not answer `PING` in time, or exited.
    #[error("redis-server on port {port} did not come up within {timeout:?}: {reason}")]
    NotReady {
        /// Its port.
        port: u16,
        /// How long it was given.
        timeout: Duration,
        /// What was seen.
        reason: String,
    },
    /// Something else failed (a free port, its directory).
    #[error("cannot start redis-server: {0}")]
    Io(#[from] std::io::Error),
}

/// How to run the server.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct RedisServerOptions {
    /// Turn on AOF persistence (`appendonly yes`, `appendfsync always`), so that a restart keeps the data.
    pub aof: bool,
    /// Also listen for TLS on a second port ([`RedisServer::tls_url`]), with these certificates.
    pub tls: Option<RedisServerTls>,
}

/// The certificates of a test server's TLS port, as PEM (the server needs a `redis-server` built with TLS, as
/// Debian's is).
#[derive(Clone, Default)]
#[non_exhaustive]
pub struct RedisServerTls {
    /// The server's certificate (with a SAN for `127.0.0.1` when clients connect by that address).
    pub cert: String,
    /// Its key.
    pub key: String,
    /// The CA that clients' certificates are checked against (and that redis-server requires to be set).
    pub ca: String,
    /// Require clients to present a certificate signed by `ca` (`tls-auth-clients yes`).
    pub auth_clients: bool,
}

impl RedisServerTls {
    /// A TLS port with this certificate, key and CA, not asking clients for certificates.
    pub fn new(cert: impl Into<String>, key: impl Into<String>, ca: impl Into<String>) -> Self {
        Self {
            cert: cert.into(),
            key: key.into(),
            ca: ca.into(),
            auth_clients: false,
        }
    }

    /// Whether clients must present a certificate signed by the CA.
    pub fn auth_clients(mut self, on: bool) -> Self {
        self.auth_clients = on;
        self
    }
}

impl std::fmt::Debug for RedisServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisServerTls")
            .field("auth_clients", &self.auth_clients)
            .finish_non_exhaustive()
    }
}

impl RedisServerOptions {
    /// With AOF persistence on.
    pub fn aof(mut self, on: bool) -> Self {
        self.aof = on;
        self
    }

    /// With a TLS port as well.
    pub fn tls(mut self, tls: RedisServerTls) -> Self {
        self.tls = Some(tls);
        self
    }
}

/// A `redis-server` child process on a free loopback port, with its own data directory. Killed, and its directory
/// removed, on drop, and also when this process ends without dropping it (a `static` server is never dropped; a
/// test binary may be killed): a watchdog process then kills it.
///
/// The binary is `REFCACHE_REDIS_SERVER`, else `redis-server` on the `PATH`.
#[derive(Debug)]
pub struct RedisServer {
    child: Option<Child>,
    /// The running child's watchdog (one per child: a restart makes a new process).
    watchdog: Option<Watchdog>,
    port: u16,
    tls_port: u16,
    dir: PathBuf,
    options: RedisServerOptions,
}

impl RedisServer {
    /// Starts a server without persistence.
    pub fn start() -> Result<Self, RedisServerError> {
        Self::start_with(RedisServerOptions::default())
    }

    /// Starts a server with `options`.
    pub fn start_with(options: RedisServerOptions) -> Result<Self, RedisServerError> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "refcache-redis-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir)?;
        let mut server = Self {
            child: None,
            watchdog: None,
            port: 0,
            tls_port: 0,
            dir,
            options,
        };
        // A port found free may be taken before the server binds it: try a few.
        let mut last = None;
        for _ in 0..5 {
            server.port = free_port()?;
            if server.options.tls.is_some() {
                server.tls_port = free_port()?;
            }
            match server.spawn() {
                Ok(()) => return Ok(server),
                Err(e @ RedisServerError::NotInstalled { .. }) => return Err(e),
                Err(e) => last = Some(e),
            }
        }
        Err(last.expect("at least one attempt"))
    }

    /// `redis://127.0.0.1:<port>/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `rediss://127.0.0.1:<tls port>/0`, when it was started with [`RedisServerOptions::tls`].
    pub fn tls_url(&self) -> Option<String> {
        self.options
            .tls
            .as_ref()
            .map(|_| format!("rediss://127.0.0.1:{}/0", self.tls_port))
    }

    /// The server's process id, while it runs (for measuring its CPU time, or checking that it is gone).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process is running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Kills it with SIGKILL (a crash: nothing is flushed beyond what AOF already wrote), and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Killed before the watchdog is disarmed, and reaped after: the pid stays this server's (a zombie) until
            // the watchdog can no longer kill it, and an exit of this process in between still stops the server.
            let _ = child.kill();
            if let Some(watchdog) = self.watchdog.take() {
                watchdog.disarm();
            }
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and directory (with AOF on, with the same data).
    pub fn restart(&mut self) -> Result<(), RedisServerError> {
        self.kill();
        self.spawn()
    }

    fn spawn(&mut self) -> Result<(), RedisServerError> {
        let binary =
            std::env::var("REFCACHE_REDIS_SERVER").unwrap_or_else(|_| "redis-server".to_owned());
        let mut command = Command::new(&binary);
        command
            .arg("--port")
            .arg(self.port.to_string())
            .args(["--bind", "127.0.0.1", "--save", "", "--daemonize", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if self.options.aof {
            command.args(["--appendonly", "yes", "--appendfsync", "always"]);
        } else {
            command.args(["--appendonly", "no"]);
        }
        if let Some(tls) = &self.options.tls {
            // The plain port stays open beside the TLS one, so that readiness is the same PING as without TLS.
            let file = |name: &str, pem: &str| -> std::io::Result<PathBuf> {
                let path = self.dir.join(name);
                std::fs::write(&path, pem)?;
                Ok(path)
            };
            command
                .arg("--tls-port")
                .arg(self.tls_port.to_string())
                .arg("--tls-cert-file")
                .arg(file("server.pem", &tls.cert)?)
                .arg("--tls-key-file")
                .arg(file("server.key", &tls.key)?)
                .arg("--tls-ca-cert-file")
                .arg(file("ca.pem", &tls.ca)?)
                .args([
                    "--tls-auth-clients",
                    if tls.auth_clients { "yes" } else { "no" },
                ]);
        }
        let child = command
            .spawn()
            .map_err(|source| RedisServerError::NotInstalled { binary, source })?;
        match Watchdog::arm(child.id(), &self.dir) {
            Ok(watchdog) => self.watchdog = Some(watchdog),
            Err(e) => {
                let mut child = child;
                let _ = child.kill();
                let _ = child.wait();
                return Err(RedisServerError::Io(e));
            }
        }
        self.child = Some(child);
        let start = Instant::now();
        loop {
            if ping(self.port) {
                return Ok(());
            }
            if !self.is_running() {
                self.kill();
                return Err(RedisServerError::NotReady {
                    port: self.port,
                    timeout: START_TIMEOUT,
                    reason: "it exited (is the port taken?)".into(),
                });
            }
            if start.elapsed() > START_TIMEOUT {
                self.kill();
                return Err(RedisServerError::NotReady {
                    port: self.port,
                    timeout: START_TIMEOUT,
                    reason: "no answer to PING".into(),
                });
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The command a `MONITOR` line of a test server shows, when a client sent it (not a script) and it names a key
/// under `key_prefix`; `None` otherwise. The backend's scripts are named by their SHA, as `EVALSHA(submit)`,
/// `EVALSHA(transition)`, `EVALSHA(take)`, `EVALSHA(get)`, ... (the names of `scripts.rs`; `EVALSHA(other)` for a
/// script that is not the backend's); any other command by its own name. For counting round trips in tests and
/// benches.
pub fn monitored_command(line: &str, key_prefix: &str) -> Option<String> {
    // `1700000000.123456 [0 127.0.0.1:51234] "EVALSHA" "…" …`, or `[0 lua] "HGET" …` inside a script.
    let (source, rest) = line.split_once("] ")?;
    if source.ends_with(" lua") {
        return None;
    }
    command_name(&monitor_args(rest), key_prefix)
}

/// [`monitored_command`] of a command given by its arguments (as `SLOWLOG GET` shows them: a long argument cut
/// short does not matter, the script's SHA is the second).
pub fn command_name<S: AsRef<str>>(args: &[S], key_prefix: &str) -> Option<String> {
    let keys = format!("{key_prefix}:");
    if !args
        .iter()
        .any(|a| a.as_ref() == key_prefix || a.as_ref().starts_with(&keys))
    {
        return None;
    }
    let command = args.first()?.as_ref().to_ascii_uppercase();
    if command != "EVALSHA" {
        return Some(command);
    }
    let script = args
        .get(1)
        .and_then(|sha| script_name(&sha.as_ref().to_ascii_lowercase()))
        .unwrap_or("other");
    Some(format!("EVALSHA({script})"))
}

/// The name of the backend's script with this SHA1 (lower-case hex).
fn script_name(sha: &str) -> Option<&'static str> {
    static NAMES: std::sync::OnceLock<Vec<(String, &'static str)>> = std::sync::OnceLock::new();
    NAMES
        .get_or_init(|| {
            let scripts = super::scripts::Scripts::new();
            scripts
                .named()
                .iter()
                .map(|(name, script)| (script.hash().to_owned(), *name))
                .collect()
        })
        .iter()
        .find_map(|(hash, name)| (hash == sha).then_some(*name))
}

/// The double-quoted arguments of a `MONITOR` line (backslash escapes kept as they are).
fn monitor_args(text: &str) -> Vec<String> {
    let mut args = Vec::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '"' {
            continue;
        }
        let mut arg = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => {
                    arg.push(c);
                    if let Some(next) = chars.next() {
                        arg.push(next);
                    }
                }
                '"' => break,
                c => arg.push(c),
            }
        }
        args.push(arg);
    }
    args
}

/// A `sh` that reads its stdin, whose write end only this process holds: at end of input (this process has ended,
/// however it ended, and the kernel closed the pipe) it kills the server and removes the server's directory; a line
/// instead ([`Watchdog::disarm`], on a kill or restart by this process) makes it exit and do nothing.
///
/// Not `PR_SET_PDEATHSIG`: that signal follows the *thread* that spawned the child, and each test runs on a thread
/// of its own that ends with the test, so a server shared in a `static` would be killed under the other tests. This
/// is the Postgres test server's watchdog (`postgres/server.rs`), with a kill by pid instead of `pg_ctl stop`: the
/// pid cannot name another process while this one lives, since this process reaps the server only after disarming.
#[derive(Debug)]
struct Watchdog {
    process: Child,
    stdin: std::process::ChildStdin,
}

impl Watchdog {
    fn arm(pid: u32, dir: &std::path::Path) -> std::io::Result<Self> {
        // `kill 0` would be the whole process group.
        if pid == 0 {
            return Err(std::io::Error::other("no process to watch (pid 0)"));
        }
        // The directory is quoted for `sh`; ours never holds a quote, but a TMPDIR could.
        let dir = dir.display().to_string().replace('\'', r"'\''");
        let script = format!("read -r line || {{ kill -KILL {pid}; rm -rf '{dir}'; }}");
        // In a process group of its own, so that a kill of this process's group (`kill -- -PGID`) leaves it to
        // remove the server's directory.
        let mut process = Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()?;
        let Some(stdin) = process.stdin.take() else {
            let _ = process.kill();
            let _ = process.wait();
            return Err(std::io::Error::other("the watchdog has no stdin"));
        };
        Ok(Self { process, stdin })
    }

    /// Tells the watchdog to exit without touching the server, and reaps it.
    fn disarm(self) {
        let Self {
            mut process,
            mut stdin,
        } = self;
        let _ = stdin.write_all(b"disarm\n");
        drop(stdin);
        let _ = process.wait();
    }
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

/// Whether a server on `port` answers `PING` (plain RESP, no client library).
fn ping(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect((Ipv4Addr::LOCALHOST, port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut reply = [0u8; 7];
    stream.read_exact(&mut reply).is_ok() && &reply == b"+PONG\r\n"
}
