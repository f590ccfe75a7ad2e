//! Projects with third-party dependencies, in a sandbox with no network: what the workspace
//! carries (Python wheels, a Go `vendor/` tree, `node_modules`, a `cargo vendor` directory) is
//! used offline and the project passes; without it the verdict is never `passed`, and the
//! result names the missing dependency. Real Postgres, images and Docker engine.

use std::path::Path;

use kiln_pipeline::{Source, SubmitOptions};
use kiln_testkit::TestDb;
use kiln_tests::validation::{counts, validate, Rig};
use serde_json::Value;

fn write(root: &Path, files: &[(&str, &str)]) {
    for (rel, text) in files {
        let path = root.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
}

/// Validates `dir` with a worker of its own; the pipeline summary.
async fn verdict_of(dir: &Path, rig_name: &str) -> Value {
    let db = TestDb::new().await;
    let rig = Rig::start(&db.pool, rig_name).await;
    let (s, _, _) = validate(&db, Source::Dir(dir.into()), SubmitOptions::default()).await;
    rig.stop().await;
    s
}

/// Every test case's message and the pipeline's errors, as one text to search.
fn what_it_says(s: &Value) -> String {
    let cases = s["test"]["cases"].as_array().cloned().unwrap_or_default();
    let mut text: Vec<String> = cases
        .iter()
        .filter_map(|c| c["message"].as_str().map(str::to_owned))
        .collect();
    text.push(s["errors"].to_string());
    text.join("\n")
}

fn assert_passed_with_one_test(s: &Value) {
    assert_eq!(s["verdict"], "passed", "{s}");
    assert_eq!(counts(&s["test"]), (1, 0, 0, 0), "{}", s["test"]);
}

fn assert_not_passed_naming(s: &Value, dependency: &str) {
    assert_ne!(s["verdict"], "passed", "{s}");
    assert_eq!(s["test"]["passed"].as_u64().unwrap_or(0), 0, "{s}");
    let said = what_it_says(s);
    assert!(said.contains(dependency), "{dependency} not named in: {said}");
}

// ---- Python: wheels in the workspace -------------------------------------------------------

fn python_project(dir: &Path) {
    write(
        dir,
        &[
            (
                "calc.py",
                "from kilnhelper import double\n\n\ndef quad(x):\n    return double(double(x))\n",
            ),
            (
                "test_calc.py",
                "from calc import quad\n\n\ndef test_quad():\n    assert quad(2) == 8\n",
            ),
        ],
    );
}

/// A pure-Python wheel of `kilnhelper` 1.0 (a wheel is a zip: the package and its
/// dist-info), written by the host's Python.
fn kilnhelper_wheel(wheels: &Path) {
    std::fs::create_dir_all(wheels).unwrap();
    let script = r#"
import sys, zipfile
with zipfile.ZipFile(sys.argv[1], "w") as z:
    z.writestr("kilnhelper/__init__.py", "def double(x):\n    return 2 * x\n\n\ndef never_called():\n    return 0\n")
    z.writestr("kilnhelper-1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: kilnhelper\nVersion: 1.0\n")
    z.writestr("kilnhelper-1.0.dist-info/WHEEL", "Wheel-Version: 1.0\nGenerator: kiln-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
    z.writestr("kilnhelper-1.0.dist-info/RECORD", "")
"#;
    let out = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(wheels.join("kilnhelper-1.0-py3-none-any.whl"))
        .output()
        .expect("python3 runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn python_wheels_in_the_workspace_are_used_offline() {
    let dir = tempfile::tempdir().unwrap();
    python_project(dir.path());
    kilnhelper_wheel(&dir.path().join("wheels"));
    let s = verdict_of(dir.path(), "deps-py").await;
    assert_passed_with_one_test(&s);
    // The wheel's code is not the project's: coverage counts calc.py and the test, every line
    // of which ran (the wheel has a function nobody calls).
    assert_eq!(s["test"]["coverage_percent"].as_f64(), Some(100.0), "{s}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_python_project_without_its_wheels_is_not_a_pass_and_names_the_module() {
    let dir = tempfile::tempdir().unwrap();
    python_project(dir.path());
    let s = verdict_of(dir.path(), "deps-py-missing").await;
    assert_not_passed_naming(&s, "kilnhelper");
}

// ---- Go: a vendor/ tree --------------------------------------------------------------------

fn go_project(dir: &Path) {
    write(
        dir,
        &[
            (
                "go.mod",
                "module example.com/app\n\ngo 1.19\n\nrequire example.com/dep v1.0.0\n",
            ),
            (
                "app.go",
                "// Package app quadruples.\npackage app\n\nimport \"example.com/dep\"\n\n// Quad is four times x.\nfunc Quad(x int) int { return dep.Double(dep.Double(x)) }\n",
            ),
            (
                "app_test.go",
                "package app\n\nimport \"testing\"\n\nfunc TestQuad(t *testing.T) {\n\tif Quad(2) != 8 {\n\t\tt.Fatal(\"quad\")\n\t}\n}\n",
            ),
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_go_vendor_tree_is_used_offline() {
    let dir = tempfile::tempdir().unwrap();
    go_project(dir.path());
    write(
        dir.path(),
        &[
            (
                "vendor/modules.txt",
                "# example.com/dep v1.0.0\n## explicit\nexample.com/dep\n",
            ),
            (
                "vendor/example.com/dep/dep.go",
                "// Package dep doubles.\npackage dep\n\n// Double is two times x.\nfunc Double(x int) int { return 2 * x }\n",
            ),
        ],
    );
    let s = verdict_of(dir.path(), "deps-go").await;
    assert_passed_with_one_test(&s);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_go_module_without_its_dependency_is_not_a_pass_and_names_it() {
    let dir = tempfile::tempdir().unwrap();
    go_project(dir.path());
    let s = verdict_of(dir.path(), "deps-go-missing").await;
    assert_not_passed_naming(&s, "example.com/dep");
}

// ---- Node: node_modules --------------------------------------------------------------------

fn node_project(dir: &Path) {
    write(
        dir,
        &[
            ("package.json", "{\"name\": \"app\", \"version\": \"1.0.0\"}\n"),
            (
                "index.js",
                "const { double } = require('kiln-double');\n\nexports.quad = (x) => double(double(x));\n",
            ),
            (
                "test/index.test.js",
                "const test = require('node:test');\nconst assert = require('node:assert');\nconst { quad } = require('../index.js');\n\ntest('quad', () => {\n  assert.strictEqual(quad(2), 8);\n});\n",
            ),
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn node_modules_in_the_workspace_are_used_offline() {
    let dir = tempfile::tempdir().unwrap();
    node_project(dir.path());
    write(
        dir.path(),
        &[
            (
                "node_modules/kiln-double/package.json",
                "{\"name\": \"kiln-double\", \"version\": \"1.0.0\", \"main\": \"index.js\"}\n",
            ),
            (
                "node_modules/kiln-double/index.js",
                "exports.double = (x) => 2 * x;\n",
            ),
        ],
    );
    let s = verdict_of(dir.path(), "deps-node").await;
    assert_passed_with_one_test(&s);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_project_without_its_modules_is_not_a_pass_and_names_the_module() {
    let dir = tempfile::tempdir().unwrap();
    node_project(dir.path());
    let s = verdict_of(dir.path(), "deps-node-missing").await;
    assert_not_passed_naming(&s, "kiln-double");
}

// ---- Rust: cargo vendor --------------------------------------------------------------------
// (A crate whose dependency is not vendored is `validate::a_rust_project_whose_dependencies_
// cannot_resolve_is_an_error_not_a_pass`.)

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cargo_vendor_directory_is_used_offline() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        &[
            (
                "Cargo.toml",
                "[package]\nname = \"uses-cfg-if\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[dependencies]\ncfg-if = \"1\"\n",
            ),
            (
                "src/lib.rs",
                "cfg_if::cfg_if! {\n    if #[cfg(test)] {\n        /// Two under test.\n        pub fn two() -> u8 {\n            2\n        }\n    } else {\n        /// Two.\n        pub fn two() -> u8 {\n            2\n        }\n    }\n}\n\n#[test]\nfn two_is_two() {\n    assert_eq!(two(), 2);\n}\n",
            ),
        ],
    );
    // `cargo vendor` on the host, from the registry cache the workspace's own build filled
    // (cfg-if is one of Kiln's dependencies): no network needed here either.
    let out = std::process::Command::new("cargo")
        .args(["vendor", "--offline", "--quiet", "vendor"])
        .current_dir(dir.path())
        .output()
        .expect("cargo runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // The host's cargo may be newer than the image's (Debian's), which reads lock files up to
    // version 3; for registry packages versions 3 and 4 are written alike.
    let lock = dir.path().join("Cargo.lock");
    let text = std::fs::read_to_string(&lock).unwrap();
    std::fs::write(&lock, text.replace("\nversion = 4\n", "\nversion = 3\n")).unwrap();
    write(
        dir.path(),
        &[(
            ".cargo/config.toml",
            "[source.crates-io]\nreplace-with = \"vendored-sources\"\n\n[source.vendored-sources]\ndirectory = \"vendor\"\n",
        )],
    );
    let s = verdict_of(dir.path(), "deps-rust").await;
    assert_passed_with_one_test(&s);
}
