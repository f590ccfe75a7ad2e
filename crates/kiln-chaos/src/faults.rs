//! The faults: a random worker SIGKILLed (and restarted) every 2–5 s; at fixed points of the
//! run's progress the scheduler leader killed, Postgres restarted twice (a fast and an
//! immediate shutdown) and the second Docker engine restarted once.

use anyhow::{Context, Result};
use rand::Rng;
use serde::Serialize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::engine::SecondHost;
use crate::fleet::Fleet;

/// One injected fault, when it began, and how long the action took.
#[derive(Debug, Clone, Serialize)]
pub struct Fault {
    /// What was done.
    pub what: String,
    /// Seconds from the start of the run.
    pub at_s: f64,
    /// Seconds the action itself took (a restart's down time).
    pub took_s: f64,
    #[serde(skip)]
    pub at: Instant,
}

/// The one-off faults, each at a fraction of the accepted jobs finished.
#[derive(Debug, Clone, Copy, PartialEq)]
enum OneOff {
    SchedulerLeader,
    PostgresFast,
    DockerEngine,
    PostgresImmediate,
}

const ONE_OFFS: [(f64, OneOff); 4] = [
    (0.15, OneOff::SchedulerLeader),
    (0.30, OneOff::PostgresFast),
    (0.50, OneOff::DockerEngine),
    (0.70, OneOff::PostgresImmediate),
];

/// What the fault loop needs.
pub struct Injector {
    pub fleet: Arc<Mutex<Fleet>>,
    pub cluster: kiln_pg::LocalCluster,
    pub engine: Option<Arc<SecondHost>>,
    pub pool: sqlx::PgPool,
    pub started: Instant,
    /// Seconds Postgres stays down in each restart.
    pub pg_down: Duration,
}

impl Injector {
    fn record(&self, faults: &Mutex<Vec<Fault>>, what: String, at: Instant) {
        let fault = Fault {
            what,
            at_s: (at - self.started).as_secs_f64(),
            took_s: at.elapsed().as_secs_f64(),
            at,
        };
        tracing::info!(what = %fault.what, at_s = fault.at_s, took_s = fault.took_s, "fault injected");
        faults.lock().expect("faults lock").push(fault);
    }

    /// Injects faults until `progress()` (fraction of the planned jobs final) has passed every
    /// one-off point and `stop()` says the load is done; returns what it did.
    pub async fn run(
        self: Arc<Self>,
        progress: impl Fn() -> f64 + Send + Sync + 'static,
        stop: impl Fn() -> bool + Send + Sync + 'static,
        faults: Arc<Mutex<Vec<Fault>>>,
    ) -> Result<()> {
        let mut pending: Vec<(f64, OneOff)> = ONE_OFFS
            .iter()
            .copied()
            .filter(|(_, f)| *f != OneOff::DockerEngine || self.engine.is_some())
            .collect();
        let mut next_kill = Instant::now() + kill_gap();
        loop {
            if pending.is_empty() && stop() {
                return Ok(());
            }
            if let Some(&(point, fault)) = pending.first() {
                if progress() >= point {
                    pending.remove(0);
                    self.one_off(fault, &faults).await?;
                    continue;
                }
            }
            if Instant::now() >= next_kill {
                let at = Instant::now();
                let index = {
                    let mut fleet = self.fleet.lock().expect("fleet lock");
                    let index = rand::rng().random_range(0..fleet.worker_count());
                    fleet.kill_and_restart_worker(index)?;
                    index
                };
                self.record(&faults, format!("worker {index} SIGKILLed"), at);
                next_kill = Instant::now() + kill_gap();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn one_off(&self, fault: OneOff, faults: &Mutex<Vec<Fault>>) -> Result<()> {
        let at = Instant::now();
        let what = match fault {
            OneOff::SchedulerLeader => {
                let pid: Option<i32> = sqlx::query_scalar(
                    "SELECT pid FROM kiln_schedulers WHERE leading_since IS NOT NULL \
                     AND stopped_at IS NULL ORDER BY leading_since DESC LIMIT 1",
                )
                .fetch_optional(&self.pool)
                .await
                .context("find the scheduler leader")?;
                let killed = match pid {
                    Some(pid) => self
                        .fleet
                        .lock()
                        .expect("fleet lock")
                        .kill_and_restart_scheduler(pid as u32)?,
                    None => false,
                };
                anyhow::ensure!(killed, "no scheduler of this run leads (pid {pid:?})");
                "scheduler leader SIGKILLed".to_string()
            }
            OneOff::PostgresFast | OneOff::PostgresImmediate => {
                let immediate = fault == OneOff::PostgresImmediate;
                let cluster = self.cluster.clone();
                let down = self.pg_down;
                tokio::task::spawn_blocking(move || -> Result<()> {
                    if immediate {
                        cluster.stop_immediately()?;
                    } else {
                        cluster.stop()?;
                    }
                    std::thread::sleep(down);
                    cluster.restart()?;
                    Ok(())
                })
                .await??;
                format!(
                    "postgres restarted ({} shutdown, {} s down)",
                    if immediate { "immediate" } else { "fast" },
                    down.as_secs()
                )
            }
            OneOff::DockerEngine => {
                let engine = self.engine.as_ref().context("no second engine")?;
                engine.restart().await?;
                "second docker engine restarted".to_string()
            }
        };
        self.record(faults, what, at);
        Ok(())
    }
}

/// 2 to 5 seconds.
fn kill_gap() -> Duration {
    Duration::from_millis(rand::rng().random_range(2_000..=5_000))
}
