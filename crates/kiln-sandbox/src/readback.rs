//! Reading `/work` back from a container as a bounded snapshot. Nothing is written to the host.
//!
//! When the engine is on this host the volume's files are read in place with a walk that never
//! follows a symlink (see [`Snapshot::read_dir`]), far faster than the archive API on
//! fuse-overlayfs. Otherwise `/work` is streamed as a tar through the API. Both paths apply
//! the same [`SnapshotCaps`] (entries, bytes, paths, a deadline); an archive stream that stalls
//! past the deadline is an error.

use std::path::Path;

use bollard::query_parameters::DownloadFromContainerOptionsBuilder;
use bollard::Docker;
use futures::TryStreamExt;
use tokio_util::io::{StreamReader, SyncIoBridge};

use crate::containers::Started;
use crate::error::{Result, SandboxError};
use crate::snapshot::{Snapshot, SnapshotCaps};

/// Reads `/work` with `caps`.
pub async fn read_work(docker: &Docker, c: &Started, caps: SnapshotCaps) -> Result<Snapshot> {
    let local = !c.mountpoint.is_empty() && Path::new(&c.mountpoint).is_dir();
    if local {
        let dir = c.mountpoint.clone();
        return tokio::task::spawn_blocking(move || Snapshot::read_dir(Path::new(&dir), caps))
            .await
            .map_err(|e| SandboxError::Docker(format!("snapshot task: {e}")))?
            .map_err(|e| SandboxError::Docker(format!("reading /work back: {e}")));
    }
    let opts = DownloadFromContainerOptionsBuilder::new().path("/work").build();
    let stream = docker
        .download_from_container(&c.id, Some(opts))
        .map_err(std::io::Error::other);
    read_archive(StreamReader::new(stream), caps).await
}

/// Reads a tar stream of `/work` with `caps`, off the runtime. The reader checks the deadline
/// between entries; a stream that stalls is given up here, a little after it.
pub async fn read_archive(
    stream: impl tokio::io::AsyncRead + Unpin + Send + 'static,
    caps: SnapshotCaps,
) -> Result<Snapshot> {
    let reader = SyncIoBridge::new(stream);
    let task = tokio::task::spawn_blocking(move || Snapshot::read_tar(reader, caps));
    match tokio::time::timeout(caps.timeout + STALL_GRACE, task).await {
        Err(_) => Err(SandboxError::DaemonUnavailable(format!(
            "reading /work back: the archive stalled past {:?}",
            caps.timeout
        ))),
        Ok(joined) => joined
            .map_err(|e| SandboxError::Docker(format!("snapshot task: {e}")))?
            .map_err(|e| SandboxError::DaemonUnavailable(format!("reading /work back: {e}"))),
    }
}

/// How long past the deadline a stalled archive stream is waited for.
const STALL_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_archive_stream_that_stalls_is_given_up_after_the_deadline() {
        // The remote-engine path: the engine sends nothing and keeps the stream open.
        let (_writer, reader) = tokio::io::duplex(64);
        let caps = SnapshotCaps {
            timeout: std::time::Duration::from_millis(200),
            ..SnapshotCaps::new(1 << 20, 1 << 20)
        };
        let err = read_archive(reader, caps).await.unwrap_err();
        assert!(matches!(err, SandboxError::DaemonUnavailable(_)), "{err}");
        assert!(err.to_string().contains("stalled past 200ms"), "{err}");
        // Dropping the writer ends the blocked read, so the runtime can shut down.
    }
}
