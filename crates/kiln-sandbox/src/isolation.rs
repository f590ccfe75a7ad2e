//! What isolation the engine really provides, read from `docker info` at start-up.

use bollard::Docker;
use serde::Serialize;

use crate::error::{Result, SandboxError};

/// The isolation-relevant facts of the engine.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Isolation {
    /// Engine version.
    pub server_version: String,
    /// Security options (`name=seccomp,profile=default`, `name=apparmor`, `name=userns`…).
    pub security_options: Vec<String>,
    /// True when a seccomp profile is applied to containers.
    pub seccomp: bool,
    /// True when AppArmor confines containers.
    pub apparmor: bool,
    /// True when the engine remaps users (userns).
    pub userns: bool,
    /// True when the engine itself runs rootless.
    pub rootless: bool,
    /// cgroup version (`1` or `2`).
    pub cgroup_version: String,
    /// Whether memory, swap and pids limits are enforced.
    pub memory_limit: bool,
    /// Whether memory+swap limits are enforced (otherwise swap is unlimited).
    pub swap_limit: bool,
    /// Whether the pids limit is enforced.
    pub pids_limit: bool,
    /// Storage driver (`overlay2`, `fuse-overlayfs`…).
    pub storage_driver: String,
    /// Default OCI runtime.
    pub runtime: String,
    /// Engine warnings.
    pub warnings: Vec<String>,
}

/// Reads `docker info` and logs what is in force (warnings for what is missing).
pub async fn inspect(docker: &Docker) -> Result<Isolation> {
    let info = docker
        .info()
        .await
        .map_err(|e| SandboxError::DaemonUnavailable(e.to_string()))?;
    let security_options = info.security_options.clone().unwrap_or_default();
    let has = |name: &str| security_options.iter().any(|o| o.contains(name));
    let iso = Isolation {
        server_version: info.server_version.clone().unwrap_or_default(),
        seccomp: has("seccomp"),
        apparmor: has("apparmor"),
        userns: has("userns"),
        rootless: has("rootless"),
        security_options,
        cgroup_version: info.cgroup_version.map(|v| v.to_string()).unwrap_or_default(),
        memory_limit: info.memory_limit.unwrap_or(false),
        swap_limit: info.swap_limit.unwrap_or(false),
        pids_limit: info.pids_limit.unwrap_or(false),
        storage_driver: info.driver.clone().unwrap_or_default(),
        runtime: info.default_runtime.clone().unwrap_or_default(),
        warnings: info.warnings.clone().unwrap_or_default(),
    };
    tracing::info!(
        version = %iso.server_version,
        seccomp = iso.seccomp,
        apparmor = iso.apparmor,
        userns = iso.userns,
        rootless = iso.rootless,
        cgroup = %iso.cgroup_version,
        memory_limit = iso.memory_limit,
        swap_limit = iso.swap_limit,
        pids_limit = iso.pids_limit,
        storage = %iso.storage_driver,
        runtime = %iso.runtime,
        "docker isolation in force"
    );
    if !iso.seccomp {
        tracing::warn!("engine applies no seccomp profile: syscalls are not filtered");
    }
    if !iso.memory_limit || !iso.swap_limit || !iso.pids_limit {
        tracing::warn!("engine does not enforce every resource limit (memory/swap/pids)");
    }
    for w in &iso.warnings {
        tracing::warn!(warning = %w, "docker engine warning");
    }
    Ok(iso)
}
