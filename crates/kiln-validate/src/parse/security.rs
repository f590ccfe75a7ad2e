//! Security scanner reports: bandit's JSON, detect-secrets' baseline JSON, semgrep's JSON.
//!
//! Severity (the policy is in docs/validation.md): bandit's own (HIGH/MEDIUM/LOW); a secret
//! matched by a key pattern or keyword detector is `high`, one found only by an entropy
//! heuristic ([`ENTROPY_DETECTORS`]) `medium`; semgrep rules carry `metadata.kiln_severity`,
//! else ERROR → `high`, WARNING → `medium`, INFO → `low`.

use super::{json, line, s, Collector, ParseError};
use crate::result::{workspace_path, Finding, Findings, Severity};

/// bandit's `-f json` (run from the workspace top, so paths are workspace-relative).
pub fn bandit(report: &[u8]) -> Result<Findings, ParseError> {
    let v = json("bandit.json", report)?;
    let mut out = Collector::default();
    for r in v.get("results").and_then(|r| r.as_array()).into_iter().flatten() {
        let severity = match s(r, "issue_severity") {
            "HIGH" => Severity::High,
            "MEDIUM" => Severity::Medium,
            "LOW" => Severity::Low,
            _ => Severity::Info,
        };
        out.add(Finding {
            tool: "bandit".into(),
            rule: s(r, "test_id").to_string(),
            severity,
            file: workspace_path(s(r, "filename"), ""),
            line: line(r.get("line_number")),
            message: s(r, "issue_text").to_string(),
            in_test: false,
        });
    }
    Ok(out.finish("bandit"))
}

/// detect-secrets' detectors that flag a string for its randomness alone: hashes, test
/// vectors and ids match them as readily as keys do, so they are never `high`.
pub const ENTROPY_DETECTORS: &[&str] = &["Base64 High Entropy String", "Hex High Entropy String"];

/// The severity of a detect-secrets finding of detector `kind`.
pub fn secret_severity(kind: &str) -> Severity {
    if ENTROPY_DETECTORS.contains(&kind) {
        Severity::Medium
    } else {
        Severity::High
    }
}

/// detect-secrets' `scan` output (a baseline): `results` maps files to detected secrets.
pub fn detect_secrets(report: &[u8]) -> Result<Findings, ParseError> {
    let v = json("detect-secrets", report)?;
    let results = v
        .get("results")
        .and_then(|r| r.as_object())
        .ok_or_else(|| ParseError::new("detect-secrets", "no `results` object"))?;
    let mut out = Collector::default();
    for (file, secrets) in results {
        for sec in secrets.as_array().into_iter().flatten() {
            out.add(Finding {
                tool: "detect-secrets".into(),
                rule: s(sec, "type").to_string(),
                severity: secret_severity(s(sec, "type")),
                file: workspace_path(file, ""),
                line: line(sec.get("line_number")),
                message: format!("possible hard-coded secret: {}", s(sec, "type")),
                in_test: false,
            });
        }
    }
    Ok(out.finish("detect-secrets"))
}

/// semgrep's `--json`: rule ids are cut to their `kiln.` part (semgrep prefixes the config
/// file's path).
pub fn semgrep(report: &[u8]) -> Result<Findings, ParseError> {
    let v = json("semgrep.json", report)?;
    let mut out = Collector::default();
    for r in v.get("results").and_then(|r| r.as_array()).into_iter().flatten() {
        let id = s(r, "check_id");
        let rule = id.find("kiln.").map(|i| &id[i..]).unwrap_or(id).to_string();
        let extra = &r["extra"];
        let severity = match extra["metadata"]["kiln_severity"].as_str() {
            Some("critical") => Severity::Critical,
            Some("high") => Severity::High,
            Some("medium") => Severity::Medium,
            Some("low") => Severity::Low,
            Some("info") => Severity::Info,
            _ => match s(extra, "severity") {
                "ERROR" => Severity::High,
                "WARNING" => Severity::Medium,
                "INFO" => Severity::Low,
                _ => Severity::Info,
            },
        };
        out.add(Finding {
            tool: "semgrep".into(),
            rule,
            severity,
            file: workspace_path(s(r, "path"), ""),
            line: line(r.get("start").and_then(|st| st.get("line"))),
            message: s(extra, "message").to_string(),
            in_test: false,
        });
    }
    Ok(out.finish("semgrep"))
}

#[cfg(test)]
mod unit {
    use super::*;
    use crate::parse::testdata;

    #[test]
    fn bandit_json_from_the_python_image() {
        let f = bandit(&testdata("bandit.json")).unwrap();
        assert_eq!(f.findings.len(), 10);
        let b602 = f.findings.iter().find(|x| x.rule == "B602").unwrap();
        assert_eq!(
            (b602.file.as_str(), b602.line, b602.severity),
            ("calc.py", Some(26), Severity::High)
        );
        assert_eq!(f.count(Severity::Medium), 1);
    }

    #[test]
    fn detect_secrets_from_the_python_image() {
        let f = detect_secrets(&testdata("secrets.json")).unwrap();
        assert_eq!(f.findings.len(), 1);
        assert_eq!(f.findings[0].rule, "AWS Access Key");
        assert_eq!(
            (f.findings[0].file.as_str(), f.findings[0].line),
            ("calc.py", Some(6))
        );
    }

    #[test]
    fn an_entropy_match_alone_is_not_high_a_key_pattern_is() {
        let report = br#"{"results": {"src/lib.rs": [
            {"type": "Hex High Entropy String", "line_number": 40},
            {"type": "Base64 High Entropy String", "line_number": 41},
            {"type": "Secret Keyword", "line_number": 42},
            {"type": "Private Key", "line_number": 43},
            {"type": "AWS Access Key", "line_number": 44}]}}"#;
        let f = detect_secrets(report).unwrap();
        let got: Vec<(&str, Severity)> = f.findings.iter().map(|x| (x.rule.as_str(), x.severity)).collect();
        assert_eq!(
            got,
            [
                ("Hex High Entropy String", Severity::Medium),
                ("Base64 High Entropy String", Severity::Medium),
                ("Secret Keyword", Severity::High),
                ("Private Key", Severity::High),
                ("AWS Access Key", Severity::High),
            ]
        );
    }

    #[test]
    fn semgrep_json_from_the_python_image() {
        let f = semgrep(&testdata("semgrep.json")).unwrap();
        let got: Vec<(&str, Option<u32>)> = f.findings.iter().map(|x| (x.rule.as_str(), x.line)).collect();
        assert_eq!(
            got,
            [
                ("kiln.python.eval", Some(22)),
                ("kiln.python.shell-injection", Some(26))
            ]
        );
        assert!(f.findings.iter().all(|x| x.severity == Severity::High));
    }
}
