//! The run's summary: the fields first, then what explains them.

use serde::Serialize;
use std::time::{Duration, Instant};

use crate::check::Ledger;
use crate::faults::Fault;
use crate::load::Plan;

/// One run's outcome. `lost` and `duplicated` must be 0.
#[derive(Debug, Serialize)]
pub struct Summary {
    pub jobs: i64,
    pub lost: i64,
    pub duplicated: i64,
    pub worker_kills: usize,
    pub postgres_restarts: usize,
    pub docker_restarts: usize,
    /// The longest time from a fault until a job became final again.
    pub max_recovery_s: f64,
    pub jobs_per_s: f64,
    pub inconsistent: i64,
    pub leftovers: Vec<String>,
    pub scheduler_kills: usize,
    pub scheduled_jobs: i64,
    pub container_jobs: usize,
    pub succeeded: i64,
    pub failed: i64,
    pub lost_attempts: i64,
    pub interrupted_attempts: i64,
    pub duplicated_ticks: i64,
    pub seconds: f64,
    /// Seconds to start the second engine and copy the job image into it (None: one engine).
    pub second_engine_ready_s: Option<f64>,
}

impl Summary {
    /// Builds the summary from the ledger, the faults and the samples of final jobs.
    pub fn new(
        ledger: &Ledger,
        faults: &[Fault],
        samples: &[(Instant, u64)],
        leftovers: Vec<String>,
        elapsed: Duration,
        plan: &Plan,
    ) -> Self {
        let count = |word: &str| faults.iter().filter(|f| f.what.contains(word)).count();
        let seconds = elapsed.as_secs_f64();
        Self {
            jobs: ledger.jobs,
            lost: ledger.lost,
            duplicated: ledger.duplicated + ledger.duplicated_ticks,
            worker_kills: count("worker"),
            postgres_restarts: count("postgres"),
            docker_restarts: count("docker"),
            max_recovery_s: round2(max_recovery(faults, samples)),
            jobs_per_s: round2(ledger.jobs as f64 / seconds.max(0.001)),
            inconsistent: ledger.inconsistent,
            leftovers,
            scheduler_kills: count("scheduler"),
            scheduled_jobs: ledger.scheduled,
            container_jobs: plan.jobs.div_ceil(plan.container_every),
            succeeded: ledger.succeeded,
            failed: ledger.failed,
            lost_attempts: ledger.lost_attempts,
            interrupted_attempts: ledger.interrupted_attempts,
            duplicated_ticks: ledger.duplicated_ticks,
            seconds: round2(seconds),
            second_engine_ready_s: None,
        }
    }

    /// Nothing lost, run twice, inconsistent or left behind, and no job failed: every job of
    /// the plan passes when it runs, so a failed one was failed by a fault.
    pub fn clean(&self) -> bool {
        self.lost == 0
            && self.duplicated == 0
            && self.inconsistent == 0
            && self.failed == 0
            && self.leftovers.is_empty()
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// For each fault, the time from its start to the first sample counting more final jobs than
/// the last sample before it; the largest of these (0 when no fault was followed by progress).
pub fn max_recovery(faults: &[Fault], samples: &[(Instant, u64)]) -> f64 {
    faults
        .iter()
        .filter_map(|f| {
            let before = samples
                .iter()
                .rev()
                .find(|(t, _)| *t <= f.at)
                .map_or(0, |(_, n)| *n);
            samples
                .iter()
                .find(|(t, n)| *t > f.at && *n > before)
                .map(|(t, _)| (*t - f.at).as_secs_f64())
        })
        .fold(0.0, f64::max)
}

/// The human-readable report.
pub fn print_table(s: &Summary, faults: &[Fault]) {
    println!(
        "chaos run: {} jobs in {:.1} s ({:.1} jobs/s)",
        s.jobs, s.seconds, s.jobs_per_s
    );
    println!("  {:<22} {}", "lost", s.lost);
    println!("  {:<22} {}", "duplicated", s.duplicated);
    println!("  {:<22} {}", "inconsistent", s.inconsistent);
    println!("  {:<22} {}", "left on an engine", s.leftovers.len());
    println!("  {:<22} {} / {}", "succeeded / failed", s.succeeded, s.failed);
    println!("  {:<22} {}", "container jobs", s.container_jobs);
    println!("  {:<22} {}", "fired by the schedule", s.scheduled_jobs);
    println!(
        "  {:<22} {} lost, {} interrupted",
        "attempts", s.lost_attempts, s.interrupted_attempts
    );
    println!(
        "  {:<22} {} worker kills, {} postgres restarts, {} docker restarts, {} scheduler kills",
        "faults", s.worker_kills, s.postgres_restarts, s.docker_restarts, s.scheduler_kills
    );
    println!("  {:<22} {:.2} s", "max recovery", s.max_recovery_s);
    for f in faults.iter().filter(|f| !f.what.starts_with("worker")) {
        println!("    at {:>7.1} s: {} (took {:.1} s)", f.at_s, f.what, f.took_s);
    }
    for l in &s.leftovers {
        println!("  left: {l}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fault(at: Instant) -> Fault {
        Fault {
            what: "postgres restarted".into(),
            at_s: 0.0,
            took_s: 0.0,
            at,
        }
    }

    #[test]
    fn recovery_is_the_time_to_the_first_progress_after_a_fault() {
        let t0 = Instant::now();
        let s = |ms: u64, n: u64| (t0 + Duration::from_millis(ms), n);
        let samples = [s(0, 10), s(100, 12), s(300, 12), s(900, 12), s(1_400, 15)];
        // A fault at 200 ms: the count before it is 12; it grows at 1,400 ms.
        let r = max_recovery(&[fault(t0 + Duration::from_millis(200))], &samples);
        assert!((r - 1.2).abs() < 1e-9, "{r}");
        // No progress after the fault: no recovery to measure.
        let none = max_recovery(&[fault(t0 + Duration::from_millis(1_500))], &samples);
        assert_eq!(none, 0.0);
    }
}
