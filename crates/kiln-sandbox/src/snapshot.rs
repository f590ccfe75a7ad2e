//! A bounded snapshot of a tree read from a tar stream or in place (the workspace after the
//! job): at most [`SnapshotCaps::entries`] entries (counted before anything is kept for them),
//! [`SnapshotCaps::total_bytes`] of content, paths of [`MAX_PATH_BYTES`], and a deadline; a
//! tree past any of them gives a `truncated` snapshot.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::File;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

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
    /// True when the tree was past a cap (bytes, entries, depth, time) and reading stopped
    /// early or left entries out.
    pub truncated: bool,
}

/// Caps applied while reading a snapshot.
#[derive(Debug, Clone, Copy)]
pub struct SnapshotCaps {
    /// Content of files up to this size is kept (for diffs and outputs).
    pub keep_file_bytes: u64,
    /// Total bytes of content read before reading stops.
    pub total_bytes: u64,
    /// Most entries (files, directories, links, refused ones) looked at.
    pub entries: usize,
    /// Time for the whole read; past it the snapshot ends `truncated`.
    pub timeout: Duration,
}

impl SnapshotCaps {
    /// Caps keeping files up to `keep_file_bytes`, reading `total_bytes` of content in all,
    /// with the default entry cap and timeout.
    pub fn new(keep_file_bytes: u64, total_bytes: u64) -> SnapshotCaps {
        SnapshotCaps {
            keep_file_bytes,
            total_bytes,
            entries: MAX_ENTRIES,
            timeout: READ_TIMEOUT,
        }
    }
}

/// Default for [`SnapshotCaps::entries`].
pub const MAX_ENTRIES: usize = 20_000;
/// Default for [`SnapshotCaps::timeout`].
pub const READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Deepest directory read (levels under the top); deeper ones are listed, not read.
pub const MAX_DEPTH: usize = 128;
/// Longest relative path kept, in bytes (Linux's `PATH_MAX`); deeper entries are left out.
pub const MAX_PATH_BYTES: usize = 4096;

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
    /// `/work` is `work/...`), stripping it. Never touches the host file system. The stream
    /// itself is cut at what the caps can need (content, plus headers and names per entry).
    pub fn read_tar(reader: impl Read, caps: SnapshotCaps) -> std::io::Result<Snapshot> {
        let deadline = Instant::now() + caps.timeout;
        let cut = Rc::new(Cell::new(false));
        let limit = caps
            .total_bytes
            .saturating_add((caps.entries as u64 + 1).saturating_mul(TAR_ENTRY_OVERHEAD));
        let mut snap = Snapshot::default();
        let mut archive = tar::Archive::new(Limited {
            inner: reader,
            left: limit,
            cut: cut.clone(),
        });
        match snap.fill_from_tar(&mut archive, caps, deadline) {
            Err(_) if cut.get() => snap.truncated = true,
            other => other?,
        }
        Ok(snap)
    }

    fn fill_from_tar<R: Read>(
        &mut self,
        archive: &mut tar::Archive<R>,
        caps: SnapshotCaps,
        deadline: Instant,
    ) -> std::io::Result<()> {
        let mut total = 0u64;
        for (count, entry) in archive.entries()?.enumerate() {
            if count >= caps.entries || Instant::now() >= deadline {
                self.truncated = true;
                break;
            }
            let mut entry = entry?;
            let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            let Some(rel) = strip_top(&raw) else { continue };
            if rel.len() > MAX_PATH_BYTES {
                self.truncated = true;
                continue;
            }
            let path = match clean_relative(rel) {
                Ok(p) => p,
                Err(reason) => {
                    self.rejected.push((raw, reason));
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
                    self.truncated = true;
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
                self.rejected
                    .push((path, format!("unsupported entry type {kind:?}")));
                continue;
            };
            self.entries.insert(path, item);
        }
        Ok(())
    }
}

/// Bytes of tar stream allowed per entry beyond its content: header, padding, a long name.
const TAR_ENTRY_OVERHEAD: u64 = 2 * 512 + 512 + MAX_PATH_BYTES as u64;

/// A reader that ends after `left` bytes and says so in `cut`.
struct Limited<R> {
    inner: R,
    left: u64,
    cut: Rc<Cell<bool>>,
}

impl<R: Read> Read for Limited<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            self.cut.set(true);
            return Err(std::io::Error::other("archive larger than the caps allow"));
        }
        let max = buf.len().min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..max])?;
        self.left -= n as u64;
        Ok(n)
    }
}

impl Snapshot {
    /// Reads a directory tree in place, safely while its owner may still be changing it: every
    /// directory is opened through its parent's descriptor (`/proc/self/fd/N/NAME`) with
    /// `O_NOFOLLOW` (openat semantics), so no symlink — even one swapped in mid-walk — is ever
    /// followed, FIFOs and devices are never opened, and a file is read only up to the size it
    /// had when it was listed. Names are read only up to the entry cap, directories are opened
    /// when their turn comes (open descriptors stay within the depth), and the walk ends at the
    /// deadline.
    pub fn read_dir(root: &Path, caps: SnapshotCaps) -> std::io::Result<Snapshot> {
        let deadline = Instant::now() + caps.timeout;
        let mut snap = Snapshot::default();
        let mut total = 0u64;
        let mut count = 0usize;
        let root = Rc::new(open_nofollow(root, O_DIRECTORY)?);
        // Directories still to read: (parent, name, path, depth); the root is its own parent.
        let mut stack: Vec<(Rc<File>, Option<OsString>, String, usize)> =
            vec![(root, None, String::new(), 0)];
        while let Some((parent, name, path, depth)) = stack.pop() {
            let dir = match name {
                None => parent,
                Some(name) => {
                    let here = fd_path(&parent).join(&name);
                    match open_nofollow(&here, O_DIRECTORY) {
                        Ok(d) => Rc::new(d),
                        Err(e) => {
                            snap.entries.remove(&path);
                            snap.rejected.push((path, e.to_string()));
                            continue;
                        }
                    }
                }
            };
            let prefix = if path.is_empty() { path } else { format!("{path}/") };
            let base = fd_path(&dir);
            // Names up to the entry cap only: a directory of millions costs no more.
            let room = caps.entries.saturating_sub(count);
            let mut names = Vec::new();
            for e in std::fs::read_dir(&base)? {
                if names.len() == room {
                    snap.truncated = true;
                    break;
                }
                names.push(e?.file_name());
            }
            names.sort();
            let mut subdirs = Vec::new();
            for name in names {
                count += 1;
                if Instant::now() >= deadline {
                    snap.truncated = true;
                    return Ok(snap);
                }
                let path = format!("{prefix}{}", name.to_string_lossy());
                if path.len() > MAX_PATH_BYTES {
                    snap.truncated = true;
                    continue;
                }
                match read_one(&base.join(&name), &path, caps, &mut total) {
                    Ok(Some(item)) => {
                        if item == SnapEntry::Dir && depth < MAX_DEPTH {
                            subdirs.push((dir.clone(), Some(name), path.clone(), depth + 1));
                        } else if item == SnapEntry::Dir {
                            snap.truncated = true;
                        }
                        snap.entries.insert(path, item);
                    }
                    Ok(None) => snap.truncated = true,
                    Err(e) => snap.rejected.push((path, e.to_string())),
                }
            }
            // In name order: the first subdirectory is read next.
            stack.extend(subdirs.into_iter().rev());
        }
        Ok(snap)
    }
}

/// `/proc/self/fd/N` of an open directory.
fn fd_path(dir: &File) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()))
}

/// One entry's snapshot (a directory is opened later, when its turn comes), or None when it
/// would pass the total size cap.
fn read_one(
    here: &Path,
    path: &str,
    caps: SnapshotCaps,
    total: &mut u64,
) -> std::io::Result<Option<SnapEntry>> {
    let meta = std::fs::symlink_metadata(here)?;
    let kind = meta.file_type();
    if kind.is_symlink() {
        let target = std::fs::read_link(here)?;
        let target = target.to_string_lossy().into_owned();
        return Ok(Some(SnapEntry::Symlink { target }));
    }
    if kind.is_dir() {
        return Ok(Some(SnapEntry::Dir));
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
    Ok(Some(SnapEntry::File {
        size,
        sha256,
        mode,
        data,
    }))
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
        let caps = SnapshotCaps::new(10, 1000);
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
        let caps = SnapshotCaps::new(10, 1000);
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

    /// A docker-style archive of `n` empty files, made as it is read (nothing held in memory).
    struct EmptyFiles {
        next: usize,
        n: usize,
        block: Vec<u8>,
        at: usize,
    }

    impl Read for EmptyFiles {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.at == self.block.len() {
                self.block = if self.next < self.n {
                    let mut h = tar::Header::new_gnu();
                    h.set_path(format!("work/d{}/f{}", self.next / 1000, self.next))
                        .unwrap();
                    h.set_size(0);
                    h.set_mode(0o644);
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_cksum();
                    self.next += 1;
                    h.as_bytes().to_vec()
                } else if self.next == self.n {
                    self.next += 1;
                    vec![0; 1024]
                } else {
                    return Ok(0);
                };
                self.at = 0;
            }
            let k = buf.len().min(self.block.len() - self.at);
            buf[..k].copy_from_slice(&self.block[self.at..self.at + k]);
            self.at += k;
            Ok(k)
        }
    }

    #[test]
    fn an_archive_of_300000_empty_files_stops_at_the_entry_cap() {
        let caps = SnapshotCaps::new(10, 1000);
        let archive = EmptyFiles {
            next: 0,
            n: 300_000,
            block: Vec::new(),
            at: 0,
        };
        let snap = Snapshot::read_tar(archive, caps).unwrap();
        assert!(snap.truncated);
        assert!(
            snap.entries.len() + snap.rejected.len() <= caps.entries,
            "{}",
            snap.entries.len()
        );
    }

    #[test]
    fn an_archive_stream_is_cut_at_what_the_caps_can_need() {
        // One entry claiming a huge GNU long name: the stream stops at the byte budget.
        let caps = SnapshotCaps {
            entries: 4,
            ..SnapshotCaps::new(10, 1000)
        };
        let mut h = tar::Header::new_gnu();
        h.set_path("././@LongLink").unwrap();
        h.set_entry_type(tar::EntryType::GNULongName);
        h.set_size(1 << 30);
        h.set_cksum();
        let head = h.as_bytes().to_vec();
        let endless = std::io::Read::chain(head.as_slice(), std::io::repeat(b'a'));
        let snap = Snapshot::read_tar(endless, caps).unwrap();
        assert!(snap.truncated);
        assert!(snap.entries.is_empty());
    }

    #[test]
    fn a_deep_tree_is_read_to_the_depth_cap_only() {
        let t = tempfile::tempdir().unwrap();
        let mut p = t.path().to_path_buf();
        for _ in 0..(MAX_DEPTH + 50) {
            p.push("d");
        }
        std::fs::create_dir_all(&p).unwrap();
        std::fs::write(p.join("bottom.txt"), "x").unwrap();
        let snap = Snapshot::read_dir(t.path(), SnapshotCaps::new(10, 1000)).unwrap();
        assert!(snap.truncated);
        let deepest = snap.entries.keys().map(|k| k.split('/').count()).max().unwrap();
        assert_eq!(deepest, MAX_DEPTH + 1);
        assert!(!snap.entries.keys().any(|k| k.ends_with("bottom.txt")));
    }

    #[test]
    fn the_walk_ends_at_its_deadline() {
        let t = tempfile::tempdir().unwrap();
        for i in 0..50 {
            std::fs::write(t.path().join(format!("f{i}")), "x").unwrap();
        }
        let caps = SnapshotCaps {
            timeout: Duration::ZERO,
            ..SnapshotCaps::new(10, 1000)
        };
        let snap = Snapshot::read_dir(t.path(), caps).unwrap();
        assert!(snap.truncated);
        assert!(snap.entries.is_empty());
        let tar = Workspace::new().to_tar().unwrap();
        assert!(Snapshot::read_tar(tar.as_slice(), caps)
            .unwrap()
            .entries
            .is_empty());
    }
}
