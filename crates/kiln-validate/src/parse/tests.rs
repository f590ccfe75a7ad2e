//! Test reports: pytest's JUnit XML and coverage.py's JSON, node's test runner events (Kiln's
//! JSON-lines reporter), `go test -json` with a cover profile, and libtest's JSON events.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::{
    clip, json, json_lines, s, sized, too_many, ParseError, MAX_MESSAGE_BYTES, MAX_NESTING, MAX_RECORDS,
    MAX_XML_NODES,
};
use crate::result::{workspace_path, Coverage, TestResult, TestStatus, MAX_CASE_NAME_BYTES};

/// pytest's JUnit XML (`junit_family=xunit1`, which carries `file`). Case names are pytest
/// node ids: `path::Class::test`. roxmltree parses without recursion; its node count is capped.
pub fn junit(xml: &[u8], root: &str) -> Result<TestResult, ParseError> {
    let text = std::str::from_utf8(sized("junit", xml)?).map_err(|e| ParseError::new("junit", e))?;
    let opts = roxmltree::ParsingOptions {
        nodes_limit: MAX_XML_NODES,
        ..roxmltree::ParsingOptions::default()
    };
    let doc = roxmltree::Document::parse_with_options(text, opts).map_err(|e| ParseError::new("junit", e))?;
    let mut out = TestResult::default();
    for case in doc.descendants().filter(|n| n.has_tag_name("testcase")) {
        let name = case.attribute("name").unwrap_or("");
        let classname = case.attribute("classname").unwrap_or("");
        let full = match case.attribute("file") {
            Some(file) => {
                let module = file.trim_end_matches(".py").replace('/', ".");
                let class = classname
                    .strip_prefix(&module)
                    .map(|c| c.trim_start_matches('.'))
                    .unwrap_or("");
                let file = workspace_path(file, root);
                if class.is_empty() {
                    format!("{file}::{name}")
                } else {
                    format!("{file}::{}::{name}", class.replace('.', "::"))
                }
            }
            None if classname.is_empty() => name.to_string(),
            None => format!("{classname}::{name}"),
        };
        let child = |tag: &str| case.children().find(|c| c.has_tag_name(tag));
        let message = |n: roxmltree::Node| match (n.attribute("message"), n.text()) {
            // pytest's collection errors all say "collection failure"; the reason (a missing
            // module, a syntax error) is the traceback's last `E` line.
            (Some(m @ "collection failure"), Some(text)) => Some(
                match text.lines().rev().find_map(|l| l.trim_start().strip_prefix("E ")) {
                    Some(reason) => format!("{m}: {}", reason.trim()),
                    None => m.to_string(),
                },
            ),
            (Some(m), _) => Some(m.to_string()),
            (None, text) => text.map(|t| t.trim().to_string()),
        };
        let (status, msg) = if let Some(e) = child("error") {
            (TestStatus::Error, message(e))
        } else if let Some(f) = child("failure") {
            (TestStatus::Failed, message(f))
        } else if let Some(sk) = child("skipped") {
            (TestStatus::Skipped, message(sk))
        } else {
            (TestStatus::Passed, None)
        };
        out.push(full, status, msg);
    }
    out.bound();
    Ok(out)
}

/// A JSON field as a count (absent or not a non-negative integer: 0).
fn n(v: &serde_json::Value, key: &str) -> u64 {
    v.get(key).and_then(|x| x.as_u64()).unwrap_or(0)
}

/// coverage.py's JSON report: covered lines out of statements.
pub fn coverage_py(report: &[u8]) -> Result<Coverage, ParseError> {
    let v = json("coverage.json", report)?;
    let t = v
        .get("totals")
        .ok_or_else(|| ParseError::new("coverage.json", "no `totals`"))?;
    Ok(Coverage {
        covered: n(t, "covered_lines"),
        total: n(t, "num_statements"),
    })
}

/// `llvm-cov export -summary-only`: covered lines out of lines, over every file exported.
pub fn llvm_cov(report: &[u8]) -> Result<Coverage, ParseError> {
    let v = json("llvm-cov.json", report)?;
    let lines = v
        .pointer("/data/0/totals/lines")
        .ok_or_else(|| ParseError::new("llvm-cov.json", "no `data[0].totals.lines`"))?;
    Ok(Coverage {
        covered: n(lines, "covered"),
        total: n(lines, "count"),
    })
}

/// Events of node's test runner as written by Kiln's reporter. Only leaf tests are cases;
/// a parent's name prefixes its children's (`suite > case`). Returns the coverage too.
/// Nesting deeper than [`MAX_NESTING`] is refused; the tree is walked without recursion and
/// names are clipped, so neither depth nor width costs more than the report's own size.
pub fn node(report: &[u8], root: &str) -> Result<(TestResult, Coverage), ParseError> {
    struct Ev {
        name: String,
        file: String,
        status: TestStatus,
        message: Option<String>,
        children: Vec<usize>,
    }
    let mut events: Vec<Ev> = Vec::new();
    let mut coverage = Coverage::default();
    // Indices of finished tests at each nesting level not yet claimed by a parent.
    let mut pending: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
    for v in json_lines("node test events", report)? {
        match s(&v, "type") {
            "coverage" => coverage.add(Coverage {
                covered: n(&v, "covered_lines"),
                total: n(&v, "total_lines"),
            }),
            t @ ("pass" | "fail") => {
                let nesting = n(&v, "nesting");
                if nesting > MAX_NESTING {
                    return Err(ParseError::new(
                        "node test events",
                        format!("tests nested deeper than {MAX_NESTING} levels"),
                    ));
                }
                let skip = v.get("skip").and_then(|x| x.as_bool()).unwrap_or(false)
                    || v.get("todo").and_then(|x| x.as_bool()).unwrap_or(false);
                let status = match (t, skip) {
                    (_, true) => TestStatus::Skipped,
                    ("pass", _) => TestStatus::Passed,
                    _ if s(&v, "failure_type") == "testCodeFailure" => TestStatus::Failed,
                    _ => TestStatus::Error,
                };
                let idx = events.len();
                let children = pending.remove(&(nesting + 1)).unwrap_or_default();
                events.push(Ev {
                    name: clip(s(&v, "name"), MAX_CASE_NAME_BYTES),
                    file: clip(s(&v, "file"), MAX_CASE_NAME_BYTES),
                    status,
                    message: v
                        .get("message")
                        .and_then(|m| m.as_str())
                        .map(|m| clip(m.trim(), MAX_MESSAGE_BYTES)),
                    children,
                });
                pending.entry(nesting).or_default().push(idx);
            }
            _ => {}
        }
    }
    let mut out = TestResult::default();
    let mut roots: Vec<usize> = pending.into_values().flatten().collect();
    roots.sort();
    // Depth first, in order: the stack holds what is left to visit, last first.
    let mut stack: Vec<(usize, String)> = roots.into_iter().rev().map(|r| (r, String::new())).collect();
    while let Some((i, prefix)) = stack.pop() {
        let e = &events[i];
        let name = if prefix.is_empty() {
            let file = if e.file.is_empty() {
                String::new()
            } else {
                workspace_path(&e.file, root)
            };
            if file.is_empty() || file == e.name || e.name.ends_with(&file) {
                e.name.clone()
            } else {
                format!("{file}::{}", e.name)
            }
        } else {
            // The test's own name is kept whole; its ancestors' give way.
            let room = MAX_CASE_NAME_BYTES.saturating_sub(e.name.len() + 3);
            format!("{} > {}", clip(&prefix, room), e.name)
        };
        let name = clip(&name, MAX_CASE_NAME_BYTES);
        if e.children.is_empty() {
            let msg = if e.status == TestStatus::Passed {
                None
            } else {
                e.message.clone()
            };
            out.push(name, e.status, msg);
        } else {
            stack.extend(e.children.iter().rev().map(|&c| (c, name.clone())));
        }
    }
    out.bound();
    Ok((out, coverage))
}

/// `go test -json` events: leaf tests become cases (a test with subtests is a parent); a
/// package that failed with no failing test (build error, panic in init, TestMain) is an
/// error case named after the package, its output as the message.
pub fn go_test(report: &[u8]) -> Result<TestResult, ParseError> {
    type Key = (String, String);
    let mut order: Vec<Key> = Vec::new();
    let mut status: HashMap<Key, TestStatus> = HashMap::new();
    let mut output: HashMap<Key, String> = HashMap::new();
    let mut package_failed: Vec<String> = Vec::new();
    // Output is kept up to the message limit per test (the rest is dropped as it comes).
    let append = |output: &mut HashMap<Key, String>, key: Key, text: &str| {
        let o = output.entry(key).or_default();
        if o.len() < MAX_MESSAGE_BYTES {
            o.push_str(&clip(text, MAX_MESSAGE_BYTES - o.len()));
        }
    };
    for v in json_lines("go test -json", report)? {
        let pkg = clip(s(&v, "Package"), MAX_CASE_NAME_BYTES);
        let test = clip(s(&v, "Test"), MAX_CASE_NAME_BYTES);
        let action = s(&v, "Action");
        if test.is_empty() {
            match action {
                "fail" => package_failed.push(pkg),
                "output" => append(&mut output, (pkg, String::new()), s(&v, "Output")),
                _ => {}
            }
            continue;
        }
        let key = (pkg, test);
        let mut settle = |key: Key, st: TestStatus| {
            // go 1.19's test2json reads framing lines a test prints as events: a later "pass"
            // never hides a failure.
            let e = status.entry(key).or_insert(st);
            if rank(st) > rank(*e) {
                *e = st;
            }
        };
        match action {
            "run" => order.push(key),
            "pass" => settle(key, TestStatus::Passed),
            "fail" => settle(key, TestStatus::Failed),
            "skip" => settle(key, TestStatus::Skipped),
            "output" => {
                let line = s(&v, "Output");
                let framing = line.trim_start().starts_with("=== ") || line.trim_start().starts_with("--- ");
                if !framing {
                    append(&mut output, key, line);
                }
            }
            _ => {}
        }
    }
    // A test is a parent when another test names it as its direct parent (`go test` runs
    // every level of `A/b/c`, so direct parents are enough).
    let parents: HashSet<(&str, &str)> = order
        .iter()
        .filter_map(|(p, t)| t.rsplit_once('/').map(|(parent, _)| (p.as_str(), parent)))
        .collect();
    let mut out = TestResult::default();
    let mut failed_packages: HashSet<&str> = HashSet::new();
    for (pkg, test) in &order {
        if parents.contains(&(pkg.as_str(), test.as_str())) {
            continue;
        }
        let key = (pkg.clone(), test.clone());
        // A test that started but never finished: the run was cut (timeout) or crashed.
        let st = status.get(&key).copied().unwrap_or(TestStatus::Error);
        let msg = match st {
            TestStatus::Passed => None,
            TestStatus::Error => Some("the test never finished (the run was cut or crashed)".to_string()),
            _ => output
                .get(&key)
                .map(|o| o.trim().to_string())
                .filter(|o| !o.is_empty()),
        };
        if matches!(st, TestStatus::Failed | TestStatus::Error) {
            failed_packages.insert(pkg);
        }
        out.push(format!("{pkg}::{test}"), st, msg);
    }
    let mut reported: HashSet<&str> = HashSet::new();
    for pkg in &package_failed {
        if !failed_packages.contains(pkg.as_str()) && reported.insert(pkg) {
            let msg = output
                .get(&(pkg.clone(), String::new()))
                .map(|o| o.trim().to_string());
            out.push(pkg.clone(), TestStatus::Error, msg);
        }
    }
    out.bound();
    Ok(out)
}

/// A Go cover profile: statements covered out of statements, each block counted once.
pub fn go_cover(profile: &[u8]) -> Result<Coverage, ParseError> {
    let text = String::from_utf8_lossy(sized("go cover profile", profile)?);
    let mut blocks: HashMap<&str, (u64, bool)> = HashMap::new();
    for (i, line) in text
        .lines()
        .filter(|l| !l.starts_with("mode:") && !l.trim().is_empty())
        .enumerate()
    {
        if i == MAX_RECORDS {
            return Err(too_many("go cover profile"));
        }
        let bad = || ParseError::new("go cover profile", format!("bad line {:?}", clip(line, 200)));
        let mut parts = line.rsplitn(3, ' ');
        let (Some(count), Some(stmts), Some(block)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad());
        };
        let stmts: u64 = stmts.parse().map_err(|_| bad())?;
        let hit = count.parse::<u64>().map_err(|_| bad())? > 0;
        let e = blocks.entry(block).or_insert((stmts, false));
        e.1 |= hit;
    }
    let mut c = Coverage::default();
    for (stmts, hit) in blocks.values() {
        c.add(Coverage {
            covered: if *hit { *stmts } else { 0 },
            total: *stmts,
        });
    }
    Ok(c)
}

/// How bad a status is: a test reported more than once keeps its worst (a later "pass" never
/// hides a failure).
fn rank(st: TestStatus) -> u8 {
    match st {
        TestStatus::Passed => 0,
        TestStatus::Skipped => 1,
        TestStatus::Failed => 2,
        TestStatus::Error => 3,
    }
}

/// `cargo test --message-format=json -- --format json`: libtest's test events become cases;
/// compiler errors (the crate or its tests do not build) become error cases. Test binaries
/// write these lines on the stdout their tests share, so the tests can print lines of the
/// same shape: within one binary's suite, a test reported twice keeps its worst status, and
/// a test that started and never finished (the binary exited or crashed mid-test) is an error.
pub fn cargo_test(report: &[u8], root: &str) -> Result<TestResult, ParseError> {
    let mut out = TestResult::default();
    // (suite, name) → index in `cases`, in the order first seen.
    let mut suite = 0usize;
    let mut index: HashMap<(usize, String), usize> = HashMap::new();
    let mut cases: Vec<(String, Option<TestStatus>, Option<String>)> = Vec::new();
    for v in json_lines("cargo test", report)? {
        if s(&v, "reason") == "compiler-message" {
            let m = &v["message"];
            if s(m, "level") == "error" {
                let span = m["spans"].as_array().and_then(|sp| {
                    sp.iter()
                        .find(|x| x.get("is_primary").and_then(|p| p.as_bool()) == Some(true))
                });
                let name = match span {
                    Some(sp) => format!(
                        "build: {}:{}",
                        workspace_path(s(sp, "file_name"), root),
                        n(sp, "line_start")
                    ),
                    None => "build".to_string(),
                };
                out.push(name, TestStatus::Error, Some(s(m, "message").to_string()));
            }
            continue;
        }
        match s(&v, "type") {
            "test" => {}
            "suite" => {
                suite += usize::from(s(&v, "event") == "started");
                continue;
            }
            _ => continue,
        }
        let name = clip(s(&v, "name"), MAX_CASE_NAME_BYTES);
        let (status, msg) = match s(&v, "event") {
            "started" => (None, None),
            "ok" => (Some(TestStatus::Passed), None),
            "failed" => (
                Some(TestStatus::Failed),
                v.get("stdout")
                    .and_then(|x| x.as_str())
                    .map(|m| clip(m.trim(), MAX_MESSAGE_BYTES)),
            ),
            "ignored" => (
                Some(TestStatus::Skipped),
                v.get("message")
                    .and_then(|x| x.as_str())
                    .map(|m| clip(m, MAX_MESSAGE_BYTES)),
            ),
            _ => continue,
        };
        let key = (suite, name);
        let i = match index.get(&key) {
            Some(i) => *i,
            None => {
                if cases.len() == MAX_RECORDS {
                    return Err(too_many("cargo test"));
                }
                cases.push((key.1.clone(), None, None));
                index.insert(key, cases.len() - 1);
                cases.len() - 1
            }
        };
        let case = &mut cases[i];
        if let Some(st) = status {
            if case.1.is_none_or(|old| rank(st) > rank(old)) {
                case.1 = Some(st);
                case.2 = msg;
            }
        }
    }
    for (name, status, msg) in cases {
        match status {
            Some(st) => out.push(name, st, msg),
            None => out.push(
                name,
                TestStatus::Error,
                Some("the test never finished (its binary exited or crashed)".into()),
            ),
        }
    }
    out.bound();
    Ok(out)
}

#[cfg(test)]
mod unit {
    use super::*;
    use crate::parse::testdata;

    #[test]
    fn a_pytest_collection_error_names_its_reason() {
        let xml = br#"<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest" errors="1" failures="0" skipped="0" tests="1"><testcase classname="" name="test_calc"><error message="collection failure">ImportError while importing test module '/work/test_calc.py'.
test_calc.py:1: in &lt;module&gt;
    from calc import quad
E   ModuleNotFoundError: No module named 'kilnhelper'</error></testcase></testsuite></testsuites>"#;
        let r = junit(xml, "").unwrap();
        assert_eq!(r.errors, 1);
        assert_eq!(
            r.cases[0].message.as_deref(),
            Some("collection failure: ModuleNotFoundError: No module named 'kilnhelper'")
        );
    }

    #[test]
    fn pytest_junit_from_the_python_image() {
        let r = junit(&testdata("pytest.xml"), "").unwrap();
        assert_eq!((r.passed, r.failed, r.skipped, r.errors), (3, 2, 1, 0));
        assert_eq!(r.cases[0].name, "test_calc.py::test_add");
        let wrong = r
            .cases
            .iter()
            .find(|c| c.name.ends_with("test_add_wrong"))
            .unwrap();
        assert_eq!(wrong.status, TestStatus::Failed);
        assert!(wrong.message.as_deref().unwrap().contains("assert 4 == 5"));
        let later = r.cases.iter().find(|c| c.name.ends_with("test_later")).unwrap();
        assert_eq!(later.message.as_deref(), Some("not ready"));
    }

    #[test]
    fn coverage_py_json() {
        let c = coverage_py(&testdata("coverage.json")).unwrap();
        assert_eq!((c.covered, c.total), (27, 31));
    }

    #[test]
    fn llvm_cov_export_summary_from_the_rust_image() {
        let c = llvm_cov(&testdata("llvm-cov.json")).unwrap();
        assert_eq!((c.covered, c.total), (24, 41));
        assert_eq!(c.percent(), Some(58.54));
        assert!(llvm_cov(br#"{"data": []}"#).is_err());
    }

    #[test]
    fn node_events_from_kilns_reporter() {
        let (r, cov) = node(&testdata("node-test.jsonl"), "").unwrap();
        assert_eq!((r.passed, r.failed, r.skipped, r.errors), (2, 2, 1, 0));
        assert_eq!(r.cases[0].name, "test/calc.test.js::add");
        assert!(r.cases[2].message.as_deref().unwrap().contains("4 !== 5"));
        assert_eq!(cov.percent(), Some(81.48));
    }

    #[test]
    fn node_nested_tests_are_leaves_under_their_suite() {
        let lines = [
            r#"{"type":"pass","name":"inner a","nesting":1,"file":"/work/t.test.js","skip":false,"todo":false,"message":null,"failure_type":null}"#,
            r#"{"type":"fail","name":"inner b","nesting":1,"file":"/work/t.test.js","skip":false,"todo":false,"message":"boom","failure_type":"testCodeFailure"}"#,
            r#"{"type":"fail","name":"suite","nesting":0,"file":"/work/t.test.js","skip":false,"todo":false,"message":"1 subtest failed","failure_type":"subtestsFailed"}"#,
        ]
        .join("\n");
        let (r, _) = node(lines.as_bytes(), "").unwrap();
        let names: Vec<&str> = r.cases.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            ["t.test.js::suite > inner a", "t.test.js::suite > inner b"]
        );
        assert_eq!((r.passed, r.failed), (1, 1));
    }

    #[test]
    fn go_test_json_from_the_go_image() {
        let r = go_test(&testdata("go-test.jsonl")).unwrap();
        assert_eq!((r.passed, r.failed, r.skipped, r.errors), (2, 2, 1, 0));
        let wrong = r
            .cases
            .iter()
            .find(|c| c.name == "example.com/calc::TestAddWrong")
            .unwrap();
        assert!(wrong
            .message
            .as_deref()
            .unwrap()
            .contains("Add(2, 2) = 4, want 5"));
        let c = go_cover(&testdata("go-cover.out")).unwrap();
        assert_eq!((c.covered, c.total), (4, 9));
    }

    #[test]
    fn go_build_failure_is_an_error_case() {
        let lines = r#"{"Action":"output","Package":"x/y","Output":"FAIL\tx/y [setup failed]\n"}
{"Action":"fail","Package":"x/y","Elapsed":0}"#;
        let r = go_test(lines.as_bytes()).unwrap();
        assert_eq!(r.errors, 1);
        assert_eq!(r.cases[0].name, "x/y");
    }

    /// Node's reporter writes children before their parent: the deepest test comes first.
    fn node_chain(depth: u64) -> String {
        (0..depth)
            .rev()
            .map(|d| {
                format!(r#"{{"type":"pass","name":"level {d}","nesting":{d},"file":"/work/t.test.js"}}"#)
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn a_20000_deep_node_report_neither_overflows_nor_allocates_per_level() {
        // A runtime worker thread's stack (2 MiB): the recursive walk overflowed it and
        // aborted the whole worker.
        let report = node_chain(20_000);
        let got = std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || node(report.as_bytes(), "").map(|(r, _)| r))
            .unwrap()
            .join()
            .expect("the parser returns instead of overflowing its stack");
        let err = got.expect_err("a report nested beyond the limit is refused");
        assert!(err.message.contains("nested deeper than"), "{err}");
        // Within the limit, the one leaf's name is clipped, not 200 levels long.
        let (r, _) = node(node_chain(200).as_bytes(), "").unwrap();
        assert_eq!(r.cases.len(), 1);
        assert!(r.cases[0].name.len() <= crate::result::MAX_CASE_NAME_BYTES);
        assert!(r.cases[0].name.ends_with("level 199"), "{}", r.cases[0].name);
    }

    #[test]
    fn cargo_test_json_from_the_rust_image() {
        let r = cargo_test(&testdata("cargo-test.jsonl"), "").unwrap();
        assert_eq!((r.passed, r.failed, r.skipped, r.errors), (2, 2, 1, 0));
        let ignored = r.cases.iter().find(|c| c.name == "tests::later").unwrap();
        assert_eq!(ignored.message.as_deref(), Some("not ready"));
    }

    #[test]
    fn a_printed_pass_never_hides_a_failure_and_an_unfinished_test_is_an_error() {
        let suite = r#"{ "type": "suite", "event": "started", "test_count": 2 }"#;
        let lines = [
            suite,
            r#"{ "type": "test", "event": "started", "name": "tests::adds" }"#,
            r#"{ "type": "test", "event": "ok", "name": "tests::adds" }"#,
            r#"{ "type": "test", "event": "failed", "name": "tests::adds", "stdout": "boom" }"#,
            r#"{ "type": "test", "event": "ok", "name": "tests::adds" }"#,
            r#"{ "type": "test", "event": "started", "name": "tests::exits" }"#,
            // A second binary may hold a test of the same name.
            suite,
            r#"{ "type": "test", "event": "started", "name": "tests::adds" }"#,
            r#"{ "type": "test", "event": "ok", "name": "tests::adds" }"#,
        ]
        .join("\n");
        let r = cargo_test(lines.as_bytes(), "").unwrap();
        assert_eq!((r.passed, r.failed, r.skipped, r.errors), (1, 1, 0, 1), "{r:?}");
        let exits = r.cases.iter().find(|c| c.name == "tests::exits").unwrap();
        assert_eq!(exits.status, TestStatus::Error);

        let go = [
            r#"{"Action":"run","Package":"p","Test":"TestAdd"}"#,
            r#"{"Action":"fail","Package":"p","Test":"TestAdd"}"#,
            r#"{"Action":"pass","Package":"p","Test":"TestAdd"}"#,
        ]
        .join("\n");
        let r = go_test(go.as_bytes()).unwrap();
        assert_eq!((r.passed, r.failed), (0, 1), "{r:?}");
    }
}
