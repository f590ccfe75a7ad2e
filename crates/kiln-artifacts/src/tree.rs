//! A tree of files in memory, and its canonical tar form (sorted, fixed owner/mode/mtime), so
//! that the same files always give the same bytes and the same digest.

use std::collections::BTreeMap;
use std::io::Read;

use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use sha2::{Digest, Sha256};

use crate::error::ArtifactError;

/// One entry of a tree (directories are implied by the paths of what they hold).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TreeEntry {
    /// A regular file.
    File {
        /// Its content.
        data: Vec<u8>,
        /// True when any execute bit was set (stored as mode 0755, else 0644).
        executable: bool,
    },
    /// A symbolic link (never followed when packing or unpacking).
    Symlink {
        /// Where it points.
        target: String,
    },
}

/// Files by clean relative path (`src/main.rs`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tree {
    /// The entries, sorted by path.
    pub entries: BTreeMap<String, TreeEntry>,
}

/// Checks that `path` is relative, with no `.`/`..`/empty components, and returns it.
pub fn clean_path(path: &str) -> Result<String, ArtifactError> {
    let trimmed = path.trim_start_matches("./").trim_end_matches('/');
    if trimmed.is_empty()
        || trimmed.starts_with('/')
        || trimmed.split('/').any(|c| c.is_empty() || c == "." || c == "..")
        || trimmed.contains('\0')
    {
        return Err(ArtifactError::Invalid(format!("unsafe path {path:?}")));
    }
    Ok(trimmed.to_string())
}

impl Tree {
    /// Total bytes of file content.
    pub fn content_bytes(&self) -> u64 {
        self.entries
            .values()
            .map(|e| match e {
                TreeEntry::File { data, .. } => data.len() as u64,
                TreeEntry::Symlink { .. } => 0,
            })
            .sum()
    }

    /// The canonical tar: entries sorted by path, owner 0:0, mtime 0, mode 0644/0755/0777.
    pub fn to_tar(&self) -> Result<Vec<u8>, ArtifactError> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, entry) in &self.entries {
            let mut h = tar::Header::new_gnu();
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            let res = match entry {
                TreeEntry::File { data, executable } => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_mode(if *executable { 0o755 } else { 0o644 });
                    h.set_size(data.len() as u64);
                    b.append_data(&mut h, path, data.as_slice())
                }
                TreeEntry::Symlink { target } => {
                    h.set_entry_type(tar::EntryType::Symlink);
                    h.set_mode(0o777);
                    h.set_size(0);
                    b.append_link(&mut h, path, target)
                }
            };
            res.map_err(|e| ArtifactError::Invalid(format!("{path}: {e}")))?;
        }
        b.into_inner().map_err(|e| ArtifactError::Invalid(e.to_string()))
    }

    /// Reads a gzip-compressed tar, refusing more than `cap` bytes of tar (a decompression
    /// bomb stops there) and unsafe paths. Directories and other entry types are skipped.
    pub fn from_tar_gz(bytes: &[u8], cap: u64) -> Result<Tree, ArtifactError> {
        let mut tar_bytes = Vec::new();
        GzDecoder::new(bytes)
            .take(cap + 1)
            .read_to_end(&mut tar_bytes)
            .map_err(|e| ArtifactError::Invalid(format!("gzip: {e}")))?;
        Tree::from_tar(&tar_bytes, cap)
    }

    /// Reads an uncompressed tar of at most `cap` bytes, refusing unsafe paths. Directories
    /// and other entry types are skipped.
    pub fn from_tar(tar_bytes: &[u8], cap: u64) -> Result<Tree, ArtifactError> {
        if tar_bytes.len() as u64 > cap {
            return Err(ArtifactError::TooLarge {
                size: tar_bytes.len() as u64,
                cap,
            });
        }
        let mut archive = tar::Archive::new(tar_bytes);
        let mut tree = Tree::default();
        let entries = archive
            .entries()
            .map_err(|e| ArtifactError::Invalid(format!("tar: {e}")))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| ArtifactError::Invalid(format!("tar: {e}")))?;
            let raw = entry
                .path()
                .map_err(|e| ArtifactError::Invalid(format!("tar path: {e}")))?
                .to_string_lossy()
                .into_owned();
            let kind = entry.header().entry_type();
            if kind.is_dir() || raw == "." || raw == "./" {
                continue;
            }
            let path = clean_path(&raw)?;
            if kind.is_symlink() {
                let target = entry
                    .link_name()
                    .map_err(|e| ArtifactError::Invalid(format!("{path}: {e}")))?
                    .map(|t| t.to_string_lossy().into_owned())
                    .unwrap_or_default();
                tree.entries.insert(path, TreeEntry::Symlink { target });
            } else if kind.is_file() {
                let mode = entry.header().mode().unwrap_or(0o644);
                let mut data = Vec::new();
                entry
                    .read_to_end(&mut data)
                    .map_err(|e| ArtifactError::Invalid(format!("{path}: {e}")))?;
                tree.entries.insert(
                    path,
                    TreeEntry::File {
                        data,
                        executable: mode & 0o111 != 0,
                    },
                );
            }
        }
        Ok(tree)
    }

    /// Writes the tree under `dir` (created if missing; it should be new or empty): files
    /// first, symlinks last, so no write goes through a link the tree itself holds. Paths were
    /// checked by [`clean_path`] when the tree was read.
    pub fn write_to(&self, dir: &std::path::Path) -> std::io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(dir)?;
        for (path, entry) in &self.entries {
            if let TreeEntry::File { data, executable } = entry {
                let dest = dir.join(path);
                if let Some(parent) = dest.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                std::fs::write(&dest, data)?;
                let mode = if *executable { 0o755 } else { 0o644 };
                std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(mode))?;
            }
        }
        for (path, entry) in &self.entries {
            if let TreeEntry::Symlink { target } = entry {
                let dest = dir.join(path);
                if let Some(parent) = dest.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                std::os::unix::fs::symlink(target, &dest)?;
            }
        }
        Ok(())
    }

    /// Packs the tree: canonical tar, its digest, gzip. Fails when the tar is over `cap`.
    pub fn pack(&self, cap: u64) -> Result<crate::Packed, ArtifactError> {
        let tar = self.to_tar()?;
        if tar.len() as u64 > cap {
            return Err(ArtifactError::TooLarge {
                size: tar.len() as u64,
                cap,
            });
        }
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(&tar)));
        let mut gz = GzEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut gz, &tar).map_err(|e| ArtifactError::Invalid(e.to_string()))?;
        let data = gz.finish().map_err(|e| ArtifactError::Invalid(e.to_string()))?;
        Ok(crate::Packed {
            digest,
            size_bytes: tar.len() as u64,
            files: self.entries.len() as u32,
            data,
            source: serde_json::Value::Null,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Tree {
        let mut t = Tree::default();
        t.entries.insert(
            "src/a.py".into(),
            TreeEntry::File {
                data: b"print(1)\n".to_vec(),
                executable: false,
            },
        );
        t.entries.insert(
            "run.sh".into(),
            TreeEntry::File {
                data: b"#!/bin/sh\n".to_vec(),
                executable: true,
            },
        );
        t.entries.insert(
            "link".into(),
            TreeEntry::Symlink {
                target: "src/a.py".into(),
            },
        );
        t
    }

    #[test]
    fn round_trip_and_same_digest() {
        let t = sample();
        let p1 = t.pack(1 << 20).unwrap();
        let p2 = sample().pack(1 << 20).unwrap();
        assert_eq!(p1.digest, p2.digest);
        assert!(p1.digest.starts_with("sha256:"));
        let back = Tree::from_tar_gz(&p1.data, 1 << 20).unwrap();
        assert_eq!(back, t);
    }

    #[test]
    fn caps_are_enforced() {
        let t = sample();
        assert!(matches!(t.pack(100), Err(ArtifactError::TooLarge { .. })));
        let p = t.pack(1 << 20).unwrap();
        assert!(matches!(
            Tree::from_tar_gz(&p.data, 100),
            Err(ArtifactError::TooLarge { .. })
        ));
    }

    #[test]
    fn unsafe_paths_are_refused() {
        for p in ["../x", "/etc/passwd", "a/../../b", "a//b", ""] {
            assert!(clean_path(p).is_err(), "{p}");
        }
        assert_eq!(clean_path("./a/b/").unwrap(), "a/b");
    }

    #[test]
    fn written_out_and_read_back_from_a_plain_tar() {
        let t = sample();
        let back = Tree::from_tar(&t.to_tar().unwrap(), 1 << 20).unwrap();
        assert_eq!(back, t);
        let dir = tempfile::tempdir().unwrap();
        t.write_to(dir.path()).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::read(dir.path().join("src/a.py")).unwrap(), b"print(1)\n");
        let mode = std::fs::metadata(dir.path().join("run.sh"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
        assert_eq!(
            std::fs::read_link(dir.path().join("link")).unwrap(),
            std::path::Path::new("src/a.py")
        );
    }

    #[test]
    fn a_link_in_the_tree_never_carries_a_write_outside() {
        let outside = tempfile::tempdir().unwrap();
        let mut t = Tree::default();
        t.entries.insert(
            "a".into(),
            TreeEntry::Symlink {
                target: outside.path().to_string_lossy().into_owned(),
            },
        );
        t.entries.insert(
            "a/x".into(),
            TreeEntry::File {
                data: b"x".to_vec(),
                executable: false,
            },
        );
        let dir = tempfile::tempdir().unwrap();
        assert!(t.write_to(dir.path()).is_err());
        assert!(!outside.path().join("x").exists());
        assert_eq!(std::fs::read(dir.path().join("a/x")).unwrap(), b"x");
    }
}
