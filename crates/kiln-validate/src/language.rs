//! Which languages a workspace holds, and where each one's project root is.

use kiln_artifacts::Tree;
use serde::Serialize;

pub use kiln_kinds::Language;

/// One language's project in the workspace: the tools run in `root` (`""` is the top).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Project {
    /// The language.
    pub language: Language,
    /// Directory relative to the workspace root, without trailing slash; `""` for the top.
    pub root: String,
}

/// Directories never searched: dependencies, build output, VCS data, Kiln's scratch.
const SKIP: &[&str] = &[
    "node_modules",
    "target",
    "vendor",
    ".git",
    "venv",
    ".venv",
    "__pycache__",
    "dist",
    "build",
    crate::tools::SCRATCH,
];

fn marker(language: Language, file: &str) -> bool {
    match language {
        Language::Python => file == "pyproject.toml" || file == "setup.py",
        Language::Javascript => file == "package.json",
        Language::Go => file == "go.mod",
        Language::Rust => file == "Cargo.toml",
    }
}

/// Finds each language's project: the shallowest directory holding its marker file
/// (`pyproject.toml`/`setup.py`, `package.json`, `go.mod`, `Cargo.toml`); Python is also
/// recognised by `*.py` files alone (root: the top). One project per language.
pub fn detect(tree: &Tree) -> Vec<Project> {
    let mut found: Vec<Project> = Vec::new();
    let mut any_py = false;
    for path in tree.entries.keys() {
        let parts: Vec<&str> = path.split('/').collect();
        if parts[..parts.len() - 1].iter().any(|d| SKIP.contains(d)) {
            continue;
        }
        let (dir, file) = match path.rsplit_once('/') {
            Some((d, f)) => (d, f),
            None => ("", path.as_str()),
        };
        any_py |= file.ends_with(".py");
        for lang in Language::ALL {
            if !marker(lang, file) {
                continue;
            }
            let depth = |r: &str| if r.is_empty() { 0 } else { r.split('/').count() };
            match found.iter_mut().find(|p| p.language == lang) {
                Some(p) if depth(dir) < depth(&p.root) => p.root = dir.to_string(),
                Some(_) => {}
                None => found.push(Project {
                    language: lang,
                    root: dir.to_string(),
                }),
            }
        }
    }
    if any_py && !found.iter().any(|p| p.language == Language::Python) {
        found.push(Project {
            language: Language::Python,
            root: String::new(),
        });
    }
    found.sort_by_key(|p| p.language);
    found
}

/// The projects to run: those detected, restricted to `wanted` when it is not empty. A named
/// language without a marker runs at the top of the workspace.
pub fn select(tree: &Tree, wanted: &[Language]) -> Vec<Project> {
    let detected = detect(tree);
    if wanted.is_empty() {
        return detected;
    }
    wanted
        .iter()
        .map(|&l| {
            detected
                .iter()
                .find(|p| p.language == l)
                .cloned()
                .unwrap_or(Project {
                    language: l,
                    root: String::new(),
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_artifacts::TreeEntry;

    fn tree(paths: &[&str]) -> Tree {
        let mut t = Tree::default();
        for p in paths {
            t.entries.insert(
                p.to_string(),
                TreeEntry::File {
                    data: Vec::new(),
                    executable: false,
                },
            );
        }
        t
    }

    #[test]
    fn detects_each_language_at_its_root() {
        let t = tree(&[
            "app/pyproject.toml",
            "app/x.py",
            "web/package.json",
            "web/node_modules/a/package.json",
            "svc/go.mod",
            "Cargo.toml",
        ]);
        let got: Vec<(Language, String)> = detect(&t).into_iter().map(|p| (p.language, p.root)).collect();
        assert_eq!(
            got,
            vec![
                (Language::Python, "app".into()),
                (Language::Javascript, "web".into()),
                (Language::Go, "svc".into()),
                (Language::Rust, "".into()),
            ]
        );
    }

    #[test]
    fn loose_python_files_are_python_and_nothing_is_nothing() {
        assert_eq!(detect(&tree(&["scripts/a.py"]))[0].language, Language::Python);
        assert!(detect(&tree(&["README.md", "data.csv"])).is_empty());
    }

    #[test]
    fn names_parse() {
        assert_eq!("node".parse::<Language>().unwrap(), Language::Javascript);
        assert!("cobol".parse::<Language>().unwrap_err().contains("cobol"));
    }
}
