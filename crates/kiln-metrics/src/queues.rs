//! The `queue` label comes from a fixed set: queues configured in `kiln_queues` or served by a
//! worker (registered in `kiln_workers`, or allowed by this process's own workers); any other
//! queue a client names counts as [`OTHER`]. No request can create series without bound.

use std::collections::HashSet;
use std::sync::{OnceLock, RwLock};

/// The label of every queue not in the known set.
pub const OTHER: &str = "other";
/// Most queue names kept as known (beyond, new names read as [`OTHER`]).
pub const MAX_KNOWN: usize = 1_000;

#[derive(Default)]
struct Known {
    /// Served by this process's workers: kept for the life of the process.
    local: HashSet<Box<str>>,
    /// Configured or served anywhere, as last read from the database.
    fleet: HashSet<Box<str>>,
}

fn known() -> &'static RwLock<Known> {
    static KNOWN: OnceLock<RwLock<Known>> = OnceLock::new();
    KNOWN.get_or_init(Default::default)
}

/// Marks `queue` as served by this process (a worker calls this before counting its jobs).
pub fn allow(queue: &str) {
    let mut k = known().write().unwrap_or_else(|e| e.into_inner());
    if k.local.len() < MAX_KNOWN && !k.local.contains(queue) {
        k.local.insert(queue.into());
    }
}

/// Replaces the fleet-wide part of the known set (read from the database).
pub fn set_fleet(queues: impl IntoIterator<Item = String>) {
    let fleet: HashSet<Box<str>> = queues.into_iter().take(MAX_KNOWN).map(Into::into).collect();
    known().write().unwrap_or_else(|e| e.into_inner()).fleet = fleet;
}

/// The label `queue` is counted under: itself when known, else [`OTHER`].
pub fn label(queue: &str) -> &str {
    let k = known().read().unwrap_or_else(|e| e.into_inner());
    if k.local.contains(queue) || k.fleet.contains(queue) {
        queue
    } else {
        OTHER
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_queues_share_one_label() {
        assert_eq!(label("client-made-up-queue-1"), OTHER);
        allow("served-here");
        assert_eq!(label("served-here"), "served-here");
        set_fleet(["configured".to_string()]);
        assert_eq!(label("configured"), "configured");
        assert_eq!(label("client-made-up-queue-2"), OTHER);
        set_fleet(Vec::new());
        assert_eq!(label("configured"), OTHER);
        assert_eq!(
            label("served-here"),
            "served-here",
            "a local worker's queue stays known"
        );
    }
}
