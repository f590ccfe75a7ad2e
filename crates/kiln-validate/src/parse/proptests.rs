//! Every parser over hostile input: arbitrary bytes and arbitrary JSON never panic, and what
//! comes out is bounded whatever the report asks for.

use proptest::prelude::*;
use serde_json::{json, Value};

use super::{lint, security, tests, MAX_FINDINGS, MAX_MESSAGE_BYTES, MAX_REPORT_BYTES};
use crate::result::{Findings, Severity, TestResult, TestStatus, MAX_CASES, MAX_CASE_NAME_BYTES};

/// A test result is bounded and its counts agree with its cases.
fn bounded_tests(r: &TestResult) {
    assert!(r.cases.len() <= MAX_CASES, "{} cases", r.cases.len());
    let counted = r.passed as u64 + r.failed as u64 + r.skipped as u64 + r.errors as u64;
    assert_eq!(counted, r.cases.len() as u64 + r.cases_omitted as u64);
    for c in &r.cases {
        assert!(c.name.len() <= MAX_CASE_NAME_BYTES);
        assert!(c.message.as_ref().is_none_or(|m| m.len() <= MAX_MESSAGE_BYTES));
    }
}

/// Findings are bounded.
fn bounded_findings(f: &Findings) {
    assert!(
        f.findings.len() <= MAX_FINDINGS + 1,
        "{} findings",
        f.findings.len()
    );
    assert!(f.findings.iter().all(|x| x.message.len() <= MAX_MESSAGE_BYTES));
}

/// Runs every parser on `bytes`; none may panic and each result must be bounded.
fn all_parsers(bytes: &[u8]) {
    for r in [
        tests::junit(bytes, "p"),
        tests::go_test(bytes),
        tests::cargo_test(bytes, "p"),
    ]
    .into_iter()
    .flatten()
    {
        bounded_tests(&r);
    }
    if let Ok((r, _)) = tests::node(bytes, "p") {
        bounded_tests(&r);
    }
    let _ = tests::coverage_py(bytes).map(|c| c.percent());
    let _ = tests::llvm_cov(bytes).map(|c| c.percent());
    let _ = tests::go_cover(bytes).map(|c| c.percent());
    for f in [
        lint::ruff(bytes, "p"),
        lint::eslint(bytes, "p"),
        lint::go_vet(bytes, "p"),
        lint::clippy(bytes, "p"),
        security::bandit(bytes),
        security::detect_secrets(bytes),
        security::semgrep(bytes),
    ]
    .into_iter()
    .flatten()
    {
        bounded_findings(&f);
    }
}

/// Arbitrary JSON, nested up to a few levels, with the keys the parsers look for.
fn arb_json() -> impl Strategy<Value = Value> {
    let key = prop::sample::select(vec![
        "type",
        "name",
        "nesting",
        "file",
        "message",
        "failure_type",
        "skip",
        "results",
        "totals",
        "covered_lines",
        "num_statements",
        "data",
        "lines",
        "count",
        "covered",
        "Action",
        "Package",
        "Test",
        "Output",
        "reason",
        "level",
        "spans",
        "is_primary",
        "file_name",
        "line_start",
        "event",
        "stdout",
        "code",
        "filename",
        "location",
        "row",
        "filePath",
        "messages",
        "ruleId",
        "severity",
        "fatal",
        "posn",
        "issue_severity",
        "test_id",
        "line_number",
        "check_id",
        "extra",
        "metadata",
        "kiln_severity",
        "path",
        "start",
        "line",
    ]);
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        prop::sample::select(vec![
            "pass", "fail", "run", "output", "ok", "failed", "error", "HIGH", "x/y"
        ])
        .prop_map(Value::from),
        ".{0,40}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 64, 8, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::vec((key.clone(), inner), 0..8)
                .prop_map(|kv| Value::Object(kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..4096)) {
        all_parsers(&bytes);
    }

    #[test]
    fn arbitrary_json_documents_and_lines_never_panic(docs in prop::collection::vec(arb_json(), 1..16)) {
        all_parsers(serde_json::to_string(&docs[0]).unwrap().as_bytes());
        let lines: Vec<String> = docs.iter().map(|d| d.to_string()).collect();
        all_parsers(lines.join("\n").as_bytes());
        all_parsers(json!({"data": docs.clone(), "results": docs}).to_string().as_bytes());
    }

    #[test]
    fn arbitrary_xml_like_text_never_panics(parts in prop::collection::vec(
        prop::sample::select(vec!["<testsuite>", "</testsuite>", "<testcase name=\"a\" file=\"t.py\">",
            "</testcase>", "<testcase classname=\"c\" name=\"b\"/>", "<failure message=\"m\">", "</failure>",
            "<error>", "</error>", "<skipped/>", "&amp;", "<!DOCTYPE x>", "<![CDATA[", "]]>", "text"]), 0..64)) {
        all_parsers(parts.concat().as_bytes());
    }

    #[test]
    fn node_events_with_any_nesting_stay_bounded(events in prop::collection::vec(
        (prop::sample::select(vec!["pass", "fail", "coverage"]), 0u64..300, ".{0,20}", any::<u64>()), 0..200)) {
        let lines: Vec<String> = events
            .iter()
            .map(|(t, nesting, name, cov)| json!({"type": t, "nesting": nesting, "name": name,
                "file": "/work/t.test.js", "covered_lines": cov, "total_lines": cov / 2}).to_string())
            .collect();
        if let Ok((r, c)) = tests::node(lines.join("\n").as_bytes(), "") {
            bounded_tests(&r);
            prop_assert!(c.percent().is_none_or(|p| (0.0..=100.0).contains(&p)));
        }
    }

    #[test]
    fn go_events_with_any_names_stay_bounded(events in prop::collection::vec(
        (prop::sample::select(vec!["run", "pass", "fail", "skip", "output"]),
         prop::sample::select(vec!["p", "q"]), "[A-Z/]{0,6}"), 0..300)) {
        let lines: Vec<String> = events
            .iter()
            .map(|(a, p, t)| json!({"Action": a, "Package": p, "Test": t, "Output": "o\n"}).to_string())
            .collect();
        bounded_tests(&tests::go_test(lines.join("\n").as_bytes()).unwrap());
    }
}

#[test]
fn a_report_over_the_size_limit_is_refused() {
    let mut big = b"[".to_vec();
    big.resize(MAX_REPORT_BYTES + 1, b' ');
    big.push(b']');
    let err = lint::ruff(&big, "").unwrap_err();
    assert!(err.message.contains("byte limit"), "{err}");
    assert!(tests::cargo_test(&big, "").is_err());
    assert!(tests::junit(&big, "").is_err());
}

#[test]
fn a_flood_of_passing_cases_keeps_the_failure_and_exact_counts() {
    let mut xml = String::from("<testsuite>");
    for i in 0..10_000 {
        xml.push_str(&format!("<testcase classname=\"t\" name=\"ok{i}\"/>"));
    }
    xml.push_str("<testcase classname=\"t\" name=\"bad\"><failure message=\"no\"/></testcase></testsuite>");
    let r = tests::junit(xml.as_bytes(), "").unwrap();
    assert_eq!((r.passed, r.failed), (10_000, 1));
    assert_eq!(r.cases.len(), MAX_CASES);
    assert_eq!(r.cases_omitted as usize, 10_001 - MAX_CASES);
    assert!(r
        .cases
        .iter()
        .any(|c| c.name == "t::bad" && c.status == TestStatus::Failed));
    bounded_tests(&r);
}

#[test]
fn a_flood_of_minor_findings_cannot_hide_a_serious_one() {
    let mut results: Vec<Value> = (0..10_000)
        .map(|i| json!({"issue_severity": "LOW", "test_id": "B101", "filename": "a.py", "line_number": i + 1, "issue_text": "x"}))
        .collect();
    results.push(json!({"issue_severity": "HIGH", "test_id": "B602", "filename": "a.py", "line_number": 1, "issue_text": "shell"}));
    let f = security::bandit(json!({ "results": results }).to_string().as_bytes()).unwrap();
    bounded_findings(&f);
    assert_eq!(f.count(Severity::High), 1);
    let omitted = f
        .findings
        .iter()
        .find(|x| x.rule == "kiln.findings-omitted")
        .expect("a count of the rest");
    assert!(
        omitted
            .message
            .starts_with(&format!("{} more", 10_001 - MAX_FINDINGS)),
        "{}",
        omitted.message
    );
}

#[test]
fn a_cover_profile_cannot_overflow_the_totals() {
    let max = u64::MAX;
    let profile = format!("mode: set\na.go:1.1,2.2 {max} 1\nb.go:1.1,2.2 {max} 1\n");
    let c = tests::go_cover(profile.as_bytes()).unwrap();
    assert_eq!((c.covered, c.total), (max, max));
    assert_eq!(c.percent(), Some(100.0));
}

#[test]
fn go_parents_of_nested_subtests_are_not_cases() {
    let ev = |a: &str, t: &str| json!({"Action": a, "Package": "p", "Test": t}).to_string();
    let lines = [
        ev("run", "TestTop"),
        ev("run", "TestTop/a"),
        ev("run", "TestTop/a/x"),
        ev("pass", "TestTop/a/x"),
        ev("run", "TestTop/b"),
        ev("fail", "TestTop/b"),
        ev("pass", "TestTop/a"),
        ev("fail", "TestTop"),
    ];
    let r = tests::go_test(lines.join("\n").as_bytes()).unwrap();
    let names: Vec<&str> = r.cases.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["p::TestTop/a/x", "p::TestTop/b"]);
}
