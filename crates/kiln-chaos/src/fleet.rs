//! The fleet's processes, started from the real `kiln` binary and killed for real: the API,
//! the workers (each on its own Docker engine) and two schedulers.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One worker process and the engine it runs containers on.
struct WorkerSlot {
    /// `DOCKER_HOST` for this worker (None: the local engine).
    engine: Option<String>,
    child: Child,
    /// How many times this slot was (re)started.
    generation: u32,
}

/// Every process of the fleet under test.
pub struct Fleet {
    kiln: PathBuf,
    dir: PathBuf,
    db_url: String,
    config: PathBuf,
    /// Prefix of every worker and scheduler id of this run (`chaos-<hex>`).
    pub run: String,
    api: Option<Child>,
    /// The API's base URL.
    pub api_url: String,
    workers: Vec<WorkerSlot>,
    schedulers: Vec<(Child, u32)>,
}

impl Fleet {
    /// A fleet with no process yet; logs and the fleet file go under `dir`.
    pub fn new(kiln: PathBuf, dir: &Path, db_url: String, config: PathBuf, run: String) -> Self {
        Self {
            kiln,
            dir: dir.to_owned(),
            db_url,
            config,
            run,
            api: None,
            api_url: String::new(),
            workers: Vec::new(),
            schedulers: Vec::new(),
        }
    }

    fn command(&self, log: &str) -> Result<Command> {
        let log = std::fs::File::create(self.dir.join(log)).context("create a process log")?;
        let mut cmd = Command::new(&self.kiln);
        cmd.env("DATABASE_URL", &self.db_url)
            .env("RUST_LOG", "info,sqlx=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        Ok(cmd)
    }

    /// Runs `kiln ARGS` to completion and returns its stdout.
    pub fn run_kiln(&self, args: &[&str]) -> Result<String> {
        let out = Command::new(&self.kiln)
            .args(args)
            .env("DATABASE_URL", &self.db_url)
            .env("RUST_LOG", "warn")
            .output()
            .with_context(|| format!("run kiln {}", args.join(" ")))?;
        if !out.status.success() {
            bail!(
                "kiln {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Starts `kiln api` on a free loopback port and waits until `/healthz` answers.
    pub async fn start_api(&mut self) -> Result<()> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let child = self
            .command("api.log")?
            .args(["api", "--listen", &format!("127.0.0.1:{port}")])
            .spawn()
            .context("spawn kiln api")?;
        self.api = Some(child);
        self.api_url = format!("http://127.0.0.1:{port}");
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let up = client
                .get(format!("{}/healthz", self.api_url))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if up {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("kiln api did not answer /healthz within 60 s (see api.log)");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn spawn_worker(&self, index: usize, generation: u32, engine: Option<&str>) -> Result<Child> {
        let id = format!("{}-w{index}-{generation}", self.run);
        let mut cmd = self.command(&format!("worker-{index}-{generation}.log"))?;
        cmd.args(["worker", "--config"])
            .arg(&self.config)
            .args(["--id", &id]);
        match engine {
            Some(host) => cmd.env("DOCKER_HOST", host),
            None => cmd.env_remove("DOCKER_HOST"),
        };
        cmd.spawn().context("spawn kiln worker")
    }

    /// Starts a worker whose containers run on `engine` (`DOCKER_HOST`; None: the local one).
    pub fn add_worker(&mut self, engine: Option<String>) -> Result<()> {
        let child = self.spawn_worker(self.workers.len(), 0, engine.as_deref())?;
        self.workers.push(WorkerSlot {
            engine,
            child,
            generation: 0,
        });
        Ok(())
    }

    /// Ids of the workers running now (the current generation of every slot).
    pub fn live_worker_ids(&self) -> Vec<String> {
        (0..self.workers.len())
            .map(|i| format!("{}-w{i}-{}", self.run, self.workers[i].generation))
            .collect()
    }

    /// SIGTERMs the schedulers and waits for them.
    pub fn stop_schedulers(&mut self) {
        for (c, _) in &mut self.schedulers {
            let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
            let _ = c.wait();
        }
    }

    /// The number of worker slots.
    pub fn worker_count(&self) -> usize {
        self.workers.len()
    }

    /// SIGKILLs worker `index` and starts its replacement (a new worker id).
    pub fn kill_and_restart_worker(&mut self, index: usize) -> Result<()> {
        let slot = &mut self.workers[index];
        let _ = slot.child.kill();
        let _ = slot.child.wait();
        slot.generation += 1;
        let (generation, engine) = (slot.generation, slot.engine.clone());
        let child = self.spawn_worker(index, generation, engine.as_deref())?;
        self.workers[index].child = child;
        Ok(())
    }

    fn spawn_scheduler(&self, index: usize, generation: u32) -> Result<Child> {
        let id = format!("{}-s{index}-{generation}", self.run);
        self.command(&format!("scheduler-{index}-{generation}.log"))?
            .args(["scheduler", "--config"])
            .arg(&self.config)
            .args(["--id", &id])
            .spawn()
            .context("spawn kiln scheduler")
    }

    /// Starts `n` schedulers (one leads).
    pub fn start_schedulers(&mut self, n: usize) -> Result<()> {
        for i in 0..n {
            let child = self.spawn_scheduler(i, 0)?;
            self.schedulers.push((child, 0));
        }
        Ok(())
    }

    /// SIGKILLs the scheduler whose process id is `pid` (the leader, as the registry says) and
    /// starts its replacement. False when no scheduler of this fleet has that pid.
    pub fn kill_and_restart_scheduler(&mut self, pid: u32) -> Result<bool> {
        let Some(index) = self.schedulers.iter().position(|(c, _)| c.id() == pid) else {
            return Ok(false);
        };
        let (child, generation) = &mut self.schedulers[index];
        let _ = child.kill();
        let _ = child.wait();
        *generation += 1;
        let next = *generation;
        self.schedulers[index].0 = self.spawn_scheduler(index, next)?;
        Ok(true)
    }

    /// SIGTERMs every process (workers drain and hand back, schedulers step down) and waits
    /// for them, SIGKILLing what is still running after `grace`.
    pub fn stop(&mut self, grace: Duration) {
        let children = self
            .workers
            .iter_mut()
            .map(|w| &mut w.child)
            .chain(self.schedulers.iter_mut().map(|(c, _)| c))
            .chain(self.api.as_mut());
        let mut all: Vec<&mut Child> = children.collect();
        for c in &all {
            let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
        }
        let deadline = Instant::now() + grace;
        for c in all.iter_mut() {
            loop {
                match c.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() > deadline => {
                        let _ = c.kill();
                        let _ = c.wait();
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for c in self
            .workers
            .iter_mut()
            .map(|w| &mut w.child)
            .chain(self.schedulers.iter_mut().map(|(c, _)| c))
            .chain(self.api.as_mut())
        {
            if matches!(c.try_wait(), Ok(None)) {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}
