//! The model's edits: the workspace unpacked in a host temporary directory, changed only
//! through `write_file` and `delete_file` (or, for models without tools, `File: PATH` blocks).
//! Paths are relative to the root; absolute paths, `..`, paths through symlinks and files over
//! the size cap are refused back to the model as tool errors. Nothing here runs a program.

use std::io;
use std::path::{Path, PathBuf};

use kiln_artifacts::{ArtifactError, Packed, Tree, TreeEntry};
use kiln_llm::{ToolCall, ToolResult};

/// A workspace being edited.
#[derive(Debug)]
pub struct EditDir {
    dir: tempfile::TempDir,
    max_file_bytes: usize,
    /// Edits applied (writes and deletes that succeeded).
    pub applied: usize,
}

impl EditDir {
    /// Unpacks `tree` into a fresh temporary directory (symlinks stay symlinks, never followed).
    pub fn from_tree(tree: &Tree, max_file_bytes: usize) -> io::Result<Self> {
        let dir = tempfile::Builder::new().prefix("kiln-generate-").tempdir()?;
        for (path, entry) in &tree.entries {
            let to = dir.path().join(path);
            if let Some(parent) = to.parent() {
                std::fs::create_dir_all(parent)?;
            }
            match entry {
                TreeEntry::File { data, executable } => {
                    std::fs::write(&to, data)?;
                    if *executable {
                        use std::os::unix::fs::PermissionsExt;
                        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o755))?;
                    }
                }
                TreeEntry::Symlink { target } => std::os::unix::fs::symlink(target, &to)?,
            }
        }
        Ok(EditDir {
            dir,
            max_file_bytes,
            applied: 0,
        })
    }

    /// The directory's root.
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// Checks `path` and returns where it lives: relative, clean, and through no symlink.
    fn resolve(&self, path: &str) -> Result<(String, PathBuf), String> {
        if path.starts_with('/') {
            return Err(format!(
                "{path:?}: absolute paths are refused; give a path relative to the workspace root"
            ));
        }
        let clean = kiln_artifacts::tree::clean_path(path)
            .map_err(|_| format!("{path:?}: paths must be relative, without `..`, `.` or empty parts"))?;
        if clean.split('/').any(|c| c == ".git") {
            return Err(format!(
                "{path:?}: version-control metadata is not part of the workspace"
            ));
        }
        let mut at = self.dir.path().to_path_buf();
        for part in clean.split('/') {
            at.push(part);
            match std::fs::symlink_metadata(&at) {
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(format!(
                        "{path:?}: goes through the symlink {part:?}; symlinks are not followed"
                    ))
                }
                _ => {}
            }
        }
        Ok((clean, at))
    }

    /// Creates or replaces `path` with `content`; returns what to tell the model.
    pub fn write(&mut self, path: &str, content: &str) -> Result<String, String> {
        if content.len() > self.max_file_bytes {
            return Err(format!(
                "{path:?}: {} bytes is over the cap of {} bytes per file",
                content.len(),
                self.max_file_bytes
            ));
        }
        let (clean, at) = self.resolve(path)?;
        if at.is_dir() {
            return Err(format!("{clean:?} is a directory"));
        }
        let io = |e: io::Error| format!("{clean:?}: {e}");
        if let Some(parent) = at.parent() {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        std::fs::write(&at, content).map_err(io)?;
        self.applied += 1;
        Ok(format!("wrote {clean} ({} bytes)", content.len()))
    }

    /// Deletes the file `path`; returns what to tell the model.
    pub fn delete(&mut self, path: &str) -> Result<String, String> {
        let (clean, at) = self.resolve(path)?;
        match std::fs::symlink_metadata(&at) {
            Err(_) => Err(format!("{clean:?} does not exist")),
            Ok(m) if m.is_dir() => Err(format!("{clean:?} is a directory; delete its files")),
            Ok(_) => {
                std::fs::remove_file(&at).map_err(|e| format!("{clean:?}: {e}"))?;
                self.applied += 1;
                Ok(format!("deleted {clean}"))
            }
        }
    }

    /// Runs one tool call and answers it (an unknown tool or bad arguments is an error result).
    pub fn apply(&mut self, call: &ToolCall) -> ToolResult {
        let arg = |k: &str| call.arguments.get(k).and_then(|v| v.as_str());
        let outcome = match (call.name.as_str(), arg("path"), arg("content")) {
            ("write_file", Some(path), Some(content)) => self.write(path, content),
            ("write_file", _, _) => Err("write_file needs string arguments `path` and `content`".into()),
            ("delete_file", Some(path), _) => self.delete(path),
            ("delete_file", None, _) => Err("delete_file needs a string argument `path`".into()),
            (other, _, _) => Err(format!(
                "unknown tool {other:?}: the tools are write_file and delete_file"
            )),
        };
        let is_error = outcome.is_err();
        ToolResult {
            call_id: call.id.clone(),
            content: outcome.unwrap_or_else(|e| format!("error: {e}")),
            is_error,
        }
    }

    /// Packs the directory as it is now into an artifact (not stored), within `cap` bytes.
    pub fn pack(&self, cap: u64) -> Result<Packed, ArtifactError> {
        let mut p = kiln_artifacts::pack_dir(self.dir.path(), cap)?;
        p.source = serde_json::json!({"generated": true});
        Ok(p)
    }
}

/// The files of a reply from a model without tools: each a line `File: PATH` followed by one
/// fenced block holding the whole file. Text outside such pairs is ignored.
pub fn file_blocks(text: &str) -> Vec<(String, String)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i].trim();
        let path = line
            .strip_prefix("File:")
            .or_else(|| line.strip_prefix("FILE:"))
            .map(|p| p.trim().trim_matches('`').to_string());
        i += 1;
        let Some(path) = path.filter(|p| !p.is_empty()) else {
            continue;
        };
        while i < lines.len() && lines[i].trim().is_empty() {
            i += 1;
        }
        let Some(open) = lines.get(i).map(|l| l.trim_start()) else {
            break;
        };
        let ticks = open.chars().take_while(|&c| c == '`' || c == '~').count();
        if ticks < 3 {
            continue;
        }
        let fence = &open[..ticks];
        i += 1;
        let mut body = Vec::new();
        let mut closed = false;
        while i < lines.len() {
            if lines[i].trim() == fence {
                closed = true;
                i += 1;
                break;
            }
            body.push(lines[i]);
            i += 1;
        }
        if closed {
            let mut content = body.join("\n");
            content.push('\n');
            out.push((path, content));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn dir() -> EditDir {
        let mut tree = Tree::default();
        tree.entries.insert(
            "a.py".into(),
            TreeEntry::File {
                data: b"x = 1\n".to_vec(),
                executable: false,
            },
        );
        tree.entries.insert(
            "out".into(),
            TreeEntry::Symlink {
                target: "/etc".into(),
            },
        );
        EditDir::from_tree(&tree, 100).unwrap()
    }

    fn call(name: &str, args: serde_json::Value) -> ToolCall {
        ToolCall {
            id: "c1".into(),
            name: name.into(),
            arguments: args,
        }
    }

    #[test]
    fn writes_and_deletes_inside_the_root_only() {
        let mut d = dir();
        let r = d.apply(&call(
            "write_file",
            json!({"path": "pkg/b.py", "content": "y = 2\n"}),
        ));
        assert!(!r.is_error, "{r:?}");
        assert_eq!(
            std::fs::read_to_string(d.root().join("pkg/b.py")).unwrap(),
            "y = 2\n"
        );
        let r = d.apply(&call("delete_file", json!({"path": "a.py"})));
        assert!(!r.is_error, "{r:?}");
        assert!(!d.root().join("a.py").exists());
        assert_eq!(d.applied, 2);
        for (args, says) in [
            (json!({"path": "/etc/passwd", "content": "x"}), "absolute"),
            (json!({"path": "../x", "content": "x"}), "relative"),
            (json!({"path": "pkg/../../x", "content": "x"}), "relative"),
            (json!({"path": "out/passwd", "content": "x"}), "symlink"),
            (json!({"path": "out", "content": "x"}), "symlink"),
            (json!({"path": "big", "content": "x".repeat(101)}), "cap"),
            (json!({"path": "a"}), "needs"),
        ] {
            let r = d.apply(&call("write_file", args.clone()));
            assert!(r.is_error && r.content.contains(says), "{args}: {r:?}");
        }
        let r = d.apply(&call("run_shell", json!({"cmd": "ls"})));
        assert!(r.is_error && r.content.contains("unknown tool"));
        let r = d.apply(&call("delete_file", json!({"path": "missing.py"})));
        assert!(r.is_error);
        assert_eq!(d.applied, 2);
        assert!(std::fs::symlink_metadata("/etc/passwd").is_ok());
    }

    #[test]
    fn packing_reads_back_the_edited_tree() {
        let mut d = dir();
        d.write("b.py", "print(1)\n").unwrap();
        let p = d.pack(1 << 20).unwrap();
        let tree = Tree::from_tar_gz(&p.data, 1 << 20).unwrap();
        assert!(tree.entries.contains_key("b.py") && tree.entries.contains_key("a.py"));
        assert!(matches!(tree.entries["out"], TreeEntry::Symlink { .. }));
    }

    #[test]
    fn file_blocks_take_path_lines_followed_by_one_fence() {
        let text = "Here is the fix.\n\nFile: calc.py\n```python\ndef add(a, b):\n    return a + b\n```\n\
                    Some prose.\nFile: `tests/test_x.py`\n\n````\nx = \"```\"\n````\nFile: broken.py\nno fence\n";
        let files = file_blocks(text);
        assert_eq!(
            files,
            vec![
                ("calc.py".into(), "def add(a, b):\n    return a + b\n".into()),
                ("tests/test_x.py".into(), "x = \"```\"\n".into()),
            ]
        );
    }
}
