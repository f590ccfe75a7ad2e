//! What isolation the engine really provides, read from `docker info` at start-up, and what
//! Kiln adds where the engine lacks it (its own seccomp profile).

use bollard::Docker;
use serde::Serialize;

use crate::error::{Result, SandboxError};

/// Docker's default seccomp profile, shipped in the repository (origin in
/// `seccomp/ORIGIN.md`); applied when the engine reports no seccomp.
pub const DEFAULT_SECCOMP_PROFILE: &str = include_str!("../seccomp/docker-default.json");

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

/// Where the seccomp filter of sandbox containers comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SeccompSource {
    /// The engine's own default profile.
    Engine,
    /// Kiln's copy of Docker's default profile (the engine reported none).
    Kiln,
}

/// The isolation in force on every sandbox container: the engine's facts plus what Kiln sets.
/// Safe to show to anyone (no error text, no paths).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InForce {
    /// Which seccomp profile filters syscalls.
    pub seccomp: SeccompSource,
    /// AppArmor confinement by the engine.
    pub apparmor: bool,
    /// User-namespace remapping by the engine.
    pub userns: bool,
    /// The engine runs rootless.
    pub rootless: bool,
    /// cgroup version.
    pub cgroup_version: String,
    /// Memory limit enforced.
    pub memory_limit: bool,
    /// Swap limit enforced.
    pub swap_limit: bool,
    /// Pids limit enforced.
    pub pids_limit: bool,
    /// Core dumps possible (always false: `core=0` soft and hard).
    pub core_dumps: bool,
    /// `no-new-privileges` set (always).
    pub no_new_privileges: bool,
    /// Every capability dropped (always).
    pub cap_drop_all: bool,
    /// Network mode of job containers (always `none`).
    pub network: &'static str,
    /// How the workspace quota is enforced.
    pub workspace_quota: &'static str,
}

impl Isolation {
    /// What is in force given these engine facts.
    pub fn in_force(&self) -> InForce {
        InForce {
            seccomp: if self.seccomp {
                SeccompSource::Engine
            } else {
                SeccompSource::Kiln
            },
            apparmor: self.apparmor,
            userns: self.userns,
            rootless: self.rootless,
            cgroup_version: self.cgroup_version.clone(),
            memory_limit: self.memory_limit,
            swap_limit: self.swap_limit,
            pids_limit: self.pids_limit,
            core_dumps: false,
            no_new_privileges: true,
            cap_drop_all: true,
            network: "none",
            workspace_quota: "tmpfs volume (bytes and inodes)",
        }
    }

    /// The `security_opt` entries of every sandbox container: `no-new-privileges`, plus Kiln's
    /// seccomp profile when the engine applies none.
    pub fn security_opts(&self) -> Vec<String> {
        let mut opts = vec!["no-new-privileges".to_string()];
        if !self.seccomp {
            opts.push(format!("seccomp={DEFAULT_SECCOMP_PROFILE}"));
        }
        opts
    }
}

/// Reads `docker info` (nothing logged).
pub async fn read(docker: &Docker) -> Result<Isolation> {
    let info = docker
        .info()
        .await
        .map_err(|e| SandboxError::DaemonUnavailable(e.to_string()))?;
    let security_options = info.security_options.clone().unwrap_or_default();
    let has = |name: &str| security_options.iter().any(|o| o.contains(name));
    Ok(Isolation {
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
    })
}

/// Reads `docker info` and logs what is in force (warnings for what is missing).
pub async fn inspect(docker: &Docker) -> Result<Isolation> {
    let iso = read(docker).await?;
    log_in_force(&iso);
    Ok(iso)
}

/// Logs the isolation in force, once per worker start.
pub fn log_in_force(iso: &Isolation) {
    let f = iso.in_force();
    tracing::info!(
        version = %iso.server_version,
        seccomp = ?f.seccomp,
        apparmor = f.apparmor,
        userns = f.userns,
        rootless = f.rootless,
        cgroup = %f.cgroup_version,
        memory_limit = f.memory_limit,
        swap_limit = f.swap_limit,
        pids_limit = f.pids_limit,
        core_dumps = f.core_dumps,
        no_new_privileges = f.no_new_privileges,
        cap_drop_all = f.cap_drop_all,
        network = f.network,
        workspace_quota = f.workspace_quota,
        storage = %iso.storage_driver,
        runtime = %iso.runtime,
        "sandbox isolation in force"
    );
    if f.seccomp == SeccompSource::Kiln {
        tracing::warn!("engine applies no seccomp profile: Kiln applies its copy of Docker's default");
    }
    if !iso.memory_limit || !iso.swap_limit || !iso.pids_limit {
        tracing::warn!("engine does not enforce every resource limit (memory/swap/pids)");
    }
    for w in &iso.warnings {
        tracing::warn!(warning = %w, "docker engine warning");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kiln_applies_its_seccomp_profile_only_where_the_engine_has_none() {
        let with = Isolation {
            seccomp: true,
            ..Isolation::default()
        };
        assert_eq!(with.security_opts(), vec!["no-new-privileges"]);
        assert_eq!(with.in_force().seccomp, SeccompSource::Engine);
        let without = Isolation::default();
        let opts = without.security_opts();
        assert_eq!(opts.len(), 2);
        let profile = opts[1].strip_prefix("seccomp=").expect("a seccomp option");
        let json: serde_json::Value = serde_json::from_str(profile).expect("profile is JSON");
        assert_eq!(json["defaultAction"], "SCMP_ACT_ERRNO");
        assert!(json["syscalls"].as_array().is_some_and(|s| !s.is_empty()));
        assert_eq!(without.in_force().seccomp, SeccompSource::Kiln);
        assert!(!without.in_force().core_dumps);
    }
}
