//! The attempt's record from one or more sandbox runs (one per language project).

use kiln_queue::AttemptDetails;
use kiln_sandbox::JobReport;

/// Bytes of each stream kept as head (and as tail) on the attempt row; the full logs are in
/// `kiln_job_logs`.
pub const HEAD_TAIL_BYTES: usize = 16 * 1024;

/// One sandbox run of an attempt, labelled.
pub struct Run {
    /// What ran (`python test`, `security-scan`…).
    pub label: String,
    /// The image tag.
    pub image: String,
    /// The runner's report.
    pub report: JobReport,
}

fn head_tail(text: &str) -> (Option<String>, Option<String>) {
    if text.is_empty() {
        return (None, None);
    }
    if text.len() <= HEAD_TAIL_BYTES {
        return (Some(text.to_string()), None);
    }
    let mut h = HEAD_TAIL_BYTES;
    while !text.is_char_boundary(h) {
        h -= 1;
    }
    let mut t = text.len() - HEAD_TAIL_BYTES;
    while !text.is_char_boundary(t) {
        t += 1;
    }
    (Some(text[..h].to_string()), Some(text[t.max(h)..].to_string()))
}

/// Merges the runs: the first non-zero exit code (else the last), every container and image,
/// peak memory's maximum, CPU time's sum, logs concatenated under a header per run, the diffs
/// concatenated, and per-run timings with their sums.
pub fn merge(runs: &[Run]) -> AttemptDetails {
    let mut d = AttemptDetails::default();
    if runs.is_empty() {
        return d;
    }
    let exit = runs
        .iter()
        .filter_map(|r| r.report.exit_code)
        .find(|c| *c != 0)
        .or_else(|| runs.last().and_then(|r| r.report.exit_code));
    d.exit_code = exit.map(|c| c as i32);
    let join = |f: &dyn Fn(&Run) -> String| {
        let mut v: Vec<String> = runs.iter().map(f).filter(|s| !s.is_empty()).collect();
        v.dedup();
        Some(v.join(",")).filter(|s| !s.is_empty())
    };
    d.container_id = join(&|r| r.report.container_id.clone());
    d.image_digest = join(&|r| r.report.image_id.clone());
    d.peak_memory_bytes = runs.iter().map(|r| r.report.usage.peak_memory_bytes as i64).max();
    d.cpu_time_ms = Some(runs.iter().map(|r| r.report.usage.cpu.as_millis() as i64).sum());
    let many = runs.len() > 1;
    let text = |f: &dyn Fn(&Run) -> String| {
        runs.iter()
            .map(|r| {
                if many {
                    format!("== {} ({})\n{}", r.label, r.image, f(r))
                } else {
                    f(r)
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    (d.stdout_head, d.stdout_tail) = head_tail(&text(&|r| r.report.stdout.text()));
    (d.stderr_head, d.stderr_tail) = head_tail(&text(&|r| r.report.stderr.text()));
    let diffs: Vec<&str> = runs
        .iter()
        .map(|r| r.report.diff.unified.as_str())
        .filter(|u| !u.is_empty())
        .collect();
    if !diffs.is_empty() {
        d.diff = Some(diffs.join(""));
    }
    d.diff_files = Some(runs.iter().map(|r| r.report.diff.files_changed as i32).sum());
    d.diff_insertions = Some(runs.iter().map(|r| r.report.diff.insertions as i32).sum());
    d.diff_deletions = Some(runs.iter().map(|r| r.report.diff.deletions as i32).sum());
    let per_run: Vec<serde_json::Value> = runs
        .iter()
        .map(|r| {
            let t = r.report.timings;
            serde_json::json!({
                "run": r.label, "image": r.image, "warm": r.report.warm,
                "outcome": r.report.outcome,
                "container_start_ms": t.container_start_ms, "upload_ms": t.upload_ms,
                "run_ms": t.run_ms, "readback_ms": t.readback_ms, "total_ms": t.total_ms,
            })
        })
        .collect();
    let sum = |f: fn(&kiln_sandbox::Timings) -> f64| runs.iter().map(|r| f(&r.report.timings)).sum::<f64>();
    d.timings = Some(serde_json::json!({
        "container_start_ms": sum(|t| t.container_start_ms),
        "upload_ms": sum(|t| t.upload_ms),
        "run_ms": sum(|t| t.run_ms),
        "readback_ms": sum(|t| t.readback_ms),
        "total_ms": sum(|t| t.total_ms),
        "runs": per_run,
    }));
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_and_tail_split_long_text_on_char_boundaries() {
        let long = "é".repeat(HEAD_TAIL_BYTES);
        let (h, t) = head_tail(&long);
        assert!(h.unwrap().len() <= HEAD_TAIL_BYTES);
        assert!(t.unwrap().len() <= HEAD_TAIL_BYTES);
        assert_eq!(head_tail("short"), (Some("short".into()), None));
    }
}
