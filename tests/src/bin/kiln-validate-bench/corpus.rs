//! `scripts/bench-validate --corpus`: per corpus project (and the python fixture), each tool
//! run alone by hand in its image, then Kiln's enqueue → verdict with the warm pool on, in the
//! same run; the table project, slowest tool, each tool, Kiln, ratio.

use std::path::{Path, PathBuf};
use std::time::Duration;

use kiln_pipeline::{Source, SubmitOptions};
use kiln_testkit::TestDb;
use kiln_tests::byhand::{self, HandTime};
use kiln_tests::validation::{fixture, images, Rig};

/// What the corpus mode was asked.
pub struct Args {
    /// Kiln runs per project (the median is reported).
    pub runs: usize,
    /// Warm containers per image.
    pub warm: usize,
    /// One JSON line instead of the table.
    pub json: bool,
    /// Project names (empty: the python fixture and every corpus project).
    pub names: Vec<String>,
}

#[derive(Debug, Clone, serde::Serialize)]
struct Row {
    project: String,
    tools: Vec<HandTime>,
    slowest_tool: String,
    slowest_s: f64,
    /// All the tools' times added up (with C cores free, Kiln cannot beat sum ÷ C).
    sum_s: f64,
    /// enqueue → verdict of each run, seconds.
    kiln_runs_s: Vec<f64>,
    /// Their median.
    kiln_s: f64,
    /// One more run of the same workspace (the cache's case), when the project was run.
    kiln_repeat_s: Option<f64>,
    ratio: f64,
    over_s: f64,
    verdict: String,
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// The projects: `(name, directory)`, the python fixture first.
fn projects(names: &[String]) -> Vec<(String, PathBuf)> {
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(repo().join("tests/corpus/projects.json")).expect("manifest"))
            .expect("manifest JSON");
    let mut all = vec!["python-fixture".to_string()];
    all.extend(
        m["projects"]
            .as_array()
            .expect("projects")
            .iter()
            .map(|p| p["name"].as_str().expect("name").to_string()),
    );
    let chosen: Vec<String> = if names.is_empty() {
        all.clone()
    } else {
        for n in names {
            assert!(all.contains(n), "unknown project {n}; known: {}", all.join(", "));
        }
        names.to_vec()
    };
    chosen
        .into_iter()
        .map(|n| {
            let dir = if n == "python-fixture" {
                fixture("python")
            } else {
                fetch(&n)
            };
            (n, dir)
        })
        .collect()
}

fn fetch(name: &str) -> PathBuf {
    let out = std::process::Command::new(repo().join("scripts/corpus"))
        .args(["fetch", name])
        .output()
        .expect("run scripts/corpus");
    assert!(
        out.status.success(),
        "scripts/corpus fetch {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(
        String::from_utf8(out.stdout)
            .unwrap()
            .trim()
            .lines()
            .last()
            .expect("directory"),
    )
}

async fn kiln_once(db: &TestDb, dir: &Path, rig: &Rig) -> (f64, String) {
    if let Some(pool) = &rig.pool {
        pool.wait_full(Duration::from_secs(120)).await;
    }
    let opts = SubmitOptions {
        timeout: Duration::from_secs(600),
        ..SubmitOptions::default()
    };
    let sub = kiln_pipeline::submit(&db.pool, Source::Dir(dir.to_path_buf()), &opts)
        .await
        .expect("submit");
    let view = kiln_pipeline::wait(&db.pool, None, sub.pipeline_id, Duration::from_secs(900))
        .await
        .expect("pipeline");
    let wall = (view.finished_at.expect("finished") - view.created_at)
        .num_microseconds()
        .unwrap() as f64
        / 1e6;
    (
        wall,
        view.summary()["verdict"].as_str().unwrap_or("?").to_string(),
    )
}

/// Runs the corpus mode.
pub async fn run(args: Args) {
    let projects = projects(&args.names);
    let db = TestDb::new().await;
    let rig = Rig::start_with_pool(&db.pool, "bench-corpus", args.warm).await;
    let imgs = images();
    let mut rows = Vec::new();
    for (name, dir) in &projects {
        let packed = kiln_artifacts::pack_dir(dir, kiln_artifacts::DEFAULT_MAX_BYTES).expect("pack");
        let tree =
            kiln_artifacts::Tree::from_tar_gz(&packed.data, kiln_artifacts::DEFAULT_MAX_BYTES).expect("tree");
        let found = kiln_validate::detect(&tree);
        let ws = kiln_validate::runner::sandbox_workspace(&tree).expect("workspace");
        let mut tools = Vec::new();
        for tool in byhand::tools_of(&found) {
            let t = byhand::time(&rig.sandbox, &imgs, &ws, &tool)
                .await
                .expect("by-hand run");
            eprintln!(
                "{name}: {} alone {:.2} s (exit {:?})",
                t.tool, t.seconds, t.exit_code
            );
            tools.push(t);
        }
        rig.sandbox.removals_done().await;
        let mut kiln_runs = Vec::new();
        let mut verdict = String::new();
        for _ in 0..args.runs {
            kiln_validate::cache::clear(&db.pool)
                .await
                .expect("clear the validation cache");
            let (s, v) = kiln_once(&db, dir, &rig).await;
            eprintln!("{name}: Kiln enqueue → verdict {s:.2} s ({v})");
            kiln_runs.push(s);
            verdict = v;
        }
        let (repeat, _) = kiln_once(&db, dir, &rig).await;
        eprintln!("{name}: Kiln again on the same workspace {repeat:.2} s");
        let slowest = tools
            .iter()
            .max_by(|a, b| a.seconds.total_cmp(&b.seconds))
            .expect("a tool");
        let kiln_s = median(&kiln_runs);
        rows.push(Row {
            project: name.clone(),
            slowest_tool: slowest.tool.clone(),
            slowest_s: slowest.seconds,
            sum_s: tools.iter().map(|t| t.seconds).sum(),
            tools: tools.clone(),
            kiln_runs_s: kiln_runs,
            kiln_s,
            kiln_repeat_s: Some(repeat),
            ratio: kiln_s / slowest.seconds,
            over_s: kiln_s - slowest.seconds,
            verdict,
        });
    }
    rig.stop().await;
    let over = median(&rows.iter().map(|r| r.over_s).collect::<Vec<_>>());
    let ratio = median(&rows.iter().map(|r| r.ratio).collect::<Vec<_>>());
    if args.json {
        println!(
            "{}",
            serde_json::json!({"warm_pool": args.warm, "runs": args.runs, "median_over_s": over,
                "median_ratio": ratio, "projects": rows})
        );
        return;
    }
    println!(
        "validation on the corpus: each tool alone by hand (exec, same image and container policy) vs Kiln enqueue → verdict (warm pool {}, median of {} run(s), cache cleared; `again`: same workspace once more)",
        args.warm, args.runs
    );
    println!(
        "{:<17} {:>18} {:>8} {:>8} {:>8} {:>6} {:>8} {:>7}  {:<8} tools alone (s)",
        "project", "slowest tool", "s", "sum s", "Kiln s", "ratio", "over s", "again", "verdict"
    );
    for r in &rows {
        let each: Vec<String> = r
            .tools
            .iter()
            .map(|t| format!("{} {:.2}", t.tool, t.seconds))
            .collect();
        println!(
            "{:<17} {:>18} {:>8.2} {:>8.2} {:>8.2} {:>6.2} {:>+8.2} {:>7.2}  {:<8} {}",
            r.project,
            r.slowest_tool,
            r.slowest_s,
            r.sum_s,
            r.kiln_s,
            r.ratio,
            r.over_s,
            r.kiln_repeat_s.unwrap_or(f64::NAN),
            r.verdict,
            each.join(", ")
        );
    }
    println!("median over the projects: Kiln − slowest tool {over:+.2} s, ratio {ratio:.2}");
}
