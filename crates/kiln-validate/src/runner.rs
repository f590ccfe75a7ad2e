//! Runs a validation kind on a workspace: one sandbox run per language project (one for the
//! whole workspace for security scans), reports parsed and merged into one result.

use std::collections::HashMap;
use std::time::Duration;

use kiln_artifacts::{Tree, TreeEntry};
use kiln_queue::JobKind;
use kiln_sandbox::{Entry, JobLabels, JobReport, JobSpec, Limits, Outcome, Sandbox, Workspace};
use tokio::time::Instant;

use crate::details::Run;
use crate::error::ValidateError;
use crate::language::{Language, Project};
use crate::logs::LogForwarder;
use crate::parse::{self, ParseError};
use crate::result::{Coverage, Findings, TestResult, TestStatus};
use crate::tools::{self, REPORTS, SCRATCH};

/// Image tags by image name (`python` → `kiln-python:…`).
#[derive(Debug, Clone, Default)]
pub struct Images(pub HashMap<String, String>);

impl Images {
    /// The tags of the job images built from `images_dir` (see `kiln_images::image_tag`).
    pub fn from_dir(images_dir: &std::path::Path) -> Result<Images, ValidateError> {
        let mut m = HashMap::new();
        for name in kiln_images::JOB_IMAGES {
            let tag = kiln_images::image_tag(images_dir, name)
                .map_err(|e| ValidateError::Image(name.to_string(), e.to_string()))?;
            m.insert(name.to_string(), tag);
        }
        Ok(Images(m))
    }

    /// The tag of image `name`.
    pub fn tag(&self, name: &str) -> Result<&str, ValidateError> {
        self.0
            .get(name)
            .map(String::as_str)
            .ok_or_else(|| ValidateError::Image(name.to_string(), "not configured".into()))
    }
}

/// Most bytes of a run's stdout kept, so a test report written there is read whole.
pub const REPORT_ON_STDOUT_BYTES: usize = 8 << 20;

/// A linter report parser (bytes, project root).
type LintParser = fn(&[u8], &str) -> Result<Findings, ParseError>;
/// A scanner report parser (paths are workspace-relative already).
type ScanParser = fn(&[u8]) -> Result<Findings, ParseError>;

/// Everything one attempt's runs share.
pub struct Attempt<'a> {
    /// The sandbox.
    pub sandbox: &'a Sandbox,
    /// Image tags.
    pub images: &'a Images,
    /// Labels of the attempt's containers.
    pub labels: JobLabels,
    /// When the tools must have finished (a little before the job's own timeout).
    pub deadline: Instant,
    /// Live logs, when the attempt has a job row to attach them to.
    pub logs: Option<&'a LogForwarder>,
    /// The sandbox limits of the attempt's runs (the workspace quota of its queue).
    pub limits: Limits,
}

/// The workspace as the sandbox takes it, with Kiln's scratch files added (a workspace's own
/// entries under the scratch directory are dropped).
pub fn sandbox_workspace(tree: &Tree) -> Result<Workspace, ValidateError> {
    let mut ws = Workspace::new();
    for (path, entry) in &tree.entries {
        if path == SCRATCH || path.starts_with(&format!("{SCRATCH}/")) {
            continue;
        }
        let e = match entry {
            TreeEntry::File { data, executable } => Entry::File {
                data: data.clone(),
                mode: if *executable { 0o755 } else { 0o644 },
            },
            TreeEntry::Symlink { target } => Entry::Symlink {
                target: target.clone(),
            },
        };
        ws.insert(path, e)?;
    }
    ws.add_file(&format!("{SCRATCH}/node-reporter.mjs"), tools::NODE_REPORTER)?;
    ws.add_file(&format!("{SCRATCH}/eslintrc.json"), tools::ESLINT_CONFIG)?;
    for (lang, rules) in tools::SEMGREP_RULES {
        ws.add_file(&format!("{SCRATCH}/semgrep/{}.yml", lang.as_str()), *rules)?;
    }
    Ok(ws)
}

/// `ws` without the scanners' own configuration and ignore files, wherever they are.
fn without_scanner_config(ws: &Workspace) -> Result<Workspace, ValidateError> {
    let mut out = Workspace::new();
    for (path, entry) in ws.entries() {
        let name = path.rsplit('/').next().unwrap_or(path);
        if !tools::SCANNER_CONFIG_FILES.contains(&name) {
            out.insert(path, entry.clone())?;
        }
    }
    Ok(out)
}

/// One finished sandbox run and its report files.
struct Done {
    report: JobReport,
    label: String,
}

impl Done {
    fn file(&self, name: &str) -> Option<&[u8]> {
        self.report.outputs.file(&format!("{REPORTS}/{name}"))
    }

    /// The report the run's tool wrote to the run's stdout (every test runner's and
    /// linter's, see [`tools::test_script`]), possibly empty (a JSON-lines report with no
    /// event): a report cut at the stdout cap is unreadable, not partly read.
    fn stdout_report(&self, what: &'static str) -> Result<&[u8], Option<ParseError>> {
        let out = &self.report.stdout;
        if out.truncated() {
            return Err(Some(ParseError::new(
                what,
                format!("the report is larger than {} bytes", out.kept.len()),
            )));
        }
        Ok(&out.kept)
    }

    /// The exit code of the run's tool: the script exits with it.
    fn exit_code(&self) -> Option<i32> {
        self.report.exit_code.and_then(|c| i32::try_from(c).ok())
    }

    fn timed_out(&self) -> bool {
        self.report.outcome == Outcome::TimedOut
    }

    fn timeout_error(&self, tool: &str, lang: &str) -> ValidateError {
        ValidateError::TimedOut {
            tool: tool.to_string(),
            language: lang.to_string(),
            seconds: self.report.timings.run_ms / 1e3,
        }
    }

    /// Why `tool` left no usable report: its exit code, the run's outcome, its last words.
    fn failure(&self, tool: &str, lang: &str, why: Option<ParseError>) -> ValidateError {
        let stderr = self.report.stderr.text();
        let tail: String = stderr
            .chars()
            .rev()
            .take(2000)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        let exit = self
            .exit_code()
            .map(|c| c.to_string())
            .unwrap_or_else(|| "none".into());
        let mut detail = format!("outcome {:?}, exit code {exit}", self.report.outcome);
        if let Some(e) = why {
            detail.push_str(&format!(", report unreadable: {e}"));
        } else {
            detail.push_str(", no report written");
        }
        if !tail.trim().is_empty() {
            detail.push_str(&format!("; stderr: {}", tail.trim()));
        }
        ValidateError::ToolFailed {
            tool: tool.to_string(),
            language: lang.to_string(),
            detail,
        }
    }
}

async fn run_script(
    at: &Attempt<'_>,
    ws: &Workspace,
    image_name: &str,
    label: String,
    script: String,
    args: &[String],
    runs: &mut Vec<Run>,
) -> Result<Done, ValidateError> {
    let image = at.images.tag(image_name)?.to_string();
    let now = Instant::now();
    let timeout = at
        .deadline
        .saturating_duration_since(now)
        .max(Duration::from_secs(1));
    // The script is Kiln's own text; everything from the workspace (project roots) reaches
    // it as an argument, never spliced into it.
    let mut argv: Vec<&str> = vec!["sh", "-c", &script, "kiln"];
    argv.extend(args.iter().map(String::as_str));
    let mut spec = JobSpec::new(image.clone(), &argv, at.labels.clone());
    spec.limits = at.limits.clone();
    // Room for a test report on stdout (pytest's JUnit XML).
    spec.limits.log_cap_bytes = spec.limits.log_cap_bytes.max(REPORT_ON_STDOUT_BYTES);
    spec.env = tools::ENV
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    spec.workspace = ws.clone();
    spec.timeout = timeout;
    spec.outputs = vec![REPORTS.to_string()];
    spec.diff_ignore = vec![SCRATCH.to_string()];
    if let Some(l) = at.logs {
        l.note(&format!(
            "{label}: starting in {image} (timeout {:.0} s)",
            timeout.as_secs_f64()
        ));
    }
    tracing::info!(job = at.labels.job_id, attempt = at.labels.attempt, %label, %image, "validation run starting");
    let report = at.sandbox.run(&spec, at.logs.map(|l| l.sender())).await?;
    tracing::info!(job = at.labels.job_id, %label, outcome = ?report.outcome, exit = ?report.exit_code,
        start_ms = report.timings.container_start_ms, run_ms = report.timings.run_ms, "validation run finished");
    if let Some(l) = at.logs {
        l.count_lost(report.live_lost_bytes);
        l.note(&format!(
            "{label}: {:?} after {:.1} s",
            report.outcome,
            report.timings.total_ms / 1e3
        ));
    }
    if let Some(dir) = std::env::var_os("KILN_VALIDATE_KEEP_REPORTS") {
        keep_reports(std::path::Path::new(&dir), &label, &report);
    }
    runs.push(Run {
        label: label.clone(),
        image,
        report: report.clone(),
    });
    refuse_disk_quota(&label, &report)?;
    Ok(Done { report, label })
}

/// A run that went past its workspace quota ends the job with an error, whatever its tools
/// reported: the sandbox's `disk_quota` outcome is never read as a pass.
fn refuse_disk_quota(label: &str, report: &JobReport) -> Result<(), ValidateError> {
    if report.outcome != Outcome::DiskQuota {
        return Ok(());
    }
    let disk = report.disk.unwrap_or_default();
    Err(ValidateError::DiskQuota {
        label: label.to_string(),
        used_bytes: disk.used_bytes,
        used_files: disk.used_files,
    })
}

/// Debugging aid: copies a run's report files under `dir/LABEL/` (used to capture the real
/// tool output the parser tests read).
fn keep_reports(dir: &std::path::Path, label: &str, report: &JobReport) {
    let dest = dir.join(label.replace(' ', "-"));
    if !report.stdout.kept.is_empty() {
        let _ = std::fs::create_dir_all(&dest);
        let _ = std::fs::write(dest.join("stdout"), &report.stdout.kept);
    }
    for (path, entry) in &report.outputs.files {
        if let kiln_sandbox::OutputEntry::File { data, .. } = entry {
            let name = path.rsplit('/').next().unwrap_or(path);
            let _ = std::fs::create_dir_all(&dest);
            let _ = std::fs::write(dest.join(name), data);
        }
    }
}

/// Runs the tests of every project; returns the merged result.
pub async fn test(
    at: &Attempt<'_>,
    ws: &Workspace,
    projects: &[Project],
    runs: &mut Vec<Run>,
) -> Result<TestResult, ValidateError> {
    let mut total = TestResult::default();
    let mut coverage = Coverage::default();
    for p in projects {
        let lang = p.language;
        let label = format!("{lang} test");
        let done = run_script(
            at,
            ws,
            lang.image(),
            label,
            tools::test_script(lang),
            std::slice::from_ref(&p.root),
            runs,
        )
        .await?;
        let tool = tools::tools_of(JobKind::Test, lang)[0];
        let (result, cov) = match parse_test(&done, lang, &p.root) {
            Ok(r) => r,
            Err(_) if done.timed_out() => (TestResult::default(), Coverage::default()),
            Err(e) => return Err(done.failure(tool, lang.as_str(), e)),
        };
        let mut result = result;
        if done.timed_out() {
            let secs = done.report.timings.run_ms / 1e3;
            result.push(
                format!("{}{tool}", if p.root.is_empty() { String::new() } else { format!("{}: ", p.root) }),
                TestStatus::Error,
                Some(format!(
                    "timed out: the {lang} test run was killed after {secs:.0} s; tests that had not finished are not counted"
                )),
            );
        } else if result.failed + result.errors == 0 {
            // The runner failed with no failing test to show for it (a build error, a crash).
            if let Some(code) = done.exit_code().filter(|c| !ok_exit(lang, *c)) {
                let stderr = done.report.stderr.text();
                let tail: String = stderr
                    .chars()
                    .rev()
                    .take(4000)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect();
                result.push(
                    format!(
                        "{}{tool}",
                        if p.root.is_empty() {
                            String::new()
                        } else {
                            format!("{}: ", p.root)
                        }
                    ),
                    TestStatus::Error,
                    Some(format!(
                        "{tool} exited {code} without a failing test: {}",
                        tail.trim()
                    )),
                );
            }
        }
        tracing::debug!(label = %done.label, passed = result.passed, failed = result.failed, "parsed");
        coverage.covered += cov.covered;
        coverage.total += cov.total;
        total.absorb(result);
    }
    total.coverage_percent = coverage.percent();
    Ok(total)
}

/// Exit codes a run with no failing or erroring test can end with: success, and pytest's "no
/// tests collected". Anything else without a failure to show for it (pytest's, node's or go's
/// 1, cargo's 101) means the runner could not do its work — a dependency that does not
/// resolve, a crash — and becomes an error case rather than an empty, passing result.
fn ok_exit(lang: Language, code: i32) -> bool {
    match lang {
        Language::Python => matches!(code, 0 | 5),
        Language::Javascript | Language::Go | Language::Rust => code == 0,
    }
}

fn parse_test(done: &Done, lang: Language, root: &str) -> Result<(TestResult, Coverage), Option<ParseError>> {
    let report = |what| done.stdout_report(what);
    // Coverage is optional: a report that is missing or unreadable leaves it unmeasured.
    let coverage = |name: &str, parse: fn(&[u8]) -> Result<Coverage, ParseError>| {
        done.file(name).and_then(|b| parse(b).ok()).unwrap_or_default()
    };
    match lang {
        Language::Python => Ok((
            parse::tests::junit(
                Some(report("junit")?).filter(|r| !r.is_empty()).ok_or(None)?,
                root,
            )
            .map_err(Some)?,
            coverage("coverage.json", parse::tests::coverage_py),
        )),
        Language::Javascript => parse::tests::node(report("node test events")?, root).map_err(Some),
        Language::Go => Ok((
            parse::tests::go_test(report("go test -json")?).map_err(Some)?,
            coverage("go-cover.out", parse::tests::go_cover),
        )),
        Language::Rust => Ok((
            parse::tests::cargo_test(report("cargo test")?, root).map_err(Some)?,
            coverage("llvm-cov.json", parse::tests::llvm_cov),
        )),
    }
}

/// Runs the linters of every project; returns the merged findings. Unless `honour` is set, the
/// workspace's lint configuration and suppressions are ignored ([`tools::lint_script`]).
pub async fn lint(
    at: &Attempt<'_>,
    ws: &Workspace,
    projects: &[Project],
    honour: bool,
    runs: &mut Vec<Run>,
) -> Result<Findings, ValidateError> {
    let mut all = Findings::default();
    for p in projects {
        let lang = p.language;
        let done = run_script(
            at,
            ws,
            lang.image(),
            format!("{lang} lint"),
            tools::lint_script(lang, honour),
            std::slice::from_ref(&p.root),
            runs,
        )
        .await?;
        let tool = tools::tools_of(JobKind::Lint, lang)[0];
        let (what, parser): (&'static str, LintParser) = match lang {
            Language::Python => ("ruff", parse::lint::ruff),
            Language::Javascript => ("eslint", parse::lint::eslint),
            Language::Go => ("go vet", parse::lint::go_vet),
            Language::Rust => ("clippy", parse::lint::clippy),
        };
        if done.timed_out() {
            return Err(done.timeout_error(tool, lang.as_str()));
        }
        let bytes = done
            .stdout_report(what)
            .map_err(|e| done.failure(tool, lang.as_str(), e))?;
        // go vet and clippy exit non-zero when the code does not compile; their reports
        // still hold what they found (as findings), so only an unreadable report fails.
        let found = parser(bytes, &p.root).map_err(|e| done.failure(tool, lang.as_str(), Some(e)))?;
        if lang == Language::Rust && found.findings.is_empty() && done.exit_code().is_some_and(|c| c != 0) {
            return Err(done.failure(
                tool,
                lang.as_str(),
                Some(ParseError::new("clippy", "clippy failed without a diagnostic")),
            ));
        }
        if lang == Language::Javascript && done.exit_code().is_some_and(|c| c >= 2) {
            return Err(done.failure(
                tool,
                lang.as_str(),
                Some(ParseError::new("eslint", "eslint stopped with an error")),
            ));
        }
        all.findings.extend(found.findings);
    }
    crate::testcode::mark(&mut all, ws);
    all.sort();
    Ok(all)
}

/// Runs the security scanners once over the whole workspace (python image): semgrep with
/// Kiln's rules for the languages present, detect-secrets, and bandit for Python, each in its
/// own container and all at once (a container has one CPU: the scan takes as long as its
/// slowest scanner, not their sum). Unless `honour` is set, the workspace's suppressions and
/// scanner configuration ([`tools::SCANNER_CONFIG_FILES`]) are ignored.
pub async fn security(
    at: &Attempt<'_>,
    ws: &Workspace,
    projects: &[Project],
    honour: bool,
    runs: &mut Vec<Run>,
) -> Result<Findings, ValidateError> {
    let langs: Vec<Language> = projects.iter().map(|p| p.language).collect();
    let py_root = projects
        .iter()
        .find(|p| p.language == Language::Python)
        .map(|p| p.root.as_str());
    let args = tools::security_args(py_root);
    let scanned = if honour {
        ws.clone()
    } else {
        without_scanner_config(ws)?
    };
    let scanners = tools::scanners(py_root.is_some());
    let started = scanners.iter().map(|s| {
        let (scanned, args, langs) = (&scanned, &args, &langs);
        async move {
            let mut own = Vec::new();
            let script = tools::scanner_script(*s, langs, honour);
            let label = format!("security-scan {}", s.name());
            let done = run_script(at, scanned, "python", label, script, args, &mut own).await;
            (*s, done, own)
        }
    });
    let finished = futures::future::join_all(started).await;
    let what = langs.iter().map(|l| l.as_str()).collect::<Vec<_>>().join("+");
    let mut all = Findings::default();
    let mut first_err = None;
    for (scanner, done, own) in finished {
        runs.extend(own);
        let found = done.and_then(|done| scanner_findings(scanner, &done, &what));
        match found {
            Ok(f) => all.findings.extend(f.findings),
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    if let Some(e) = first_err {
        return Err(e);
    }
    crate::testcode::mark(&mut all, ws);
    all.sort();
    Ok(all)
}

/// One scanner's findings from its run's report.
fn scanner_findings(scanner: tools::Scanner, done: &Done, what: &str) -> Result<Findings, ValidateError> {
    let tool = scanner.name();
    if done.timed_out() {
        return Err(done.timeout_error(tool, what));
    }
    let (file, parser): (&str, ScanParser) = match scanner {
        tools::Scanner::Semgrep => ("semgrep.json", parse::security::semgrep),
        tools::Scanner::DetectSecrets => ("secrets.json", parse::security::detect_secrets),
        tools::Scanner::Bandit => ("bandit.json", parse::security::bandit),
    };
    let bytes = done.file(file).ok_or_else(|| done.failure(tool, what, None))?;
    parser(bytes).map_err(|e| done.failure(tool, what, Some(e)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_sandbox::quota::DiskUsage;

    fn report(outcome: Outcome) -> JobReport {
        JobReport {
            outcome,
            exit_code: Some(0),
            usage: Default::default(),
            stdout: Default::default(),
            stderr: Default::default(),
            outputs: Default::default(),
            diff: Default::default(),
            diff_truncated: false,
            container_id: "c".into(),
            image_id: "sha256:0".into(),
            warm: false,
            timings: Default::default(),
            live_lost_bytes: 0,
            disk: Some(DiskUsage {
                used_bytes: 1 << 30,
                free_bytes: 0,
                used_files: 12,
                free_files: 5,
            }),
        }
    }

    #[test]
    fn a_run_past_its_disk_quota_is_an_error_not_a_pass() {
        let err = refuse_disk_quota("pytest (python)", &report(Outcome::DiskQuota)).unwrap_err();
        assert!(
            matches!(err, ValidateError::DiskQuota { used_files: 12, .. }),
            "{err}"
        );
        assert!(!err.is_retryable());
        assert!(err.to_string().contains("workspace quota"), "{err}");
        assert!(refuse_disk_quota("x", &report(Outcome::Success)).is_ok());
        assert!(refuse_disk_quota("x", &report(Outcome::NonZeroExit)).is_ok());
    }
}
