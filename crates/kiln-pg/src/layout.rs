//! Where a cluster's files live. Kiln's directory holds the start lock, the port and the
//! password. The data directory is inside it, except when Kiln runs as root: the server must
//! then run as the `postgres` user, who may not be able to reach Kiln's directory, and Kiln
//! changes no permission above a data directory. So as root the data directory goes under the
//! `postgres` user's home (`~postgres/kiln/kiln-<hash of Kiln's directory>/`), created by that
//! user, and Kiln's directory links to it (`pgdata`, `postgres.log`).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{io, run, PgError, Result};

/// The files of one cluster.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    /// The Postgres data directory.
    pub data_dir: PathBuf,
    /// The server log.
    pub log: PathBuf,
    /// A directory holding only this cluster (removed whole by `remove`), when it is not Kiln's.
    pub own_root: Option<PathBuf>,
}

/// The `postgres` system user.
#[derive(Debug, Clone)]
pub(crate) struct PgUser {
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
}

impl PgUser {
    /// Reads the `postgres` entry of /etc/passwd.
    pub fn lookup() -> Result<Self> {
        let passwd = fs::read_to_string("/etc/passwd").map_err(io("read", Path::new("/etc/passwd")))?;
        passwd
            .lines()
            .map(|l| l.split(':').collect::<Vec<_>>())
            .find(|f| f.len() >= 6 && f[0] == "postgres")
            .and_then(|f| {
                Some(PgUser {
                    uid: f[2].parse().ok()?,
                    gid: f[3].parse().ok()?,
                    home: PathBuf::from(f[5]),
                })
            })
            .ok_or(PgError::NoPostgresUser)
    }
}

impl Layout {
    /// The layout of the cluster of Kiln's directory `dir` (canonical), creating the data
    /// root as the `postgres` user when running as root and it does not exist yet.
    pub fn resolve(dir: &Path) -> Result<Self> {
        let link = dir.join("pgdata");
        if !crate::as_root() {
            return Ok(Self {
                data_dir: link,
                log: dir.join("postgres.log"),
                own_root: None,
            });
        }
        if let Ok(target) = fs::read_link(&link) {
            let root = target.parent().map(Path::to_path_buf).unwrap_or_default();
            if !root.is_dir() {
                mkdir_as_postgres(&root)?;
            }
            return Ok(Self {
                data_dir: target,
                log: root.join("postgres.log"),
                own_root: Some(root),
            });
        }
        if link.is_dir() {
            // A cluster made by an earlier Kiln inside this directory: keep using it in place.
            return Ok(Self {
                data_dir: link,
                log: dir.join("postgres.log"),
                own_root: None,
            });
        }
        let root = PgUser::lookup()?
            .home
            .join("kiln")
            .join(format!("kiln-{:016x}", fnv1a(dir)));
        mkdir_as_postgres(&root)?;
        let owner = root.join("kiln-owner");
        fs::write(&owner, format!("{}\n", dir.display())).map_err(io("write", &owner))?;
        let data_dir = root.join("pgdata");
        let log = root.join("postgres.log");
        std::os::unix::fs::symlink(&data_dir, &link).map_err(io("link", &link))?;
        let log_link = dir.join("postgres.log");
        let _ = fs::remove_file(&log_link);
        std::os::unix::fs::symlink(&log, &log_link).map_err(io("link", &log_link))?;
        Ok(Self {
            data_dir,
            log,
            own_root: Some(root),
        })
    }
}

/// Creates `dir` (and missing parents) as the `postgres` user, so it owns them from the start.
fn mkdir_as_postgres(dir: &Path) -> Result<()> {
    run(Command::new("runuser")
        .args(["-u", "postgres", "--", "mkdir", "-p"])
        .arg(dir)
        .current_dir("/"))
    .map(|_| ())
}

/// FNV-1a of a path: a stable name for its data root (not a secret, not for security).
fn fnv1a(path: &Path) -> u64 {
    path.as_os_str()
        .as_encoded_bytes()
        .iter()
        .fold(0xcbf29ce484222325u64, |h, b| {
            (h ^ *b as u64).wrapping_mul(0x100000001b3)
        })
}
