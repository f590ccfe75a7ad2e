//! Output files brought back from `/work`, checked before they touch the host.

use std::path::Path;

use serde::Serialize;

use crate::paths::{clean_relative, symlink_stays_inside};
use crate::snapshot::{SnapEntry, Snapshot};

/// One accepted output entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum OutputEntry {
    /// A regular file and its bytes.
    File {
        /// Content.
        #[serde(skip)]
        data: Vec<u8>,
        /// Permission bits.
        mode: u32,
    },
    /// A directory.
    Dir,
    /// A symlink whose target stays inside the output tree.
    Symlink {
        /// Relative target.
        target: String,
    },
}

/// Output files: what was accepted and what was refused (with the reason).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Outputs {
    /// Accepted entries by clean relative path (relative to `/work`).
    pub files: Vec<(String, OutputEntry)>,
    /// Refused entries: path and reason (absolute, `..`, symlink out, over the size cap…).
    pub rejected: Vec<(String, String)>,
    /// Total bytes of accepted file content.
    pub total_bytes: u64,
}

impl Outputs {
    /// Picks the entries at or under `wanted` paths from the snapshot of `/work`, enforcing the
    /// rules: relative clean paths only, symlinks must stay inside, total size ≤ `cap`.
    pub fn select(after: &Snapshot, wanted: &[String], cap: u64) -> Outputs {
        let mut out = Outputs {
            rejected: after.rejected.clone(),
            ..Default::default()
        };
        let prefixes: Vec<String> = wanted
            .iter()
            .filter_map(|w| match clean_relative(w) {
                Ok(p) => Some(p),
                Err(reason) => {
                    out.rejected.push((w.clone(), reason));
                    None
                }
            })
            .collect();
        for (path, entry) in &after.entries {
            let picked = prefixes
                .iter()
                .any(|p| path == p || path.starts_with(&format!("{p}/")));
            if !picked {
                continue;
            }
            match entry {
                SnapEntry::Dir => out.files.push((path.clone(), OutputEntry::Dir)),
                SnapEntry::Symlink { target } => {
                    if symlink_stays_inside(path, target) {
                        out.files.push((
                            path.clone(),
                            OutputEntry::Symlink {
                                target: target.clone(),
                            },
                        ));
                    } else {
                        out.rejected
                            .push((path.clone(), format!("symlink points outside: {target}")));
                    }
                }
                SnapEntry::File { size, mode, data, .. } => match data {
                    Some(d) if out.total_bytes + size <= cap => {
                        out.total_bytes += size;
                        out.files.push((
                            path.clone(),
                            OutputEntry::File {
                                data: d.clone(),
                                mode: *mode,
                            },
                        ));
                    }
                    _ => out
                        .rejected
                        .push((path.clone(), format!("over the output size cap ({cap} bytes)"))),
                },
            }
        }
        if after.truncated {
            out.rejected
                .push(("/work".into(), "workspace larger than the read cap".into()));
        }
        out
    }

    /// The content of an accepted file.
    pub fn file(&self, path: &str) -> Option<&[u8]> {
        self.files.iter().find_map(|(p, e)| match e {
            OutputEntry::File { data, .. } if p == path => Some(data.as_slice()),
            _ => None,
        })
    }

    /// Writes the accepted entries under `dir` (which should be new and empty): directories and
    /// files first, symlinks last, so no write ever goes through a link.
    pub fn write_to(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        for (path, entry) in &self.files {
            let dest = dir.join(path);
            match entry {
                OutputEntry::Dir => std::fs::create_dir_all(&dest)?,
                OutputEntry::File { data, mode } => {
                    if let Some(parent) = dest.parent() {
                        std::fs::create_dir_all(parent)?;
                    }
                    std::fs::write(&dest, data)?;
                    use std::os::unix::fs::PermissionsExt;
                    let perm = std::fs::Permissions::from_mode(mode & 0o755);
                    std::fs::set_permissions(&dest, perm)?;
                }
                OutputEntry::Symlink { .. } => {}
            }
        }
        for (path, entry) in &self.files {
            if let OutputEntry::Symlink { target } = entry {
                let dest = dir.join(path);
                if let Some(parent) = dest.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                std::os::unix::fs::symlink(target, &dest)?;
            }
        }
        Ok(())
    }
}
