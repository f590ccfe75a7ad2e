//! The verdict and the quality score of a validation pipeline, exactly as the issue defines
//! them.

use kiln_validate::{Findings, Severity, TestResult};
use serde::{Deserialize, Serialize};

/// How a pipeline ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// No test failed or errored and no finding is high or critical.
    Passed,
    /// A test failed or errored, or a finding is high or critical.
    Failed,
    /// A job could not run its tools (failed or cancelled): no verdict on the code.
    Error,
}

impl Verdict {
    /// The name stored and printed.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Passed => "passed",
            Verdict::Failed => "failed",
            Verdict::Error => "error",
        }
    }
}

fn serious(f: &Findings) -> bool {
    f.findings.iter().any(|x| x.severity >= Severity::High)
}

/// `passed` only if no test failed or errored and no finding (lint or security) is high or
/// critical.
pub fn verdict(test: &TestResult, lint: &Findings, security: &Findings) -> Verdict {
    if test.failed == 0 && test.errors == 0 && !serious(lint) && !serious(security) {
        Verdict::Passed
    } else {
        Verdict::Failed
    }
}

/// Start at 10; coverage < 50 % −2, < 80 % −1 (unmeasured coverage costs nothing); lint
/// findings > 5 −2, > 0 −1; −min(2 × high-or-critical security findings, 3);
/// −min(0.5 × medium ones, 1); rounded half up, clamped to 1..=10.
pub fn quality_score(test: &TestResult, lint: &Findings, security: &Findings) -> u8 {
    let mut s = 10.0f64;
    match test.coverage_percent {
        Some(c) if c < 50.0 => s -= 2.0,
        Some(c) if c < 80.0 => s -= 1.0,
        _ => {}
    }
    let n = lint.findings.len();
    if n > 5 {
        s -= 2.0;
    } else if n > 0 {
        s -= 1.0;
    }
    let hc = security
        .findings
        .iter()
        .filter(|f| f.severity >= Severity::High)
        .count() as f64;
    s -= (2.0 * hc).min(3.0);
    let med = security.count(Severity::Medium) as f64;
    s -= (0.5 * med).min(1.0);
    (s + 0.5).floor().clamp(1.0, 10.0) as u8
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_validate::{Finding, TestStatus};

    fn findings(sev: &[Severity]) -> Findings {
        Findings {
            findings: sev
                .iter()
                .map(|&severity| Finding {
                    tool: "t".into(),
                    rule: "r".into(),
                    severity,
                    file: "f".into(),
                    line: Some(1),
                    message: "m".into(),
                })
                .collect(),
        }
    }

    fn tests(cov: Option<f64>, failed: bool) -> TestResult {
        let mut t = TestResult::default();
        t.push("a", TestStatus::Passed, None);
        if failed {
            t.push("b", TestStatus::Failed, Some("x".into()));
        }
        t.coverage_percent = cov;
        t
    }

    #[test]
    fn a_clean_workspace_scores_ten_and_passes() {
        let (t, l, s) = (tests(Some(95.0), false), findings(&[]), findings(&[]));
        assert_eq!(quality_score(&t, &l, &s), 10);
        assert_eq!(verdict(&t, &l, &s), Verdict::Passed);
    }

    #[test]
    fn each_rule_of_the_formula() {
        let none = findings(&[]);
        assert_eq!(quality_score(&tests(Some(49.9), false), &none, &none), 8);
        assert_eq!(quality_score(&tests(Some(50.0), false), &none, &none), 9);
        assert_eq!(quality_score(&tests(Some(80.0), false), &none, &none), 10);
        assert_eq!(quality_score(&tests(None, false), &none, &none), 10);
        let t = tests(Some(90.0), false);
        assert_eq!(quality_score(&t, &findings(&[Severity::Low; 5]), &none), 9);
        assert_eq!(quality_score(&t, &findings(&[Severity::Low; 6]), &none), 8);
        assert_eq!(quality_score(&t, &none, &findings(&[Severity::High])), 8);
        assert_eq!(
            quality_score(&t, &none, &findings(&[Severity::Critical, Severity::High])),
            7
        );
        // one medium: 9.5 rounds half up to 10; three mediums: capped at −1.
        assert_eq!(quality_score(&t, &none, &findings(&[Severity::Medium])), 10);
        assert_eq!(quality_score(&t, &none, &findings(&[Severity::Medium; 3])), 9);
        // low and info security findings cost nothing.
        assert_eq!(
            quality_score(&t, &none, &findings(&[Severity::Low, Severity::Info])),
            10
        );
    }

    #[test]
    fn the_score_never_leaves_one_to_ten() {
        let t = tests(Some(10.0), true);
        let worst = findings(
            &[Severity::Critical; 4]
                .iter()
                .chain(&[Severity::Medium; 4])
                .copied()
                .collect::<Vec<_>>(),
        );
        // 10 − 2 − 2 − 3 − 1 = 2.
        assert_eq!(quality_score(&t, &findings(&[Severity::Low; 9]), &worst), 2);
        assert_eq!(verdict(&t, &findings(&[]), &findings(&[])), Verdict::Failed);
    }

    #[test]
    fn a_high_lint_finding_fails_the_verdict() {
        let t = tests(Some(90.0), false);
        assert_eq!(
            verdict(&t, &findings(&[Severity::High]), &findings(&[])),
            Verdict::Failed
        );
        assert_eq!(
            verdict(&t, &findings(&[Severity::Medium]), &findings(&[Severity::Medium])),
            Verdict::Passed
        );
    }
}
