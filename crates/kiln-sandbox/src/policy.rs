//! The hardened container and volume definitions (DESIGN.md's sandbox policy).

use std::collections::HashMap;

use bollard::models::{
    ContainerCreateBody, HostConfig, HostConfigLogConfig, Mount, MountType, ResourcesUlimits,
    VolumeCreateRequest,
};

use crate::quota::{SLACK_BYTES, SLACK_FILES};
use crate::spec::{JobLabels, Limits};
use crate::workspace::JOB_UID;

/// Label present on everything Kiln creates.
pub const LABEL_MANAGED: &str = "kiln.managed";
/// Label: the job id (`pool` while a warm container waits for a job).
pub const LABEL_JOB: &str = "kiln.job";
/// Label: the attempt number.
pub const LABEL_ATTEMPT: &str = "kiln.attempt";
/// Label: the worker id.
pub const LABEL_WORKER: &str = "kiln.worker";
/// Label: host name of the worker process (the reaper's liveness check).
pub const LABEL_HOST: &str = "kiln.host";
/// Label: pid of the worker process.
pub const LABEL_PID: &str = "kiln.pid";
/// Label: start time of the worker process (guards against pid reuse).
pub const LABEL_PID_START: &str = "kiln.pid_start";
/// Label: the fleet (database) the worker serves, `kiln_queue::fleet_id`; absent when the
/// sandbox runs without a database. The reaper judges by registry only its own fleet's objects.
pub const LABEL_FLEET: &str = "kiln.fleet";

/// Who is creating containers: the worker id plus this process's identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// The worker id given by the caller.
    pub worker_id: String,
    /// This machine's host name.
    pub host: String,
    /// This process's pid.
    pub pid: u32,
    /// This process's start time (clock ticks since boot, from /proc).
    pub pid_start: u64,
    /// The fleet this worker belongs to (None: no database, no `kiln.fleet` label).
    pub fleet: Option<String>,
}

impl Owner {
    /// The identity of the current process, working as `worker_id`.
    pub fn current(worker_id: &str) -> Owner {
        let pid = std::process::id();
        Owner {
            worker_id: worker_id.to_string(),
            host: host_name(),
            pid,
            pid_start: process_start(pid).unwrap_or(0),
            fleet: None,
        }
    }

    /// This owner as a worker of `fleet` (its objects get the `kiln.fleet` label).
    pub fn in_fleet(mut self, fleet: impl Into<String>) -> Owner {
        self.fleet = Some(fleet.into());
        self
    }

    /// Labels for a container or volume of this owner, for `job` (None: a warm-pool container).
    pub fn labels(&self, job: Option<&JobLabels>) -> HashMap<String, String> {
        let (job_id, attempt) = match job {
            Some(j) => (j.job_id.to_string(), j.attempt.to_string()),
            None => ("pool".to_string(), "0".to_string()),
        };
        let mut labels = HashMap::from([
            (LABEL_MANAGED.to_string(), "true".to_string()),
            (LABEL_JOB.to_string(), job_id),
            (LABEL_ATTEMPT.to_string(), attempt),
            (LABEL_WORKER.to_string(), self.worker_id.clone()),
            (LABEL_HOST.to_string(), self.host.clone()),
            (LABEL_PID.to_string(), self.pid.to_string()),
            (LABEL_PID_START.to_string(), self.pid_start.to_string()),
        ]);
        if let Some(fleet) = &self.fleet {
            labels.insert(LABEL_FLEET.to_string(), fleet.clone());
        }
        labels
    }
}

/// This machine's host name (from /proc, falling back to `$HOSTNAME`).
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "unknown".into())
}

/// Start time of process `pid` in clock ticks since boot (field 22 of /proc/PID/stat).
pub fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_comm = &stat[stat.rfind(')')? + 2..];
    after_comm.split_whitespace().nth(19)?.parse().ok()
}

/// The `/work` volume: a tmpfs of the local driver sized by the workspace quota (bytes and
/// inodes), owned by the job user. It lives outside the engine's data root and the host's
/// disks; a job that fills it gets `ENOSPC`.
pub fn volume_body(name: &str, limits: &Limits, labels: HashMap<String, String>) -> VolumeCreateRequest {
    let inodes = limits.disk_files.saturating_add(SLACK_FILES);
    let bytes = limits.disk_bytes.saturating_add(SLACK_BYTES);
    VolumeCreateRequest {
        name: Some(name.into()),
        driver: Some("local".into()),
        driver_opts: Some(HashMap::from([
            ("type".to_string(), "tmpfs".to_string()),
            ("device".to_string(), "tmpfs".to_string()),
            (
                "o".to_string(),
                format!("size={bytes},nr_inodes={inodes},uid={JOB_UID},gid={JOB_UID},mode=0755,nosuid,nodev"),
            ),
        ])),
        labels: Some(labels),
        ..Default::default()
    }
}

/// The idle command of a sandbox container: it waits, and the job arrives as an exec.
pub const IDLE_COMMAND: [&str; 2] = ["sleep", "infinity"];

/// The container definition: every default of the sandbox policy.
/// `security_opt` comes from [`crate::Isolation::security_opts`] (Kiln's seccomp profile where
/// the engine applies none).
pub fn container_body(
    image: &str,
    volume: &str,
    limits: &Limits,
    labels: HashMap<String, String>,
    security_opt: Vec<String>,
) -> ContainerCreateBody {
    let ulimit = |name: &str, v: i64| ResourcesUlimits {
        name: Some(name.into()),
        soft: Some(v),
        hard: Some(v),
    };
    let host = HostConfig {
        network_mode: Some("none".into()),
        readonly_rootfs: Some(true),
        cap_drop: Some(vec!["ALL".into()]),
        security_opt: Some(security_opt),
        init: Some(true),
        memory: Some(limits.cgroup_memory_bytes()),
        memory_swap: Some(limits.cgroup_memory_bytes()),
        nano_cpus: Some(limits.nano_cpus),
        pids_limit: Some(limits.pids),
        ulimits: Some(vec![
            ulimit("nofile", limits.nofile),
            ulimit("fsize", limits.file_size_bytes),
            ulimit("core", 0),
        ]),
        tmpfs: Some(HashMap::from([(
            "/tmp".into(),
            format!("rw,exec,nosuid,nodev,mode=1777,size={}", limits.tmp_bytes),
        )])),
        mounts: Some(vec![Mount {
            target: Some("/work".into()),
            source: Some(volume.into()),
            typ: Some(MountType::VOLUME),
            ..Default::default()
        }]),
        log_config: Some(HostConfigLogConfig {
            typ: Some("none".into()),
            config: None,
        }),
        ..Default::default()
    };
    ContainerCreateBody {
        image: Some(image.into()),
        cmd: Some(IDLE_COMMAND.iter().map(|s| s.to_string()).collect()),
        user: Some(format!("{JOB_UID}:{JOB_UID}")),
        working_dir: Some("/work".into()),
        network_disabled: Some(true),
        tty: Some(false),
        attach_stdin: Some(false),
        attach_stdout: Some(false),
        attach_stderr: Some(false),
        labels: Some(labels),
        host_config: Some(host),
        ..Default::default()
    }
}
