//! Test reports: pytest's JUnit XML and coverage.py's JSON, node's test runner events (Kiln's
//! JSON-lines reporter), `go test -json` with a cover profile, and libtest's JSON events.

use std::collections::{BTreeMap, HashMap};

use super::{json, json_lines, s, ParseError};
use crate::result::{workspace_path, Coverage, TestResult, TestStatus};

/// pytest's JUnit XML (`junit_family=xunit1`, which carries `file`). Case names are pytest
/// node ids: `path::Class::test`.
pub fn junit(xml: &[u8], root: &str) -> Result<TestResult, ParseError> {
    let text = std::str::from_utf8(xml).map_err(|e| ParseError::new("junit", e))?;
    let doc = roxmltree::Document::parse(text).map_err(|e| ParseError::new("junit", e))?;
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
        let message = |n: roxmltree::Node| {
            n.attribute("message")
                .map(str::to_string)
                .or_else(|| n.text().map(|t| t.trim().to_string()))
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
    Ok(out)
}

/// coverage.py's JSON report: covered lines out of statements.
pub fn coverage_py(report: &[u8]) -> Result<Coverage, ParseError> {
    let v = json("coverage.json", report)?;
    let t = v
        .get("totals")
        .ok_or_else(|| ParseError::new("coverage.json", "no `totals`"))?;
    Ok(Coverage {
        covered: t.get("covered_lines").and_then(|x| x.as_u64()).unwrap_or(0),
        total: t.get("num_statements").and_then(|x| x.as_u64()).unwrap_or(0),
    })
}

/// `llvm-cov export -summary-only`: covered lines out of lines, over every file exported.
pub fn llvm_cov(report: &[u8]) -> Result<Coverage, ParseError> {
    let v = json("llvm-cov.json", report)?;
    let lines = v
        .pointer("/data/0/totals/lines")
        .ok_or_else(|| ParseError::new("llvm-cov.json", "no `data[0].totals.lines`"))?;
    Ok(Coverage {
        covered: lines.get("covered").and_then(|x| x.as_u64()).unwrap_or(0),
        total: lines.get("count").and_then(|x| x.as_u64()).unwrap_or(0),
    })
}

/// Events of node's test runner as written by Kiln's reporter. Only leaf tests are cases;
/// a parent's name prefixes its children's (`suite > case`). Returns the coverage too.
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
    for v in json_lines(report) {
        match s(&v, "type") {
            "coverage" => {
                coverage.covered += v.get("covered_lines").and_then(|x| x.as_u64()).unwrap_or(0);
                coverage.total += v.get("total_lines").and_then(|x| x.as_u64()).unwrap_or(0);
            }
            t @ ("pass" | "fail") => {
                let nesting = v.get("nesting").and_then(|x| x.as_u64()).unwrap_or(0);
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
                    name: s(&v, "name").to_string(),
                    file: s(&v, "file").to_string(),
                    status,
                    message: v
                        .get("message")
                        .and_then(|m| m.as_str())
                        .map(|m| m.trim().to_string()),
                    children,
                });
                pending.entry(nesting).or_default().push(idx);
            }
            _ => {}
        }
    }
    let mut out = TestResult::default();
    fn walk(events: &[Ev], i: usize, prefix: &str, root: &str, out: &mut TestResult) {
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
            format!("{prefix} > {}", e.name)
        };
        if e.children.is_empty() {
            let msg = if e.status == TestStatus::Passed {
                None
            } else {
                e.message.clone()
            };
            out.push(name, e.status, msg);
        } else {
            for &c in &e.children {
                walk(events, c, &name, root, out);
            }
        }
    }
    let mut roots: Vec<usize> = pending.into_values().flatten().collect();
    roots.sort();
    for r in roots {
        walk(&events, r, "", root, &mut out);
    }
    Ok((out, coverage))
}

/// `go test -json` events: leaf tests become cases (a test with subtests is a parent); a
/// package that failed with no failing test (build error, panic in init, TestMain) is an
/// error case named after the package, its output as the message.
pub fn go_test(report: &[u8]) -> Result<TestResult, ParseError> {
    let mut order: Vec<(String, String)> = Vec::new();
    let mut status: HashMap<(String, String), TestStatus> = HashMap::new();
    let mut output: HashMap<(String, String), String> = HashMap::new();
    let mut package_failed: Vec<String> = Vec::new();
    for v in json_lines(report) {
        let pkg = s(&v, "Package").to_string();
        let test = s(&v, "Test").to_string();
        let action = s(&v, "Action");
        if test.is_empty() {
            match action {
                "fail" => package_failed.push(pkg),
                "output" => output
                    .entry((pkg, String::new()))
                    .or_default()
                    .push_str(s(&v, "Output")),
                _ => {}
            }
            continue;
        }
        let key = (pkg, test);
        match action {
            "run" => order.push(key),
            "pass" => {
                status.insert(key, TestStatus::Passed);
            }
            "fail" => {
                status.insert(key, TestStatus::Failed);
            }
            "skip" => {
                status.insert(key, TestStatus::Skipped);
            }
            "output" => {
                let line = s(&v, "Output");
                let framing = line.trim_start().starts_with("=== ") || line.trim_start().starts_with("--- ");
                if !framing {
                    output.entry(key).or_default().push_str(line);
                }
            }
            _ => {}
        }
    }
    let mut out = TestResult::default();
    for (pkg, test) in &order {
        let prefix = format!("{test}/");
        if order.iter().any(|(p, t)| p == pkg && t.starts_with(&prefix)) {
            continue; // a parent of subtests
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
        out.push(format!("{pkg}::{test}"), st, msg);
    }
    for pkg in package_failed {
        let failed_inside = out.cases.iter().any(|c| {
            c.name.starts_with(&format!("{pkg}::"))
                && matches!(c.status, TestStatus::Failed | TestStatus::Error)
        });
        if !failed_inside {
            let msg = output
                .get(&(pkg.clone(), String::new()))
                .map(|o| o.trim().to_string());
            out.push(pkg, TestStatus::Error, msg);
        }
    }
    Ok(out)
}

/// A Go cover profile: statements covered out of statements, each block counted once.
pub fn go_cover(profile: &[u8]) -> Result<Coverage, ParseError> {
    let text = String::from_utf8_lossy(profile);
    let mut blocks: HashMap<&str, (u64, bool)> = HashMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with("mode:") && !l.trim().is_empty())
    {
        let mut parts = line.rsplitn(3, ' ');
        let (Some(count), Some(stmts), Some(block)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(ParseError::new("go cover profile", format!("bad line {line:?}")));
        };
        let stmts: u64 = stmts
            .parse()
            .map_err(|_| ParseError::new("go cover profile", line))?;
        let hit = count
            .parse::<u64>()
            .map_err(|_| ParseError::new("go cover profile", line))?
            > 0;
        let e = blocks.entry(block).or_insert((stmts, false));
        e.1 |= hit;
    }
    let mut c = Coverage::default();
    for (stmts, hit) in blocks.values() {
        c.total += stmts;
        if *hit {
            c.covered += stmts;
        }
    }
    Ok(c)
}

/// `cargo test --message-format=json -- --format json`: libtest's test events become cases;
/// compiler errors (the crate or its tests do not build) become error cases.
pub fn cargo_test(report: &[u8], root: &str) -> Result<TestResult, ParseError> {
    let mut out = TestResult::default();
    for v in json_lines(report) {
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
                        sp.get("line_start").and_then(|l| l.as_u64()).unwrap_or(0)
                    ),
                    None => "build".to_string(),
                };
                out.push(name, TestStatus::Error, Some(s(m, "message").to_string()));
            }
            continue;
        }
        if s(&v, "type") != "test" {
            continue;
        }
        let name = s(&v, "name").to_string();
        match s(&v, "event") {
            "ok" => out.push(name, TestStatus::Passed, None),
            "failed" => {
                let msg = v
                    .get("stdout")
                    .and_then(|x| x.as_str())
                    .map(|m| m.trim().to_string());
                out.push(name, TestStatus::Failed, msg)
            }
            "ignored" => {
                let msg = v.get("message").and_then(|x| x.as_str()).map(str::to_string);
                out.push(name, TestStatus::Skipped, msg)
            }
            "timeout" => {}
            _ => {}
        }
    }
    Ok(out)
}

#[cfg(test)]
mod unit {
    use super::*;
    use crate::parse::testdata;

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

    #[test]
    fn cargo_test_json_from_the_rust_image() {
        let r = cargo_test(&testdata("cargo-test.jsonl"), "").unwrap();
        assert_eq!((r.passed, r.failed, r.skipped, r.errors), (2, 2, 1, 0));
        let ignored = r.cases.iter().find(|c| c.name == "tests::later").unwrap();
        assert_eq!(ignored.message.as_deref(), Some("not ready"));
    }
}
