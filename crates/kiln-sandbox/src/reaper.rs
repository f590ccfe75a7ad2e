//! The reaper: removes containers and volumes left behind by dead workers.

use std::collections::HashMap;

use bollard::query_parameters::{
    ListContainersOptionsBuilder, ListVolumesOptionsBuilder, RemoveContainerOptionsBuilder,
};
use bollard::Docker;

use crate::error::{Result, SandboxError};
use crate::policy::{
    process_start, Owner, LABEL_HOST, LABEL_MANAGED, LABEL_PID, LABEL_PID_START, LABEL_WORKER,
};

/// What one pass removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reaped {
    /// Container ids removed.
    pub containers: Vec<String>,
    /// Volume names removed.
    pub volumes: Vec<String>,
}

/// True when the labels name a worker process that is gone: same host, and its pid is not
/// running or is now another process. Workers on other hosts are judged by `live_workers`
/// (worker ids known alive, e.g. from the queue's heartbeats) when given.
fn owner_dead(labels: &HashMap<String, String>, me: &Owner, live_workers: Option<&[String]>) -> bool {
    let get = |k: &str| labels.get(k).map(String::as_str).unwrap_or("");
    let worker = get(LABEL_WORKER);
    if get(LABEL_HOST) == me.host {
        let pid: u32 = get(LABEL_PID).parse().unwrap_or(0);
        let start: u64 = get(LABEL_PID_START).parse().unwrap_or(0);
        if pid == me.pid && start == me.pid_start {
            return false;
        }
        return pid == 0 || process_start(pid) != Some(start);
    }
    match live_workers {
        Some(live) => !live.iter().any(|w| w == worker),
        None => false,
    }
}

fn managed_filter() -> HashMap<String, Vec<String>> {
    HashMap::from([("label".to_string(), vec![format!("{LABEL_MANAGED}=true")])])
}

/// One pass: removes every Kiln container, then volume, whose owner is dead.
pub async fn reap(docker: &Docker, me: &Owner, live_workers: Option<&[String]>) -> Result<Reaped> {
    let err = |e| SandboxError::from_docker(e, "");
    let mut reaped = Reaped::default();
    let opts = ListContainersOptionsBuilder::new()
        .all(true)
        .filters(&managed_filter())
        .build();
    for c in docker.list_containers(Some(opts)).await.map_err(err)? {
        let labels = c.labels.unwrap_or_default();
        let Some(id) = c.id else { continue };
        if owner_dead(&labels, me, live_workers) {
            let rm = RemoveContainerOptionsBuilder::new().force(true).build();
            match docker.remove_container(&id, Some(rm)).await {
                Ok(()) => reaped.containers.push(id),
                Err(e) => tracing::warn!(container = %id, error = %e, "reaper: remove failed"),
            }
        }
    }
    let opts = ListVolumesOptionsBuilder::new()
        .filters(&managed_filter())
        .build();
    let volumes = docker.list_volumes(Some(opts)).await.map_err(err)?;
    for v in volumes.volumes.unwrap_or_default() {
        if owner_dead(&v.labels, me, live_workers) {
            match docker
                .remove_volume(&v.name, None::<bollard::query_parameters::RemoveVolumeOptions>)
                .await
            {
                Ok(()) => reaped.volumes.push(v.name),
                Err(e) => tracing::warn!(volume = %v.name, error = %e, "reaper: remove failed"),
            }
        }
    }
    if !reaped.containers.is_empty() || !reaped.volumes.is_empty() {
        tracing::info!(
            containers = reaped.containers.len(),
            volumes = reaped.volumes.len(),
            "reaper removed leftovers of dead workers"
        );
    }
    Ok(reaped)
}

/// Ids of the Kiln containers (running or not) labelled with `worker_id`.
pub async fn containers_of(docker: &Docker, worker_id: &str) -> Result<Vec<String>> {
    let filters = HashMap::from([(
        "label".to_string(),
        vec![
            format!("{LABEL_MANAGED}=true"),
            format!("{LABEL_WORKER}={worker_id}"),
        ],
    )]);
    let opts = ListContainersOptionsBuilder::new()
        .all(true)
        .filters(&filters)
        .build();
    let list = docker
        .list_containers(Some(opts))
        .await
        .map_err(|e| SandboxError::from_docker(e, ""))?;
    Ok(list.into_iter().filter_map(|c| c.id).collect())
}

/// Names of the Kiln volumes labelled with `worker_id`.
pub async fn volumes_of(docker: &Docker, worker_id: &str) -> Result<Vec<String>> {
    let filters = HashMap::from([(
        "label".to_string(),
        vec![
            format!("{LABEL_MANAGED}=true"),
            format!("{LABEL_WORKER}={worker_id}"),
        ],
    )]);
    let opts = ListVolumesOptionsBuilder::new().filters(&filters).build();
    let list = docker
        .list_volumes(Some(opts))
        .await
        .map_err(|e| SandboxError::from_docker(e, ""))?;
    Ok(list
        .volumes
        .unwrap_or_default()
        .into_iter()
        .map(|v| v.name)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn liveness() {
        let me = Owner::current("w1");
        assert!(!owner_dead(&me.labels(None), &me, None));
        let mut dead = me.clone();
        dead.pid_start += 1;
        assert!(owner_dead(&dead.labels(None), &me, None));
        let mut remote = me.clone();
        remote.host = "elsewhere".into();
        remote.worker_id = "w2".into();
        assert!(!owner_dead(&remote.labels(None), &me, None));
        assert!(owner_dead(&remote.labels(None), &me, Some(&["w1".into()])));
        assert!(!owner_dead(&remote.labels(None), &me, Some(&["w2".into()])));
    }
}
