//! What a `bench-queue` run prints: the JSON line, the tables, and the duplicate / missing
//! checks every run must pass.

use serde_json::{json, Map, Value};
use std::io::{self, Write};

use crate::common::Outcome;
use crate::floor::Floor;
use crate::sweep::{Axis, SweepResult};

/// The server the run measured on.
#[derive(Debug, Clone)]
pub struct Postgres {
    pub version: String,
    pub fsync: String,
    pub synchronous_commit: String,
    pub commit_p50_ms: f64,
    pub commit_p99_ms: f64,
}

/// A peer's option sweep and its winner run at full N.
#[derive(Debug, Clone)]
pub struct Tuned {
    /// The peer's base name: `apalis_postgres` or `graphile_worker`.
    pub system: &'static str,
    pub axes: Vec<Axis>,
    pub sweep: SweepResult,
    /// One outcome per sweep trial, in the same order.
    pub runs: Vec<Outcome>,
    /// The winner at full N (system named `<base>_tuned`).
    pub outcome: Outcome,
}

/// Everything one run measured.
#[derive(Debug, Clone)]
pub struct Report {
    pub jobs: usize,
    pub workers: usize,
    pub pickup: usize,
    pub sweep_jobs: usize,
    pub postgres: Postgres,
    /// Kiln and the peers at their README settings, at full N.
    pub outcomes: Vec<Outcome>,
    pub tuned: Vec<Tuned>,
    /// The workers sweep: each system at each worker count, on `sweep_jobs` jobs.
    pub scaling: Vec<Outcome>,
    pub floor: Option<Floor>,
    /// A minimal SKIP LOCKED claim + complete from pgbench (see `ceiling.rs`).
    pub ceiling: Option<Floor>,
}

/// `name=value` for each axis of a sweep point, space separated.
pub fn describe_point(axes: &[Axis], p: &[u64]) -> String {
    axes.iter()
        .zip(p)
        .map(|(a, v)| format!("{}={v}", a.name))
        .collect::<Vec<_>>()
        .join(" ")
}

fn point_json(axes: &[Axis], p: &[u64]) -> Value {
    Value::Object(
        axes.iter()
            .zip(p)
            .map(|(a, v)| (a.name.to_string(), json!(v)))
            .collect(),
    )
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// The fields every system's JSON object has.
fn outcome_json(o: &Outcome) -> Map<String, Value> {
    let v = json!({
        "jobs_per_s": round1(o.jobs_per_s),
        "burn_down_s": round3(o.burn_secs),
        "pickup_p50_ms": round3(o.pickup_p50_ms),
        "pickup_p99_ms": round3(o.pickup_p99_ms),
        "duplicates": o.duplicates,
        "missing": o.missing,
        "timed_out": o.timed_out,
        "wal_bytes_per_job": round1(o.wal_per_job()),
        "workers": o.workers,
        "settings": o.settings,
    });
    match v {
        Value::Object(m) => m,
        _ => unreachable!("json! of an object"),
    }
}

/// What is wrong with one run, if anything: duplicates, jobs left unrun, a timeout
/// (`timeout_counts`: false for sweep points, where a timeout only disqualifies).
fn run_violation(o: &Outcome, timeout_counts: bool) -> Option<String> {
    let mut what = Vec::new();
    if o.duplicates > 0 {
        what.push(format!("{} duplicates", o.duplicates));
    }
    if o.timed_out {
        if timeout_counts {
            what.push("timed out".to_string());
        }
    } else if o.missing > 0 {
        what.push(format!("{} missing", o.missing));
    }
    (!what.is_empty()).then(|| {
        format!(
            "{} ({} jobs, {} workers): {}",
            o.system,
            o.jobs,
            o.workers,
            what.join(", ")
        )
    })
}

impl Report {
    /// Every full-N outcome: README settings first, then the tuned peers.
    fn all(&self) -> impl Iterator<Item = &Outcome> {
        self.outcomes.iter().chain(self.tuned.iter().map(|t| &t.outcome))
    }

    fn kiln(&self) -> Option<&Outcome> {
        self.outcomes.iter().find(|o| o.system == "kiln")
    }

    /// Every run with duplicates or missing jobs, every full-N or workers-sweep run that timed
    /// out, and a floor that left jobs or claimed one twice. Empty when the run is clean.
    pub fn violations(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .all()
            .chain(&self.scaling)
            .filter_map(|o| run_violation(o, true))
            .collect();
        for t in &self.tuned {
            v.extend(
                t.runs
                    .iter()
                    .filter_map(|o| run_violation(o, false).map(|s| format!("{} sweep: {s}", t.system))),
            );
        }
        for (name, f) in [("floor", &self.floor), ("ceiling", &self.ceiling)] {
            if let Some(f) = f.as_ref().filter(|f| f.duplicates > 0 || f.missing > 0) {
                v.push(format!(
                    "{name}: {} claimed twice, {} not succeeded",
                    f.duplicates, f.missing
                ));
            }
        }
        v
    }

    /// The one-line JSON document `--json` prints.
    pub fn json(&self) -> Value {
        let mut obj = Map::new();
        for o in &self.outcomes {
            obj.insert(o.system.into(), Value::Object(outcome_json(o)));
        }
        for t in &self.tuned {
            let mut m = outcome_json(&t.outcome);
            let best = t.sweep.best.as_ref().map(|b| point_json(&t.axes, &b.point));
            m.insert("options".into(), best.unwrap_or(Value::Null));
            m.insert(
                "sweep".into(),
                json!({
                    "jobs": self.sweep_jobs,
                    "workers": self.workers,
                    "points": t.sweep.trials.iter().zip(&t.runs).map(|(tr, o)| json!({
                        "options": point_json(&t.axes, &tr.point),
                        "jobs_per_s": round1(tr.jobs_per_s),
                        "clean": tr.clean,
                        "duplicates": o.duplicates,
                        "missing": o.missing,
                        "timed_out": o.timed_out,
                    })).collect::<Vec<_>>(),
                }),
            );
            obj.insert(t.outcome.system.into(), Value::Object(m));
        }
        if !self.scaling.is_empty() {
            let mut systems = Map::new();
            for o in &self.scaling {
                let runs = systems.entry(o.system.to_string()).or_insert_with(|| json!([]));
                if let Value::Array(a) = runs {
                    let mut m = outcome_json(o);
                    m.remove("pickup_p50_ms");
                    m.remove("pickup_p99_ms");
                    a.push(Value::Object(m));
                }
            }
            obj.insert(
                "workers_sweep".into(),
                json!({"jobs": self.sweep_jobs, "systems": systems}),
            );
        }
        for (name, f) in [("floor", &self.floor), ("ceiling", &self.ceiling)] {
            if let Some(f) = f {
                obj.insert(
                    name.into(),
                    json!({
                        "jobs_per_s": round1(f.jobs_per_s),
                        "wal_bytes_per_job": round1(f.wal_bytes_per_job),
                        "duplicates": f.duplicates,
                        "missing": f.missing,
                        "settings": f.settings,
                    }),
                );
            }
        }
        if let (Some(f), Some(c)) = (&self.floor, &self.ceiling) {
            obj.insert(
                "floor_vs_ceiling".into(),
                json!(round3(f.jobs_per_s / c.jobs_per_s)),
            );
        }
        if let Some(k) = self.kiln() {
            let ratios: Map<String, Value> = self
                .all()
                .filter(|o| o.system != "kiln")
                .map(|o| (o.system.to_string(), json!(round3(k.jobs_per_s / o.jobs_per_s))))
                .collect();
            obj.insert("kiln_vs".into(), Value::Object(ratios));
            if let Some(f) = &self.floor {
                obj.insert("kiln_vs_floor".into(), json!(round3(k.jobs_per_s / f.jobs_per_s)));
            }
        }
        let p = &self.postgres;
        obj.insert(
            "postgres".into(),
            json!({"version": p.version, "fsync": p.fsync, "synchronous_commit": p.synchronous_commit}),
        );
        obj.insert(
            "commit".into(),
            json!({"p50_ms": round3(p.commit_p50_ms), "p99_ms": round3(p.commit_p99_ms)}),
        );
        obj.insert("jobs".into(), json!(self.jobs));
        obj.insert("workers".into(), json!(self.workers));
        obj.insert("violations".into(), json!(self.violations()));
        Value::Object(obj)
    }

    /// The human-readable tables.
    pub fn print(&self, out: &mut dyn Write) -> io::Result<()> {
        let p = &self.postgres;
        writeln!(
            out,
            "\nBurn-down of {} no-op jobs by {} workers; idle pickup of {} jobs one at a time.",
            self.jobs, self.workers, self.pickup
        )?;
        writeln!(
            out,
            "Postgres {} with its default durability: fsync = {}, synchronous_commit = {}.",
            p.version, p.fsync, p.synchronous_commit
        )?;
        writeln!(
            out,
            "One durable one-row commit: p50 {:.2} ms, p99 {:.2} ms (an idle pickup needs two).",
            p.commit_p50_ms, p.commit_p99_ms
        )?;
        writeln!(
            out,
            "WAL per job: pg_current_wal_lsn delta over the burn-down (after a CHECKPOINT) / jobs.\n"
        )?;
        writeln!(
            out,
            "{:<22} {:>10} {:>8} {:>9} {:>9} {:>10} {:>5} {:>7}",
            "system", "jobs/s", "burn s", "p50 ms", "p99 ms", "WAL B/job", "dup", "missing"
        )?;
        for o in self.all() {
            writeln!(
                out,
                "{:<22} {:>10.0} {:>8.2} {:>9.2} {:>9.2} {:>10.0} {:>5} {:>7}{}",
                o.system,
                o.jobs_per_s,
                o.burn_secs,
                o.pickup_p50_ms,
                o.pickup_p99_ms,
                o.wal_per_job(),
                o.duplicates,
                o.missing,
                if o.timed_out { "  TIMED OUT" } else { "" }
            )?;
        }
        for (name, f) in [
            ("floor (pgbench)", &self.floor),
            ("ceiling (pgbench)", &self.ceiling),
        ] {
            if let Some(f) = f {
                writeln!(
                    out,
                    "{:<22} {:>10.0} {:>8} {:>9} {:>9} {:>10.0} {:>5} {:>7}",
                    name, f.jobs_per_s, "", "", "", f.wal_bytes_per_job, f.duplicates, f.missing
                )?;
            }
        }
        writeln!(out)?;
        if let Some(k) = self.kiln() {
            for o in self.all().filter(|o| o.system != "kiln") {
                writeln!(out, "kiln / {:<22} {:.2}x", o.system, k.jobs_per_s / o.jobs_per_s)?;
            }
            if let Some(f) = &self.floor {
                writeln!(
                    out,
                    "kiln / floor                  {:.0} %",
                    k.jobs_per_s / f.jobs_per_s * 100.0
                )?;
            }
        }
        if let (Some(f), Some(c)) = (&self.floor, &self.ceiling) {
            writeln!(
                out,
                "floor / ceiling               {:.0} %",
                f.jobs_per_s / c.jobs_per_s * 100.0
            )?;
        }
        for t in &self.tuned {
            writeln!(
                out,
                "\n{} sweep ({} jobs, {} workers per point; * = winner):",
                t.system, self.sweep_jobs, self.workers
            )?;
            let best = t.sweep.best.as_ref().map(|b| &b.point);
            for (tr, o) in t.sweep.trials.iter().zip(&t.runs) {
                let flag = match (Some(&tr.point) == best, tr.clean) {
                    (true, _) => "*",
                    (false, true) => " ",
                    (false, false) => "x",
                };
                writeln!(
                    out,
                    "  {flag} {:<60} {:>8.0} jobs/s{}",
                    describe_point(&t.axes, &tr.point),
                    tr.jobs_per_s,
                    run_violation(o, true)
                        .map(|v| format!("  ({})", v.split(": ").last().unwrap_or("")))
                        .unwrap_or_default()
                )?;
            }
            if let Some(b) = best {
                writeln!(out, "  won: {}", describe_point(&t.axes, b))?;
            }
        }
        if !self.scaling.is_empty() {
            writeln!(
                out,
                "\nWorkers sweep ({} jobs each, no pickup test):",
                self.sweep_jobs
            )?;
            writeln!(
                out,
                "{:<22} {:>7} {:>10} {:>10} {:>5} {:>7}",
                "system", "workers", "jobs/s", "WAL B/job", "dup", "missing"
            )?;
            for o in &self.scaling {
                writeln!(
                    out,
                    "{:<22} {:>7} {:>10.0} {:>10.0} {:>5} {:>7}{}",
                    o.system,
                    o.workers,
                    o.jobs_per_s,
                    o.wal_per_job(),
                    o.duplicates,
                    o.missing,
                    if o.timed_out { "  TIMED OUT" } else { "" }
                )?;
            }
        }
        writeln!(out, "\nSettings:")?;
        for o in self.all() {
            writeln!(out, "  {:<22} {}", o.system, o.settings)?;
        }
        for (name, f) in [("floor", &self.floor), ("ceiling", &self.ceiling)] {
            if let Some(f) = f {
                writeln!(out, "  {:<22} {}", name, f.settings)?;
            }
        }
        let v = self.violations();
        if v.is_empty() {
            writeln!(out, "\nNo duplicates, nothing missing, in every run.")?;
        } else {
            writeln!(out, "\nCHECK FAILED:")?;
            for line in v {
                writeln!(out, "  {line}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sweep::Trial;

    fn outcome(system: &'static str, jobs_per_s: f64) -> Outcome {
        Outcome {
            system,
            jobs: 1000,
            workers: 4,
            jobs_per_s,
            burn_secs: 1000.0 / jobs_per_s,
            timed_out: false,
            pickup_p50_ms: 3.0,
            pickup_p99_ms: 9.0,
            duplicates: 0,
            missing: 0,
            wal_bytes: 250_000,
            settings: "s".into(),
        }
    }

    const AXES: [Axis; 2] = [
        Axis {
            name: "batch_size",
            values: &[10, 500],
        },
        Axis {
            name: "concurrency",
            values: &[0, 500],
        },
    ];

    fn tuned(runs: Vec<Outcome>) -> Tuned {
        let trials: Vec<Trial> = runs
            .iter()
            .enumerate()
            .map(|(i, o)| Trial {
                point: vec![10 * (i as u64 + 1), 500],
                jobs_per_s: o.jobs_per_s,
                clean: o.clean(),
            })
            .collect();
        let best = crate::sweep::pick_best(&trials).cloned();
        Tuned {
            system: "apalis_postgres",
            axes: AXES.to_vec(),
            sweep: SweepResult { trials, best },
            runs,
            outcome: outcome("apalis_postgres_tuned", 5000.0),
        }
    }

    fn report() -> Report {
        Report {
            jobs: 1000,
            workers: 4,
            pickup: 10,
            sweep_jobs: 200,
            postgres: Postgres {
                version: "15".into(),
                fsync: "on".into(),
                synchronous_commit: "on".into(),
                commit_p50_ms: 1.0,
                commit_p99_ms: 2.0,
            },
            outcomes: vec![outcome("kiln", 10_000.0), outcome("apalis_postgres", 2000.0)],
            tuned: vec![tuned(vec![
                outcome("apalis_postgres", 4000.0),
                outcome("apalis_postgres", 4500.0),
            ])],
            scaling: vec![outcome("kiln", 3000.0), outcome("apalis_postgres", 1000.0)],
            floor: None,
            ceiling: None,
        }
    }

    #[test]
    fn tuned_object_has_the_base_fields_plus_options_and_sweep() {
        let j = report().json();
        let base: Vec<&String> = j["apalis_postgres"].as_object().unwrap().keys().collect();
        let tuned = j["apalis_postgres_tuned"].as_object().unwrap();
        for k in &base {
            assert!(tuned.contains_key(*k), "tuned object lacks {k}");
        }
        assert!(base.iter().any(|k| *k == "settings"));
        assert_eq!(
            j["apalis_postgres_tuned"]["options"],
            json!({"batch_size": 20, "concurrency": 500})
        );
        let points = j["apalis_postgres_tuned"]["sweep"]["points"].as_array().unwrap();
        assert_eq!(points.len(), 2);
        assert_eq!(points[0]["options"]["batch_size"], json!(10));
        assert_eq!(j["apalis_postgres_tuned"]["sweep"]["jobs"], json!(200));
    }

    #[test]
    fn json_reports_wal_per_job_ratios_and_the_workers_sweep() {
        let j = report().json();
        assert_eq!(j["kiln"]["wal_bytes_per_job"], json!(250.0));
        assert_eq!(j["kiln_vs"]["apalis_postgres"], json!(5.0));
        assert_eq!(j["kiln_vs"]["apalis_postgres_tuned"], json!(2.0));
        let kiln_runs = j["workers_sweep"]["systems"]["kiln"].as_array().unwrap();
        assert_eq!(kiln_runs.len(), 1);
        assert_eq!(kiln_runs[0]["workers"], json!(4));
        assert!(kiln_runs[0].get("pickup_p50_ms").is_none());
        assert_eq!(j["violations"], json!([]));
    }

    #[test]
    fn duplicates_and_missing_are_violations_everywhere() {
        let mut r = report();
        assert!(r.violations().is_empty());
        r.scaling[1].duplicates = 2;
        r.tuned[0].runs[0].missing = 3;
        r.outcomes[0].timed_out = true;
        let v = r.violations();
        assert_eq!(v.len(), 3, "{v:?}");
        assert!(v.iter().any(|s| s.contains("kiln") && s.contains("timed out")));
        assert!(v.iter().any(|s| s.contains("2 duplicates")));
        assert!(v
            .iter()
            .any(|s| s.starts_with("apalis_postgres sweep") && s.contains("3 missing")));
    }

    #[test]
    fn a_sweep_point_that_timed_out_is_not_a_violation() {
        let mut r = report();
        r.tuned[0].runs[0].timed_out = true;
        r.tuned[0].runs[0].missing = 500;
        assert!(r.violations().is_empty());
        r.floor = Some(Floor {
            jobs_per_s: 1.0,
            wal_bytes_per_job: 1.0,
            duplicates: 0,
            missing: 1,
            settings: String::new(),
        });
        assert_eq!(r.violations().len(), 1);
        r.ceiling = r.floor.clone().map(|f| Floor {
            duplicates: 2,
            missing: 0,
            ..f
        });
        let v = r.violations();
        assert!(
            v.iter().any(|s| s.starts_with("ceiling: 2 claimed twice")),
            "{v:?}"
        );
    }

    #[test]
    fn the_table_names_the_winner() {
        let mut buf = Vec::new();
        report().print(&mut buf).unwrap();
        let text = String::from_utf8(buf).unwrap();
        assert!(text.contains("won: batch_size=20 concurrency=500"), "{text}");
        assert!(text.contains("Workers sweep"));
        assert!(text.contains("No duplicates, nothing missing"));
    }
}
