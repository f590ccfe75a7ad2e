//! The warm pool: per image, a few started containers that never ran a job. A job takes one
//! (so it starts with an exec), the container is removed after the job, and a background task
//! refills the pool.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bollard::Docker;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::containers::{remove_container, start_container, Started};
use crate::policy::Owner;
use crate::spec::Limits;

/// Shared state of the pool.
#[derive(Debug)]
pub struct WarmPool {
    size: usize,
    limits: Limits,
    security_opt: Vec<String>,
    ready: Mutex<HashMap<String, VecDeque<Started>>>,
    wake: Notify,
    filled: Notify,
}

impl WarmPool {
    /// A pool keeping `size` containers per image in `images`, created with `limits` and
    /// `security_opt` (see [`crate::Isolation::security_opts`]).
    pub fn new(images: &[String], size: usize, limits: Limits, security_opt: Vec<String>) -> Arc<WarmPool> {
        let ready = images.iter().map(|i| (i.clone(), VecDeque::new())).collect();
        Arc::new(WarmPool {
            size,
            limits,
            security_opt,
            ready: Mutex::new(ready),
            wake: Notify::new(),
            filled: Notify::new(),
        })
    }

    /// Takes a ready container for `image` if one was made with `limits` (see
    /// [`Limits::same_container`]); wakes the refiller.
    pub fn take(&self, image: &str, limits: &Limits) -> Option<Started> {
        if !self.limits.same_container(limits) {
            return None;
        }
        let taken = self.ready.lock().ok()?.get_mut(image)?.pop_front();
        self.wake.notify_one();
        taken
    }

    /// Number of ready containers per image.
    pub fn ready_counts(&self) -> HashMap<String, usize> {
        self.ready
            .lock()
            .map(|r| r.iter().map(|(k, v)| (k.clone(), v.len())).collect())
            .unwrap_or_default()
    }

    /// Waits until every image has `size` ready containers (or `timeout` passes).
    pub async fn wait_full(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.filled.notified();
            if self.missing().is_none() {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return false;
            }
        }
    }

    /// The first image short of containers.
    fn missing(&self) -> Option<String> {
        let ready = self.ready.lock().ok()?;
        ready
            .iter()
            .find(|(_, v)| v.len() < self.size)
            .map(|(k, _)| k.clone())
    }

    /// Refills until `stop` fires, then removes every ready container.
    pub async fn refill_loop(self: Arc<Self>, docker: Docker, owner: Owner, stop: CancellationToken) {
        let mut failures = 0u32;
        loop {
            if stop.is_cancelled() {
                break;
            }
            let Some(image) = self.missing() else {
                self.filled.notify_waiters();
                tokio::select! {
                    _ = self.wake.notified() => continue,
                    _ = stop.cancelled() => break,
                }
            };
            match start_container(
                &docker,
                &image,
                &self.limits,
                owner.labels(None),
                &self.security_opt,
            )
            .await
            {
                Ok(c) => {
                    failures = 0;
                    tracing::debug!(image, container = %c.id, "warm container ready");
                    if let Ok(mut ready) = self.ready.lock() {
                        ready.entry(image).or_default().push_back(c);
                    }
                }
                Err(e) => {
                    failures = (failures + 1).min(6);
                    tracing::warn!(image, error = %e, "warm pool refill failed");
                    let pause = Duration::from_millis(100 << failures);
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => {}
                        _ = stop.cancelled() => break,
                    }
                }
            }
        }
        self.drain(&docker).await;
    }

    /// Removes every ready container.
    pub async fn drain(&self, docker: &Docker) {
        let all: Vec<Started> = match self.ready.lock() {
            Ok(mut r) => r.values_mut().flat_map(|v| v.drain(..)).collect(),
            Err(_) => Vec::new(),
        };
        if !all.is_empty() {
            tracing::info!(containers = all.len(), "draining the warm pool");
        }
        futures::future::join_all(all.iter().map(|c| remove_container(docker, c))).await;
    }
}
