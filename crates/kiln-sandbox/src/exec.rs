//! Running the job's command in a started container: upload, exec, stream, time out, measure.

use std::time::{Duration, Instant};

use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::query_parameters::UploadToContainerOptionsBuilder;
use bollard::Docker;
use futures::StreamExt;
use tokio::sync::mpsc;

use crate::containers::Started;
use crate::error::{Result, SandboxError};
use crate::report::{Captured, LogChunk, Stream, Usage};
use crate::spec::JobSpec;
use crate::workspace::JOB_UID;

/// What the command did, before outputs and diff are read.
#[derive(Debug, Default)]
pub struct Ran {
    /// Exit code of the command.
    pub exit_code: Option<i64>,
    /// True when Kiln killed it at the timeout.
    pub timed_out: bool,
    /// True when the kernel's OOM killer fired in the container.
    pub oom_killed: bool,
    /// Standard output.
    pub stdout: Captured,
    /// Standard error.
    pub stderr: Captured,
    /// Resource use.
    pub usage: Usage,
    /// From asking the engine for the exec to its command running (create + start).
    pub exec_start: std::time::Duration,
    /// Bytes not handed to the live-log receiver because it lagged (its channel was full).
    pub live_lost_bytes: u64,
}

/// Copies the workspace into `/work` (a volume, so this works with a read-only root).
pub async fn upload_workspace(docker: &Docker, c: &Started, spec: &JobSpec) -> Result<()> {
    if spec.workspace.entries().is_empty() {
        return Ok(());
    }
    let size = spec.workspace.size();
    if size > spec.limits.workspace_bytes {
        return Err(SandboxError::InvalidWorkspace(format!(
            "{size} bytes is over the {} byte cap",
            spec.limits.workspace_bytes
        )));
    }
    let tar = spec.workspace.to_tar()?;
    let opts = UploadToContainerOptionsBuilder::new().path("/work").build();
    docker
        .upload_to_container(&c.id, Some(opts), bollard::body_full(tar.into()))
        .await
        .map_err(|e| SandboxError::from_docker(e, &c.image))
}

/// Runs the command as the job user in `/work`, streaming output to `logs` (chunks are dropped
/// for a receiver that lags, never blocking the job) and killing the container at the timeout.
pub async fn run_command(
    docker: &Docker,
    c: &Started,
    spec: &JobSpec,
    logs: Option<&mpsc::Sender<LogChunk>>,
) -> Result<Ran> {
    let env: Vec<String> = spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let exec_asked = Instant::now();
    let exec = docker
        .create_exec(
            &c.id,
            CreateExecOptions {
                cmd: Some(spec.command.clone()),
                env: Some(env),
                user: Some(format!("{JOB_UID}:{JOB_UID}")),
                working_dir: Some("/work".to_string()),
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                attach_stdin: Some(false),
                tty: Some(false),
                ..Default::default()
            },
        )
        .await
        .map_err(|e| SandboxError::from_docker(e, &c.image))?;
    let asked = Instant::now() - exec_asked;
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + spec.timeout;
    let mut ran = Ran::default();
    let cap = spec.limits.log_cap_bytes;
    let output = match docker.start_exec(&exec.id, None).await {
        Ok(StartExecResults::Attached { output, .. }) => output,
        Ok(StartExecResults::Detached) => return Err(SandboxError::Docker("exec started detached".into())),
        Err(e) => return Err(SandboxError::from_docker(e, &c.image)),
    };
    ran.exec_start = asked + started.elapsed();
    let mut output = output;
    loop {
        match tokio::time::timeout_at(deadline, output.next()).await {
            Err(_) => {
                ran.timed_out = true;
                break;
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                tracing::warn!(container = %c.id, error = %e, "log stream ended with an error");
                break;
            }
            Ok(Some(Ok(chunk))) => {
                let (stream, data) = match chunk {
                    LogOutput::StdErr { message } => (Stream::Stderr, message),
                    LogOutput::StdOut { message } | LogOutput::Console { message } => {
                        (Stream::Stdout, message)
                    }
                    LogOutput::StdIn { .. } => continue,
                };
                match stream {
                    Stream::Stdout => ran.stdout.push(&data, cap),
                    Stream::Stderr => ran.stderr.push(&data, cap),
                }
                if let Some(tx) = logs {
                    let sent = tx.try_send(LogChunk {
                        stream,
                        data: data.to_vec(),
                    });
                    if sent.is_err() {
                        ran.live_lost_bytes += data.len() as u64;
                    }
                }
            }
        }
    }
    drop(output);
    // The streams can close before the process ends (it closed its stdout and stderr): wait
    // for the exec itself, still within the deadline.
    let mut exit_code = None;
    if !ran.timed_out {
        match wait_exec(docker, &exec.id, deadline).await {
            Some(code) => exit_code = code,
            None => ran.timed_out = true,
        }
    }
    ran.usage.wall = started.elapsed();
    // Resource use is read while the container still runs (its cgroup goes away with it).
    let usage = match crate::cgroup::read_host(&c.id) {
        Some(u) => Some(u),
        None => crate::cgroup::read_in_container(docker, &c.id).await,
    }
    .unwrap_or_default();
    ran.usage.cpu = Duration::from_nanos(usage.cpu_ns);
    ran.usage.peak_memory_bytes = usage.peak_bytes;
    if ran.timed_out {
        // Frozen rather than killed: a stopped container's tmpfs `/work` is unmounted (and
        // lost) before it could be read back. Removal kills it afterwards.
        tracing::info!(container = %c.id, timeout = ?spec.timeout, "timeout: freezing the container");
        if let Err(e) = docker.pause_container(&c.id).await {
            tracing::warn!(container = %c.id, error = %e, "freeze failed; killing");
            if let Err(e) = docker.kill_container(&c.id, None).await {
                tracing::warn!(container = %c.id, error = %e, "kill failed");
            }
        }
    }
    ran.exit_code = match exit_code {
        Some(code) => Some(code),
        None => docker.inspect_exec(&exec.id).await.ok().and_then(|i| i.exit_code),
    };
    ran.oom_killed = !ran.timed_out && ran.exit_code == Some(137) && usage.oom_kills > 0;
    // A process killed by a signal, or whose end could not be read: was it the job, or did the
    // container go away under it? Only an exec in a container still running is the job's.
    if !ran.timed_out && ran.exit_code.is_none_or(|code| code >= 128) {
        if let Some(why) = container_gone(docker, &c.id).await {
            return Err(SandboxError::ContainerGone(why));
        }
    }
    Ok(ran)
}

/// Why container `id` is no longer running (removed, being removed, stopped, its engine
/// unreachable), or None while it runs. Kiln's containers run until Kiln removes them. The
/// engine marks a container stopped a moment after its processes die, so a running one is
/// looked at again for up to 300 ms (only runs that ended by a signal pay this).
async fn container_gone(docker: &Docker, id: &str) -> Option<String> {
    use bollard::models::ContainerStateStatusEnum as S;
    for _ in 0..4 {
        match docker.inspect_container(id, None).await {
            Err(e) => return Some(format!("container {id}: {e}")),
            Ok(info) => {
                let state = info.state.unwrap_or_default();
                let status = state.status.unwrap_or(S::EMPTY);
                let running = state.running == Some(true) && matches!(status, S::RUNNING | S::PAUSED);
                if !running {
                    return Some(format!("container {id} is {status}"));
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

/// Polls the exec until it is no longer running: `Some(exit code)` (the code itself may be
/// unknown), or None when the deadline passes first.
async fn wait_exec(docker: &Docker, exec_id: &str, deadline: tokio::time::Instant) -> Option<Option<i64>> {
    let mut pause = Duration::from_millis(2);
    loop {
        match docker.inspect_exec(exec_id).await {
            Ok(i) if i.running != Some(true) => return Some(i.exit_code),
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(exec = exec_id, error = %e, "inspecting the exec failed");
                return Some(None);
            }
        }
        if tokio::time::Instant::now() + pause > deadline {
            return None;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}
