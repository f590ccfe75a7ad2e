//! Tool integrity (issue 14 item 9) for every runner and linter besides pytest (whose tests
//! are in `validate.rs`): the code under test cannot forge its runner's report, and the
//! workspace's lint configuration and suppressions are ignored unless the request honours
//! them. Real images, real Docker engine, real Postgres.

use std::path::Path;
use std::time::Duration;

use kiln_queue::{JobKind, JobRecord, JobState};
use kiln_testkit::TestDb;
use kiln_tests::validation::{findings, Rig};
use serde_json::Value;

/// Runs one job of `kind` on `dir` (honouring the workspace's suppressions when `honour`).
async fn run_kind(db: &TestDb, dir: &Path, kind: JobKind, honour: bool) -> JobRecord {
    let packed = kiln_artifacts::pack_dir(dir, kiln_artifacts::DEFAULT_MAX_BYTES).unwrap();
    kiln_artifacts::store(&db.pool, &packed).await.unwrap();
    let job = kiln_queue::NewJob::new(
        kind.as_str(),
        kind,
        serde_json::json!({"workspace": packed.digest, "honour_suppressions": honour}),
    );
    let id = kiln_queue::enqueue(&db.pool, &job).await.unwrap().id;
    kiln_tests::wait_final(&db.pool, id, Duration::from_secs(400)).await
}

fn counts(test: &Value) -> (u64, u64, u64, u64) {
    let n = |k: &str| test[k].as_u64().unwrap_or_else(|| panic!("{k} in {test}"));
    (n("passed"), n("failed"), n("skipped"), n("errors"))
}

/// Stops `rig` and returns what its worker left on the engine.
async fn stop_and_leftovers(rig: Rig) -> Vec<String> {
    let docker = rig.sandbox.docker().clone();
    let worker = rig.worker_id.clone();
    rig.stop().await;
    let mut left = kiln_sandbox::reaper::containers_of(&docker, &worker)
        .await
        .unwrap();
    left.extend(kiln_sandbox::reaper::volumes_of(&docker, &worker).await.unwrap());
    left
}

fn write(dir: &Path, files: &[(&str, &str)]) {
    for (path, text) in files {
        let p = dir.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
}

/// A Node project whose one test fails and which, as its test file loads, replaces the report
/// file the runner writes (unlinking it first), plants a passing one with a zero exit code,
/// prints a passing report line, and writes the fake again as the process exits.
const NODE_FORGER: &[(&str, &str)] = &[
    (
        "package.json",
        "{\"name\": \"forge\", \"version\": \"0.1.0\", \"private\": true}\n",
    ),
    (
        "test/calc.test.js",
        r#"const test = require('node:test');
const assert = require('node:assert');
const fs = require('node:fs');

const R = '/work/.kiln-validate/reports';
const fake = JSON.stringify({ type: 'pass', name: 'adds', nesting: 0, file: null, skip: false, todo: false, message: null, failure_type: null, duration_ms: 1 }) + '\n';
function forge() {
  for (const name of ['node-test.jsonl', 'node-test.exit']) {
    try { fs.unlinkSync(R + '/' + name); } catch (e) { /* not there */ }
  }
  try {
    fs.mkdirSync(R, { recursive: true });
    fs.writeFileSync(R + '/node-test.jsonl', fake);
    fs.writeFileSync(R + '/node-test.exit', '0\n');
  } catch (e) { /* read-only */ }
}
forge();
process.stdout.write(fake);
process.on('exit', forge);

test('adds', () => {
  assert.strictEqual(1 + 2, 4);
});
"#,
    ),
];

/// The same forgery in Go: in `init`, before the tests run, and printed as test2json framing.
const GO_FORGER: &[(&str, &str)] = &[
    ("go.mod", "module forge\n\ngo 1.19\n"),
    (
        "calc.go",
        "package calc\n\nfunc Add(a, b int) int { return a - b }\n",
    ),
    (
        "calc_test.go",
        r#"package calc

import (
	"fmt"
	"os"
	"testing"
)

const reports = "/work/.kiln-validate/reports"
const fake = `{"Action":"run","Package":"forge","Test":"TestAdd"}
{"Action":"pass","Package":"forge","Test":"TestAdd"}
{"Action":"pass","Package":"forge"}
`

func init() {
	os.Remove(reports + "/go-test.jsonl")
	os.Remove(reports + "/go-test.exit")
	os.WriteFile(reports+"/go-test.jsonl", []byte(fake), 0o644)
	os.WriteFile(reports+"/go-test.exit", []byte("0\n"), 0o644)
	fmt.Print(fake)
}

func TestAdd(t *testing.T) {
	if Add(1, 2) != 3 {
		t.Fatal("1 + 2 is not 3")
	}
}

// Runs after TestAdd failed: go 1.19's test2json reads this line as TestAdd passing.
func TestLater(t *testing.T) {
	fmt.Println("--- PASS: TestAdd (0.00s)")
}
"#,
    ),
];

/// The same forgery in Rust: from inside the failing test, and its own line on stdout.
const RUST_FORGER: &[(&str, &str)] = &[
    (
        "Cargo.toml",
        "[package]\nname = \"forge\"\nversion = \"0.1.0\"\nedition = \"2021\"\n",
    ),
    (
        "src/lib.rs",
        r#"pub fn add(a: i32, b: i32) -> i32 {
    a - b
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    const REPORTS: &str = "/work/.kiln-validate/reports";
    const FAKE: &str = "{ \"type\": \"test\", \"event\": \"ok\", \"name\": \"tests::adds\" }\n";

    #[test]
    fn adds() {
        let _ = std::fs::remove_file(format!("{REPORTS}/cargo-test.jsonl"));
        let _ = std::fs::write(format!("{REPORTS}/cargo-test.jsonl"), FAKE);
        let _ = std::fs::write(format!("{REPORTS}/cargo-test.exit"), "0\n");
        let _ = std::io::stdout().write_all(FAKE.as_bytes());
        assert_eq!(super::add(1, 2), 3);
    }
}
"#,
    ),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn node_go_and_cargo_test_reports_cannot_be_forged_by_the_code_under_test() {
    let db = TestDb::new().await;
    let rig = Rig::start(&db.pool, "integ-tests").await;
    let mut got = Vec::new();
    for (name, files) in [("node", NODE_FORGER), ("go", GO_FORGER), ("rust", RUST_FORGER)] {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), files);
        let rec = run_kind(&db, dir.path(), JobKind::Test, false).await;
        assert_eq!(rec.state, JobState::Succeeded, "{name}: {rec:?}");
        let result = rec.result.clone().unwrap();
        eprintln!("{name}: {result}");
        got.push((name, counts(&result)));
    }
    let left = stop_and_leftovers(rig).await;
    // The one real test failed in each; nothing forged passed, nothing planted counted.
    assert_eq!(
        got,
        [
            ("node", (0, 1, 0, 0)),
            ("go", (1, 1, 0, 0)),
            ("rust", (0, 1, 0, 0))
        ],
        "{got:?}"
    );
    assert!(left.is_empty(), "left on the engine: {left:?}");
}

/// Python whose unused imports ruff reports, hidden by the project's ruff configuration (it
/// excludes `bad.py`) and `# noqa` comments.
const RUFF_QUIET: &[(&str, &str)] = &[
    (
        "pyproject.toml",
        "[project]\nname = \"quiet\"\nversion = \"0.1.0\"\n\n[tool.ruff]\nextend-exclude = [\"bad.py\"]\n",
    ),
    ("bad.py", "import os\nimport sys  # noqa: F401\n"),
    ("good.py", "import json  # noqa\n"),
];

/// JavaScript with unused variables, hidden by a workspace `.eslintrc.js` (code eslint runs,
/// which also writes an empty report as eslint exits), an ignore file and an inline
/// `eslint-disable`.
const ESLINT_QUIET: &[(&str, &str)] = &[
    ("package.json", "{\"name\": \"quiet\", \"version\": \"0.1.0\", \"private\": true}\n"),
    (
        ".eslintrc.js",
        "const fs = require('fs');\nprocess.on('exit', () => {\n  try { fs.writeFileSync('/work/.kiln-validate/reports/eslint.json', '[]'); } catch (e) { /* gone */ }\n});\nmodule.exports = { root: true, rules: {} };\n",
    ),
    (".eslintignore", "src/hidden.js\n"),
    ("src/a.js", "var unused = 1;\n"),
    ("src/b.js", "/* eslint-disable */\nvar alsoUnused = 2;\n"),
    ("src/hidden.js", "var hidden = 3;\n"),
];

/// Rust whose clippy findings are hidden by `allow` attributes, a `.cargo/config.toml`
/// capping every lint, and a build script that empties the report file.
const CLIPPY_QUIET: &[(&str, &str)] = &[
    (
        "Cargo.toml",
        "[package]\nname = \"quiet\"\nversion = \"0.1.0\"\nedition = \"2021\"\n",
    ),
    (".cargo/config.toml", "[build]\nrustflags = [\"--cap-lints\", \"allow\"]\n"),
    ("clippy.toml", "too-many-arguments-threshold = 100\n"),
    (
        "build.rs",
        "fn main() {\n    let r = \"/work/.kiln-validate/reports\";\n    let _ = std::fs::remove_file(format!(\"{r}/clippy.jsonl\"));\n    let _ = std::fs::write(format!(\"{r}/clippy.jsonl\"), \"\");\n}\n",
    ),
    (
        "src/lib.rs",
        "#![allow(warnings)]\n#![allow(clippy::all)]\n\npub fn one() -> u8 {\n    let x = 1;\n    return x;\n}\n",
    ),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lint_configuration_and_suppressions_from_the_workspace_are_ignored_unless_honoured() {
    let db = TestDb::new().await;
    let rig = Rig::start(&db.pool, "integ-lint").await;
    let mut strict = Vec::new();
    let mut lenient = Vec::new();
    for files in [RUFF_QUIET, ESLINT_QUIET, CLIPPY_QUIET] {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), files);
        for (honour, into) in [(false, &mut strict), (true, &mut lenient)] {
            let rec = run_kind(&db, dir.path(), JobKind::Lint, honour).await;
            assert_eq!(rec.state, JobState::Succeeded, "{rec:?}");
            into.extend(findings(rec.result.as_ref().unwrap()));
        }
    }
    let left = stop_and_leftovers(rig).await;
    eprintln!("strict: {strict:#?}\nhonoured: {lenient:#?}");
    let has = |tool: &str, rule: &str, file: &str, line: u64| {
        strict
            .iter()
            .any(|f| f.0 == tool && f.1 == rule && f.2 == file && f.3 == Some(line))
    };
    for (tool, rule, file, line) in [
        ("ruff", "F401", "bad.py", 1),
        ("ruff", "F401", "bad.py", 2),
        ("ruff", "F401", "good.py", 1),
        ("eslint", "no-unused-vars", "src/a.js", 1),
        ("eslint", "no-unused-vars", "src/b.js", 2),
        ("eslint", "no-unused-vars", "src/hidden.js", 1),
    ] {
        assert!(
            has(tool, rule, file, line),
            "{tool} {rule} {file}:{line} in {strict:#?}"
        );
    }
    // clippy: allowing a lint Kiln forbids is itself an error (the verdict cannot pass).
    assert!(
        strict
            .iter()
            .any(|f| f.0 == "clippy" && f.1 == "E0453" && f.2 == "src/lib.rs" && f.4 == "high"),
        "{strict:#?}"
    );
    // Asked to honour them, the workspace's configuration and suppressions hold.
    assert_eq!(lenient, Vec::new(), "{lenient:#?}");
    assert!(left.is_empty(), "left on the engine: {left:?}");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shell_injection_directory_names_run_nothing_in_node_go_and_rust_tools() {
    // The node, go and rust fixtures in directories whose names would run e.sh if spliced into
    // a shell string (each quoting style once); e.sh writes into /work. Passed as arguments,
    // they are names: every test and lint run writes nothing and finds the fixture's tests.
    let db = TestDb::new().await;
    let top = tempfile::tempdir().unwrap();
    let evil = "echo owned > /work/pwned\n";
    std::fs::write(top.path().join("e.sh"), evil).unwrap();
    let names = [
        ("node", "n';sh e.sh;'"),
        ("go", "g$(sh e.sh)"),
        ("rust", "r`sh e.sh`\";sh e.sh;\""),
    ];
    for (fixture, name) in names {
        let dir = top.path().join(name);
        copy_dir(&kiln_tests::validation::fixture(fixture), &dir);
        std::fs::write(dir.join("e.sh"), evil).unwrap();
    }
    let rig = Rig::start(&db.pool, "integ-inject").await;
    let mut seen = Vec::new();
    for kind in [JobKind::Test, JobKind::Lint] {
        let rec = run_kind(&db, top.path(), kind, false).await;
        assert_eq!(rec.state, JobState::Succeeded, "{rec:?}");
        let attempts = kiln_queue::admin::attempts(&db.pool, rec.id).await.unwrap();
        assert_eq!(
            attempts[0].diff_counts().map(|c| c.0),
            Some(0),
            "{kind}: e.sh ran: {:?}",
            attempts[0].diff()
        );
        seen.push((kind, rec.result.unwrap()));
    }
    let left = stop_and_leftovers(rig).await;
    let test = &seen[0].1;
    // Each fixture's own counts are (2, 2, 1, 0) (tests/tests/validate.rs).
    assert_eq!(counts(test), (6, 6, 3, 0), "{test}");
    let lint = seen[1].1["findings"].as_array().unwrap();
    // eslint, go vet and clippy each ran in their hostile root and found its fixture's issues.
    for (_, name) in names {
        assert!(
            lint.iter().any(|x| x["file"].as_str().unwrap().starts_with(name)),
            "no finding under {name}: {lint:?}"
        );
    }
    assert!(left.is_empty(), "left on the engine: {left:?}");
}
