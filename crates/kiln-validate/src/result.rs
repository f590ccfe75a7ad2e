//! The result shapes shared by every language: test counts and cases, and findings.

use serde::{Deserialize, Serialize};

/// How one test case ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TestStatus {
    /// Passed.
    Passed,
    /// An assertion failed.
    Failed,
    /// Skipped or ignored.
    Skipped,
    /// Could not run to a verdict (collection/build error, crash, timeout).
    Error,
}

/// One test case.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TestCase {
    /// Its name as the tool reports it (`test_calc.py::test_add`, `tests::adds`…).
    pub name: String,
    /// How it ended.
    pub status: TestStatus,
    /// The failure, error or skip reason.
    pub message: Option<String>,
}

/// A `test` job's result.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TestResult {
    /// Cases that passed.
    pub passed: u32,
    /// Cases that failed.
    pub failed: u32,
    /// Cases skipped.
    pub skipped: u32,
    /// Cases (or whole runs) that errored.
    pub errors: u32,
    /// Line/statement coverage in percent, when the language's tools measure it.
    pub coverage_percent: Option<f64>,
    /// Every case.
    pub cases: Vec<TestCase>,
}

impl TestResult {
    /// Adds a case and counts it.
    pub fn push(&mut self, name: impl Into<String>, status: TestStatus, message: Option<String>) {
        match status {
            TestStatus::Passed => self.passed += 1,
            TestStatus::Failed => self.failed += 1,
            TestStatus::Skipped => self.skipped += 1,
            TestStatus::Error => self.errors += 1,
        }
        self.cases.push(TestCase {
            name: name.into(),
            status,
            message,
        });
    }

    /// Adds `other`'s cases and counts (coverage is merged by the caller, who has the weights).
    pub fn absorb(&mut self, other: TestResult) {
        self.passed += other.passed;
        self.failed += other.failed;
        self.skipped += other.skipped;
        self.errors += other.errors;
        self.cases.extend(other.cases);
    }
}

/// Lines (or statements) covered out of a total: what coverage percentages are made of.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Coverage {
    /// Covered.
    pub covered: u64,
    /// Measured in all.
    pub total: u64,
}

impl Coverage {
    /// Percent, rounded to two decimals; None when nothing was measured.
    pub fn percent(self) -> Option<f64> {
        (self.total > 0).then(|| (self.covered as f64 * 10_000.0 / self.total as f64).round() / 100.0)
    }
}

/// How serious a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Informational.
    Info,
    /// Low.
    Low,
    /// Medium.
    Medium,
    /// High.
    High,
    /// Critical.
    Critical,
}

/// One problem found by a linter or scanner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// The tool (`ruff`, `eslint`, `go vet`, `clippy`, `bandit`, `detect-secrets`, `semgrep`).
    pub tool: String,
    /// The tool's rule id (`F401`, `no-unused-vars`, `printf`, `clippy::needless_return`…).
    pub rule: String,
    /// Normalised severity.
    pub severity: Severity,
    /// Path relative to the workspace root.
    pub file: String,
    /// 1-based line, when the tool gives one.
    pub line: Option<u32>,
    /// What the tool says.
    pub message: String,
    /// True when the finding is in test code (see [`crate::testcode`]); it weighs less in the
    /// quality score, never in the verdict.
    #[serde(default)]
    pub in_test: bool,
}

/// A `lint` or `security-scan` job's result.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Findings {
    /// Every finding, sorted by file, line, tool and rule.
    pub findings: Vec<Finding>,
}

impl Findings {
    /// Sorts the findings into their stable order.
    pub fn sort(&mut self) {
        self.findings.sort_by(|a, b| {
            (&a.file, a.line, &a.tool, &a.rule, &a.message)
                .cmp(&(&b.file, b.line, &b.tool, &b.rule, &b.message))
        });
    }

    /// How many findings have `severity`.
    pub fn count(&self, severity: Severity) -> usize {
        self.findings.iter().filter(|f| f.severity == severity).count()
    }
}

/// A path as the workspace sees it: `/work/` prefixes and `./` removed; relative paths are
/// taken relative to the project `root`.
pub fn workspace_path(path: &str, root: &str) -> String {
    if let Some(rest) = path.strip_prefix("/work/") {
        return rest.to_string();
    }
    let rel = path.trim_start_matches("./");
    if root.is_empty() {
        rel.to_string()
    } else {
        format!("{root}/{rel}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coverage_rounds_to_two_decimals() {
        assert_eq!(Coverage { covered: 4, total: 9 }.percent(), Some(44.44));
        assert_eq!(Coverage::default().percent(), None);
    }

    #[test]
    fn paths_are_workspace_relative() {
        assert_eq!(workspace_path("/work/py/calc.py", "py"), "py/calc.py");
        assert_eq!(workspace_path("./calc.py", "py"), "py/calc.py");
        assert_eq!(workspace_path("calc.py", ""), "calc.py");
    }

    #[test]
    fn severities_serialise_lowercase() {
        assert_eq!(
            serde_json::to_string(&Severity::Critical).unwrap(),
            "\"critical\""
        );
    }
}
