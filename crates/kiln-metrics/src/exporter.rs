//! The fleet gauges (`kiln_queue_depth`, `kiln_workers_alive`), read from Postgres by one
//! process of the fleet: every worker, API and scheduler process runs a [`DepthExporter`],
//! and only the holder of a session advisory lock (on a dedicated connection, so a killed
//! holder's lock goes with its connection) refreshes and exports them. The others export no
//! series of those families, so a fleet's depth is never summed twice; they retry the lock
//! every refresh period and take over when the holder stops.

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{Encoder, IntGauge, IntGaugeVec, Opts, TextEncoder};
use sqlx::{Connection, PgConnection, PgPool, Row};
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const QUEUE_DEPTH_SQL: &str = include_str!("sql/queue_depth.sql");
const WORKERS_ALIVE_SQL: &str = include_str!("sql/workers_alive.sql");
const KNOWN_QUEUES_SQL: &str = include_str!("sql/known_queues.sql");
/// The advisory lock the exporting process holds (a key derived from this name).
pub const LOCK_NAME: &str = "kiln.metrics.exporter";
/// Every job state, so a queue's states without jobs read 0 rather than vanish.
const STATES: [&str; 8] = [
    "pending",
    "scheduled",
    "available",
    "running",
    "succeeded",
    "retryable",
    "failed",
    "cancelled",
];

/// Renders the two gauge families only while its gate is open.
pub(crate) struct Gated {
    gate: Arc<AtomicBool>,
    depth: IntGaugeVec,
    alive: IntGauge,
    descs: Vec<Desc>,
}

impl Gated {
    pub(crate) fn new(gate: Arc<AtomicBool>, depth: IntGaugeVec, alive: IntGauge) -> Self {
        let descs = depth.desc().into_iter().chain(alive.desc()).cloned().collect();
        Self {
            gate,
            depth,
            alive,
            descs,
        }
    }
}

impl Collector for Gated {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        if !self.gate.load(Ordering::Acquire) {
            return Vec::new();
        }
        let mut out = self.depth.collect();
        out.extend(self.alive.collect());
        out
    }
}

/// The fleet gauges one exporter writes, and whether they are exported.
pub struct DepthGauges {
    gated: Gated,
    /// Queues set at the last refresh, to drop series of queues that disappeared.
    known: Mutex<HashSet<String>>,
}

impl DepthGauges {
    /// The gauges of this process's registry (what [`crate::render`] shows).
    pub fn global() -> Arc<DepthGauges> {
        static GLOBAL: OnceLock<Arc<DepthGauges>> = OnceLock::new();
        GLOBAL
            .get_or_init(|| {
                let m = crate::metrics();
                Arc::new(DepthGauges {
                    gated: Gated::new(
                        m.depth_gate.clone(),
                        m.queue_depth.clone(),
                        m.workers_alive.clone(),
                    ),
                    known: Mutex::new(HashSet::new()),
                })
            })
            .clone()
    }

    /// A private set outside the process registry: for several exporters in one process
    /// (tests); read it with [`DepthGauges::render`].
    pub fn standalone() -> Arc<DepthGauges> {
        let depth = IntGaugeVec::new(
            Opts::new("queue_depth", "Jobs in the database by queue and state").namespace("kiln"),
            &["queue", "state"],
        )
        .expect("valid gauge");
        let alive = IntGauge::with_opts(
            Opts::new("workers_alive", "Workers with a live registration").namespace("kiln"),
        )
        .expect("valid gauge");
        Arc::new(DepthGauges {
            gated: Gated::new(Arc::new(AtomicBool::new(false)), depth, alive),
            known: Mutex::new(HashSet::new()),
        })
    }

    /// Opens or closes the gate; closing also clears the series.
    pub fn set_exporting(&self, on: bool) {
        if !on {
            self.gated.gate.store(false, Ordering::Release);
            self.gated.depth.reset();
            self.gated.alive.set(0);
            self.known.lock().expect("known queues").clear();
        } else {
            self.gated.gate.store(true, Ordering::Release);
        }
    }

    /// True while these gauges are exported (their process holds the lock).
    pub fn is_exporting(&self) -> bool {
        self.gated.gate.load(Ordering::Acquire)
    }

    /// These two families in the text format (empty while not exporting).
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.gated.collect(), &mut out)
            .expect("text encoding");
        String::from_utf8(out).expect("the text format is UTF-8")
    }

    /// Sets every (queue, state) from `rows` (missing states read 0) and the alive count.
    fn update(&self, rows: &[(String, Option<String>, i64)], alive: i64) {
        let mut known = self.known.lock().expect("known queues");
        let queues: HashSet<String> = rows.iter().map(|r| r.0.clone()).collect();
        for gone in known.difference(&queues) {
            for state in STATES {
                let _ = self.gated.depth.remove_label_values(&[gone, state]);
            }
        }
        for q in &queues {
            for state in STATES {
                let n = rows
                    .iter()
                    .find(|r| &r.0 == q && r.1.as_deref() == Some(state))
                    .map_or(0, |r| r.2);
                self.gated.depth.with_label_values(&[q, state]).set(n);
            }
        }
        *known = queues;
        self.gated.alive.set(alive);
    }
}

/// How often the exporter refreshes (and followers retry the lock), and what counts as alive.
#[derive(Debug, Clone, Copy)]
pub struct ExporterConfig {
    /// Refresh period of the holder; lock retry period of the others.
    pub every: Duration,
    /// A worker is alive when it heartbeated this recently and has not stopped.
    pub alive_within: Duration,
}

impl Default for ExporterConfig {
    fn default() -> Self {
        Self {
            every: Duration::from_secs(5),
            alive_within: Duration::from_secs(30),
        }
    }
}

/// One process's contender for exporting the fleet gauges.
pub struct DepthExporter {
    pool: PgPool,
    config: ExporterConfig,
    gauges: Arc<DepthGauges>,
}

impl DepthExporter {
    /// An exporter writing `gauges` (usually [`DepthGauges::global`]).
    pub fn new(pool: PgPool, config: ExporterConfig, gauges: Arc<DepthGauges>) -> Self {
        Self { pool, config, gauges }
    }

    /// Starts this process's one exporter on the process registry, unless one already runs
    /// (a `kiln up` process runs worker, scheduler and API roles; they share it). It stops
    /// when `stop` fires.
    pub fn spawn_for_process(
        pool: &PgPool,
        config: ExporterConfig,
        stop: CancellationToken,
    ) -> Option<tokio::task::JoinHandle<()>> {
        static RUNNING: AtomicBool = AtomicBool::new(false);
        if RUNNING.swap(true, Ordering::AcqRel) {
            return None;
        }
        let exporter = DepthExporter::new(pool.clone(), config, DepthGauges::global());
        Some(tokio::spawn(async move {
            exporter.run(stop).await;
            RUNNING.store(false, Ordering::Release);
        }))
    }

    /// Contends for the lock and, while holding it, refreshes the gauges every period,
    /// until `stop` fires (then the lock is released and the gauges closed).
    pub async fn run(self, stop: CancellationToken) {
        let mut conn: Option<PgConnection> = None;
        let mut holding = false;
        loop {
            match self.step(&mut conn, &mut holding).await {
                Ok(()) => {}
                Err(e) => {
                    if holding {
                        tracing::warn!(error = %e, "depth exporter lost its connection; no longer exporting");
                    } else {
                        tracing::debug!(error = %e, "depth exporter could not reach the database");
                    }
                    holding = false;
                    self.gauges.set_exporting(false);
                    conn = None;
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(self.config.every) => {}
                _ = stop.cancelled() => break,
            }
        }
        self.gauges.set_exporting(false);
        if let Some(mut c) = conn {
            if holding {
                let _ = sqlx::query("SELECT pg_advisory_unlock(hashtextextended($1, 0))")
                    .bind(LOCK_NAME)
                    .execute(&mut c)
                    .await;
                tracing::info!("depth exporter stopped; another process may take over");
            }
            let _ = c.close().await;
        }
    }

    async fn step(&self, conn: &mut Option<PgConnection>, holding: &mut bool) -> Result<(), sqlx::Error> {
        if conn.is_none() {
            *conn = Some(self.pool.acquire().await?.detach());
        }
        let c = conn.as_mut().expect("connected above");
        // Every process keeps its set of queue labels current, holder or not.
        let known: Vec<String> = sqlx::query_scalar(KNOWN_QUEUES_SQL).fetch_all(&mut *c).await?;
        crate::queues::set_fleet(known);
        if !*holding {
            let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtextextended($1, 0))")
                .bind(LOCK_NAME)
                .fetch_one(&mut *c)
                .await?;
            if !got {
                return Ok(());
            }
            *holding = true;
            tracing::info!("this process now exports the fleet's queue depth and workers alive");
        }
        // Read on the lock's own connection: if it died, the lock died with it.
        let rows = sqlx::query(QUEUE_DEPTH_SQL).fetch_all(&mut *c).await?;
        let mut labelled: Vec<(String, Option<String>, i64)> = Vec::new();
        for r in &rows {
            let queue: String = r.get("queue");
            let (state, count): (Option<String>, i64) = (r.get("state"), r.get("count"));
            let queue = crate::queues::label(&queue).to_owned();
            match labelled.iter_mut().find(|l| l.0 == queue && l.1 == state) {
                Some(l) => l.2 += count,
                None => labelled.push((queue, state, count)),
            }
        }
        let rows = labelled;
        let alive: i64 = sqlx::query_scalar(WORKERS_ALIVE_SQL)
            .bind(self.config.alive_within.as_secs_f64())
            .fetch_one(&mut *c)
            .await?;
        self.gauges.update(&rows, alive);
        self.gauges.set_exporting(true);
        Ok(())
    }
}
