//! Validation results by content (`kiln_validation_cache`): a job whose inputs were all seen
//! before — the kind, the workspace digest, the projects, the images' ids (the tools'
//! versions), Kiln's scripts, rules and support files (the tools' flags and configuration)
//! and the suppression switch — is answered without running a tool.
//!
//! Only complete results are kept: lint and security findings of runs that finished, and test
//! results without a failing or erroring case (a failure, a timeout or a crash is run again,
//! so a flaky test cannot pin a failure). A cache that cannot be read or written is skipped,
//! never a failed job.

use sha2::{Digest, Sha256};
use sqlx::PgPool;

use crate::handler::ValidationOutput;
use crate::language::{Language, Project};
use crate::tools;
use kiln_queue::JobKind;

const GET_SQL: &str = include_str!("sql/cache_get.sql");
const PUT_SQL: &str = include_str!("sql/cache_put.sql");
const PRUNE_SQL: &str = include_str!("sql/cache_prune.sql");
const CLEAR_SQL: &str = include_str!("sql/cache_clear.sql");

/// Bumped whenever what a key stands for changes in a way the inputs below do not show
/// (a parser's output, the result's shape).
const FORMAT: u32 = 1;

/// A cache key: hex SHA-256 of everything the result depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheKey(pub String);

/// Everything a validation job's result depends on.
#[derive(Debug, Clone)]
pub struct Inputs<'a> {
    /// The job's kind.
    pub kind: JobKind,
    /// The workspace's digest (`sha256:…`).
    pub workspace: &'a str,
    /// The language projects the job runs.
    pub projects: &'a [Project],
    /// Whether the workspace's suppressions are honoured.
    pub honour: bool,
    /// `(image tag, engine's image id)` of every image the job runs in.
    pub images: &'a [(String, String)],
}

/// The images a job of `kind` on `projects` runs in (names, as [`crate::Images`] knows them).
pub fn images_of(kind: JobKind, projects: &[Project]) -> Vec<&'static str> {
    let mut v: Vec<&'static str> = match kind {
        JobKind::SecurityScan => vec!["python"],
        _ => projects.iter().map(|p| p.language.image()).collect(),
    };
    v.sort_unstable();
    v.dedup();
    v
}

/// The scripts and support files a job of `kind` on `projects` hands to its tools.
fn tool_text(kind: JobKind, projects: &[Project], honour: bool) -> Vec<String> {
    let langs: Vec<Language> = projects.iter().map(|p| p.language).collect();
    let mut v: Vec<String> = match kind {
        JobKind::Test => langs.iter().map(|l| tools::test_script(*l)).collect(),
        JobKind::Lint => langs.iter().map(|l| tools::lint_script(*l, honour)).collect(),
        _ => tools::scanners(langs.contains(&Language::Python))
            .into_iter()
            .map(|s| tools::scanner_script(s, &langs, honour))
            .collect(),
    };
    v.extend(tools::SEMGREP_RULES.iter().map(|(_, r)| r.to_string()));
    v.push(tools::NODE_REPORTER.to_string());
    v.push(tools::ESLINT_CONFIG.to_string());
    v.extend(tools::ENV.iter().map(|(k, val)| format!("{k}={val}")));
    v
}

/// The key of `inputs`; None when an image's id is unknown (nothing would tie the result to
/// the tools that made it).
pub fn key(inputs: &Inputs<'_>) -> Option<CacheKey> {
    if inputs.images.is_empty() || inputs.images.iter().any(|(_, id)| id.is_empty()) {
        return None;
    }
    let mut h = Sha256::new();
    let mut field = |name: &str, value: &str| {
        // Length-prefixed, so no two different input lists hash the same bytes.
        h.update(format!("{name}:{}:", value.len()));
        h.update(value.as_bytes());
    };
    field("format", &FORMAT.to_string());
    field("kiln-validate", env!("CARGO_PKG_VERSION"));
    field("kind", inputs.kind.as_str());
    field("workspace", inputs.workspace);
    field("honour", if inputs.honour { "1" } else { "0" });
    for p in inputs.projects {
        field("project", &format!("{}={}", p.language.as_str(), p.root));
    }
    for (tag, id) in inputs.images {
        field("image", &format!("{tag}={id}"));
    }
    for t in tool_text(inputs.kind, inputs.projects, inputs.honour) {
        field("tool", &t);
    }
    Some(CacheKey(hex::encode(h.finalize())))
}

/// Whether `out` may be kept: findings always (a run that failed returned an error instead),
/// test results only without a failed or erroring case.
pub fn cacheable(out: &ValidationOutput) -> bool {
    match out {
        ValidationOutput::Test(t) => t.failed == 0 && t.errors == 0,
        ValidationOutput::Findings(_) => true,
    }
}

/// A result found in the cache.
#[derive(Debug, Clone)]
pub struct Hit {
    /// The result.
    pub output: ValidationOutput,
    /// The job whose run produced it.
    pub source_job: Option<i64>,
}

/// The cached result under `key`, counted as a hit.
pub async fn get(pool: &PgPool, key: &CacheKey) -> Result<Option<Hit>, sqlx::Error> {
    let row: Option<(serde_json::Value, Option<i64>)> =
        sqlx::query_as(GET_SQL).bind(&key.0).fetch_optional(pool).await?;
    Ok(row.and_then(|(result, source_job)| {
        // An entry that no longer reads as a result is ignored (the run replaces nothing:
        // the first writer of a key wins, so a bad entry stays until pruned).
        serde_json::from_value(result)
            .ok()
            .map(|output| Hit { output, source_job })
    }))
}

/// Keeps `out` under `key` when it is [`cacheable`]; true when it was offered.
pub async fn put(
    pool: &PgPool,
    key: &CacheKey,
    inputs: &Inputs<'_>,
    out: &ValidationOutput,
    job_id: i64,
) -> Result<bool, sqlx::Error> {
    if !cacheable(out) {
        return Ok(false);
    }
    let result = serde_json::to_value(out).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    sqlx::query(PUT_SQL)
        .bind(&key.0)
        .bind(inputs.kind.as_str())
        .bind(inputs.workspace)
        .bind(result)
        .bind(job_id)
        .execute(pool)
        .await?;
    Ok(true)
}

/// Removes entries neither written nor used for `older_than`; returns how many.
pub async fn prune(pool: &PgPool, older_than: std::time::Duration) -> Result<u64, sqlx::Error> {
    let n: i64 = sqlx::query_scalar(PRUNE_SQL)
        .bind(older_than.as_secs_f64())
        .fetch_one(pool)
        .await?;
    Ok(n as u64)
}

/// Empties the cache (benchmarks measuring first runs; an operator after a tool change the
/// key cannot see).
pub async fn clear(pool: &PgPool) -> Result<(), sqlx::Error> {
    sqlx::query(CLEAR_SQL).execute(pool).await.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::result::{Findings, TestResult, TestStatus};

    fn projects() -> Vec<Project> {
        vec![Project {
            language: Language::Python,
            root: String::new(),
        }]
    }

    fn inputs<'a>(p: &'a [Project], images: &'a [(String, String)]) -> Inputs<'a> {
        Inputs {
            kind: JobKind::Lint,
            workspace: "sha256:aa",
            projects: p,
            honour: false,
            images,
        }
    }

    #[test]
    fn every_input_changes_the_key() {
        let p = projects();
        let img = vec![("kiln-python:1".to_string(), "sha256:1".to_string())];
        let base = key(&inputs(&p, &img)).unwrap();
        assert_eq!(base, key(&inputs(&p, &img)).unwrap(), "deterministic");
        let other_img = vec![("kiln-python:1".to_string(), "sha256:2".to_string())];
        assert_ne!(base, key(&inputs(&p, &other_img)).unwrap(), "image id");
        let mut i = inputs(&p, &img);
        i.workspace = "sha256:ab";
        assert_ne!(base, key(&i).unwrap(), "workspace");
        let mut i = inputs(&p, &img);
        i.kind = JobKind::SecurityScan;
        assert_ne!(base, key(&i).unwrap(), "kind");
        let mut i = inputs(&p, &img);
        i.kind = JobKind::SecurityScan;
        let mut j = i.clone();
        j.honour = true;
        assert_ne!(key(&i).unwrap(), key(&j).unwrap(), "suppressions");
        let moved = vec![Project {
            language: Language::Python,
            root: "app".into(),
        }];
        assert_ne!(base, key(&inputs(&moved, &img)).unwrap(), "project root");
    }

    #[test]
    fn no_key_without_every_image_id() {
        let p = projects();
        assert!(key(&inputs(&p, &[])).is_none());
        let unknown = vec![("kiln-python:1".to_string(), String::new())];
        assert!(key(&inputs(&p, &unknown)).is_none());
    }

    #[test]
    fn failing_tests_are_never_kept() {
        let mut t = TestResult::default();
        t.push("a", TestStatus::Passed, None);
        assert!(cacheable(&ValidationOutput::Test(t.clone())));
        t.push("b", TestStatus::Failed, Some("boom".into()));
        assert!(!cacheable(&ValidationOutput::Test(t)));
        let mut e = TestResult::default();
        e.push("timeout", TestStatus::Error, Some("timed out".into()));
        assert!(!cacheable(&ValidationOutput::Test(e)));
        assert!(cacheable(&ValidationOutput::Findings(Findings::default())));
    }

    #[test]
    fn security_scans_run_in_the_python_image_whatever_the_languages() {
        let p = vec![
            Project {
                language: Language::Go,
                root: String::new(),
            },
            Project {
                language: Language::Rust,
                root: "r".into(),
            },
        ];
        assert_eq!(images_of(JobKind::SecurityScan, &p), ["python"]);
        assert_eq!(images_of(JobKind::Test, &p), ["go", "rust"]);
    }
}
