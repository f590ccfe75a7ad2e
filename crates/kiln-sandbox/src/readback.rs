//! Reading `/work` back from a container as a bounded snapshot (a streamed tar, parsed off the
//! async threads; nothing is written to the host).

use bollard::query_parameters::DownloadFromContainerOptionsBuilder;
use bollard::Docker;
use futures::TryStreamExt;
use tokio_util::io::{StreamReader, SyncIoBridge};

use crate::containers::Started;
use crate::error::{Result, SandboxError};
use crate::snapshot::{Snapshot, SnapshotCaps};

/// Downloads `/work` and parses it with `caps`.
pub async fn read_work(docker: &Docker, c: &Started, caps: SnapshotCaps) -> Result<Snapshot> {
    let opts = DownloadFromContainerOptionsBuilder::new()
        .path("/work")
        .build();
    let stream = docker
        .download_from_container(&c.id, Some(opts))
        .map_err(std::io::Error::other);
    let reader = SyncIoBridge::new(StreamReader::new(stream));
    tokio::task::spawn_blocking(move || Snapshot::read_tar(reader, caps))
        .await
        .map_err(|e| SandboxError::Docker(format!("snapshot task: {e}")))?
        .map_err(|e| SandboxError::DaemonUnavailable(format!("reading /work back: {e}")))
}
