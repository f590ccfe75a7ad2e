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
    /// The cases kept: at most [`MAX_CASES`] per report, failures and errors first (the
    /// counts above cover every case).
    pub cases: Vec<TestCase>,
    /// Cases counted but not kept in `cases`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cases_omitted: u32,
}

/// Most cases a report's result keeps (see [`TestResult::cases`]).
pub const MAX_CASES: usize = 2_000;
/// Longest case name kept, in bytes.
pub const MAX_CASE_NAME_BYTES: usize = 512;
/// Longest case message kept, in bytes.
pub const MAX_CASE_MESSAGE_BYTES: usize = 2048;

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl TestResult {
    /// Adds a case and counts it; its name and message are clipped, and past [`MAX_CASES`]
    /// passed and skipped cases give way to failures and errors.
    pub fn push(&mut self, name: impl Into<String>, status: TestStatus, message: Option<String>) {
        let count = match status {
            TestStatus::Passed => &mut self.passed,
            TestStatus::Failed => &mut self.failed,
            TestStatus::Skipped => &mut self.skipped,
            TestStatus::Error => &mut self.errors,
        };
        *count = count.saturating_add(1);
        self.cases.push(TestCase {
            name: crate::parse::clip(&name.into(), MAX_CASE_NAME_BYTES),
            status,
            message: message.map(|m| crate::parse::clip(&m, MAX_CASE_MESSAGE_BYTES)),
        });
        if self.cases.len() >= 2 * MAX_CASES {
            self.bound();
        }
    }

    /// Keeps at most [`MAX_CASES`] cases in their order: every failure and error first (up to
    /// the cap), then passed and skipped cases in the room left.
    pub fn bound(&mut self) {
        if self.cases.len() <= MAX_CASES {
            return;
        }
        let bad = |c: &TestCase| matches!(c.status, TestStatus::Failed | TestStatus::Error);
        let bad_total = self.cases.iter().filter(|c| bad(c)).count();
        let mut room_bad = bad_total.min(MAX_CASES);
        let mut room_good = MAX_CASES - room_bad;
        let before = self.cases.len();
        self.cases.retain(|c| {
            let room = if bad(c) { &mut room_bad } else { &mut room_good };
            let keep = *room > 0;
            *room = room.saturating_sub(1);
            keep
        });
        let dropped = u32::try_from(before - self.cases.len()).unwrap_or(u32::MAX);
        self.cases_omitted = self.cases_omitted.saturating_add(dropped);
    }

    /// Adds `other`'s cases and counts (coverage is merged by the caller, who has the weights).
    pub fn absorb(&mut self, other: TestResult) {
        self.passed = self.passed.saturating_add(other.passed);
        self.failed = self.failed.saturating_add(other.failed);
        self.skipped = self.skipped.saturating_add(other.skipped);
        self.errors = self.errors.saturating_add(other.errors);
        self.cases_omitted = self.cases_omitted.saturating_add(other.cases_omitted);
        self.cases.extend(other.cases);
        self.bound();
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
        let covered = self.covered.min(self.total);
        (self.total > 0).then(|| (covered as f64 * 10_000.0 / self.total as f64).round() / 100.0)
    }

    /// Adds `other`'s lines, saturating.
    pub fn add(&mut self, other: Coverage) {
        self.covered = self.covered.saturating_add(other.covered);
        self.total = self.total.saturating_add(other.total);
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
