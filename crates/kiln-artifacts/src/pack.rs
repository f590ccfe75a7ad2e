//! Packing a directory into an artifact.

use std::path::Path;
use std::process::Command;

use serde::Serialize;

use crate::error::ArtifactError;
use crate::tree::{clean_path, Tree, TreeEntry};

/// A packed workspace, ready to [`store`](crate::store()).
#[derive(Debug, Clone, Serialize)]
pub struct Packed {
    /// `sha256:` + hex SHA-256 of the canonical tar.
    pub digest: String,
    /// Bytes of the canonical tar (what the cap applies to).
    pub size_bytes: u64,
    /// Entries (files and symlinks).
    pub files: u32,
    /// The gzip-compressed tar.
    #[serde(skip)]
    pub data: Vec<u8>,
    /// How it was produced (`{"dir": …}` or `{"git": …, "ref": …, "commit": …}`).
    pub source: serde_json::Value,
}

/// Directories never packed: version-control metadata.
const SKIP_DIRS: &[&str] = &[".git", ".hg", ".svn"];

/// Packs `dir`. When `dir` is inside a git work tree, only the files git would track are
/// packed (tracked plus untracked-but-not-ignored, as `git ls-files -co --exclude-standard`
/// lists them), so build output such as `target/` or `node_modules/` stays out; otherwise
/// everything except VCS metadata. Symlinks are kept as links. Fails over `cap` bytes.
pub fn pack_dir(dir: &Path, cap: u64) -> Result<Packed, ArtifactError> {
    let meta = std::fs::metadata(dir).map_err(|source| ArtifactError::Io {
        path: dir.display().to_string(),
        source,
    })?;
    if !meta.is_dir() {
        return Err(ArtifactError::Io {
            path: dir.display().to_string(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a directory"),
        });
    }
    let paths = match git_listed(dir) {
        Some(paths) => paths,
        None => walk(dir)?,
    };
    let mut tree = Tree::default();
    let mut total = 0u64;
    for rel in paths {
        let clean = clean_path(&rel)?;
        let full = dir.join(&clean);
        let m = match std::fs::symlink_metadata(&full) {
            Ok(m) => m,
            // Listed by git but deleted in the work tree.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => {
                return Err(ArtifactError::Io {
                    path: full.display().to_string(),
                    source,
                })
            }
        };
        let io = |source| ArtifactError::Io {
            path: full.display().to_string(),
            source,
        };
        let entry = if m.file_type().is_symlink() {
            let target = std::fs::read_link(&full).map_err(io)?;
            TreeEntry::Symlink {
                target: target.to_string_lossy().into_owned(),
            }
        } else if m.is_file() {
            total += m.len();
            if total > cap {
                return Err(ArtifactError::TooLarge { size: total, cap });
            }
            use std::os::unix::fs::PermissionsExt;
            TreeEntry::File {
                data: std::fs::read(&full).map_err(io)?,
                executable: m.permissions().mode() & 0o111 != 0,
            }
        } else {
            continue;
        };
        tree.entries.insert(clean, entry);
    }
    let mut packed = tree.pack(cap)?;
    packed.source = serde_json::json!({"dir": dir.display().to_string()});
    tracing::info!(dir = %dir.display(), digest = %packed.digest, files = packed.files, bytes = packed.size_bytes, compressed = packed.data.len(), "packed workspace");
    Ok(packed)
}

/// The files git would track under `dir`, or None when `dir` is not in a git work tree.
fn git_listed(dir: &Path) -> Option<Vec<String>> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "ls-files",
            "-z",
            "--cached",
            "--others",
            "--exclude-standard",
            "--",
            ".",
        ])
        .env("GIT_TERMINAL_PROMPT", "0")
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let mut paths: Vec<String> = out
        .stdout
        .split(|b| *b == 0)
        .filter(|p| !p.is_empty())
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect();
    paths.sort();
    paths.dedup();
    Some(paths)
}

/// Every file and symlink under `dir`, VCS metadata skipped.
fn walk(dir: &Path) -> Result<Vec<String>, ArtifactError> {
    let mut out = Vec::new();
    let mut stack = vec![String::new()];
    while let Some(rel) = stack.pop() {
        let full = if rel.is_empty() {
            dir.to_path_buf()
        } else {
            dir.join(&rel)
        };
        let rd = std::fs::read_dir(&full).map_err(|source| ArtifactError::Io {
            path: full.display().to_string(),
            source,
        })?;
        for entry in rd {
            let entry = entry.map_err(|source| ArtifactError::Io {
                path: full.display().to_string(),
                source,
            })?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = if rel.is_empty() {
                name.clone()
            } else {
                format!("{rel}/{name}")
            };
            let ft = entry.file_type().map_err(|source| ArtifactError::Io {
                path: path.clone(),
                source,
            })?;
            if ft.is_dir() {
                if !SKIP_DIRS.contains(&name.as_str()) {
                    stack.push(path);
                }
            } else {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}
