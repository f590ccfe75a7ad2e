//! A second Docker engine on this machine: another worker host for tests.
//!
//! [`SecondEngine::start`] runs `dockerd` with everything of its own under
//! `$TMPDIR/kiln-engine-<pid>-<n>/` (data root, exec root, pidfile, socket, log), a bridge of
//! its own (a `dockerd` given `--bridge=none` deletes the host's `docker0`), no iptables
//! rules (Kiln's containers have no network), a cgroup parent named like the directory, and
//! the first storage driver that works here: overlay2, then fuse-overlayfs, then vfs. Its
//! `dockerd` dies with the test process (`PR_SET_PDEATHSIG`); a directory whose test process
//! is gone is a leftover, removed (processes, mounts, cgroups, bridge, files) by the next start.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bollard::query_parameters::ImportImageOptionsBuilder;
use bollard::{Docker, API_DEFAULT_VERSION};
use futures::StreamExt;

/// Prefix of every second engine's directory under the temp dir (and of its cgroup parent).
pub const DIR_PREFIX: &str = "kiln-engine-";
/// The Docker daemon binary (`KILN_TEST_DOCKERD` overrides).
pub const DOCKERD: &str = "/usr/sbin/dockerd";
/// Storage drivers tried in order: the first that starts is used.
pub const DRIVERS: [&str; 3] = ["overlay2", "fuse-overlayfs", "vfs"];
/// How long `dockerd` may take to answer its socket.
const READY_WITHIN: Duration = Duration::from_secs(60);
/// How long copying images into the engine may take.
const LOAD_WITHIN: Duration = Duration::from_secs(900);
/// How long a stopping `dockerd` may take before it is killed.
const STOP_WITHIN: Duration = Duration::from_secs(60);

/// What can go wrong running a second engine.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A file or process operation failed.
    #[error("second engine: {what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// No storage driver let `dockerd` start; the tail of its last log.
    #[error("second engine: dockerd did not start with any of {DRIVERS:?}: {log}")]
    NotStarted {
        /// The last lines `dockerd` wrote.
        log: String,
    },
    /// A Docker API call failed.
    #[error("second engine: {what}: {source}")]
    Docker {
        /// What was being done.
        what: String,
        /// The underlying error.
        #[source]
        source: bollard::errors::Error,
    },
    /// Loading images ended with an error from the engine, or without the image.
    #[error("second engine: loading {images:?}: {message}")]
    Load {
        /// The images asked for.
        images: Vec<String>,
        /// What the engine said.
        message: String,
    },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> EngineError {
    let what = what.into();
    move |source| EngineError::Io { what, source }
}

fn api(what: impl Into<String>) -> impl FnOnce(bollard::errors::Error) -> EngineError {
    let what = what.into();
    move |source| EngineError::Docker { what, source }
}

/// A running `dockerd` of this test process (see the module doc). Stopped, and its directory
/// removed, on drop.
pub struct SecondEngine {
    dir: PathBuf,
    driver: &'static str,
    docker: Docker,
    pid: u32,
    exited: mpsc::Receiver<()>,
    /// How long the last start took until the engine answered.
    pub started_in: Duration,
}

impl SecondEngine {
    /// Removes leftovers of dead test processes, then starts a fresh engine and waits until it
    /// answers.
    pub async fn start() -> Result<SecondEngine, EngineError> {
        remove_leftovers();
        let dir = new_dir()?;
        let mut last_log = String::new();
        // Twice per driver: under load dockerd can give up waiting for its containerd.
        for driver in DRIVERS.into_iter().flat_map(|d| [d, d]) {
            let began = Instant::now();
            let (pid, exited) = launch(&dir, driver)?;
            match wait_ready(&dir, &exited).await {
                Some(docker) => {
                    let started_in = began.elapsed();
                    tracing::info!(dir = %dir.display(), driver, ?started_in, "second engine up");
                    return Ok(SecondEngine {
                        dir,
                        driver,
                        docker,
                        pid,
                        exited,
                        started_in,
                    });
                }
                None => {
                    signal(pid, libc::SIGKILL);
                    let _ = exited.recv_timeout(STOP_WITHIN);
                    last_log = log_tail(&dir);
                    tracing::warn!(driver, log = %last_log, "second engine: driver refused");
                    clean_runtime(&dir);
                    let _ = std::fs::remove_dir_all(dir.join("data"));
                }
            }
        }
        clean_runtime(&dir);
        let _ = std::fs::remove_dir_all(&dir);
        Err(EngineError::NotStarted { log: last_log })
    }

    /// A client of this engine.
    pub fn docker(&self) -> &Docker {
        &self.docker
    }

    /// `DOCKER_HOST` for a process that should use this engine (`unix://…/docker.sock`).
    pub fn docker_host(&self) -> String {
        format!("unix://{}", socket(&self.dir).display())
    }

    /// The name of the engine's own bridge (removed with the engine).
    pub fn bridge(&self) -> String {
        bridge_name(&self.dir)
    }

    /// The storage driver in use.
    pub fn storage_driver(&self) -> &'static str {
        self.driver
    }

    /// This engine's directory (data root, exec root, socket, `dockerd.log`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Copies `images` (tags) from the main engine (`DOCKER_HOST` or the local socket) into
    /// this one, `docker save | docker load` through the API; images already here are skipped.
    /// Returns how long it took.
    pub async fn load_images(&self, images: &[&str]) -> Result<Duration, EngineError> {
        let began = Instant::now();
        let mut missing = Vec::new();
        for tag in images {
            if self.docker.inspect_image(tag).await.is_err() {
                missing.push(*tag);
            }
        }
        if missing.is_empty() {
            return Ok(began.elapsed());
        }
        // An image is hundreds of MB through two engines on a loaded machine: past bollard's
        // default two-minute timeout.
        let main = Docker::connect_with_defaults()
            .map_err(api("connect to the main engine"))?
            .with_timeout(LOAD_WITHIN);
        let second = self.docker.clone().with_timeout(LOAD_WITHIN);
        let tar = main.export_images(&missing);
        let opts = ImportImageOptionsBuilder::new().quiet(true).build();
        let mut load = second.import_image_stream(opts, tar, None);
        let failed = |message: String| EngineError::Load {
            images: missing.iter().map(|s| s.to_string()).collect(),
            message,
        };
        while let Some(step) = load.next().await {
            let info = step.map_err(|e| failed(e.to_string()))?;
            if let Some(e) = info.error_detail.and_then(|d| d.message) {
                return Err(failed(e));
            }
        }
        for tag in &missing {
            self.docker
                .inspect_image(tag)
                .await
                .map_err(|e| failed(format!("{tag} absent after the load: {e}")))?;
        }
        Ok(began.elapsed())
    }

    /// Stops `dockerd` as an operator would (SIGTERM: it stops its containers), killing it if
    /// it takes longer than a minute. The directory stays, for [`SecondEngine::restart`].
    pub fn stop(&mut self) {
        signal(self.pid, libc::SIGTERM);
        if self.exited.recv_timeout(STOP_WITHIN).is_err() {
            signal(self.pid, libc::SIGKILL);
            let _ = self.exited.recv_timeout(STOP_WITHIN);
        }
    }

    /// Kills `dockerd` at once (SIGKILL), as a crashed engine: its containers may keep running
    /// until [`SecondEngine::restart`] or drop.
    pub fn kill(&mut self) {
        signal(self.pid, libc::SIGKILL);
        let _ = self.exited.recv_timeout(STOP_WITHIN);
    }

    /// Starts `dockerd` again on the same directory (images and containers kept) after
    /// [`SecondEngine::stop`] or [`SecondEngine::kill`]; waits until it answers.
    pub async fn restart(&mut self) -> Result<(), EngineError> {
        if self.exited.try_recv().is_err() && alive(self.pid) {
            self.stop();
        }
        // A few tries: after a crash, dockerd can give up waiting for its containerd while
        // that one cleans up the dead engine's shims.
        for _ in 0..3 {
            let began = Instant::now();
            let (pid, exited) = launch(&self.dir, self.driver)?;
            self.pid = pid;
            self.exited = exited;
            if let Some(docker) = wait_ready(&self.dir, &self.exited).await {
                self.docker = docker;
                self.started_in = began.elapsed();
                return Ok(());
            }
            tracing::warn!(log = %log_tail(&self.dir), "second engine: restart failed; trying again");
            self.kill();
        }
        Err(EngineError::NotStarted {
            log: log_tail(&self.dir),
        })
    }
}

impl Drop for SecondEngine {
    fn drop(&mut self) {
        self.stop();
        clean_runtime(&self.dir);
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            tracing::warn!(dir = %self.dir.display(), error = %e, "second engine: directory left");
        }
    }
}

fn socket(dir: &Path) -> PathBuf {
    dir.join("docker.sock")
}

/// The cgroup parent of the engine living in `dir` (its directory's name).
fn cgroup_parent(dir: &Path) -> String {
    dir.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The engine's own bridge: `kb` and a hash of its directory's name (at most 15 bytes).
fn bridge_name(dir: &Path) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    cgroup_parent(dir).hash(&mut h);
    format!("kb{:012x}", h.finish() & 0xffff_ffff_ffff)
}

/// Creates the engine's own bridge (with an address in 10.200.0.0/13 picked by its name) if
/// it does not exist, and returns its name. With `--bridge=none` a second `dockerd` deletes
/// the host's `docker0` — the main engine's default bridge — so it is given a bridge of its
/// own instead; its containers never use it (Kiln's have no network).
fn ensure_bridge(dir: &Path) -> Result<String, EngineError> {
    let name = bridge_name(dir);
    let ip = |args: &[&str]| {
        std::process::Command::new("ip")
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .map_err(io("run ip"))
    };
    if ip(&["link", "show", &name])?.success() {
        return Ok(name);
    }
    let n = u64::from_str_radix(&name[2..], 16).unwrap_or(0);
    let addr = format!("10.{}.{}.1/24", 200 + n % 8, (n >> 8) % 256);
    for args in [
        vec!["link", "add", name.as_str(), "type", "bridge"],
        vec!["addr", "add", addr.as_str(), "dev", name.as_str()],
        vec!["link", "set", name.as_str(), "up"],
    ] {
        if !ip(&args)?.success() {
            return Err(EngineError::Io {
                what: format!("ip {}", args.join(" ")),
                source: std::io::Error::other("failed"),
            });
        }
    }
    Ok(name)
}

/// Deletes the engine's bridge, if any.
fn remove_bridge(dir: &Path) {
    let _ = std::process::Command::new("ip")
        .args(["link", "del", &bridge_name(dir)])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
}

/// A new directory `kiln-engine-<pid>-<n>` with an `owner` file naming this process.
fn new_dir() -> Result<PathBuf, EngineError> {
    let pid = std::process::id();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    // Short: the socket path must stay under the kernel's 108 bytes.
    let dir = std::env::temp_dir().join(format!("{DIR_PREFIX}{pid}-{nanos:x}"));
    std::fs::create_dir(&dir).map_err(io(format!("create {}", dir.display())))?;
    let owner = format!("{pid} {}\n", process_start(pid).unwrap_or(0));
    std::fs::write(dir.join("owner"), owner).map_err(io("write the owner file"))?;
    std::fs::write(dir.join("daemon.json"), "{}\n").map_err(io("write daemon.json"))?;
    Ok(dir)
}

/// Starts `dockerd` on `dir` from a thread that lives as long as it does (so the parent-death
/// signal fires only when this process dies). Returns its pid and a channel told when it exits.
fn launch(dir: &Path, driver: &str) -> Result<(u32, mpsc::Receiver<()>), EngineError> {
    use std::os::unix::process::CommandExt;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("dockerd.log"))
        .map_err(io("open dockerd.log"))?;
    let log2 = log.try_clone().map_err(io("open dockerd.log"))?;
    let _ = std::fs::remove_file(socket(dir));
    let dockerd = std::env::var("KILN_TEST_DOCKERD").unwrap_or_else(|_| DOCKERD.into());
    let mut cmd = std::process::Command::new(dockerd);
    cmd.arg("--data-root")
        .arg(dir.join("data"))
        .arg("--exec-root")
        .arg(dir.join("exec"))
        .arg("--pidfile")
        .arg(dir.join("dockerd.pid"))
        .arg("--config-file")
        .arg(dir.join("daemon.json"))
        .arg("-H")
        .arg(format!("unix://{}", socket(dir).display()))
        .arg(format!("--bridge={}", ensure_bridge(dir)?))
        .args(["--iptables=false", "--ip6tables=false"])
        .arg(format!("--storage-driver={driver}"))
        .arg(format!("--cgroup-parent={}", cgroup_parent(dir)))
        .stdin(std::process::Stdio::null())
        .stdout(log)
        .stderr(log2);
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let (pid_tx, pid_rx) = mpsc::channel();
    let (exit_tx, exit_rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("second-dockerd".into())
        .spawn(move || match cmd.spawn() {
            Ok(mut child) => {
                let _ = pid_tx.send(Ok(child.id()));
                let _ = child.wait();
                let _ = exit_tx.send(());
            }
            Err(e) => {
                let _ = pid_tx.send(Err(e));
            }
        })
        .map_err(io("spawn the dockerd thread"))?;
    let pid = pid_rx
        .recv()
        .map_err(|_| EngineError::Io {
            what: "start dockerd".into(),
            source: std::io::Error::other("launcher thread ended"),
        })?
        .map_err(io("start dockerd"))?;
    Ok((pid, exit_rx))
}

/// A client once `dockerd` answers a ping; None when it exits or does not answer in time.
async fn wait_ready(dir: &Path, exited: &mpsc::Receiver<()>) -> Option<Docker> {
    let deadline = Instant::now() + READY_WITHIN;
    let path = socket(dir);
    while Instant::now() < deadline {
        if exited.try_recv().is_ok() {
            return None;
        }
        if let Ok(docker) = Docker::connect_with_socket(&path.to_string_lossy(), 120, API_DEFAULT_VERSION) {
            if docker.ping().await.is_ok() {
                return Some(docker);
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

fn log_tail(dir: &Path) -> String {
    let log = std::fs::read_to_string(dir.join("dockerd.log")).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(5)..].join("\n")
}

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) with a pid this module started.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

fn alive(pid: u32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(pid as libc::pid_t, 0) == 0 }
}

/// Start time of `pid` in clock ticks since boot (field 22 of /proc/PID/stat).
fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_comm = &stat[stat.rfind(')')? + 2..];
    after_comm.split_whitespace().nth(19)?.parse().ok()
}

/// Removes the directories (and what runs from them) of second engines whose test process is
/// gone: `kiln-engine-*` under the temp dir with an `owner` naming a dead process.
pub fn remove_leftovers() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with(DIR_PREFIX) {
            continue;
        }
        let dir = entry.path();
        // The name carries the owner's pid; the `owner` file (written just after the directory
        // is made) its start time, against pid reuse.
        let Some(pid) = name[DIR_PREFIX.len()..]
            .split('-')
            .next()
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        let start = std::fs::read_to_string(dir.join("owner"))
            .ok()
            .and_then(|o| o.split_whitespace().nth(1).and_then(|s| s.parse::<u64>().ok()));
        let owner_alive = match start {
            Some(s) => process_start(pid) == Some(s),
            None => alive(pid),
        };
        if owner_alive {
            continue;
        }
        tracing::info!(dir = %dir.display(), "removing a second engine left by a dead test");
        if let Some(pid) = std::fs::read_to_string(dir.join("dockerd.pid"))
            .ok()
            .and_then(|p| p.trim().parse::<u32>().ok())
        {
            if std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|e| e.ends_with("dockerd")) {
                signal(pid, libc::SIGKILL);
            }
        }
        clean_runtime(&dir);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// Kills every process in the engine's cgroups and the processes started from its directory
/// (containerd, shims), then unmounts everything under it and removes its cgroups.
fn clean_runtime(dir: &Path) {
    let parent = cgroup_parent(dir);
    let cgroups = engine_cgroups(&parent);
    for cg in &cgroups {
        for pid in std::fs::read_to_string(cg.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse::<u32>().ok())
        {
            signal(pid, libc::SIGKILL);
        }
    }
    // With the separator: `…-abc/` must not match the directory `…-abcd`.
    let needle = format!("{}/", dir.to_string_lossy());
    if let Ok(procs) = std::fs::read_dir("/proc") {
        for p in procs.flatten() {
            let Ok(pid) = p.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            if pid == std::process::id() {
                continue;
            }
            let cmdline = std::fs::read(p.path().join("cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains(&needle) {
                signal(pid, libc::SIGKILL);
            }
        }
    }
    std::thread::sleep(Duration::from_millis(200));
    let mut mounts: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(unescape_mount))
        .filter(|m| m.starts_with(&needle))
        .collect();
    mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for m in mounts {
        if let Ok(c) = std::ffi::CString::new(m) {
            // SAFETY: umount2 with a NUL-terminated path.
            unsafe {
                libc::umount2(c.as_ptr(), libc::MNT_DETACH);
            }
        }
    }
    // Deepest first: a cgroup is removed once its children are.
    let mut cgroups = cgroups;
    cgroups.sort_by_key(|c| std::cmp::Reverse(c.as_os_str().len()));
    for cg in cgroups {
        let _ = std::fs::remove_dir(cg);
    }
    remove_bridge(dir);
}

/// `/sys/fs/cgroup/[controller/]<parent>` and every cgroup below it.
fn engine_cgroups(parent: &str) -> Vec<PathBuf> {
    let root = Path::new("/sys/fs/cgroup");
    let mut tops = vec![root.join(parent)];
    if let Ok(controllers) = std::fs::read_dir(root) {
        tops.extend(controllers.flatten().map(|c| c.path().join(parent)));
    }
    let mut out = Vec::new();
    let mut stack: Vec<PathBuf> = tops.into_iter().filter(|t| t.is_dir()).collect();
    while let Some(cg) = stack.pop() {
        if let Ok(children) = std::fs::read_dir(&cg) {
            stack.extend(children.flatten().map(|c| c.path()).filter(|p| p.is_dir()));
        }
        out.push(cg);
    }
    out
}

/// Mount points in mountinfo escape space, tab, newline and backslash as octal.
fn unescape_mount(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('\\') {
        out.push_str(&rest[..i]);
        match u8::from_str_radix(rest.get(i + 1..i + 4).unwrap_or(""), 8) {
            Ok(b) => {
                out.push(b as char);
                rest = &rest[i + 4..];
            }
            Err(_) => {
                out.push('\\');
                rest = &rest[i + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_points_are_unescaped() {
        assert_eq!(unescape_mount("/tmp/a\\040b/c"), "/tmp/a b/c");
        assert_eq!(unescape_mount("/plain"), "/plain");
    }
}
