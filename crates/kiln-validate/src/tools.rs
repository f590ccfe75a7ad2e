//! The tools each job kind runs per language: a shell script run in the language's image.
//! A test runner's or linter's report is the run's stdout, and its exit code the run's: the
//! script sends everything else to stderr, and nothing in `/work` (which the code under test
//! can write) is read as a test or lint report. Scanners, which run no workspace code, write
//! theirs under `/work/.kiln-validate/reports/` (brought back as output files and left out of
//! the diff), as do coverage tools.

use crate::language::Language;
use kiln_queue::JobKind;

/// Kiln's scratch directory inside `/work`: support files in, reports out. A workspace's own
/// entries under it are replaced.
pub const SCRATCH: &str = ".kiln-validate";
/// Where the reports are written, relative to `/work`.
pub const REPORTS: &str = ".kiln-validate/reports";

/// Semgrep rules shipped with Kiln, per language (uploaded into the scratch directory, so no
/// network is needed at run time).
pub const SEMGREP_RULES: &[(Language, &str)] = &[
    (Language::Python, include_str!("../assets/semgrep/python.yml")),
    (
        Language::Javascript,
        include_str!("../assets/semgrep/javascript.yml"),
    ),
    (Language::Go, include_str!("../assets/semgrep/go.yml")),
    (Language::Rust, include_str!("../assets/semgrep/rust.yml")),
];
/// Node test-runner reporter writing JSON lines.
pub const NODE_REPORTER: &str = include_str!("../assets/node-reporter.mjs");
/// ESLint configuration used when the project has none.
pub const ESLINT_CONFIG: &str = include_str!("../assets/eslintrc.json");

/// Environment for every tool run: caches and homes on the `/tmp` tmpfs, nothing written
/// into the workspace that is not a report.
pub const ENV: &[(&str, &str)] = &[
    ("HOME", "/tmp/home"),
    ("XDG_CACHE_HOME", "/tmp/cache"),
    ("PYTHONDONTWRITEBYTECODE", "1"),
    ("COVERAGE_FILE", "/tmp/kiln.coverage"),
    ("CARGO_TARGET_DIR", "/tmp/target"),
    ("RUSTC_BOOTSTRAP", "1"),
    ("NO_COLOR", "1"),
];

/// Common prologue: `$1` is the project root relative to `/work`; `$R` the report directory.
/// The run's stdout is kept on fd 3 for the one report the script writes there; fd 1 is
/// stderr from here on, for the tools and everything they run.
const PROLOGUE: &str = r#"set -u
exec 3>&1 1>&2
R=/work/.kiln-validate/reports
mkdir -p "$R" "$HOME" "$XDG_CACHE_HOME"
cd "/work/$1" || { echo "kiln: project root /work/$1 is missing" >&2; exit 90; }
"#;

/// The test runner script of a language. The runner's report goes to the run's stdout and
/// the script exits with the runner's code; the runner gets the stdout as its own fd 1 (`>&3
/// 3>&-`) and passes none of it to the tests it starts (go and node pipe their children's
/// output; cargo's test binaries write libtest's JSON there themselves, see
/// `parse::tests::cargo_test`).
pub fn test_script(lang: Language) -> String {
    let body = match lang {
        Language::Python => {
            // The JUnit report goes to fd 3 (the run's stdout); pytest's own output and
            // anything the code under test prints go to stderr. Dependencies come as wheels
            // in the project's `wheels/` or `wheelhouse/` (the sandbox has no index to reach):
            // each is unpacked, as pip would install it, into /tmp (zipfile never writes
            // outside the target) and put on the path; coverage leaves them out.
            r#"python3 - <<'PY'
import glob, zipfile
for wheel in sorted(glob.glob("wheels/*.whl") + glob.glob("wheelhouse/*.whl")):
    zipfile.ZipFile(wheel).extractall("/tmp/kiln-wheels")
PY
[ -d /tmp/kiln-wheels ] && export PYTHONPATH="/tmp/kiln-wheels${PYTHONPATH:+:$PYTHONPATH}"
python3 -m coverage run --omit='/tmp/*' -m pytest -p no:cacheprovider -o junit_family=xunit1 --junitxml=/dev/fd/3
rc=$?
python3 -m coverage json -q -o "$R/coverage.json"
exit $rc
"#
        }
        Language::Javascript => {
            r#"node --test --experimental-test-coverage --test-reporter=spec --test-reporter-destination=stderr --test-reporter=/work/.kiln-validate/node-reporter.mjs --test-reporter-destination=stdout >&3 3>&-
exit $?
"#
        }
        Language::Go => {
            // The image's GOFLAGS say -mod=mod with no proxy; a module that vendors its
            // dependencies (vendor/modules.txt) is built from them instead.
            r#"mod=; [ -f vendor/modules.txt ] && mod=-mod=vendor
go test $mod -vet=off -json -coverprofile="$R/go-cover.out" ./... >&3 3>&-
exit $?
"#
        }
        Language::Rust => {
            // Debian's rustc ships no profiler runtime: the tests are instrumented for
            // source-based coverage and linked against LLVM's own (the image's llvm-14 tools
            // read what it writes); the line totals of the workspace's files are exported.
            // The flags go in by `--config`, which cargo joins to the project's own
            // `build.rustflags` (a RUSTFLAGS variable would replace them). The test binaries
            // are listed by a second, no-op build (the report itself is not kept in /work).
            r#"cov='build.rustflags=["-C","instrument-coverage","-Z","no-profiler-runtime","-C","link-arg=/usr/local/lib/libclang_rt.profile.a","-C","link-arg=-lc"]'
export LLVM_PROFILE_FILE=/tmp/kiln-prof/%p-%m.profraw
cargo test --offline --config "$cov" --no-fail-fast --message-format=json -- -Z unstable-options --format json >&3 3>&-
rc=$?
objs=$(cargo test --offline --config "$cov" --no-run --message-format=json 2>/dev/null | sed -n 's/.*"executable":"\([^"]*\)".*/-object=\1/p' | sort -u)
if [ -n "$objs" ] && llvm-profdata-14 merge -sparse /tmp/kiln-prof/*.profraw -o /tmp/kiln.profdata; then
  llvm-cov-14 export -summary-only -instr-profile=/tmp/kiln.profdata --ignore-filename-regex='^(/usr/|/rustc/|/tmp/)' $objs > "$R/llvm-cov.json"
fi
exit $rc
"#
        }
    };
    format!("{PROLOGUE}{body}")
}

/// The linter script of a language; its report is the run's stdout. Unless `honour` is set,
/// the workspace's lint configuration and suppressions are ignored: ruff runs `--isolated
/// --ignore-noqa`; eslint with Kiln's configuration only, no inline `eslint-disable` and no
/// `.eslintignore` (so no workspace code runs in it); clippy with no `RUSTFLAGS` from
/// `.cargo/config`, no `clippy.toml`, the default lint groups forced to warn over any
/// `allow`, and each deny-by-default lint forbidden (an `allow` of one is an error).
pub fn lint_script(lang: Language, honour: bool) -> String {
    let body = match (lang, honour) {
        (Language::Python, false) => {
            r#"ruff check --no-cache --isolated --ignore-noqa --output-format=json --exit-zero . >&3 3>&-
exit $?
"#
        }
        (Language::Python, true) => {
            r#"ruff check --no-cache --output-format=json --exit-zero . >&3 3>&-
exit $?
"#
        }
        (Language::Javascript, false) => {
            r#": > /tmp/kiln-eslintignore
eslint --no-eslintrc -c /work/.kiln-validate/eslintrc.json --no-inline-config --ignore-path /tmp/kiln-eslintignore --ext .js,.cjs,.mjs -f json . >&3 3>&-
exit $?
"#
        }
        (Language::Javascript, true) => {
            r#"cfg="--no-eslintrc -c /work/.kiln-validate/eslintrc.json"
for f in .eslintrc.js .eslintrc.cjs .eslintrc.json .eslintrc.yaml .eslintrc.yml .eslintrc; do
  [ -e "$f" ] && cfg=""
done
grep -q '"eslintConfig"' package.json 2>/dev/null && cfg=""
eslint $cfg --ext .js,.cjs,.mjs -f json . >&3 3>&-
exit $?
"#
        }
        // go vet has no suppressions and runs no workspace code; its JSON is on stderr.
        (Language::Go, _) => {
            r#"mod=; [ -f vendor/modules.txt ] && mod=-mod=vendor
go vet $mod -json ./... 2>&3 3>&-
exit $?
"#
        }
        (Language::Rust, false) => {
            r#"mkdir -p /tmp/kiln-clippy
deny=$(clippy-driver -W help 2>/dev/null | sed -n 's/^ *clippy::correctness  //p' | sed 's/, */ -F /g')
RUSTFLAGS= CLIPPY_CONF_DIR=/tmp/kiln-clippy cargo clippy --offline --message-format=json -- --force-warn clippy::style --force-warn clippy::complexity --force-warn clippy::perf --force-warn clippy::suspicious --force-warn unused ${deny:+-F $deny} >&3 3>&-
exit $?
"#
        }
        (Language::Rust, true) => {
            r#"cargo clippy --offline --message-format=json >&3 3>&-
exit $?
"#
        }
    };
    format!("{PROLOGUE}{body}")
}

/// Workspace files that tell a security scanner what to skip: semgrep's ignore lists, bandit's
/// INI configuration, detect-secrets' baseline. Left out of a scan's workspace unless the
/// request asks to honour them ([`scanner_command`]'s `honour`).
pub const SCANNER_CONFIG_FILES: &[&str] = &[".semgrepignore", ".bandit", ".secrets.baseline"];

/// The security scanners of the python image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scanner {
    /// semgrep with Kiln's rules.
    Semgrep,
    /// detect-secrets over every file.
    DetectSecrets,
    /// bandit on the Python project root (`$2`).
    Bandit,
}

impl Scanner {
    /// The scanner's name.
    pub fn name(self) -> &'static str {
        match self {
            Scanner::Semgrep => "semgrep",
            Scanner::DetectSecrets => "detect-secrets",
            Scanner::Bandit => "bandit",
        }
    }
}

/// One scanner's command, the script exiting with its code, run at the workspace top with
/// [`security_args`]' arguments. semgrep runs as its OCaml command line (`--experimental`):
/// the same findings and files scanned as the Python one on every corpus project and fixture,
/// at a tenth of the start-up (docs/decisions.md); that mode ignores `--output`, so its JSON
/// goes to the report by redirection. Unless `honour` is set, in-code suppressions (`# nosemgrep`,
/// `# nosec`, `pragma: allowlist secret`) are ignored.
pub fn scanner_command(scanner: Scanner, langs: &[Language], honour: bool) -> String {
    match scanner {
        Scanner::Semgrep => {
            let configs: String = langs
                .iter()
                .map(|l| format!(" --config /work/.kiln-validate/semgrep/{}.yml", l.as_str()))
                .collect();
            let nosem = if honour { "" } else { " --disable-nosem" };
            format!(
                r#"semgrep scan --experimental --metrics=off --disable-version-check --oss-only --no-git-ignore{nosem}{configs} --exclude .kiln-validate --json -q . > "$R/semgrep.json"
exit $?
"#
            )
        }
        Scanner::DetectSecrets => {
            let allowlist = if honour {
                ""
            } else {
                " --disable-filter detect_secrets.filters.allowlist.is_line_allowlisted"
            };
            format!(
                r#"detect-secrets scan --all-files{allowlist} --exclude-files '^\.kiln-validate/' . > "$R/secrets.json"
exit $?
"#
            )
        }
        Scanner::Bandit => {
            let nosec = if honour { "" } else { " --ignore-nosec" };
            format!(
                "bandit -q -r{nosec} -x ./.kiln-validate -f json -o \"$R/bandit.json\" -- \"./$2\"\nexit $?\n"
            )
        }
    }
}

/// The script of one scanner's run (python image), at the workspace top: semgrep with Kiln's
/// rules for `langs`, detect-secrets, or bandit on the Python project root, which the script
/// takes as its `$2` (see [`security_args`]): nothing from the workspace is ever part of the
/// script's text. Each scanner runs in its own container (`runner::security`).
pub fn scanner_script(scanner: Scanner, langs: &[Language], honour: bool) -> String {
    format!("{PROLOGUE}{}", scanner_command(scanner, langs, honour))
}

/// The scanners a security scan runs: semgrep and detect-secrets always, bandit when there is
/// a Python project.
pub fn scanners(bandit: bool) -> Vec<Scanner> {
    let mut v = vec![Scanner::Semgrep, Scanner::DetectSecrets];
    if bandit {
        v.push(Scanner::Bandit);
    }
    v
}

/// The script's arguments after `$0`: `$1` the scan's root (the top, `""`), `$2` the Python
/// project root bandit scans (`""` is the top).
pub fn security_args(python_root: Option<&str>) -> Vec<String> {
    let mut args = vec![String::new()];
    args.extend(python_root.map(str::to_string));
    args
}

/// The tools a kind runs for a language (their names in errors and results).
pub fn tools_of(kind: JobKind, lang: Language) -> Vec<&'static str> {
    match (kind, lang) {
        (JobKind::Test, Language::Python) => vec!["pytest"],
        (JobKind::Test, Language::Javascript) => vec!["node-test"],
        (JobKind::Test, Language::Go) => vec!["go-test"],
        (JobKind::Test, Language::Rust) => vec!["cargo-test"],
        (JobKind::Lint, Language::Python) => vec!["ruff"],
        (JobKind::Lint, Language::Javascript) => vec!["eslint"],
        (JobKind::Lint, Language::Go) => vec!["go-vet"],
        (JobKind::Lint, Language::Rust) => vec!["clippy"],
        _ => vec![],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_name_their_reports() {
        assert!(test_script(Language::Python).contains("exec 3>&1 1>&2"));
        assert!(test_script(Language::Python).contains("--junitxml=/dev/fd/3"));
        assert!(!test_script(Language::Python).contains("pytest.xml"));
        // Test and lint reports are the run's stdout, never a file under /work.
        for lang in [
            Language::Python,
            Language::Javascript,
            Language::Go,
            Language::Rust,
        ] {
            for script in [
                test_script(lang),
                lint_script(lang, false),
                lint_script(lang, true),
            ] {
                assert!(script.contains(">&3") || script.contains("/dev/fd/3"), "{script}");
                assert!(!script.contains(".exit"), "{script}");
            }
        }
        assert!(lint_script(Language::Rust, false).contains("--message-format=json"));
        let s = scanner_script(Scanner::Semgrep, &[Language::Go, Language::Python], false);
        assert!(s.contains("semgrep/go.yml") && s.contains("semgrep/python.yml"));
        assert!(s.contains(r#"> "$R/semgrep.json""#), "{s}");
        let b = scanner_script(Scanner::Bandit, &[Language::Python], false);
        assert!(b.contains(r#"bandit -q -r --ignore-nosec"#) && b.contains(r#"-- "./$2""#));
        assert_eq!(scanners(false), [Scanner::Semgrep, Scanner::DetectSecrets]);
        assert_eq!(scanners(true).last(), Some(&Scanner::Bandit));
    }

    #[test]
    fn a_hostile_root_is_an_argument_never_script_text() {
        let root = "x';sh e.sh;'";
        let args = security_args(Some(root));
        assert_eq!(args, ["", root]);
        // The scripts do not depend on the root at all: there is nowhere for it to go.
        for scanner in scanners(true) {
            let s = scanner_script(scanner, &[Language::Python], false);
            assert!(!s.contains("e.sh") && !s.contains("x'"));
        }
        assert_eq!(security_args(None), [""]);
    }

    #[test]
    fn suppressions_are_ignored_unless_asked_for() {
        let all = |honour| -> String {
            scanners(true)
                .into_iter()
                .map(|s| scanner_script(s, &[Language::Python], honour))
                .collect()
        };
        let strict = all(false);
        for flag in [
            "--disable-nosem",
            "--ignore-nosec",
            "--disable-filter detect_secrets.filters.allowlist.is_line_allowlisted",
        ] {
            assert!(strict.contains(flag), "{flag}");
        }
        let lenient = all(true);
        assert!(!lenient.contains("--disable-nosem") && !lenient.contains("--ignore-nosec"));
        assert!(!lenient.contains("--disable-filter"));
    }
}
