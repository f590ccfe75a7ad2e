//! Linter reports: ruff's JSON, ESLint's JSON, `go vet -json`, and clippy's JSON messages.
//!
//! Severity: a syntax or parse error (the code does not even load) is `high`; rules that catch
//! likely bugs (pyflakes `F…`, ESLint errors, every `go vet` analyzer) are `medium`; style and
//! warnings are `low`. A compiler error in clippy's run is `high`, a warning `low`.

use std::collections::BTreeSet;

use super::{
    clip, json, json_lines, line, s, sized, too_many, Collector, ParseError, MAX_FIELD_BYTES,
    MAX_MESSAGE_BYTES, MAX_RECORDS,
};
use crate::result::{workspace_path, Finding, Findings, Severity};

/// ruff's `--output-format=json`.
pub fn ruff(report: &[u8], root: &str) -> Result<Findings, ParseError> {
    let v = json("ruff.json", report)?;
    let items = v
        .as_array()
        .ok_or_else(|| ParseError::new("ruff.json", "not an array"))?;
    let mut out = Collector::default();
    for f in items {
        let code = f.get("code").and_then(|c| c.as_str());
        let severity = match code {
            None => Severity::High,
            Some(c) if c.starts_with("E9") => Severity::High,
            Some(c) if c.starts_with('F') => Severity::Medium,
            Some(_) => Severity::Low,
        };
        out.add(Finding {
            tool: "ruff".into(),
            rule: code.map(str::to_string).unwrap_or_else(|| "syntax-error".into()),
            severity,
            file: workspace_path(s(f, "filename"), root),
            line: line(f.get("location").and_then(|l| l.get("row"))),
            message: s(f, "message").to_string(),
            in_test: false,
        });
    }
    Ok(out.finish("ruff"))
}

/// ESLint's `-f json`.
pub fn eslint(report: &[u8], root: &str) -> Result<Findings, ParseError> {
    let v = json("eslint.json", report)?;
    let files = v
        .as_array()
        .ok_or_else(|| ParseError::new("eslint.json", "not an array"))?;
    let mut out = Collector::default();
    for file in files {
        let path = workspace_path(s(file, "filePath"), root);
        for m in file
            .get("messages")
            .and_then(|m| m.as_array())
            .into_iter()
            .flatten()
        {
            let fatal = m.get("fatal").and_then(|f| f.as_bool()).unwrap_or(false);
            let rule = m.get("ruleId").and_then(|r| r.as_str());
            let severity = match (
                fatal || rule.is_none(),
                m.get("severity").and_then(|x| x.as_u64()),
            ) {
                (true, _) => Severity::High,
                (false, Some(2)) => Severity::Medium,
                _ => Severity::Low,
            };
            out.add(Finding {
                tool: "eslint".into(),
                rule: rule.unwrap_or("parse-error").to_string(),
                severity,
                file: path.clone(),
                line: line(m.get("line")),
                message: s(m, "message").to_string(),
                in_test: false,
            });
        }
    }
    Ok(out.finish("eslint"))
}

/// `go vet -json` (written on stderr): `# package` comment lines, then one JSON object per
/// package mapping analyzer names to diagnostics (`posn`, `message`) or to an `error`.
pub fn go_vet(report: &[u8], root: &str) -> Result<Findings, ParseError> {
    let text = String::from_utf8_lossy(sized("go vet -json", report)?);
    let body: String = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n");
    let mut out = Collector::default();
    for (n, doc) in serde_json::Deserializer::from_str(&body)
        .into_iter::<serde_json::Value>()
        .enumerate()
    {
        if n == MAX_RECORDS {
            return Err(too_many("go vet -json"));
        }
        let doc = doc.map_err(|e| ParseError::new("go vet -json", e))?;
        let Some(pkgs) = doc.as_object() else { continue };
        for analyzers in pkgs.values() {
            let Some(analyzers) = analyzers.as_object() else {
                continue;
            };
            for (analyzer, diags) in analyzers {
                if let Some(err) = diags.get("error") {
                    out.add(Finding {
                        tool: "go vet".into(),
                        rule: analyzer.clone(),
                        severity: Severity::High,
                        file: root.to_string(),
                        line: None,
                        message: err.as_str().unwrap_or_default().to_string(),
                        in_test: false,
                    });
                    continue;
                }
                for d in diags.as_array().into_iter().flatten() {
                    // posn is FILE:LINE:COL (FILE may contain ':' — split from the right).
                    let posn = s(d, "posn");
                    let mut it = posn.rsplitn(3, ':');
                    let (_col, ln, file) = (it.next(), it.next(), it.next());
                    let (file, ln) = match (file, ln.and_then(|l| l.parse::<u32>().ok())) {
                        (Some(f), Some(l)) => (f, Some(l)),
                        _ => (posn, None),
                    };
                    out.add(Finding {
                        tool: "go vet".into(),
                        rule: analyzer.clone(),
                        severity: Severity::Medium,
                        file: workspace_path(file, root),
                        line: ln,
                        message: s(d, "message").to_string(),
                        in_test: false,
                    });
                }
            }
        }
    }
    Ok(out.finish("go vet"))
}

/// `cargo clippy --message-format=json`: compiler messages with a primary span (summaries such
/// as "1 warning emitted" have none and are skipped); the same diagnostic reported for two
/// targets counts once.
pub fn clippy(report: &[u8], root: &str) -> Result<Findings, ParseError> {
    let mut out = Collector::default();
    let mut seen = BTreeSet::new();
    for v in json_lines("clippy", report)? {
        if s(&v, "reason") != "compiler-message" {
            continue;
        }
        let m = &v["message"];
        let severity = match s(m, "level") {
            "error" => Severity::High,
            "warning" => Severity::Low,
            _ => continue,
        };
        let Some(span) = m["spans"].as_array().and_then(|sp| {
            sp.iter()
                .find(|x| x.get("is_primary").and_then(|p| p.as_bool()) == Some(true))
        }) else {
            continue;
        };
        let rule = m
            .get("code")
            .and_then(|c| c.get("code"))
            .and_then(|c| c.as_str())
            .unwrap_or("rustc")
            .to_string();
        let f = Finding {
            tool: "clippy".into(),
            rule: clip(&rule, MAX_FIELD_BYTES),
            severity,
            file: clip(&workspace_path(s(span, "file_name"), root), MAX_FIELD_BYTES),
            line: line(span.get("line_start")),
            message: clip(s(m, "message"), MAX_MESSAGE_BYTES),
            in_test: false,
        };
        if seen.insert((f.file.clone(), f.line, f.rule.clone(), f.message.clone())) {
            out.add(f);
        }
    }
    Ok(out.finish("clippy"))
}

#[cfg(test)]
mod unit {
    use super::*;
    use crate::parse::testdata;

    #[test]
    fn ruff_json_from_the_python_image() {
        let f = ruff(&testdata("ruff.json"), "").unwrap();
        let got: Vec<(&str, Option<u32>, Severity)> = f
            .findings
            .iter()
            .map(|x| (x.rule.as_str(), x.line, x.severity))
            .collect();
        assert_eq!(
            got,
            [
                ("F401", Some(2), Severity::Medium),
                ("F401", Some(4), Severity::Medium),
                ("F541", Some(30), Severity::Medium)
            ]
        );
        assert_eq!(f.findings[0].file, "calc.py");
    }

    #[test]
    fn eslint_json_from_the_node_image() {
        let f = eslint(&testdata("eslint.json"), "").unwrap();
        let got: Vec<(&str, &str, Option<u32>)> = f
            .findings
            .iter()
            .map(|x| (x.file.as_str(), x.rule.as_str(), x.line))
            .collect();
        assert_eq!(
            got,
            [
                ("src/calc.js", "no-unused-vars", Some(4)),
                ("src/calc.js", "no-empty", Some(13)),
                ("src/calc.js", "no-undef", Some(27))
            ]
        );
    }

    #[test]
    fn go_vet_json_from_the_go_image() {
        let f = go_vet(&testdata("go-vet.json"), "").unwrap();
        let got: Vec<(&str, &str, Option<u32>)> = f
            .findings
            .iter()
            .map(|x| (x.file.as_str(), x.rule.as_str(), x.line))
            .collect();
        assert_eq!(
            got,
            [("calc.go", "printf", Some(26)), ("calc.go", "printf", Some(41))]
        );
    }

    #[test]
    fn clippy_json_from_the_rust_image() {
        let f = clippy(&testdata("clippy.jsonl"), "").unwrap();
        assert!(!f.findings.is_empty());
        assert!(f
            .findings
            .iter()
            .all(|x| x.file == "src/lib.rs" && x.line.is_some()));
        assert!(f
            .findings
            .iter()
            .any(|x| x.rule == "clippy::needless_return" && x.line == Some(7)));
    }
}
