//! CPU time, peak memory and OOM kills of a container, read from its cgroup.
//!
//! `docker stats` answers only at its ~1 s sampling tick, far too slow for a job's record, so
//! the cgroup's files are read directly: from the host when the engine is local (cgroup v1 or
//! v2, cgroupfs or systemd driver), else from inside the container with one exec.

use std::collections::HashMap;

use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::Docker;
use futures::StreamExt;

/// What the cgroup says about the container's resource use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CgroupUsage {
    /// CPU time in nanoseconds.
    pub cpu_ns: u64,
    /// Memory high-water mark in bytes.
    pub peak_bytes: u64,
    /// Memory limit in bytes.
    pub limit_bytes: u64,
    /// How many times the OOM killer fired.
    pub oom_kills: u64,
}

/// The files read, named relative to a cgroup-v1 root (`controller/file`) or v2 directory.
const V1_FILES: [&str; 4] = [
    "memory/memory.max_usage_in_bytes",
    "memory/memory.limit_in_bytes",
    "memory/memory.oom_control",
    "cpuacct/cpuacct.usage",
];
const V2_FILES: [&str; 4] = ["memory.peak", "memory.max", "memory.events", "cpu.stat"];

/// Reads the container's cgroup from the host file system; None when not visible here.
pub fn read_host(container_id: &str) -> Option<CgroupUsage> {
    let root = "/sys/fs/cgroup";
    for parent in [
        format!("docker/{container_id}"),
        format!("system.slice/docker-{container_id}.scope"),
    ] {
        // cgroup v1: one hierarchy per controller.
        let v1: HashMap<String, String> = V1_FILES
            .iter()
            .filter_map(|f| {
                let (controller, file) = f.split_once('/')?;
                let text = std::fs::read_to_string(format!("{root}/{controller}/{parent}/{file}"));
                text.ok().map(|t| (f.to_string(), t))
            })
            .collect();
        if v1.len() == V1_FILES.len() {
            return Some(parse(&v1));
        }
        // cgroup v2: one directory.
        let v2: HashMap<String, String> = V2_FILES
            .iter()
            .filter_map(|f| {
                let text = std::fs::read_to_string(format!("{root}/{parent}/{f}"));
                text.ok().map(|t| (f.to_string(), t))
            })
            .collect();
        if v2.contains_key("cpu.stat") && v2.contains_key("memory.events") {
            return Some(parse(&v2));
        }
    }
    None
}

/// Reads the cgroup from inside the container (its own cgroup is mounted read-only at
/// `/sys/fs/cgroup`); one exec, used when the engine is not on this host.
pub async fn read_in_container(docker: &Docker, id: &str) -> Option<CgroupUsage> {
    let files: Vec<&str> = V1_FILES.iter().chain(V2_FILES.iter()).copied().collect();
    let script = format!(
        "cd /sys/fs/cgroup && for f in {}; do [ -r \"$f\" ] && {{ echo \"@@ $f\"; cat \"$f\"; }}; done; true",
        files.join(" ")
    );
    let exec = docker
        .create_exec(
            id,
            CreateExecOptions {
                cmd: Some(vec!["sh".to_string(), "-c".to_string(), script]),
                attach_stdout: Some(true),
                ..Default::default()
            },
        )
        .await
        .ok()?;
    let StartExecResults::Attached { mut output, .. } = docker.start_exec(&exec.id, None).await.ok()? else {
        return None;
    };
    let mut text = String::new();
    while let Some(Ok(chunk)) = output.next().await {
        text.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
    }
    let mut map = HashMap::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        if let Some(name) = line.strip_prefix("@@ ") {
            current = Some(name.to_string());
            map.insert(name.to_string(), String::new());
        } else if let Some(name) = &current {
            let entry = map.entry(name.clone()).or_insert_with(String::new);
            entry.push_str(line);
            entry.push('\n');
        }
    }
    (!map.is_empty()).then(|| parse(&map))
}

fn number(map: &HashMap<String, String>, file: &str) -> Option<u64> {
    map.get(file)?.trim().parse().ok()
}

fn field(map: &HashMap<String, String>, file: &str, key: &str) -> Option<u64> {
    map.get(file)?
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Builds the usage from file contents (v1 names first, then v2).
fn parse(map: &HashMap<String, String>) -> CgroupUsage {
    CgroupUsage {
        cpu_ns: number(map, "cpuacct/cpuacct.usage")
            .or_else(|| field(map, "cpu.stat", "usage_usec").map(|us| us * 1000))
            .unwrap_or(0),
        peak_bytes: number(map, "memory/memory.max_usage_in_bytes")
            .or_else(|| number(map, "memory.peak"))
            .unwrap_or(0),
        limit_bytes: number(map, "memory/memory.limit_in_bytes")
            .or_else(|| number(map, "memory.max"))
            .unwrap_or(0),
        oom_kills: field(map, "memory/memory.oom_control", "oom_kill")
            .or_else(|| field(map, "memory.events", "oom_kill"))
            .unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_v1_and_v2() {
        let v1 = HashMap::from([
            ("cpuacct/cpuacct.usage".to_string(), "1500\n".to_string()),
            (
                "memory/memory.max_usage_in_bytes".to_string(),
                "4096\n".to_string(),
            ),
            ("memory/memory.limit_in_bytes".to_string(), "8192\n".to_string()),
            (
                "memory/memory.oom_control".to_string(),
                "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n".to_string(),
            ),
        ]);
        assert_eq!(
            parse(&v1),
            CgroupUsage {
                cpu_ns: 1500,
                peak_bytes: 4096,
                limit_bytes: 8192,
                oom_kills: 2
            }
        );
        let v2 = HashMap::from([
            ("cpu.stat".to_string(), "usage_usec 7\nuser_usec 5\n".to_string()),
            ("memory.peak".to_string(), "100\n".to_string()),
            (
                "memory.events".to_string(),
                "low 0\noom 1\noom_kill 1\n".to_string(),
            ),
        ]);
        let u = parse(&v2);
        assert_eq!((u.cpu_ns, u.peak_bytes, u.oom_kills), (7000, 100, 1));
    }
}
