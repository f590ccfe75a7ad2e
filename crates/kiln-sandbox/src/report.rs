//! What a job run produced: outcome, resource use, captured logs, outputs and diff.

use std::time::Duration;

use serde::Serialize;

use crate::diff::WorkspaceDiff;
use crate::outputs::Outputs;
use crate::quota::DiskUsage;

/// How a job ended, from the most to the least severe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Ran into its workspace quota (bytes or files): writes past it were refused, whatever
    /// the command did next.
    DiskQuota,
    /// Killed by Kiln at the wall-clock timeout.
    TimedOut,
    /// Killed by the kernel's OOM killer at the memory limit.
    OomKilled,
    /// Exited with a non-zero code (or was killed by a signal).
    NonZeroExit,
    /// Exited 0 but printed more than the log cap (the rest was counted, not kept).
    OutputTruncated,
    /// Exited 0 within every limit.
    Success,
}

/// Which stream a log chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// A piece of output, sent while the job runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogChunk {
    /// Where it came from.
    pub stream: Stream,
    /// The bytes, as they arrived.
    pub data: Vec<u8>,
}

/// One stream's output: the first `cap` bytes kept, the rest counted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Captured {
    /// Kept bytes (lossy UTF-8 when serialised).
    #[serde(serialize_with = "lossy")]
    pub kept: Vec<u8>,
    /// Total bytes the stream produced.
    pub total_bytes: u64,
}

fn lossy<S: serde::Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&String::from_utf8_lossy(v))
}

impl Captured {
    /// Appends `data`, keeping at most `cap` bytes in total.
    pub fn push(&mut self, data: &[u8], cap: usize) {
        self.total_bytes += data.len() as u64;
        let room = cap.saturating_sub(self.kept.len());
        self.kept.extend_from_slice(&data[..room.min(data.len())]);
    }

    /// True when bytes were dropped.
    pub fn truncated(&self) -> bool {
        self.total_bytes > self.kept.len() as u64
    }

    /// The kept bytes as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.kept).into_owned()
    }
}

/// Resources the job used.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    /// Wall time from the command's start to its end.
    pub wall: Duration,
    /// CPU time of everything in the container.
    pub cpu: Duration,
    /// Peak memory of the container in bytes (cgroup high-water mark).
    pub peak_memory_bytes: u64,
}

/// Where the time of one run went, phase by phase (each in milliseconds).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Timings {
    /// Getting a container ready: create volume + create + start on the cold path; taking one
    /// from the warm pool on the warm path.
    pub container_start_ms: f64,
    /// Copying the workspace into `/work`.
    pub upload_ms: f64,
    /// The command itself, from exec to exit (includes the exec round trips).
    pub run_ms: f64,
    /// Reading `/work` back, diffing and picking outputs.
    pub readback_ms: f64,
    /// All of the above: from `Sandbox::run` to the report.
    pub total_ms: f64,
}

/// Everything recorded about one run.
#[derive(Debug, Clone, Serialize)]
pub struct JobReport {
    /// How it ended.
    pub outcome: Outcome,
    /// The exit code (137 when killed with SIGKILL); None when it could not be read.
    pub exit_code: Option<i64>,
    /// Resource use.
    pub usage: Usage,
    /// Standard output.
    pub stdout: Captured,
    /// Standard error.
    pub stderr: Captured,
    /// Requested output files.
    pub outputs: Outputs,
    /// The workspace's diff.
    pub diff: WorkspaceDiff,
    /// True when the workspace was too big to read back whole (the diff is partial).
    pub diff_truncated: bool,
    /// The container that ran the job.
    pub container_id: String,
    /// The image's id (digest) in the engine.
    pub image_id: String,
    /// True when the job started in a pre-started (warm) container.
    pub warm: bool,
    /// Phase durations as the runner measured them.
    pub timings: Timings,
    /// Bytes of output the live-log receiver did not get (it lagged); the captures above
    /// still count them.
    pub live_lost_bytes: u64,
    /// How much of its workspace quota the job used (None when it could not be read).
    pub disk: Option<DiskUsage>,
}

impl Outcome {
    /// Decides the outcome from what was observed, most severe first.
    pub fn decide(
        disk_quota: bool,
        timed_out: bool,
        oom: bool,
        exit_code: Option<i64>,
        truncated: bool,
    ) -> Outcome {
        if disk_quota {
            Outcome::DiskQuota
        } else if timed_out {
            Outcome::TimedOut
        } else if oom {
            Outcome::OomKilled
        } else if exit_code != Some(0) {
            Outcome::NonZeroExit
        } else if truncated {
            Outcome::OutputTruncated
        } else {
            Outcome::Success
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capture_caps_and_counts() {
        let mut c = Captured::default();
        c.push(b"hello", 8);
        c.push(b"world", 8);
        assert_eq!(c.kept, b"hellowor");
        assert_eq!(c.total_bytes, 10);
        assert!(c.truncated());
    }

    #[test]
    fn outcome_order() {
        assert_eq!(
            Outcome::decide(true, true, true, Some(137), true),
            Outcome::DiskQuota
        );
        assert_eq!(
            Outcome::decide(true, false, false, Some(0), false),
            Outcome::DiskQuota
        );
        assert_eq!(
            Outcome::decide(false, true, true, Some(137), true),
            Outcome::TimedOut
        );
        assert_eq!(
            Outcome::decide(false, false, true, Some(137), false),
            Outcome::OomKilled
        );
        assert_eq!(
            Outcome::decide(false, false, false, Some(1), true),
            Outcome::NonZeroExit
        );
        assert_eq!(
            Outcome::decide(false, false, false, Some(0), true),
            Outcome::OutputTruncated
        );
        assert_eq!(
            Outcome::decide(false, false, false, Some(0), false),
            Outcome::Success
        );
    }
}
