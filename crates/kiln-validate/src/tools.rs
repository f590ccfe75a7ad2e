//! The tools each job kind runs per language: a shell script run in the language's image,
//! writing machine-readable reports under `/work/.kiln-validate/reports/` (brought back as
//! output files and left out of the diff) and each tool's exit code next to its report.

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
const PROLOGUE: &str = r#"set -u
R=/work/.kiln-validate/reports
mkdir -p "$R" "$HOME" "$XDG_CACHE_HOME"
cd "/work/$1" || { echo "kiln: project root /work/$1 is missing" >&2; exit 90; }
"#;

/// The test runner script of a language.
pub fn test_script(lang: Language) -> String {
    let body = match lang {
        Language::Python => {
            // The JUnit report goes to fd 3, which is the run's stdout; pytest's own output
            // (and anything the code under test prints) goes to stderr. No file in /work is
            // read as the report, so the code under test cannot overwrite or plant one.
            r#"python3 -m coverage run -m pytest -p no:cacheprovider -o junit_family=xunit1 --junitxml=/dev/fd/3 3>&1 1>&2
echo $? > "$R/pytest.exit"
python3 -m coverage json -q -o "$R/coverage.json" >&2
echo $? > "$R/coverage.exit"
"#
        }
        Language::Javascript => {
            r#"node --test --experimental-test-coverage --test-reporter=spec --test-reporter-destination=stdout --test-reporter=/work/.kiln-validate/node-reporter.mjs --test-reporter-destination="$R/node-test.jsonl"
echo $? > "$R/node-test.exit"
"#
        }
        Language::Go => {
            r#"go test -vet=off -json -coverprofile="$R/go-cover.out" ./... > "$R/go-test.jsonl"
echo $? > "$R/go-test.exit"
"#
        }
        Language::Rust => {
            // Debian's rustc ships no profiler runtime: the tests are instrumented for
            // source-based coverage and linked against LLVM's own (the image's llvm-14 tools
            // read what it writes); the line totals of the workspace's files are exported.
            // The flags go in by `--config`, which cargo joins to the project's own
            // `build.rustflags` (a RUSTFLAGS variable would replace them).
            r#"cov='build.rustflags=["-C","instrument-coverage","-Z","no-profiler-runtime","-C","link-arg=/usr/local/lib/libclang_rt.profile.a","-C","link-arg=-lc"]'
export LLVM_PROFILE_FILE=/tmp/kiln-prof/%p-%m.profraw
cargo test --offline --config "$cov" --no-fail-fast --message-format=json -- -Z unstable-options --format json > "$R/cargo-test.jsonl"
echo $? > "$R/cargo-test.exit"
objs=$(sed -n 's/.*"executable":"\([^"]*\)".*/-object=\1/p' "$R/cargo-test.jsonl" | sort -u)
if [ -n "$objs" ] && llvm-profdata-14 merge -sparse /tmp/kiln-prof/*.profraw -o /tmp/kiln.profdata >&2; then
  llvm-cov-14 export -summary-only -instr-profile=/tmp/kiln.profdata --ignore-filename-regex='^(/usr/|/rustc/|/tmp/)' $objs > "$R/llvm-cov.json"
  echo $? > "$R/llvm-cov.exit"
fi
"#
        }
    };
    format!("{PROLOGUE}{body}")
}

/// The linter script of a language.
pub fn lint_script(lang: Language) -> String {
    let body = match lang {
        Language::Python => {
            r#"ruff check --no-cache --output-format=json --exit-zero . > "$R/ruff.json"
echo $? > "$R/ruff.exit"
"#
        }
        Language::Javascript => {
            r#"cfg="--no-eslintrc -c /work/.kiln-validate/eslintrc.json"
for f in .eslintrc.js .eslintrc.cjs .eslintrc.json .eslintrc.yaml .eslintrc.yml .eslintrc; do
  [ -e "$f" ] && cfg=""
done
grep -q '"eslintConfig"' package.json 2>/dev/null && cfg=""
eslint $cfg --ext .js,.cjs,.mjs -f json -o "$R/eslint.json" .
echo $? > "$R/eslint.exit"
"#
        }
        Language::Go => {
            r#"go vet -json ./... 2> "$R/go-vet.json"
echo $? > "$R/go-vet.exit"
"#
        }
        Language::Rust => {
            r#"cargo clippy --offline --message-format=json > "$R/clippy.jsonl"
echo $? > "$R/clippy.exit"
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
    /// The scanner's name (also its `.exit` file's).
    pub fn name(self) -> &'static str {
        match self {
            Scanner::Semgrep => "semgrep",
            Scanner::DetectSecrets => "detect-secrets",
            Scanner::Bandit => "bandit",
        }
    }
}

/// One scanner's command and the line recording its exit code, run at the workspace top with
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
echo $? > "$R/semgrep.exit"
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
echo $? > "$R/detect-secrets.exit"
"#
            )
        }
        Scanner::Bandit => {
            let nosec = if honour { "" } else { " --ignore-nosec" };
            format!(
                "bandit -q -r{nosec} -x ./.kiln-validate -f json -o \"$R/bandit.json\" -- \"./$2\"\necho $? > \"$R/bandit.exit\"\n"
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

/// The tools a kind runs for a language (the names of their `.exit` files).
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
        assert!(test_script(Language::Python).contains("--junitxml=/dev/fd/3 3>&1 1>&2"));
        assert!(!test_script(Language::Python).contains("pytest.xml"));
        assert!(lint_script(Language::Rust).contains("--message-format=json"));
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
