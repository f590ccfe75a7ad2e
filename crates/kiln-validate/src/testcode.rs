//! Which findings are in test code: test files and directories by name (`test_*.py`,
//! `*_test.go`, `*.test.js`, `tests/`…), and in Rust files the items under `#[cfg(test)]` or a
//! test attribute. Such findings are marked `in_test` and weigh less in the quality score.

use kiln_sandbox::{Entry, Workspace};

use crate::result::Findings;

/// Directory names whose contents are test code or test data.
const TEST_DIRS: &[&str] = &["test", "tests", "__tests__", "testdata"];

/// True when `path` (workspace-relative) names a test file or lies in a test directory.
pub fn is_test_path(path: &str) -> bool {
    let mut parts: Vec<&str> = path.split('/').collect();
    let file = parts.pop().unwrap_or_default();
    if parts.iter().any(|d| TEST_DIRS.contains(d)) {
        return true;
    }
    let py = file
        .strip_suffix(".py")
        .is_some_and(|stem| stem.starts_with("test_") || stem.ends_with("_test") || stem == "conftest");
    let go = file.ends_with("_test.go");
    let js = [".test.", ".spec."].iter().any(|m| {
        file.rfind(m).is_some_and(|i| {
            matches!(
                &file[i + m.len()..],
                "js" | "mjs" | "cjs" | "jsx" | "ts" | "mts" | "cts" | "tsx"
            )
        })
    });
    py || go || js
}

/// The 1-based line ranges (inclusive) of a Rust source's test items: each item following a
/// `#[cfg(test)]`, `#[test]` or `#[…::test…]` attribute, from the attribute to the item's end.
pub fn rust_test_ranges(src: &str) -> Vec<(u32, u32)> {
    let code = Code::new(src);
    let mut ranges = Vec::new();
    let mut i = 0;
    while let Some(at) = code.find_attribute(i) {
        let (name_end, is_test) = code.attribute(at);
        if !is_test {
            i = name_end;
            continue;
        }
        // The item ends at its matching close brace, or at a `;` before any brace.
        let mut depth = 0usize;
        let mut end = None;
        let mut j = name_end;
        while let Some(k) = code.next_code(j) {
            match code.bytes[k] {
                b'{' => depth += 1,
                b'}' if depth > 0 => {
                    depth -= 1;
                    if depth == 0 {
                        end = Some(k);
                        break;
                    }
                }
                b';' if depth == 0 => {
                    end = Some(k);
                    break;
                }
                _ => {}
            }
            j = k + 1;
        }
        let end = end.unwrap_or(code.bytes.len().saturating_sub(1));
        ranges.push((code.line_of(at), code.line_of(end)));
        i = end + 1;
    }
    ranges
}

/// Marks every finding in test code, reading Rust sources from `ws`.
pub fn mark(findings: &mut Findings, ws: &Workspace) {
    let mut rust: std::collections::HashMap<String, Vec<(u32, u32)>> = Default::default();
    for f in &mut findings.findings {
        if is_test_path(&f.file) {
            f.in_test = true;
            continue;
        }
        let (Some(line), true) = (f.line, f.file.ends_with(".rs")) else {
            continue;
        };
        let ranges = rust
            .entry(f.file.clone())
            .or_insert_with(|| match ws.entries().get(&f.file) {
                Some(Entry::File { data, .. }) => rust_test_ranges(&String::from_utf8_lossy(data)),
                _ => Vec::new(),
            });
        f.in_test = ranges.iter().any(|&(a, b)| a <= line && line <= b);
    }
}

/// A Rust source with comments, strings and character literals told apart from code.
struct Code<'a> {
    bytes: &'a [u8],
    /// For each byte: true when it is code (not inside a comment or literal).
    is_code: Vec<bool>,
}

impl<'a> Code<'a> {
    fn new(src: &'a str) -> Self {
        let b = src.as_bytes();
        let mut is_code = vec![true; b.len()];
        let mut i = 0;
        while i < b.len() {
            let start = i;
            let end = match b[i] {
                b'/' if b.get(i + 1) == Some(&b'/') => {
                    b[i..].iter().position(|&c| c == b'\n').map_or(b.len(), |n| i + n)
                }
                b'/' if b.get(i + 1) == Some(&b'*') => block_comment_end(b, i),
                b'r' if raw_string_start(b, i).is_some() && (i == 0 || !ident(b[i - 1])) => {
                    let (hashes, open) = raw_string_start(b, i).unwrap_or((0, i));
                    let close: Vec<u8> = std::iter::once(b'"')
                        .chain(std::iter::repeat_n(b'#', hashes))
                        .collect();
                    b[open + 1..]
                        .windows(close.len())
                        .position(|w| w == close.as_slice())
                        .map_or(b.len(), |n| open + 1 + n + close.len())
                }
                b'"' => {
                    let mut j = i + 1;
                    while j < b.len() && b[j] != b'"' {
                        j += if b[j] == b'\\' { 2 } else { 1 };
                    }
                    (j + 1).min(b.len())
                }
                b'\'' if b.get(i + 1) == Some(&b'\\') => b[i + 2..]
                    .iter()
                    .position(|&c| c == b'\'')
                    .map_or(b.len(), |n| i + 3 + n),
                b'\'' if b.get(i + 2) == Some(&b'\'') => i + 3,
                _ => i + 1,
            };
            if end > start + 1 {
                is_code[start..end.min(b.len())]
                    .iter_mut()
                    .for_each(|c| *c = false);
            }
            i = end.max(start + 1);
        }
        Code { bytes: b, is_code }
    }

    /// The next code byte at or after `i` that is not whitespace.
    fn next_code(&self, mut i: usize) -> Option<usize> {
        while i < self.bytes.len() {
            if self.is_code[i] && !self.bytes[i].is_ascii_whitespace() {
                return Some(i);
            }
            i += 1;
        }
        None
    }

    /// The next `#[` in code at or after `i`.
    fn find_attribute(&self, mut i: usize) -> Option<usize> {
        while i + 1 < self.bytes.len() {
            if self.is_code[i] && self.bytes[i] == b'#' && self.bytes[i + 1] == b'[' {
                return Some(i);
            }
            i += 1;
        }
        None
    }

    /// The end of the attribute at `at` and whether it marks a test item.
    fn attribute(&self, at: usize) -> (usize, bool) {
        let mut depth = 0usize;
        let mut i = at + 1;
        while i < self.bytes.len() {
            if self.is_code[i] {
                match self.bytes[i] {
                    b'[' => depth += 1,
                    b']' => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    _ => {}
                }
            }
            i += 1;
        }
        let text: String = String::from_utf8_lossy(&self.bytes[at + 2..i.min(self.bytes.len())])
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        let is_test =
            text == "test" || text == "cfg(test)" || text.ends_with("::test") || text.contains("::test(");
        (i + 1, is_test)
    }

    fn line_of(&self, i: usize) -> u32 {
        let n = self.bytes[..i.min(self.bytes.len())]
            .iter()
            .filter(|&&c| c == b'\n')
            .count();
        u32::try_from(n + 1).unwrap_or(u32::MAX)
    }
}

fn ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// `r"`, `r#"`, `br##"`…: the number of hashes and the index of the opening quote.
fn raw_string_start(b: &[u8], i: usize) -> Option<(usize, usize)> {
    let mut j = i + 1;
    while b.get(j) == Some(&b'#') {
        j += 1;
    }
    (b.get(j) == Some(&b'"')).then_some((j - i - 1, j))
}

/// The end of the (nesting) block comment starting at `i`.
fn block_comment_end(b: &[u8], i: usize) -> usize {
    let mut depth = 0usize;
    let mut j = i;
    while j + 1 < b.len() {
        match (b[j], b[j + 1]) {
            (b'/', b'*') => {
                depth += 1;
                j += 2;
            }
            (b'*', b'/') => {
                depth -= 1;
                j += 2;
                if depth == 0 {
                    return j;
                }
            }
            _ => j += 1,
        }
    }
    b.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_files_and_directories_by_name() {
        for p in [
            "test_calc.py",
            "pkg/calc_test.py",
            "conftest.py",
            "svc/calc_test.go",
            "web/src/calc.test.js",
            "web/calc.spec.ts",
            "tests/integration.rs",
            "crate/tests/common/mod.rs",
            "web/__tests__/a.js",
            "go/testdata/key.pem",
        ] {
            assert!(is_test_path(p), "{p}");
        }
        for p in [
            "calc.py",
            "testing.py",
            "src/lib.rs",
            "contest.py",
            "latest/x.go",
            "a.test.json",
            "attest.js",
        ] {
            assert!(!is_test_path(p), "{p}");
        }
    }

    #[test]
    fn rust_test_modules_and_functions_span_their_items() {
        let src = r##"pub fn f() -> u8 {
    1
}

#[cfg(test)]
mod tests {
    const V: &str = "}}}{";
    // a } in a comment
    /* and { in /* a nested */ block */
    const C: char = '}';
    const R: &str = r#"}"#;
    fn g<'a>(x: &'a str) -> &'a str { x }
    #[test]
    fn t() {
        assert_eq!(super::f(), 1);
    }
}

pub fn after() {}

#[test]
fn loose() {
    let _ = "x";
}

#[cfg(test)]
use std::fmt;

#[derive(Debug)]
struct NotATest;
"##;
        assert_eq!(rust_test_ranges(src), [(5, 17), (21, 24), (26, 27)]);
    }

    #[test]
    fn async_runtime_test_attributes_count() {
        let src =
            "#[tokio::test(flavor = \"multi_thread\")]\nasync fn a() {\n}\n#[test_case(1)]\nfn b() {}\n";
        assert_eq!(rust_test_ranges(src), [(1, 3)]);
    }

    #[test]
    fn findings_are_marked_by_path_and_by_rust_test_module() {
        let mut ws = Workspace::new();
        ws.add_file(
            "src/lib.rs",
            "pub fn a() {}\n\n#[cfg(test)]\nmod tests {\n    const K: &str = \"deadbeef\";\n}\n",
        )
        .unwrap();
        let finding = |file: &str, line: u32| crate::result::Finding {
            tool: "detect-secrets".into(),
            rule: "Hex High Entropy String".into(),
            severity: crate::result::Severity::Medium,
            file: file.into(),
            line: Some(line),
            message: "m".into(),
            in_test: false,
        };
        let mut f = Findings {
            findings: vec![
                finding("src/lib.rs", 1),
                finding("src/lib.rs", 5),
                finding("tests/it.rs", 1),
            ],
        };
        mark(&mut f, &ws);
        let marks: Vec<bool> = f.findings.iter().map(|x| x.in_test).collect();
        assert_eq!(marks, [false, true, true]);
    }
}
