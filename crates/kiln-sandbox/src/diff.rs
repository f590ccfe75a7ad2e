//! The diff of the workspace: unified diff of text files, lists of added/removed/binary files.
//!
//! Bounded: a deadline for the whole comparison (past it, similar's Myers gives up and
//! approximates each remaining file as a whole replacement), a cap on the unified text and on
//! the size of a file diffed as text. A diff that hit a bound says so (`too_large` and a
//! `diff too large` marker line); its counts still cover every changed file.

use std::time::{Duration, Instant};

use serde::Serialize;
use similar::{DiffTag, TextDiff};

use crate::snapshot::{SnapEntry, Snapshot};

/// What a job changed in its workspace.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct WorkspaceDiff {
    /// Number of files added, removed or modified.
    pub files_changed: usize,
    /// Lines added across text files.
    pub insertions: usize,
    /// Lines removed across text files.
    pub deletions: usize,
    /// Paths added by the job.
    pub added: Vec<String>,
    /// Paths removed by the job.
    pub removed: Vec<String>,
    /// Paths present before and after whose content, mode or link target changed.
    pub modified: Vec<String>,
    /// Changed paths that are binary or too large to diff as text.
    pub binary: Vec<String>,
    /// Unified diff (`--- a/path` / `+++ b/path`) of the text changes, cut at the cap and then
    /// ending with a `# diff too large` line.
    pub unified: String,
    /// True when the unified diff was cut at its cap or the deadline made it approximate.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub too_large: bool,
}

/// Bounds of one workspace diff.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiffCaps {
    /// Time for the whole diff; past it the remaining files are compared coarsely.
    pub timeout: Duration,
    /// Bytes of unified diff kept.
    pub unified_bytes: usize,
    /// Largest file (old and new content together) diffed as text; larger ones are binary.
    pub text_bytes: usize,
}

impl Default for DiffCaps {
    fn default() -> Self {
        DiffCaps {
            timeout: Duration::from_secs(5),
            unified_bytes: 1 << 20,
            text_bytes: 16 << 20,
        }
    }
}

/// Text as the diff sees an entry: None when it cannot be diffed as text.
fn as_text(entry: &SnapEntry) -> Option<&str> {
    match entry {
        SnapEntry::File { data: Some(d), .. } if !d.contains(&0) => std::str::from_utf8(d).ok(),
        _ => None,
    }
}

fn same(a: &SnapEntry, b: &SnapEntry) -> bool {
    match (a, b) {
        (
            SnapEntry::File {
                sha256: x, mode: m, ..
            },
            SnapEntry::File {
                sha256: y, mode: n, ..
            },
        ) => x == y && (m & 0o111 != 0) == (n & 0o111 != 0),
        _ => a == b,
    }
}

/// The text of an entry, with a symlink shown as its target.
fn text_of(entry: Option<&SnapEntry>) -> Option<std::borrow::Cow<'_, str>> {
    match entry {
        None => Some("".into()),
        Some(SnapEntry::Symlink { target }) => Some(format!("symlink -> {target}\n").into()),
        Some(e) => as_text(e).map(Into::into),
    }
}

impl WorkspaceDiff {
    /// Compares `before` with `after` within the default [`DiffCaps`]; directories count only
    /// through the files they hold.
    pub fn between(before: &Snapshot, after: &Snapshot) -> WorkspaceDiff {
        Self::bounded(before, after, DiffCaps::default())
    }

    /// Compares `before` with `after` within `caps`. CPU-bound for up to `caps.timeout`: call
    /// it off the async runtime (`spawn_blocking`).
    pub fn bounded(before: &Snapshot, after: &Snapshot, caps: DiffCaps) -> WorkspaceDiff {
        let deadline = Instant::now() + caps.timeout;
        let mut d = WorkspaceDiff::default();
        let mut paths: Vec<&String> = before.entries.keys().chain(after.entries.keys()).collect();
        paths.sort();
        paths.dedup();
        for path in paths {
            let old = before.entries.get(path).filter(|e| **e != SnapEntry::Dir);
            let new = after.entries.get(path).filter(|e| **e != SnapEntry::Dir);
            match (old, new) {
                (None, None) => continue,
                (Some(o), Some(n)) if same(o, n) => continue,
                (None, Some(_)) => d.added.push(path.clone()),
                (Some(_), None) => d.removed.push(path.clone()),
                (Some(_), Some(_)) => d.modified.push(path.clone()),
            }
            d.files_changed += 1;
            match (text_of(old), text_of(new)) {
                (Some(o), Some(n)) if o.len() + n.len() <= caps.text_bytes => {
                    d.add_text(path, old.is_some(), new.is_some(), &o, &n, deadline, caps)
                }
                _ => d.binary.push(path.clone()),
            }
        }
        if d.too_large {
            d.unified.push_str(&format!(
                "# diff too large: {} files changed, {} insertions(+), {} deletions(-); the unified \
                 diff is cut at {} bytes or approximated after {} s\n",
                d.files_changed,
                d.insertions,
                d.deletions,
                caps.unified_bytes,
                caps.timeout.as_secs_f64()
            ));
        }
        d
    }

    #[allow(clippy::too_many_arguments)]
    fn add_text(
        &mut self,
        path: &str,
        existed: bool,
        exists: bool,
        old: &str,
        new: &str,
        deadline: Instant,
        caps: DiffCaps,
    ) {
        let diff = TextDiff::configure().deadline(deadline).diff_lines(old, new);
        if Instant::now() >= deadline {
            self.too_large = true;
        }
        for op in diff.ops() {
            match op.tag() {
                DiffTag::Insert => self.insertions += op.new_range().len(),
                DiffTag::Delete => self.deletions += op.old_range().len(),
                DiffTag::Replace => {
                    self.insertions += op.new_range().len();
                    self.deletions += op.old_range().len();
                }
                DiffTag::Equal => {}
            }
        }
        if self.unified.len() >= caps.unified_bytes {
            self.too_large = true;
            return;
        }
        let a = if existed {
            format!("a/{path}")
        } else {
            "/dev/null".into()
        };
        let b = if exists {
            format!("b/{path}")
        } else {
            "/dev/null".into()
        };
        let room = caps.unified_bytes - self.unified.len();
        let mut w = Capped {
            buf: format!("diff --git a/{path} b/{path}\n").into_bytes(),
            room,
        };
        let mut ud = diff.unified_diff();
        ud.context_radius(3);
        let mut complete = true;
        for (i, hunk) in ud.iter_hunks().enumerate() {
            use std::io::Write;
            let header = if i == 0 {
                format!("--- {a}\n+++ {b}\n")
            } else {
                String::new()
            };
            if w.write_all(header.as_bytes())
                .and_then(|_| hunk.to_writer(&mut w))
                .is_err()
            {
                complete = false;
                break;
            }
        }
        let mut body = String::from_utf8_lossy(&w.buf).into_owned();
        if !complete {
            // Whole lines only.
            self.too_large = true;
            body.truncate(body.rfind('\n').map_or(0, |i| i + 1));
        } else if !body.ends_with('\n') {
            body.push('\n');
        }
        self.unified.push_str(&body);
    }
}

/// A writer that refuses to grow past `room` bytes.
struct Capped {
    buf: Vec<u8>,
    room: usize,
}

impl std::io::Write for Capped {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let left = self.room.saturating_sub(self.buf.len());
        if left == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::WriteZero,
                "unified diff cap",
            ));
        }
        let n = left.min(data.len());
        self.buf.extend_from_slice(&data[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workspace::Workspace;

    #[test]
    fn edit_add_delete() {
        let mut a = Workspace::new();
        a.add_file("keep.txt", "same\n").unwrap();
        a.add_file("edit.txt", "one\ntwo\nthree\n").unwrap();
        a.add_file("gone.txt", "bye\n").unwrap();
        let mut b = Workspace::new();
        b.add_file("keep.txt", "same\n").unwrap();
        b.add_file("edit.txt", "one\n2\nthree\n").unwrap();
        b.add_file("new.txt", "hi\nthere\n").unwrap();
        b.add_file("blob", vec![0u8, 1, 2]).unwrap();
        let d = WorkspaceDiff::between(&Snapshot::of_workspace(&a), &Snapshot::of_workspace(&b));
        assert_eq!(d.files_changed, 4);
        assert_eq!(d.added, vec!["blob", "new.txt"]);
        assert_eq!(d.removed, vec!["gone.txt"]);
        assert_eq!(d.modified, vec!["edit.txt"]);
        assert_eq!(d.binary, vec!["blob"]);
        assert_eq!((d.insertions, d.deletions), (3, 2));
        assert!(d.unified.contains("--- a/edit.txt\n+++ b/edit.txt\n"));
        assert!(d.unified.contains("-two\n+2\n"));
        assert!(d.unified.contains("--- /dev/null\n+++ b/new.txt\n"));
        assert!(d.unified.contains("--- a/gone.txt\n+++ /dev/null\n"));
    }

    #[test]
    fn a_300000_line_rewrite_ends_with_counts_and_the_too_large_marker() {
        let old: String = (0..300_000).map(|i| format!("line {i}\n")).collect();
        let new: String = (0..300_000).map(|i| format!("changed {i}\n")).collect();
        let mut a = Workspace::new();
        a.add_file("big.txt", old).unwrap();
        let mut b = Workspace::new();
        b.add_file("big.txt", new).unwrap();
        let d = WorkspaceDiff::between(&Snapshot::of_workspace(&a), &Snapshot::of_workspace(&b));
        assert_eq!(
            (d.files_changed, d.insertions, d.deletions),
            (1, 300_000, 300_000)
        );
        assert_eq!(d.modified, vec!["big.txt"]);
        assert!(
            d.unified.len() <= DiffCaps::default().unified_bytes + 512,
            "{} bytes",
            d.unified.len()
        );
        assert!(
            d.unified.contains("diff too large"),
            "{}",
            &d.unified[d.unified.len() - 200..]
        );
        assert!(d
            .unified
            .starts_with("diff --git a/big.txt b/big.txt\n--- a/big.txt\n+++ b/big.txt\n"));
    }
}
