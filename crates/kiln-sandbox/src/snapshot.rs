//! A bounded snapshot of a tree read from a tar stream (the workspace after the job).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::paths::clean_relative;
use crate::workspace::{Entry, Workspace};

/// One entry of a snapshot. Content is kept only up to the caps; a hash is always kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapEntry {
    /// A regular file.
    File {
        /// Size in bytes.
        size: u64,
        /// Hex SHA-256 of the content.
        sha256: String,
        /// Permission bits.
        mode: u32,
        /// The content, when it fit in the caps.
        data: Option<Vec<u8>>,
    },
    /// A directory.
    Dir,
    /// A symbolic link (never followed).
    Symlink {
        /// Where it points.
        target: String,
    },
}

/// A tree as seen at one moment, keyed by clean relative paths.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Entries by path.
    pub entries: BTreeMap<String, SnapEntry>,
    /// Entries whose path was refused (absolute, `..`): path and reason.
    pub rejected: Vec<(String, String)>,
    /// True when the tree was larger than the total cap and reading stopped early.
    pub truncated: bool,
}

/// Caps applied while reading a snapshot.
#[derive(Debug, Clone, Copy)]
pub struct SnapshotCaps {
    /// Content of files up to this size is kept (for diffs and outputs).
    pub keep_file_bytes: u64,
    /// Total bytes of content read before reading stops.
    pub total_bytes: u64,
}

impl Snapshot {
    /// The same snapshot without the entries at or under any of `paths` (clean relative paths).
    pub fn without(&self, paths: &[String]) -> Snapshot {
        let mut s = self.clone();
        s.entries.retain(|path, _| {
            !paths.iter().any(|p| {
                path == p
                    || (path.len() > p.len()
                        && path.starts_with(p.as_str())
                        && path.as_bytes()[p.len()] == b'/')
            })
        });
        s
    }

    /// The snapshot of an input workspace (all content kept).
    pub fn of_workspace(ws: &Workspace) -> Snapshot {
        let entries = ws
            .entries()
            .iter()
            .map(|(path, e)| {
                let snap = match e {
                    Entry::File { data, mode } => SnapEntry::File {
                        size: data.len() as u64,
                        sha256: sha256_hex(data),
                        mode: *mode,
                        data: Some(data.clone()),
                    },
                    Entry::Dir => SnapEntry::Dir,
                    Entry::Symlink { target } => SnapEntry::Symlink {
                        target: target.clone(),
                    },
                };
                (path.clone(), snap)
            })
            .collect();
        Snapshot {
            entries,
            ..Default::default()
        }
    }

    /// Reads a tar stream whose entries all sit under one top directory (docker's archive of
    /// `/work` is `work/...`), stripping it. Never touches the host file system.
    pub fn read_tar(reader: impl Read, caps: SnapshotCaps) -> std::io::Result<Snapshot> {
        let mut snap = Snapshot::default();
        let mut archive = tar::Archive::new(reader);
        let mut total = 0u64;
        for entry in archive.entries()? {
            let mut entry = entry?;
            let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            let Some(rel) = strip_top(&raw) else { continue };
            let path = match clean_relative(rel) {
                Ok(p) => p,
                Err(reason) => {
                    snap.rejected.push((raw, reason));
                    continue;
                }
            };
            let kind = entry.header().entry_type();
            let item = if kind.is_dir() {
                SnapEntry::Dir
            } else if kind.is_symlink() || kind.is_hard_link() {
                let target = entry
                    .link_name_bytes()
                    .map(|t| String::from_utf8_lossy(&t).into_owned())
                    .unwrap_or_default();
                SnapEntry::Symlink { target }
            } else if kind.is_file() {
                let size = entry.size();
                if total + size > caps.total_bytes {
                    snap.truncated = true;
                    break;
                }
                total += size;
                let mode = entry.header().mode().unwrap_or(0o644) & 0o7777;
                let (sha256, data) = read_content(&mut entry, size <= caps.keep_file_bytes)?;
                SnapEntry::File {
                    size,
                    sha256,
                    mode,
                    data,
                }
            } else {
                snap.rejected
                    .push((path, format!("unsupported entry type {kind:?}")));
                continue;
            };
            snap.entries.insert(path, item);
        }
        Ok(snap)
    }
}

impl Snapshot {
    /// Reads a directory tree in place, safely while its owner may still be changing it: every
    /// directory is held open and its children are reached through `/proc/self/fd/N/NAME` with
    /// `O_NOFOLLOW` (openat semantics), so no symlink — even one swapped in mid-walk — is ever
    /// followed, FIFOs and devices are never opened, and a file is read only up to the size it
    /// had when it was listed.
    pub fn read_dir(root: &Path, caps: SnapshotCaps) -> std::io::Result<Snapshot> {
        let mut snap = Snapshot::default();
        let mut total = 0u64;
        let mut count = 0usize;
        let mut stack = vec![(open_nofollow(root, O_DIRECTORY)?, String::new())];
        while let Some((dir, prefix)) = stack.pop() {
            let base = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
            let mut names: Vec<_> = std::fs::read_dir(&base)?
                .map(|e| e.map(|e| e.file_name()))
                .collect::<Result<_, _>>()?;
            names.sort();
            for name in names {
                count += 1;
                if count > MAX_ENTRIES {
                    snap.truncated = true;
                    return Ok(snap);
                }
                let path = format!("{prefix}{}", name.to_string_lossy());
                let here = base.join(&name);
                match read_one(&here, &path, caps, &mut total) {
                    Ok(Some((item, subdir))) => {
                        if let Some(d) = subdir {
                            stack.push((d, format!("{path}/")));
                        }
                        snap.entries.insert(path, item);
                    }
                    Ok(None) => snap.truncated = true,
                    Err(e) => snap.rejected.push((path, e.to_string())),
                }
            }
        }
        Ok(snap)
    }
}

/// Most entries read from a tree before reading stops.
const MAX_ENTRIES: usize = 20_000;

/// One entry: its snapshot (and the opened directory to descend into), or None when it would
/// pass the total size cap.
fn read_one(
    here: &Path,
    path: &str,
    caps: SnapshotCaps,
    total: &mut u64,
) -> std::io::Result<Option<(SnapEntry, Option<File>)>> {
    let meta = std::fs::symlink_metadata(here)?;
    let kind = meta.file_type();
    if kind.is_symlink() {
        let target = std::fs::read_link(here)?;
        let target = target.to_string_lossy().into_owned();
        return Ok(Some((SnapEntry::Symlink { target }, None)));
    }
    if kind.is_dir() {
        let dir = open_nofollow(here, O_DIRECTORY)?;
        return Ok(Some((SnapEntry::Dir, Some(dir))));
    }
    if !kind.is_file() {
        return Err(std::io::Error::other(format!("{path}: not a regular file")));
    }
    let file = open_nofollow(here, O_NONBLOCK)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::other(format!("{path}: changed while read")));
    }
    let size = meta.len();
    if *total + size > caps.total_bytes {
        return Ok(None);
    }
    *total += size;
    let (sha256, data) = read_content(&mut file.take(size), size <= caps.keep_file_bytes)?;
    use std::os::unix::fs::PermissionsExt;
    let mode = meta.permissions().mode() & 0o7777;
    Ok(Some((
        SnapEntry::File {
            size,
            sha256,
            mode,
            data,
        },
        None,
    )))
}

fn open_nofollow(path: &Path, extra: i32) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(O_NOFOLLOW | extra)
        .open(path)
}

/// Linux open(2) flags (generic values; arm and aarch64 differ for two of them).
#[cfg(any(target_arch = "aarch64", target_arch = "arm"))]
const O_NOFOLLOW: i32 = 0o100000;
#[cfg(any(target_arch = "aarch64", target_arch = "arm"))]
const O_DIRECTORY: i32 = 0o40000;
#[cfg(not(any(target_arch = "aarch64", target_arch = "arm")))]
const O_NOFOLLOW: i32 = 0o400000;
#[cfg(not(any(target_arch = "aarch64", target_arch = "arm")))]
const O_DIRECTORY: i32 = 0o200000;
const O_NONBLOCK: i32 = 0o4000;

/// `work/a/b` → `a/b`; the top directory itself → None.
fn strip_top(raw: &str) -> Option<&str> {
    let trimmed = raw.trim_start_matches("./");
    let (_, rest) = trimmed.split_once('/')?;
    let rest = rest.trim_end_matches('/');
    (!rest.is_empty()).then_some(rest)
}

fn read_content(reader: &mut impl Read, keep: bool) -> std::io::Result<(String, Option<Vec<u8>>)> {
    let mut hasher = Sha256::new();
    let mut kept = keep.then(Vec::new);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        if let Some(k) = kept.as_mut() {
            k.extend_from_slice(&buf[..n]);
        }
    }
    Ok((hex::encode(hasher.finalize()), kept))
}

/// Hex SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_drops_paths_and_what_is_under_them_only() {
        let mut ws = Workspace::new();
        for p in [
            ".kiln-validate/reports/a.json",
            ".kiln-validate",
            ".kiln-validate-not/x",
            "src/a.py",
        ] {
            if p != ".kiln-validate" {
                ws.add_file(p, "x").unwrap();
            }
        }
        let snap = Snapshot::of_workspace(&ws).without(&[".kiln-validate".to_string()]);
        let paths: Vec<&str> = snap.entries.keys().map(String::as_str).collect();
        assert!(
            paths.contains(&"src/a.py") && paths.contains(&".kiln-validate-not/x"),
            "{paths:?}"
        );
        assert!(!paths
            .iter()
            .any(|p| p.starts_with(".kiln-validate/") || *p == ".kiln-validate"));
    }

    #[test]
    fn reads_a_tree_in_place_without_following_links() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir(t.path().join("d")).unwrap();
        std::fs::write(t.path().join("d/f.txt"), "hi\n").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", t.path().join("pw")).unwrap();
        std::os::unix::fs::symlink("/", t.path().join("d/root")).unwrap();
        let fifo = std::process::Command::new("mkfifo")
            .arg(t.path().join("pipe"))
            .status()
            .unwrap();
        assert!(fifo.success());
        let caps = SnapshotCaps {
            keep_file_bytes: 10,
            total_bytes: 1000,
        };
        let snap = Snapshot::read_dir(t.path(), caps).unwrap();
        assert_eq!(snap.entries["d"], SnapEntry::Dir);
        assert!(matches!(&snap.entries["d/f.txt"], SnapEntry::File { data: Some(d), .. } if d == b"hi\n"));
        assert_eq!(
            snap.entries["pw"],
            SnapEntry::Symlink {
                target: "/etc/passwd".into()
            }
        );
        assert_eq!(snap.entries["d/root"], SnapEntry::Symlink { target: "/".into() });
        assert!(!snap.entries.contains_key("pipe"));
        assert_eq!(snap.rejected.len(), 1);
    }

    #[test]
    fn reads_docker_style_archive() {
        let mut ws = Workspace::new();
        ws.add_file("a.txt", "hello\n").unwrap();
        ws.add_file("big.bin", vec![7u8; 100]).unwrap();
        ws.add_symlink("l", "/etc/passwd").unwrap();
        // Re-root under `work/` as docker does.
        let mut b = tar::Builder::new(Vec::new());
        let inner = ws.to_tar().unwrap();
        let mut a = tar::Archive::new(inner.as_slice());
        for e in a.entries().unwrap() {
            let mut e = e.unwrap();
            let mut h = e.header().clone();
            let p = format!("work/{}", e.path().unwrap().display());
            if h.entry_type().is_symlink() {
                let t = e.link_name().unwrap().unwrap().into_owned();
                b.append_link(&mut h, p, t).unwrap();
            } else {
                let mut data = Vec::new();
                e.read_to_end(&mut data).unwrap();
                b.append_data(&mut h, p, data.as_slice()).unwrap();
            }
        }
        let bytes = b.into_inner().unwrap();
        let caps = SnapshotCaps {
            keep_file_bytes: 10,
            total_bytes: 1000,
        };
        let snap = Snapshot::read_tar(bytes.as_slice(), caps).unwrap();
        assert!(matches!(&snap.entries["a.txt"], SnapEntry::File { data: Some(d), .. } if d == b"hello\n"));
        assert!(matches!(
            &snap.entries["big.bin"],
            SnapEntry::File {
                data: None,
                size: 100,
                ..
            }
        ));
        assert_eq!(
            snap.entries["l"],
            SnapEntry::Symlink {
                target: "/etc/passwd".into()
            }
        );
    }
}
