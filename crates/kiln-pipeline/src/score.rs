//! The verdict and the quality score of a validation pipeline, exactly as the issue defines
//! them.

use kiln_validate::{Finding, Findings, Severity, TestResult};
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

/// How much a finding counts in the score: 1, or ½ when it is in test code.
fn weight(f: &Finding) -> f64 {
    if f.in_test {
        0.5
    } else {
        1.0
    }
}

/// Start at 10; coverage < 50 % −2, < 80 % −1 (unmeasured coverage costs nothing); lint
/// findings > 5 −2, > 0 −1; −min(2 × high-or-critical security findings, 3);
/// −min(0.5 × medium ones, 1); rounded half up, clamped to 1..=10. A finding in test code
/// counts half in each of these sums.
pub fn quality_score(test: &TestResult, lint: &Findings, security: &Findings) -> u8 {
    let mut s = 10.0f64;
    match test.coverage_percent {
        Some(c) if c < 50.0 => s -= 2.0,
        Some(c) if c < 80.0 => s -= 1.0,
        _ => {}
    }
    let n: f64 = lint.findings.iter().map(weight).sum();
    if n > 5.0 {
        s -= 2.0;
    } else if n > 0.0 {
        s -= 1.0;
    }
    let weighed = |keep: fn(Severity) -> bool| -> f64 {
        security
            .findings
            .iter()
            .filter(|f| keep(f.severity))
            .map(weight)
            .sum()
    };
    let hc = weighed(|s| s >= Severity::High);
    s -= (2.0 * hc).min(3.0);
    let med = weighed(|s| s == Severity::Medium);
    s -= (0.5 * med).min(1.0);
    (s + 0.5).floor().clamp(1.0, 10.0) as u8
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_validate::TestStatus;

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
                    in_test: false,
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

    fn in_tests(mut f: Findings) -> Findings {
        f.findings.iter_mut().for_each(|x| x.in_test = true);
        f
    }

    #[test]
    fn findings_in_test_code_weigh_half_and_still_decide_the_verdict() {
        let t = tests(Some(90.0), false);
        let none = findings(&[]);
        // One high outside tests costs 2, in tests 1.
        assert_eq!(quality_score(&t, &none, &findings(&[Severity::High])), 8);
        assert_eq!(
            quality_score(&t, &none, &in_tests(findings(&[Severity::High]))),
            9
        );
        // Two mediums: 1 outside tests, 0.5 in tests (9.5 rounds half up).
        assert_eq!(quality_score(&t, &none, &findings(&[Severity::Medium; 2])), 9);
        assert_eq!(
            quality_score(&t, &none, &in_tests(findings(&[Severity::Medium; 2]))),
            10
        );
        // Six lint findings in tests weigh 3: the "> 0" step, not the "> 5" one.
        assert_eq!(quality_score(&t, &findings(&[Severity::Low; 6]), &none), 8);
        assert_eq!(
            quality_score(&t, &in_tests(findings(&[Severity::Low; 6])), &none),
            9
        );
        // The verdict rule is unchanged: a high finding fails wherever it is.
        assert_eq!(
            verdict(&t, &none, &in_tests(findings(&[Severity::High]))),
            Verdict::Failed
        );
    }
}
