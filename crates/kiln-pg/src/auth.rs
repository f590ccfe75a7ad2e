//! Password (SCRAM) authentication of the embedded cluster: the generated superuser password,
//! kept 0600 next to the cluster, and the `pg_hba.conf` that asks for it.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::{io, Result};

/// The only client authentication rule: SCRAM over TCP from this host (no Unix socket is
/// opened, so no `local` line is needed, and nothing is trusted).
pub(crate) const PG_HBA: &str =
    "# Written by Kiln (kiln-pg): the superuser's generated password (SCRAM) over TCP from this\n\
# host only. The server opens no Unix socket; nothing is trusted.\n\
host all all 127.0.0.1/32 scram-sha-256\n";

/// A new random password: 32 hex digits (128 bits from the kernel), safe in a URL as is.
pub(crate) fn generate() -> Result<String> {
    let mut bytes = [0u8; 16];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(io("read", Path::new("/dev/urandom")))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Reads the password file, if there is one.
pub(crate) fn read(path: &Path) -> Result<Option<String>> {
    match fs::read_to_string(path) {
        Ok(s) => Ok(Some(s.trim().to_owned()).filter(|p| !p.is_empty())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io("read", path)(e)),
    }
}

/// Writes `password` to `path`, readable by its owner only (0600 from creation on).
pub(crate) fn write(path: &Path, password: &str) -> Result<()> {
    let _ = fs::remove_file(path);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io("create", path))?;
    f.write_all(format!("{password}\n").as_bytes())
        .map_err(io("write", path))
}

/// Replaces the cluster's `pg_hba.conf` with [`PG_HBA`] (the file keeps its owner).
pub(crate) fn write_hba(data_dir: &Path) -> Result<()> {
    let path = data_dir.join("pg_hba.conf");
    fs::write(&path, PG_HBA).map_err(io("write", &path))
}

/// True when `pg_hba.conf` of `data_dir` is Kiln's SCRAM-only file.
pub(crate) fn hba_is_scram(data_dir: &Path) -> bool {
    fs::read_to_string(data_dir.join("pg_hba.conf")).is_ok_and(|s| s == PG_HBA)
}
