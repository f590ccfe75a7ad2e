//! Creating, starting and removing sandbox containers (each with its own `/work` volume).

use std::collections::HashMap;
use std::time::Instant;

use bollard::query_parameters::{CreateContainerOptionsBuilder, RemoveContainerOptionsBuilder};
use bollard::Docker;

use crate::error::{Result, SandboxError};
use crate::policy::{container_body, volume_body};
use crate::spec::Limits;

/// A started sandbox container that has not run a job yet.
#[derive(Debug, Clone)]
pub struct Started {
    /// Container id.
    pub id: String,
    /// Name of its `/work` volume.
    pub volume: String,
    /// Where the engine keeps the volume's files (readable when the engine is on this host).
    pub mountpoint: String,
    /// The image it runs.
    pub image: String,
    /// The limits it was created with.
    pub limits: Limits,
}

/// Creates the volume and container and starts the idle process (the cold path's first half).
pub async fn start_container(
    docker: &Docker,
    image: &str,
    limits: &Limits,
    labels: HashMap<String, String>,
    security_opt: &[String],
) -> Result<Started> {
    let t = Instant::now();
    let name = format!("kiln-{}", uuid::Uuid::new_v4().simple());
    let volume = volume_body(&name, limits, labels.clone());
    let mountpoint = docker
        .create_volume(volume)
        .await
        .map_err(|e| SandboxError::from_docker(e, image))?
        .mountpoint;
    let body = container_body(image, &name, limits, labels, security_opt.to_vec());
    let opts = CreateContainerOptionsBuilder::new().name(&name).build();
    let created = match docker.create_container(Some(opts), body).await {
        Ok(c) => c,
        Err(e) => {
            let _ = docker
                .remove_volume(&name, None::<bollard::query_parameters::RemoveVolumeOptions>)
                .await;
            return Err(SandboxError::from_docker(e, image));
        }
    };
    let started = Started {
        id: created.id,
        volume: name,
        mountpoint,
        image: image.to_string(),
        limits: limits.clone(),
    };
    if let Err(e) = docker.start_container(&started.id, None).await {
        remove_container(docker, &started).await;
        return Err(SandboxError::from_docker(e, image));
    }
    tracing::debug!(container = %started.id, image, ms = t.elapsed().as_millis() as u64, "sandbox container started");
    Ok(started)
}

/// Force-removes the container, then its volume; false when either is still there (the
/// failure is logged; [`crate::Sandbox::reap`] retries it). Already gone counts as removed.
pub async fn remove_container(docker: &Docker, c: &Started) -> bool {
    let opts = RemoveContainerOptionsBuilder::new().force(true).build();
    let mut removed = true;
    if let Err(e) = docker.remove_container(&c.id, Some(opts)).await {
        if !is_not_found(&e) {
            tracing::warn!(container = %c.id, error = %e, "removing container failed");
            removed = false;
        }
    }
    if let Err(e) = docker
        .remove_volume(&c.volume, None::<bollard::query_parameters::RemoveVolumeOptions>)
        .await
    {
        if !is_not_found(&e) {
            tracing::warn!(volume = %c.volume, error = %e, "removing volume failed");
            removed = false;
        }
    }
    removed
}

/// True for the engine's 404 (the object is already gone).
pub fn is_not_found(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }
    )
}
