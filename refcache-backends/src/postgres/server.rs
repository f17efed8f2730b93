//! A managed PostgreSQL server for tests, fault tests, benchmarks and demos: `initdb` in a temporary directory,
//! `pg_ctl` on a free loopback port, never the machine's own server.
//!
//! PostgreSQL refuses to run as root, and CI runs as root: when this process is root the server's commands run as
//! the `postgres` system user (`runuser -u postgres --`), which owns the temporary directory.

use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// Why a PostgreSQL server could not be started.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PostgresServerError {
    /// The server binaries are not installed.
    #[error(
        "cannot find PostgreSQL's server binaries (initdb, pg_ctl): looked in REFCACHE_PG_BINDIR, `pg_config \
         --bindir` and /usr/lib/postgresql/*/bin; install Debian's `postgresql` package (`apt-get install \
         postgresql`; .ci/run does it), or point REFCACHE_PG_BINDIR at the directory"
    )]
    NotInstalled,
    /// A command failed.
    #[error("`{command}` failed: {output}")]
    Command {
        /// The command.
        command: String,
        /// What it printed (its log's tail for a start).
        output: String,
    },
    /// Something else failed (a free port, the directory, a certificate).
    #[error("cannot start PostgreSQL: {0}")]
    Io(#[from] std::io::Error),
}

/// How to run the server.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct PostgresServerOptions {
    /// Turn on `fsync` (off by default: tests need no durability across a power cut, and a stop or `kill -9` of
    /// the server loses nothing committed either way, since commits stay synchronous). Benchmarks turn it on.
    pub fsync: bool,
    /// Require a password (SCRAM) for TCP logins of user `postgres`.
    pub password: Option<String>,
    /// Serve TLS with a self-signed certificate made now (openssl), for `CN=localhost`, `127.0.0.1`.
    pub tls: bool,
    /// Load `pg_stat_statements` (for benchmarks that read the server's time per statement).
    pub stat_statements: bool,
}

impl PostgresServerOptions {
    /// With `fsync` on or off.
    pub fn fsync(mut self, on: bool) -> Self {
        self.fsync = on;
        self
    }

    /// With a password for user `postgres`.
    pub fn password(mut self, password: impl Into<String>) -> Self {
        self.password = Some(password.into());
        self
    }

    /// With TLS.
    pub fn tls(mut self, on: bool) -> Self {
        self.tls = on;
        self
    }

    /// With `pg_stat_statements` loaded.
    pub fn stat_statements(mut self, on: bool) -> Self {
        self.stat_statements = on;
        self
    }
}

/// A PostgreSQL server on a free loopback port, with its own data directory. Stopped (immediately), and its
/// directory removed, on drop.
#[derive(Debug)]
pub struct PostgresServer {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    options: PostgresServerOptions,
    running: bool,
    /// The write end of the watchdog's stdin: when this process ends however it ends (a `static` server is never
    /// dropped; a test binary may be killed), the pipe closes and the watchdog stops the server and removes its
    /// directory.
    _watchdog: Option<std::process::ChildStdin>,
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

/// The server binaries' directory.
fn bindir() -> Option<PathBuf> {
    let has = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    if let Ok(dir) = std::env::var("REFCACHE_PG_BINDIR") {
        return Some(PathBuf::from(dir)).filter(|d| has(d));
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if has(&dir) {
            return Some(dir);
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let version = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            Some((version, e.path().join("bin")))
        })
        .filter(|(_, dir)| has(dir))
        .collect();
    versions.sort();
    versions.pop().map(|(_, dir)| dir)
}

impl PostgresServer {
    /// Starts a server with the default options.
    pub fn start() -> Result<Self, PostgresServerError> {
        Self::start_with(PostgresServerOptions::default())
    }

    /// Starts a server with `options`.
    pub fn start_with(options: PostgresServerOptions) -> Result<Self, PostgresServerError> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let bin = bindir().ok_or(PostgresServerError::NotInstalled)?;
        let dir = std::env::temp_dir().join(format!(
            "refcache-pg-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let mut server = Self {
            bin,
            dir,
            port: 0,
            options,
            running: false,
            _watchdog: None,
        };
        server.init()?;
        server._watchdog = server.watchdog();
        // A port found free may be taken before the server binds it: try a few.
        let mut last = None;
        for _ in 0..5 {
            server.port = free_port()?;
            match server.spawn() {
                Ok(()) => return Ok(server),
                Err(e) => last = Some(e),
            }
        }
        Err(last.expect("at least one attempt"))
    }

    /// `postgres://postgres@127.0.0.1:<port>/postgres` (with the password, when there is one).
    pub fn url(&self) -> String {
        match &self.options.password {
            Some(password) => format!(
                "postgres://postgres:{password}@127.0.0.1:{}/postgres",
                self.port
            ),
            None => format!("postgres://postgres@127.0.0.1:{}/postgres", self.port),
        }
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The self-signed certificate it serves (with `tls`), which is also its own CA for `sslmode=verify-full`.
    pub fn certificate(&self) -> PathBuf {
        self.dir.join("server.crt")
    }

    /// The server's process id (the postmaster), for measuring its CPU time.
    pub fn pid(&self) -> Option<u32> {
        let text = std::fs::read_to_string(self.data().join("postmaster.pid")).ok()?;
        text.lines().next()?.trim().parse().ok()
    }

    /// Whether it is running.
    pub fn is_running(&self) -> bool {
        self.running
    }

    /// Stops it at once (`pg_ctl stop -m immediate`: no checkpoint, as after a crash; committed data survives
    /// through the WAL).
    pub fn kill(&mut self) {
        if self.running {
            let _ = self.pg_ctl(&["stop", "-m", "immediate", "-w", "-t", "60"]);
            self.running = false;
        }
    }

    /// Starts it again on the same port and directory, with the same data.
    pub fn restart(&mut self) -> Result<(), PostgresServerError> {
        self.kill();
        self.spawn()
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// A command run as the server's user.
    fn as_server_user(&self, program: &Path) -> Command {
        if is_root() {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(program);
            command
        } else {
            Command::new(program)
        }
    }

    fn run(&self, mut command: Command, name: &str) -> Result<(), PostgresServerError> {
        let out = command.stdin(Stdio::null()).output()?;
        if out.status.success() {
            return Ok(());
        }
        Err(PostgresServerError::Command {
            command: name.to_owned(),
            output: format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        })
    }

    fn init(&self) -> Result<(), PostgresServerError> {
        if is_root() {
            self.run(
                {
                    let mut c = Command::new("chown");
                    c.arg("postgres:postgres").arg(&self.dir);
                    c
                },
                "chown",
            )?;
        }
        let mut initdb = self.as_server_user(&self.bin.join("initdb"));
        initdb.arg("-D").arg(self.data()).args([
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--no-sync",
            "--locale=C",
        ]);
        if let Some(password) = &self.options.password {
            let pwfile = self.dir.join("pwfile");
            std::fs::write(&pwfile, password)?;
            self.own(&pwfile)?;
            initdb
                .arg(format!("--pwfile={}", pwfile.display()))
                .args(["--auth-local=trust", "--auth-host=scram-sha-256"]);
        } else {
            initdb.args(["--auth=trust"]);
        }
        self.run(initdb, "initdb")?;
        if self.options.tls {
            let (crt, key) = (self.dir.join("server.crt"), self.dir.join("server.key"));
            let mut openssl = Command::new("openssl");
            openssl
                .args([
                    "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                ])
                .args(["-subj", "/CN=localhost"])
                .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
                .args(["-addext", "basicConstraints=critical,CA:FALSE"])
                .arg("-keyout")
                .arg(&key)
                .arg("-out")
                .arg(&crt);
            self.run(openssl, "openssl req")?;
            self.own(&crt)?;
            self.own(&key)?;
            let mut perms = std::fs::metadata(&key)?.permissions();
            std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o600);
            std::fs::set_permissions(&key, perms)?;
        }
        Ok(())
    }

    /// A shell that waits for its stdin to close, then stops the server and removes its directory.
    fn watchdog(&self) -> Option<std::process::ChildStdin> {
        let runuser = if is_root() {
            "runuser -u postgres -- "
        } else {
            ""
        };
        let script = format!(
            "cat >/dev/null; {runuser}'{}' -D '{}' stop -m immediate >/dev/null 2>&1; rm -rf '{}'",
            self.bin.join("pg_ctl").display(),
            self.data().display(),
            self.dir.display()
        );
        // In a process group of its own: a kill of this process's group (a test harness or a shell stopping the
        // tests with `kill -- -PGID`) must not take the watchdog with it, since the server (started by `pg_ctl`,
        // detached) would then outlive both.
        Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .ok()
            .and_then(|mut child| child.stdin.take())
    }

    fn own(&self, path: &Path) -> Result<(), PostgresServerError> {
        if is_root() {
            let mut c = Command::new("chown");
            c.arg("postgres:postgres").arg(path);
            self.run(c, "chown")?;
        }
        Ok(())
    }

    fn pg_ctl(&self, args: &[&str]) -> Result<(), PostgresServerError> {
        let mut command = self.as_server_user(&self.bin.join("pg_ctl"));
        command.arg("-D").arg(self.data()).args(args);
        self.run(command, &format!("pg_ctl {}", args.join(" ")))
    }

    fn spawn(&mut self) -> Result<(), PostgresServerError> {
        let mut settings = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync={} -c max_connections=200",
            self.port,
            self.dir.display(),
            if self.options.fsync { "on" } else { "off" },
        );
        if !self.options.fsync {
            // Safe against a stop or kill of the server (the OS has every write); not against a power cut. Commits
            // stay synchronous: with `synchronous_commit=off` an immediate stop loses the last commits.
            settings.push_str(" -c full_page_writes=off");
        }
        if self.options.tls {
            settings.push_str(&format!(
                " -c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
                self.dir.join("server.crt").display(),
                self.dir.join("server.key").display()
            ));
        }
        if self.options.stat_statements {
            settings.push_str(" -c shared_preload_libraries=pg_stat_statements");
        }
        let log = self.dir.join("server.log");
        let started = self.pg_ctl(&[
            "start",
            "-w",
            "-t",
            "60",
            "-o",
            &settings,
            "-l",
            &log.display().to_string(),
        ]);
        match started {
            Ok(()) => {
                self.running = true;
                Ok(())
            }
            Err(PostgresServerError::Command { command, output }) => {
                let tail = std::fs::read_to_string(&log)
                    .unwrap_or_default()
                    .lines()
                    .rev()
                    .take(10)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect::<Vec<_>>()
                    .join("\n");
                let _ = self.pg_ctl(&["stop", "-m", "immediate"]);
                Err(PostgresServerError::Command {
                    command,
                    output: format!("{output}\nlog:\n{tail}"),
                })
            }
            Err(e) => Err(e),
        }
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}
