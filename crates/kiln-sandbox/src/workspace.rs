//! The workspace: a tree of files sent to `/work` as a tar stream.

use std::collections::BTreeMap;

use crate::error::{Result, SandboxError};
use crate::paths::clean_relative;

/// The uid/gid owning uploaded files: the images' non-root `kiln` user.
pub const JOB_UID: u64 = 10001;

/// One entry of a workspace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// A regular file with its content and permission bits.
    File {
        /// The bytes of the file.
        data: Vec<u8>,
        /// Permission bits (e.g. 0o644, 0o755).
        mode: u32,
    },
    /// A directory.
    Dir,
    /// A symbolic link, stored as its target (never followed on the host).
    Symlink {
        /// Where the link points.
        target: String,
    },
}

/// A tree of files keyed by clean relative paths (`src/main.py`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Workspace {
    entries: BTreeMap<String, Entry>,
}

impl Workspace {
    /// An empty workspace.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a file (mode 0644); `path` must be relative without `..`.
    pub fn add_file(&mut self, path: &str, data: impl Into<Vec<u8>>) -> Result<&mut Self> {
        self.insert(
            path,
            Entry::File {
                data: data.into(),
                mode: 0o644,
            },
        )
    }

    /// Adds an executable file (mode 0755).
    pub fn add_executable(&mut self, path: &str, data: impl Into<Vec<u8>>) -> Result<&mut Self> {
        self.insert(
            path,
            Entry::File {
                data: data.into(),
                mode: 0o755,
            },
        )
    }

    /// Adds a symlink. Its target is only ever seen inside the container.
    pub fn add_symlink(&mut self, path: &str, target: &str) -> Result<&mut Self> {
        self.insert(
            path,
            Entry::Symlink {
                target: target.to_string(),
            },
        )
    }

    /// Adds an entry at a clean relative path.
    pub fn insert(&mut self, path: &str, entry: Entry) -> Result<&mut Self> {
        let clean = clean_relative(path).map_err(SandboxError::InvalidWorkspace)?;
        self.entries.insert(clean, entry);
        Ok(self)
    }

    /// The entries, sorted by path.
    pub fn entries(&self) -> &BTreeMap<String, Entry> {
        &self.entries
    }

    /// Total bytes of file content.
    pub fn size(&self) -> u64 {
        self.entries
            .values()
            .map(|e| match e {
                Entry::File { data, .. } => data.len() as u64,
                _ => 0,
            })
            .sum()
    }

    /// The workspace as a tar archive owned by the job user, ready to extract into `/work`.
    pub fn to_tar(&self) -> Result<Vec<u8>> {
        let mut builder = tar::Builder::new(Vec::new());
        // Every parent directory gets an explicit entry, so it is owned by the job user too.
        let mut all = self.entries.clone();
        for path in self.entries.keys() {
            let mut parent = path.as_str();
            while let Some((p, _)) = parent.rsplit_once('/') {
                all.entry(p.to_string()).or_insert(Entry::Dir);
                parent = p;
            }
        }
        for (path, entry) in &all {
            let mut header = tar::Header::new_gnu();
            header.set_uid(JOB_UID);
            header.set_gid(JOB_UID);
            header.set_mtime(0);
            let res = match entry {
                Entry::File { data, mode } => {
                    header.set_entry_type(tar::EntryType::Regular);
                    header.set_mode(*mode);
                    header.set_size(data.len() as u64);
                    builder.append_data(&mut header, path, data.as_slice())
                }
                Entry::Dir => {
                    header.set_entry_type(tar::EntryType::Directory);
                    header.set_mode(0o755);
                    header.set_size(0);
                    builder.append_data(&mut header, path, std::io::empty())
                }
                Entry::Symlink { target } => {
                    header.set_entry_type(tar::EntryType::Symlink);
                    header.set_mode(0o777);
                    header.set_size(0);
                    builder.append_link(&mut header, path, target)
                }
            };
            res.map_err(|e| SandboxError::InvalidWorkspace(format!("{path}: {e}")))?;
        }
        builder
            .into_inner()
            .map_err(|e| SandboxError::InvalidWorkspace(e.to_string()))
    }
}
