//! The diff of the workspace: unified diff of text files, lists of added/removed/binary files.

use serde::Serialize;
use similar::{ChangeTag, TextDiff};

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
    /// Unified diff (`--- a/path` / `+++ b/path`) of the text changes.
    pub unified: String,
}

/// Text as the diff sees an entry: None when it cannot be diffed as text.
fn as_text(entry: &SnapEntry) -> Option<String> {
    match entry {
        SnapEntry::File { data: Some(d), .. } if !d.contains(&0) => {
            std::str::from_utf8(d).ok().map(str::to_string)
        }
        SnapEntry::Symlink { target } => Some(format!("symlink -> {target}\n")),
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

impl WorkspaceDiff {
    /// Compares `before` with `after`; directories count only through the files they hold.
    pub fn between(before: &Snapshot, after: &Snapshot) -> WorkspaceDiff {
        let mut d = WorkspaceDiff::default();
        let empty = String::new();
        let mut paths: Vec<&String> = before.entries.keys().chain(after.entries.keys()).collect();
        paths.sort();
        paths.dedup();
        for path in paths {
            let old = before.entries.get(path).filter(|e| **e != SnapEntry::Dir);
            let new = after.entries.get(path).filter(|e| **e != SnapEntry::Dir);
            let (old_text, new_text) = match (old, new) {
                (None, None) => continue,
                (Some(o), Some(n)) if same(o, n) => continue,
                (None, Some(n)) => {
                    d.added.push(path.clone());
                    (Some(empty.clone()), as_text(n))
                }
                (Some(o), None) => {
                    d.removed.push(path.clone());
                    (as_text(o), Some(empty.clone()))
                }
                (Some(o), Some(n)) => {
                    d.modified.push(path.clone());
                    (as_text(o), as_text(n))
                }
            };
            d.files_changed += 1;
            match (old_text, new_text) {
                (Some(o), Some(n)) => d.add_text(path, old.is_some(), new.is_some(), &o, &n),
                _ => d.binary.push(path.clone()),
            }
        }
        d
    }

    fn add_text(&mut self, path: &str, existed: bool, exists: bool, old: &str, new: &str) {
        let diff = TextDiff::from_lines(old, new);
        for change in diff.iter_all_changes() {
            match change.tag() {
                ChangeTag::Insert => self.insertions += 1,
                ChangeTag::Delete => self.deletions += 1,
                ChangeTag::Equal => {}
            }
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
        self.unified.push_str(&format!("diff --git a/{path} b/{path}\n"));
        let body = diff.unified_diff().context_radius(3).header(&a, &b).to_string();
        self.unified.push_str(&body);
        if !body.is_empty() && !body.ends_with('\n') {
            self.unified.push('\n');
        }
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
}
