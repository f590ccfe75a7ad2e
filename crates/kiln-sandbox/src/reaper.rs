//! The reaper: removes containers and volumes left behind by dead workers.

use std::collections::HashMap;

use bollard::query_parameters::{
    ListContainersOptionsBuilder, ListVolumesOptionsBuilder, RemoveContainerOptionsBuilder,
};
use bollard::Docker;
use std::time::Duration;

use crate::containers::is_not_found;
use crate::error::{Result, SandboxError};
use crate::policy::{
    process_start, Owner, LABEL_FLEET, LABEL_HOST, LABEL_MANAGED, LABEL_PID, LABEL_PID_START, LABEL_WORKER,
};

/// What one pass removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reaped {
    /// Container ids removed.
    pub containers: Vec<String>,
    /// Volume names removed.
    pub volumes: Vec<String>,
}

/// Workers known alive from the worker registry (`kiln_workers`: heartbeat recent, not
/// stopped), and how old a container or volume must be before registry absence condemns it
/// (a worker starting up may create containers before its first registration).
#[derive(Debug, Clone, Copy)]
pub struct Liveness<'a> {
    /// Ids of live workers.
    pub live_workers: &'a [String],
    /// Minimum age of an object judged dead by absence from `live_workers`.
    pub min_age: Duration,
}

/// Grace for objects of workers absent from the registry: longer than a registration takes.
pub const REGISTRY_GRACE: Duration = Duration::from_secs(60);

/// True when the labels name a worker that is gone. This process's own objects never are.
/// An object labelled with this host whose pid is not running (or is another process now) is
/// gone at once, whatever its fleet: a dead process is dead in every fleet. With the registry
/// (`live`), a worker absent from it is gone whatever host label its objects carry, once they
/// are older than `min_age`, but only when the object is of this reaper's fleet or carries no
/// fleet label (a worker from before the label, a sandbox without a database): another
/// fleet's workers are in another database's registry, which this one cannot see.
fn owner_dead(
    labels: &HashMap<String, String>,
    me: &Owner,
    live: Option<&Liveness<'_>>,
    age: Option<Duration>,
) -> bool {
    let get = |k: &str| labels.get(k).map(String::as_str).unwrap_or("");
    let worker = get(LABEL_WORKER);
    let pid: u32 = get(LABEL_PID).parse().unwrap_or(0);
    let start: u64 = get(LABEL_PID_START).parse().unwrap_or(0);
    if get(LABEL_HOST) == me.host {
        if pid == me.pid && start == me.pid_start {
            return false;
        }
        if pid == 0 || process_start(pid) != Some(start) {
            return true;
        }
    }
    let foreign = labels
        .get(LABEL_FLEET)
        .is_some_and(|f| me.fleet.as_ref() != Some(f));
    match live {
        Some(l) if !foreign => {
            !l.live_workers.iter().any(|w| w == worker) && age.is_some_and(|a| a >= l.min_age)
        }
        _ => false,
    }
}

fn managed_filter() -> HashMap<String, Vec<String>> {
    HashMap::from([("label".to_string(), vec![format!("{LABEL_MANAGED}=true")])])
}

/// Age of an object created at `created` (Unix seconds); None when unknown.
fn age_of(created: Option<i64>) -> Option<Duration> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_secs() as i64;
    let created = created?;
    Some(Duration::from_secs(now.saturating_sub(created).max(0) as u64))
}

/// One pass: removes every Kiln container, then volume, whose owner is dead. A removal that
/// fails is tried again on the next pass (the object is still listed).
pub async fn reap(docker: &Docker, me: &Owner, live: Option<Liveness<'_>>) -> Result<Reaped> {
    let err = |e| SandboxError::from_docker(e, "");
    let mut reaped = Reaped::default();
    let opts = ListContainersOptionsBuilder::new()
        .all(true)
        .filters(&managed_filter())
        .build();
    for c in docker.list_containers(Some(opts)).await.map_err(err)? {
        let labels = c.labels.unwrap_or_default();
        let Some(id) = c.id else { continue };
        if owner_dead(&labels, me, live.as_ref(), age_of(c.created)) {
            let rm = RemoveContainerOptionsBuilder::new().force(true).build();
            match docker.remove_container(&id, Some(rm)).await {
                Ok(()) => reaped.containers.push(id),
                Err(e) if is_not_found(&e) => {}
                Err(e) => {
                    tracing::warn!(container = %id, error = %e, "reaper: remove failed; next pass retries")
                }
            }
        }
    }
    let opts = ListVolumesOptionsBuilder::new()
        .filters(&managed_filter())
        .build();
    let volumes = docker.list_volumes(Some(opts)).await.map_err(err)?;
    for v in volumes.volumes.unwrap_or_default() {
        let created = v
            .created_at
            .as_deref()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.timestamp());
        if owner_dead(&v.labels, me, live.as_ref(), age_of(created)) {
            match docker
                .remove_volume(&v.name, None::<bollard::query_parameters::RemoveVolumeOptions>)
                .await
            {
                Ok(()) => reaped.volumes.push(v.name),
                Err(e) if is_not_found(&e) => {}
                Err(e) => {
                    tracing::warn!(volume = %v.name, error = %e, "reaper: remove failed; next pass retries")
                }
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
        let old = Some(Duration::from_secs(120));
        assert!(!owner_dead(&me.labels(None), &me, None, old));
        let mut dead = me.clone();
        dead.pid_start += 1;
        assert!(owner_dead(&dead.labels(None), &me, None, old));
        let mut remote = me.clone();
        remote.host = "elsewhere".into();
        remote.worker_id = "w2".into();
        let registry =
            |live: &'static [&'static str]| -> Vec<String> { live.iter().map(|s| s.to_string()).collect() };
        let only_w1 = registry(&["w1"]);
        let live = Liveness {
            live_workers: &only_w1,
            min_age: REGISTRY_GRACE,
        };
        assert!(!owner_dead(&remote.labels(None), &me, None, old));
        assert!(owner_dead(&remote.labels(None), &me, Some(&live), old));
        // Too young to be judged by the registry, or of unknown age: spared.
        assert!(!owner_dead(
            &remote.labels(None),
            &me,
            Some(&live),
            Some(Duration::from_secs(5))
        ));
        assert!(!owner_dead(&remote.labels(None), &me, Some(&live), None));
        let w2 = registry(&["w2"]);
        let live2 = Liveness {
            live_workers: &w2,
            min_age: REGISTRY_GRACE,
        };
        assert!(!owner_dead(&remote.labels(None), &me, Some(&live2), old));
        // This host's label and a running pid, but absent from the registry: gone.
        let mut same_host = me.clone();
        same_host.worker_id = "w3".into();
        same_host.pid = 1;
        same_host.pid_start = process_start(1).unwrap_or(0);
        assert!(!owner_dead(&same_host.labels(None), &me, None, old));
        assert!(owner_dead(&same_host.labels(None), &me, Some(&live2), old));
    }

    #[test]
    fn the_registry_judges_only_its_own_fleet() {
        let me = Owner::current("w1").in_fleet("1/a");
        let none: Vec<String> = Vec::new();
        let live = Liveness {
            live_workers: &none,
            min_age: Duration::ZERO,
        };
        let old = Some(Duration::from_secs(120));
        let mut other = Owner::current("w2");
        other.host = "elsewhere".into();
        // Another fleet's worker, absent from this fleet's registry: not this reaper's call.
        assert!(!owner_dead(
            &other.clone().in_fleet("1/b").labels(None),
            &me,
            Some(&live),
            old
        ));
        // This fleet's, or with no fleet label (today's rule): gone.
        assert!(owner_dead(
            &other.clone().in_fleet("1/a").labels(None),
            &me,
            Some(&live),
            old
        ));
        assert!(owner_dead(&other.labels(None), &me, Some(&live), old));
        // A reaper without a fleet does not judge a fleet's objects by any registry.
        let bare = Owner::current("w1");
        assert!(!owner_dead(
            &other.clone().in_fleet("1/a").labels(None),
            &bare,
            Some(&live),
            old
        ));
        // A dead process on this host is dead in every fleet.
        let mut dead = Owner::current("w3").in_fleet("1/b");
        dead.pid_start += 1;
        assert!(owner_dead(&dead.labels(None), &me, None, old));
    }
}
