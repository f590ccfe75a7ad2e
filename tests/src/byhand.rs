//! Each validation tool alone, timed "by hand": the argv Kiln runs for it, one tool per
//! container, in the same image and a container made with the same policy (Kiln's sandbox
//! creates it, cold, like `docker run`). The time is the tool's own: exec start to exit,
//! without the container's start-up.

use std::time::Duration;

use kiln_queue::JobKind;
use kiln_sandbox::{JobLabels, JobSpec, Sandbox, Workspace};
use kiln_validate::tools;
use kiln_validate::{Images, Language, Project};

/// One tool as `scripts/bench-validate --corpus` runs it alone.
#[derive(Debug, Clone)]
pub struct HandTool {
    /// The tool's name (`pytest`, `cargo-test`, `semgrep`…).
    pub name: &'static str,
    /// The job image it runs in (`python`, `rust`…).
    pub image: &'static str,
    /// Kiln's script for it alone.
    pub script: String,
    /// The script's positional arguments (project roots).
    pub args: Vec<String>,
}

/// The tools a validation pipeline runs on `projects`: each project's test runner and linter,
/// and the security scanners over the whole workspace.
pub fn tools_of(projects: &[Project]) -> Vec<HandTool> {
    let mut v = Vec::new();
    for p in projects {
        let lang = p.language;
        for (kind, script) in [
            (JobKind::Test, tools::test_script(lang)),
            (JobKind::Lint, tools::lint_script(lang, false)),
        ] {
            v.push(HandTool {
                name: tools::tools_of(kind, lang)[0],
                image: lang.image(),
                script,
                args: vec![p.root.clone()],
            });
        }
    }
    let langs: Vec<Language> = projects.iter().map(|p| p.language).collect();
    let py_root = projects
        .iter()
        .find(|p| p.language == Language::Python)
        .map(|p| p.root.as_str());
    for scanner in tools::scanners(py_root.is_some()) {
        v.push(HandTool {
            name: scanner.name(),
            image: "python",
            script: tools::scanner_script(scanner, &langs, false),
            args: tools::security_args(py_root),
        });
    }
    v
}

/// What one tool did alone.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HandTime {
    /// The tool.
    pub tool: String,
    /// Exec start to exit, seconds.
    pub seconds: f64,
    /// The script's exit code, which is the tool's own.
    pub exit_code: Option<i64>,
}

/// Runs `tool` alone on `ws` (the workspace as Kiln uploads it) and times it.
pub async fn time(
    sandbox: &Sandbox,
    images: &Images,
    ws: &Workspace,
    tool: &HandTool,
) -> anyhow::Result<HandTime> {
    let image = images.tag(tool.image)?.to_string();
    let mut argv: Vec<&str> = vec!["sh", "-c", &tool.script, "kiln"];
    argv.extend(tool.args.iter().map(String::as_str));
    let labels = JobLabels {
        job_id: 0,
        attempt: 0,
        worker_id: sandbox.owner().worker_id.clone(),
    };
    let mut spec = JobSpec::new(image, &argv, labels);
    spec.env = tools::ENV
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    spec.workspace = ws.clone();
    spec.timeout = Duration::from_secs(600);
    spec.outputs = vec![tools::REPORTS.to_string()];
    spec.diff_ignore = vec![tools::SCRATCH.to_string()];
    let report = sandbox.run_cold(&spec, None).await?;
    Ok(HandTime {
        tool: tool.name.to_string(),
        seconds: report.usage.wall.as_secs_f64(),
        exit_code: report.exit_code,
    })
}
