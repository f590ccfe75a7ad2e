//! A private PostgreSQL cluster in a directory of Kiln's, run with the system's
//! `initdb` and `pg_ctl`: the embedded default of `kiln up`, the scripts and the tests.
//!
//! The cluster listens on 127.0.0.1 only (no Unix socket), trusts local connections,
//! and keeps Postgres's default durability (`fsync` and `synchronous_commit` on).
//! When run as root, the server runs as the `postgres` user (Postgres refuses root).

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
        "`{0}` not found on PATH: install the PostgreSQL server binaries (e.g. apt-get install postgresql)"
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
    /// The server did not accept connections in time.
    #[error("postgres in {0} did not become ready within 60 s")]
    NotReady(PathBuf),
}

type Result<T> = std::result::Result<T, PgError>;

/// A running local cluster.
#[derive(Debug, Clone)]
pub struct LocalCluster {
    data_dir: PathBuf,
    port: u16,
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
        let data_dir = dir.join("pgdata");
        let port_file = dir.join("port");
        if !data_dir.join("PG_VERSION").exists() {
            init(&data_dir)?;
        }
        let previous = fs::read_to_string(&port_file)
            .ok()
            .and_then(|p| p.trim().parse::<u16>().ok());
        if let Some(port) = previous {
            let cluster = Self {
                data_dir: data_dir.clone(),
                port,
            };
            if cluster.is_running() {
                return Ok(cluster);
            }
        }
        // A restarted cluster keeps its port when it can, so existing URLs (and pools) reconnect.
        let port = match previous.filter(|p| TcpListener::bind(("127.0.0.1", *p)).is_ok()) {
            Some(port) => port,
            None => free_port().map_err(io("find a free port for", dir))?,
        };
        fs::write(&port_file, port.to_string()).map_err(io("write", &port_file))?;
        let cluster = Self { data_dir, port };
        let log = dir.join("postgres.log");
        if as_root() {
            chown_postgres(dir)?;
        }
        tracing::info!(dir = %dir.display(), port, "starting local postgres");
        let started = Instant::now();
        let options = format!(
            "-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' -c max_connections=300 -c shared_buffers=256MB"
        );
        let data = cluster.data_dir.to_string_lossy();
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
            let tail = log_tail(&log);
            let previous_alive = tail.contains("lock file \"postmaster.pid\" already exists")
                || tail.contains("pre-existing shared memory block");
            if !previous_alive || Instant::now() >= deadline {
                return Err(e);
            }
            tracing::warn!(dir = %dir.display(), "a previous postgres of this data directory is still exiting; starting again shortly");
            std::thread::sleep(Duration::from_millis(500));
        }
        cluster.wait_ready()?;
        cluster.ensure_database(DEFAULT_DATABASE)?;
        tracing::info!(
            port,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "local postgres ready"
        );
        Ok(cluster)
    }

    /// The cluster's TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A connection URL for `database` as the superuser.
    pub fn url_for(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// The connection URL of the default `kiln` database.
    pub fn url(&self) -> String {
        self.url_for(DEFAULT_DATABASE)
    }

    /// True when the server of this data directory is up.
    pub fn is_running(&self) -> bool {
        run_pg("pg_ctl", &["status", "-D", &self.data_dir.to_string_lossy()]).is_ok()
            && std::net::TcpStream::connect_timeout(
                &([127, 0, 0, 1], self.port).into(),
                Duration::from_millis(500),
            )
            .is_ok()
    }

    /// Stops the server (fast shutdown: sessions are disconnected, data is kept).
    pub fn stop(&self) -> Result<()> {
        tracing::info!(port = self.port, "stopping local postgres");
        run_pg(
            "pg_ctl",
            &["stop", "-w", "-m", "fast", "-D", &self.data_dir.to_string_lossy()],
        )
        .map(|_| ())
    }

    fn wait_ready(&self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if run_pg(
                "psql",
                &[
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &self.port.to_string(),
                    "-U",
                    "postgres",
                    "-d",
                    "postgres",
                    "-Atqc",
                    "SELECT 1",
                ],
            )
            .is_ok()
            {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(PgError::NotReady(self.data_dir.clone()))
    }

    fn ensure_database(&self, name: &str) -> Result<()> {
        let port = self.port.to_string();
        let base = [
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-Atqc",
        ];
        let exists = run_pg(
            "psql",
            &[
                &base[..],
                &[&format!("SELECT 1 FROM pg_database WHERE datname = '{name}'")],
            ]
            .concat(),
        )?;
        if exists.trim() != "1" {
            run_pg(
                "psql",
                &[&base[..], &[&format!("CREATE DATABASE \"{name}\"")]].concat(),
            )?;
        }
        Ok(())
    }
}

fn init(data_dir: &Path) -> Result<()> {
    tracing::info!(dir = %data_dir.display(), "initialising a new postgres cluster");
    let parent = data_dir.parent().unwrap_or(data_dir);
    if as_root() {
        chown_postgres(parent)?;
    }
    run_pg(
        "initdb",
        &[
            "-D",
            &data_dir.to_string_lossy(),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C",
        ],
    )?;
    Ok(())
}

fn as_root() -> bool {
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

/// Gives `dir` to the `postgres` user, and lets it traverse every ancestor (adds o+x where
/// missing, e.g. on a `mktemp -d` directory), since the server runs as that user.
fn chown_postgres(dir: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    for ancestor in dir.ancestors().skip(1) {
        let Ok(meta) = fs::metadata(ancestor) else {
            continue;
        };
        let mode = meta.permissions().mode();
        if mode & 0o001 == 0 {
            tracing::info!(dir = %ancestor.display(), "letting the postgres user traverse this directory (o+x)");
            fs::set_permissions(ancestor, fs::Permissions::from_mode(mode | 0o001))
                .map_err(io("chmod o+x", ancestor))?;
        }
    }
    run(Command::new("chown").args(["-R", "postgres:postgres"]).arg(dir)).map(|_| ())
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

fn run(cmd: &mut Command) -> Result<String> {
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

fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> PgError + 'a {
    move |source| PgError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}
