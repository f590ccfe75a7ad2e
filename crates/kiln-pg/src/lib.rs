//! A private PostgreSQL cluster in a directory of Kiln's, run with the system's
//! `initdb` and `pg_ctl`: the embedded default of `kiln up`, the scripts and the tests.
//!
//! The cluster listens on 127.0.0.1 only (no Unix socket) and trusts nobody: its superuser
//! has a generated password (SCRAM), kept 0600 in Kiln's directory and carried by the URLs.
//! It keeps Postgres's default durability (`fsync` and `synchronous_commit` on). When run as
//! root, the server runs as the `postgres` user (Postgres refuses root), with its data under
//! that user's home (see `layout`): Kiln changes no permission above a data directory.

mod auth;
mod layout;

use layout::{Layout, PgUser};
use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Errors starting or stopping a local cluster.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// A Postgres program was not found on PATH.
    #[error(
        "`{0}` is not installed: install the PostgreSQL server binaries with `sudo apt-get install postgresql` (or run scripts/setup in a Kiln checkout)"
    )]
    MissingBinary(&'static str),
    /// A command failed.
    #[error("`{command}` failed ({status}): {output}")]
    Command {
        /// The command line.
        command: String,
        /// Its exit status.
        status: String,
        /// What it printed.
        output: String,
    },
    /// A file operation failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was attempted.
        action: &'static str,
        /// On which path.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Running as root needs the `postgres` system user to run the server as.
    #[error("running the embedded Postgres as root needs a `postgres` system user: install the PostgreSQL server binaries (apt-get install postgresql), or run Kiln as a normal user")]
    NoPostgresUser,
    /// The server did not accept connections in time.
    #[error("postgres in {0} did not become ready within 60 s")]
    NotReady(PathBuf),
}

pub(crate) type Result<T> = std::result::Result<T, PgError>;

/// A running local cluster.
#[derive(Debug, Clone)]
pub struct LocalCluster {
    dir: PathBuf,
    layout: Layout,
    port: u16,
    password: String,
    started: bool,
}

/// How long a start waits for a killed previous server of the same data directory to go.
const GONE_WITHIN: Duration = Duration::from_secs(30);

/// The end of the server log (where a refused start says why), without reading all of it.
fn log_tail(log: &Path) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut f) = fs::File::open(log) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let mut tail = Vec::new();
    if f.seek(SeekFrom::Start(len.saturating_sub(2048))).is_ok() {
        let _ = f.read_to_end(&mut tail);
    }
    String::from_utf8_lossy(&tail).into_owned()
}

/// Database created in every new cluster.
pub const DEFAULT_DATABASE: &str = "kiln";

impl LocalCluster {
    /// Starts the cluster under `dir` (created and initialised if needed), or attaches to it
    /// if it is already running. Safe to call from several processes at once.
    pub fn start(dir: &Path) -> Result<Self> {
        fs::create_dir_all(dir).map_err(io("create", dir))?;
        let dir = dir.canonicalize().map_err(io("resolve", dir))?;
        let lock_path = dir.join("kiln-start.lock");
        let lock = fs::File::create(&lock_path).map_err(io("create", &lock_path))?;
        lock.lock().map_err(io("lock", &lock_path))?;
        let result = Self::start_locked(&dir);
        let _ = lock.unlock();
        result
    }

    fn start_locked(dir: &Path) -> Result<Self> {
        let layout = Layout::resolve(dir)?;
        let port_file = dir.join("port");
        let password_file = dir.join("password");
        let mut password = auth::read(&password_file)?;
        if !layout.data_dir.join("PG_VERSION").exists() {
            password = Some(init(dir, &layout)?);
            auth::write(&password_file, password.as_deref().unwrap_or_default())?;
        }
        let previous = fs::read_to_string(&port_file)
            .ok()
            .and_then(|p| p.trim().parse::<u16>().ok());
        let mut cluster = Self {
            dir: dir.to_owned(),
            layout,
            port: previous.unwrap_or(0),
            password: password.clone().unwrap_or_default(),
            started: false,
        };
        if previous.is_none() || !cluster.is_running() {
            // A restarted cluster keeps its port when it can, so existing URLs (and pools)
            // reconnect.
            cluster.port = match previous.filter(|p| TcpListener::bind(("127.0.0.1", *p)).is_ok()) {
                Some(port) => port,
                None => free_port().map_err(io("find a free port for", dir))?,
            };
            fs::write(&port_file, cluster.port.to_string()).map_err(io("write", &port_file))?;
            cluster.run_server()?;
            cluster.started = true;
        }
        if password.is_none() || !auth::hba_is_scram(&cluster.layout.data_dir) {
            cluster.require_password()?;
        }
        cluster.ensure_database(DEFAULT_DATABASE)?;
        Ok(cluster)
    }

    /// Starts the server of this data directory and waits until it takes connections.
    fn run_server(&self) -> Result<()> {
        let (dir, port, log) = (&self.dir, self.port, &self.layout.log);
        tracing::info!(dir = %dir.display(), port, "starting local postgres");
        let started = Instant::now();
        let options = format!(
            "-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' -c max_connections=300 -c shared_buffers=256MB"
        );
        let data = self.layout.data_dir.to_string_lossy();
        let args = [
            "start",
            "-w",
            "-t",
            "60",
            "-D",
            &data,
            "-l",
            &log.to_string_lossy(),
            "-o",
            &options,
        ];
        // A server of this data directory that was killed a moment ago can still hold its lock
        // file or shared memory (its backends exit after it; an unreaped process still counts):
        // wait for it to go, up to `GONE_WITHIN`, instead of failing the start.
        let deadline = Instant::now() + GONE_WITHIN;
        while let Err(e) = run_pg("pg_ctl", &args) {
            let tail = log_tail(log);
            let previous_alive = tail.contains("lock file \"postmaster.pid\" already exists")
                || tail.contains("pre-existing shared memory block");
            if !previous_alive || Instant::now() >= deadline {
                return Err(e);
            }
            tracing::warn!(dir = %dir.display(), "a previous postgres of this data directory is still exiting; starting again shortly");
            std::thread::sleep(Duration::from_millis(500));
        }
        self.wait_ready()?;
        tracing::info!(
            port,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "local postgres ready"
        );
        Ok(())
    }

    /// Moves a cluster made by an earlier Kiln (which trusted local connections) to a
    /// generated password: sets it, replaces `pg_hba.conf`, reloads, then records it.
    fn require_password(&mut self) -> Result<()> {
        tracing::info!(dir = %self.dir.display(), "this cluster trusted local connections: giving its superuser a generated password (SCRAM)");
        if self.password.is_empty() {
            self.password = auth::generate()?;
        }
        let set = format!("ALTER ROLE postgres PASSWORD '{}'", self.password);
        self.psql("postgres", &set)?;
        auth::write_hba(&self.layout.data_dir)?;
        self.psql("postgres", "SELECT pg_reload_conf()")?;
        auth::write(&self.dir.join("password"), &self.password)
    }

    /// The cluster's TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A connection URL for `database` as the superuser (it carries the password).
    pub fn url_for(&self, database: &str) -> String {
        format!(
            "postgres://postgres:{}@127.0.0.1:{}/{database}",
            self.password, self.port
        )
    }

    /// True when this [`LocalCluster::start`] started the server (false: it was running).
    pub fn started(&self) -> bool {
        self.started
    }

    /// The Postgres data directory (under Kiln's directory, or linked from it as root).
    pub fn data_dir(&self) -> &Path {
        &self.layout.data_dir
    }

    /// The connection URL of the default `kiln` database.
    pub fn url(&self) -> String {
        self.url_for(DEFAULT_DATABASE)
    }

    /// True when the server of this data directory is up.
    pub fn is_running(&self) -> bool {
        run_pg(
            "pg_ctl",
            &["status", "-D", &self.layout.data_dir.to_string_lossy()],
        )
        .is_ok()
            && std::net::TcpStream::connect_timeout(
                &([127, 0, 0, 1], self.port).into(),
                Duration::from_millis(500),
            )
            .is_ok()
    }

    /// Stops the server (fast shutdown: sessions are disconnected, data is kept).
    pub fn stop(&self) -> Result<()> {
        self.stop_with("fast")
    }

    /// Stops the server at once, as a crash would (immediate shutdown: no checkpoint; the
    /// next start recovers from the WAL). For fault-injection runs.
    pub fn stop_immediately(&self) -> Result<()> {
        self.stop_with("immediate")
    }

    fn stop_with(&self, mode: &str) -> Result<()> {
        tracing::info!(port = self.port, mode, "stopping local postgres");
        let data = self.layout.data_dir.to_string_lossy();
        run_pg("pg_ctl", &["stop", "-w", "-m", mode, "-D", &data]).map(|_| ())
    }

    /// Starts the server of this cluster again after [`LocalCluster::stop`], on the same port.
    pub fn restart(&self) -> Result<()> {
        self.run_server()
    }

    /// Stops the server if it runs and deletes the cluster: its data, and Kiln's files for it
    /// (port, password, links). Kiln's directory itself stays.
    pub fn remove(&self) -> Result<()> {
        if self.is_running() {
            self.stop()?;
        }
        let gone = match &self.layout.own_root {
            Some(root) => root.clone(),
            None => self.layout.data_dir.clone(),
        };
        fs::remove_dir_all(&gone).map_err(io("remove", &gone))?;
        for name in ["pgdata", "postgres.log", "port", "password"] {
            let path = self.dir.join(name);
            if fs::symlink_metadata(&path).is_ok() {
                fs::remove_file(&path).map_err(io("remove", &path))?;
            }
        }
        Ok(())
    }

    /// Runs one SQL command with `psql` as the superuser.
    fn psql(&self, database: &str, sql: &str) -> Result<String> {
        let port = self.port.to_string();
        let args = [
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-U",
            "postgres",
            "-d",
            database,
            "-Atqc",
            sql,
        ];
        let bin = which("psql")?;
        run(Command::new(bin)
            .args(args)
            .env("PGPASSWORD", &self.password)
            .env("PGCONNECT_TIMEOUT", "5")
            .current_dir("/"))
    }

    fn wait_ready(&self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if self.psql("postgres", "SELECT 1").is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(PgError::NotReady(self.layout.data_dir.clone()))
    }

    fn ensure_database(&self, name: &str) -> Result<()> {
        let exists = self.psql(
            "postgres",
            &format!("SELECT 1 FROM pg_database WHERE datname = '{name}'"),
        )?;
        if exists.trim() != "1" {
            self.psql("postgres", &format!("CREATE DATABASE \"{name}\""))?;
        }
        Ok(())
    }
}

/// Creates the cluster with a generated superuser password; returns the password.
fn init(dir: &Path, layout: &Layout) -> Result<String> {
    let data_dir = &layout.data_dir;
    tracing::info!(dir = %data_dir.display(), "initialising a new postgres cluster");
    let password = auth::generate()?;
    // initdb reads the password from a file it can open: Kiln's directory when it runs as us,
    // else the data root the `postgres` user owns (removed right after either way).
    let pwfile = match &layout.own_root {
        Some(root) if as_root() => root.join(".kiln-initdb-pw"),
        _ => dir.join(".kiln-initdb-pw"),
    };
    auth::write(&pwfile, &password)?;
    if as_root() && layout.own_root.is_some() {
        let user = PgUser::lookup()?;
        std::os::unix::fs::chown(&pwfile, Some(user.uid), Some(user.gid)).map_err(io("chown", &pwfile))?;
    }
    let result = run_pg(
        "initdb",
        &[
            "-D",
            &data_dir.to_string_lossy(),
            "-U",
            "postgres",
            "--auth=scram-sha-256",
            &format!("--pwfile={}", pwfile.display()),
            "-E",
            "UTF8",
            "--locale=C",
        ],
    );
    let _ = fs::remove_file(&pwfile);
    result?;
    auth::write_hba(data_dir)?;
    Ok(password)
}

/// True when the effective uid is root.
pub(crate) fn as_root() -> bool {
    // SAFETY-free check: the effective uid is what Postgres looks at.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

/// Checks, without starting anything, that this host can run an embedded cluster: the
/// PostgreSQL programs are installed, and as root the `postgres` user exists.
pub fn check_host() -> Result<()> {
    for program in ["initdb", "pg_ctl", "psql"] {
        which(program)?;
    }
    if as_root() {
        PgUser::lookup()?;
    }
    Ok(())
}

fn which(program: &'static str) -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([
            "/usr/lib/postgresql/15/bin".into(),
            "/usr/lib/postgresql/16/bin".into(),
        ])
        .map(|d| d.join(program))
        .find(|p| p.is_file())
        .ok_or(PgError::MissingBinary(program))
}

/// Runs a Postgres program, as the `postgres` user when we are root.
fn run_pg(program: &'static str, args: &[&str]) -> Result<String> {
    let bin = which(program)?;
    let mut cmd = if as_root() && program != "psql" {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(&bin);
        c
    } else {
        Command::new(&bin)
    };
    cmd.args(args).current_dir("/");
    run(&mut cmd)
}

pub(crate) fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().map_err(|e| PgError::Io {
        action: "run",
        path: PathBuf::from(cmd.get_program()),
        source: e,
    })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(PgError::Command {
            command: format!("{cmd:?}"),
            status: out.status.to_string(),
            output: format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        })
    }
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind(("127.0.0.1", 0))?.local_addr()?.port())
}

pub(crate) fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> PgError + 'a {
    move |source| PgError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}
