//! What a job asks of the sandbox: image, command, environment, workspace, limits, outputs.

use std::time::Duration;

use crate::workspace::Workspace;

/// Who a container belongs to; written as labels on every container and volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobLabels {
    /// The queue's job id.
    pub job_id: i64,
    /// The attempt number of that job.
    pub attempt: i32,
    /// The worker running the attempt.
    pub worker_id: String,
}

/// Resource limits of one job (DESIGN.md's sandbox defaults).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Memory limit in bytes; swap is set equal (memory + swap = this), so no swap is used.
    pub memory_bytes: i64,
    /// CPUs, in billionths of a CPU (1_000_000_000 = one CPU).
    pub nano_cpus: i64,
    /// Maximum number of processes and threads.
    pub pids: i64,
    /// Maximum open files (`RLIMIT_NOFILE`).
    pub nofile: i64,
    /// Largest file a process may write (`RLIMIT_FSIZE`), in bytes.
    pub file_size_bytes: i64,
    /// Size of the `/tmp` tmpfs in bytes (counted in the memory limit).
    pub tmp_bytes: i64,
    /// Bytes of stdout (and, separately, stderr) kept; the rest is counted only.
    pub log_cap_bytes: usize,
    /// Largest workspace accepted as input, in bytes.
    pub workspace_bytes: u64,
    /// Total bytes of output files brought back.
    pub output_bytes: u64,
    /// Workspace quota: bytes `/work` may hold (a size-limited tmpfs volume; its pages count
    /// in the container's memory cgroup, whose limit is raised by this much).
    pub disk_bytes: u64,
    /// Workspace quota: files, directories and links `/work` may hold.
    pub disk_files: u64,
}

impl Limits {
    /// True when a container created with `self` enforces what `other` asks: the limits set
    /// on the container and its `/work` volume are equal (the caps Kiln applies as it reads
    /// the job's output and files may differ).
    pub fn same_container(&self, other: &Limits) -> bool {
        let key = |l: &Limits| {
            (
                l.memory_bytes,
                l.nano_cpus,
                l.pids,
                l.nofile,
                l.file_size_bytes,
                l.tmp_bytes,
                l.disk_bytes,
                l.disk_files,
            )
        };
        key(self) == key(other)
    }

    /// The container's memory cgroup limit: the job's memory plus its workspace quota, since
    /// the workspace's tmpfs pages are charged to the job's cgroup.
    pub fn cgroup_memory_bytes(&self) -> i64 {
        self.memory_bytes
            .saturating_add(i64::try_from(self.disk_bytes).unwrap_or(i64::MAX))
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_bytes: 1 << 30,
            nano_cpus: 1_000_000_000,
            pids: 256,
            nofile: 1024,
            file_size_bytes: 256 << 20,
            tmp_bytes: 256 << 20,
            log_cap_bytes: 1 << 20,
            workspace_bytes: 50 << 20,
            output_bytes: 50 << 20,
            disk_bytes: 1 << 30,
            disk_files: 100_000,
        }
    }
}

/// One job for the sandbox.
#[derive(Debug, Clone)]
pub struct JobSpec {
    /// Image reference, e.g. `kiln-python:0123456789ab`.
    pub image: String,
    /// argv of the command; run in `/work` as the image's non-root user.
    pub command: Vec<String>,
    /// `KEY=VALUE` pairs added to the image's environment.
    pub env: Vec<(String, String)>,
    /// Files placed in `/work` before the command starts.
    pub workspace: Workspace,
    /// Resource limits.
    pub limits: Limits,
    /// Wall-clock limit, enforced by Kiln (the container is killed, the job recorded `timed_out`).
    pub timeout: Duration,
    /// Paths (relative to `/work`, files or directories) brought back as output files.
    pub outputs: Vec<String>,
    /// Labels identifying the job, attempt and worker.
    pub labels: JobLabels,
    /// Paths (relative to `/work`, files or directories) left out of the diff: scratch space
    /// such as tool reports that the job writes but that is not a change to the code.
    pub diff_ignore: Vec<String>,
}

impl JobSpec {
    /// A job with default limits, a 120 s timeout, an empty workspace and no outputs.
    pub fn new(image: impl Into<String>, command: &[&str], labels: JobLabels) -> Self {
        JobSpec {
            image: image.into(),
            command: command.iter().map(|s| s.to_string()).collect(),
            env: Vec::new(),
            workspace: Workspace::default(),
            limits: Limits::default(),
            timeout: Duration::from_secs(120),
            outputs: Vec::new(),
            labels,
            diff_ignore: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_side_caps_do_not_change_the_container() {
        let base = Limits::default();
        let more_log = Limits {
            log_cap_bytes: 8 << 20,
            output_bytes: 1,
            workspace_bytes: 2,
            ..Limits::default()
        };
        assert!(base.same_container(&more_log));
        let smaller_quota = Limits {
            disk_bytes: 8 << 20,
            ..Limits::default()
        };
        assert!(!base.same_container(&smaller_quota));
        let fewer_files = Limits {
            disk_files: 10,
            ..Limits::default()
        };
        assert!(!base.same_container(&fewer_files));
    }
}
