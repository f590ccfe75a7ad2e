//! The run's own infrastructure: the private Postgres (stopped when the run ends) and the
//! second Docker engine, the "second host" (`kiln_testkit::engine`, with the job image the
//! workers need copied into it).

use anyhow::{Context, Result};
use std::time::Duration;

/// Stops the private Postgres when the run ends, however it ends, and deletes it (its data
/// lives outside the run's directory, under the postgres user's home, when run as root) unless
/// [`StopOnDrop::keep`] was called.
pub struct StopOnDrop {
    cluster: kiln_pg::LocalCluster,
    keep: bool,
}

impl StopOnDrop {
    /// Guards `cluster`.
    pub fn new(cluster: kiln_pg::LocalCluster) -> Self {
        Self { cluster, keep: false }
    }

    /// Keeps the cluster's data for a look after the run (it is still stopped).
    pub fn keep(&mut self) {
        self.keep = true;
    }
}

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        let done = if !self.keep {
            self.cluster.remove()
        } else if self.cluster.is_running() {
            self.cluster.stop()
        } else {
            Ok(())
        };
        if let Err(e) = done {
            tracing::warn!(error = %e, "the run's Postgres was not cleaned up");
        }
    }
}

/// A second Docker engine on this machine, holding the python job image.
pub struct SecondHost {
    engine: tokio::sync::Mutex<kiln_testkit::engine::SecondEngine>,
    docker_host: String,
    /// How long starting it and copying the image took.
    pub ready_in: Duration,
}

impl SecondHost {
    /// Starts the engine and copies the python job image (its current tag) into it.
    pub async fn start() -> Result<Self> {
        let began = std::time::Instant::now();
        let engine = kiln_testkit::engine::SecondEngine::start().await?;
        let tag = kiln_images::image_tag(&kiln_images::default_images_dir(), "python")
            .context("the python job image's tag")?;
        engine
            .load_images(&[tag.as_str()])
            .await
            .with_context(|| format!("copy {tag} into the second engine (build it: scripts/build-images)"))?;
        let docker_host = engine.docker_host();
        tracing::info!(%docker_host, driver = engine.storage_driver(), secs = began.elapsed().as_secs_f64(), "second engine ready");
        Ok(Self {
            engine: tokio::sync::Mutex::new(engine),
            docker_host,
            ready_in: began.elapsed(),
        })
    }

    /// Its `DOCKER_HOST` (the same across restarts).
    pub fn docker_host(&self) -> String {
        self.docker_host.clone()
    }

    /// A client of it (a new one after a restart).
    pub async fn client(&self) -> bollard::Docker {
        self.engine.lock().await.docker().clone()
    }

    /// Stops the engine (its containers die with it) and starts it again on the same data.
    pub async fn restart(&self) -> Result<()> {
        let mut engine = self.engine.lock().await;
        // The restart future holds the engine's exit channel across awaits, so it is not
        // `Send`: run it to completion on this thread.
        tokio::task::block_in_place(|| {
            engine.stop();
            tokio::runtime::Handle::current().block_on(engine.restart())
        })?;
        Ok(())
    }
}
