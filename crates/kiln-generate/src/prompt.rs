//! What the model is told: the system prompt, the first message (the request and the
//! workspace within a context budget; the rest listed by path and size) and, from the second
//! iteration on, the feedback of the previous iteration's validation.

use std::fmt::Write;

use kiln_artifacts::{Tree, TreeEntry};
use serde_json::Value;

/// The system prompt of every call.
pub const SYSTEM: &str = "You are a careful software engineer editing a workspace of files. \
Change files only with the tools: write_file (path, whole new content) and delete_file (path). \
Paths are relative to the workspace root. Keep calling tools until the work is complete, then \
reply with a short summary and no tool call. If tools are not available to you, give every file \
you change as a line `File: PATH` followed by one fenced code block holding the whole file.";

/// Most failing tests, and findings of each kind, listed in feedback.
const MAX_LISTED: usize = 50;
/// Longest message of one test or finding kept in feedback.
const MAX_MESSAGE: usize = 1_000;

fn fence_for(text: &str) -> String {
    let longest = text.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    "`".repeat((longest + 1).max(3))
}

fn cut(s: &str, n: usize) -> &str {
    if s.len() <= n {
        return s;
    }
    let mut end = n;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The request and the workspace: text files in path order while they fit in `budget` bytes,
/// then every other entry by path and size.
pub fn first_message(prompt: &str, tree: &Tree, budget: usize) -> String {
    let mut out = format!("{prompt}\n\n");
    if tree.entries.is_empty() {
        out.push_str("The workspace is empty.\n");
        return out;
    }
    out.push_str("The workspace:\n\n");
    let mut used = 0usize;
    let mut listed = Vec::new();
    for (path, entry) in &tree.entries {
        match entry {
            TreeEntry::File { data, .. } => match std::str::from_utf8(data) {
                Ok(text) if !data.contains(&0) && used + data.len() <= budget => {
                    used += data.len();
                    let fence = fence_for(text);
                    let nl = if text.ends_with('\n') || text.is_empty() {
                        ""
                    } else {
                        "\n"
                    };
                    let _ = write!(out, "File: {path}\n{fence}\n{text}{nl}{fence}\n\n");
                }
                _ => listed.push(format!("- {path} ({} bytes)", data.len())),
            },
            TreeEntry::Symlink { target } => listed.push(format!("- {path} (symlink to {target})")),
        }
    }
    if !listed.is_empty() {
        out.push_str("Not shown (binary or over the context budget), by path and size:\n");
        out.push_str(&listed.join("\n"));
        out.push('\n');
    }
    out
}

fn findings(out: &mut String, title: &str, v: &Value) {
    let list = v
        .get("findings")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if list.is_empty() {
        return;
    }
    let _ = writeln!(out, "{title} ({}):", list.len());
    for f in list.iter().take(MAX_LISTED) {
        let s = |k: &str| f.get(k).and_then(Value::as_str).unwrap_or("");
        let line = f
            .get("line")
            .and_then(Value::as_u64)
            .map(|l| format!(":{l}"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "- {}{line} {} {} [{}]",
            s("file"),
            s("rule"),
            cut(s("message"), MAX_MESSAGE),
            s("severity")
        );
    }
    if list.len() > MAX_LISTED {
        let _ = writeln!(out, "- … and {} more", list.len() - MAX_LISTED);
    }
}

/// The feedback of iteration `previous`: its verdict, the failing tests by name and message,
/// the lint and security findings as `file:line rule message`, validation errors, and the
/// diff so far (unified, from the start, cut at `diff_budget` bytes).
pub fn feedback(
    previous: u32,
    verdict: &str,
    score: Option<i16>,
    validation: &Value,
    diff_so_far: &str,
    diff_budget: usize,
) -> String {
    let mut out = format!(
        "Iteration {previous} did not pass validation (verdict: {verdict}{}).\n\n",
        score
            .map(|s| format!(", quality score {s}/10"))
            .unwrap_or_default()
    );
    if let Some(test) = validation.get("test").filter(|t| !t.is_null()) {
        let cases = test
            .get("cases")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let failing: Vec<&Value> = cases
            .iter()
            .filter(|c| matches!(c.get("status").and_then(Value::as_str), Some("failed" | "error")))
            .collect();
        let n = |k: &str| test.get(k).and_then(Value::as_u64).unwrap_or(0);
        let _ = writeln!(
            out,
            "Tests: {} passed, {} failed, {} errors.",
            n("passed"),
            n("failed"),
            n("errors")
        );
        if !failing.is_empty() {
            out.push_str("Failing tests:\n");
            for c in failing.iter().take(MAX_LISTED) {
                let s = |k: &str| c.get(k).and_then(Value::as_str).unwrap_or("");
                let _ = writeln!(out, "- {}: {}", s("name"), cut(s("message"), MAX_MESSAGE));
            }
        }
        out.push('\n');
    }
    if let Some(lint) = validation.get("lint") {
        findings(&mut out, "Lint findings", lint);
    }
    if let Some(sec) = validation.get("security") {
        findings(&mut out, "Security findings", sec);
    }
    if let Some(errors) = validation.get("errors").and_then(Value::as_object) {
        out.push_str("Validation could not run everything:\n");
        for (k, v) in errors {
            let _ = writeln!(out, "- {k}: {}", cut(v.as_str().unwrap_or(""), MAX_MESSAGE));
        }
    }
    if !diff_so_far.is_empty() {
        let diff = cut(diff_so_far, diff_budget);
        let fence = fence_for(diff);
        let _ = write!(out, "\nThe diff so far (from the start):\n{fence}diff\n{diff}");
        if diff.len() < diff_so_far.len() {
            out.push_str("\n# (diff cut)");
        }
        let _ = writeln!(out, "\n{fence}");
    }
    out.push_str("\nFix the code so that every test passes and the findings are resolved.\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn first_message_shows_files_within_the_budget_and_lists_the_rest() {
        let mut tree = Tree::default();
        for (p, d) in [("a.py", "x = 1\n"), ("b.py", "y = '```'\n"), ("c.bin", "\0\0")] {
            tree.entries.insert(
                p.into(),
                TreeEntry::File {
                    data: d.as_bytes().to_vec(),
                    executable: false,
                },
            );
        }
        let m = first_message("Add tests", &tree, 6);
        assert!(m.starts_with("Add tests\n"));
        assert!(m.contains("File: a.py\n```\nx = 1\n```\n"), "{m}");
        assert!(
            m.contains("- b.py (10 bytes)") && m.contains("- c.bin (2 bytes)"),
            "{m}"
        );
        let m = first_message("Add tests", &tree, 100);
        assert!(m.contains("File: b.py\n````\ny = '```'\n````"), "{m}");
        assert!(first_message("x", &Tree::default(), 10).contains("The workspace is empty."));
    }

    #[test]
    fn feedback_names_failing_tests_findings_and_the_diff() {
        let v = json!({
            "test": {"passed": 1, "failed": 1, "errors": 0, "cases": [
                {"name": "test_add", "status": "passed"},
                {"name": "test_div", "status": "failed", "message": "ZeroDivisionError: division by zero"}]},
            "lint": {"findings": [{"tool": "ruff", "rule": "E711", "severity": "low", "file": "calc.py",
                                   "line": 3, "message": "comparison to None"}]},
            "security": {"findings": []}
        });
        let f = feedback(1, "failed", Some(7), &v, "--- a/calc.py\n+++ b/calc.py\n", 1000);
        assert!(f.contains("Iteration 1 did not pass validation (verdict: failed, quality score 7/10)"));
        assert!(
            f.contains("- test_div: ZeroDivisionError: division by zero"),
            "{f}"
        );
        assert!(!f.contains("- test_add"));
        assert!(f.contains("- calc.py:3 E711 comparison to None [low]"), "{f}");
        assert!(!f.contains("Security findings"));
        assert!(f.contains("```diff\n--- a/calc.py"), "{f}");
    }
}
