//! The run's own infrastructure: the private Postgres (stopped when the run ends) and the
//! second Docker engine, the "second host".

use anyhow::Result;

/// Stops the private Postgres when the run ends, however it ends.
pub struct StopOnDrop(pub kiln_pg::LocalCluster);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        if self.0.is_running() {
            let _ = self.0.stop();
        }
    }
}

/// A second Docker engine on this machine, as a second host.
pub struct SecondEngine;

impl SecondEngine {
    /// Starts it under `dir`.
    pub async fn start(_dir: &std::path::Path) -> Result<Self> {
        anyhow::bail!("the second engine is not wired in yet: run with --one-engine")
    }

    /// Its `DOCKER_HOST`.
    pub fn docker_host(&self) -> String {
        String::new()
    }

    /// A client of it.
    pub fn client(&self) -> Result<bollard::Docker> {
        anyhow::bail!("no second engine")
    }
}

impl crate::faults::Engine for SecondEngine {
    fn restart(&self) -> Result<()> {
        anyhow::bail!("no second engine")
    }
}
