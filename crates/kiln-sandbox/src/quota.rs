//! The workspace quota: how full the job's `/work` tmpfs is once the command has ended.
//!
//! The volume itself enforces the quota (a job past it gets `ENOSPC`); this module only reads
//! its use, so the run can end with [`crate::Outcome::DiskQuota`]. The file system is read
//! with `statfs` from the host when the engine is local, else with one `stat -f` exec.

use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::Docker;
use futures::StreamExt;
use serde::Serialize;

use crate::containers::Started;
use crate::spec::Limits;

/// `f_type` of a tmpfs (linux/magic.h).
const TMPFS_MAGIC: i64 = 0x0102_1994;

/// Room the volume has beyond the quota, so a job that goes past the quota is seen using
/// more than its quota (a job that uses exactly its quota is within it).
pub const SLACK_BYTES: u64 = 64 << 10;
/// Inodes beyond the quota: the root directory's, plus one to see a job go past it.
pub const SLACK_FILES: u64 = 2;

/// How much of its quota the workspace used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DiskUsage {
    /// Bytes in use.
    pub used_bytes: u64,
    /// Bytes still free.
    pub free_bytes: u64,
    /// Files, directories and links in use (the root directory not counted).
    pub used_files: u64,
    /// Inodes still free.
    pub free_files: u64,
}

impl DiskUsage {
    /// True when the job went past its quota of bytes or of files.
    pub fn exceeds(&self, limits: &Limits) -> bool {
        self.used_bytes > limits.disk_bytes || self.used_files > limits.disk_files
    }

    /// From `statfs` numbers: block size, total and free blocks, total and free inodes.
    fn from_counts(bsize: u64, blocks: u64, bfree: u64, files: u64, ffree: u64) -> DiskUsage {
        DiskUsage {
            used_bytes: blocks.saturating_sub(bfree).saturating_mul(bsize),
            free_bytes: bfree.saturating_mul(bsize),
            used_files: files.saturating_sub(ffree).saturating_sub(1),
            free_files: ffree,
        }
    }
}

/// Reads the use of the container's `/work`; None when it cannot be read (the caller then
/// does not claim a quota breach).
pub async fn work_usage(docker: &Docker, c: &Started) -> Option<DiskUsage> {
    if !c.mountpoint.is_empty() {
        if let Some(u) = statfs_tmpfs(&c.mountpoint) {
            return Some(u);
        }
    }
    in_container(docker, &c.id).await
}

/// `statfs` of a host path (its field types differ between platforms, hence the casts), only when it is a tmpfs (else the volume is not mounted where
/// this process can see it).
#[allow(clippy::unnecessary_cast)]
fn statfs_tmpfs(path: &str) -> Option<DiskUsage> {
    let c_path = std::ffi::CString::new(path).ok()?;
    let mut st = std::mem::MaybeUninit::<libc::statfs>::zeroed();
    // SAFETY: c_path is a valid NUL-terminated string and st points to a statfs-sized buffer.
    let rc = unsafe { libc::statfs(c_path.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: statfs returned 0, so it filled the buffer.
    let st = unsafe { st.assume_init() };
    if st.f_type as i64 != TMPFS_MAGIC {
        return None;
    }
    Some(DiskUsage::from_counts(
        st.f_bsize as u64,
        st.f_blocks as u64,
        st.f_bfree as u64,
        st.f_files as u64,
        st.f_ffree as u64,
    ))
}

/// One `stat -f` exec inside the container (remote engines).
async fn in_container(docker: &Docker, id: &str) -> Option<DiskUsage> {
    let cmd = ["stat", "-f", "-c", "%S %b %f %c %d", "/work"];
    let exec = docker
        .create_exec(
            id,
            CreateExecOptions {
                cmd: Some(cmd.iter().map(|s| s.to_string()).collect()),
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
        if text.len() > 4096 {
            return None;
        }
    }
    parse_stat(&text)
}

/// Parses `stat -f -c '%S %b %f %c %d'`.
fn parse_stat(text: &str) -> Option<DiskUsage> {
    let n: Vec<u64> = text
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    match n[..] {
        [bsize, blocks, bfree, files, ffree] => {
            Some(DiskUsage::from_counts(bsize, blocks, bfree, files, ffree))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn past_the_quota_by_bytes_or_by_files() {
        let limits = Limits {
            disk_bytes: 400 * 4096,
            disk_files: 40,
            ..Limits::default()
        };
        let within = DiskUsage::from_counts(4096, 1000, 600, 100, 59);
        assert_eq!(within.used_bytes, 400 * 4096);
        assert_eq!(within.used_files, 40);
        assert!(!within.exceeds(&limits));
        assert!(DiskUsage::from_counts(4096, 1000, 599, 100, 59).exceeds(&limits));
        assert!(DiskUsage::from_counts(4096, 1000, 600, 100, 58).exceeds(&limits));
    }

    #[test]
    fn stat_output() {
        let u = parse_stat("4096 262144 262000 100001 99990\n").unwrap();
        assert_eq!(u.free_bytes, 262000 * 4096);
        assert_eq!(u.used_files, 10);
        assert!(parse_stat("4096 1 2").is_none());
        assert!(parse_stat("stat: cannot read").is_none());
    }
}
